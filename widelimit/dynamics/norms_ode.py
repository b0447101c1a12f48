r"""Continuous (slow-manifold) ODE for the norms of scale-invariant weight groups (docs/theory.md §6).

The norm changes on a time scale ``~1/(lr*lam)`` steps, much slower than the momentum buffer
(``1/(1-mu)`` or ``1/(1-b1)`` steps) and, assumed here, than Adam's second moment (``1/(1-b2)``).
Averaging the discrete map of :mod:`widelimit.dynamics.norms_map` over those fast variables, to first order
in ``lr*lam`` and under the same assumption of uncorrelated gradients, gives for ``x = ||w||^2`` and the
continuous step variable ``k``::

    dx/dk = -2 lr (lam_d + kappa S lam_c) x + lr^2 kappa^2 S^2 G / x

with ``S = sum_j c_j`` the total response of the optimiser to one gradient (1 for SGD and Adam,
``1/(1-mu)`` for heavy-ball and Nesterov momentum), ``lam_c``/``lam_d`` the coupled/decoupled weight decay
and ``kappa`` the preconditioner scale: 1 for SGD, and for Adam, with its second moment in equilibrium
(quasi-static), ``kappa = 1/(sqrt((G/x + lam_c^2 x)/d) + eps)``. The expected angular step is
``lr kappa sqrt(S2 G) / x`` with ``S2 = sum_j c_j^2`` (random-walk steps).

Special cases, each solved exactly by :mod:`widelimit.dynamics.norms_closed` for constant inputs:

* SGD / momentum / Nesterov: ``u = x^2`` obeys the *linear* ODE ``du/dk = -4 lr lam S u + 2 lr^2 S^2 G``;
* AdamW (eps = 0): ``dx/dk = -2 lr lam x + lr^2 d`` (linear in ``x``);
* Adam with coupled L2 ('adam', eps = 0, ``lam^2 x^2 << G``): ``dx/dk = -2 lr lam sqrt(d/G) x^{3/2} + lr^2 d``;
* Lion/Muon: ``dx/dk = -2 lr lam x + lr^2 F D`` (:mod:`widelimit.dynamics.norms_update`).

(``lr`` = ``learning_rate`` = eta, ``lam`` = ``weight_decay``, docs/theory.md §1.)

Numerics: inputs are piecewise constant over each step. The SGD-type ODE is integrated exactly step by
step (linear in ``u``); the Adam ODEs with classical RK4 (``substeps`` per step), all float64.
"""
from __future__ import annotations

import math

import numpy as np

from .norms_map import normalised_dynamics
from .norms_result import NormDynamics, finite_check, prepare_inputs
from .norms_schedules import Schedule

__all__ = ["solve_norm_ode"]


def _adam_kappa(x, G, lc, d, eps, sqrt):
    return 1.0 / (sqrt((G / x + lc * lc * x) / d) + eps)


def _adam_rhs(x, eta, lc, ld, G, d, eps, sqrt):
    kap = _adam_kappa(x, G, lc, d, eps, sqrt)
    return -2.0 * eta * (ld + kap * lc) * x + (eta * kap) ** 2 * G / x


def _rk4(x, LR, LC, LD, GS, d, eps, h, substeps, sqrt):
    """Classical RK4 over each step (inputs constant within the step); floats or arrays over groups."""
    out = [x]
    for k in range(len(LR)):
        args = (LR[k], LC[k], LD[k], GS[k], d, eps, sqrt)
        for _ in range(substeps):
            k1 = _adam_rhs(x, *args)
            k2 = _adam_rhs(x + 0.5 * h * k1, *args)
            k3 = _adam_rhs(x + 0.5 * h * k2, *args)
            k4 = _adam_rhs(x + h * k3, *args)
            x = x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(x)
    return out


def solve_norm_ode(optimizer: str, *, learning_rate: Schedule, weight_decay: Schedule, n_steps: int,
                   grad_norm_sq: Schedule | None = None, norm_sq0=None, norm0=None, d=None, shape=None,
                   momentum: float = 0.0, b1: float | None = None, b2: float | None = None,
                   eps: float = 1e-8, substeps: int = 1, **optimizer_options) -> NormDynamics:
    """Integrate the continuous norm ODE over ``n_steps`` steps for one or many groups.

    Arguments as in :func:`widelimit.dynamics.norms_map.solve_norm_map` (``b2`` is accepted for a common
    signature; the ODE assumes Adam's second moment is in equilibrium). ``substeps``: RK4 sub-steps per
    optimiser step for the Adam family.

    Returns :class:`NormDynamics` (``method='ode'``) with ``norm_sq`` at integer steps,
    ``effective_lr = lr kappa / x``, ``angular_update = lr kappa sqrt(S2 G) / x`` and
    ``update_norm_sq = lr^2 kappa^2 S2 G / x`` (the random-walk part of the step).
    """
    inp = prepare_inputs(optimizer, learning_rate, weight_decay, n_steps, grad_norm_sq, norm_sq0, norm0, d,
                         momentum, b1, b2, eps, shape, optimizer_options)
    if isinstance(substeps, bool) or not isinstance(substeps, int) or substeps < 1:
        raise ValueError(f"substeps must be a positive int, got {substeps!r}")
    opt = inp["opt"]
    if opt.normalised:
        return normalised_dynamics(inp, "ode")
    n, ng = inp["n_steps"], inp["n_groups"]
    LR, LAM, GS, dd = inp["lr"], inp["lam"], inp["G"], inp["d"]
    S, S2 = opt.response_sum, opt.response_sq
    xs = np.empty((n + 1, ng))
    xs[0] = inp["x0"]
    if opt.decoupled:
        LC, LD = np.zeros_like(LAM), LAM
    else:
        LC, LD = LAM, np.zeros_like(LAM)
    if not opt.is_adam:
        u = xs[0] ** 2
        r = 4.0 * LR * (LD + S * LC)            # decay rate of u per step
        src = 2.0 * LR ** 2 * S ** 2 * GS       # source of u per step
        decay = np.exp(-r)
        with np.errstate(divide="ignore", invalid="ignore"):
            gain = np.where(r > 0, -np.expm1(-r) / np.where(r > 0, r, 1.0), 1.0)
        for k in range(n):
            u = u * decay[k] + src[k] * gain[k]
            xs[k + 1] = np.sqrt(u)
        kap = np.ones((n, ng))
    else:
        h = 1.0 / substeps
        if ng <= 16:   # Python floats per group: far less overhead than tiny arrays
            for g in range(ng):
                xs[:, g] = _rk4(float(xs[0, g]), LR[:, g].tolist(), LC[:, g].tolist(), LD[:, g].tolist(),
                                GS[:, g].tolist(), float(dd[g]), opt.eps, h, substeps, math.sqrt)
        else:
            xs[:] = np.asarray(_rk4(xs[0].copy(), LR, LC, LD, GS, dd, opt.eps, h, substeps, np.sqrt))
        kap = _adam_kappa(xs[:-1], GS, LC, dd, opt.eps, np.sqrt)
    finite_check(xs, "||w||^2")
    x = xs[:-1]
    eff = LR * kap / x
    dsq = (LR * kap) ** 2 * S2 * GS / x
    ang = np.sqrt(dsq / x)
    return NormDynamics(optimizer=opt, method="ode", norm_sq=xs, effective_lr=eff, angular_update=ang,
                        update_norm_sq=dsq, precond=kap, learning_rate=LR, weight_decay=LAM, grad_norm_sq=GS,
                        d=dd)
