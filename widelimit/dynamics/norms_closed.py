r"""Closed forms for scale-invariant groups at constant hyper-parameters.

Derivations: ``derivations/scale_invariant.py`` (sympy), summarised in ``derivations/scale_invariant.md``.
docs/theory.md §6. Notation: ``eta`` = ``learning_rate``, ``lam`` = ``weight_decay`` (penalty ``(lam/2)||w||^2``;
decoupled for adamw/lion/muon),
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
adam            ``(eta sqrt(dG)/(2lam))^(2/3)`` ``eta sqrt(d S2/x*)`` ``eta sqrt(d/(G x*))``  ``2 x*/(3 eta^2 d)``
lion/muon       ``eta F D/(lam(2-eta lam))`` ``sqrt(eta lam (2-eta lam)/D)`` ``eta gain/sqrt(G x*)`` ``(1-beta)/(2 eta lam)``
=============== ======================== ======================= ======================== =====================

Lion/Muon (:mod:`widelimit.dynamics.norms_update`): ``F = ||u||^2`` the fixed update norm (``d`` for Lion),
``D`` the update coherence (exact discrete map of the noise model; no leading-order expansion).

So SGD: angle ``sqrt(2 eta lam)``; heavy ball ``sqrt(2 eta lam/(1+mu))``; Nesterov
``sqrt(2 eta lam (1 + 2mu - 2mu^3)/(1+mu))``; AdamW ``sqrt(2 eta lam (1-b1)/(1+b1))`` -- none depends on
``G``. Adam with coupled L2 ("normalisation only partially removed", van Laarhoven): ``x* ~ (eta/lam)^(2/3) (dG)^(1/3)``,
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

import math
from dataclasses import dataclass, fields
from typing import Optional

import numpy as np

from ..validity import Validity
from . import norms_update as _upd
from .norms_optim import NormOptimizer, make_optimizer

__all__ = ["Equilibrium", "equilibrium", "norm_sq_trajectory", "adam_l2_antiderivative", "assess_validity",
           "EQUILIBRIUM_UNITS"]

EQUILIBRIUM_UNITS = {"norm_sq": "parameter units squared (||w||^2)", "effective_lr": "1/(parameter units^2)"
                     " x learning-rate units (eta kappa/||w||^2)", "angular_update": "rad/step",
                     "relaxation_steps": "steps", "validity": "Validity"}


@dataclass(frozen=True)
class Equilibrium:
    """Equilibrium of a scale-invariant group (arrays broadcast over the inputs; ``weight_decay = 0`` gives
    ``inf``/``0``). Units in :data:`EQUILIBRIUM_UNITS`.

    * ``norm_sq``: ``||w||^2`` at equilibrium;
    * ``effective_lr``: ``eta kappa / ||w||^2`` (NaN where ``grad_norm_sq`` is needed and missing);
    * ``angular_update``: root-mean-square angle per step (radians per step);
    * ``relaxation_steps``: e-folding time of a small deviation from equilibrium, in steps;
    * ``validity``: object array of :class:`~widelimit.validity.Validity` (:func:`assess_validity`).
    """

    norm_sq: np.ndarray
    effective_lr: np.ndarray
    angular_update: np.ndarray
    relaxation_steps: np.ndarray
    validity: np.ndarray

    def _asdict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def assess_validity(opt: NormOptimizer, relaxation_steps) -> np.ndarray:
    """``BELOW_STEP`` where the relaxation time is shorter than one step; ``TOO_FAST`` where it is shorter
    than the optimiser's memory (``opt.memory_steps``: the averaging over the momentum/second-moment
    buffers behind the closed forms then fails); ``OK`` otherwise. NaN times (missing inputs) are ``OK``."""
    tau = np.asarray(relaxation_steps, dtype=np.float64)
    flags = [Validity.BELOW_STEP if t < 1.0 else Validity.TOO_FAST if t < opt.memory_steps else Validity.OK
             for t in tau.ravel()]
    out = np.empty(tau.size, dtype=object)
    out[:] = flags
    return out.reshape(tau.shape)


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


def _check_common(optimizer, learning_rate, weight_decay, grad_norm_sq, d, shape, momentum, b1, b2, options):
    opt = make_optimizer(optimizer, momentum, b1, b2, **options)
    eta = _arr("learning_rate", learning_rate, positive=True)
    lam = _arr("weight_decay", weight_decay)
    G = _arr("grad_norm_sq", grad_norm_sq)
    if opt.name == "muon":
        if shape is None:
            raise ValueError("shape=(fan_in, fan_out) of the weight matrix is required for optimizer='muon'")
        _upd.muon_shape_scale(opt, shape)   # validates
        if d is not None and np.any(np.asarray(d) != shape[0] * shape[1]):
            raise ValueError(f"d={d!r} disagrees with shape={tuple(shape)!r}")
        d = shape[0] * shape[1]
    dd = _arr("d", d, positive=True, integer=True)
    try:
        np.broadcast_shapes(*[np.shape(a) for a in (eta, lam, G, dd) if a is not None])
    except ValueError:
        shapes = {n: np.shape(a) for n, a in (("learning_rate", eta), ("weight_decay", lam),
                                                ("grad_norm_sq", G), ("d", dd)) if a is not None}
        raise ValueError(f"mismatched array shapes (must broadcast): {shapes}") from None
    if np.any(eta * lam >= 1):
        raise ValueError("learning_rate * weight_decay must be < 1 (the decay factor 1 - eta*lam must stay "
                         f"positive), got max {float(np.max(eta * lam))}")
    if (opt.is_adam or opt.name == "lion") and dd is None:
        _need("d", dd, opt)
    return opt, eta, lam, G, dd


def _coherence(opt, el, dd, shape):
    """``D(eta lam)`` per element (:func:`~widelimit.dynamics.norms_update.coherence_series`)."""
    return _upd.coherence_series(opt, shape, el)


def equilibrium(optimizer: str, learning_rate, weight_decay, *, grad_norm_sq=None, d=None, shape=None,
                momentum: float = 0.0, b1: Optional[float] = None, b2: Optional[float] = None,
                exact: bool = False, **optimizer_options) -> Equilibrium:
    """Equilibrium norm, effective learning rate, angular update and relaxation time (table above).

    Array arguments broadcast (NumPy rules). ``grad_norm_sq`` (``G``, at unit norm) is needed for the
    SGD-family norm, for every effective lr and for everything of 'adam'; ``d`` (parameters in the group)
    for adam/adamw/lion; ``shape=(fan_in, fan_out)`` for 'muon'. Quantities whose inputs are missing come
    back as NaN. ``exact=True`` (only 'sgd') returns the fixed point of the exact discrete map instead:
    ``x*^2 = eta G/(lam (2 - eta lam))``, ``cos(angle) = 1 - eta lam`` and relaxation
    ``-1/ln(2 (1 - eta lam)^2 - 1)``; Lion/Muon are always the exact fixed point of their noise map.
    ``optimizer_options`` (Muon: ``nesterov``, ``consistent_rms``, ``ns_coeffs``, ``ns_steps``,
    ``exact_orthogonalisation``) go to :func:`~widelimit.dynamics.norms_optim.make_optimizer`.
    ``learning_rate * weight_decay >= 1`` raises ``ValueError``; short relaxation times are flagged in
    ``validity`` (:func:`assess_validity`).
    """
    opt, eta, lam, G, dd = _check_common(optimizer, learning_rate, weight_decay, grad_norm_sq, d, shape,
                                         momentum, b1, b2, optimizer_options)
    if exact and opt.name != "sgd":
        raise ValueError(f"exact=True is available for optimizer='sgd' only, got {opt.name!r} (use "
                         f"solve_norm_map for the fixed point of the moment map)")
    S, S2 = opt.response_sum, opt.response_sq
    nan = np.nan
    Gv = G if G is not None else nan
    dv = dd if dd is not None else nan
    with np.errstate(divide="ignore", invalid="ignore"):
        if opt.normalised:
            el = eta * lam
            F = _upd.update_norm_sq(opt, dd, shape)
            D = _coherence(opt, el, dd, shape)
            x = np.where(lam > 0, eta * F * D / (lam * (2.0 - el)), np.inf)
            eff = eta * _upd.linear_gain(opt, dd, shape) / np.sqrt(Gv * x)
            ang = np.sqrt(el * (2.0 - el) / D)
            tau = _upd.relaxation_steps(opt, shape, el)
        elif not opt.is_adam:
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
        else:  # adam (coupled L2)
            x = (eta * np.sqrt(dv * Gv) / (2.0 * lam)) ** (2.0 / 3.0)
            eff = eta * np.sqrt(dv / (Gv * x))
            ang = eta * np.sqrt(dv * S2 / x)
            tau = 2.0 * x / (3.0 * eta ** 2 * dv)
    shp = np.broadcast_shapes(*[np.shape(a) for a in (eta, lam, G, dd) if a is not None])
    out = [np.broadcast_to(np.asarray(v, dtype=np.float64), shp).copy() for v in (x, eff, ang, tau)]
    return Equilibrium(*out, assess_validity(opt, out[3]))


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


def norm_sq_trajectory(optimizer: str, steps, *, learning_rate, weight_decay, norm_sq0, grad_norm_sq=None,
                       d=None, shape=None, momentum: float = 0.0, b1: Optional[float] = None,
                       b2: Optional[float] = None, **optimizer_options) -> np.ndarray:
    """Exact solution ``||w||^2(k)`` of the continuous ODE from any initial ``norm_sq0`` (constant inputs).

    * SGD family: ``u = x^2 = u* + (u0 - u*) exp(-4 eta lam S k)`` with ``u* = eta S G/(2 lam)``;
      for ``lam = 0``: ``u = u0 + 2 eta^2 S^2 G k``.
    * AdamW: ``x = x* + (x0 - x*) exp(-2 eta lam k)``, ``x* = eta d/(2 lam)``; ``lam = 0``: ``x0 + eta^2 d k``.
    * Adam with coupled L2: ``F(s_k) = F(s_0) + eta^2 d k/(2 x*)``, ``s = sqrt(x/x*)``
      (:func:`adam_l2_antiderivative`), solved by bisection; ``lam = 0`` as AdamW.
    * Lion/Muon (the noise map linearised about ``x*``, stationary buffers,
      :mod:`widelimit.dynamics.norms_update`): ``x = x* + (x0 - x*) exp(-k/tau)`` with
      ``tau = relaxation_steps``; ``lam = 0``: ``x0 + eta^2 F D k``.

    All arguments broadcast together (NumPy rules); pass ``steps[:, None]`` to tabulate over groups.
    ``steps`` in optimiser steps; the result in units of ``norm_sq0``.
    """
    opt, eta, lam, G, dd = _check_common(optimizer, learning_rate, weight_decay, grad_norm_sq, d, shape,
                                         momentum, b1, b2, optimizer_options)
    k = _arr("steps", steps)
    x0 = _arr("norm_sq0", norm_sq0, positive=True)
    S = opt.response_sum
    if opt.normalised:
        el = eta * lam
        src = eta ** 2 * _upd.update_norm_sq(opt, dd, shape) * _coherence(opt, el, dd, shape)
        tau = _upd.relaxation_steps(opt, shape, el)
        with np.errstate(divide="ignore", invalid="ignore"):
            xs = src / (el * (2.0 - el))
            fac = np.exp(-k / tau)
            return np.where(lam > 0, xs + (x0 - xs) * fac, x0 + src * k)
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
