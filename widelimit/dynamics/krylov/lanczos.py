"""Block Lanczos with full reorthogonalisation and an a-posteriori stopping rule (docs/theory.md §4).

For a symmetric PSD operator ``A`` (N x N) and a starting block ``S`` (N x b) the block Krylov space
``K_k = span{S, A S, ..., A^{k-1} S}`` has an orthonormal basis ``Q`` (N x r, ``r <= k b``) and projected
matrix ``T = Q^T A Q = W diag(theta) W^T`` (Ritz values ``theta``). Any function of ``A`` applied to the
start is then approximated by

    phi(A) S  ~  Q W diag(phi(theta)) W^T Q^T S,

exact for polynomials ``phi`` of degree ``< k`` and accurate to the best polynomial approximation of
``phi`` on the spectrum (Saad, *Iterative methods for sparse linear systems*, §6.12). Here ``T`` is formed
from ``Q^T (A Q)`` directly (no three-term recurrence), every new block is orthogonalised twice against
the whole basis and directions whose residual is below ``deflation_rtol * ||A||`` are dropped, so a
starting block with dependent columns (or an exhausted Krylov space) is handled.

Stopping is a-posteriori: the caller's ``solution`` (the quantities of interest, e.g. test outputs at
sentinel ``(lam, t)``) is evaluated on the current basis whenever it has grown by ``check_growth``
(10 %) and compared with the evaluation ``lag`` (2) evaluations earlier; the relative difference is the
error estimate. Because Krylov approximations of smooth functions converge geometrically, that difference
bounds the error of the earlier evaluation up to a factor ``1 + O(rho^lag)``, and the returned solution is
more accurate still (``tests/test_krylov.py`` checks the estimate against the dense answer).
"""
from __future__ import annotations

import time as _time
from dataclasses import dataclass
from typing import Callable, List, Sequence

import numpy as np

from ...kernels.blockwise import blas_threads  # the project's one BLAS thread limiter

_PSD_RTOL = 1e-5



@dataclass(frozen=True)
class KrylovBasis:
    """An orthonormal block Krylov basis and its projected operator.

    Fields:
      q: (N, r) orthonormal basis ``Q``.
      ritz_values: (r,) eigenvalues ``theta`` of ``T = Q^T A Q`` (ascending; units of ``A``, 1/time).
      ritz_vectors: (r, r) eigenvectors ``W`` of ``T``.
      residual_norm: spectral norm of the last Lanczos residual block ``(I - Q Q^T) A Q_last``.
      n_blocks: number of blocks (operator passes) used.
      error_estimate: relative change of ``solution`` over the last ``lag`` evaluations (0 if the Krylov space
        became invariant: then the solution is exact up to rounding).
      converged: ``error_estimate <= tol`` (or an invariant space was found).
      history: ``((dim, error_estimate), ...)`` after every block.
      seconds: wall time of the iteration (operator passes included).
    """

    q: np.ndarray
    ritz_values: np.ndarray
    ritz_vectors: np.ndarray
    residual_norm: float
    n_blocks: int
    error_estimate: float
    converged: bool
    history: tuple
    seconds: float

    @property
    def dim(self) -> int:
        return int(self.q.shape[1])


def _orthonormal_columns(w: np.ndarray, cutoff: float) -> tuple[np.ndarray, float, float]:
    """Orthonormal basis of the columns of ``w`` with singular values ``> cutoff``; ``||w||_2``; the
    smallest kept singular value.

    Fast path: the singular pairs from the small Gram matrix ``w^T w`` (b x b), re-orthonormalised once
    (Cholesky-QR2 style), used when every kept singular value is above ``1e-6 ||w||`` (squaring the
    condition number then loses nothing after the second pass) and nothing is dropped unless ``cutoff`` is
    above the Gram matrix's resolution ``1e-7 ||w||``; otherwise the SVD of ``w``."""
    if w.shape[1] == 0:
        return w, 0.0, 0.0
    ev, v = np.linalg.eigh(w.T @ w)
    ev, v = ev[::-1], v[:, ::-1]
    top = float(np.sqrt(max(ev[0], 0.0)))
    keep = ev > cutoff ** 2
    if top > 0 and keep.any() and ev[keep][-1] > (1e-6 * top) ** 2 and (keep.all() or cutoff > 1e-7 * top):
        s = np.sqrt(ev[keep])
        u = w @ (v[:, keep] / s)
        ev2, v2 = np.linalg.eigh(u.T @ u)                     # second pass: orthonormal to rounding
        u = u @ (v2 / np.sqrt(ev2))
        return u, top, float(s[-1])
    u, s, _ = np.linalg.svd(w, full_matrices=False)
    top = float(s[0]) if s.size else 0.0
    keep = s > cutoff
    return u[:, keep], top, float(s[keep][-1]) if keep.any() else 0.0


