r"""Norm dynamics of scale-invariant weight groups (docs/theory.md §6): public entry point.

A group ``w`` is scale-invariant when the loss depends on ``w/||w||`` only (weights feeding BatchNorm or
LayerNorm, WeightNorm directions). Then ``g . w = 0`` and ``||g||^2 = G/||w||^2`` with
``G = ||grad l(w_hat)||^2`` at unit norm; L2 (``weight_decay`` lam, penalty ``(lam/2)||w||^2``) no longer
regularises the function but sets the *effective learning rate* of the direction.

* :func:`solve_norm_map` -- discrete norm map (exact for SGD; moment map for momentum/Adam);
* :func:`solve_norm_ode` -- continuous slow-manifold ODE;
* :func:`equilibrium`, :func:`norm_sq_trajectory` -- closed forms for constant hyper-parameters;
* schedules: :func:`constant`, :func:`step_decay`, :func:`cosine_decay`, :func:`warmup`,
  :func:`lambda_drops` (or any callable ``step -> value``, e.g. an optax schedule);
* measurement helpers for runs: :func:`angular_update`, :func:`unit_grad_norm_sq`,
  :func:`fit_relaxation_time`.

Accuracy (measured, see tests/test_norms_sim.py and tests/test_norms_real.py): plain SGD's map is exact
given the measured ``G_k`` (1e-7 on a LayerNorm MLP in float32). Momentum/Adam maps assume the fresh
gradient is uncorrelated with the optimiser's buffer (A1): exact on noise-dominated objectives (within ~3%),
but on a real LayerNorm MLP curvature makes ``E[g . M] ~ -0.1..-0.4 ||g||^2`` and the predicted norm is then
20-60% too high, while the equilibrium angle stays within ~1-5% (heavy ball, Adam) or 5-13% (Nesterov).
Passing the measured ``g . M`` (``grad_buffer_dot``) makes the momentum map exact again.

Optimisers (docs/theory.md §1): ``'gd'``/``'sgd'``, ``'momentum'`` (heavy ball), ``'nesterov'``, ``'adam'``
(Adam with coupled L2), ``'adamw'``, ``'lion'``, ``'muon'`` (decoupled weight decay), with optax's update
conventions (:mod:`widelimit.dynamics.norms_optim`, :mod:`widelimit.dynamics.norms_update`). Physical time is
``t = sum_k eta_k`` (``NormDynamics.time``). Per-unit groups (rows for BatchNorm/WeightNorm, whole matrices
for LayerNorm): :mod:`widelimit.dynamics.norms_units`.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from .norms_closed import Equilibrium, adam_l2_antiderivative, equilibrium, norm_sq_trajectory
from .norms_map import solve_norm_map
from .norms_ode import solve_norm_ode
from .norms_optim import OPTIMIZERS, NormOptimizer, make_optimizer
from .norms_result import NormDynamics
from .norms_schedules import constant, cosine_decay, lambda_drops, step_decay, warmup

__all__ = ["OPTIMIZERS", "NormOptimizer", "make_optimizer", "NormDynamics", "solve_norm_map",
           "solve_norm_ode", "Equilibrium", "equilibrium", "norm_sq_trajectory", "adam_l2_antiderivative",
           "constant", "step_decay", "cosine_decay", "warmup", "lambda_drops", "angular_update",
           "unit_grad_norm_sq", "fit_relaxation_time"]


def angular_update(w_prev, w_next) -> np.ndarray:
    """Angle (radians) between ``w_prev`` and ``w_next`` over the last axis (one group per leading index).

    Computed as ``atan2(||w_next_perp||, w_next . w_hat_prev)``, accurate for tiny angles (unlike arccos).
    """
    a = np.asarray(w_prev, dtype=np.float64)
    b = np.asarray(w_next, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"w_prev and w_next must have the same shape, got {a.shape} and {b.shape}")
    na = np.linalg.norm(a, axis=-1, keepdims=True)
    if np.any(na == 0):
        raise ValueError("w_prev has a zero-norm group; the angle is undefined")
    ah = a / na
    par = np.sum(b * ah, axis=-1)
    perp = np.linalg.norm(b - par[..., None] * ah, axis=-1)
    return np.arctan2(perp, par)


def unit_grad_norm_sq(grad, w) -> np.ndarray:
    """``G = ||g||^2 ||w||^2`` over the last axis: the squared gradient norm the loss would have at unit
    scale (exact for a scale-invariant group, where ``grad l(c w) = grad l(w)/c``)."""
    g = np.asarray(grad, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if g.shape != w.shape:
        raise ValueError(f"grad and w must have the same shape, got {g.shape} and {w.shape}")
    return np.sum(g * g, axis=-1) * np.sum(w * w, axis=-1)


def fit_relaxation_time(steps, z) -> Tuple[float, float, float]:
    """Fit ``z(k) = z_inf + A exp(-k/tau)`` by least squares; returns ``(tau, z_inf, A)`` (tau in steps).

    Use the same function on a measured trajectory and on a predicted one, with ``z`` the natural
    variable of the optimiser (``||w||^4`` for the SGD family, ``||w||^2`` for Adam) so the model is exact
    for the ODE. The window should cover several ``tau`` so that ``z_inf`` is identified.
    """
    from scipy.optimize import curve_fit

    k = np.asarray(steps, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    if k.ndim != 1 or k.shape != z.shape or k.size < 4:
        raise ValueError(f"steps and z must be 1-D arrays of the same length >= 4, got {k.shape}, {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("z must be finite")
    span = k[-1] - k[0]
    if span <= 0:
        raise ValueError("steps must increase")
    z_inf0 = np.mean(z[-max(2, k.size // 10):])
    A0 = z[0] - z_inf0
    dev = np.abs(z - z_inf0)
    cross = np.nonzero(dev <= abs(A0) / np.e)[0]
    tau0 = (k[cross[0]] - k[0]) if cross.size and cross[0] > 0 else span / 3
    scale = max(np.max(np.abs(z)), 1e-300)

    def model(kk, tau, zi, A):
        return (zi + A * np.exp(-(kk - k[0]) / tau)) / scale

    (tau, zi, A), _ = curve_fit(model, k, z / scale, p0=(tau0, z_inf0, A0),
                                bounds=([span * 1e-4, -np.inf, -np.inf], [span * 100, np.inf, np.inf]),
                                maxfev=20000)
    return float(tau), float(zi), float(A)
