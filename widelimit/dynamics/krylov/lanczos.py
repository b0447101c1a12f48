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

Stopping is a-posteriori: after every block the caller's ``solution`` (the quantities of interest, e.g.
test outputs at sentinel ``(lam, t)``) is evaluated on the current basis and compared with the one
``lag`` blocks earlier; the relative difference is the error estimate. Because Krylov approximations of
smooth functions converge geometrically, the difference between ``k - lag`` and ``k`` blocks bounds the
error of the ``k - lag`` solution up to a factor ``1 + O(rho^lag)`` and the returned (``k``-block)
solution is more accurate than it (``tests/test_krylov.py`` checks the estimate against the dense answer).
"""
from __future__ import annotations

import time as _time
from dataclasses import dataclass
from typing import Callable, List, Sequence

import numpy as np

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
      error_estimate: relative change of ``solution`` over the last ``lag`` blocks (0 if the Krylov space
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


def _orthonormal_columns(w: np.ndarray, cutoff: float) -> tuple[np.ndarray, float]:
    """Orthonormal basis of the columns of ``w`` with singular values ``> cutoff``; and ``||w||_2``."""
    u, s, _ = np.linalg.svd(w, full_matrices=False)
    top = float(s[0]) if s.size else 0.0
    return u[:, s > cutoff], top


def _relative_change(new: Sequence[np.ndarray], old: Sequence[np.ndarray]) -> float:
    err = 0.0
    for a, b in zip(new, old):
        scale = float(np.linalg.norm(a))
        if scale > 0:
            err = max(err, float(np.linalg.norm(a - b)) / scale)
        elif float(np.linalg.norm(b)) > 0:
            err = np.inf
    return err


def block_lanczos(matmat: Callable[[np.ndarray], np.ndarray], start: np.ndarray, *,
                  solution: Callable[[np.ndarray, np.ndarray, np.ndarray], List[np.ndarray]],
                  tol: float = 1e-10, max_dim: int = 2000, lag: int = 2, min_blocks: int = 3,
                  deflation_rtol: float = 1e-12, name: str = "kernel",
                  on_block: Callable[[np.ndarray], None] = None) -> KrylovBasis:
    """Grow a block Krylov basis of ``matmat`` from ``start`` until ``solution`` changes by ``<= tol``.

    Args:
      matmat: ``X (N, b) -> A X``, with ``A`` symmetric PSD.
      start: (N, b) starting block (columns of any scale; dependent columns are deflated).
      solution: ``(q, theta, W) -> [arrays]``, the quantities whose convergence decides when to stop.
      tol: relative tolerance on the change of ``solution`` over ``lag`` blocks.
      max_dim: largest basis size ``r``; reached without convergence -> ``converged=False``.
      on_block: called with every new block of basis vectors (e.g. to project a test kernel on it).

    Raises ValueError if a Ritz value is clearly negative (it is a Rayleigh quotient of ``A``, so ``A`` is
    then not PSD).
    """
    t0 = _time.perf_counter()
    start = np.asarray(start, dtype=np.float64)
    n = start.shape[0]
    max_dim = int(min(max_dim, n))
    scale0 = float(np.linalg.norm(start, 2)) if start.size else 0.0
    if scale0 == 0.0:
        raise ValueError("the starting block (targets, initial outputs, probes) is all zeros")
    block, _ = _orthonormal_columns(start, 1e-13 * scale0)
    block = block[:, :max_dim]
    q = np.empty((n, max_dim))
    t_mat = np.zeros((max_dim, max_dim))
    r, n_blocks = 0, 0
    sols: List[List[np.ndarray]] = []
    history = []
    err, resid, invariant = np.inf, np.inf, False
    norm_a = 0.0
    while block.shape[1] > 0:
        b = block.shape[1]
        q[:, r:r + b] = block
        if on_block is not None:
            on_block(block)
        aq = matmat(block)
        n_blocks += 1
        r_new = r + b
        coef = q[:, :r_new].T @ aq
        t_mat[:r_new, r:r_new] = coef
        t_mat[r:r_new, :r] = coef[:r].T
        t_mat[r:r_new, r:r_new] = 0.5 * (coef[r:] + coef[r:].T)
        r = r_new
        theta, w = np.linalg.eigh(t_mat[:r, :r])
        norm_a = max(norm_a, float(np.max(np.abs(theta))))
        if theta[0] < -_PSD_RTOL * norm_a:
            raise ValueError(f"{name} is not positive semi-definite: Ritz value {theta[0]:.3g} (a Rayleigh "
                             f"quotient) vs largest {theta[-1]:.3g}")
        sols.append(solution(q[:, :r], theta, w))
        if len(sols) > lag:
            err = _relative_change(sols[-1], sols[-1 - lag])
            sols.pop(0)
        # next block: residual of A Q_last against the whole basis, orthogonalised twice
        res = aq - q[:, :r] @ coef
        res -= q[:, :r] @ (q[:, :r].T @ res)
        block, resid = _orthonormal_columns(res, deflation_rtol * max(norm_a, 1e-300))
        history.append((r, err))
        if block.shape[1] == 0:
            invariant, err = True, 0.0
            break
        if n_blocks >= min_blocks and err <= tol:
            break
        if r + block.shape[1] > max_dim:
            block = block[:, :max_dim - r]
        if block.shape[1]:
            block -= q[:, :r] @ (q[:, :r].T @ block)
            block, _ = np.linalg.qr(block)
    theta, w = np.linalg.eigh(t_mat[:r, :r])
    return KrylovBasis(q[:, :r], theta, w, float(resid), n_blocks, float(err),
                       bool(invariant or err <= tol), tuple(history), _time.perf_counter() - t0)


__all__ = ["KrylovBasis", "block_lanczos"]
