"""The ``widelimit`` command line: ``solve``, ``table``, ``validate`` and ``derive``.

Run ``widelimit --help`` (or ``python -m widelimit.cli --help``) and ``widelimit SUBCOMMAND --help``.

* ``solve``    closed-form infinite-width L2 dynamics (MSE) for an architecture + dataset, or for saved
  kernels: train/test loss and accuracy trajectories to CSV/JSON, a PNG plot and a summary (t*, c = λ·t*).
* ``table``    prediction tables over grids: ``table ntk`` (t*, c, λ_opt for step budgets, kernel and
  output decay times) and ``table norms`` (scale-invariant groups: equilibrium angular update, effective
  learning rate, relaxation time per optimiser). Markdown (default), CSV, JSON or LaTeX.
* ``validate`` run a validation study (theory next to finite networks) and write its report.
* ``derive``   run the sympy derivations in ``derivations/`` and write their Markdown/LaTeX.

Conventions (as everywhere in widelimit): penalty ``(λ/2)||θ||²``; gradient descent
``θ ← θ − η(∇ℓ + λθ)``; physical time ``t = η·steps``; MSE ``ℓ = 1/(2NK) Σ (f − y)²``; unnormalised NTK.

Every argument is checked before any work starts; a bad one ends the command with exit status 2 and a
message naming the option. Failures while computing end with exit status 1.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A bad command-line argument found after parsing (reported with exit status 2)."""


class CommandError(Exception):
    """A failure while running a command (reported with exit status 1)."""


# ================================================================================================
# argument types
# ================================================================================================
def _number(kind: str, check: Callable[[float], bool]) -> Callable[[str], float]:
    def conv(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if not math.isfinite(v) or not check(v):
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}")
        return v
    conv.__name__ = kind
    return conv


positive_float = _number("a number > 0", lambda v: v > 0)
nonneg_float = _number("a number >= 0", lambda v: v >= 0)
unit_float = _number("a number in [0, 1)", lambda v: 0 <= v < 1)


def _int(lo: int) -> Callable[[str], int]:
    def conv(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            try:  # accept 1e4 for step counts when it is an integer
                f = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}") from None
            if not math.isfinite(f) or f != int(f):
                raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}") from None
            v = int(f)
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}")
        return v
    conv.__name__ = f"integer >= {lo}"
    return conv


positive_int = _int(1)
nonneg_int = _int(0)


OPTIMIZER_NAMES = ("sgd", "momentum", "nesterov", "adam-l2", "adamw")


def optimizer_name(text: str) -> str:
    """``adam-l2``/``adam_l2`` -> ``adam_l2`` (the name used by :mod:`widelimit.predict_norms`)."""
    name = text.strip().lower().replace("-", "_")
    if name not in [o.replace("-", "_") for o in OPTIMIZER_NAMES]:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(OPTIMIZER_NAMES)}, got {text!r}")
    return name


def class_list(text: str) -> List[int]:
    """``0,1,7`` -> [0, 1, 7]."""
    try:
        out = [int(p) for p in text.replace(" ", "").split(",") if p != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated class ids like 0,1, got {text!r}") from None
    if len(out) < 2 or len(set(out)) != len(out) or any(c < 0 or c > 9 for c in out):
        raise argparse.ArgumentTypeError(f"expected at least two distinct class ids in 0..9, got {text!r}")
    return out


# ================================================================================================
# shared option groups
# ================================================================================================
ACTIVATION_CHOICES = ("relu", "leaky_relu", "abrelu", "erf", "identity")
DATA_CHOICES = ("digits", "mnist1d", "teacher")


def _add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="do not show progress bars")


def _add_arch(p: argparse.ArgumentParser) -> None:
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


def _add_data(p: argparse.ArgumentParser, n_train: int = 200, n_test: int = 500) -> None:
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
                   help="use saved kernels instead of --data and the architecture: an .npz with "
                        "k_train_train (N,N), k_test_train (M,N) (unnormalised NTK), y_train, y_test "
                        "and optionally L (homogeneity degree)")
    g.add_argument("--L", dest="L", type=positive_int, default=None,
                   help="homogeneity degree L (with --kernels when the file has no 'L'; default: from "
                        "the architecture)")
    g.add_argument("--f0", choices=("auto", "zero", "nngp"), default="auto",
                   help="initial function. nngp: test loss averaged over random f0 ~ NNGP, what a seed "
                        "average of finite networks measures (L2 then pays off by removing the f0 noise); "
                        "zero: the flow from f0 = 0, the mean function over initialisations (L2 only slows "
                        "it down, so its λ argmin for a budget runs to the grid's lower edge). auto (default): "
                        "nngp, or zero for a --kernels file without nngp_train_train, nngp_test_train, "
                        "nngp_test_diag")
    p.set_defaults(_n_train_default=n_train, _n_test_default=n_test)


def _add_table_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("md", "csv", "json", "latex"), default=None,
                   help="output format (default: from the --out extension, else md)")
    p.add_argument("--out", type=Path, default=None,
                   help="write the table(s) here instead of printing them (.md .csv .json .tex)")
    p.add_argument("--digits", type=positive_int, default=4,
                   help="significant digits in md/latex (default 4; csv/json keep full precision)")


# ================================================================================================
# the parser
# ================================================================================================
def _studies_help() -> str:
    try:
        from widelimit.studies import STUDIES
    except ImportError as e:
        return f"(the study registry widelimit.studies is not available: {e})"
    return "available studies:\n" + "\n".join(f"  {k:<16} {v[1]}" for k, v in STUDIES.items())


