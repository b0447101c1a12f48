r"""Discrete norm map of scale-invariant weight groups (docs/theory.md §6): exact for SGD, a moment map with
momentum/Adam, and the noise map ``x_{k+1} = (1-eta lam)^2 x_k + eta^2 F D`` for Lion/Muon
(:mod:`widelimit.dynamics.norms_update`).

Setting. A group ``w`` (d parameters) is *scale-invariant*: the loss depends on ``w/||w||`` only, so the
loss gradient ``g`` satisfies ``g . w = 0`` and ``||g||^2 = G / ||w||^2`` with ``G = ||grad l(w_hat)||^2``
the squared gradient norm at unit scale. ``eta`` = ``learning_rate``, ``lam`` = ``weight_decay`` (penalty
``(lam/2)||w||^2``, docs/theory.md §1).
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
same EMA (``b2``, bias-corrected) of the expected squared gradient norm
``E||h||^2 = G/||w||^2 + lam_c^2 ||w||^2``. So ``kappa = 1/(sqrt(V_hat/d) + eps)`` and, once ``V`` has caught
up, the normalised gradient has ``||kappa g||^2 ~ d``: each coordinate of ``m_hat/sqrt(v_hat)`` has RMS
``sqrt((1 - b1)/(1 + b1))`` for uncorrelated gradients, i.e. ``||update|| ~ lr sqrt(d (1-b1)/(1+b1))``.
(For heterogeneous ``v_i`` the sum ``sum_i g_i^2 / v_i`` still tends to ``d``; the coupled-L2 term
``lam w_i / sqrt(v_i)`` is where heterogeneity would enter.)

The expected angle between ``w_k`` and ``w_{k+1}`` is ``atan2(sqrt(E||D_perp||^2), ||w|| + w.D/||w||)``
with ``D = w_{k+1} - w_k`` and ``E||D_perp||^2 = E||D||^2 - (w.D)^2/||w||^2``.
"""
from __future__ import annotations

import math

import numpy as np

from .norms_result import NormDynamics, finite_check, prepare_inputs
from .norms_schedules import Schedule, as_series

__all__ = ["solve_norm_map"]


