"""Hyper-parameter schedules for the scale-invariant norm solvers.

A *schedule* is anything that gives a value per optimiser step ``k = 0, 1, ..., n_steps - 1``
(the step index optax passes to its schedules: step ``k`` is the ``(k+1)``-th update):

* a number (constant);
* an array of shape ``(n_steps,)`` (one value per step, shared by all groups), ``(n_steps, n_groups)``
  (per step and per group) or ``(1, n_groups)`` (per-group constants);
* a callable ``step -> value`` such as an optax schedule. It is first called once with the whole
  integer array ``arange(n_steps)`` (optax schedules are elementwise ``jax.numpy`` functions); if that
  fails or returns the wrong shape it is called step by step. It may return a scalar or a
  per-group vector ``(n_groups,)``.

The helpers below return vectorised callables (NumPy in, NumPy out) and are valid optax schedules too.
Units: learning rates in the optimiser's own units (``w <- w - lr * update``); weight decays ``lam`` in
the project convention (penalty ``(lam/2)||w||^2``, so SGD multiplies ``w`` by ``1 - lr*lam`` per step).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence, Union

import numpy as np

Schedule = Union[float, int, np.ndarray, Callable]

__all__ = ["Schedule", "constant", "step_decay", "cosine_decay", "warmup", "lambda_drops",
           "as_series"]


def _check_pos(name: str, v: float, strict: bool = True) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {type(v).__name__} ({v!r})")
    v = float(v)
    if not math.isfinite(v) or v < 0 or (strict and v == 0):
        raise ValueError(f"{name} must be {'> 0' if strict else '>= 0'} and finite, got {v}")
    return v


def _check_steps(name: str, steps: Sequence[int]) -> np.ndarray:
    arr = np.asarray(list(steps), dtype=float)
    if arr.ndim != 1 or np.any(arr < 0) or np.any(arr != np.round(arr)):
        raise ValueError(f"{name} must be a sequence of non-negative integer steps, got {steps!r}")
    if np.any(np.diff(arr) <= 0):
        raise ValueError(f"{name} must be strictly increasing, got {steps!r}")
    return arr.astype(np.int64)


def constant(value: float) -> Callable:
    """``value`` at every step."""
    v = _check_pos("value", value, strict=False)
    return lambda step: np.full(np.shape(step), v, dtype=np.float64)


def step_decay(init_value: float, boundaries: Sequence[int], factor: float = 0.1) -> Callable:
    """Piecewise constant: ``init_value * factor**j`` where ``j`` = number of boundaries ``<= step``.

    Example: ``step_decay(0.1, [3000, 6000])`` is 0.1, then 0.01 from step 3000, 0.001 from 6000.
    """
    v0 = _check_pos("init_value", init_value, strict=False)
    f = _check_pos("factor", factor)
    b = _check_steps("boundaries", boundaries)

    def sched(step):
        s = np.asarray(step)
        j = np.searchsorted(b, s, side="right")
        return (v0 * f ** j).astype(np.float64)
    return sched


def lambda_drops(init_value: float, drop_steps: Sequence[int], factor: float = 10.0) -> Callable:
    """AutoL2-style weight-decay drops: ``lam`` is divided by ``factor`` at each of ``drop_steps``.

    (AutoL2 chooses the drop steps adaptively from the training curves; to predict the norm dynamics of
    a finished run, pass the steps at which it dropped ``lam``.)
    """
    f = _check_pos("factor", factor)
    return step_decay(init_value, drop_steps, 1.0 / f)


def cosine_decay(init_value: float, decay_steps: int, alpha: float = 0.0) -> Callable:
    """``init_value * ((1 - alpha) * (1 + cos(pi * min(step, decay_steps) / decay_steps)) / 2 + alpha)``
    (optax's ``cosine_decay_schedule``)."""
    v0 = _check_pos("init_value", init_value, strict=False)
    if isinstance(decay_steps, bool) or not isinstance(decay_steps, (int, np.integer)) or decay_steps < 1:
        raise ValueError(f"decay_steps must be a positive int, got {decay_steps!r}")
    a = _check_pos("alpha", alpha, strict=False)

    def sched(step):
        s = np.minimum(np.asarray(step, dtype=np.float64), decay_steps)
        return v0 * ((1.0 - a) * 0.5 * (1.0 + np.cos(np.pi * s / decay_steps)) + a)
    return sched


def warmup(peak_value: float, warmup_steps: int, after: Schedule | None = None,
           init_value: float = 0.0) -> Callable:
    """Linear warm-up from ``init_value`` (at step 0) to ``peak_value`` (at step ``warmup_steps``), then
    ``after(step - warmup_steps)`` (a callable schedule) or the constant ``peak_value``."""
    p = _check_pos("peak_value", peak_value, strict=False)
    v0 = _check_pos("init_value", init_value, strict=False)
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, (int, np.integer)) or warmup_steps < 1:
        raise ValueError(f"warmup_steps must be a positive int, got {warmup_steps!r}")
    if after is not None and not callable(after):
        raise TypeError(f"after must be a callable schedule or None, got {type(after).__name__}")

    def sched(step):
        s = np.asarray(step, dtype=np.float64)
        ramp = v0 + (p - v0) * np.minimum(s, warmup_steps) / warmup_steps
        if after is None:
            return ramp
        rest = np.asarray(after(np.maximum(s - warmup_steps, 0).astype(np.int64)), dtype=np.float64)
        return np.where(s < warmup_steps, ramp, rest)
    return sched


