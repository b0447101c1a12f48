"""Kernel matrices as bounded-memory operators for the Krylov solver (docs/theory.md §4).

:class:`KernelMatrix` wraps an unnormalised kernel block (an in-memory array or a ``np.memmap`` on disk,
float32 or float64) divided by a ``normalization`` (``N K`` for the NTK, docs/theory.md §1) and applies it
to a block of vectors row chunk by row chunk, accumulating in float64: the memory beyond the kernel
itself is one chunk of ``chunk_bytes`` plus the result. Cheap checks (:meth:`KernelMatrix.check_square`)
read a few thousand entries, never the whole matrix, so they run before any expensive pass.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

#: default float64 chunk buffer, and the fewest rows a default chunk has (each chunk re-reads the (N, b)
#: block from cache: at N = 50 000, 5-row chunks ran at 0.9 GB/s, 10-row (4 MiB) ones at 1.9 GB/s and
#: 41-row (16 MiB) ones at 1.8 GB/s; at N = 10 000 every size from 0.5 to 32 MiB was within noise;
#: benchmarks/RESULTS_scale.md §6)
_CHUNK_BYTES = 1 << 22
_MIN_ROWS = 10
#: wide passes (more than ``_NARROW`` columns: the lockstep blocks, the NNGP sandwich) re-read the (N, b)
#: block from MEMORY for every chunk, so their default chunks are ``6 b`` rows, up to ``_WIDE_CHUNK_BYTES``
#: (N = 20 000 float32, b = 74, one thread: 4 MiB chunks 2.89 s, 16 MiB 2.37 s, 64 MiB 2.22 s per pass; b = 10:
#: 0.56 / 0.77 / 0.82 s)
_NARROW = 16
_WIDE_CHUNK_BYTES = 1 << 26
#: BLAS threads of a float32 pass: None leaves the caller's setting (``KrylovLoss(threads=...)``, the CLI's
#: one thread on the Krylov path); an int limits every pass of this operator
_BLAS_THREADS = None
#: block rows of the float64 upper-triangle sandwich
_SANDWICH_ROWS = 1024
_SYMMETRY_RTOL = 1e-5           # |K_ij - K_ji| <= rtol * max|diag K| (tolerates float32 kernels)
_PSD_RTOL = 1e-5                # smallest eigenvalue of a principal submatrix >= -rtol * largest


# one implementation, shared with the blockwise kernels (dynamics may import kernels, not the reverse)
from ...kernels.blockwise import available_memory_bytes, blas_threads  # noqa: E402


class KernelMatrix:
    """``A = K / normalization`` for a kernel block ``K`` of shape (P, N), applied in row chunks.

    Args:
      name: argument name used in error messages.
      matrix: array-like of shape (P, N); float32/float64 arrays and memmaps are used without a copy.
      normalization: divisor ``> 0`` (``N K`` for the MSE NTK; 1 for the NNGP).
      chunk_bytes: float64 bytes of one row chunk: the one reused buffer of the float32 passes (default
        ``None``: 4 MiB, and at least 10 rows).
      blas_threads: BLAS threads during a float32 chunked pass (``None``, the default: the caller's
        setting, e.g. ``KrylovLoss(threads=...)``; 1 thread ran the passes up to 2.8x faster on the shared
        2-core machine, benchmarks/RESULTS_scale.md §6).
    """

    def __init__(self, name: str, matrix, normalization: float = 1.0, chunk_bytes: Optional[int] = None,
                 blas_threads: Optional[int] = _BLAS_THREADS):
        if matrix is None:
            raise TypeError(f"{name} must be an array, got None")
        if not isinstance(matrix, np.ndarray):
            try:
                matrix = np.asarray(matrix, dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise TypeError(f"{name} must be a real numeric array, got {type(matrix).__name__}") from e
        if matrix.dtype not in (np.float32, np.float64):
            if not np.issubdtype(matrix.dtype, np.number) or np.issubdtype(matrix.dtype, np.complexfloating):
                raise TypeError(f"{name} must be a real float array, got dtype {matrix.dtype}")
            matrix = matrix.astype(np.float64)
        if matrix.ndim != 2 or 0 in matrix.shape:
            raise ValueError(f"{name} must be a non-empty 2-D (P, N) matrix, got shape {matrix.shape}")
        if not (np.isfinite(normalization) and normalization > 0):
            raise ValueError(f"normalization must be finite and > 0, got {normalization}")
        self.name, self.matrix, self.normalization = name, matrix, float(normalization)
        if chunk_bytes is not None and (isinstance(chunk_bytes, bool) or not isinstance(
                chunk_bytes, (int, np.integer)) or chunk_bytes < 1):
            raise ValueError(f"chunk_bytes must be a positive int or None, got {chunk_bytes!r}")
        if blas_threads is not None and (isinstance(blas_threads, bool) or not isinstance(
                blas_threads, (int, np.integer)) or blas_threads < 1):
            raise ValueError(f"blas_threads must be a positive int or None, got {blas_threads!r}")
        self.rows = max(_MIN_ROWS, _CHUNK_BYTES // (8 * matrix.shape[1])) if chunk_bytes is None else \
            max(1, int(chunk_bytes) // (8 * matrix.shape[1]))
        self._auto_rows = chunk_bytes is None
        self.blas_threads = None if blas_threads is None else int(blas_threads)
        self._buf = None         # the float64 chunk buffer, allocated at the first float32 pass
        self.passes = 0          # number of full passes over the matrix (matmat calls)
        self._finite_checked = False

    @property
    def shape(self) -> tuple:
        return tuple(self.matrix.shape)

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes)

    def chunk_rows(self, width: int = 1) -> int:
        """Rows of one chunk for a pass with ``width`` columns: :attr:`rows`, or for a wide pass under the
        default chunk size ``6 width`` rows up to ``_WIDE_CHUNK_BYTES``."""
        if not self._auto_rows or width <= _NARROW:
            return self.rows
        return max(self.rows, min(6 * int(width), _WIDE_CHUNK_BYTES // (8 * self.shape[1])))

    def _chunks(self, width: int = 1):
        """Yield ``(i, rows i.. of the matrix as float64)``; float32 rows are cast into ONE reused buffer of
        :meth:`chunk_rows` rows (allocated at the first pass, grown once for a wider pass), so a pass
        allocates nothing per chunk. The yielded array is overwritten by the next chunk: use it before
        advancing."""
        n_rows = self.shape[0]
        rows = self.chunk_rows(width)
        if self._buf is None or self._buf.shape[0] < min(rows, n_rows):
            self._buf = np.empty((min(rows, n_rows), self.shape[1]))
        for i in range(0, n_rows, rows):
            src = self.matrix[i:i + rows]
            blk = self._buf[:src.shape[0]]
            np.copyto(blk, src)
            if not self._finite_checked and not np.all(np.isfinite(blk)):
                raise ValueError(f"{self.name} contains NaN or inf (rows {i}..{i + blk.shape[0] - 1})")
            yield i, blk
        self._finite_checked = True

    def _check_out(self, out: np.ndarray) -> np.ndarray:
        if not np.all(np.isfinite(out)):
            raise ValueError(f"{self.name} contains NaN or inf")
        return out

    def matmat(self, x: np.ndarray) -> np.ndarray:
        """``A @ x`` for ``x`` of shape (N, b), float64, one pass over the matrix.

        A float64 matrix (in memory or memory-mapped) is multiplied in one BLAS call on a view (no copy);
        a float32 one in float64 row chunks (one reused buffer, each chunk's product written in place into
        the result), with BLAS limited to ``blas_threads``. Non-finite entries raise ValueError: a NaN/inf
        entry makes its output row non-finite (checked on every pass; float32 chunks are also checked
        entry-wise once)."""
        x = np.asarray(x, dtype=np.float64)
        self.passes += 1
        if self.matrix.dtype == np.float64:
            m = np.asarray(self.matrix)
            if m.shape[0] == m.shape[1]:
                # (x^T K)^T = K^T x = K x for the symmetric kernels the solver requires (check_square); as
                # a (b, N) product over a C-ordered K it ran 1.3-1.6x faster than K @ x at b = 10-74 (N = 10 000)
                return self._check_out(np.matmul(np.ascontiguousarray(x.T), m).T) / self.normalization
            return self._check_out(m @ x) / self.normalization
        out = np.empty((self.shape[0], x.shape[1]))
        with self._threads():
            for i, blk in self._chunks(x.shape[1]):
                np.matmul(blk, x, out=out[i:i + blk.shape[0]])
        return self._check_out(out) / self.normalization

    def rmatmat(self, z: np.ndarray) -> np.ndarray:
        """``A^T @ z`` for ``z`` of shape (P, s), float64, one pass over the matrix."""
        z = np.asarray(z, dtype=np.float64)
        self.passes += 1
        if self.matrix.dtype == np.float64:
            return self._check_out(np.asarray(self.matrix).T @ z) / self.normalization
        out = np.zeros((self.shape[1], z.shape[1]))
        tmp = np.empty_like(out)
        with self._threads():
            for i, blk in self._chunks(z.shape[1]):
                np.matmul(blk.T, z[i:i + blk.shape[0]], out=tmp)
                out += tmp
        return out / self.normalization

    def sandwich(self, q: np.ndarray) -> np.ndarray:
        """``q^T A q`` for a square ``A`` and ``q`` of shape (N, r), one pass: float64 from the upper block
        triangle (``_SANDWICH_ROWS x r`` extra floats), float32 in row chunks over the whole matrix
        (``rows r`` extra floats)."""
        q = np.asarray(q, dtype=np.float64)
        self.passes += 1
        r = q.shape[1]
        if self.matrix.dtype == np.float64:
            # upper block triangle only (the matrix is symmetric, check_square): per block row i,
            # Q_i^T K_ii Q_i + (Q_i^T K_i,>i Q_>i + transpose), about half the flops of K @ q for blocks of
            # _SANDWICH_ROWS >> r (N = 10 000, r = 512: 0.75-0.87 s against 1.24-1.33 s for q^T (K q),
            # benchmarks/micro_sandwich.py); no chunk copies, B x r extra floats
            m = np.asarray(self.matrix)
            n = m.shape[0]
            out = np.zeros((r, r))
            for i0 in range(0, n, _SANDWICH_ROWS):
                i1 = min(i0 + _SANDWICH_ROWS, n)
                qi = q[i0:i1]
                out += qi.T @ (m[i0:i1, i0:i1] @ qi)
                if i1 < n:
                    t = qi.T @ (m[i0:i1, i1:] @ q[i1:])
                    out += t
                    out += t.T
            out /= self.normalization
            self._check_out(out)
            return 0.5 * (out + out.T)
        out = np.zeros((r, r))
        aq = np.empty((min(self.chunk_rows(r), self.shape[0]), r))
        tmp = np.empty((r, r))
        with self._threads():
            for i, blk in self._chunks(r):
                m = blk.shape[0]
                np.matmul(blk, q, out=aq[:m])
                np.matmul(q[i:i + m].T, aq[:m], out=tmp)
                out += tmp
        out /= self.normalization
        return 0.5 * (out + out.T)

    def _threads(self):
        """BLAS limited to ``blas_threads`` during a chunked pass (no limit when None)."""
        return blas_threads(self.blas_threads)

    def check_square(self, n_pairs: int = 4096, n_sub: int = 256, seed: int = 0) -> None:
        """Cheap checks that ``A`` is a symmetric PSD kernel, reading ``O(n_pairs + n_sub^2 + N)`` entries.

        * square shape; finite, non-negative diagonal;
        * symmetry of ``n_pairs`` random entries ``|K_ij - K_ji| <= 1e-5 max diag K``;
        * PSD of a random ``n_sub x n_sub`` principal submatrix (a principal submatrix of a PSD matrix is
          PSD, so a clearly negative eigenvalue proves the kernel is not PSD).

        Raises ValueError naming the kernel. A matrix that passes may still fail the Krylov solver's own
        Ritz-value test (a Ritz value is a Rayleigh quotient: a negative one also proves non-PSD).
        """
        n, m = self.shape
        if n != m:
            raise ValueError(f"{self.name} must be square (N, N), got shape {self.shape}")
        diag = np.asarray(self.matrix[np.arange(n), np.arange(n)], dtype=np.float64)
        if not np.all(np.isfinite(diag)):
            raise ValueError(f"{self.name} contains NaN or inf on its diagonal")
        scale = float(np.max(np.abs(diag)))
        if np.any(diag < -_SYMMETRY_RTOL * scale):
            raise ValueError(f"{self.name} is not positive semi-definite: negative diagonal entry "
                             f"{diag.min():.3g}")
        rng = np.random.default_rng(seed)
        i, j = rng.integers(0, n, n_pairs), rng.integers(0, n, n_pairs)
        a_full = np.asarray(self.matrix[i, j], dtype=np.float64)
        b = np.asarray(self.matrix[j, i], dtype=np.float64)
        asym = float(np.max(np.abs(a_full - b)))
        if not np.isfinite(asym) or asym > _SYMMETRY_RTOL * max(scale, 1e-300):
            raise ValueError(f"{self.name} is not symmetric: max|K_ij - K_ji| = {asym:.3g} over {n_pairs} "
                             f"sampled pairs vs max diag = {scale:.3g}")
        idx = np.sort(rng.choice(n, size=min(n_sub, n), replace=False))
        sub = np.asarray(self.matrix[np.ix_(idx, idx)], dtype=np.float64)
        ev = np.linalg.eigvalsh(0.5 * (sub + sub.T))
        if ev[0] < -_PSD_RTOL * max(ev[-1], 1e-300):
            raise ValueError(f"{self.name} is not positive semi-definite: a {idx.size}x{idx.size} principal "
                             f"submatrix has eigenvalue {ev[0]:.3g} (largest {ev[-1]:.3g})")


def as_kernel(name: str, matrix, normalization: float = 1.0, shape: Optional[tuple] = None) -> KernelMatrix:
    """A :class:`KernelMatrix` (passed through if it already is one) with an optional shape check."""
    k = matrix if isinstance(matrix, KernelMatrix) else KernelMatrix(name, matrix, normalization)
    if shape is not None and any(s is not None and s != t for s, t in zip(shape, k.shape)):
        want = tuple("*" if s is None else s for s in shape)
        raise ValueError(f"{name} must have shape {want}, got {k.shape}")
    return k


__all__ = ["KernelMatrix", "as_kernel", "available_memory_bytes"]
