r"""Discrete norm map of scale-invariant weight groups (exact for SGD, a moment map with momentum/Adam).

Setting. A group ``w`` (d parameters) is *scale-invariant*: the loss depends on ``w/||w||`` only, so the
loss gradient ``g`` satisfies ``g . w = 0`` and ``||g||^2 = G / ||w||^2`` with ``G = ||grad l(w_hat)||^2``
the squared gradient norm at unit scale. L2 follows the project convention (penalty ``(lam/2)||w||^2``).
The optimisers are written as in :mod:`widelimit.dynamics.norms_optim`::

    h_k = g_k + lam_c w_k;   M_{k+1} = a M_k + b h_k;
    w_{k+1} = w_k - lr_k kappa_k (c1 h_k + c2_k M_{k+1}) - lr_k lam_d w_k.

The map tracks three scalars per group: ``x = ||w||^2``, ``p = w . M`` and ``q = ||M||^2``, using only
``g . w = 0`` (exact), ``||g||^2 = G/x`` (exact given the statistic ``G_k`` of that step) and

* **(A1) uncorrelated gradients**: ``E[g_k . M_k] = 0``: the fresh gradient is uncorrelated with the
  momentum buffer (noise-dominated minibatch gradients, a random walk on the sphere);
* **(A2) mean field**: products of the tracked scalars are replaced by products of their means.

For plain SGD (``a = 0``) neither assumption is used and the map is exact:
``||w_{k+1}||^2 = (1 - lr lam)^2 ||w_k||^2 + lr^2 G_k / ||w_k||^2``.

**Update-norm model for Adam.** Adam divides coordinate ``i`` by ``sqrt(v_hat_i) + eps``. The model
takes the second-moment estimate isotropic within the group, ``v_hat_i = V_hat / d``, where ``V`` is the
same EMA (``beta2``, bias-corrected) of the expected squared gradient norm
``E||h||^2 = G/||w||^2 + lam_c^2 ||w||^2``. So ``kappa = 1/(sqrt(V_hat/d) + eps)`` and, once ``V`` has caught
up, the normalised gradient has ``||kappa g||^2 ~ d``: each coordinate of ``m_hat/sqrt(v_hat)`` has RMS
``sqrt((1 - beta1)/(1 + beta1))`` for uncorrelated gradients, i.e. ``||update|| ~ lr sqrt(d (1-b1)/(1+b1))``.
(For heterogeneous ``v_i`` the sum ``sum_i g_i^2 / v_i`` still tends to ``d``; the coupled-L2 term
``lam w_i / sqrt(v_i)`` is where heterogeneity would enter.)

The expected angle between ``w_k`` and ``w_{k+1}`` is ``atan2(sqrt(E||D_perp||^2), ||w|| + w.D/||w||)``
with ``D = w_{k+1} - w_k`` and ``E||D_perp||^2 = E||D||^2 - (w.D)^2/||w||^2``.
"""
from __future__ import annotations

import numpy as np

from .norms_result import NormDynamics, finite_check, prepare_inputs
from .norms_schedules import Schedule

__all__ = ["solve_norm_map"]


def solve_norm_map(optimizer: str, *, lr: Schedule, weight_decay: Schedule, n_steps: int,
                   grad_norm_sq: Schedule, norm_sq0=None, norm0=None, d=None, momentum: float = 0.0,
                   beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> NormDynamics:
    """Iterate the discrete norm map for ``n_steps`` steps of ``n_groups`` scale-invariant groups.

    Args:
      optimizer: 'sgd', 'momentum' (heavy ball), 'nesterov', 'adam_l2' (Adam with coupled L2) or 'adamw'.
      lr: learning-rate schedule (number, per-step array, ``(n_steps, n_groups)`` array or callable
        ``step -> value`` such as an optax schedule; see :mod:`widelimit.dynamics.norms_schedules`).
      weight_decay: ``lam`` schedule, same forms; coupled L2 (penalty ``(lam/2)||w||^2``) for all but
        'adamw', where it is the decoupled ``w <- w - lr*lam*w``.
      n_steps: number of optimiser steps.
      grad_norm_sq: ``G_k = ||grad l(w_hat_k)||^2`` at unit norm (constant, time series measured from a
        run, ``(n_steps, n_groups)`` array, or callable).
      norm_sq0 / norm0: initial ``||w||^2`` or ``||w||`` (scalar or one per group); give exactly one.
      d: number of parameters per group (required for Adam; unused by SGD-type optimisers).
      momentum: heavy-ball / Nesterov coefficient in [0, 1).
      beta1, beta2, eps: Adam's hyper-parameters (optax conventions, eps outside the square root).

    Returns:
      :class:`NormDynamics` with ``method='map'``.
    """
    inp = prepare_inputs(optimizer, lr, weight_decay, n_steps, grad_norm_sq, norm_sq0, norm0, d,
                         momentum, beta1, beta2, eps)
    opt = inp["opt"]
    n, ng = inp["n_steps"], inp["n_groups"]
    LR, LAM, GS = inp["lr"], inp["lam"], inp["G"]
    a, b, c1 = opt.a, opt.b, opt.c1
    dd = inp["d"]
    x = inp["x0"].copy()
    p = np.zeros(ng)
    q = np.zeros(ng)
    V = np.zeros(ng)
    xs = np.empty((n + 1, ng))
    xs[0] = x
    eff = np.empty((n, ng))
    ang = np.empty((n, ng))
    dsq = np.empty((n, ng))
    kap = np.ones((n, ng))
    for k in range(n):
        eta, lam, G = LR[k], LAM[k], GS[k]
        lc, ld = (0.0, lam) if opt.decoupled else (lam, 0.0)
        gg = G / x
        hw = lc * x
        hh = gg + lc * lc * x
        hM = lc * p
        c2 = opt.c2(k)
        if opt.is_adam:
            V = opt.beta2 * V + (1.0 - opt.beta2) * hh
            Vhat = V / (1.0 - opt.beta2 ** (k + 1))
            kappa = 1.0 / (np.sqrt(Vhat / dd) + opt.eps)
            kap[k] = kappa
        else:
            kappa = 1.0
        wM = a * p + b * hw                       # w_k . M_{k+1}
        MM = a * a * q + 2 * a * b * hM + b * b * hh  # ||M_{k+1}||^2
        hMn = a * hM + b * hh                     # h_k . M_{k+1}
        s = eta * kappa
        wD = -s * (c1 * hw + c2 * wM) - eta * ld * x
        DD = (s * s * (c1 * c1 * hh + 2 * c1 * c2 * hMn + c2 * c2 * MM)
              + 2 * s * eta * ld * (c1 * hw + c2 * wM) + (eta * ld) ** 2 * x)
        DM = -s * (c1 * hMn + c2 * MM) - eta * ld * wM   # D . M_{k+1}
        perp = np.maximum(DD - wD * wD / x, 0.0)
        rx = np.sqrt(x)
        ang[k] = np.arctan2(np.sqrt(perp), rx + wD / rx)
        eff[k] = s / x
        dsq[k] = DD
        x = x + 2 * wD + DD
        p = wM + DM
        q = MM
        xs[k + 1] = x
    finite_check(xs, "||w||^2")
    return NormDynamics(optimizer=opt, method="map", norm_sq=xs, effective_lr=eff, angular_update=ang,
                        update_norm_sq=dsq, precond=kap, lr=LR, weight_decay=LAM, grad_norm_sq=GS, d=dd)
