"""The kernels of one train/test problem, with targets, ``L`` and provenance: :class:`DataKernels`.

One container for everything the theory needs about a data set (docs/theory.md §1 vocabulary):
unnormalised NTK blocks ``ntk_train_train`` (N, N) and ``ntk_test_train`` (M, N); optionally the NNGP
blocks ``nngp_train_train`` (N, N), ``nngp_test_train`` (M, N), ``nngp_test_test`` (M, M) or its diagonal
(M,); targets ``y_train`` (N,)/(N, K), ``y_test`` (M,)/(M, K); the homogeneity degree ``L``; and a
``source`` string saying where the kernels came from. Saved as ``.npz`` with a format version; loading
validates every field (shapes, finite, symmetric, positive semi-definite within a relative tolerance) and
reports a bad or empty file as a ValueError naming the file and the field.
"""
from __future__ import annotations

import numbers
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

import numpy as np

FORMAT = "widelimit.kernels"
FORMAT_VERSION = 1
SYMMETRY_RTOL = 1e-5     # |K - K^T| <= rtol * max|K| (tolerates float32 kernels)
PSD_RTOL = 1e-5          # smallest eigenvalue >= -rtol * largest
_ARRAYS = ("ntk_train_train", "ntk_test_train", "y_train", "y_test", "nngp_train_train", "nngp_test_train",
           "nngp_test_test")


def _array(name: str, value, ndims: tuple) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a real numeric array, got {type(value).__name__}") from e
    if a.ndim not in ndims:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} dimensions, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def _symmetric(name: str, k: np.ndarray) -> None:
    scale = float(np.max(np.abs(k))) if k.size else 0.0
    asym = float(np.max(np.abs(k - k.T))) if k.size else 0.0
    if asym > SYMMETRY_RTOL * scale:
        raise ValueError(f"{name} is not symmetric: max|K - K^T| = {asym:.3g} vs max|K| = {scale:.3g}")


def _psd(name: str, k: np.ndarray) -> None:
    ev = np.linalg.eigvalsh(0.5 * (k + k.T))
    top = float(np.max(np.abs(ev))) if ev.size else 0.0
    if ev.size and ev[0] < -PSD_RTOL * top:
        raise ValueError(f"{name} is not positive semi-definite: smallest eigenvalue {ev[0]:.3g} "
                         f"vs largest {top:.3g}")


@dataclass(frozen=True, eq=False)
class KernelBlocks:
    """The fields of one problem's kernels, shared by :class:`DataKernels` (float64, validated) and
    :class:`widelimit.kernels.blockwise.LargeKernels` (as stored: float32/float64 arrays or memmaps).
    Field meanings as documented on :class:`DataKernels` (docs/theory.md §1)."""

    ntk_train_train: np.ndarray
    ntk_test_train: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    L: int
    nngp_train_train: Optional[np.ndarray] = None
    nngp_test_train: Optional[np.ndarray] = None
    nngp_test_test: Optional[np.ndarray] = None
    source: str = ""

    @property
    def n_train(self) -> int:
        return self.ntk_train_train.shape[0]

    @property
    def n_test(self) -> int:
        return self.ntk_test_train.shape[0]

    @property
    def has_nngp(self) -> bool:
        return self.nngp_train_train is not None


