"""The kernels of one theory problem: from ``--kernels FILE.npz`` or computed for the architecture on the
dataset. Only reading and reporting live here; the kernel container (its fields and .npz format) is the
library's (:mod:`widelimit.kernels`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import CommandError, UsageError, require
from .options import build_spec, data_options, describe_spec, large_mnist1d
from .progress import announce, kernel_cost_s, krylov_cost_s, progress

GiB = 2 ** 30
#: typical Krylov basis size per basis (benchmarks/RESULTS_krylov.md: r = 230-270 at N = 5k-20k) and the
#: operator's chunk buffer; only for the printed estimate (the solver checks its own reservation)
KRYLOV_TYPICAL_DIM = 600
KRYLOV_CHUNK_BYTES = 2 ** 22   # widelimit.dynamics.krylov.operator's default chunk buffer
#: runs needing less memory than this do not print the memory line
QUIET_BYTES = 2 ** 26


@dataclass(frozen=True)
class Problem:
    """A :class:`widelimit.kernels.DataKernels`, where it came from, and whether the targets are class
    labels."""

    kernels: Any
    source: str
    classification: bool

    @property
    def L(self) -> int:
        return self.kernels.L


def load_kernel_file(args) -> Problem:
    """A problem from ``--kernels``: a file written by :meth:`widelimit.kernels.DataKernels.save` (read and
    validated by :meth:`~widelimit.kernels.DataKernels.load`; every problem with it is a one-line
    ``--kernels`` error). ``--L`` overrides the file's degree. Targets with only 0/1 or ±1 values count
    as classification."""
    import numpy as np
    DataKernels = require("widelimit.kernels", "DataKernels")
    try:
        k = DataKernels.load(args.kernels)
        if args.L is not None:
            k = k.replace(L=args.L)
    except (TypeError, ValueError) as e:
        raise UsageError(f"--kernels: {' '.join(str(e).split())}") from None
    if args.f0 == "nngp" and not k.has_nngp:
        raise UsageError(f"--kernels: {str(args.kernels)!r} has no NNGP blocks, which the default --f0 nngp "
                         "needs (save them with the kernels, or pass --f0 zero)")
    y = k.y_train
    cls = bool(np.all(np.isin(y, (0.0, 1.0))) or np.all(np.isin(y, (-1.0, 1.0))))
    return Problem(k, k.source or f"kernels from {args.kernels}", cls)


@dataclass(frozen=True)
class MemoryPlan:
    """What a theory command will hold in memory, decided before any computation.

    Fields: ``solver`` ("eigh" or "krylov", ``--solver auto`` resolved as ``predict_model`` does);
    ``n_train``, ``n_test``; ``dtype`` kernel storage; ``kernel_bytes`` the stored kernel blocks;
    ``solver_bytes`` the solver's own arrays (eigh: eigenvectors and workspace ``3 * 8 N^2``; krylov: two
    bases of :data:`KRYLOV_TYPICAL_DIM` float64 columns and one chunk, an estimate); ``on_disk`` whether
    the kernels are memory-mapped (``--kernel-dir``); ``available`` bytes of memory available now."""

    solver: str
    n_train: int
    n_test: int
    dtype: str
    kernel_bytes: int
    solver_bytes: int
    on_disk: bool
    available: int

    @property
    def pass_bytes(self) -> int:
        """Bytes of the NTK blocks (train-train and test-train), which every Krylov pass reads."""
        n, m = self.n_train, self.n_test
        return (n * n + m * n) * (4 if self.dtype == "float32" else 8)

    def line(self) -> str:
        where = "memory-mapped on disk (page cache)" if self.on_disk else "in memory"
        return (f"memory: kernels {self.kernel_bytes / GiB:.2f} GiB ({self.dtype}, {where}) + {self.solver} "
                f"solver ≈ {self.solver_bytes / GiB:.2f} GiB; {self.available / GiB:.1f} GiB available")


def resolve_solver(args, n_train: int) -> str:
    """``--solver``, with ``auto`` resolved by the library's own thresholds for ``--f0`` (``KRYLOV_MIN_N``,
    ``KRYLOV_MIN_N_ZERO``)."""
    return require("widelimit.predict.models", "resolve_solver")(args.solver, n_train, args.f0)


def memory_plan(args) -> MemoryPlan:
    """The :class:`MemoryPlan` of the data options (not for ``--kernels``); checks the solver options."""
    kernel_bytes, available = require("widelimit.kernels.blockwise", "kernel_bytes", "available_memory_bytes")
    n = args.n_train or args._n_train_default
    m = args.n_test or args._n_test_default
    solver = resolve_solver(args, n)
    if solver == "eigh" and (args.kernel_dtype is not None or args.kernel_dir is not None):
        opt = "--kernel-dtype" if args.kernel_dtype is not None else "--kernel-dir"
        raise UsageError(f"{opt} applies to the krylov solver; the eigh path (--solver {args.solver}, "
                         f"N = {n}) keeps float64 kernels in memory: use --solver krylov or drop {opt}")
    if solver == "krylov" and getattr(args, "seeds", None) is not None:
        raise UsageError("--seeds: the n-seed spread needs the dense path (--solver eigh, and --n-train below "
                         f"{require('widelimit.predict.models', 'KRYLOV_MIN_N')} with --solver auto)")
    nngp = args.f0 == "nngp"
    dtype = "float64" if solver == "eigh" else (args.kernel_dtype or "float32")
    kb = kernel_bytes(n, m, nngp=nngp, dtype=dtype)
    sb = 3 * 8 * n * n if solver == "eigh" else \
        8 * KRYLOV_TYPICAL_DIM * (n + m) * (2 if nngp else 1) + KRYLOV_CHUNK_BYTES
    return MemoryPlan(solver, n, m, dtype, kb, sb, args.kernel_dir is not None, available())


def check_memory(args) -> MemoryPlan:
    """Refuse, as a one-line usage error (exit 2) before any computation, a run that would not fit:
    kernels + solver above 90 % of the available memory, or, memory-mapped, kernels above the available
    memory for the NTK blocks every solver pass reads (they would then come from disk at every pass). Sets ``args.solver_resolved`` and ``args.memory_plan`` (printed by
    :func:`load_problem` once the data are loaded)."""
    if args.kernels is not None:
        if args.kernel_dir is not None or args.kernel_dtype is not None:
            raise UsageError("--kernel-dir/--kernel-dtype: the kernels come from --kernels; drop them")
        args.solver_resolved = args.solver
        return None
    plan = memory_plan(args)
    args.solver_resolved = plan.solver
    need = plan.solver_bytes + (0 if plan.on_disk else plan.kernel_bytes)
    # memory-mapped: the NTK blocks are read at every solver pass (the NNGP blocks once), so they must stay
    # in the page cache
    over_disk = plan.on_disk and plan.pass_bytes > plan.available
    if need > 0.9 * plan.available or over_disk:
        hint = ("use --solver krylov" if plan.solver == "eigh" else
                "use --kernel-dtype float32" if plan.dtype == "float64" else
                "use --kernel-dir DIR (memory-mapped kernels)" if not plan.on_disk else
                "use a smaller --n-train")
        raise UsageError(f"--n-train {plan.n_train}: the {plan.solver} path needs {plan.kernel_bytes / GiB:.2f} "
                         f"GiB of {plan.dtype} kernels + {plan.solver_bytes / GiB:.2f} GiB of solver memory but "
                         f"only {plan.available / GiB:.2f} GiB are available; {hint}")
    args.memory_plan = plan
    return plan


def _load_data(args):
    """The dataset of the data options (MNIST-1D beyond its default split generated by ``data_large``)."""
    try:  # sizes against the examples available are only known once the data are loaded (cheap)
        if large_mnist1d(args):
            load = require("widelimit.data_large", "load_mnist1d_large")
            opts = data_options(args)
            return load(opts.pop("n_train"), opts.pop("n_test"), seed=opts.pop("seed"),
                        **{k: v for k, v in opts.items() if k != "classes"})
        return require("widelimit.data", "load_dataset")(args.data or "digits", **data_options(args))
    except (TypeError, ValueError) as e:
        raise UsageError(f"data options: {e}") from None


def _load_large(args, ds, spec, src: str) -> Problem:
    """The krylov path of an MLP: :func:`widelimit.kernels.blockwise.large_data_kernels` (kernels at
    ``--kernel-dtype``, in memory or memory-mapped under ``--kernel-dir``, progress bar over blocks)."""
    large = require("widelimit.kernels.blockwise", "large_data_kernels")
    try:
        k = large(spec, ds.x_train, ds.y_train, ds.x_test, ds.y_test, nngp=args.f0 == "nngp",
                  dtype=args.kernel_dtype or "float32", path=args.kernel_dir,
                  progress=not getattr(args, "no_progress", False), verbose=False, source=src)
    except (MemoryError, OSError) as e:
        raise CommandError(f"cannot compute the kernels of {ds.n_train} training points: {e}") from e
    except ValueError as e:   # a --kernel-dir holding another computation's kernels: never overwritten
        if args.kernel_dir is None:
            raise CommandError(f"cannot compute the kernels of {ds.n_train} training points: {e}") from e
        raise UsageError(f"--kernel-dir: {' '.join(str(e).split())}") from None
    return Problem(k, src, ds.labels is not None)


def load_problem(args) -> Problem:
    """Kernels from ``--kernels``, or the analytic NTK (and NNGP for ``--f0 nngp``) of the architecture on
    the dataset (progress bar over kernel blocks; cost announced when above ~10 s)."""
    import sys

    import numpy as np
    if args.kernels is not None:
        return load_kernel_file(args)
    kernel_fn = require("widelimit.kernels", "kernel_fn")
    name = args.data or "digits"
    ds = _load_data(args)
    plan = getattr(args, "memory_plan", None)
    if plan is not None and not getattr(args, "no_progress", False) and \
            plan.kernel_bytes + plan.solver_bytes >= QUIET_BYTES:
        print(plan.line(), file=sys.stderr)
    spec = build_spec(args)
    nngp = args.f0 == "nngp"
    dim = int(np.prod(ds.x_train.shape[1:]))
    solver = getattr(args, "solver_resolved", None) or resolve_solver(args, ds.n_train)
    announce(args, f"kernels of {ds.n_train} train / {ds.n_test} test points",
             kernel_cost_s(ds.n_train, ds.n_test, spec.depth, dim, cnn=args.arch == "cnn", eigh=solver == "eigh"))
    src = (f"{name}: {ds.n_train} train / {ds.n_test} test"
           + (f", classes {list(ds.labels)}" if ds.labels is not None else "") + f"; {describe_spec(spec)}")
    if solver == "krylov":
        itemsize = 8 if (args.kernel_dtype or "float32") == "float64" else 4
        announce(args, f"Krylov solver on {ds.n_train} training points (--f0 {args.f0})",
                 krylov_cost_s(ds.n_train, itemsize, args.f0))
    if solver == "krylov" and args.arch == "mlp":
        return _load_large(args, ds, spec, src)
    jobs = [(ds.x_train, None), (ds.x_test, ds.x_train)]
    full_test = nngp and getattr(args, "seeds", None) is not None   # --seeds: the spread needs all of K(x, x')
    if full_test:
        jobs.append((ds.x_test, None))
    elif nngp:  # only the test-test diagonal is needed: blocks of 256 on the diagonal
        jobs += [(ds.x_test[i:i + 256], None) for i in range(0, ds.n_test, 256)]
    try:
        k = kernel_fn(spec)
        out = [k(x1, x2) for x1, x2 in progress(jobs, args, desc="kernels")]
    except (ImportError, NotImplementedError, ValueError) as e:
        raise CommandError(f"cannot compute the infinite-width NTK of {describe_spec(spec)} here: {e}") from e
    f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    kxx = f64(out[2].nngp) if full_test else (
        np.concatenate([np.diag(f64(o.nngp)) for o in out[2:]]) if nngp else None)
    extra = (f64(out[0].nngp), f64(out[1].nngp), kxx) if nngp else (None, None, None)
    DataKernels = require("widelimit.kernels", "DataKernels")
    try:
        kern = DataKernels(f64(out[0].ntk), f64(out[1].ntk), ds.y_train, ds.y_test, spec.homogeneity_degree,
                           *extra, source=src)
    except ValueError as e:
        raise CommandError(f"the kernels of {describe_spec(spec)} on {name} are not valid: {e}") from e
    return Problem(kern, src, ds.labels is not None)
