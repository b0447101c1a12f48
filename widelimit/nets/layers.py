"""Layer primitives of the finite-width networks (plain ``jax.numpy``, pure functions).

Each affine layer stores ``W`` (and ``b`` when the spec has ``b_std``) exactly as neural-tangents'
``stax.Dense``/``stax.Conv`` store them for the same ``W_std``/``b_std``:

* NTK parameterisation: ``W ~ N(0, 1)``, ``b ~ N(0, 1)``; the layer computes
  ``(W_std / sqrt(fan_in)) * (x . W) + b_std * b``.
* Standard parameterisation: ``W ~ N(0, W_std**2 / fan_in)``, ``b ~ N(0, b_std**2)``; the layer computes
  ``x . W + b``.

``fan_in`` is the input feature count for a Dense layer and ``in_channels * prod(filter_shape)`` for a
convolution (whatever the padding does at the borders), as in neural-tangents.

Weight normalisation (``norm="weight"``) stores the direction ``v`` as ``W`` and a per-output-unit gain
``g`` (initialised to 1); the pre-activation of unit ``j`` is ``W_std * g_j * <x, v_j> / ||v_j||``
(plus the bias), where ``v_j`` is the whole filter of output unit/channel ``j``. At initialisation
``||v_j|| ~ sqrt(fan_in)`` (NTK) or ``~ W_std`` (standard), so the layer starts out equal in
distribution to the unnormalised one in either parameterisation.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

#: Variance floor of LayerNorm/BatchNorm, ``(h - mean) / sqrt(var + EPS)`` (neural-tangents' default).
NORM_EPS = 1e-12


def _conv_dimension_numbers(ndim: int) -> Tuple[str, str, str]:
    if ndim == 1:
        return ("NWC", "WIO", "NWC")
    if ndim == 2:
        return ("NHWC", "HWIO", "NHWC")
    raise ValueError(f"ndim must be 1 or 2, got {ndim!r}")


def init_affine(key, w_shape: Tuple[int, ...], *, W_std: float, b_std: Optional[float],
                parameterization: str, weight_norm: bool, dtype) -> dict:
    """Initialise one Dense (``w_shape = (fan_in, out)``) or Conv (``(*filter, C_in, C_out)``) layer."""
    fan_in = math.prod(w_shape[:-1])
    k_w, k_b = jax.random.split(key)
    W = jax.random.normal(k_w, w_shape, dtype)
    if parameterization == "standard":
        W = W * jnp.asarray(W_std / math.sqrt(fan_in), dtype)
    layer = {"W": W}
    if b_std is not None:
        b = jax.random.normal(k_b, (w_shape[-1],), dtype)
        if parameterization == "standard":
            b = b * jnp.asarray(b_std, dtype)
        layer["b"] = b
    if weight_norm:
        layer["g"] = jnp.ones((w_shape[-1],), dtype)
    return layer


def _effective_weight(layer: dict, *, W_std: float, parameterization: str) -> Tuple[jax.Array, float]:
    """(weight, scalar multiplier) such that the layer's linear part is ``multiplier * (x . weight)``."""
    W = layer["W"]
    fan_in = math.prod(W.shape[:-1])
    if "g" in layer:
        axes = tuple(range(W.ndim - 1))
        norms = jnp.sqrt(jnp.sum(W * W, axis=axes))
        return W * (layer["g"] / norms), W_std
    if parameterization == "ntk":
        return W, W_std / math.sqrt(fan_in)
    return W, 1.0


def _add_bias(h, layer: dict, *, b_std: Optional[float], parameterization: str):
    if "b" not in layer:
        return h
    if parameterization == "ntk":
        return h + b_std * layer["b"]
    return h + layer["b"]


def dense(layer: dict, x, *, W_std: float, b_std: Optional[float], parameterization: str):
    """Dense layer on the last axis of ``x``."""
    W, mult = _effective_weight(layer, W_std=W_std, parameterization=parameterization)
    h = mult * (x @ W)
    return _add_bias(h, layer, b_std=b_std, parameterization=parameterization)


def conv(layer: dict, x, *, W_std: float, b_std: Optional[float], parameterization: str):
    """Stride-1, SAME-padded, channels-last convolution (1-D or 2-D, from ``W.ndim``)."""
    W, mult = _effective_weight(layer, W_std=W_std, parameterization=parameterization)
    nd = W.ndim - 2
    h = jax.lax.conv_general_dilated(x, W, window_strides=(1,) * nd, padding="SAME",
                                     dimension_numbers=_conv_dimension_numbers(nd))
    h = mult * h
    return _add_bias(h, layer, b_std=b_std, parameterization=parameterization)


def layer_norm(h):
    """Standardise each example's features at every spatial position (last axis), no affine part."""
    mean = jnp.mean(h, axis=-1, keepdims=True)
    var = jnp.var(h, axis=-1, keepdims=True)
    return (h - mean) / jnp.sqrt(var + NORM_EPS)


def batch_norm(h):
    """Standardise each feature/channel over the batch (and all spatial positions), no affine part.

    Stateless: always the statistics of the batch passed in (no running averages, no train/eval mode).
    """
    axes: Sequence[int] = tuple(range(h.ndim - 1))
    mean = jnp.mean(h, axis=axes, keepdims=True)
    var = jnp.var(h, axis=axes, keepdims=True)
    return (h - mean) / jnp.sqrt(var + NORM_EPS)
