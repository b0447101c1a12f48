"""Spread over initial functions: the distribution of the test and train MSE over ``f0 ~ NNGP``
(docs/theory.md §3.5).

The infinite-width outputs are linear in the initial function (docs/theory.md §2.1-2.4): per output
``k`` (the K outputs are independent and share the kernels),

    f_x(t) - y_x = B_t z_k + m_{t,k},      B_t = -G diag(g_t) U + d_t R_x,    m_t = G diag(j_t) V^T y - y_x,
    f_X(t) - y   = V (diag(P_t) U z_k + (J_t - 1) V^T y),

where ``(f0_X, f0_x) = R z`` with ``z ~ N(0, I_r)`` and ``R R^T`` the joint NNGP covariance of training and
test points (``R = [R_X; R_x]``, from its eigendecomposition, directions below ``rank_rtol`` of the top
dropped), ``U = V^T R_X``, and ``(P, J, d, j, g)`` the per-mode coefficients of
:func:`~widelimit.dynamics.modes.mode_response` (flow, or GD at ``learning_rate``). For a residual
``r = B z + m`` with ``z ~ N(0, I)`` and ``C = B B^T`` the quadratic-form moments are

    E ||r||^2 = tr C + ||m||^2,        Var ||r||^2 = 2 tr(C^2) + 4 m^T C m,

summed over the K outputs; the MSE is ``||r||^2 / (2 M K)`` (test) or ``/ (2 N K)`` (train). The loss of
one draw is a generalised chi-square: with ``C = E diag(w) E^T`` it is ``sum_i w_i (z_i + delta_i)^2`` plus
the part of ``m`` outside the range of ``C`` (:meth:`LossSpread.chi_square_terms`).

:class:`LossSpread` is an :class:`~widelimit.dynamics.loss.ExpectedLoss` (same mean, same LossModel
protocol) that also needs the full test-test NNGP ``K_xx`` (M, M) and adds

* :meth:`~LossSpread.test_loss_variance` / :meth:`~LossSpread.train_loss_variance`: exact variances over
  ``f0`` at any times (vectorised over ``t``); cost O(M N r) per time for the test loss (forming ``B_t``,
  ``r <= N + M``), O(N^2) per time for the train loss (``tr((PHP)^2) = (P^2)^T (H * H) P^2``,
  ``H = V^T K_XX V``);
* :meth:`~LossSpread.sample_test_loss`: test-MSE curves of ``draws`` initial functions drawn ONCE from the
  prior (the same draws for every weight decay and time, as finite networks share their seeds across a
  study's weight decays): shape (draws, P, T), cost O(draws P T M N K) (chunked; memory below 64 MiB).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import scipy.linalg

from .loss import ExpectedLoss
from .modes import mode_response
from .ntk_l2 import _as_float_array, _check_lam

_CHUNK_BYTES = 2 ** 26            # 64 MiB of float64 per vectorised block
_RANK_RTOL = 1e-12


def _times(t) -> np.ndarray:
    t = np.atleast_1d(np.asarray(t, dtype=np.float64)).reshape(-1)
    if np.any(np.isnan(t)) or np.any(t < 0):
        raise ValueError("t must be times >= 0 (physical time eta * steps)")
    return t


def _check_draws(draws) -> int:
    if isinstance(draws, bool) or not isinstance(draws, (int, np.integer)) or int(draws) < 2:
        raise ValueError(f"draws must be an int >= 2 (number of prior samples of f0), got {draws!r}")
    return int(draws)


class LossSpread(ExpectedLoss):
    """The test/train MSE over ``f0 ~ NNGP`` as a distribution, not only its mean (module docstring).

    Args: as :class:`ExpectedLoss`, except that ``nngp_test_test`` must be the full (M, M) matrix (the
    covariance of the test outputs at initialisation enters the variance, not only its diagonal), and
      rank_rtol: eigenvalues of the joint (N + M) NNGP covariance below ``rank_rtol`` times the largest are
        dropped from its square root ``R`` (they carry no variance).

    Construction costs one (N + M)^3 eigendecomposition on top of :class:`ExpectedLoss`; memory
    O((N + M)^2).
    """

    def __init__(self, ntk_train_train, ntk_test_train, nngp_train_train, nngp_test_train, nngp_test_test,
                 y_train, y_test, L: int, *, learning_rate: Optional[float] = None,
                 normalization: Optional[float] = None, rank_rtol: float = _RANK_RTOL):
        kxx = _as_float_array("nngp_test_test", nngp_test_test, (1, 2))
        m = np.shape(ntk_test_train)[0] if np.ndim(ntk_test_train) == 2 else None
        if kxx.ndim != 2 or kxx.shape[0] != kxx.shape[1]:
            raise ValueError("nngp_test_test must be the full (M, M) test-test NNGP matrix for the spread over "
                             f"f0 (its diagonal is not enough), got shape {kxx.shape}")
        if m is not None and kxx.shape != (m, m):
            raise ValueError(f"nngp_test_test must have shape ({m}, {m}), got {kxx.shape}")
        if not (0.0 <= float(rank_rtol) < 1e-3):
            raise ValueError(f"rank_rtol must lie in [0, 1e-3), got {rank_rtol}")
        super().__init__(ntk_train_train, ntk_test_train, nngp_train_train, nngp_test_train, kxx, y_train,
                         y_test, L, learning_rate=learning_rate, normalization=normalization)
        fl = self.flow
        kxt = np.asarray(nngp_test_train, dtype=np.float64)
        joint = np.block([[np.asarray(nngp_train_train, dtype=np.float64), kxt.T], [kxt, kxx]])
        w, e = scipy.linalg.eigh(0.5 * (joint + joint.T), check_finite=False)
        if w.size and w[0] < -1e-5 * max(w[-1], 0.0):
            raise ValueError("the joint NNGP covariance of training and test points is not positive "
                             f"semi-definite (eigenvalue {w[0]:.3g} vs top {w[-1]:.3g})")
        keep = w > float(rank_rtol) * max(float(w[-1]), 0.0)
        root = e[:, keep] * np.sqrt(w[keep])                        # (N + M, r): joint = R R^T
        n = fl.n_train
        self._u = fl.eigenvectors.T @ root[:n]                      # U = V^T R_X   (N, r)
        self._rx = root[n:]                                         # R_x           (M, r)
        self._ye = fl.eigenvectors.T @ fl.y_train.reshape(n, -1)    # V^T y         (N, K)
        self._hh = (self._u @ self._u.T) ** 2                       # (V^T K_XX V)^2 elementwise
        self.rank = int(root.shape[1])

    @classmethod
    def from_kernels(cls, kernels, *, nngp_test_test=None, learning_rate: Optional[float] = None,
                     L: Optional[int] = None) -> "LossSpread":
        """From a :class:`widelimit.kernels.DataKernels` with NNGP blocks; ``nngp_test_test`` (M, M) replaces
        the container's when that holds only the diagonal (e.g. the kernels of ``DataKernels.from_spec``)."""
        missing = [f for f in ("nngp_train_train", "nngp_test_train") if getattr(kernels, f, None) is None]
        if missing:
            raise ValueError(f"the spread over f0 ~ NNGP needs the NNGP kernels; missing {missing}")
        kxx = kernels.nngp_test_test if nngp_test_test is None else nngp_test_test
        if kxx is None or np.ndim(kxx) != 2:
            raise ValueError("the spread over f0 needs the full (M, M) test-test NNGP: pass nngp_test_test "
                             "(the kernels hold only its diagonal)")
        return cls(kernels.ntk_train_train, kernels.ntk_test_train, kernels.nngp_train_train,
                   kernels.nngp_test_train, kxx, kernels.y_train, kernels.y_test,
                   kernels.L if L is None else L, learning_rate=learning_rate)

    @property
    def label(self) -> str:
        return f"E over f0 ~ NNGP with its spread, {self._kind()}"

    # -- the quadratic form -----------------------------------------------------------------------
    def _coef(self, weight_decay: float, t: np.ndarray):
        return mode_response(self.flow.eigenvalues, t, _check_lam(weight_decay), self.L, self.learning_rate)

    def _test_b(self, c, sl: slice) -> Tuple[np.ndarray, np.ndarray]:
        """``B_t`` (T', M, r) and ``m_t`` (T', M, K) for the times ``sl`` of coefficients ``c``."""
        g = self.flow.test_projection
        gm, jm, d = c.gap_over_mu[sl], c.J_over_mu[sl], c.decay[sl, 0]
        b = d[:, None, None] * self._rx[None] - np.einsum("xi,ti,ir->txr", g, gm, self._u, optimize=True)
        mres = np.einsum("xi,ti,ik->txk", g, jm, self._ye, optimize=True) - self._yt[None]
        return b, mres

    def _blocks(self, t: np.ndarray, per_time: int):
        step = max(1, _CHUNK_BYTES // max(8 * per_time, 1))
        for i in range(0, t.size, step):
            yield slice(i, min(i + step, t.size))

    def quadratic_form(self, weight_decay: float, t: float, which: str = "test") -> Tuple[np.ndarray, np.ndarray]:
        """``(B, m)`` of the residual ``r_k = B z_k + m_k`` (``z_k ~ N(0, I_r)``, one per output) at one time:
        test (M, r), (M, K) or train (in the NTK eigenbasis) (N, r), (N, K)."""
        c = self._coef(weight_decay, _times(t)[:1])
        if which == "test":
            b, mres = self._test_b(c, slice(0, 1))
            return b[0], mres[0]
        if which == "train":
            return c.P[0][:, None] * self._u, (c.J[0] - 1.0)[:, None] * self._ye
        raise ValueError(f"which must be 'test' or 'train', got {which!r}")

    def chi_square_terms(self, weight_decay: float, t: float, which: str = "test"):
        """The loss of one draw as a generalised chi-square: ``(w, nc, rest)`` with
        ``||r||^2 = sum_i w_i chi'^2_K(nc_i) + rest`` (``w``: eigenvalues of ``C = B B^T``, K degrees of freedom
        each, non-centralities ``nc_i = sum_k (e_i^T m_k)^2 / w_i``, ``rest`` the squared part of ``m`` outside
        the range of ``C``); divide by ``2 M K`` (test) or ``2 N K`` (train) for the MSE. O(min(M, r)^2 max(M, r))."""
        b, mres = self.quadratic_form(weight_decay, t, which)
        ub, s, _ = scipy.linalg.svd(b, full_matrices=False, check_finite=False)
        w = s ** 2
        keep = w > 1e-14 * max(float(w[0]) if w.size else 0.0, 1e-300)
        proj = ub[:, keep].T @ mres                                  # (r', K)
        rest = max(float(np.sum(mres ** 2) - np.sum(proj ** 2)), 0.0)
        return w[keep], np.sum(proj ** 2, axis=1) / w[keep], rest

    # -- exact moments ----------------------------------------------------------------------------
    def test_loss_variance(self, weight_decay: float, t) -> np.ndarray:
        """``Var_{f0}`` of the test MSE at times ``t`` (1-D), shape (T,): ``(2 K tr C^2 + 4 sum_k m_k^T C m_k)
        / (2 M K)^2`` with ``C = B_t B_t^T`` (module docstring). Cost O(M N r) per time."""
        t = _times(t)
        c = self._coef(weight_decay, t)
        m, k = self.n_test, self._yt.shape[1]
        out = np.empty(t.size)
        for sl in self._blocks(t, 2 * m * self.rank):
            b, mres = self._test_b(c, sl)
            gram = b @ np.swapaxes(b, 1, 2) if m <= self.rank else np.swapaxes(b, 1, 2) @ b
            bm = np.swapaxes(b, 1, 2) @ mres                          # (T', r, K)
            out[sl] = 2 * k * np.sum(gram ** 2, axis=(1, 2)) + 4 * np.sum(bm ** 2, axis=(1, 2))
        return out / (2 * m * k) ** 2

    def test_loss_direct_mean(self, weight_decay: float, t) -> np.ndarray:
        """``E_{f0}`` test MSE from the same ``(B_t, m_t)`` as the variance: ``(K tr C + ||m||^2) / (2 M K)``
        (equals :meth:`test_loss`, computed by a different route; a consistency check)."""
        t = _times(t)
        c = self._coef(weight_decay, t)
        m, k = self.n_test, self._yt.shape[1]
        out = np.empty(t.size)
        for sl in self._blocks(t, 2 * m * self.rank):
            b, mres = self._test_b(c, sl)
            out[sl] = k * np.sum(b ** 2, axis=(1, 2)) + np.sum(mres ** 2, axis=(1, 2))
        return out / (2 * m * k)

    def train_loss_variance(self, weight_decay: float, t) -> np.ndarray:
        """``Var_{f0}`` of the training MSE at times ``t`` (1-D): ``(2 K (P^2)^T (H * H) P^2 + 4 sum_k
        m_k^T P H P m_k) / (2 N K)^2``, ``H = V^T K_XX V``, ``m_k = (J - 1) V^T y_k``. O(N^2) per time."""
        t = _times(t)
        c = self._coef(weight_decay, t)
        n, k = self.n_train, self._ye.shape[1]
        p2 = c.P ** 2
        tr2 = np.einsum("ti,ij,tj->t", p2, self._hh, p2, optimize=True)
        pm = c.P[:, :, None] * (c.J - 1.0)[:, :, None] * self._ye[None]       # (T, N, K): P m
        upm = np.einsum("ir,tik->trk", self._u, pm, optimize=True)            # U^T P m
        return (2 * k * tr2 + 4 * np.sum(upm ** 2, axis=(1, 2))) / (2 * n * k) ** 2

    # -- sampling ---------------------------------------------------------------------------------
    def prior_draws(self, draws: int, seed: int = 0) -> np.ndarray:
        """Standard normal ``z`` (draws, r, K) of the initial functions ``(f0_X, f0_x) = R z`` (reproducible)."""
        draws = _check_draws(draws)
        return np.random.default_rng(seed).standard_normal((draws, self.rank, self._yt.shape[1]))

    def initial_functions(self, z: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The initial outputs of the draws ``z`` (S, r, K): ``f0_X`` in the NTK eigenbasis (S, N, K) and
        ``f0_x`` (S, M, K)."""
        z = np.asarray(z, dtype=np.float64)
        return np.einsum("ir,srk->sik", self._u, z), np.einsum("xr,srk->sxk", self._rx, z)

    def sample_test_loss(self, weight_decays, t, *, draws: int = 1000, seed: int = 0, z=None) -> np.ndarray:
        """Test MSE of ``draws`` prior initial functions (the same draws for every weight decay and time) at
        weight decays (P,) and times ``t`` (T,) or (P, T): shape (draws, P, T).

        ``z`` (S, r, K): given standard-normal draws (:meth:`prior_draws`) instead of ``draws``/``seed``.
        Cost O(S P T M N K), vectorised in blocks of 64 MiB."""
        lams = np.atleast_1d(np.asarray(weight_decays, dtype=np.float64)).reshape(-1)
        for lam in lams:
            _check_lam(float(lam))
        tt = np.asarray(t, dtype=np.float64)
        tt = np.broadcast_to(tt, (lams.size, tt.shape[-1])) if tt.ndim <= 1 else tt
        if tt.shape[0] != lams.size:
            raise ValueError(f"t must have shape (T,) or ({lams.size}, T), got {np.shape(t)}")
        z = self.prior_draws(draws, seed) if z is None else np.asarray(z, dtype=np.float64)
        if z.ndim != 3 or z.shape[1:] != (self.rank, self._yt.shape[1]):
            raise ValueError(f"z must have shape (S, {self.rank}, {self._yt.shape[1]}), got {z.shape}")
        u, rx = self.initial_functions(z)                                     # (S, N, K), (S, M, K)
        g = self.flow.test_projection
        s, m, k = z.shape[0], self.n_test, self._yt.shape[1]
        out = np.empty((s, lams.size, tt.shape[1]))
        per_draw = max(1, _CHUNK_BYTES // (8 * tt.shape[1] * max(m, self.n_train) * k))
        for p, lam in enumerate(lams):
            ti = _times(tt[p])
            c = self._coef(float(lam), ti)
            mres = np.einsum("xi,ti,ik->txk", g, c.J_over_mu, self._ye, optimize=True) - self._yt[None]
            d = c.decay[:, 0]
            for a in range(0, s, per_draw):
                sl = slice(a, min(a + per_draw, s))
                # -G diag(g_t) u_s + d_t rx_s + m_t   -> (S', T, M, K)
                gu = np.einsum("xi,ti,sik->stxk", g, c.gap_over_mu, u[sl], optimize=True)
                r = d[None, :, None, None] * rx[sl][:, None] - gu + mres[None]
                out[sl, p] = np.sum(r ** 2, axis=(2, 3))
        return out / (2 * m * k)


__all__ = ["LossSpread"]
