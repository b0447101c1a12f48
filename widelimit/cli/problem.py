"""The kernels of one theory problem: from ``--kernels FILE.npz`` or computed for the architecture on the
dataset. Only reading and reporting live here; the kernel container (its fields and .npz format) is the
library's (:mod:`widelimit.kernels`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import CommandError, UsageError, require
from .options import build_spec, data_options, describe_spec
from .progress import announce, kernel_cost_s, progress


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


def load_problem(args) -> Problem:
    """Kernels from ``--kernels``, or the analytic NTK (and NNGP for ``--f0 nngp``) of the architecture on
    the dataset (progress bar over kernel blocks; cost announced when above ~10 s)."""
    import numpy as np
    if args.kernels is not None:
        return load_kernel_file(args)
    load_dataset = require("widelimit.data", "load_dataset")
    kernel_fn = require("widelimit.kernels", "kernel_fn")
    name = args.data or "digits"
    try:  # sizes against the examples available are only known once the data are loaded (cheap)
        ds = load_dataset(name, **data_options(args))
    except (TypeError, ValueError) as e:
        raise UsageError(f"data options: {e}") from None
    spec = build_spec(args)
    nngp = args.f0 == "nngp"
    dim = int(np.prod(ds.x_train.shape[1:]))
    announce(args, f"kernels of {ds.n_train} train / {ds.n_test} test points",
             kernel_cost_s(ds.n_train, ds.n_test, spec.depth, dim, cnn=args.arch == "cnn"))
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
    src = (f"{name}: {ds.n_train} train / {ds.n_test} test"
           + (f", classes {list(ds.labels)}" if ds.labels is not None else "") + f"; {describe_spec(spec)}")
    DataKernels = require("widelimit.kernels", "DataKernels")
    try:
        kern = DataKernels(f64(out[0].ntk), f64(out[1].ntk), ds.y_train, ds.y_test, spec.homogeneity_degree,
                           *extra, source=src)
    except ValueError as e:
        raise CommandError(f"the kernels of {describe_spec(spec)} on {name} are not valid: {e}") from e
    return Problem(kern, src, ds.labels is not None)
