"""Test-loss model of a non-homogeneous MLP from the Volterra solver (docs/theory.md §5):
:class:`VolterraLoss`, implementing :class:`~widelimit.dynamics.protocol.LossModel` so that
``widelimit.predict.t_star`` / ``lambda_opt`` accept it.

Units: ``t`` is physical time (η·steps), ``weight_decay`` is lam (1/time); losses are the MSE
``1/(2 M K) sum (f - y)^2`` (docs/theory.md §1). With ``f0="prior"`` the loss is averaged over the random
initial function, ``E loss = loss(E f) + (1/(2M)) sum_x Var f_x`` (the variance is the same for every output
unit); with ``f0="zero"`` it is the loss of the mean function (``g = 0``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .ntk_l2 import _as_float_array
from .volterra import CrossScaleFlow, VolterraOutputs
from .volterra_reduced import ReducedCrossScaleFlow
from .volterra_separable import SeparableCrossScaleFlow

F0_MODES = ("prior", "zero")
METHODS = ("separable", "nystrom", "reduced")


class VolterraLoss:
    """Test/train MSE of the infinite-width flow with L2 of a plain MLP ``spec`` (biases and erf allowed).

    Args:
      spec: :class:`widelimit.arch.MLP` (``norm=None``).
      x_train (N, d), y_train (N,) or (N, K), x_test (M, d), y_test (M,) or (M, K).
      f0: ``"prior"`` (default: averaged over ``f0 ~ NNGP``, what a seed average measures) or ``"zero"``.
      rtol, step: quadrature target and base step (see :class:`~widelimit.dynamics.volterra.CrossScaleFlow`).
      method: ``"separable"`` (default: the kernel fitted once in the two scales,
        :class:`~widelimit.dynamics.volterra_separable.SeparableCrossScaleFlow`, with ``degree``; its fit
        error is ``self.flow.fit_error``) or ``"nystrom"`` (the kernel evaluated at every pair of nodes:
        the slow reference) or ``"reduced"`` (large N: few full kernels and a reduced basis,
        :class:`~widelimit.dynamics.volterra_reduced.ReducedCrossScaleFlow`; ``f0="zero"`` only; its
        stated basis error is ``outputs(...).basis_error``).

    ``L`` is ``spec.homogeneity_degree`` -- None for a non-homogeneous network (allowed by the protocol;
    nothing in :mod:`widelimit.predict` needs it for a flow model). ``learning_rate`` is None (flow).
    Every solve is cached per ``(weight_decay, t)``; :meth:`outputs` gives the full
    :class:`~widelimit.dynamics.volterra.VolterraOutputs` (with the quadrature ``error_estimate``).
    """

    learning_rate = None

    def __init__(self, spec, x_train, y_train, x_test, y_test, *, f0: str = "prior", rtol: float = 1e-6,
                 step: Optional[float] = None, method: str = "separable", degree: int = 20):
        if f0 not in F0_MODES:
            raise ValueError(f"f0 must be one of {F0_MODES}, got {f0!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if x_test is None:
            raise ValueError("x_test is required: the model predicts the test loss")
        if method == "reduced" and f0 != "zero":
            raise ValueError("method='reduced' covers f0='zero' only (the mean over the prior); use "
                             "method='separable' for f0='prior'")
        if method == "reduced":
            self.flow = ReducedCrossScaleFlow(spec, x_train, y_train, x_test=x_test, rtol=rtol, step=step,
                                              degree=degree)
        elif method == "separable":
            self.flow = SeparableCrossScaleFlow(spec, x_train, y_train, x_test=x_test, rtol=rtol, step=step,
                                                degree=degree)
        else:
            self.flow = CrossScaleFlow(spec, x_train, y_train, x_test=x_test, rtol=rtol, step=step)
        yt = _as_float_array("y_test", y_test, (1, 2))
        want = (self.flow.n_test,) + self.flow._y_shape[1:]
        if yt.shape != want:
            raise ValueError(f"y_test must have shape {want} (test points x outputs), got {yt.shape}")
        self.y_test = yt.reshape(yt.shape[0], -1)
        self.f0 = f0
        self.L = spec.homogeneity_degree
        self._cache: dict = {}

    @property
    def n_train(self) -> int:
        return self.flow.n_train

    @property
    def n_test(self) -> int:
        return self.flow.n_test

    @property
    def mu_max(self) -> float:
        """Top eigenvalue of ``Theta(X, X; 1, 1)/(N K)`` (1/time)."""
        return self.flow.mu_max

    @property
    def label(self) -> str:
        return ("E over f0 ~ NNGP" if self.f0 == "prior" else "f0 = 0") + ", flow, Volterra"

    def outputs(self, weight_decay: float, t) -> VolterraOutputs:
        """The solver's outputs (cached) at times ``t`` (1-D)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        key = (float(weight_decay), t.tobytes())
        if key not in self._cache:
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[key] = self.flow.solve(weight_decay, t, initial="prior" if self.f0 == "prior" else None)
        return self._cache[key]

    def precompute(self, weight_decays, t) -> None:
        """Solve for every weight decay at times ``t`` in one vectorised pass and cache the outputs
        (``f0="zero"`` with the separable or reduced solver only; otherwise the decays are solved one by
        one)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        lams = [float(v) for v in np.atleast_1d(weight_decays)]
        if self.f0 != "zero" or not hasattr(self.flow, "solve_many"):
            for lam in lams:
                self.outputs(lam, t)
            return
        if len(self._cache) + len(lams) > 64:
            self._cache.clear()
        for lam, out in zip(lams, self.flow.solve_many(lams, t)):
            self._cache[(lam, t.tobytes())] = out

    def test_loss(self, weight_decay: float, t) -> np.ndarray:
        """Test MSE at times ``t`` (1-D, η·steps), shape (T,)."""
        out = self.outputs(weight_decay, t)
        f = out.test.reshape(out.test.shape[0], self.n_test, -1)
        loss = np.sum((f - self.y_test[None]) ** 2, axis=(1, 2)) / (2 * self.y_test.size)
        if out.test_var is not None:
            loss = loss + np.sum(out.test_var, axis=1) / (2 * self.n_test)
        return loss

    def train_loss(self, weight_decay: float, t) -> np.ndarray:
        """Training MSE (without the L2 term) at times ``t`` (1-D), shape (T,)."""
        out = self.outputs(weight_decay, t)
        y = self.flow.y_train
        f = out.train.reshape(out.train.shape[0], self.n_train, -1)
        loss = np.sum((f - y[None]) ** 2, axis=(1, 2)) / (2 * y.size)
        if out.train_var is not None:
            loss = loss + np.sum(out.train_var, axis=1) / (2 * self.n_train)
        return loss

    def zero_loss(self) -> float:
        """Test MSE of the zero function, ``1/(2 M K) sum y_test^2``."""
        return float(np.sum(self.y_test ** 2) / (2 * self.y_test.size))

    def __repr__(self) -> str:
        return f"VolterraLoss(N={self.n_train}, M={self.n_test}, f0={self.f0!r}, rtol={self.flow.rtol})"


__all__ = ["VolterraLoss", "F0_MODES", "METHODS"]