def _norm2(x: np.ndarray) -> float:
    """Spectral norm of a tall ``x`` from its small Gram matrix."""
    return float(np.sqrt(max(np.linalg.eigvalsh(x.T @ x)[-1], 0.0))) if x.size else 0.0


def _relative_change(new: Sequence[np.ndarray], old: Sequence[np.ndarray]) -> float:
    err = 0.0
    for a, b in zip(new, old):
        scale = float(np.linalg.norm(a))
        if scale > 0:
            err = max(err, float(np.linalg.norm(a - b)) / scale)
        elif float(np.linalg.norm(b)) > 0:
            err = np.inf
    return err


class BlockLanczos:
    """The iteration of :func:`block_lanczos` as a state machine, so that several can share kernel passes.

    :attr:`block` is the next block to multiply (``None`` once finished); :meth:`advance` takes ``A @ block``
    and prepares the next one; :meth:`result` returns the :class:`KrylovBasis`. Arguments as
    :func:`block_lanczos` (``on_block`` is called with each block before its product is needed)."""

    def __init__(self, start: np.ndarray, *,
                 solution: Callable[[np.ndarray, np.ndarray, np.ndarray], List[np.ndarray]],
                 tol: float = 1e-10, max_dim: int = 2000, lag: int = 2, min_blocks: int = 3,
                 deflation_rtol: float = 1e-12, check_growth: float = 0.1, name: str = "kernel",
                 on_block: Callable[[np.ndarray], None] = None):
        self._t0 = _time.perf_counter()
        start = np.asarray(start, dtype=np.float64)
        n = start.shape[0]
        self.max_dim = int(min(max_dim, n))
        scale0 = _norm2(start)
        if scale0 == 0.0:
            raise ValueError("the starting block (targets, initial outputs, probes) is all zeros")
        block, _, _ = _orthonormal_columns(start, 1e-13 * scale0)
        self.solution, self.tol, self.lag, self.min_blocks = solution, tol, lag, min_blocks
        self.deflation_rtol, self.check_growth, self.name, self.on_block = (deflation_rtol, check_growth, name,
                                                                            on_block)
        self.q = np.empty((n, self.max_dim), order="F")   # columns contiguous: only the used ones are touched
        self.t_mat = np.zeros((self.max_dim, self.max_dim))
        self.r, self.n_blocks, self.r_checked = 0, 0, 0
        self.sols: List[List[np.ndarray]] = []
        self.history = []
        self.err, self.resid, self.invariant, self.norm_a = np.inf, np.inf, False, 0.0
        self.block = None
        self._set_block(block[:, :self.max_dim])

    def _set_block(self, block: np.ndarray) -> None:
        if block.shape[1] == 0:
            self.block = None
            return
        b = block.shape[1]
        self.q[:, self.r:self.r + b] = block
        if self.on_block is not None:
            self.on_block(block)
        self.block = block

    def advance(self, aq: np.ndarray) -> None:
        """Take ``A @ self.block``: extend ``T``, maybe evaluate the solution, and set the next block."""
        q, t_mat, r, b = self.q, self.t_mat, self.r, self.block.shape[1]
        r_new = r + b
        coef = q[:, :r_new].T @ aq        # the (N, r) x (N, b) products run on the caller's BLAS threads
        with blas_threads(1):            # the small dense algebra (r x r at most) on one thread
            self.n_blocks += 1
            t_mat[:r_new, r:r_new] = coef
            t_mat[r:r_new, :r] = coef[:r].T
            t_mat[r:r_new, r:r_new] = 0.5 * (coef[r:] + coef[r:].T)
            r = self.r = r_new
            check = self.n_blocks <= self.min_blocks or r >= self.r_checked + max(
                1, int(self.check_growth * self.r_checked))
            if check:                      # Ritz pairs and the solution at geometrically spaced sizes
                theta, w = np.linalg.eigh(t_mat[:r, :r])
                self.norm_a = max(self.norm_a, float(np.max(np.abs(theta))))
                if theta[0] < -_PSD_RTOL * self.norm_a:
                    raise ValueError(f"{self.name} is not positive semi-definite: Ritz value {theta[0]:.3g} (a "
                                     f"Rayleigh quotient) vs largest {theta[-1]:.3g}")
                self.sols.append(self.solution(q[:, :r], theta, w))
                self.r_checked = r
                if len(self.sols) > self.lag:
                    self.err = _relative_change(self.sols[-1], self.sols[-1 - self.lag])
                    self.sols.pop(0)
            else:
                self.norm_a = max(self.norm_a, float(np.max(np.abs(np.diag(t_mat[:r, :r])))))
        # next block: residual of A Q_last against the whole basis, orthogonalised twice, then deflated
        res = aq - q[:, :r] @ coef
        res -= q[:, :r] @ (q[:, :r].T @ res)
        with blas_threads(1):
            size = _norm2(aq)
            block, self.resid, low = _orthonormal_columns(res, self.deflation_rtol * max(self.norm_a, 1e-300))
        if block.shape[1] and low < 1e-4 * size:    # small kept directions: a third pass keeps them orthogonal
            block -= q[:, :r] @ (q[:, :r].T @ block)
            with blas_threads(1):
                block, _ = np.linalg.qr(block)
        self.history.append((r, self.err))
        if block.shape[1] == 0:
            self.invariant, self.err = True, 0.0
            self.block = None
        elif (check and self.n_blocks >= self.min_blocks and self.err <= self.tol) or r >= self.max_dim:
            self.block = None
        else:
            self._set_block(block[:, :self.max_dim - r])

    def result(self) -> KrylovBasis:
        r = self.r
        with blas_threads(1):
            theta, w = np.linalg.eigh(self.t_mat[:r, :r])
        return KrylovBasis(self.q[:, :r], theta, w, float(self.resid), self.n_blocks, float(self.err),
                           bool(self.invariant or self.err <= self.tol), tuple(self.history),
                           _time.perf_counter() - self._t0)


