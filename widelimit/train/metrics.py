"""Losses, accuracy and weight-space measurements (pure ``jax.numpy``; jit/vmap-able).

* ``mse_loss``: ``1/(2 N K) sum_{n,k} (f_nk - y_nk)^2`` (neural-tangents' normalisation; the
  function-space kernel of gradient flow is then ``Theta / (N K)``).
* ``xent_loss``: ``-(1/N) sum_n sum_k y_nk log softmax(f_n)_k``.
* ``accuracy``: ``K > 1``: ``argmax f == argmax y``; ``K = 1``: ``sign f == sign y`` (+-1 targets).
* ``angle(a, b)``: the angle between two arrays seen as vectors, in radians, computed as
  ``2 atan2(|a^ - b^|, |a^ + b^|)`` with ``a^ = a/|a|`` — accurate for tiny angles, unlike ``arccos`` of the
  cosine (which loses all digits below ~sqrt(eps) ~ 3e-4 rad in float32).
* weight-space quantities per layer (arrays ``"W"``): ``||W||``, angular update ``angle(W_t, W_{t+1})``,
  effective learning rate ``eta / ||W||^2`` and gradient norm at unit scale ``||grad_W l|| * ||W||`` (the
  gradient of the loss at ``W/||W||``, by ``grad l(cW) = grad l(W)/c``; meaningful for scale-invariant W).
"""
from __future__ import annotations

from typing import Dict

import jax
import jax.numpy as jnp


def mse_loss(f, y):
    """``1/(2 N K) sum (f - y)^2`` for ``f, y`` of shape ``(N, K)``."""
    return 0.5 * jnp.mean((f - y) ** 2)


def xent_loss(f, y):
    """Mean softmax cross-entropy with (one-hot or soft) targets ``y``; ``f`` are logits ``(N, K)``."""
    return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(f, axis=-1), axis=-1))


LOSS_FNS = {"mse": mse_loss, "xent": xent_loss}


def accuracy(f, y):
    """Fraction of correct predictions: argmax match for ``K > 1``, sign match for ``K = 1``."""
    if f.shape[-1] == 1:
        return jnp.mean((jnp.sign(f[:, 0]) == jnp.sign(y[:, 0])).astype(f.dtype))
    return jnp.mean((jnp.argmax(f, -1) == jnp.argmax(y, -1)).astype(f.dtype))


def sq_norm(a):
    return jnp.sum(a * a)


def angle(a, b):
    """Angle in radians between ``a`` and ``b`` flattened to vectors (0 if either is zero)."""
    na, nb = jnp.sqrt(sq_norm(a)), jnp.sqrt(sq_norm(b))
    safe_a = jnp.where(na > 0, na, 1.0)
    safe_b = jnp.where(nb > 0, nb, 1.0)
    ua, ub = a / safe_a, b / safe_b
    ang = 2.0 * jnp.arctan2(jnp.sqrt(sq_norm(ua - ub)), jnp.sqrt(sq_norm(ua + ub)))
    return jnp.where((na > 0) & (nb > 0), ang, 0.0)


def weight_layers(params) -> list:
    """Names of the layers that have a weight array ``"W"`` (sorted as in ``params``)."""
    return [name for name, layer in params.items() if isinstance(layer, dict) and "W" in layer]


def layer_weight_norms(params) -> Dict[str, jax.Array]:
    """``||W||`` (Frobenius) of every layer's weight array."""
    return {name: jnp.sqrt(sq_norm(params[name]["W"])) for name in weight_layers(params)}


def layer_angles(old, new) -> Dict[str, jax.Array]:
    """Angular update ``angle(W_old, W_new)`` of every layer's weight array."""
    return {name: angle(old[name]["W"], new[name]["W"]) for name in weight_layers(new)}


def params_sq_norm(params, mask=None):
    """``||theta_S||^2`` over the arrays where ``mask`` is True (all when ``mask`` is None)."""
    leaves = jax.tree_util.tree_leaves(params)
    if mask is None:
        return sum(sq_norm(p) for p in leaves)
    masks = jax.tree_util.tree_leaves(mask)
    return sum(sq_norm(p) for p, m in zip(leaves, masks) if m)


__all__ = ["mse_loss", "xent_loss", "LOSS_FNS", "accuracy", "angle", "layer_weight_norms", "layer_angles",
           "weight_layers", "params_sq_norm", "sq_norm"]
