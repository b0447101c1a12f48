"""JSON-describable schedules ``step -> value`` for learning rates and L2 coefficients.

A schedule is a number (constant) or a dict with a ``"kind"``:

* ``{"kind": "constant", "value": v}``
* ``{"kind": "piecewise", "boundaries": [s1, s2, ...], "values": [v0, v1, v2, ...]}``:
  ``v0`` for ``step < s1``, ``v1`` for ``s1 <= step < s2``, ... (``len(values) = len(boundaries) + 1``)
* ``{"kind": "exponential", "init": v, "decay_rate": r, "transition_steps": n}``: ``v * r ** (step / n)``
* ``{"kind": "cosine", "init": v, "decay_steps": n, "alpha": a}``:
  ``v * ((1 - a) * (1 + cos(pi * min(step, n) / n)) / 2 + a)``

``step`` counts the updates already done (0 for the first update).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Union

import jax.numpy as jnp

SCHEDULE_KINDS = ("constant", "piecewise", "exponential", "cosine")
_FIELDS = {"constant": {"value"}, "piecewise": {"boundaries", "values"},
           "exponential": {"init", "decay_rate", "transition_steps"},
           "cosine": {"init", "decay_steps", "alpha"}}


def _num(field: str, v, *, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{field} must be a number, got {v!r}")
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"{field} must be a finite number {'> 0' if positive else '>= 0'}, got {v!r}")
    return float(v)


def check_schedule(spec: Union[float, dict], field: str, *, positive: bool = False) -> Union[float, dict]:
    """Validate a schedule description; returns it normalised (floats, sorted keys). ``field`` names it
    in error messages; ``positive`` requires every value > 0 (learning rates)."""
    if not isinstance(spec, dict):
        return _num(field, spec, positive=positive)
    kind = spec.get("kind")
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"{field}['kind'] must be one of {SCHEDULE_KINDS}, got {kind!r}")
    extra = set(spec) - _FIELDS[kind] - {"kind"}
    missing = _FIELDS[kind] - set(spec)
    if extra or missing:
        raise ValueError(f"{field}: a {kind!r} schedule takes keys {sorted(_FIELDS[kind])}; "
                         f"unknown {sorted(extra)}, missing {sorted(missing)}")
    out: dict = {"kind": kind}
    if kind == "constant":
        out["value"] = _num(f"{field}['value']", spec["value"], positive=positive)
    elif kind == "piecewise":
        b, v = spec["boundaries"], spec["values"]
        if not isinstance(b, (list, tuple)) or not isinstance(v, (list, tuple)) or len(v) != len(b) + 1:
            raise ValueError(f"{field}: 'values' must be a list one longer than 'boundaries', got "
                             f"{v!r} and {b!r}")
        bs = []
        for s in b:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                raise ValueError(f"{field}['boundaries'] must be non-negative int steps, got {s!r}")
            bs.append(s)
        if bs != sorted(bs):
            raise ValueError(f"{field}['boundaries'] must be increasing, got {bs}")
        out["boundaries"] = bs
        out["values"] = [_num(f"{field}['values']", x, positive=positive) for x in v]
    elif kind == "exponential":
        out["init"] = _num(f"{field}['init']", spec["init"], positive=positive)
        out["decay_rate"] = _num(f"{field}['decay_rate']", spec["decay_rate"], positive=True)
        out["transition_steps"] = _num(f"{field}['transition_steps']", spec["transition_steps"], positive=True)
    else:
        out["init"] = _num(f"{field}['init']", spec["init"], positive=positive)
        out["decay_steps"] = _num(f"{field}['decay_steps']", spec["decay_steps"], positive=True)
        out["alpha"] = _num(f"{field}['alpha']", spec["alpha"])
        if positive and out["alpha"] == 0:
            raise ValueError(f"{field}['alpha'] must be > 0 here (the value must stay positive)")
    return out


def make_schedule(spec: Union[float, dict]) -> Union[float, Callable[[Any], Any]]:
    """A float stays a float; a dict becomes a jnp function of the step count (validate first)."""
    if not isinstance(spec, dict):
        return float(spec)
    kind = spec["kind"]
    if kind == "constant":
        return float(spec["value"])
    if kind == "piecewise":
        bounds = jnp.asarray(spec["boundaries"], jnp.int32)
        values = jnp.asarray(spec["values"])
        return lambda step: values[jnp.searchsorted(bounds, step, side="right")]
    if kind == "exponential":
        v, r, n = spec["init"], spec["decay_rate"], spec["transition_steps"]
        return lambda step: v * r ** (step / n)
    v, n, a = spec["init"], spec["decay_steps"], spec["alpha"]
    return lambda step: v * ((1 - a) * 0.5 * (1 + jnp.cos(jnp.pi * jnp.minimum(step, n) / n)) + a)


__all__ = ["SCHEDULE_KINDS", "check_schedule", "make_schedule"]
