"""Input checking and the result object shared by the scale-invariant norm solvers (docs/theory.md §6)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .norms_optim import NormOptimizer, make_optimizer
from .norms_schedules import Schedule, as_series

__all__ = ["NormDynamics", "prepare_inputs", "finite_check"]


@dataclass(frozen=True)
class NormDynamics:
    """Predicted norm dynamics of ``n_groups`` scale-invariant groups over ``n_steps`` optimiser steps.

    Step ``k`` maps ``w_k`` to ``w_{k+1}`` with hyper-parameters ``learning_rate[k]``, ``weight_decay[k]`` and the
    unit-norm gradient statistic ``grad_norm_sq[k] = G_k = ||grad l(w_k/||w_k||)||^2``. Arrays:

    * ``norm_sq``: ``||w_k||^2``, shape ``(n_steps + 1, n_groups)`` (row 0 is the initial value);
    * ``effective_lr``: ``learning_rate_k * kappa_k / ||w_k||^2``, shape ``(n_steps, n_groups)``: to first order the
      direction moves as ``w_hat <- w_hat - effective_lr * grad l(w_hat)`` (before momentum filtering).
      ``kappa = 1`` for SGD-type optimisers; for Adam ``kappa = 1/(sqrt(V_hat/d) + eps)`` is the
      preconditioner scale of the isotropic update-norm model (see :mod:`widelimit.dynamics.norms_map`); for
      Lion/Muon the linear gain of the normalised update, ``gain * sqrt(||w||^2/G)``
      (:func:`widelimit.dynamics.norms_update.linear_gain`);
    * ``angular_update``: expected angle (radians) between ``w_k`` and ``w_{k+1}``, ``(n_steps, n_groups)``
      (for SGD driven by the measured per-step ``G_k`` it is that step's angle exactly; as an average over
      steps compare it with the root-mean-square measured angle);
    * ``update_norm_sq``: expected ``||w_{k+1} - w_k||^2``, ``(n_steps, n_groups)``;
    * ``precond``: ``kappa_k``; ``learning_rate``, ``weight_decay``, ``grad_norm_sq``: the evaluated schedules.

    Units: steps index rows; ``norm_sq`` and ``update_norm_sq`` in parameter units squared;
    ``angular_update`` in rad/step; ``time`` in ``t = eta * steps`` (docs/theory.md §1).

    ``method`` is ``'map'`` (discrete moment map) or ``'ode'`` (continuous slow-manifold ODE).
    """

    optimizer: NormOptimizer
    method: str
    norm_sq: np.ndarray
    effective_lr: np.ndarray
    angular_update: np.ndarray
    update_norm_sq: np.ndarray
    precond: np.ndarray
    learning_rate: np.ndarray
    weight_decay: np.ndarray
    grad_norm_sq: np.ndarray
    d: Optional[np.ndarray]

    @property
    def n_steps(self) -> int:
        return self.norm_sq.shape[0] - 1

    @property
    def n_groups(self) -> int:
        return self.norm_sq.shape[1]

    @property
    def steps(self) -> np.ndarray:
        """Step indices ``0..n_steps`` of the rows of ``norm_sq``."""
        return np.arange(self.n_steps + 1)

    @property
    def norm(self) -> np.ndarray:
        """``||w_k||``, shape ``(n_steps + 1, n_groups)``."""
        return np.sqrt(self.norm_sq)

    @property
    def time(self) -> np.ndarray:
        """Physical time ``t_k = sum_{j<k} eta_j`` (docs/theory.md §1: ``t = eta * steps``), per group."""
        return np.vstack([np.zeros((1, self.n_groups)), np.cumsum(self.learning_rate, axis=0)])

    def at(self, step) -> np.ndarray:
        """``||w||^2`` at (possibly fractional) ``step`` by linear interpolation; shape ``step.shape + (n_groups,)``."""
        s = np.asarray(step, dtype=np.float64)
        if np.any(s < 0) or np.any(s > self.n_steps):
            raise ValueError(f"step must lie in [0, n_steps={self.n_steps}], got {step!r}")
        k = np.arange(self.n_steps + 1)
        return np.stack([np.interp(s, k, self.norm_sq[:, g]) for g in range(self.n_groups)], axis=-1)


def _group_count(name: str, value, sizes: dict) -> None:
    if callable(value) or value is None:
        return
    arr = np.asarray(value)
    if arr.ndim == 2 and arr.shape[1] != 1:
        sizes[name] = arr.shape[1]


def prepare_inputs(optimizer, learning_rate: Schedule, weight_decay: Schedule, n_steps: int,
                   grad_norm_sq: Schedule, norm_sq0, norm0, d, momentum: float, b1, b2, eps: float,
                   shape=None, options=None) -> dict:
    """Validate the solver inputs (before any work) and evaluate the schedules.

    Returns a dict with ``opt`` (NormOptimizer), ``x0`` (n_groups,), ``d`` (n_groups,) float or None,
    and ``lr``, ``lam``, ``G`` arrays of shape ``(n_steps, n_groups)``. ``grad_norm_sq`` may be ``None`` for
    Lion/Muon (their norms do not depend on it; effective learning rates are then NaN).
    """
    opt = make_optimizer(optimizer, momentum, b1, b2, eps, **(options or {}))
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive int, got {n_steps!r}")
    n_steps = int(n_steps)
    if (norm_sq0 is None) == (norm0 is None):
        raise ValueError("give exactly one of norm_sq0 (initial ||w||^2) and norm0 (initial ||w||)")
    name0 = "norm_sq0" if norm0 is None else "norm0"
    try:
        x0 = np.asarray(norm_sq0 if norm0 is None else norm0, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name0} must be a positive number or 1-D array of them") from None
    if x0.ndim > 1 or not np.all(np.isfinite(x0)) or np.any(x0 <= 0):
        raise ValueError(f"{name0} must be a positive finite number or 1-D array (one per group), got {x0!r}")
    if norm0 is not None:
        x0 = x0 ** 2
    sizes: dict = {}
    if x0.ndim == 1:
        sizes[name0] = x0.shape[0]
    if opt.name == "muon":
        from .norms_update import muon_shape_scale
        if shape is None:
            raise ValueError("shape=(fan_in, fan_out) of the weight matrix is required for optimizer='muon'")
        muon_shape_scale(opt, shape)
        if d is not None and np.any(np.asarray(d) != shape[0] * shape[1]):
            raise ValueError(f"d={d!r} disagrees with shape={tuple(shape)!r}")
        d = shape[0] * shape[1]
    if grad_norm_sq is None and not opt.normalised:
        raise ValueError(f"grad_norm_sq (G = ||grad l(w_hat)||^2 at unit norm) is required for "
                         f"optimizer={opt.name!r}")
    d_arr = None
    if d is not None:
        d_arr = np.asarray(d)
        if d_arr.ndim > 1 or d_arr.dtype.kind not in "iuf" or np.any(d_arr < 1) or \
                np.any(d_arr != np.round(d_arr)):
            raise ValueError(f"d (group size: number of parameters) must be a positive int or 1-D array of "
                             f"them, got {d!r}")
        d_arr = d_arr.astype(np.float64)
        if d_arr.ndim == 1:
            sizes["d"] = d_arr.shape[0]
    elif opt.is_adam or opt.name == "lion":
        raise ValueError(f"d (group size) is required for optimizer={opt.name!r}: its per-coordinate "
                         f"normalisation makes the update norm scale with sqrt(d)")
    for nm, v in (("learning_rate", learning_rate), ("weight_decay", weight_decay), ("grad_norm_sq", grad_norm_sq)):
        _group_count(nm, v, sizes)
    distinct = set(sizes.values())
    if len(distinct) > 1:
        desc = ", ".join(f"{k} has {v}" for k, v in sizes.items())
        raise ValueError(f"mismatched group arrays: {desc} groups")
    n_groups = distinct.pop() if distinct else 1
    x0 = np.broadcast_to(x0, (n_groups,)).astype(np.float64)
    if d_arr is not None:
        d_arr = np.broadcast_to(d_arr, (n_groups,)).astype(np.float64)
    lr_s = as_series(learning_rate, "learning_rate", n_steps, n_groups)
    lam_s = as_series(weight_decay, "weight_decay", n_steps, n_groups)
    G_s = (np.full((n_steps, n_groups), np.nan) if grad_norm_sq is None
           else as_series(grad_norm_sq, "grad_norm_sq", n_steps, n_groups))
    if np.any(lr_s <= 0):
        raise ValueError(f"learning_rate must be > 0 at every step, got min {lr_s.min()}")
    if np.any(lam_s < 0):
        raise ValueError(f"weight_decay must be >= 0 at every step, got min {lam_s.min()}")
    if np.any(lr_s * lam_s >= 1):
        raise ValueError("learning_rate * weight_decay must be < 1 at every step (the decay factor 1 - lr*lam must "
                         f"stay positive), got max {float((lr_s * lam_s).max())}")
    if np.any(G_s < 0):
        raise ValueError(f"grad_norm_sq (G = ||grad at unit norm||^2) must be >= 0, got min {G_s.min()}")
    return dict(opt=opt, x0=x0, d=d_arr, lr=lr_s, lam=lam_s, G=G_s, n_steps=n_steps, n_groups=n_groups,
                shape=None if shape is None else (int(shape[0]), int(shape[1])))


def finite_check(arr: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(arr)):
        raise FloatingPointError(f"{what} became non-finite; check that learning_rate*weight_decay is small and "
                                 f"grad_norm_sq is finite")

