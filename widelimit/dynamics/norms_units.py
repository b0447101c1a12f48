r"""Per-unit scale invariance and Adam's per-coordinate second moments (docs/theory.md §6).

**Groups.** A weight matrix ``W`` of shape ``(fan_in, fan_out)`` (``x . W``, the project's layers and
optax's default dimension numbers) is scale-invariant

* per *unit* (``group="unit"``) when each output unit is normalised on its own (BatchNorm,
  WeightNorm): the group of unit ``j`` is ``W[:, j]`` (``d = fan_in``, ``fan_out`` groups);
* as a whole (``group="matrix"``) under LayerNorm: one group of ``d = fan_in * fan_out``.

``output_axis`` picks another axis as the unit axis (e.g. 0 for ``(fan_out, fan_in)`` storage).
:func:`unit_layout` maps a shape and group kind to ``(n_units, d)``; :func:`per_unit_equilibrium` gives the
equilibrium of every unit from per-unit hyper-parameters and (optionally) per-unit ``G_j``, with the spread
across units. Each unit follows the closed forms of :mod:`widelimit.dynamics.norms_closed` with its own
``d``, ``eta``, ``lam``, ``G``; Muon orthogonalises the whole matrix, so a unit receives the fraction
``1/n_units`` of ``F = ||u||^2`` (by symmetry of the polar factor; exact for exact orthogonalisation when
``fan_out <= fan_in``) and shares the matrix's coherence ``D``.

**Adam with coupled L2, per coordinate** (:func:`adam_per_coordinate`). The isotropic model
(:mod:`widelimit.dynamics.norms_map`) takes Adam's second moment equal across coordinates. With
heterogeneous gradient noise -- coordinate ``i`` of the unit-norm gradient has RMS ``s_i``, so
``G = sum_i s_i^2`` and ``v_i = s_i^2/x`` at norm ``x`` (scale invariance) -- the coupled L2 term is divided
by ``sqrt(v_i)``: coordinate ``i`` decays at the rate ``2 eta lam sqrt(x)/s_i`` while its random-walk source is
``eta^2`` (``m_i/sqrt(v_i)`` has unit response sum). So, to leading order and with ``lam^2 w_i^2 << v_i``,

    w_i^2 = eta s_i / (2 lam sqrt(x)),    x*^(3/2) = eta sum_i s_i / (2 lam),
    RMS angle = eta sqrt(d (1-b1)/(1+b1) / x*),

i.e. the isotropic form with ``lam -> a lam``, ``a = sqrt(d sum s_i^2)/sum s_i >= 1`` (Cauchy--Schwarz; ``a = 1``
iff all ``s_i`` are equal). Coordinates with small gradients *collapse* (``w_i^2`` proportional to ``s_i``):
the norm concentrates on the noisy coordinates and the isotropic model over-predicts the norm by
``a^(2/3)`` and under-predicts the angle by ``a^(1/3)``. Units are the same with ``i`` over the unit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from ..validity import Validity
from . import norms_update as _upd
from .norms_closed import assess_validity, equilibrium
from .norms_optim import make_optimizer

__all__ = ["GROUP_KINDS", "unit_layout", "Spread", "UnitEquilibrium", "per_unit_equilibrium",
           "units_first", "per_unit_angular_update", "per_unit_grad_norm_sq", "AdamCoordinates",
           "adam_per_coordinate"]

GROUP_KINDS = ("unit", "matrix")


def unit_layout(shape, group: str = "unit", output_axis: int = -1) -> Tuple[int, int]:
    """``(n_units, d)`` for a weight array of ``shape``: ``group='unit'`` gives one group per index of
    ``output_axis`` with ``d`` = product of the other axes; ``group='matrix'`` one group of all entries."""
    try:
        shp = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a tuple of positive ints, got {shape!r}") from None
    if len(shp) < 1 or any(v < 1 for v in shp):
        raise ValueError(f"shape must be a tuple of positive ints, got {shape!r}")
    if group not in GROUP_KINDS:
        raise ValueError(f"group must be one of {GROUP_KINDS}, got {group!r}")
    if not isinstance(output_axis, int) or not -len(shp) <= output_axis < len(shp):
        raise ValueError(f"output_axis={output_axis!r} is out of range for shape {shp}")
    total = int(np.prod(shp))
    if group == "matrix":
        return 1, total
    n = shp[output_axis]
    return n, total // n


@dataclass(frozen=True)
class Spread:
    """Spread of a per-unit quantity across units (same units as the quantity)."""

    mean: float
    std: float
    minimum: float
    maximum: float

    @classmethod
    def of(cls, values) -> "Spread":
        v = np.asarray(values, dtype=np.float64)
        return cls(float(np.mean(v)), float(np.std(v)), float(np.min(v)), float(np.max(v)))


@dataclass(frozen=True)
class UnitEquilibrium:
    """Equilibrium per unit (arrays of shape ``(n_units,)``), docs/theory.md §6.

    ``norm_sq`` (``||w_j||^2``, parameter units squared), ``angular_update`` (rad/step), ``effective_lr``
    (``eta kappa/||w_j||^2``, NaN without ``G_j``), ``relaxation_steps`` (steps), ``validity`` (Validity per
    unit); ``d`` parameters per unit, ``group``, ``shape``; ``spread``: :class:`Spread` of each of the four
    numeric fields across units (NaN-valued when a field is NaN).
    """

    optimizer: str
    shape: Tuple[int, ...]
    group: str
    d: int
    norm_sq: np.ndarray
    angular_update: np.ndarray
    effective_lr: np.ndarray
    relaxation_steps: np.ndarray
    validity: np.ndarray
    spread: dict

    @property
    def n_units(self) -> int:
        return int(self.norm_sq.shape[0])


def _per_unit(name, v, n, positive=False):
    if v is None:
        return None
    if isinstance(v, bool):
        raise TypeError(f"{name} must be a number or array, got bool")
    a = np.asarray(v, dtype=np.float64)
    if a.ndim > 1 or (a.ndim == 1 and a.shape[0] not in (1, n)):
        raise ValueError(f"{name} must be a scalar or one value per unit ({n}), got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0) or (positive and np.any(a <= 0)):
        raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {v!r}")
    return np.broadcast_to(a, (n,)).copy()


def per_unit_equilibrium(optimizer: str, shape, *, learning_rate, weight_decay, group: str = "unit",
                         output_axis: int = -1, grad_norm_sq=None, momentum: float = 0.0,
                         b1: Optional[float] = None, b2: Optional[float] = None,
                         **optimizer_options) -> UnitEquilibrium:
    """Equilibrium of every scale-invariant unit of a weight array (module docstring).

    ``learning_rate``, ``weight_decay`` and ``grad_norm_sq`` (``G_j`` at unit norm; needed by the SGD
    family's norm, 'adam', and every effective lr) are scalars or one value per unit. For 'muon' the
    shape must be 2-D ``(fan_in, fan_out)``.
    """
    n, d = unit_layout(shape, group, output_axis)
    opt = make_optimizer(optimizer, momentum, b1, b2, **optimizer_options)
    eta = _per_unit("learning_rate", learning_rate, n, positive=True)
    lam = _per_unit("weight_decay", weight_decay, n)
    G = _per_unit("grad_norm_sq", grad_norm_sq, n)
    if np.any(eta * lam >= 1):
        raise ValueError(f"learning_rate * weight_decay must be < 1, got max {float(np.max(eta * lam))}")
    shp = tuple(int(v) for v in shape)
    if opt.name == "muon":
        if len(shp) != 2:
            raise ValueError(f"optimizer='muon' needs a 2-D (fan_in, fan_out) shape, got {shp}")
        el = eta * lam
        F = _upd.update_norm_sq(opt, shape=shp) / n
        D = _upd.coherence_series(opt, shp, el)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(lam > 0, eta * F * D / (lam * (2.0 - el)), np.inf)
            Gv = G if G is not None else np.full(n, np.nan)
            eff = eta * _upd.linear_gain(opt, shape=shp) / np.sqrt(n) / np.sqrt(Gv * x)
            ang = np.sqrt(el * (2.0 - el) / D)
            tau = -1.0 / (2.0 * np.log1p(-el))
        val = assess_validity(opt, tau)
    else:
        eq = equilibrium(opt, eta, lam, grad_norm_sq=G, d=d if (opt.is_adam or opt.name == "lion") else None)
        x, eff, ang, tau, val = eq.norm_sq, eq.effective_lr, eq.angular_update, eq.relaxation_steps, eq.validity
    arrays = dict(norm_sq=np.asarray(x, float), angular_update=np.asarray(ang, float),
                  effective_lr=np.asarray(eff, float), relaxation_steps=np.asarray(tau, float))
    spread = {k: Spread.of(v) for k, v in arrays.items()}
    return UnitEquilibrium(opt.name, shp, group, d, validity=np.asarray(val, dtype=object), spread=spread,
                           **arrays)


def units_first(w, group: str = "unit", output_axis: int = -1) -> np.ndarray:
    """Reshape a weight array to ``(n_units, d)`` (unit ``j`` in row ``j``) for the group kind."""
    a = np.asarray(w, dtype=np.float64)
    n, d = unit_layout(a.shape, group, output_axis)
    if group == "matrix":
        return a.reshape(1, -1)
    return np.moveaxis(a, output_axis, 0).reshape(n, d)


def per_unit_angular_update(w_prev, w_next, group: str = "unit", output_axis: int = -1) -> np.ndarray:
    """Angle (rad) between ``w_prev`` and ``w_next`` per unit, shape ``(n_units,)``."""
    from .norms import angular_update
    return angular_update(units_first(w_prev, group, output_axis), units_first(w_next, group, output_axis))


def per_unit_grad_norm_sq(grad, w, group: str = "unit", output_axis: int = -1) -> np.ndarray:
    """``G_j = ||g_j||^2 ||w_j||^2`` per unit (the unit-norm squared gradient), shape ``(n_units,)``."""
    from .norms import unit_grad_norm_sq
    return unit_grad_norm_sq(units_first(grad, group, output_axis), units_first(w, group, output_axis))


@dataclass(frozen=True)
class AdamCoordinates:
    """Per-coordinate equilibrium of Adam with coupled L2 (module docstring); all for one group.

    ``norm_sq``: ``x*`` (parameter units^2); ``coordinate_sq``: ``w_i^2`` per coordinate; ``angular_update``:
    RMS rad/step; ``anisotropy``: ``a = sqrt(d sum s^2)/sum s`` (1 = isotropic); ``isotropic_norm_sq`` and
    ``isotropic_angular_update``: the isotropic model with the same ``G = sum s_i^2``; ``relaxation_steps``:
    ``2 x*/(3 eta^2 d)`` (steps); ``validity``.
    """

    norm_sq: float
    coordinate_sq: np.ndarray
    angular_update: float
    anisotropy: float
    isotropic_norm_sq: float
    isotropic_angular_update: float
    relaxation_steps: float
    validity: Validity


def adam_per_coordinate(learning_rate: float, weight_decay: float, noise_rms, *, b1: float = 0.9,
                        b2: float = 0.999) -> AdamCoordinates:
    """Adam with coupled L2 on one scale-invariant group with per-coordinate gradient RMS ``noise_rms``
    (``s_i`` at unit norm, 1-D, length ``d``): ``x*^(3/2) = eta sum s_i/(2 lam)`` (module docstring)."""
    opt = make_optimizer("adam", 0.0, b1, b2)
    s = np.asarray(noise_rms, dtype=np.float64)
    if s.ndim != 1 or s.size < 1 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"noise_rms must be a 1-D array of positive finite values, got shape {s.shape}")
    eta, lam = float(learning_rate), float(weight_decay)
    if not (eta > 0 and lam > 0 and eta * lam < 1):
        raise ValueError(f"need learning_rate > 0, weight_decay > 0 and their product < 1, got {eta}, {lam}")
    d = s.size
    x = (eta * s.sum() / (2.0 * lam)) ** (2.0 / 3.0)
    iso = equilibrium(opt, eta, lam, grad_norm_sq=float(np.sum(s * s)), d=d)
    ang = eta * np.sqrt(d * opt.response_sq / x)
    tau = 2.0 * x / (3.0 * eta ** 2 * d)
    return AdamCoordinates(float(x), eta * s / (2.0 * lam * np.sqrt(x)), float(ang),
                           float(np.sqrt(d * np.sum(s * s)) / s.sum()), float(iso.norm_sq),
                           float(iso.angular_update), float(tau), assess_validity(opt, tau).item())
