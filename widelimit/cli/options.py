"""Option groups shared by the subcommands and their translation into library objects.

Names follow docs/theory.md §1: ``--weight-decay`` (λ), ``--learning-rate`` (η), ``--steps``/``--budgets``
(step counts), optimiser names as in Python.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from .argtypes import class_list, nonneg_float, nonneg_int, positive_float, positive_int
from .errors import CommandError, UsageError, require

ACTIVATION_CHOICES = ("relu", "leaky_relu", "abrelu", "erf", "identity")
DATA_CHOICES = ("digits", "mnist1d", "teacher")
F0_CHOICES = ("nngp", "zero")


def add_arch(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("architecture (widelimit.arch spec; the closed form needs a homogeneous "
                             "network: no biases, no normalisation, relu/leaky_relu/abrelu/identity)")
    g.add_argument("--arch", choices=("mlp", "cnn"), default="mlp", help="network family (default: mlp)")
    g.add_argument("--depth", type=positive_int, default=3,
                   help="MLP: weight layers incl. readout; CNN: convolutions (+1 dense readout). Default 3")
    g.add_argument("--width", type=positive_int, default=512,
                   help="MLP hidden width (only matters for the standard-parameterisation NTK). Default 512")
    g.add_argument("--channels", type=positive_int, default=64, help="CNN channels (default 64)")
    g.add_argument("--kernel-size", type=positive_int, default=3, help="CNN filter size (default 3)")
    g.add_argument("--activation", choices=ACTIVATION_CHOICES, default="relu", help="default relu")
    g.add_argument("--slope", type=float, default=0.01, help="leaky_relu negative slope (default 0.01)")
    g.add_argument("--abrelu", nargs=2, type=float, default=[0.0, 1.0], metavar=("A", "B"),
                   help="abrelu slopes: a·min(x,0) + b·max(x,0) (default 0 1)")
    g.add_argument("--W-std", dest="W_std", type=positive_float, default=math.sqrt(2.0),
                   help="weight std (default sqrt(2))")
    g.add_argument("--b-std", dest="b_std", type=nonneg_float, default=None,
                   help="bias std (default: no biases; biases break homogeneity)")
    g.add_argument("--parameterization", choices=("ntk", "standard"), default="ntk", help="default ntk")


def add_data(p: argparse.ArgumentParser, n_train: int = 200, n_test: int = 500) -> None:
    g = p.add_argument_group("data (or --kernels)")
    g.add_argument("--data", choices=DATA_CHOICES, default=None,
                   help="dataset (default digits): sklearn digits, MNIST-1D (generated offline) or a "
                        "random-teacher regression")
    g.add_argument("--classes", type=class_list, default=None,
                   help="class subset, e.g. 0,1 (digits/mnist1d; default all ten)")
    g.add_argument("--n-train", type=positive_int, default=None, help=f"training points (default {n_train})")
    g.add_argument("--n-test", type=positive_int, default=None, help=f"test points (default {n_test})")
    g.add_argument("--targets", choices=("onehot", "onehot_centered", "pm1"), default=None,
                   help="target encoding for classification (default onehot; pm1 needs two classes)")
    g.add_argument("--seed", type=nonneg_int, default=0, help="data split/subsample seed (default 0)")
    g.add_argument("--kernels", type=Path, default=None, metavar="FILE.npz",
                   help="use saved kernels instead of --data and the architecture (the .npz written by "
                        "widelimit.kernels' kernel container: ntk_train_train, ntk_test_train, y_train, "
                        "y_test, L, and for --f0 nngp the NNGP blocks)")
    g.add_argument("--L", dest="L", type=positive_int, default=None,
                   help="homogeneity degree L (with --kernels when the file has none; default: from the "
                        "architecture)")
    g.add_argument("--f0", choices=F0_CHOICES, default="nngp",
                   help="initial function of the theory. nngp (default, the model finite networks follow and "
                        "the Python default): test loss averaged over random f0 ~ NNGP; zero: the flow from "
                        "f0 = 0, the mean function over initialisations")
    p.set_defaults(_n_train_default=n_train, _n_test_default=n_test)


SOLVER_CHOICES = ("auto", "eigh", "krylov")
KERNEL_DTYPE_CHOICES = ("float32", "float64")


class _ModelsConstant:
    """Prints as a constant of :mod:`widelimit.predict.models` (e.g. ``KRYLOV_MIN_N``), imported only when
    a help text is formatted (building the parser stays free of the theory modules)."""

    def __init__(self, name: str):
        self.name = name

    def __str__(self) -> str:
        from widelimit.predict import models
        return str(getattr(models, self.name))


def add_solver_options(g) -> None:
    """``--solver`` (as Python's ``predict_model(..., solver=...)``), ``--kernel-dtype``, ``--kernel-dir``."""
    act = g.add_argument("--solver", choices=SOLVER_CHOICES, default="auto",
                         help="eigh: dense eigendecomposition (O(N³) time, float64 kernels); krylov: matrix-free "
                              "block Krylov solver (kernels kept at --kernel-dtype, read in passes); auto "
                              "(default): krylov from %(krylov_min_n)s training points (%(krylov_min_n_zero)s "
                              "with --f0 zero), as predict_model")
    act.krylov_min_n, act.krylov_min_n_zero = _ModelsConstant("KRYLOV_MIN_N"), _ModelsConstant("KRYLOV_MIN_N_ZERO")
    g.add_argument("--kernel-dtype", dest="kernel_dtype", choices=KERNEL_DTYPE_CHOICES, default=None,
                   help="storage of the analytic kernels on the krylov path (computed in float64, rounded once; "
                        "default float32, half the memory); the eigh path always uses float64")
    g.add_argument("--kernel-dir", dest="kernel_dir", type=Path, default=None, metavar="DIR",
                   help="krylov path: keep the kernels as memory-mapped .npy files under DIR, resumed when "
                        "interrupted (default: in memory)")


def add_table_output(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--format", choices=("md", "csv", "json", "latex"), default=None,
                   help="output format (default: from the --out extension, else md)")
    g.add_argument("--out", type=Path, default=None,
                   help="write the table(s) here instead of printing them (.md .csv .json .tex)")
    g.add_argument("--force", action="store_true", help="overwrite existing output files")
    g.add_argument("--digits", type=positive_int, default=4,
                   help="significant digits in md/latex (default 4; csv/json keep full precision)")


def build_spec(args):
    """The :mod:`widelimit.arch` spec described by the architecture options (a CNN is 2-D on digits
    images and 1-D on MNIST-1D / teacher signals)."""
    from widelimit.arch import CNN, MLP
    common = dict(depth=args.depth, activation=args.activation, W_std=args.W_std, b_std=args.b_std,
                  parameterization=args.parameterization, slope=args.slope, abrelu_a=args.abrelu[0],
                  abrelu_b=args.abrelu[1])
    try:
        if args.arch == "mlp":
            return MLP(width=args.width, **common)
        ndim = 2 if (args.data or "digits") == "digits" else 1
        return CNN(channels=args.channels, kernel_size=args.kernel_size, ndim=ndim, **common)
    except (TypeError, ValueError) as e:
        raise UsageError(f"architecture options: {e}") from None


def describe_spec(spec) -> str:
    """Short human description of an architecture spec (for table captions)."""
    from widelimit.arch import CNN
    act = spec.activation + (f"({spec.slope:g})" if spec.activation == "leaky_relu" else
                             f"({spec.abrelu_a:g}, {spec.abrelu_b:g})" if spec.activation == "abrelu" else "")
    body = (f"CNN {spec.ndim}-D, {spec.depth} conv ({spec.channels} ch, k={spec.kernel_size}) + dense"
            if isinstance(spec, CNN) else f"MLP depth {spec.depth}")
    return (f"{body}, {act}, W_std {spec.W_std:.4g}" + (f", b_std {spec.b_std:g}" if spec.b_std is not None else "")
            + f", {spec.parameterization} param." + (f" width {spec.width}" if spec.parameterization == "standard"
                                                     and not isinstance(spec, CNN) else ""))


#: MNIST-1D's default split (widelimit.data); larger sizes come from widelimit.data_large
MNIST1D_DEFAULT_SPLIT = (4000, 1000)


def large_mnist1d(args) -> bool:
    """Whether ``--data mnist1d`` asks for more signals than the default split (then generated by
    :func:`widelimit.data_large.load_mnist1d_large`)."""
    if (args.data or "digits") != "mnist1d":
        return False
    n_tr = args.n_train or args._n_train_default
    n_te = args.n_test or args._n_test_default
    return n_tr > MNIST1D_DEFAULT_SPLIT[0] or n_te > MNIST1D_DEFAULT_SPLIT[1]


def data_options(args) -> dict:
    """Options for :func:`widelimit.data.load_dataset` from the data arguments."""
    name = args.data or "digits"
    opts = {"n_train": args.n_train or args._n_train_default, "n_test": args.n_test or args._n_test_default,
            "seed": args.seed}
    if name == "teacher":
        if args.classes is not None or args.targets is not None:
            raise UsageError("--classes/--targets apply to classification data, not --data teacher")
    else:
        opts["classes"] = args.classes
        if args.targets is not None:
            opts["targets"] = args.targets
    if args.arch == "cnn":
        opts["layout"] = {"digits": "image", "mnist1d": "signal", "teacher": "signal"}[name]
    return opts


def check_problem_args(args) -> None:
    """Validate the data/architecture/kernels arguments without computing anything."""
    if args.kernels is not None:
        given = [o for o, v in (("--data", args.data), ("--classes", args.classes), ("--n-train", args.n_train),
                                ("--n-test", args.n_test), ("--targets", args.targets)) if v is not None]
        if given:
            raise UsageError(f"--kernels replaces the data options; drop {', '.join(given)}")
        if not args.kernels.is_file():
            raise UsageError(f"--kernels: no such file {str(args.kernels)!r}")
        return
    spec = build_spec(args)
    if spec.homogeneity_degree is None:
        raise UsageError("the closed-form L2 flow needs a homogeneous network: drop --b-std and use "
                         "--activation relu, leaky_relu, abrelu or identity (got "
                         f"activation={args.activation!r}, b_std={args.b_std})")
    if args.L is not None and args.L != spec.homogeneity_degree:
        raise UsageError(f"--L {args.L} contradicts the architecture, whose homogeneity degree is "
                         f"{spec.homogeneity_degree}; drop --L")
    if args.arch == "cnn":
        from widelimit.kernels import nt_backend
        if not nt_backend.is_available():
            raise CommandError("the infinite-width NTK of a CNN needs neural-tangents, which is not installed "
                               "in this environment (use the pinned 'nt' environment, or --arch mlp)")
    if large_mnist1d(args):
        if args.classes is not None:
            raise UsageError("--classes: MNIST-1D beyond its default 4000/1000 split is generated with all ten "
                             "classes; drop --classes or use --n-train <= 4000 and --n-test <= 1000")
        if args.arch == "cnn":
            raise UsageError("--arch cnn: MNIST-1D beyond its default 4000/1000 split is for the MLP kernels "
                             "(--arch mlp)")
    check = require("widelimit.data", "check_dataset_options")
    try:
        check(args.data or "digits", **data_options(args))
    except (TypeError, ValueError) as e:
        raise UsageError(f"data options: {e}") from None
