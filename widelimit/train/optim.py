"""Optimisers with weight decay, built from optax pieces (names as in docs/theory.md §1).

``make_optimizer(name, learning_rate, weight_decay=..., weight_decay_mask=..., momentum, b1, b2, eps)``,
with ``g = ∇ℓ`` (loss without the L2 term), λ = ``weight_decay`` (penalty ``(λ/2)‖θ_S‖²`` on the masked
arrays S), η = ``learning_rate`` (constants, traced scalars or schedules ``step -> value``):

* ``"gd"`` / ``"sgd"``: ``θ ← θ − η(g + λθ)`` (full batch or minibatch is the loop's business).
* ``"momentum"``: heavy ball ``v ← μv + (g + λθ)``, ``θ ← θ − ηv`` (``optax.trace``; coupled L2).
* ``"nesterov"``: ``v ← μv + (g + λθ)``, ``θ ← θ − η(μv + g + λθ)`` (``optax.trace(nesterov=True)``).
* ``"adam"``: Adam with *coupled* L2, ``θ ← θ − η·Adam(g + λθ)``.
* ``"adamw"``: AdamW, decoupled: ``θ ← θ − η(Adam(g) + λθ)`` (as ``optax.adamw``).
* ``"lion"``: Lion, decoupled: ``θ ← θ − η(sign(β1 m + (1−β1) g) + λθ)``, ``m ← β2 m + (1−β2) g``
  (as ``optax.lion(b1, b2, weight_decay=λ)``; optax's default ``b2 = 0.99``).
* ``"muon"``: ``optax.contrib.muon`` with decoupled weight decay on every masked array:
  ``θ ← θ − η(u + λθ)``. optax's Muon orthogonalises (Newton–Schulz, ``beta = momentum``, default 0.95,
  Nesterov) the update of **2-D arrays only** — Dense weights ``(fan_in, fan_out)`` — and updates every
  other array (biases, gains, conv filters of rank 3/4) with Adam (``b1``, ``b2``, ``eps``), all at the
  same η. The update direction ``u`` is optax's with its own decay switched off; ours is applied after it.

``weight_decay`` may also be an :class:`~widelimit.train.autol2.AutoL2` (then λ follows the AutoL2 rule and
``update`` takes ``train_loss=``/``train_accuracy=`` extra arguments). The coefficient in effect is
:func:`~widelimit.train.regularizers.current_weight_decay`.
"""
from __future__ import annotations

from typing import Optional

import optax

from .autol2 import AutoL2, autol2
from .regularizers import ScalarOrSchedule, add_weight_decay

OPTIMIZERS = ("gd", "sgd", "momentum", "nesterov", "adam", "adamw", "lion", "muon")
#: options each optimiser takes, with their defaults (RunConfig fills these in)
OPTIMIZER_DEFAULTS = {"gd": {}, "sgd": {}, "momentum": {"momentum": 0.9}, "nesterov": {"momentum": 0.9},
                      "adam": {"b1": 0.9, "b2": 0.999, "eps": 1e-8},
                      "adamw": {"b1": 0.9, "b2": 0.999, "eps": 1e-8},
                      "lion": {"b1": 0.9, "b2": 0.99},
                      "muon": {"momentum": 0.95, "b1": 0.9, "b2": 0.999, "eps": 1e-8}}
DECOUPLED = ("adamw", "lion", "muon")


def make_optimizer(name: str, learning_rate: ScalarOrSchedule, *, weight_decay=0.0, weight_decay_mask=None,
                   momentum: Optional[float] = None, b1: Optional[float] = None, b2: Optional[float] = None,
                   eps: Optional[float] = None) -> optax.GradientTransformationExtraArgs:
    """Optimiser ``name`` (one of :data:`OPTIMIZERS`) with weight decay on ``weight_decay_mask``.

    See the module docstring for the exact update rules. Options left ``None`` take the optimiser's
    default (:data:`OPTIMIZER_DEFAULTS`); passing one the optimiser does not take is a ``ValueError``.
    ``learning_rate`` and a numeric ``weight_decay`` may be traced scalars (ensembles vmap over them).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer name must be one of {OPTIMIZERS}, got {name!r}")
    given = {k: v for k, v in dict(momentum=momentum, b1=b1, b2=b2, eps=eps).items() if v is not None}
    extra = sorted(set(given) - set(OPTIMIZER_DEFAULTS[name]))
    if extra:
        raise ValueError(f"{extra} not accepted by optimizer {name!r}; it takes {sorted(OPTIMIZER_DEFAULTS[name])}")
    o = {**OPTIMIZER_DEFAULTS[name], **given}
    if isinstance(weight_decay, AutoL2):
        decay = autol2(weight_decay, learning_rate=learning_rate, mask=weight_decay_mask)
    else:
        decay = add_weight_decay(weight_decay, weight_decay_mask)
    lr = optax.scale_by_learning_rate(learning_rate)
    if name in ("gd", "sgd"):
        return optax.chain(decay, lr)
    if name in ("momentum", "nesterov"):
        return optax.chain(decay, optax.trace(decay=o["momentum"], nesterov=name == "nesterov"), lr)
    if name == "adam":
        return optax.chain(decay, optax.scale_by_adam(b1=o["b1"], b2=o["b2"], eps=o["eps"]), lr)
    if name == "adamw":
        return optax.chain(optax.scale_by_adam(b1=o["b1"], b2=o["b2"], eps=o["eps"]), decay, lr)
    if name == "lion":
        return optax.chain(optax.scale_by_lion(b1=o["b1"], b2=o["b2"]), decay, lr)
    # muon: optax's direction (learning rate -1 turns its final scale_by_learning_rate into the identity)
    direction = optax.contrib.muon(-1.0, beta=o["momentum"], eps=o["eps"], adam_b1=o["b1"], adam_b2=o["b2"],
                                   weight_decay=0.0, adam_weight_decay=0.0)
    return optax.chain(direction, decay, lr)


__all__ = ["OPTIMIZERS", "OPTIMIZER_DEFAULTS", "DECOUPLED", "make_optimizer"]
