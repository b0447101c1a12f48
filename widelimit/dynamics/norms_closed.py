r"""Closed forms for scale-invariant groups at constant hyper-parameters.

Derivations: ``derivations/scale_invariant.py`` (sympy), summarised in ``derivations/scale_invariant.md``.
Notation: ``eta`` learning rate, ``lam`` weight decay (penalty ``(lam/2)||w||^2``; decoupled for AdamW),
``G = ||grad l(w_hat)||^2`` at unit norm, ``d`` parameters in the group, ``x = ||w||^2``, ``k`` steps.
``S``/``S2`` are the optimiser's impulse-response sums (:mod:`widelimit.dynamics.norms_optim`).

Assumptions (leading order): ``eta*lam << 1`` (and ``eta*lam << (1-mu)^2`` so the momentum buffer is
fast); gradients uncorrelated from step to step (noise-dominated: A1 of
:mod:`widelimit.dynamics.norms_map`); Adam's ``eps = 0`` and second moment in equilibrium, with the
isotropic model ``v_i = E||grad||^2/d``; for Adam + L2 also ``lam^2 x^2 << G`` (the L2 part of the gradient
is small, true at its equilibrium whenever the angular step is small).

=============== ======================== ======================= ======================== =====================
optimiser       ``x* = ||w||^2``          angular step            effective lr (``eta kappa/x``)  relaxation (steps)
=============== ======================== ======================= ======================== =====================
sgd/momentum/   ``sqrt(eta S G/(2 lam))`` ``sqrt(2 eta lam S2/S)`` ``eta/x*``                ``1/(4 eta lam S)``
nesterov
adamw           ``eta d/(2 lam)``          ``sqrt(2 eta lam S2)``  ``eta sqrt(d/(G x*))``     ``1/(2 eta lam)``
adam_l2         ``(eta sqrt(dG)/(2lam))^(2/3)`` ``eta sqrt(d S2/x*)`` ``eta sqrt(d/(G x*))``  ``2 x*/(3 eta^2 d)``
=============== ======================== ======================= ======================== =====================

So SGD: angle ``sqrt(2 eta lam)``; heavy ball ``sqrt(2 eta lam/(1+mu))``; Nesterov
``sqrt(2 eta lam (1 + 2mu - 2mu^3)/(1+mu))``; AdamW ``sqrt(2 eta lam (1-b1)/(1+b1))`` -- none depends on
``G``. Adam + L2 ("normalisation only partially removed", van Laarhoven): ``x* ~ (eta/lam)^(2/3) (dG)^(1/3)``,
angle ``= sqrt((1-b1)/(1+b1)) (2 lam)^(1/3) eta^(2/3) (d^2/G)^(1/6)``: it depends on ``G`` and ``d``.

*Angular update* means the root-mean-square angle per step, ``sqrt(E[theta^2])`` (the derivations give
``E||dw||^2/||w||^2``). When the per-step gradient norm fluctuates strongly (minibatch gradients on real
networks: coefficient of variation of ``G`` ~ 1) the *mean* angle is smaller by ``E[sqrt G]/sqrt(E G)``
(~0.92 measured on a LayerNorm MLP); compare RMS with RMS.

*Relaxation time* is the e-folding time (in steps) of a small deviation ``x - x*`` under the continuous
ODE (the same for any power of ``x``). It is exact at all amplitudes for ``u = x^2`` (SGD family) and
``x`` (AdamW), whose ODEs are linear; for Adam + L2 the full trajectory is given implicitly below.
With momentum the discrete dynamics relax faster than the ODE by a relative ``~8 eta lam/(1-mu)^2``
(measured with the moment map: 8% at ``eta lam = 1e-4, mu = 0.9``); use the map when that is not small.

Without weight decay (``lam = 0``) the norm grows for ever: ``x^2 = x0^2 + 2 eta^2 S^2 G k`` for the SGD
family (``||w||^4`` linear in steps, ``eta_eff ~ k^{-1/2}``), and ``x = x0 + eta^2 d k`` for Adam
(``||w||^2`` linear in steps, ``eta_eff ~ k^{-1/2}`` as well).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from .norms_optim import NormOptimizer, make_optimizer

__all__ = ["Equilibrium", "equilibrium", "norm_sq_trajectory", "adam_l2_antiderivative"]


class Equilibrium(NamedTuple):
    """Equilibrium quantities (arrays broadcast over the inputs). ``lam = 0`` gives ``inf``/``0``."""

    norm_sq: np.ndarray           # ||w||^2 at equilibrium
    effective_lr: np.ndarray      # eta * kappa / ||w||^2
    angular_update: np.ndarray    # root-mean-square angle per step (radians)
    relaxation_steps: np.ndarray  # e-folding time of a small deviation, in steps


def _arr(name: str, v, *, positive: bool = False, nonneg: bool = True, integer: bool = False):
    if v is None:
        return None
    if isinstance(v, bool):
        raise TypeError(f"{name} must be a number or array, got bool")
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or array of numbers, got {type(v).__name__}") from None
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite, got {v!r}")
    if positive and np.any(a <= 0):
        raise ValueError(f"{name} must be > 0, got min {a.min()}")
    if nonneg and np.any(a < 0):
        raise ValueError(f"{name} must be >= 0, got min {a.min()}")
    if integer and np.any(a != np.round(a)):
        raise ValueError(f"{name} must be integer-valued, got {v!r}")
    return a


def _need(name: str, v, opt: NormOptimizer):
    if v is None:
        raise ValueError(f"{name} is required for optimizer={opt.name!r}")
    return v


def _check_common(optimizer, lr, weight_decay, grad_norm_sq, d, momentum, beta1, beta2):
    opt = make_optimizer(optimizer, momentum, beta1, beta2, 0.0)
    eta = _arr("lr", lr, positive=True)
    lam = _arr("weight_decay", weight_decay)
    G = _arr("grad_norm_sq", grad_norm_sq)
    dd = _arr("d", d, positive=True, integer=True)
    try:
        np.broadcast_shapes(*[np.shape(a) for a in (eta, lam, G, dd) if a is not None])
    except ValueError:
        shapes = {n: np.shape(a) for n, a in (("lr", eta), ("weight_decay", lam), ("grad_norm_sq", G),
                                                ("d", dd)) if a is not None}
        raise ValueError(f"mismatched array shapes (must broadcast): {shapes}") from None
    if np.any(eta * lam >= 1):
        raise ValueError("lr * weight_decay must be < 1")
    return opt, eta, lam, G, dd


def equilibrium(optimizer: str, lr, weight_decay, *, grad_norm_sq=None, d=None, momentum: float = 0.0,
                beta1: float = 0.9, beta2: float = 0.999, exact: bool = False) -> Equilibrium:
    """Equilibrium norm, effective learning rate, angular update and relaxation time (table above).

    Array arguments broadcast (NumPy rules). ``grad_norm_sq`` (``G``) is needed for the SGD-family norm
    and effective lr and for everything of 'adam_l2'; ``d`` for the Adam family; quantities whose inputs
    are missing come back as NaN. ``exact=True`` (only 'sgd') returns the fixed point of the exact discrete
    map instead: ``x*^2 = eta G/(lam (2 - eta lam))``, ``cos(angle) = 1 - eta lam`` and relaxation
    ``-1/ln(2 (1 - eta lam)^2 - 1)`` (linearised map).
    """
    opt, eta, lam, G, dd = _check_common(optimizer, lr, weight_decay, grad_norm_sq, d, momentum, beta1,
                                         beta2)
    if exact and opt.name != "sgd":
        raise ValueError(f"exact=True is available for optimizer='sgd' only, got {opt.name!r} (use "
                         f"solve_norm_map for the fixed point of the moment map)")
    S, S2 = opt.response_sum, opt.response_sq
    nan = np.nan
    Gv = G if G is not None else nan
    dv = dd if dd is not None else nan
    if opt.is_adam and dd is None:
        _need("d", dd, opt)
    with np.errstate(divide="ignore", invalid="ignore"):
        if not opt.is_adam:
            if exact:
                x = np.sqrt(eta * Gv / (lam * (2.0 - eta * lam)))
                ang = np.arccos(1.0 - eta * lam)
                tau = -1.0 / np.log(2.0 * (1.0 - eta * lam) ** 2 - 1.0)
            else:
                x = np.sqrt(eta * S * Gv / (2.0 * lam))
                ang = np.sqrt(2.0 * eta * lam * S2 / S)
                tau = 1.0 / (4.0 * eta * lam * S)
            eff = eta / x
        elif opt.name == "adamw":
            x = eta * dv / (2.0 * lam)
            eff = eta * np.sqrt(dv / (Gv * x))
            ang = np.sqrt(2.0 * eta * lam * S2) * np.ones_like(dv)
            tau = 1.0 / (2.0 * eta * lam)
        else:  # adam_l2
            x = (eta * np.sqrt(dv * Gv) / (2.0 * lam)) ** (2.0 / 3.0)
            eff = eta * np.sqrt(dv / (Gv * x))
            ang = eta * np.sqrt(dv * S2 / x)
            tau = 2.0 * x / (3.0 * eta ** 2 * dv)
    shape = np.broadcast_shapes(*[np.shape(a) for a in (eta, lam, G, dd) if a is not None])
    out = [np.broadcast_to(np.asarray(v, dtype=np.float64), shape).copy() for v in (x, eff, ang, tau)]
    return Equilibrium(*out)


def adam_l2_antiderivative(s):
    """``F(s) = int s/(1 - s^3) ds = -ln|1-s|/3 + ln(1+s+s^2)/6 - atan((2s+1)/sqrt 3)/sqrt 3``.

    The Adam + L2 ODE ``dx/dk = A (1 - s^3)`` with ``s = sqrt(x/x*)``, ``A = eta^2 d`` integrates to
    ``F(s_k) - F(s_0) = A k / (2 x*)``.
    """
    s = np.asarray(s, dtype=np.float64)
    return (-np.log(np.abs(1.0 - s)) / 3.0 + np.log1p(s + s * s) / 6.0
            - np.arctan((2.0 * s + 1.0) / np.sqrt(3.0)) / np.sqrt(3.0))


def _adam_l2_s(s0, delta):
    """Solve ``F(s) = F(s0) + delta`` (delta >= 0) for ``s`` between ``s0`` and 1 (vectorised bisection on
    ``y = ln e`` where ``s = 1 - e (1 - s0)``; ``F`` increases as ``s`` approaches 1 from either side)."""
    s0, delta = np.broadcast_arrays(np.asarray(s0, float), np.asarray(delta, float))
    one_minus = 1.0 - s0
    smooth = lambda s: np.log1p(s + s * s) / 6.0 - np.arctan((2.0 * s + 1.0) / np.sqrt(3.0)) / np.sqrt(3.0)
    target = smooth(s0) + delta   # F(s) - (-ln|1-s0|/3) written with e: -ln(e)/3 + smooth(s) = target
    lo = -3.0 * delta - 60.0 - np.log1p(s0 * s0)   # very close to 1
    hi = np.zeros_like(lo)                        # e = 1 (s = s0)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        s = 1.0 - np.exp(mid) * one_minus
        val = -mid / 3.0 + smooth(s)
        go_closer = val < target
        hi = np.where(go_closer, mid, hi)
        lo = np.where(go_closer, lo, mid)
    y = 0.5 * (lo + hi)
    return np.where(one_minus == 0.0, 1.0, 1.0 - np.exp(y) * one_minus)


def norm_sq_trajectory(optimizer: str, steps, *, lr, weight_decay, norm_sq0, grad_norm_sq=None,
                       d=None, momentum: float = 0.0, beta1: float = 0.9) -> np.ndarray:
    """Exact solution ``||w||^2(k)`` of the continuous ODE from any initial ``norm_sq0`` (constant inputs).

    * SGD family: ``u = x^2 = u* + (u0 - u*) exp(-4 eta lam S k)`` with ``u* = eta S G/(2 lam)``;
      for ``lam = 0``: ``u = u0 + 2 eta^2 S^2 G k``.
    * AdamW: ``x = x* + (x0 - x*) exp(-2 eta lam k)``, ``x* = eta d/(2 lam)``; ``lam = 0``: ``x0 + eta^2 d k``.
    * Adam + L2: ``F(s_k) = F(s_0) + eta^2 d k/(2 x*)``, ``s = sqrt(x/x*)`` (:func:`adam_l2_antiderivative`),
      solved by bisection; ``lam = 0`` as AdamW.

    All arguments broadcast together (NumPy rules); pass ``steps[:, None]`` to tabulate over groups.
    """
    opt, eta, lam, G, dd = _check_common(optimizer, lr, weight_decay, grad_norm_sq, d, momentum, beta1, 0.9)
    k = _arr("steps", steps)
    x0 = _arr("norm_sq0", norm_sq0, positive=True)
    S = opt.response_sum
    if not opt.is_adam:
        G = _need("grad_norm_sq", G, opt)
        r = 4.0 * eta * lam * S
        src = 2.0 * eta ** 2 * S ** 2 * G
        rk = r * k
        with np.errstate(divide="ignore", invalid="ignore"):
            gain = np.where(rk > 0, -np.expm1(-rk) / np.where(r > 0, r, 1.0), k)
        return np.sqrt(x0 ** 2 * np.exp(-rk) + src * gain)
    dd = _need("d", dd, opt)
    A = eta ** 2 * dd
    if opt.name == "adamw" or np.all(lam == 0):
        r = 2.0 * eta * lam
        rk = r * k
        with np.errstate(divide="ignore", invalid="ignore"):
            gain = np.where(rk > 0, -np.expm1(-rk) / np.where(r > 0, r, 1.0), k)
        out = x0 * np.exp(-rk) + A * gain
        return out
    G = _need("grad_norm_sq", G, opt)
    k, x0, eta, lam, G, dd, A = np.broadcast_arrays(k, x0, eta, lam, G, dd, A)
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = (eta * np.sqrt(dd * G) / (2.0 * lam)) ** (2.0 / 3.0)
        s = _adam_l2_s(np.sqrt(x0 / xs), A * k / (2.0 * xs))
        grow = x0 + A * k
    return np.where(lam > 0, xs * s * s, grow)
