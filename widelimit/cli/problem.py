"""The kernels of one theory problem: from ``--kernels FILE.npz`` or computed for the architecture on the
dataset. Only reading and reporting live here; the kernel container (its fields and .npz format) is the
library's (:mod:`widelimit.kernels`).
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from typing import Any, Optional

from .errors import CommandError, UsageError, require
from .options import build_spec, data_options, describe_spec
from .progress import announce, kernel_cost_s, progress

NTK_KEYS = ("ntk_train_train", "ntk_test_train", "y_train", "y_test")
NNGP_KEYS = ("nngp_train_train", "nngp_test_train", "nngp_test_test")
_OLD_NAMES = {"k_train_train": "ntk_train_train", "k_test_train": "ntk_test_train",
              "nngp_test_diag": "nngp_test_test"}


@dataclass(frozen=True)
class Problem:
    """Kernels (fields named as :class:`widelimit.kernels.DataKernels`), where they came from, and
    whether the targets are class labels."""

    kernels: Any
    source: str
    classification: bool

    @property
    def L(self) -> int:
        return self.kernels.L


@dataclass(frozen=True)
class _FileKernels:
    """Stand-in for :class:`widelimit.kernels.DataKernels` until the container lands (same field names)."""

    ntk_train_train: Any
    ntk_test_train: Any
    y_train: Any
    y_test: Any
    L: int
    nngp_train_train: Any = None
    nngp_test_train: Any = None
    nngp_test_test: Any = None


def _read_npz(args) -> dict:
    """Arrays of ``--kernels`` (empty, truncated or non-npz files are a one-line ``--kernels`` error)."""
    import numpy as np
    path = args.kernels
    if path.stat().st_size == 0:
        raise UsageError(f"--kernels: {str(path)!r} is empty (expected an .npz file of kernels)")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {_OLD_NAMES.get(k, k): np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        why = str(e).split(". ")[0][:100]
        raise UsageError(f"--kernels: cannot read {str(path)!r} as an .npz file of kernels ({why})") from None


def load_kernel_file(args) -> Problem:
    """A problem from ``--kernels``: the NTK blocks and targets, ``L`` (or ``--L``), and the NNGP blocks
    when ``--f0 nngp``. Targets with only 0/1 or ±1 values count as classification."""
    import numpy as np
    z = _read_npz(args)
    need = NTK_KEYS + (NNGP_KEYS if args.f0 == "nngp" else ())
    missing = [k for k in need if k not in z]
    if missing:
        hint = ("; the default --f0 nngp needs the NNGP blocks (or pass --f0 zero)"
                if set(missing) <= set(NNGP_KEYS) else "")
        raise UsageError(f"--kernels: {str(args.kernels)!r} lacks {missing} (has {sorted(z)}){hint}")
    arrs = {k: np.asarray(z[k], dtype=np.float64) for k in need}
    L = args.L if args.L is not None else (int(z["L"]) if "L" in z else None)
    if L is None:
        raise UsageError("--kernels: the file has no 'L'; give the homogeneity degree with --L")
    y_tr, y_te = (a[:, None] if a.ndim == 1 else a for a in (arrs["y_train"], arrs["y_test"]))
    n, m = arrs["ntk_train_train"].shape[0], arrs["ntk_test_train"].shape[0]
    ok = (arrs["ntk_train_train"].shape == (n, n) and arrs["ntk_test_train"].shape == (m, n)
          and y_tr.shape[0] == n and y_te.shape[0] == m and y_tr.shape[1:] == y_te.shape[1:])
    if args.f0 == "nngp":
        ok &= (arrs["nngp_train_train"].shape == (n, n) and arrs["nngp_test_train"].shape == (m, n)
               and arrs["nngp_test_test"].shape in ((m,), (m, m)))
    if not ok:
        raise UsageError("--kernels: inconsistent shapes " + ", ".join(f"{k} {arrs[k].shape}" for k in need))
    cls = bool(np.all(np.isin(y_tr, (0.0, 1.0))) or np.all(np.isin(y_tr, (-1.0, 1.0))))
    k = _FileKernels(arrs["ntk_train_train"], arrs["ntk_test_train"], y_tr, y_te, L,
                     *(arrs.get(key) for key in NNGP_KEYS))
    return Problem(k, f"kernels from {args.kernels}", cls)


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
    if nngp:  # only the test-test diagonal is needed: blocks of 256 on the diagonal
        jobs += [(ds.x_test[i:i + 256], None) for i in range(0, ds.n_test, 256)]
    try:
        k = kernel_fn(spec)
        out = [k(x1, x2) for x1, x2 in progress(jobs, args, desc="kernels")]
    except (ImportError, NotImplementedError, ValueError) as e:
        raise CommandError(f"cannot compute the infinite-width NTK of {describe_spec(spec)} here: {e}") from e
    f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    extra = ((f64(out[0].nngp), f64(out[1].nngp), np.concatenate([np.diag(f64(o.nngp)) for o in out[2:]]))
             if nngp else (None, None, None))
    kern = _FileKernels(f64(out[0].ntk), f64(out[1].ntk), ds.y_train, ds.y_test, spec.homogeneity_degree, *extra)
    src = (f"{name}: {ds.n_train} train / {ds.n_test} test"
           + (f", classes {list(ds.labels)}" if ds.labels is not None else "") + f"; {describe_spec(spec)}")
    return Problem(kern, src, ds.labels is not None)
