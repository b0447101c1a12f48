"""Prediction-table rows for scale-invariant weight groups (docs/theory.md §6).

For each optimiser and grid of hyper-parameters: the equilibrium angular update per step, effective
learning rate, equilibrium ``||w||^2``, the relaxation time to equilibrium in steps, epochs and physical
time ``t = eta * steps`` (docs/theory.md §1), and a :class:`~widelimit.validity.Validity` flag. The formulas,
their assumptions and derivations are in :mod:`widelimit.dynamics.norms_closed`,
:mod:`widelimit.dynamics.norms_update` and ``derivations/scale_invariant.md``; in short (noise-dominated
gradients):

* Angular update (RMS angle per step): SGD ``sqrt(2 eta lam)``; heavy ball ``sqrt(2 eta lam/(1+mu))``;
  Nesterov ``sqrt(2 eta lam (1+2mu-2mu^3)/(1+mu))``; AdamW ``sqrt(2 eta lam (1-b1)/(1+b1))``;
  Adam with coupled L2 ``sqrt((1-b1)/(1+b1)) (2 lam)^(1/3) eta^(2/3) (d^2/G)^(1/6)``;
  Lion/Muon ``sqrt(eta lam (2 - eta lam)/D)`` with the update coherence ``D``.
* Relaxation (e-folding of a small deviation): ``(1-mu)/(4 eta lam)`` steps for the SGD family,
  ``1/(2 eta lam)`` for AdamW, ``2 x*/(3 eta^2 d)`` for Adam with coupled L2, ``-1/(2 ln(1 - eta lam))`` for
  Lion/Muon.

Every numeric argument may be an array; all broadcast together (NumPy rules) and one row is returned per
element of the broadcast grid, in C order. :data:`ROW_UNITS` gives the unit of every row field.
"""
from __future__ import annotations

import math
from typing import Iterable, List, Optional, Sequence

import numpy as np

from .dynamics.norms_closed import equilibrium
from .dynamics.norms_optim import make_optimizer

__all__ = ["norm_predictions", "norm_prediction_table", "ROW_UNITS"]

ROW_UNITS = {
    "optimizer": "name (docs/theory.md §1)", "learning_rate": "η (optimiser units)",
    "weight_decay": "λ (per unit of η·steps)", "momentum": "1", "b1": "1", "b2": "1",
    "d": "parameters", "shape": "(fan_in, fan_out)", "grad_norm_sq": "||∇ℓ(ŵ)||² at unit norm",
    "steps_per_epoch": "steps/epoch", "learning_rate_times_weight_decay": "1 (ηλ per step)",
    "angular_update": "rad/step", "angular_update_deg": "deg/step",
    "effective_lr": "η·κ/||w||² (per step)", "norm_sq": "||w||² (parameter units²)",
    "norm": "||w|| (parameter units)", "relaxation_steps": "steps", "relaxation_epochs": "epochs",
    "relaxation_time": "t = η·steps", "validity": "Validity",
}


def _as_array(name: str, v, default=np.nan) -> np.ndarray:
    if v is None:
        return np.asarray(default, dtype=np.float64)
    if isinstance(v, bool):
        raise TypeError(f"{name} must be a number or array, got bool")
    try:
        return np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or array of numbers, got {type(v).__name__}") from None


def _muon_shape(shape, d):
    """``shape``, or a square ``(sqrt d, sqrt d)`` when only a perfect-square ``d`` is given."""
    if shape is not None:
        return tuple(int(v) for v in shape)
    dd = np.unique(np.asarray(d, dtype=np.float64)) if d is not None else np.array([])
    if dd.size == 1 and dd[0] > 0 and math.isqrt(int(dd[0])) ** 2 == int(dd[0]):
        r = math.isqrt(int(dd[0]))
        return (r, r)
    raise ValueError("shape=(fan_in, fan_out) of the weight matrix is required for optimizer='muon' "
                     "(a single perfect-square d is read as a square matrix)")