def as_series(value: Schedule, name: str, n_steps: int, n_groups: int) -> np.ndarray:
    """Evaluate a schedule on steps ``0..n_steps-1``: float64 array of shape ``(n_steps, n_groups)``.

    Raises ``ValueError`` naming ``name`` if the shape cannot be read as one of the accepted forms
    (see the module docstring) or a value is not finite.
    """
    if callable(value):
        steps = np.arange(n_steps)
        out = None
        try:
            out = np.asarray(value(steps), dtype=np.float64)
        except Exception:  # not vectorised: fall back to one call per step
            out = None
        if out is None or out.shape not in ((n_steps,), (n_steps, n_groups)):
            vals = [np.asarray(value(int(k)), dtype=np.float64) for k in range(n_steps)]
            shapes = {v.shape for v in vals}
            if not shapes <= {(), (1,), (n_groups,)}:
                raise ValueError(f"{name}: a callable schedule must return a scalar or an array of shape "
                                 f"(n_groups,)=({n_groups},) per step, got shapes {sorted(shapes)}")
            out = np.stack([np.broadcast_to(v.reshape(-1) if v.shape == (1,) else v, (n_groups,))
                            for v in vals]) if n_steps else np.zeros((0, n_groups))
        arr = out
    else:
        if isinstance(value, bool):
            raise TypeError(f"{name} must be a number, array or callable, got bool")
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a number, array or callable schedule, "
                            f"got {type(value).__name__}") from None
    if arr.ndim == 0:
        arr = np.full((n_steps, n_groups), float(arr))
    elif arr.ndim == 1:
        if arr.shape[0] != n_steps:
            raise ValueError(f"{name}: a 1-D array is read as one value per step and needs length "
                             f"n_steps={n_steps}, got length {arr.shape[0]}; for per-group constants pass "
                             f"shape (1, n_groups)=(1, {n_groups})")
        arr = np.repeat(arr[:, None], n_groups, axis=1)
    elif arr.ndim == 2:
        if arr.shape not in ((n_steps, n_groups), (1, n_groups), (n_steps, 1), (1, 1)):
            raise ValueError(f"{name}: expected shape (n_steps, n_groups)=({n_steps}, {n_groups}) or "
                             f"(1, n_groups)=(1, {n_groups}), got {arr.shape}")
        arr = np.broadcast_to(arr, (n_steps, n_groups)).copy()
    else:
        raise ValueError(f"{name}: expected a scalar, (n_steps,), (n_steps, n_groups) or (1, n_groups) "
                         f"array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite at every step")
    return arr
