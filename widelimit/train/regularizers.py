"""L2 / weight-decay pieces shared by the optimisers (:mod:`.optim`) and AutoL2 (:mod:`.autol2`).

Convention (docs/theory.md §1): weight decay λ with penalty ``(λ/2)‖θ_S‖²`` on a chosen set S of parameter
arrays, i.e. ``λθ`` added to the update on S. Placed before the optimiser's scaling it is a coupled L2
penalty; placed after the scaling and before the learning rate it is decoupled weight decay
(``θ ← θ − η(update + λθ)``, the optax/PyTorch convention: the decay is multiplied by η).

* :func:`as_schedule` — a constant (possibly traced) or a schedule ``step -> value``;
* masks — :func:`mask_from_patterns` (globs over ``"layer/array"`` paths), :func:`resolve_mask`;
* :func:`add_scaled_params` — ``updates + c·θ`` on a mask;
* :func:`add_weight_decay` — the optax transformation with a constant or scheduled λ, state
  :class:`WeightDecayState`;
* :func:`current_weight_decay` — the λ the next update will use, read from any optimiser state built by
  :func:`widelimit.train.make_optimizer` with ``optax.tree_utils.tree_get`` (field ``weight_decay`` of
  :class:`WeightDecayState` or :class:`~widelimit.train.autol2.AutoL2State`).
"""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu

ScalarOrSchedule = Union[float, Callable[[Any], Any]]


def as_schedule(value: ScalarOrSchedule) -> Callable[[Any], Any]:
    """A constant (possibly a traced scalar) or a schedule, as a function of the step count."""
    if callable(value):
        return value
    if isinstance(value, bool) or value is None:
        raise TypeError(f"expected a number or a schedule (callable step -> value), got {value!r}")
    return lambda count: value


def mask_from_patterns(patterns: Sequence[str]) -> Callable[[Any], Any]:
    """Mask function selecting arrays whose path ``"layer/array"`` matches one of the glob ``patterns``.

    Example: ``["*/W"]`` = all weights (no biases/gains); ``["hidden*/*"]`` = every hidden layer;
    ``["readout/W"]`` = readout weights only. Paths of nested dicts are joined with ``/``.
    """
    if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
        raise TypeError(f"patterns must be a list of glob strings like '*/W', got {patterns!r}")
    pats = list(patterns)

    def fn(params):
        def leaf(path, _):
            name = "/".join(_key_name(k) for k in path)
            return any(fnmatch.fnmatchcase(name, p) for p in pats)
        return jax.tree_util.tree_map_with_path(leaf, params)
    return fn


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def resolve_mask(mask, params):
    """``None`` -> all True; a callable is called on ``params``; glob patterns via :func:`mask_from_patterns`;
    a pytree of bools is returned as is (also when it is callable, like the mask of an Equinox module)."""
    if mask is None:
        return jax.tree_util.tree_map(lambda _: True, params)
    if callable(mask) and jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(mask)):
        return mask(params)
    if isinstance(mask, (list, tuple)) and all(isinstance(p, str) for p in mask):
        return mask_from_patterns(mask)(params)
    return mask


def add_scaled_params(updates, params, scale, mask):
    """``updates + scale * params`` where ``mask`` is True (static bools or boolean arrays)."""
    def add(u, p, m):
        if isinstance(m, (bool, np.bool_)):  # static mask: no work at all on unmasked arrays
            return u + jnp.asarray(scale, u.dtype) * p if m else u
        return jnp.where(m, u + jnp.asarray(scale, u.dtype) * p, u)
    return jax.tree_util.tree_map(add, updates, params, mask)


class WeightDecayState(NamedTuple):
    """``count``: updates done; ``weight_decay``: the coefficient λ the next update will use."""

    count: Any
    weight_decay: Any


def add_weight_decay(weight_decay: ScalarOrSchedule, mask=None) -> optax.GradientTransformation:
    """Add ``λ_k θ`` to the updates on the masked arrays (gradient of ``(λ/2)‖θ‖²``).

    ``weight_decay``: float (possibly traced) or schedule ``step -> λ``. Unlike
    ``optax.add_decayed_weights`` it keeps the coefficient in its state, so that
    :func:`current_weight_decay` can report it.
    """
    sched = as_schedule(weight_decay)

    def init_fn(params):
        leaves = jax.tree_util.tree_leaves(params)
        dtype = leaves[0].dtype if leaves else jnp.float32
        return WeightDecayState(jnp.asarray(0, jnp.int32),
                                jnp.asarray(sched(jnp.asarray(0, jnp.int32)), dtype))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("add_weight_decay needs params: call update(updates, state, params)")
        lam_k = jnp.asarray(sched(state.count), state.weight_decay.dtype)
        updates = add_scaled_params(updates, params, lam_k, resolve_mask(mask, params))
        nxt = state.count + 1
        return updates, WeightDecayState(nxt, jnp.asarray(sched(nxt), state.weight_decay.dtype))

    return optax.GradientTransformation(init_fn, update_fn)


def current_weight_decay(opt_state) -> Any:
    """The coefficient λ the next update will use (``optax.tree_utils.tree_get(opt_state, "weight_decay")``)."""
    lam = otu.tree_get(opt_state, "weight_decay")
    if lam is None:
        raise ValueError("opt_state contains no weight-decay state (was it built by make_optimizer?)")
    return lam


__all__ = ["ScalarOrSchedule", "as_schedule", "mask_from_patterns", "resolve_mask", "add_scaled_params",
           "WeightDecayState", "add_weight_decay", "current_weight_decay"]