DERIVATIONS = {
    "ntk_l2": "homogeneous networks with L2 in the NTK regime: kernel/output decay, per-mode closed form",
    "scale_invariant": "scale-invariant groups: equilibrium norms, angular updates, relaxation times",
}


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``widelimit`` command (all subcommands)."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="widelimit", formatter_class=fmt,
        description="Infinite-width (NTK) predictions for wide networks trained with L2 / weight decay, "
                    "and their validation against finite networks.",
        epilog="Conventions: penalty (λ/2)||θ||², GD θ ← θ − η(∇ℓ + λθ), physical time t = η·steps, "
               "MSE 1/(2NK) Σ (f−y)².\nRun 'widelimit SUBCOMMAND --help' for the options of each.")
    from widelimit import __version__
    parser.add_argument("--version", action="version", version=f"widelimit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    sub.required = True

    # -- solve --------------------------------------------------------------------------------------
    ps = sub.add_parser(
        "solve", formatter_class=fmt, help="closed-form L2 dynamics: trajectories, plot, t* summary",
        description="Closed-form infinite-width gradient flow with L2 (MSE) for an L-homogeneous network:\n"
                    "df/dt = −e^{−2(L−1)λt} Θ̃ (f − y) − Lλ f, Θ̃ = Θ/(NK).\n"
                    "Writes trajectories.csv/json (train/test loss and accuracy of the mean function f0 = 0 per t "
                    "and λ, and with --f0 nngp\nthe test loss expected over random initial functions), "
                    "trajectories.png and summary.md/json (t* = best-test time, c = λ·t*).",
        epilog="example: widelimit solve --data digits --n-train 200 --depth 3 --lams 0.1 0.01 --out out/")
    _add_arch(ps)
    _add_data(ps)
    g = ps.add_argument_group("regularisation and time grid")
    g.add_argument("--lams", "--lam", dest="lams", nargs="+", type=positive_float,
                   default=[0.1, 0.03, 0.01, 0.003], metavar="LAM",
                   help="L2 coefficient(s) λ (default 0.1 0.03 0.01 0.003)")
    g.add_argument("--lr", type=positive_float, default=None,
                   help="learning rate η: adds step counts (steps = t/η) and allows --steps-min/--steps-max")
    g.add_argument("--t-min", type=positive_float, default=None,
                   help="first time of the log-spaced grid (physical time; default 1e-3/max λ)")
    g.add_argument("--t-max", type=positive_float, default=None,
                   help="last time of the grid (physical time; default 100/min λ)")
    g.add_argument("--steps-min", type=positive_float, default=None, help="grid start in steps (needs --lr)")
    g.add_argument("--steps-max", type=positive_float, default=None, help="grid end in steps (needs --lr)")
    g.add_argument("--n-times", type=_int(2), default=200, help="grid points (default 200)")
    o = ps.add_argument_group("output")
    o.add_argument("--out", type=Path, default=Path("widelimit-solve"),
                   help="output directory (default ./widelimit-solve)")
    o.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    _add_progress(ps)
    ps.set_defaults(_parser=ps, func=cmd_solve)

    # -- table --------------------------------------------------------------------------------------
    pt = sub.add_parser("table", formatter_class=fmt, help="prediction tables over grids (ntk, norms)",
                        description="Prediction tables over grids. 'table ntk': t*, c = λ·t*, λ_opt for step "
                                    "budgets, kernel and output decay times;\n'table norms': scale-invariant "
                                    "groups per optimiser (equilibrium angular update, effective LR, relaxation "
                                    "time).")
    tsub = pt.add_subparsers(dest="table", metavar="TABLE")
    tsub.required = True
    pn = tsub.add_parser(
        "ntk", formatter_class=fmt, help="t*, c, λ_opt(T), kernel/output decay times of the NTK-regime L2 flow",
        description="Per λ: best-test time t* (physical and, with --lr, in steps), c = λ·t*, the test loss "
                    "there,\nthe kernel decay time 1/(2(L−1)λ) and the output decay time 1/(Lλ).\n"
                    "Per budget T (steps, needs --lr): λ_opt minimising the test loss after T steps, next to "
                    "the rule c/(ηT).",
        epilog="example: widelimit table ntk --data digits --n-train 200 --lams 0.1 0.01 0.001 "
               "--budgets 1000 10000 --lr 0.1")
    _add_arch(pn)
    _add_data(pn)
    g = pn.add_argument_group("grids")
    g.add_argument("--lams", "--lam", dest="lams", nargs="+", type=positive_float,
                   default=[0.1, 0.03, 0.01, 0.003, 0.001], metavar="LAM",
                   help="L2 coefficients λ (default 0.1 0.03 0.01 0.003 0.001)")
    g.add_argument("--budgets", nargs="+", type=positive_int, default=None, metavar="T",
                   help="step budgets T for λ_opt (needs --lr)")
    g.add_argument("--lr", type=positive_float, default=None, help="learning rate η (steps = t/η)")
    g.add_argument("--search-lams", nargs="+", type=positive_float, default=None, metavar="LAM",
                   help="λ grid searched for λ_opt (default: 16 per decade around the rule c/(ηT), ×30 "
                        "either side)")
    _add_table_output(pn)
    _add_progress(pn)
    pn.set_defaults(_parser=pn, func=cmd_table_ntk)

    pm = tsub.add_parser(
        "norms", formatter_class=fmt, help="scale-invariant groups: angular update, effective LR, relaxation",
        description="Equilibrium of a scale-invariant weight group (BatchNorm/LayerNorm/WeightNorm) under "
                    "L2/weight decay, per optimiser and (η, λ):\nangular update per step, effective learning "
                    "rate η·κ/||w||², relaxation time to equilibrium in steps and epochs.",
        epilog="example: widelimit table norms --lrs 0.1 0.01 --lams 5e-4 5e-3 --optimizers sgd momentum adamw")
    g = pm.add_argument_group("grids")
    g.add_argument("--optimizers", nargs="+", type=optimizer_name, default=None, metavar="OPT",
                   help="any of sgd momentum nesterov adam-l2 adamw (default: all; adam-l2/adamw only "
                        "with --group-size)")
    g.add_argument("--lrs", "--lr", dest="lrs", nargs="+", type=positive_float, default=[0.1], metavar="LR",
                   help="learning rates η (default 0.1)")
    g.add_argument("--lams", "--lam", dest="lams", nargs="+", type=positive_float, default=[5e-4],
                   metavar="LAM", help="L2 / weight-decay coefficients λ (default 5e-4)")
    g.add_argument("--momentum", type=unit_float, default=0.9, help="momentum μ (default 0.9)")
    g.add_argument("--betas", nargs=2, type=unit_float, default=[0.9, 0.999], metavar=("B1", "B2"),
                   help="Adam β1 β2 (default 0.9 0.999)")
    g.add_argument("--grad-norm-sq", type=positive_float, default=1.0, metavar="G",
                   help="G = ||∇ℓ(ŵ)||² at unit norm (default 1; sets the SGD-family norm and effective "
                        "LR and everything for adam-l2)")
    g.add_argument("--group-size", type=positive_int, default=None, metavar="D",
                   help="parameters in the group (needed by adam-l2 and adamw)")
    g.add_argument("--steps-per-epoch", type=positive_float, default=None,
                   help="steps per epoch, to express relaxation times in epochs")
    _add_table_output(pm)
    pm.set_defaults(_parser=pm, func=cmd_table_norms)

    # -- validate -----------------------------------------------------------------------------------
    pv = sub.add_parser("validate", formatter_class=fmt, help="run a validation study and write its report",
                        description="Run a validation study: theory next to finite-network measurements; writes "
                                    "a Markdown report with tables,\nplots and the raw numbers.",
                        epilog=_studies_help())
    pv.add_argument("study", metavar="STUDY", help="study name ('quick' is the main job); see below")
    pv.add_argument("--size", choices=("quick", "full"), default="quick",
                    help="quick: minutes on 2 CPU cores; full: GPU-sized (default quick)")
    pv.add_argument("--out", type=Path, default=None,
                    help="output directory (default ./validation/<size>)")
    pv.add_argument("--resume", action=argparse.BooleanOptionalAction, default=False,
                    help="reuse finished runs stored in the output directory (default: start fresh)")
    pv.add_argument("--quiet", action="store_true", help="print only the report's path, not the report")
    _add_progress(pv)
    pv.set_defaults(_parser=pv, func=cmd_validate)

    # -- derive -------------------------------------------------------------------------------------
    pd = sub.add_parser("derive", formatter_class=fmt, help="run the sympy derivations, write Markdown/LaTeX",
                        description="Run the sympy derivations in the repository's derivations/ folder and "
                                    "write their Markdown/LaTeX.",
                        epilog="derivations:\n" + "\n".join(f"  {k:<16} {v}" for k, v in DERIVATIONS.items()))
    pd.add_argument("names", nargs="*", metavar="NAME", default=None,
                    help=f"which derivations (default all: {' '.join(DERIVATIONS)})")
    pd.add_argument("--out", type=Path, default=Path("derivations-out"),
                    help="output directory (default ./derivations-out)")
    _add_progress(pd)
    pd.set_defaults(_parser=pd, func=cmd_derive)
    return parser


# ================================================================================================
# helpers shared by the commands
# ================================================================================================
def _progress(iterable, args, **kw):
    """tqdm progress bar on stderr unless --no-progress."""
    from tqdm.auto import tqdm
    return tqdm(iterable, disable=getattr(args, "no_progress", False), file=sys.stderr, **kw)


def _require(module: str, *names: str):
    """Import ``names`` from ``module`` or fail with a clear message (another part may be missing)."""
    import importlib
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise CommandError(f"{module} is not available ({e}); this widelimit installation is incomplete") from e
    out = []
    for n in names:
        if not hasattr(mod, n):
            raise CommandError(f"{module}.{n} is not available; this widelimit installation is incomplete")
        out.append(getattr(mod, n))
    return out[0] if len(out) == 1 else tuple(out)


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


def _data_options(args) -> dict:
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


@dataclass
class Problem:
    """Unnormalised NTKs (and, for ``--f0 nngp``, NNGP kernels) and targets of one theory problem,
    its degree L and where it came from."""

    k_train_train: Any
    k_test_train: Any
    y_train: Any
    y_test: Any
    L: int
    source: str
    classification: bool
    f0: str = "zero"              # "zero" (mean function) or "nngp" (expectation over f0 ~ NNGP)
    nngp_train_train: Any = None
    nngp_test_train: Any = None
    nngp_test_diag: Any = None


KERNEL_KEYS = ("k_train_train", "k_test_train", "y_train", "y_test")
NNGP_KEYS = ("nngp_train_train", "nngp_test_train", "nngp_test_diag")


def _check_problem_args(args) -> None:
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
    check = _require("widelimit.data", "check_dataset_options")
    try:
        check(args.data or "digits", **_data_options(args))
    except (TypeError, ValueError) as e:
        raise UsageError(f"data options: {e}") from None


def _load_kernel_file(args) -> Problem:
    """A problem from ``--kernels FILE.npz`` (keys ``KERNEL_KEYS``, optional ``L``, and ``NNGP_KEYS`` for
    ``--f0 nngp``). Targets with only 0/1 or ±1 values are treated as classification."""
    import numpy as np
    try:
        z = np.load(args.kernels, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UsageError(f"--kernels: cannot read {str(args.kernels)!r} as .npz: {e}") from None
    with z:
        f0 = args.f0 if args.f0 != "auto" else ("nngp" if all(k in z.files for k in NNGP_KEYS) else "zero")
        need = KERNEL_KEYS + (NNGP_KEYS if f0 == "nngp" else ())
        missing = [k for k in need if k not in z.files]
        if missing:
            raise UsageError(f"--kernels: {str(args.kernels)!r} lacks {missing} (has {z.files})"
                             + ("; --f0 nngp needs the NNGP kernels too" if set(missing) & set(NNGP_KEYS) else ""))
        arrs = {k: np.asarray(z[k], dtype=np.float64) for k in need}
        L = args.L if args.L is not None else (int(z["L"]) if "L" in z.files else None)
    if L is None:
        raise UsageError("--kernels: the file has no 'L'; give the homogeneity degree with --L")
    y_tr, y_te = (a[:, None] if a.ndim == 1 else a for a in (arrs["y_train"], arrs["y_test"]))
    n, m = arrs["k_train_train"].shape[0], arrs["k_test_train"].shape[0]
    shapes_ok = (arrs["k_train_train"].shape == (n, n) and arrs["k_test_train"].shape == (m, n)
                 and y_tr.shape[0] == n and y_te.shape[0] == m and y_tr.shape[1:] == y_te.shape[1:])
    if f0 == "nngp":
        shapes_ok &= (arrs["nngp_train_train"].shape == (n, n) and arrs["nngp_test_train"].shape == (m, n)
                      and arrs["nngp_test_diag"].shape == (m,))
    if not shapes_ok:
        raise UsageError("--kernels: inconsistent shapes " + ", ".join(f"{k} {arrs[k].shape}" for k in need))
    cls = bool(np.all(np.isin(y_tr, (0.0, 1.0))) or np.all(np.isin(y_tr, (-1.0, 1.0))))
    return Problem(arrs["k_train_train"], arrs["k_test_train"], y_tr, y_te, L, f"kernels from {args.kernels}",
                   cls, f0, *(arrs.get(k) for k in NNGP_KEYS))


def _load_problem(args) -> Problem:
    """Kernels from --kernels, or analytic NTKs (and NNGPs) of the architecture on the dataset."""
    import numpy as np
    if args.kernels is not None:
        return _load_kernel_file(args)
    load_dataset = _require("widelimit.data", "load_dataset")
    kernel_fn = _require("widelimit.kernels", "kernel_fn")
    name = args.data or "digits"
    try:  # sizes against the examples available are only known once the data are loaded (cheap)
        ds = load_dataset(name, **_data_options(args))
    except (TypeError, ValueError) as e:
        raise UsageError(f"data options: {e}") from None
    spec = build_spec(args)
    nngp = args.f0 in ("auto", "nngp")
    # jobs: train-train, test-train, and for the NNGP prior the test-test diagonal in blocks of 256
    jobs = [(ds.x_train, None), (ds.x_test, ds.x_train)]
    if nngp:
        jobs += [(ds.x_test[i:i + 256], None) for i in range(0, ds.n_test, 256)]
    try:
        k = kernel_fn(spec)
        out = [k(x1, x2) for x1, x2 in _progress(jobs, args, desc="kernels")]
    except (ImportError, NotImplementedError, ValueError) as e:
        raise CommandError(f"cannot compute the infinite-width NTK of {describe_spec(spec)} here: {e}") from e
    src = (f"{name}: {ds.n_train} train / {ds.n_test} test"
           + (f", classes {list(ds.labels)}" if ds.labels is not None else "") + f"; {describe_spec(spec)}")
    f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    extra = ((f64(out[0].nngp), f64(out[1].nngp), np.concatenate([np.diag(f64(o.nngp)) for o in out[2:]]))
             if nngp else (None, None, None))
    return Problem(f64(out[0].ntk), f64(out[1].ntk), ds.y_train, ds.y_test, spec.homogeneity_degree, src,
                   ds.labels is not None, "nngp" if nngp else "zero", *extra)


class Theory:
    """Test-loss predictions of one problem for any λ, built once (one eigendecomposition).

    ``prob.f0 == "zero"``: the flow started from f0 = 0, i.e. the mean function over initialisations
    (:mod:`widelimit.predict`). ``"nngp"``: the test MSE averaged over random initial functions
    f0 ~ NNGP, ``E loss = loss(mean f_t) + mean_x Var f_t(x) / 2`` — what an average over seeds of
    finite networks estimates (:class:`widelimit.studies.ntk_tools.ExpectedLoss`).
    """

    def __init__(self, prob: Problem):
        self.prob, self.f0 = prob, prob.f0
        L2Flow = _require("widelimit.dynamics.ntk_l2", "L2Flow")
        FlowMetrics = _require("widelimit.predict", "FlowMetrics")
        try:
            self.flow = L2Flow(prob.k_train_train, prob.y_train, 0.0, prob.L, k_test_train=prob.k_test_train)
            self.metrics = FlowMetrics(self.flow, prob.y_test)
            self.expected = None
            if self.f0 == "nngp":
                DataKernels, ExpectedLoss = _require("widelimit.studies.ntk_tools", "DataKernels", "ExpectedLoss")
                self.expected = ExpectedLoss(DataKernels(
                    prob.k_train_train, prob.k_test_train, prob.nngp_train_train, prob.nngp_test_train,
                    prob.nngp_test_diag, prob.y_train, prob.y_test, prob.L))
        except ValueError as e:  # e.g. a saved kernel that is not symmetric positive semi-definite
            raise CommandError(f"cannot build the L2 flow from {prob.source}: {e}") from e

    def test_loss(self, lam: float, t):
        """Test MSE (mean function or expectation over f0, per ``f0``) at times ``t`` (1-D)."""
        if self.expected is not None:
            return self.expected(float(lam), t)
        return self.metrics.test_loss(float(lam), t)

    def t_star(self, lam: float):
        """``(t*, loss at t*, on the window's edge)``, searched on λt ∈ [1e-3, 1e2]."""
        if self.expected is not None:  # its value at t* is a parabola vertex: evaluate the loss there instead
            t, _, where = self.expected.t_star(float(lam))
            return t, float(self.expected(float(lam), [t])[0]), where != "interior"
        r = _require("widelimit.predict", "t_star")(self.metrics, lams=[float(lam)])
        return float(r.t_star[0]), float(r.best[0]), bool(r.at_edge[0])

    def lambda_opt(self, lams, times):
        """Per budget time: ``(λ minimising the test loss at that time over lams, the loss, on the grid edge)``."""
        if self.expected is not None:
            return [(lo, float(self.expected(lo, [t])[0]), where != "interior")
                    for (lo, _, where), t in zip(self.expected.lambda_opt(lams, times), times)]
        r = _require("widelimit.predict", "lambda_opt")(self.metrics, lams=lams, steps=times, eta=1.0)
        return [(float(a), float(b), bool(c)) for a, b, c in zip(r.lam_opt, r.best, r.at_edge)]

    def t_stars(self, lams, args):
        """:meth:`t_star` for every λ (progress bar): arrays ``t_star, best, at_edge``."""
        import numpy as np
        res = [self.t_star(lam) for lam in _progress(lams, args, desc="t* per λ")]
        return tuple(np.array(x) for x in zip(*res))


def _check_table_out(args) -> None:
    """--out needs a known extension unless --format is given."""
    if args.out is not None and args.format is None:
        from widelimit.tables import format_for_path
        try:
            format_for_path(args.out)
        except ValueError as e:
            raise UsageError(f"--out: {e}") from None


def _write_tables(tables: "dict", args) -> None:
    """Print or save tables ``{key: Table}`` in the requested format.

    Several tables go into one Markdown/LaTeX text (one after the other), one JSON object
    ``{"tables": {key: table}}``, or, for CSV with ``--out x.csv``, one file per table ``x_<key>.csv``
    (CSV printed to stdout separates the tables by a blank line)."""
    from widelimit.tables import format_for_path
    fmt = args.format
    if args.out is not None and fmt is None:
        fmt = format_for_path(args.out)
    fmt = fmt or "md"
    for t in tables.values():
        t.digits = args.digits
    if fmt == "json" and len(tables) > 1:
        import json
        text = json.dumps({"tables": {k: t.to_dict() for k, t in tables.items()}}, indent=2,
                          ensure_ascii=False, allow_nan=False) + "\n"
        outputs = [(args.out, text)]
    elif fmt == "csv" and args.out is not None and len(tables) > 1:
        outputs = [(args.out.with_name(f"{args.out.stem}_{k}{args.out.suffix}"), t.to_csv())
                   for k, t in tables.items()]
    else:
        outputs = [(args.out, "\n".join(t.render(fmt) for t in tables.values()))]
    for path, text in outputs:
        if path is None:
            sys.stdout.write(text)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}", file=sys.stderr)


# ================================================================================================
# commands
# ================================================================================================
def _time_grid(args):
    """Validate the time-grid options; return ``(t_min, t_max)`` in physical time."""
    lam_max, lam_min = max(args.lams), min(args.lams)
    if args.steps_min is not None or args.steps_max is not None:
        if args.lr is None:
            raise UsageError("--steps-min/--steps-max count optimiser steps: give the learning rate with --lr")
        if args.t_min is not None or args.t_max is not None:
            raise UsageError("give the grid either in physical time (--t-min/--t-max) or in steps "
                             "(--steps-min/--steps-max), not both")
        t_min = None if args.steps_min is None else args.lr * args.steps_min
        t_max = None if args.steps_max is None else args.lr * args.steps_max
        names = ("--steps-min", "--steps-max")
    else:
        t_min, t_max = args.t_min, args.t_max
        names = ("--t-min", "--t-max")
    t_min = 1e-3 / lam_max if t_min is None else t_min
    t_max = 100.0 / lam_min if t_max is None else t_max
    if not t_min < t_max:
        raise UsageError(f"{names[0]} must be smaller than {names[1]} (grid [{t_min:g}, {t_max:g}] in "
                         "physical time)")
    return t_min, t_max


def _train_accuracy(flow, t):
    """Training accuracy at times ``t`` (argmax for K > 1 outputs, sign for K = 1), in blocks of times."""
    import numpy as np
    y = flow.y_train.reshape(flow.n_train, -1)
    out = []
    for i in range(0, t.size, 64):
        f = flow.train(t[i:i + 64]).reshape(-1, *y.shape)
        if y.shape[1] == 1:
            out.append(np.mean(np.sign(f[..., 0]) == np.sign(y[:, 0]), axis=-1))
        else:
            out.append(np.mean(np.argmax(f, -1) == np.argmax(y, -1), axis=-1))
    return np.concatenate(out)


def _decay_times(L: int, lam: float):
    """Kernel decay time ``1/(2(L−1)λ)`` (∞ for L = 1) and output decay time ``1/(Lλ)``, physical time."""
    return (1.0 / (2 * (L - 1) * lam) if L > 1 else math.inf), 1.0 / (L * lam)


F0_NOTE = {"zero": "f0 = 0: the mean function over random initialisations",
           "nngp": "expected test MSE over random initial functions f0 ~ NNGP (what a seed average of finite "
                   "networks estimates)"}


def cmd_solve(args) -> int:
    """Closed-form trajectories of the infinite-width L2 flow (see ``widelimit solve --help``)."""
    import numpy as np
    t_min, t_max = _time_grid(args)
    _check_problem_args(args)
    loss_curves = _require("widelimit.predict", "loss_curves")
    from widelimit.plots import plot_l2_trajectories
    from widelimit.tables import Table

    prob = _load_problem(args)
    theory = Theory(prob)
    t = np.geomspace(t_min, t_max, args.n_times)
    lams = np.asarray(args.lams, dtype=float)
    curves = loss_curves(theory.metrics, lams=lams, t=t, accuracy=prob.classification, train_loss=True)
    train_acc = ([_train_accuracy(theory.flow.with_lam(lam), t) for lam in lams] if prob.classification else None)
    expected = np.stack([theory.test_loss(lam, t) for lam in lams]) if prob.f0 == "nngp" else None
    t_star, best, edge = theory.t_stars(lams, args)

    cols = ["λ", "t"] + (["steps"] if args.lr else []) + ["train loss", "test loss"] \
        + (["expected test loss"] if expected is not None else []) \
        + (["train acc", "test acc"] if prob.classification else [])
    traj = Table(cols, title="Infinite-width L2 flow: trajectories", units={"t": "η·steps"},
                 caption=f"{prob.source}; L = {prob.L}; MSE 1/(2NK) Σ (f−y)²",
                 notes=["train/test loss and accuracy: the flow from f0 = 0 (mean function)"]
                 + (["expected test loss: averaged over f0 ~ NNGP"] if expected is not None else []))
    for i, lam in enumerate(lams):
        for j, tj in enumerate(t):
            row = [lam, tj] + ([tj / args.lr] if args.lr else []) + [curves.train_loss[i, j], curves.test_loss[i, j]]
            row += [expected[i, j]] if expected is not None else []
            traj.add_row(row + ([train_acc[i][j], curves.test_accuracy[i, j]] if prob.classification else []))

    summary = Table(["λ", "t*"] + (["steps*"] if args.lr else []) + ["c = λt*", "test loss at t*"]
                    + (["test acc at t*"] if prob.classification else []) + ["kernel decay", "output decay"],
                    title="Best test time t* and c = λ·t*",
                    units={"t*": "η·steps", "kernel decay": "η·steps", "output decay": "η·steps"},
                    caption=f"{prob.source}; L = {prob.L}",
                    notes=[f"t* = time of the minimum of the infinite-width test MSE; {F0_NOTE[prob.f0]}",
                           "test acc at t*: mean function; kernel decay 1/(2(L−1)λ), output decay 1/(Lλ)"])
    for i, lam in enumerate(lams):
        row = [lam, t_star[i]] + ([t_star[i] / args.lr] if args.lr else []) + [lam * t_star[i], best[i]]
        if prob.classification:
            row.append(float(theory.metrics.test_accuracy(lam, [t_star[i]])[0]))
        summary.add_row(row + list(_decay_times(prob.L, lam)))
    if np.any(edge):
        summary.notes.append("the minimum lies on the edge of the searched window λt ∈ [1e-3, 1e2] (t* is only a "
                             "bound) for λ = " + ", ".join(f"{lam:g}" for lam in lams[edge]))

    args.out.mkdir(parents=True, exist_ok=True)
    written = [traj.save(args.out / "trajectories.csv"), traj.save(args.out / "trajectories.json"),
               summary.save(args.out / "summary.md"), summary.save(args.out / "summary.json")]
    if not args.no_plot:
        written.append(plot_l2_trajectories(
            t, lams, expected if expected is not None else curves.test_loss, args.out / "trajectories.png",
            train_loss=curves.train_loss, t_star=np.where(edge, np.nan, t_star),
            ylabel="MSE (test: expected over f0)" if expected is not None else "MSE loss",
            title=f"infinite-width L2 flow, L = {prob.L}"))
    sys.stdout.write(summary.to_markdown())
    print("wrote " + ", ".join(str(w) for w in written), file=sys.stderr)
    return EXIT_OK


def cmd_table_ntk(args) -> int:
    """Per-λ time scales and per-budget λ_opt of the infinite-width L2 flow (``widelimit table ntk --help``)."""
    import numpy as np
    if args.budgets is not None and args.lr is None:
        raise UsageError("--budgets are step counts: give the learning rate with --lr (budget time = η·T)")
    if args.search_lams is not None and args.budgets is None:
        raise UsageError("--search-lams is the λ grid searched for λ_opt: it needs --budgets")
    _check_table_out(args)
    _check_problem_args(args)
    from widelimit.tables import Table

    prob = _load_problem(args)
    theory = Theory(prob)
    lams = np.asarray(sorted(set(args.lams), reverse=True), dtype=float)
    unit = "steps" if args.lr else "η·steps"
    scale = 1.0 / args.lr if args.lr else 1.0
    t_star, best, edge = theory.t_stars(lams, args)
    cols = ["λ", "t*"] + (["steps*"] if args.lr else []) + ["c = λt*", "test loss at t*"] \
        + (["test acc at t*"] if prob.classification else []) + ["kernel decay", "output decay"]
    per_lam = Table(cols, title="Time scales of the infinite-width L2 flow",
                    units={"t*": "η·steps", "kernel decay": unit, "output decay": unit},
                    caption=f"{prob.source}; L = {prob.L}" + (f"; η = {args.lr:g}" if args.lr else ""),
                    notes=[f"t* = time of the best infinite-width test MSE; {F0_NOTE[prob.f0]}; c = λ·t* "
                           "(THEORY.md §3: t* ≈ c/λ with c independent of λ)",
                           "test acc at t*: mean function; kernel decay time 1/(2(L−1)λ) (the NTK shrinks as "
                           "e^{−2(L−1)λt}); output decay time 1/(Lλ)"])
    for i, lam in enumerate(lams):
        row = [lam, t_star[i]] + ([t_star[i] / args.lr] if args.lr else []) + [lam * t_star[i], best[i]]
        if prob.classification:
            row.append(float(theory.metrics.test_accuracy(lam, [t_star[i]])[0]))
        per_lam.add_row(row + [x * scale for x in _decay_times(prob.L, lam)])
    if np.any(edge):
        per_lam.notes.append("on the edge of the searched window λt ∈ [1e-3, 1e2] (t* only a bound) for λ = "
                             + ", ".join(f"{lam:g}" for lam in lams[edge]))
    tables = {"tstar": per_lam}

    if args.budgets is not None:
        if np.all(edge):
            raise CommandError("no λ in --lams has an interior best test time, so c = λ·t* is undefined; "
                               "try larger λ")
        i0 = int(np.argmax(np.where(edge, -np.inf, lams)))   # the largest λ with an interior t*
        c0, lam0 = float(lams[i0] * t_star[i0]), float(lams[i0])
        budgets = np.asarray(sorted(set(args.budgets)), dtype=float)
        times = args.lr * budgets
        rule = c0 / times
        search = (np.asarray(sorted(set(args.search_lams)), dtype=float) if args.search_lams is not None else
                  np.geomspace(rule.min() / 30, rule.max() * 30,
                               int(math.ceil(16 * math.log10(900 * rule.max() / rule.min()))) + 1))
        opt = theory.lambda_opt(search, times)
        per_budget = Table(["T", "ηT", "λ_opt = c/(ηT)", "test loss (rule)", "λ argmin", "test loss (argmin)",
                            "argmin at grid edge"],
                           title="L2 coefficient for a step budget T",
                           units={"T": "steps", "ηT": "η·steps"},
                           caption=f"{prob.source}; L = {prob.L}; η = {args.lr:g}",
                           notes=[f"rule: λ_opt = c/(ηT) with c = {c0:.4g} = λ·t* at λ = {lam0:g} (the largest "
                                  "λ of the t* table with an interior optimum), THEORY.md §3",
                                  f"test loss: infinite-width test MSE after T steps (time ηT); {F0_NOTE[prob.f0]}",
                                  f"λ argmin: the λ minimising that loss over {search.size} log-spaced λ in "
                                  f"[{search.min():.3g}, {search.max():.3g}]; on the grid edge it is only a bound"])
        for j, T in enumerate(budgets):
            loss_rule = float(theory.test_loss(float(rule[j]), [times[j]])[0])
            lo, lo_loss, lo_edge = opt[j]
            per_budget.add_row([int(T), times[j], rule[j], loss_rule, lo, lo_loss, lo_edge])
        tables["lambda_opt"] = per_budget
    _write_tables(tables, args)
    return EXIT_OK


NORM_COLUMNS = [  # (column, key of widelimit.predict_norms rows)
    ("optimizer", "optimizer"), ("η", "lr"), ("λ", "weight_decay"), ("ηλ", "lr_times_wd"), ("μ", "momentum"),
    ("β1", "beta1"), ("angular update", "angular_update"), ("effective LR", "effective_lr"),
    ("‖w‖² eq.", "norm_sq"), ("relaxation steps", "relaxation_steps"),
    ("relaxation epochs", "relaxation_epochs"), ("relaxation time", "relaxation_time"),
]
NORM_UNITS = {"angular update": "rad/step", "relaxation time": "t = η·steps"}


def cmd_table_norms(args) -> int:
    """Equilibrium predictions for scale-invariant groups (see :mod:`widelimit.predict_norms`)."""
    import numpy as np
    _check_table_out(args)
    adam = ("adam_l2", "adamw")
    if args.optimizers is None:
        optimizers = [o.replace("-", "_") for o in OPTIMIZER_NAMES]
        if args.group_size is None:
            optimizers = [o for o in optimizers if o not in adam]
    else:
        optimizers = list(dict.fromkeys(args.optimizers))
        need_d = [o.replace("_", "-") for o in optimizers if o in adam]
        if need_d and args.group_size is None:
            raise UsageError(f"--group-size D (parameters in the group) is required for {', '.join(need_d)}")
    bad = [(lr, lam) for lr in args.lrs for lam in args.lams if lr * lam >= 1]
    if bad:
        raise UsageError(f"--lrs/--lams: every η·λ must be < 1 (the equilibria are leading order in ηλ); "
                         f"got η={bad[0][0]:g}, λ={bad[0][1]:g}")
    norm_prediction_table = _require("widelimit.predict_norms", "norm_prediction_table")
    lr = np.asarray(args.lrs, dtype=float)[:, None]
    lam = np.asarray(args.lams, dtype=float)[None, :]
    try:
        rows = norm_prediction_table(optimizers, lr, lam, grad_norm_sq=args.grad_norm_sq, d=args.group_size,
                                     momentum=args.momentum, beta1=args.betas[0], beta2=args.betas[1],
                                     steps_per_epoch=args.steps_per_epoch)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from None
    from widelimit.tables import Table
    cols = [c for c in NORM_COLUMNS if not (c[1] == "relaxation_epochs" and args.steps_per_epoch is None)]
    if not any(o in ("momentum", "nesterov") for o in optimizers):
        cols = [c for c in cols if c[1] != "momentum"]
    if not any(o in adam for o in optimizers):
        cols = [c for c in cols if c[1] != "beta1"]
    names = [c[0] for c in cols]
    table = Table(names, [[r[key] if key != "optimizer" else r[key].replace("_", "-") for _, key in cols]
                          for r in rows],
                  units={k: v for k, v in NORM_UNITS.items() if k in names},
                  title="Scale-invariant groups: equilibrium under L2 / weight decay",
                  notes=[f"G = ||∇ℓ(ŵ)||² at unit norm = {args.grad_norm_sq:g}"
                         + (f"; group size d = {args.group_size}" if args.group_size else "")
                         + (f"; β2 = {args.betas[1]:g}" if any(o in adam for o in optimizers) else ""),
                         "leading order in ηλ, uncorrelated gradients (widelimit.dynamics.norms_closed). "
                         "Angular update per step: SGD √(2ηλ), heavy ball √(2ηλ/(1+μ)), "
                         "AdamW √(2ηλ(1−β1)/(1+β1)); effective LR = η·κ/||w||²; relaxation = "
                         "e-folding time of a deviation from equilibrium"]
                  + ([] if args.group_size or args.optimizers else
                     ["adam-l2 and adamw rows need --group-size D (parameters in the group)"]))
    _write_tables({"norms": table}, args)
    return EXIT_OK


def cmd_validate(args) -> int:
    try:
        from widelimit.studies import STUDIES, get_study
    except ImportError as e:
        raise CommandError(f"the validation studies are not available (widelimit.studies: {e})") from e
    if args.study not in STUDIES:
        raise UsageError(f"argument STUDY: unknown study {args.study!r}; choose from {', '.join(STUDIES)}")
    out = args.out if args.out is not None else Path("validation") / args.size
    try:
        run = get_study(args.study)
    except ImportError as e:
        raise CommandError(f"study {args.study!r} is registered but its module cannot be imported: {e}") from e
    out.mkdir(parents=True, exist_ok=True)
    report = run(args.size, out, progress=not args.no_progress, resume=args.resume)
    if not args.quiet:
        print(Path(report).read_text().rstrip() + "\n")
    print(f"report: {report}")
    return EXIT_OK


def _derivations_dir() -> Path:
    """The repository's ``derivations/`` folder (next to the ``widelimit`` package)."""
    import widelimit
    return Path(widelimit.__file__).resolve().parent.parent / "derivations"


def cmd_derive(args) -> int:
    import importlib.util
    names = args.names or list(DERIVATIONS)
    bad = [n for n in names if n not in DERIVATIONS]
    if bad:
        raise UsageError(f"argument NAME: unknown derivation(s) {bad}; choose from {', '.join(DERIVATIONS)}")
    root = _derivations_dir()
    files = {n: root / f"{n}.py" for n in names}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if not root.is_dir():
        raise CommandError(f"derivations folder not found at {root}: 'widelimit derive' runs from a source "
                           "checkout of widelimit (the derivations/ folder beside the widelimit package)")
    if missing:
        raise CommandError(f"derivation script(s) not found: {missing}")
    args.out.mkdir(parents=True, exist_ok=True)
    failed: List[str] = []
    for n, path in _progress(files.items(), args, desc="derivations", total=len(files)):
        spec = importlib.util.spec_from_file_location(f"widelimit_derivation_{n}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        if not callable(getattr(mod, "main", None)):
            raise CommandError(f"{path} has no main(out_path) function")
        out_path = args.out / f"{n}.md"
        result = mod.main(out_path)
        line = f"{n}: wrote {out_path}"
        if isinstance(result, dict):  # {check name: passed}
            bad = [k for k, ok in result.items() if not ok]
            line += f" ({len(result) - len(bad)}/{len(result)} checks passed)"
            failed += [f"{n}: {k}" for k in bad]
        print(line)
    if failed:
        print("FAILED checks: " + "; ".join(failed), file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


# ================================================================================================
# entry point
# ================================================================================================
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``widelimit`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit status
    (0 ok, 1 failure while computing, 2 bad arguments)."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as e:  # --help/--version (0) or an argparse error (2, message already printed)
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    sub = args._parser  # the (sub)parser that owns the options, for error messages
    try:
        return args.func(args)
    except UsageError as e:
        sub.print_usage(sys.stderr)
        print(f"{sub.prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except CommandError as e:
        print(f"{sub.prog}: failed: {e}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        print(f"{sub.prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