def solve_norm_map(optimizer: str, *, learning_rate: Schedule, weight_decay: Schedule, n_steps: int,
                   grad_norm_sq: Schedule | None = None, norm_sq0=None, norm0=None, d=None, shape=None,
                   momentum: float = 0.0, b1: float | None = None, b2: float | None = None,
                   eps: float = 1e-8, grad_buffer_dot: Schedule | None = None,
                   **optimizer_options) -> NormDynamics:
    """Iterate the discrete norm map for ``n_steps`` steps of ``n_groups`` scale-invariant groups.

    Args:
      optimizer: one of 'gd', 'sgd', 'momentum' (heavy ball), 'nesterov', 'adam' (Adam with coupled L2),
        'adamw', 'lion', 'muon' (docs/theory.md §1).
      learning_rate: ``eta`` schedule (number, per-step array, ``(n_steps, n_groups)`` array or callable
        ``step -> value`` such as an optax schedule; see :mod:`widelimit.dynamics.norms_schedules`).
      weight_decay: ``lam`` schedule, same forms; coupled L2 (penalty ``(lam/2)||w||^2``) for
        gd/sgd/momentum/nesterov/adam, the decoupled ``w <- w - eta*lam*w`` for adamw/lion/muon.
      n_steps: number of optimiser steps.
      grad_norm_sq: ``G_k = ||grad l(w_hat_k)||^2`` at unit norm (constant, time series measured from a
        run, ``(n_steps, n_groups)`` array, or callable); optional for Lion/Muon (only their effective learning
        rate needs it).
      norm_sq0 / norm0: initial ``||w||^2`` or ``||w||`` (scalar or one per group); give exactly one.
      d: number of parameters per group (required for adam/adamw/lion; unused by SGD-type optimisers).
      shape: ``(fan_in, fan_out)`` of the weight matrix (required for 'muon'; one shape for all groups).
      momentum: heavy-ball / Nesterov coefficient in [0, 1).
      b1, b2, eps: moment coefficients (optax names and defaults per optimiser, see
        :func:`~widelimit.dynamics.norms_optim.make_optimizer`) and Adam's ``eps`` (outside the square root).
      grad_buffer_dot: optional measured ``g_k . M_k`` (loss gradient against the optimiser's buffer before
        step k: optax's ``trace`` for momentum, Adam's ``mu``), in absolute units, replacing assumption A1
        (``E[g . M] = 0``). A diagnostic: on real networks curvature makes successive gradients
        anti-correlated with the buffer, which A1 ignores. Linear optimisers only.
      optimizer_options: Muon's ``nesterov``, ``consistent_rms``, ``ns_coeffs``, ``ns_steps``,
        ``exact_orthogonalisation``.

    Returns:
      :class:`NormDynamics` with ``method='map'``.
    """
    inp = prepare_inputs(optimizer, learning_rate, weight_decay, n_steps, grad_norm_sq, norm_sq0, norm0, d,
                         momentum, b1, b2, eps, shape, optimizer_options)
    opt = inp["opt"]
    if opt.normalised:
        if grad_buffer_dot is not None:
            raise ValueError(f"grad_buffer_dot applies to the linear optimisers, not {opt.name!r}")
        return normalised_dynamics(inp, "map")
    n, ng = inp["n_steps"], inp["n_groups"]
    LR, LAM, GS, dd = inp["lr"], inp["lam"], inp["G"], inp["d"]
    LC, LD = (np.zeros_like(LAM), LAM) if opt.decoupled else (LAM, np.zeros_like(LAM))
    C2 = [opt.c2(k) for k in range(n)]
    unbias2 = (1.0 / (1.0 - opt.b2 ** np.arange(1, n + 1))).tolist() if opt.is_adam else None
    GM = np.zeros((n, ng)) if grad_buffer_dot is None else \
        as_series(grad_buffer_dot, "grad_buffer_dot", n, ng)
    if ng <= _SCALAR_GROUPS:   # per-group loop on Python floats: ~10x less overhead than tiny arrays
        cols = [_iterate(opt, float(inp["x0"][g]), LR[:, g].tolist(), LC[:, g].tolist(), LD[:, g].tolist(),
                         GS[:, g].tolist(), GM[:, g].tolist(), C2, unbias2,
                         None if dd is None else float(dd[g]), _SCALAR_OPS)
                for g in range(ng)]
        xs, eff, ang, dsq, kap = (np.stack([np.asarray(c[i], dtype=np.float64) for c in cols], axis=1)
                                  for i in range(5))
    else:
        xs, eff, ang, dsq, kap = (np.asarray(v, dtype=np.float64) for v in
                                  _iterate(opt, inp["x0"].copy(), LR, LC, LD, GS, GM, C2, unbias2, dd,
                                           _ARRAY_OPS))
    finite_check(xs, "||w||^2")
    return NormDynamics(optimizer=opt, method="map", norm_sq=xs, effective_lr=eff, angular_update=ang,
                        update_norm_sq=dsq, precond=kap, learning_rate=LR, weight_decay=LAM, grad_norm_sq=GS,
                        d=dd)