def block_lanczos(matmat: Callable[[np.ndarray], np.ndarray], start: np.ndarray, *,
                  solution: Callable[[np.ndarray, np.ndarray, np.ndarray], List[np.ndarray]],
                  tol: float = 1e-10, max_dim: int = 2000, lag: int = 2, min_blocks: int = 3,
                  deflation_rtol: float = 1e-12, check_growth: float = 0.1, name: str = "kernel",
                  on_block: Callable[[np.ndarray], None] = None) -> KrylovBasis:
    """Grow a block Krylov basis of ``matmat`` from ``start`` until ``solution`` changes by ``<= tol``.

    Args:
      matmat: ``X (N, b) -> A X``, with ``A`` symmetric PSD.
      start: (N, b) starting block (columns of any scale; dependent columns are deflated).
      solution: ``(q, theta, W) -> [arrays]``, the quantities whose convergence decides when to stop.
      tol: relative tolerance on the change of ``solution`` over ``lag`` evaluations.
      max_dim: largest basis size ``r``; reached without convergence -> ``converged=False``.
      check_growth: the solution is evaluated (Ritz pairs computed) once the basis has grown by this
        fraction since the last evaluation (and after each of the first ``min_blocks`` blocks); the
        estimate compares evaluations ``lag`` apart.
      on_block: called with every new block of basis vectors (e.g. to project a test kernel on it).

    Raises ValueError if a Ritz value is clearly negative (it is a Rayleigh quotient of ``A``, so ``A`` is
    then not PSD).
    """
    it = BlockLanczos(start, solution=solution, tol=tol, max_dim=max_dim, lag=lag, min_blocks=min_blocks,
                      deflation_rtol=deflation_rtol, check_growth=check_growth, name=name, on_block=on_block)
    while it.block is not None:
        it.advance(matmat(it.block))
    return it.result()


def lockstep(matmat: Callable[[np.ndarray], np.ndarray], iterations: Sequence[BlockLanczos],
             progress: Callable[[int, list], None] = None) -> list:
    """Run several :class:`BlockLanczos` iterations of the SAME operator with shared passes: every pass
    multiplies the unfinished iterations' blocks side by side (one read of the kernel instead of one per
    basis; the result is the same as running them one after the other). ``progress(passes, dims)`` is
    called after every pass. Returns their :class:`KrylovBasis`."""
    passes = 0
    while True:
        live = [it for it in iterations if it.block is not None]
        if not live:
            break
        widths = np.cumsum([0] + [it.block.shape[1] for it in live])
        aq = matmat(np.concatenate([it.block for it in live], axis=1))
        for it, lo, hi in zip(live, widths[:-1], widths[1:]):
            it.advance(aq[:, lo:hi])
        passes += 1
        if progress is not None:
            progress(passes, [it.r for it in iterations])
    return [it.result() for it in iterations]


__all__ = ["KrylovBasis", "BlockLanczos", "block_lanczos", "lockstep", "blas_threads"]
