"""Mean and covariance of the L2 flow over the infinite ensemble of initialisations.

At infinite width the initial function is a draw of the NNGP prior: ``f0`` on the training points ``X``
and test points ``x`` is jointly Gaussian with mean 0 and covariance ``K`` (the NNGP kernel), independent
across the K outputs. The MSE flow with L2 (see :mod:`widelimit.dynamics.ntk_l2`) is linear in ``f0``:

    f_X(t) = A_t f0_X + B_t y,                    A_t = V diag(P) V^T,  B_t = V diag(J) V^T,
    f_x(t) = e^{-beta t} f0_x - C_t f0_X + D_t y,  C_t = G diag(g) V^T,  D_t = G diag(J/mu) V^T,

with ``Theta~ = V diag(mu) V^T``, ``G = Theta~_{xX} V`` and ``g = (e^{-beta t} - P)/mu``. Hence

    mean:  E f_X = B_t y,   E f_x = D_t y,
    cov:   Cov f_X = A_t K_XX A_t^T,
           Cov f_x = e^{-2 beta t} K_xx - e^{-beta t} (K_xX C_t^T + C_t K_Xx) + C_t K_XX C_t^T,

the same for every output (covariance over points). At ``lam = 0`` this is
``nt.predict.gradient_descent_mse_ensemble(..., get='ntk', compute_cov=True)``.
Conventions (penalty ``(lam/2)||theta||^2``, ``t = eta * steps``, unnormalised kernels, MSE
``1/(2 N K) sum (f - y)^2``) are those of :class:`~widelimit.dynamics.ntk_l2.L2Flow`.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from .ntk_l2 import (FlowOutputs, L2Flow, _as_float_array, _check_square_symmetric, _flatten_times,
                     _homogeneity_degree, _kernels_from_fn, _check_degree)


class L2FlowEnsemble:
    """Gaussian process of the outputs of an infinite ensemble of infinite-width networks trained by
    MSE gradient flow with L2 (the L2 generalisation of ``nt.predict.gradient_descent_mse_ensemble``).

    Args:
      ntk_train_train: unnormalised NTK on the training points, (N, N).
      nngp_train_train: NNGP kernel (prior covariance of ``f0``) on the training points, (N, N).
      y_train: targets (N,) or (N, K).
      weight_decay, L: L2 coefficient ``>= 0`` and homogeneity degree ``>= 1``.
      ntk_test_train: unnormalised NTK test-train, (M, N) -- needed for test means.
      nngp_test_train, nngp_test_test: NNGP test-train (M, N) and test-test (M, M) -- needed (with
        ``ntk_test_train``) for test covariances.
      normalization: as in :class:`L2Flow` (default ``N K``).
      learning_rate: ``None`` (gradient flow) or ``eta`` (full-batch GD at ``round(t / eta)`` steps).
    """

    def __init__(self, ntk_train_train, nngp_train_train, y_train, weight_decay: float, L: int, *,
                 ntk_test_train=None, nngp_test_train=None, nngp_test_test=None,
                 normalization: Optional[float] = None, learning_rate: Optional[float] = None):
        k = _check_square_symmetric("nngp_train_train", nngp_train_train)
        n = np.shape(ntk_train_train)[0] if np.ndim(ntk_train_train) == 2 else None
        if n is not None and k.shape[0] != n:
            raise ValueError(f"nngp_train_train must have shape ({n}, {n}) like ntk_train_train, got {k.shape}")
        kxX = kxx = None
        if nngp_test_train is not None or nngp_test_test is not None:
            if ntk_test_train is None:
                raise ValueError("nngp_test_train/nngp_test_test were given without ntk_test_train")
            m = np.shape(ntk_test_train)[0]
            if nngp_test_train is None or nngp_test_test is None:
                raise ValueError("test covariances need both nngp_test_train and nngp_test_test")
            kxX = _as_float_array("nngp_test_train", nngp_test_train, (2,))
            if kxX.shape != (m, k.shape[0]):
                raise ValueError(f"nngp_test_train must have shape ({m}, {k.shape[0]}), got {kxX.shape}")
            kxx = _check_square_symmetric("nngp_test_test", nngp_test_test)
            if kxx.shape != (m, m):
                raise ValueError(f"nngp_test_test must have shape ({m}, {m}), got {kxx.shape}")
        self.flow = L2Flow(ntk_train_train, y_train, weight_decay, L, ntk_test_train=ntk_test_train,
                           normalization=normalization, learning_rate=learning_rate)
        v = self.flow.eigenvectors
        self.nngp_train_train, self.nngp_test_train, self.nngp_test_test = k, kxX, kxx
        self._k_eig = v.T @ k @ v
        if np.any(np.diag(self._k_eig) < -1e-5 * np.abs(self._k_eig).max()):
            raise ValueError("nngp_train_train is not positive semi-definite")
        self._kx_eig = None if kxX is None else kxX @ v

    # ---------------------------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec, x_train, y_train, weight_decay: float, *, x_test=None) -> "L2FlowEnsemble":
        """Build from a :mod:`widelimit.arch` spec with its analytic NTK and NNGP (``L`` from the spec)."""
        L = _homogeneity_degree(spec)
        from widelimit.kernels import analytic_kernels
        ktt = analytic_kernels(spec, x_train)
        if x_test is None:
            return cls(ktt.ntk, ktt.nngp, y_train, weight_decay, L)
        kxt, kxx = analytic_kernels(spec, x_test, x_train), analytic_kernels(spec, x_test)
        return cls(ktt.ntk, ktt.nngp, y_train, weight_decay, L, ntk_test_train=kxt.ntk,
                   nngp_test_train=kxt.nngp, nngp_test_test=kxx.nngp)

    @classmethod
    def from_kernel_fn(cls, kernel_fn: Callable, x_train, y_train, weight_decay: float, L: int, *,
                       x_test=None) -> "L2FlowEnsemble":
        """Build from a neural-tangents ``kernel_fn(x1, x2, ('ntk', 'nngp'))`` (evaluated in float64)."""
        L = _check_degree(L)
        ntk, nngp = _kernels_from_fn(kernel_fn, x_train, None)
        if x_test is None:
            return cls(ntk, nngp, y_train, weight_decay, L)
        ntk_x, nngp_x = _kernels_from_fn(kernel_fn, x_test, x_train)
        (nngp_xx,) = _kernels_from_fn(kernel_fn, x_test, None, "nngp")
        return cls(ntk, nngp, y_train, weight_decay, L, ntk_test_train=ntk_x, nngp_test_train=nngp_x,
                   nngp_test_test=nngp_xx)

    # ---------------------------------------------------------------------------------------------
    @property
    def weight_decay(self) -> float:
        return self.flow.weight_decay

    @property
    def L(self) -> int:
        return self.flow.L

    @property
    def learning_rate(self) -> Optional[float]:
        return self.flow.learning_rate

    def mean(self, t) -> FlowOutputs:
        """Ensemble mean at times ``t``: ``FlowOutputs(train t.shape+(N,K), test t.shape+(M,K) or None)``."""
        return self.flow(t)

    def cov(self, t, *, diagonal: bool = False) -> FlowOutputs:
        """Covariance over points at times ``t`` (shared by all outputs).

        Returns ``FlowOutputs(train, test)`` with shapes ``t.shape + (N, N)`` and ``t.shape + (M, M)``
        (``t.shape + (N,)`` / ``(M,)`` variances if ``diagonal``); ``test`` is None without the test
        NNGP kernels. Cost per time: O(N^3) for train, O(M N^2 + M^2 N) for test.
        """
        tf, shape = _flatten_times(t)
        fl = self.flow
        c = fl._modes(tf)
        v, ke = fl.eigenvectors, self._k_eig
        n = fl.n_train
        train = np.empty((tf.size, n) if diagonal else (tf.size, n, n))
        for i in range(tf.size):
            w = v * c.P[i]                                    # A_t V = V diag(P)
            train[i] = np.einsum("ij,jk,ik->i", w, ke, w) if diagonal else w @ ke @ w.T
        train = train.reshape(shape + train.shape[1:])
        if self._kx_eig is None:
            return FlowOutputs(train, None)
        m = fl.n_test
        g_proj = fl.test_projection
        test = np.empty((tf.size, m) if diagonal else (tf.size, m, m))
        kxx = np.diag(self.nngp_test_test) if diagonal else self.nngp_test_test
        for i in range(tf.size):
            d = c.decay[i, 0]
            gg = g_proj * c.gap_over_mu[i]                    # C_t V = G diag(g)
            if diagonal:
                cross = np.einsum("ij,ij->i", self._kx_eig, gg)
                quad = np.einsum("ij,jk,ik->i", gg, ke, gg)
                test[i] = d * d * kxx - 2 * d * cross + quad
            else:
                cross = self._kx_eig @ gg.T
                test[i] = d * d * kxx - d * (cross + cross.T) + gg @ ke @ gg.T
        return FlowOutputs(train, test.reshape(shape + test.shape[1:]))


__all__ = ["L2FlowEnsemble"]