def normalised_dynamics(inp: dict, method: str) -> NormDynamics:
    """Lion/Muon: ``x_{k+1} = (1-eta lam)^2 x_k + eta^2 F (D_k + D' r_k)``, ``r_k = ln(x_k/x_{k-1})``
    (``method='map'``) or the ODE ``dx/dk = -2 eta lam x + eta^2 F (D_k + D' dln x/dk)`` (``'ode'``, RK4),
    with ``D`` evaluated
    at each step's ``eta*lam``, from zero buffers at step 0
    (:func:`~widelimit.dynamics.norms_update.coherence_transient`: the start-up transient, during which the
    updates are less coherent and the norm first shrinks, is included). A schedule's past ``eta`` enters
    only through ``eta_k^2`` (slowly varying schedules)."""
    from . import norms_update as U

    opt, LR, LAM, GS, dd, shape = inp["opt"], inp["lr"], inp["lam"], inp["G"], inp["d"], inp["shape"]
    n, ng = inp["n_steps"], inp["n_groups"]
    if opt.name == "muon":
        F = np.full(ng, U.update_norm_sq(opt, shape=shape))
        gain = np.full(ng, U.linear_gain(opt, shape=shape))
    else:
        F = dd.copy()
        gain = np.array([U.linear_gain(opt, d=float(v)) for v in dd])
    el = LR * LAM
    cols = {}
    for g in range(ng):   # groups sharing a decay schedule share D_k
        key = el[:, g].tobytes()
        if key not in cols:
            cols[key] = U.coherence_transient(opt, shape, el[:, g])
    D = np.stack([cols[el[:, g].tobytes()] for g in range(ng)], axis=1)
    Dst = U.coherence_series(opt, shape, el)
    # the growth term needs the buffer's memory: scaled by the built-up part of D during the start-up
    Dp = U.coherence_series(opt, shape, el, U.coherence_slope) * np.clip((D - 1.0) / (Dst - 1.0), 0.0, 1.0)
    src, slope = LR ** 2 * F * D, LR ** 2 * F * Dp
    xs = np.empty((n + 1, ng))
    xs[0] = inp["x0"]
    if method == "map":   # x_{k+1} = (1-eta lam)^2 x_k + eta^2 F (D_k + D' ln(x_k/x_{k-1}))
        fac = (1.0 - el) ** 2
        prev = xs[0]
        for k in range(n):
            xs[k + 1] = fac[k] * xs[k] + src[k] + slope[k] * np.log(xs[k] / prev)
            prev = xs[k]
    else:                 # dx/dk (1 - eta^2 F D'/x) = -2 eta lam x + eta^2 F D_k, RK4 with 4 sub-steps
        def rhs(x, k):
            return (-2.0 * el[k] * x + src[k]) / (1.0 - slope[k] / x)
        x = xs[0].copy()
        for k in range(n):
            for _ in range(4):
                h = 0.25
                k1 = rhs(x, k)
                k2 = rhs(x + 0.5 * h * k1, k)
                k3 = rhs(x + 0.5 * h * k2, k)
                k4 = rhs(x + h * k3, k)
                x = x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
            xs[k + 1] = x
    finite_check(xs, "||w||^2")
    x = xs[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        kap = gain * np.sqrt(x / GS)
        eff = LR * kap / x
    dsq = LR ** 2 * F + (el ** 2) * x
    ang = np.arctan2(LR * np.sqrt(F), (1.0 - el) * np.sqrt(x))
    return NormDynamics(optimizer=opt, method=method, norm_sq=xs, effective_lr=eff, angular_update=ang,
                        update_norm_sq=dsq, precond=kap, learning_rate=LR, weight_decay=LAM, grad_norm_sq=GS,
                        d=dd)


_SCALAR_GROUPS = 16
_SCALAR_OPS = (math.sqrt, math.atan2, lambda v: v if v > 0.0 else 0.0)
_ARRAY_OPS = (np.sqrt, np.arctan2, lambda v: np.maximum(v, 0.0))


def _iterate(opt, x, LR, LC, LD, GS, GM, C2, unbias2, dd, ops):
    """The moment map of the module docstring; works on floats or on arrays over groups (``ops``)."""
    sqrt, atan2, clip0 = ops
    a, b, c1 = opt.a, opt.b, opt.c1
    adam, b2, eps = opt.is_adam, opt.b2, opt.eps
    p = q = V = 0.0 * x
    xs, eff, ang, dsq, kap = [x], [], [], [], []
    for k in range(len(LR)):
        eta, lc, ld, c2 = LR[k], LC[k], LD[k], C2[k]
        hw = lc * x
        hh = GS[k] / x + lc * hw                  # ||h||^2 = G/x + lam_c^2 x   (g . w = 0)
        hM = lc * p + GM[k]                       # E[h . M] = lam_c p + E[g . M]  (A1: E[g . M] = 0)
        if adam:
            V = b2 * V + (1.0 - b2) * hh
            kappa = 1.0 / (sqrt(V * unbias2[k] / dd) + eps)
        else:
            kappa = 1.0 + 0.0 * x
        s = eta * kappa
        wM = a * p + b * hw                       # w_k . M_{k+1}
        MM = a * a * q + 2 * a * b * hM + b * b * hh  # ||M_{k+1}||^2
        hMn = a * hM + b * hh                     # h_k . M_{k+1}
        u = c1 * hw + c2 * wM                     # w . (c1 h + c2 M_{k+1})
        ed = eta * ld
        wD = -s * u - ed * x                      # w . D,  D = w_{k+1} - w_k
        DD = s * s * (c1 * c1 * hh + 2 * c1 * c2 * hMn + c2 * c2 * MM) + 2 * s * ed * u + ed * ed * x
        DM = -s * (c1 * hMn + c2 * MM) - ed * wM  # D . M_{k+1}
        rx = sqrt(x)
        ang.append(atan2(sqrt(clip0(DD - wD * wD / x)), rx + wD / rx))
        eff.append(s / x)
        dsq.append(DD)
        kap.append(kappa)
        x = x + 2 * wD + DD
        p = wM + DM
        q = MM
        xs.append(x)
    return xs, eff, ang, dsq, kap
