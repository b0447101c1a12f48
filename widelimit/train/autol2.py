"""AutoL2: an automatic schedule for the weight decay λ (Lewkowycz & Gur-Ari 2020), as an optax piece.

Conventions (docs/theory.md §1 and §7): penalty ``(λ/2)‖θ‖²``, so the term adds ``λθ`` to the gradient.
The paper's released code adds ``L2·Σθ²`` to the loss (no ½): its coefficient is ``L2 = λ/2``. Every
field below is stated in *our* λ: ``init_weight_decay=0.1`` is the paper's starting value ``L2 = 0.05``
(pass ``init_weight_decay = 2·L2`` for a number read from the reference code).

Two rules (``AutoL2.rule``), both measured every ``measure_every`` (10) steps from the training loss without
the L2 term and the training accuracy at the current parameters (before that step's update; a decay takes
effect in that same update), λ divided by ``factor`` (10):

* ``"widelimit"`` (default). A measurement *improves* when ``loss < best_loss`` or ``accuracy >
  best_accuracy`` (``criterion="neither"``: it fails when it improves neither; ``"either"``: it fails as
  soon as it does not improve both) against running bests updated at every measurement, never reset.
  Decay when the last ``patience`` (2) measurements all failed **and** the physical time since the last
  decay (or the start) is ``≥ refractory/λ`` (``t = Σ η_k``, i.e. ``0.1/(ηλ)`` steps).
* ``"reference"``: the released code exactly. With ``n`` measurements so far (this one included), step
  ``i``, last decay step ``i_last`` (0 at the start) and running ``min_loss``/``max_acc``: decay iff
  ``i > refractory/L2 + i_last`` (a *step count*; ``L2 = λ/2``, so ``2·refractory/λ`` steps) and ``n > 2``
  and (both of the last two losses ``≥ min_loss`` or both of the last two accuracies ``≤ max_acc``). At a
  measurement with ``n ≥ 2`` that does not decay, ``min_loss``/``max_acc`` are updated with the
  *second-to-last* measurement only; they are never reset. ``patience`` and ``criterion`` are unused.

``λ`` never goes below ``min_weight_decay``. Everything is jit/vmap-compatible (``jnp.where``).
Use it as an optax transformation (:func:`autol2`, measurements as extra ``update`` arguments
``train_loss=``, ``train_accuracy=``) or as pure functions on an :class:`AutoL2State`
(:func:`autol2_init`, :func:`autol2_observe`, :func:`autol2_advance`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .regularizers import ScalarOrSchedule, add_scaled_params, as_schedule, resolve_mask

CRITERIA = ("neither", "either")
RULES = ("widelimit", "reference")


class AutoL2State(NamedTuple):
    """State of AutoL2. ``weight_decay`` is the current λ (penalty ``(λ/2)‖θ‖²``).

    ``count``: updates done so far; ``time``: physical time ``Σ η_k`` elapsed;
    ``best_loss``/``best_accuracy``: running min/max (``+inf``/``-inf`` before any);
    ``history_*``: the last ``patience`` measurements, oldest first (``nan``/``False`` when none yet);
    ``n_measurements``, ``n_decays``; ``last_decay_time``/``last_decay_step``: when λ was last divided
    (0 before the first decay: the start counts as a decay for the refractory period).
    """

    count: Any
    time: Any
    weight_decay: Any
    best_loss: Any
    best_accuracy: Any
    history_loss: Any
    history_accuracy: Any
    history_improved: Any
    n_measurements: Any
    n_decays: Any
    last_decay_time: Any
    last_decay_step: Any


@dataclass(frozen=True)
class AutoL2:
    """Hyper-parameters of AutoL2 (paper defaults in our λ convention; see the module docstring).

    ``init_weight_decay``: initial λ; ``factor``: divisor at each decay; ``measure_every``: steps between
    measurements; ``patience``: consecutive failed measurements (rule "widelimit"); ``refractory``: ``c`` of
    the minimum wait between decays (``c/λ`` physical time for "widelimit", ``c/(λ/2)`` steps for
    "reference"); ``criterion``: "neither" | "either" (rule "widelimit"); ``min_weight_decay``: floor;
    ``rule``: "widelimit" | "reference".
    """

    init_weight_decay: float = 0.1
    factor: float = 10.0
    measure_every: int = 10
    patience: int = 2
    refractory: float = 0.1
    criterion: str = "neither"
    min_weight_decay: float = 0.0
    rule: str = "widelimit"

    def __post_init__(self) -> None:
        for name in ("init_weight_decay", "factor", "refractory", "min_weight_decay"):
            v = getattr(self, name)
            if name == "init_weight_decay" and getattr(v, "shape", None) == ():
                continue  # a (possibly traced) JAX/NumPy scalar, e.g. one member of a vmapped grid
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v == v or v < 0 \
                    or v == float("inf"):
                raise ValueError(f"AutoL2.{name} must be a finite number >= 0, got {v!r}")
        if self.factor <= 1:
            raise ValueError(f"AutoL2.factor must be > 1, got {self.factor!r}")
        for name in ("measure_every", "patience"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"AutoL2.{name} must be an int >= 1, got {v!r}")
        if self.criterion not in CRITERIA:
            raise ValueError(f"AutoL2.criterion must be one of {CRITERIA}, got {self.criterion!r}")
        if self.rule not in RULES:
            raise ValueError(f"AutoL2.rule must be one of {RULES}, got {self.rule!r}")
        if self.rule == "reference" and self.patience != 2:
            raise ValueError(f"AutoL2.patience: the reference rule always looks at 2 measurements, got "
                             f"{self.patience!r}")

    def to_dict(self) -> dict:
        return {"kind": "autol2", **{k: getattr(self, k) for k in self.__dataclass_fields__}}


def autol2_init(init_weight_decay=0.1, patience: int = 2, dtype=jnp.float32) -> AutoL2State:
    """Fresh state with ``weight_decay = init_weight_decay`` (may be traced, e.g. under ``vmap``)."""
    f = lambda v: jnp.asarray(v, dtype)  # noqa: E731
    i = lambda v: jnp.asarray(v, jnp.int32)  # noqa: E731
    return AutoL2State(count=i(0), time=f(0.0), weight_decay=f(init_weight_decay), best_loss=f(jnp.inf),
                       best_accuracy=f(-jnp.inf), history_loss=jnp.full((patience,), jnp.nan, dtype),
                       history_accuracy=jnp.full((patience,), jnp.nan, dtype),
                       history_improved=jnp.zeros((patience,), bool), n_measurements=i(0), n_decays=i(0),
                       last_decay_time=f(0.0), last_decay_step=i(0))


def _decayed(state: AutoL2State, decay, hp: AutoL2):
    lam = state.weight_decay
    # reference rule: divide the code's L2 = λ/2 and double it back (exact in binary floating point), so that
    # λ/2 is bit for bit the reference's L2 and its refractory test lands on the same steps
    # (the barrier keeps XLA from turning the division by the constant factor into an inexact multiplication)
    if hp.rule == "reference":
        new = 2 * ((lam / 2) / jax.lax.optimization_barrier(jnp.asarray(hp.factor, lam.dtype)))
    else:
        new = lam / hp.factor
    return jnp.where(decay, jnp.maximum(new, hp.min_weight_decay), lam).astype(lam.dtype)


def autol2_observe(state: AutoL2State, loss, accuracy, hp: AutoL2 = AutoL2()) -> AutoL2State:
    """Record one measurement (training loss without L2, training accuracy) and apply ``hp.rule``."""
    dt = state.weight_decay.dtype
    loss = jnp.asarray(loss, dt)
    accuracy = jnp.asarray(accuracy, dt)
    n_meas = state.n_measurements + 1
    hist_l = jnp.concatenate([state.history_loss[1:], loss[None]])
    hist_a = jnp.concatenate([state.history_accuracy[1:], accuracy[None]])
    lam = state.weight_decay
    if hp.rule == "reference":
        waited = state.count.astype(dt) > hp.refractory / (lam / 2) + state.last_decay_step.astype(dt)
        stalled = (jnp.all(state.best_loss <= hist_l) | jnp.all(state.best_accuracy >= hist_a)) & (n_meas > 2)
        decay = waited & stalled & (lam > hp.min_weight_decay)
        upd = ~decay & (n_meas >= 2)
        best_loss = jnp.where(upd, jnp.minimum(hist_l[0], state.best_loss), state.best_loss)
        best_acc = jnp.where(upd, jnp.maximum(hist_a[0], state.best_accuracy), state.best_accuracy)
        hist_imp = state.history_improved
    else:
        better_loss = loss < state.best_loss
        better_acc = accuracy > state.best_accuracy
        improved = (better_loss | better_acc) if hp.criterion == "neither" else (better_loss & better_acc)
        hist_imp = jnp.concatenate([state.history_improved[1:], improved[None]])
        stalled = (n_meas >= hp.patience) & ~jnp.any(hist_imp)
        waited = (state.time - state.last_decay_time) >= hp.refractory / lam
        decay = stalled & waited & (lam > hp.min_weight_decay)
        best_loss = jnp.where(better_loss, loss, state.best_loss)
        best_acc = jnp.where(better_acc, accuracy, state.best_accuracy)
    return state._replace(
        weight_decay=_decayed(state, decay, hp), best_loss=best_loss, best_accuracy=best_acc,
        history_loss=hist_l, history_accuracy=hist_a, history_improved=hist_imp, n_measurements=n_meas,
        n_decays=state.n_decays + decay.astype(jnp.int32),
        last_decay_time=jnp.where(decay, state.time, state.last_decay_time),
        last_decay_step=jnp.where(decay, state.count, state.last_decay_step))


def autol2_advance(state: AutoL2State, learning_rate) -> AutoL2State:
    """Account for one optimisation step of size ``learning_rate``: ``count += 1``, ``time += η``."""
    return state._replace(count=state.count + 1,
                          time=(state.time + jnp.asarray(learning_rate, state.time.dtype)))


def autol2(hp: AutoL2 = AutoL2(), *, learning_rate: ScalarOrSchedule,
           mask=None) -> optax.GradientTransformationExtraArgs:
    """AutoL2 as an optax transformation: ``updates + λ_k θ`` on the masked parameters.

    ``update(updates, state, params, *, train_loss=None, train_accuracy=None)``: when both measurements are
    given and ``state.count % hp.measure_every == 0`` they are recorded (:func:`autol2_observe`) before
    ``λ_k`` is used; then the physical time advances by ``learning_rate(count)`` (the optimiser's η, float
    or schedule). ``mask``: see :func:`widelimit.train.regularizers.resolve_mask`.
    ``hp.init_weight_decay`` may be traced.
    """
    if not isinstance(hp, AutoL2):
        raise TypeError(f"hp must be an AutoL2, got {type(hp).__name__}")
    lr = as_schedule(learning_rate)

    def init_fn(params):
        leaves = jax.tree_util.tree_leaves(params)
        dtype = leaves[0].dtype if leaves else jnp.float32
        return autol2_init(hp.init_weight_decay, hp.patience, dtype)

    def update_fn(updates, state, params=None, *, train_loss=None, train_accuracy=None, **extra):
        del extra
        if params is None:
            raise ValueError("autol2 needs params: call update(updates, state, params, ...)")
        if (train_loss is None) != (train_accuracy is None):
            raise ValueError("autol2: pass both train_loss and train_accuracy, or neither")
        if train_loss is not None:
            observed = autol2_observe(state, train_loss, train_accuracy, hp)
            due = (state.count % hp.measure_every) == 0
            state = jax.tree_util.tree_map(lambda new, old: jnp.where(due, new, old), observed, state)
        updates = add_scaled_params(updates, params, state.weight_decay, resolve_mask(mask, params))
        return updates, autol2_advance(state, lr(state.count))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


__all__ = ["AutoL2", "AutoL2State", "autol2", "autol2_init", "autol2_observe", "autol2_advance", "CRITERIA",
           "RULES"]
