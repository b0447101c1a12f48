"""AutoL2: an automatic schedule for the L2 coefficient (Lewkowycz & Gur-Ari 2020), as an optax piece.

Conventions (ours, used throughout widelimit): penalty ``(lam/2) ||theta||^2``, so the L2 term adds
``lam * theta`` to the gradient and gradient descent reads ``theta <- theta - eta (grad l + lam theta)``.
Conversion: the paper's released code adds ``L2 * sum(theta^2)`` to the loss (no 1/2), so its coefficient
is ``L2 = lam / 2`` and ``lam = 2 * L2``. The defaults below are stated in *our* ``lam``: ``init_lam=0.1``
(the paper's starting value; the code's ``L2 = 0.05``). If you have a number from the paper's code,
pass ``init_lam = 2 * L2``.

The rule (THEORY.md section 3), with our exact reading of it:

* **Measurements.** Every ``measure_every`` (10) steps the caller supplies the training loss *without* the
  L2 term and the training accuracy at the current parameters (before that step's update). A measurement
  *improves* when ``loss < best_loss`` or ``accuracy > best_accuracy`` (strict, against the running bests of
  all earlier measurements); it *fails* otherwise, i.e. when it improves neither
  (``criterion="neither"``, the default). ``criterion="either"`` is the stricter alternative reading, in
  which a measurement fails as soon as it does not improve one of the two. The running bests are updated
  with every measurement and are never reset.
* **Decay.** At a measurement, ``lam <- lam / factor`` (factor 10) when the last ``patience`` (2)
  measurements, this one included, all failed, **and** the physical time since the last decay (or since the
  start) is at least ``refractory / lam_current`` (refractory = 0.1). "The last two measurements" is taken
  literally: measurements made before a decay still count for the next decision (the refractory period,
  not a reset, is what prevents back-to-back decays).
* **Units of the refractory period: physical time** ``t = sum_k eta_k`` (``eta * steps`` at constant
  learning rate), i.e. ``0.1 / (eta * lam)`` steps. Reason: with L2 every relevant time scale is set by
  ``lam`` in physical time — the NTK decays like ``exp(-2(L-1) lam t)``, scale-invariant weight norms relax at
  rate ``~4 lam`` per unit t, and the best test error is reached at ``t* ~ c / lam`` — so after a decay the
  network needs a physical time ``~ 1/lam`` to respond, whatever the learning rate. The coefficient 0.1 is
  applied to ``lam`` in *our* convention; if one reads the paper's ``0.1/L2`` in their convention it
  equals ``0.2 / lam`` here (``refractory=0.2``).
* The measurement at step ``k`` is processed before the update of step ``k``, so a decay takes effect in
  that same update. ``lam`` never goes below ``min_lam``.

Everything is jit/vmap-compatible (``jnp.where``; no Python control flow on traced values).
Two ways to use it:

1. as an optax transformation, :func:`autol2` — it adds ``lam * theta`` (masked) to the updates and takes
   the measurements as extra arguments ``train_loss=..., train_accuracy=...`` of ``update`` (it uses
   them only at steps ``k`` with ``k % measure_every == 0``); place it before the optimiser for coupled L2
   (``optax.chain(autol2(...), optax.sgd(eta))``) or between ``scale_by_adam`` and the learning rate for
   decoupled weight decay (AdamW style);
2. as pure functions on an :class:`AutoL2State`: :func:`autol2_init`, :func:`autol2_observe` (one
   measurement) and :func:`autol2_advance` (one step of physical time), for any training loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .optim import ScalarOrSchedule, add_scaled_params, as_schedule, resolve_mask

CRITERIA = ("neither", "either")


class AutoL2State(NamedTuple):
    """State of AutoL2. ``lam`` is the current coefficient (penalty ``(lam/2)||theta||^2``).

    ``count``: updates done so far; ``time``: physical time ``sum eta_k`` elapsed;
    ``best_loss``/``best_accuracy``: running bests (``+inf``/``-inf`` before any measurement);
    ``history_*``: the last ``patience`` measurements, oldest first (``nan``/``False`` when none yet);
    ``n_measurements``, ``n_decays``; ``last_decay_time``/``last_decay_step``: when ``lam`` was last divided
    (0 before the first decay, i.e. the start counts as a decay for the refractory period).
    """

    count: Any
    time: Any
    lam: Any
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
    """Hyper-parameters of AutoL2 (paper defaults; see the module docstring for units and conventions).

    ``init_lam`` initial coefficient (our convention); ``factor`` divisor at each decay; ``measure_every``
    steps between measurements; ``patience`` consecutive failed measurements required; ``refractory``
    coefficient ``c`` of the minimum physical time ``c / lam`` between decays; ``criterion`` "neither" or
    "either"; ``min_lam`` floor.
    """

    init_lam: float = 0.1
    factor: float = 10.0
    measure_every: int = 10
    patience: int = 2
    refractory: float = 0.1
    criterion: str = "neither"
    min_lam: float = 0.0

    def __post_init__(self) -> None:
        for name in ("init_lam", "factor", "refractory", "min_lam"):
            v = getattr(self, name)
            if name == "init_lam" and getattr(v, "shape", None) == ():
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

    def to_dict(self) -> dict:
        return {"kind": "autol2", **{k: getattr(self, k) for k in self.__dataclass_fields__}}


def autol2_init(init_lam=0.1, patience: int = 2, dtype=jnp.float32) -> AutoL2State:
    """Fresh state with ``lam = init_lam`` (may be a traced scalar, e.g. under ``vmap``)."""
    f = lambda v: jnp.asarray(v, dtype)  # noqa: E731
    i = lambda v: jnp.asarray(v, jnp.int32)  # noqa: E731
    return AutoL2State(count=i(0), time=f(0.0), lam=f(init_lam), best_loss=f(jnp.inf),
                       best_accuracy=f(-jnp.inf), history_loss=jnp.full((patience,), jnp.nan, dtype),
                       history_accuracy=jnp.full((patience,), jnp.nan, dtype),
                       history_improved=jnp.zeros((patience,), bool), n_measurements=i(0), n_decays=i(0),
                       last_decay_time=f(0.0), last_decay_step=i(0))


def autol2_observe(state: AutoL2State, loss, accuracy, hp: AutoL2 = AutoL2()) -> AutoL2State:
    """Record one measurement (training loss without L2, training accuracy) and apply the decay rule.

    Decay: ``lam <- max(lam / factor, min_lam)`` iff the last ``patience`` measurements (this one included)
    all failed to improve (see ``hp.criterion``) and ``time - last_decay_time >= refractory / lam``.
    """
    dt = state.lam.dtype
    loss = jnp.asarray(loss, dt)
    accuracy = jnp.asarray(accuracy, dt)
    better_loss = loss < state.best_loss
    better_acc = accuracy > state.best_accuracy
    improved = (better_loss | better_acc) if hp.criterion == "neither" else (better_loss & better_acc)
    n_meas = state.n_measurements + 1
    hist_imp = jnp.concatenate([state.history_improved[1:], improved[None]])
    enough = n_meas >= hp.patience
    stalled = enough & ~jnp.any(hist_imp)
    waited = (state.time - state.last_decay_time) >= hp.refractory / state.lam
    decay = stalled & waited & (state.lam > hp.min_lam)
    new_lam = jnp.where(decay, jnp.maximum(state.lam / hp.factor, hp.min_lam), state.lam)
    return state._replace(
        lam=new_lam.astype(dt),
        best_loss=jnp.where(better_loss, loss, state.best_loss),
        best_accuracy=jnp.where(better_acc, accuracy, state.best_accuracy),
        history_loss=jnp.concatenate([state.history_loss[1:], loss[None]]),
        history_accuracy=jnp.concatenate([state.history_accuracy[1:], accuracy[None]]),
        history_improved=hist_imp,
        n_measurements=n_meas,
        n_decays=state.n_decays + decay.astype(jnp.int32),
        last_decay_time=jnp.where(decay, state.time, state.last_decay_time),
        last_decay_step=jnp.where(decay, state.count, state.last_decay_step),
    )


def autol2_advance(state: AutoL2State, learning_rate) -> AutoL2State:
    """Account for one optimisation step of size ``learning_rate``: ``count += 1``, ``time += eta``."""
    return state._replace(count=state.count + 1,
                          time=(state.time + jnp.asarray(learning_rate, state.time.dtype)))


def autol2(init_lam=0.1, *, learning_rate: ScalarOrSchedule, factor: float = 10.0, measure_every: int = 10,
           patience: int = 2, refractory: float = 0.1, criterion: str = "neither", min_lam: float = 0.0,
           mask=None) -> optax.GradientTransformationExtraArgs:
    """AutoL2 as an optax transformation: ``updates + lam_k * theta`` on the masked parameters.

    ``update(updates, state, params, *, train_loss=None, train_accuracy=None)``: when both measurements are
    given and ``state.count % measure_every == 0`` they are recorded (:func:`autol2_observe`) before
    ``lam_k`` is used; then the physical time advances by ``learning_rate(count)``. ``learning_rate``
    (float or schedule ``step -> eta``) must be the optimiser's, so that the refractory period
    ``refractory / lam`` is measured in physical time ``t = sum eta_k``. ``mask``: ``None`` (all
    parameters), a pytree of bools, a callable ``params -> pytree of bools`` or glob patterns
    ``"layer/array"`` (see :func:`widelimit.train.optim.resolve_mask`). ``init_lam`` may be traced.
    """
    hp = AutoL2(init_lam=1.0, factor=factor, measure_every=measure_every, patience=patience,
                refractory=refractory, criterion=criterion, min_lam=min_lam)  # validates the rest
    if not callable(init_lam):
        _ = jnp.asarray(init_lam)  # fail early on non-numeric input
    lr = as_schedule(learning_rate)

    def init_fn(params):
        leaves = jax.tree_util.tree_leaves(params)
        dtype = leaves[0].dtype if leaves else jnp.float32
        return autol2_init(init_lam, patience, dtype)

    def update_fn(updates, state, params=None, *, train_loss=None, train_accuracy=None, **extra):
        del extra
        if params is None:
            raise ValueError("autol2 needs params: call update(updates, state, params, ...)")
        if (train_loss is None) != (train_accuracy is None):
            raise ValueError("autol2: pass both train_loss and train_accuracy, or neither")
        if train_loss is not None:
            observed = autol2_observe(state, train_loss, train_accuracy, hp)
            due = (state.count % measure_every) == 0
            state = jax.tree_util.tree_map(lambda new, old: jnp.where(due, new, old), observed, state)
        updates = add_scaled_params(updates, params, state.lam, resolve_mask(mask, params))
        return updates, autol2_advance(state, lr(state.count))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


__all__ = ["AutoL2", "AutoL2State", "autol2", "autol2_init", "autol2_observe", "autol2_advance"]