@dataclass(frozen=True, eq=False)
class DataKernels(KernelBlocks):
    """Kernels, targets and degree of one problem (float64; validated on construction).

    Fields:
      ntk_train_train: unnormalised NTK ``Theta(X, X)``, (N, N).
      ntk_test_train: unnormalised NTK ``Theta(x, X)``, (M, N).
      y_train: training targets, (N,) or (N, K).
      y_test: test targets, (M,) or (M, K) (same K).
      L: homogeneity degree of the network, int >= 1.
      nngp_train_train: NNGP ``K(X, X)`` (prior covariance of f0), (N, N), or None.
      nngp_test_train: NNGP ``K(x, X)``, (M, N), or None.
      nngp_test_test: NNGP ``K(x, x)`` (M, M) or its diagonal (M,), or None.
      source: provenance, free text (e.g. "mnist 200/500; MLP(depth=3)").

    Construction checks shapes, finiteness and symmetry (cheap); :meth:`validate` (run by :meth:`load`)
    also checks positive semi-definiteness (O(N^3)).
    """

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        if isinstance(self.L, bool) or not isinstance(self.L, numbers.Integral) or self.L < 1:
            raise ValueError(f"L must be an int >= 1 (homogeneity degree), got {self.L!r}")
        set_("L", int(self.L))
        if not isinstance(self.source, str):
            raise TypeError(f"source must be a str, got {type(self.source).__name__}")
        ktt = _array("ntk_train_train", self.ntk_train_train, (2,))
        n = ktt.shape[0]
        if ktt.shape != (n, n) or n == 0:
            raise ValueError(f"ntk_train_train must be a non-empty square (N, N) matrix, got {ktt.shape}")
        _symmetric("ntk_train_train", ktt)
        kxt = _array("ntk_test_train", self.ntk_test_train, (2,))
        m = kxt.shape[0]
        if kxt.shape[1] != n or m == 0:
            raise ValueError(f"ntk_test_train must have shape (M, {n}) with M >= 1, got {kxt.shape}")
        y = _array("y_train", self.y_train, (1, 2))
        if y.shape[0] != n:
            raise ValueError(f"y_train must have {n} rows (one per training point), got {y.shape}")
        yt = _array("y_test", self.y_test, (1, 2))
        if yt.shape != (m,) + y.shape[1:]:
            raise ValueError(f"y_test must have shape {(m,) + y.shape[1:]}, got {yt.shape}")
        for k, v in (("ntk_train_train", ktt), ("ntk_test_train", kxt), ("y_train", y), ("y_test", yt)):
            set_(k, v)
        given = [f for f in ("nngp_train_train", "nngp_test_train", "nngp_test_test")
                 if getattr(self, f) is not None]
        if given and len(given) < 3:
            raise ValueError(f"give all three NNGP blocks or none; got only {given}")
        if given:
            k = _array("nngp_train_train", self.nngp_train_train, (2,))
            if k.shape != (n, n):
                raise ValueError(f"nngp_train_train must have shape ({n}, {n}), got {k.shape}")
            _symmetric("nngp_train_train", k)
            kx = _array("nngp_test_train", self.nngp_test_train, (2,))
            if kx.shape != (m, n):
                raise ValueError(f"nngp_test_train must have shape ({m}, {n}), got {kx.shape}")
            kxx = _array("nngp_test_test", self.nngp_test_test, (1, 2))
            if kxx.shape not in ((m,), (m, m)):
                raise ValueError(f"nngp_test_test must have shape ({m},) or ({m}, {m}), got {kxx.shape}")
            if kxx.ndim == 2:
                _symmetric("nngp_test_test", kxx)
            if np.any((np.diag(kxx) if kxx.ndim == 2 else kxx) < 0):
                raise ValueError("nngp_test_test has a negative diagonal entry (variances must be >= 0)")
            for f, v in (("nngp_train_train", k), ("nngp_test_train", kx), ("nngp_test_test", kxx)):
                set_(f, v)

    # ---------------------------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec, x_train, y_train, x_test, y_test, *, nngp: bool = True, backend: str = "auto",
                  batch_size: Optional[int] = None, source: Optional[str] = None) -> "DataKernels":
        """The analytic infinite-width kernels of a homogeneous :mod:`widelimit.arch` spec on a split
        (``L = spec.homogeneity_degree``; with ``nngp`` also the NNGP blocks, test-test as its diagonal,
        computed in blocks of 256 test points)."""
        from . import kernel_fn
        L = spec.homogeneity_degree
        if L is None:
            raise ValueError(f"spec must be homogeneous in its parameters for the L2 theory, got {spec!r}")
        k = kernel_fn(spec, backend)
        tt = k(x_train, None, batch_size=batch_size)
        xt = k(x_test, x_train, batch_size=batch_size)
        extra = {}
        if nngp:
            m = np.shape(x_test)[0]
            diag = np.concatenate([np.diag(k(x_test[i:i + 256], None, batch_size=batch_size).nngp)
                                   for i in range(0, m, 256)])
            extra = dict(nngp_train_train=tt.nngp, nngp_test_train=xt.nngp, nngp_test_test=diag)
        src = source if source is not None else f"analytic kernels of {spec!r}"
        return cls(tt.ntk, xt.ntk, y_train, y_test, int(L), source=src, **extra)

    def validate(self) -> "DataKernels":
        """Also check that ``ntk_train_train`` and ``nngp_train_train`` are PSD (ValueError naming the
        field); returns ``self``."""
        _psd("ntk_train_train", self.ntk_train_train)
        if self.has_nngp:
            _psd("nngp_train_train", self.nngp_train_train)
        return self

    def save(self, path) -> Path:
        """Write ``path`` (.npz, uncompressed) with every field and the format version; returns the path."""
        path = Path(path)
        arrays = {f: getattr(self, f) for f in _ARRAYS if getattr(self, f) is not None}
        np.savez(path, format=np.array(FORMAT), format_version=np.array(FORMAT_VERSION),
                 L=np.array(self.L), source=np.array(self.source), **arrays)
        return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")

    @classmethod
    def load(cls, path, *, check_psd: bool = True) -> "DataKernels":
        """Read a file written by :meth:`save`; any problem is a ValueError naming the file and field."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: no such kernel file")
        if path.stat().st_size == 0:
            raise ValueError(f"{path}: the kernel file is empty")
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path}: not a readable .npz kernel file ({type(e).__name__}: {e})") from None
        if str(data.get("format", "")) != FORMAT:
            raise ValueError(f"{path}: not a widelimit kernel file (field 'format' is missing or wrong)")
        version = int(data.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise ValueError(f"{path}: format_version {version} is not supported (this widelimit reads "
                             f"{FORMAT_VERSION})")
        missing = [f for f in ("ntk_train_train", "ntk_test_train", "y_train", "y_test", "L") if f not in data]
        if missing:
            raise ValueError(f"{path}: missing field(s) {missing}")
        try:
            L = data["L"]
            if L.shape != () or not np.issubdtype(L.dtype, np.integer):
                raise ValueError(f"L must be a scalar integer, got {L!r}")
            out = cls(**{f: data.get(f) for f in _ARRAYS}, L=int(L), source=str(data.get("source", "")))
            return out.validate() if check_psd else out
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None

    def replace(self, **changes) -> "DataKernels":
        """A copy with some fields changed (validated again)."""
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        kw.update(changes)
        return type(self)(**kw)


__all__ = ["DataKernels", "KernelBlocks", "FORMAT_VERSION"]
