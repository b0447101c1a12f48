"""Optimisers with L2 / weight decay, built from optax pieces.

Conventions: penalty ``(lam/2) ||theta_S||^2`` on a chosen set S of parameter arrays (all by default),
i.e. ``lam * theta`` added to the gradient on S. Learning rate ``eta`` and ``lam`` may be constants or
schedules ``step -> value`` (``step`` = number of updates already done). Physical time ``t = sum_k eta_k``
(``eta * steps`` at constant rate); gradient flow is ``eta -> 0`` at fixed t.

``make_optimizer(name, learning_rate, l2=..., l2_mask=...)``, with ``g = grad l`` (loss without L2):

* ``"gd"`` / ``"sgd"``: ``theta <- theta - eta (g + lam theta)`` (full batch or minibatch is the loop's
  business; the update is the same).
* ``"momentum"``: heavy ball ``v <- mu v + (g + lam theta)``, ``theta <- theta - eta v``
  (``nesterov=True``: ``theta <- theta - eta (mu v + g + lam theta)``); L2 is coupled (inside the momentum).
* ``"adam"``: Adam with *coupled* L2, ``theta <- theta - eta Adam(g + lam theta)``.
* ``"adamw"``: AdamW with *decoupled* weight decay, ``theta <- theta - eta (Adam(g) + lam theta)``
  (optax/PyTorch convention: the decay is multiplied by ``eta``).

``l2`` may be a float, a schedule, or an :class:`~widelimit.train.autol2.AutoL2` (then ``lam`` follows
the AutoL2 rule and ``update`` takes ``train_loss=``/``train_accuracy=`` extra arguments).
"""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

ScalarOrSchedule = Union[float, Callable[[Any], Any]]
OPTIMIZERS = ("gd", "sgd", "momentum", "adam", "adamw")


def as_schedule(value: ScalarOrSchedule) -> Callable[[Any], Any]:
    """A constant (possibly a traced scalar) or a schedule, as a function of the step count."""
    if callable(value):
        return value
    if isinstance(value, bool) or value is None:
        raise TypeError(f"expected a number or a schedule (callable step -> value), got {value!r}")
    return lambda count: value


# ------------------------------------------------------------------------------------------------
# parameter masks
# ------------------------------------------------------------------------------------------------
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
    a pytree of bools is returned as is."""
    if mask is None:
        return jax.tree_util.tree_map(lambda _: True, params)
    if callable(mask):
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


# ------------------------------------------------------------------------------------------------
# L2 / weight decay with a constant or scheduled coefficient
# ------------------------------------------------------------------------------------------------
class L2State(NamedTuple):
    """``count``: updates done; ``lam``: the coefficient the next update will use."""

    count: Any
    lam: Any


def l2_regularization(lam: ScalarOrSchedule, mask=None) -> optax.GradientTransformation:
    """Add ``lam_k * theta`` to the updates on the masked arrays (gradient of ``(lam/2)||theta||^2``).

    Before the optimiser it is a coupled L2 penalty; after ``scale_by_adam`` and before the learning
    rate it is decoupled weight decay. ``lam``: float (possibly traced) or schedule ``step -> lam``.
    """
    sched = as_schedule(lam)

    def init_fn(params):
        leaves = jax.tree_util.tree_leaves(params)
        dtype = leaves[0].dtype if leaves else jnp.float32
        return L2State(jnp.asarray(0, jnp.int32), jnp.asarray(sched(jnp.asarray(0, jnp.int32)), dtype))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("l2_regularization needs params: call update(updates, state, params)")
        lam_k = jnp.asarray(sched(state.count), state.lam.dtype)
        updates = add_scaled_params(updates, params, lam_k, resolve_mask(mask, params))
        nxt = state.count + 1
        return updates, L2State(nxt, jnp.asarray(sched(nxt), state.lam.dtype))

    return optax.GradientTransformation(init_fn, update_fn)


def current_l2(opt_state) -> Any:
    """The coefficient ``lam`` the next update will use, found in an optimiser state built here."""
    from .autol2 import AutoL2State

    found = []

    def walk(s):
        if isinstance(s, (L2State, AutoL2State)):
            found.append(s.lam)
        elif isinstance(s, (tuple, list)):
            for c in s:
                walk(c)
    walk(opt_state)
    if not found:
        raise ValueError("opt_state contains no L2 state (was it built by make_optimizer?)")
    return found[0]


# ------------------------------------------------------------------------------------------------
# optimisers
# ------------------------------------------------------------------------------------------------
def make_optimizer(name: str, learning_rate: ScalarOrSchedule, *, l2=0.0, l2_mask=None,
                   momentum: float = 0.9, nesterov: bool = False, b1: float = 0.9, b2: float = 0.999,
                   eps: float = 1e-8) -> optax.GradientTransformationExtraArgs:
    """Optimiser ``name`` (one of ``OPTIMIZERS``) with L2/weight decay ``l2`` on ``l2_mask``.

    See the module docstring for the exact update rules. ``learning_rate`` and a numeric ``l2`` may be
    traced scalars (so ensembles can vmap over them) or schedules ``step -> value``.
    """
    from .autol2 import AutoL2, autol2

    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer name must be one of {OPTIMIZERS}, got {name!r}")
    if isinstance(l2, AutoL2):
        decay = autol2(l2.init_lam, learning_rate=learning_rate, factor=l2.factor,
                       measure_every=l2.measure_every, patience=l2.patience, refractory=l2.refractory,
                       criterion=l2.criterion, min_lam=l2.min_lam, mask=l2_mask)
    else:
        decay = l2_regularization(l2, l2_mask)
    lr = optax.scale_by_learning_rate(learning_rate)
    if name in ("gd", "sgd"):
        return optax.chain(decay, lr)
    if name == "momentum":
        return optax.chain(decay, optax.trace(decay=momentum, nesterov=nesterov), lr)
    adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
    if name == "adam":
        return optax.chain(decay, adam, lr)
    return optax.chain(adam, decay, lr)


__all__ = ["OPTIMIZERS", "make_optimizer", "l2_regularization", "L2State", "current_l2", "as_schedule",
           "mask_from_patterns", "resolve_mask", "add_scaled_params"]