def norm_predictions(optimizer: str, learning_rate, weight_decay, *, grad_norm_sq=None, d=None, shape=None,
                     momentum=0.0, b1=None, b2=None, steps_per_epoch=None, exact: bool = False,
                     **optimizer_options) -> List[dict]:
    """Rows (list of dicts) of equilibrium predictions for one optimiser over a broadcast grid.

    Args:
      optimizer: one of 'gd', 'sgd', 'momentum', 'nesterov', 'adam', 'adamw', 'lion', 'muon'.
      learning_rate, weight_decay: ``eta`` and ``lam`` (coupled L2 for gd/sgd/momentum/nesterov/adam,
        decoupled for adamw/lion/muon, docs/theory.md §1).
      grad_norm_sq: ``G = ||grad l(w_hat)||^2`` at unit norm (needed for norms and effective lr of the SGD
        family, every effective lr, and everything of 'adam'; NaN where missing).
      d: parameters in the group (adam, adamw, lion); shape: ``(fan_in, fan_out)`` for 'muon' (a single
        perfect-square ``d`` without ``shape`` is read as a square matrix, recorded in the row).
      momentum, b1, b2: optimiser constants (arrays allowed; ``None`` = optax's default per optimiser).
      steps_per_epoch: to express relaxation times in epochs (NaN where missing).
      exact: for 'sgd', use the exact discrete-map fixed point (see ``equilibrium``).
      optimizer_options: Muon's options (``nesterov``, ``consistent_rms``, ...).

    Each row has the inputs and ``learning_rate_times_weight_decay``, ``angular_update``,
    ``angular_update_deg``, ``effective_lr``, ``norm_sq``, ``norm``, ``relaxation_steps``,
    ``relaxation_epochs``, ``relaxation_time`` and ``validity`` (a :class:`~widelimit.validity.Validity`);
    units in :data:`ROW_UNITS`. ``learning_rate * weight_decay >= 1`` raises ``ValueError``.
    """
    opt0 = make_optimizer(optimizer)  # validates the name early
    if opt0.name == "muon":
        shape = _muon_shape(shape, d)
        d = shape[0] * shape[1]
    defaults = make_optimizer(opt0.name)
    arrs = dict(learning_rate=_as_array("learning_rate", learning_rate),
                weight_decay=_as_array("weight_decay", weight_decay),
                grad_norm_sq=_as_array("grad_norm_sq", grad_norm_sq), d=_as_array("d", d),
                momentum=_as_array("momentum", momentum), b1=_as_array("b1", b1, defaults.b1),
                b2=_as_array("b2", b2, defaults.b2),
                steps_per_epoch=_as_array("steps_per_epoch", steps_per_epoch))
    try:
        grid = np.broadcast_arrays(*arrs.values())
    except ValueError:
        shapes = {k: v.shape for k, v in arrs.items()}
        raise ValueError(f"mismatched array shapes (must broadcast): {shapes}") from None
    flat = {k: g.ravel() for k, g in zip(arrs, grid)}
    spe = flat["steps_per_epoch"]
    if np.any(np.isfinite(spe) & (spe <= 0)):
        raise ValueError(f"steps_per_epoch must be > 0, got {steps_per_epoch!r}")
    n = flat["learning_rate"].size
    out: List[Optional[dict]] = [None] * n
    # equilibrium() takes scalar optimiser constants: group the grid by them
    keys = np.stack([flat["momentum"], flat["b1"], flat["b2"]], axis=1)
    for key in np.unique(keys, axis=0):
        idx = np.nonzero(np.all(keys == key, axis=1))[0]
        mu, k1, k2 = (float(v) for v in key)
        opt = make_optimizer(opt0.name, mu, k1, k2, **optimizer_options)
        sel = lambda name: (None if np.all(np.isnan(flat[name][idx])) else flat[name][idx])
        eq = equilibrium(opt, flat["learning_rate"][idx], flat["weight_decay"][idx],
                         grad_norm_sq=sel("grad_norm_sq"), d=None if opt.name == "muon" else sel("d"),
                         shape=shape if opt.name == "muon" else None, exact=exact)
        m = len(idx)
        fields = {k: np.broadcast_to(np.asarray(v, dtype=object if k == "validity" else float), (m,))
                  for k, v in eq._asdict().items()}
        for j, i in enumerate(idx):
            eta, lam = float(flat["learning_rate"][i]), float(flat["weight_decay"][i])
            tau = float(fields["relaxation_steps"][j])
            x = float(fields["norm_sq"][j])
            ang = float(fields["angular_update"][j])
            out[i] = dict(
                optimizer=opt.name, learning_rate=eta, weight_decay=lam,
                momentum=mu if opt.name in ("momentum", "nesterov") else None,
                b1=k1 if (opt.is_adam or opt.normalised) else None,
                b2=k2 if (opt.is_adam or opt.name == "lion") else None,
                d=None if math.isnan(flat["d"][i]) else int(flat["d"][i]),
                shape=shape if opt.name == "muon" else None,
                grad_norm_sq=None if math.isnan(flat["grad_norm_sq"][i]) else float(flat["grad_norm_sq"][i]),
                steps_per_epoch=None if math.isnan(spe[i]) else float(spe[i]),
                learning_rate_times_weight_decay=eta * lam,
                angular_update=ang, angular_update_deg=math.degrees(ang),
                effective_lr=float(fields["effective_lr"][j]),
                norm_sq=x, norm=math.sqrt(x) if x == x else float("nan"),
                relaxation_steps=tau,
                relaxation_epochs=float(tau / spe[i]) if not math.isnan(spe[i]) else float("nan"),
                relaxation_time=eta * tau, validity=fields["validity"][j])
    return out  # type: ignore[return-value]


def norm_prediction_table(optimizers: Iterable[str] | str, learning_rate, weight_decay, **kwargs) -> List[dict]:
    """:func:`norm_predictions` for several optimisers, rows concatenated in the order given.

    ``kwargs`` are passed to each call (``momentum`` is dropped for the optimisers without momentum,
    ``shape`` for all but 'muon', and Muon's options for the others).
    """
    names: Sequence[str] = [optimizers] if isinstance(optimizers, str) else list(optimizers)
    muon_only = ("shape", "nesterov", "consistent_rms", "ns_coeffs", "ns_steps", "exact_orthogonalisation")
    rows: List[dict] = []
    for name in names:
        kw = dict(kwargs)
        canon = make_optimizer(name).name
        if canon not in ("momentum", "nesterov"):
            kw.pop("momentum", None)
        if canon != "muon":
            for k in muon_only:
                kw.pop(k, None)
        rows.extend(norm_predictions(name, learning_rate, weight_decay, **kw))
    return rows
