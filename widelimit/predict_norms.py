"""Prediction-table rows for scale-invariant weight groups (THEORY.md section 4).

For each optimiser and grid of hyper-parameters: the equilibrium angular update per step, effective
learning rate, equilibrium ``||w||^2``, and the relaxation time to equilibrium in steps, epochs and physical
time ``t = lr * steps`` (project convention). The formulas, their assumptions and derivations are in
:mod:`widelimit.dynamics.norms_closed` and ``derivations/scale_invariant.md``; in short (leading order in
``lr*lam``, uncorrelated gradients):

* Angular update (root-mean-square angle per step): SGD ``sqrt(2 lr lam)``; heavy ball ``sqrt(2 lr lam/(1+mu))``; Nesterov ``sqrt(2 lr lam (1+2mu-2mu^3)/(1+mu))``;
  AdamW ``sqrt(2 lr lam (1-b1)/(1+b1))``; Adam + L2 ``sqrt((1-b1)/(1+b1)) (2 lam)^(1/3) lr^(2/3) (d^2/G)^(1/6)``.
* Relaxation (e-folding of a small deviation): ``(1-mu)/(4 lr lam)`` steps for the SGD family,
  ``1/(2 lr lam)`` for AdamW, ``2 x*/(3 lr^2 d)`` for Adam + L2.

Every numeric argument may be an array; all broadcast together (NumPy rules) and one row is returned per
element of the broadcast grid, in C order.
"""
from __future__ import annotations

import math
from typing import Iterable, List, Optional, Sequence

import numpy as np

from .dynamics.norms_closed import equilibrium
from .dynamics.norms_optim import make_optimizer

__all__ = ["norm_predictions", "norm_prediction_table"]


def _as_array(name: str, v, default=np.nan) -> np.ndarray:
    if v is None:
        return np.asarray(default, dtype=np.float64)
    if isinstance(v, bool):
        raise TypeError(f"{name} must be a number or array, got bool")
    try:
        return np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number or array of numbers, got {type(v).__name__}") from None


def norm_predictions(optimizer: str, lr, weight_decay, *, grad_norm_sq=None, d=None, momentum=0.0,
                     beta1=0.9, beta2=0.999, steps_per_epoch=None, exact: bool = False) -> List[dict]:
    """Rows (list of dicts) of equilibrium predictions for one optimiser over a broadcast grid.

    Args:
      optimizer: 'sgd', 'momentum' (heavy ball), 'nesterov', 'adam_l2' or 'adamw'.
      lr, weight_decay: learning rate and ``lam`` (penalty ``(lam/2)||w||^2``; decoupled for 'adamw').
      grad_norm_sq: ``G = ||grad l(w_hat)||^2`` at unit norm (needed for norms and effective lr of the SGD
        family and for everything of 'adam_l2'; NaN where missing).
      d: parameters in the group (Adam family).
      momentum, beta1, beta2: optimiser constants (arrays allowed).
      steps_per_epoch: to express relaxation times in epochs (NaN where missing).
      exact: for 'sgd', use the exact discrete-map fixed point (see ``equilibrium``).

    Each row has the inputs (``optimizer, lr, weight_decay, momentum, beta1, beta2, d, grad_norm_sq,
    steps_per_epoch``) and ``lr_times_wd``, ``angular_update`` (rad/step), ``angular_update_deg``,
    ``effective_lr``, ``norm_sq``, ``norm``, ``relaxation_steps``, ``relaxation_epochs`` and
    ``relaxation_time`` (physical, ``lr * relaxation_steps``).
    """
    opt0 = make_optimizer(optimizer)  # validates the name early
    arrs = dict(lr=_as_array("lr", lr), weight_decay=_as_array("weight_decay", weight_decay),
                grad_norm_sq=_as_array("grad_norm_sq", grad_norm_sq),
                d=_as_array("d", d), momentum=_as_array("momentum", momentum),
                beta1=_as_array("beta1", beta1), beta2=_as_array("beta2", beta2),
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
    n = flat["lr"].size
    out: List[Optional[dict]] = [None] * n
    # equilibrium() takes scalar optimiser constants: group the grid by them
    keys = np.stack([flat["momentum"], flat["beta1"], flat["beta2"]], axis=1)
    for key in np.unique(keys, axis=0):
        idx = np.nonzero(np.all(keys == key, axis=1))[0]
        mu, b1, b2 = (float(v) for v in key)
        opt = make_optimizer(opt0.name, mu, b1, b2)
        sel = lambda name: (None if np.all(np.isnan(flat[name][idx])) else flat[name][idx])
        G = sel("grad_norm_sq")
        dd = sel("d")
        eq = equilibrium(opt, flat["lr"][idx], flat["weight_decay"][idx], grad_norm_sq=G, d=dd,
                         exact=exact)
        n_idx = len(idx)
        fields = {k: np.broadcast_to(np.asarray(v, dtype=float), (n_idx,)) for k, v in eq._asdict().items()}
        for j, i in enumerate(idx):
            eta, lam = float(flat["lr"][i]), float(flat["weight_decay"][i])
            tau = float(fields["relaxation_steps"][j])
            x = float(fields["norm_sq"][j])
            row = dict(optimizer=opt.name, lr=eta, weight_decay=lam,
                       momentum=mu if opt.name in ("momentum", "nesterov") else None,
                       beta1=b1 if opt.is_adam else None, beta2=b2 if opt.is_adam else None,
                       d=None if math.isnan(flat["d"][i]) else int(flat["d"][i]),
                       grad_norm_sq=None if math.isnan(flat["grad_norm_sq"][i]) else float(flat["grad_norm_sq"][i]),
                       steps_per_epoch=None if math.isnan(spe[i]) else float(spe[i]),
                       lr_times_wd=eta * lam,
                       angular_update=float(fields["angular_update"][j]),
                       angular_update_deg=math.degrees(float(fields["angular_update"][j])),
                       effective_lr=float(fields["effective_lr"][j]),
                       norm_sq=x, norm=math.sqrt(x) if x == x else float("nan"),
                       relaxation_steps=tau,
                       relaxation_epochs=float(tau / spe[i]) if not math.isnan(spe[i]) else float("nan"),
                       relaxation_time=eta * tau)
            out[i] = row
    return out  # type: ignore[return-value]


def norm_prediction_table(optimizers: Iterable[str] | str, lr, weight_decay, **kwargs) -> List[dict]:
    """:func:`norm_predictions` for several optimisers, rows concatenated in the order given.

    ``kwargs`` are passed to each call (``momentum`` is ignored by the optimisers without momentum).
    """
    names: Sequence[str] = [optimizers] if isinstance(optimizers, str) else list(optimizers)
    rows: List[dict] = []
    for name in names:
        kw = dict(kwargs)
        if make_optimizer(name).name not in ("momentum", "nesterov"):
            kw.pop("momentum", None)
        rows.extend(norm_predictions(name, lr, weight_decay, **kw))
    return rows
