"""Finite-width networks built from an :mod:`widelimit.arch` spec: ``init_params``, ``apply``,
``scale_invariant_mask``.

Parameters are a dict ``layer name -> dict of arrays``. Layer names are ``"hidden0"``, ``"hidden1"``, ...
(the ``depth - 1`` hidden Dense layers of an MLP, or the ``depth`` convolutions of a CNN) and then
``"readout"``. Array keys: ``"W"``; ``"b"`` only when ``spec.b_std is not None``; ``"g"`` (weight-norm
gain) only for hidden layers when ``spec.norm == "weight"``. Storage and scaling conventions are those of
neural-tangents' ``stax.Dense``/``stax.Conv`` (see :mod:`widelimit.nets.layers`); Dense weights have
shape ``(fan_in, fan_out)``, conv weights ``(*filter_shape, C_in, C_out)`` (``WIO``/``HWIO``).

Forward pass. MLP: ``depth - 1`` times [Dense -> norm -> activation], then a Dense readout.
CNN (channels-last): ``depth`` times [Conv(stride 1, SAME) -> norm -> activation], global average
pooling over all spatial positions, then a Dense readout. The readout is never normalised.

Normalisation (``spec.norm``), placed after each hidden affine layer (bias included) and before the
activation, with no affine parameters:

* ``"layer"``: each example is standardised over the feature axis; for a CNN over the channels at each
  spatial position separately (neural-tangents' ``stax.LayerNorm(axis=-1)``).
* ``"batch"``: each feature (CNN: channel, pooled over the batch and all positions) is standardised over
  the batch passed to :func:`apply`. Stateless: there are no running statistics, every call uses the
  statistics of its own input batch, so outputs depend on the batch composition.
* ``"weight"``: weight normalisation, ``h_j = W_std * g_j * <x, v_j> / ||v_j|| (+ bias)``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp

from ..arch import CNN, MLP, activation_fn
from . import layers

Params = Dict[str, Dict[str, Any]]


class _Shape:
    def __init__(self, shape):
        self.shape = shape


def _check_spec(spec) -> None:
    if not isinstance(spec, (MLP, CNN)):
        raise TypeError(f"spec must be a widelimit.arch.MLP or CNN, got {type(spec).__name__}")


def _check_in_shape(spec, in_shape) -> Tuple[int, ...]:
    try:
        in_shape = tuple(in_shape)
    except TypeError:
        raise TypeError(f"in_shape must be a tuple of ints (per-example input shape), got {in_shape!r}")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in in_shape):
        raise ValueError(f"in_shape must be a tuple of positive ints, got {in_shape!r}")
    spec.check_input(_Shape((1,) + in_shape), name="in_shape (with a batch axis prepended)")
    return in_shape


def layer_names(spec) -> Tuple[str, ...]:
    """Names of the parameter groups of ``spec``'s network, input to output."""
    _check_spec(spec)
    n_hidden = spec.depth - 1 if isinstance(spec, MLP) else spec.depth
    return tuple(f"hidden{i}" for i in range(n_hidden)) + ("readout",)


def init_params(spec, key, in_shape, dtype=jnp.float32) -> Params:
    """Draw the parameters of a finite instance of ``spec`` for per-example input shape ``in_shape``.

    ``in_shape`` is ``(d,)`` for an MLP, ``(length, C)`` for a 1-D CNN, ``(H, W, C)`` for a 2-D CNN.
    Weights/biases follow neural-tangents' initialisation for the spec's parameterisation; weight-norm
    gains ``g`` start at 1. For ``dtype=jnp.float64`` call inside :func:`widelimit._x64.x64`.
    """
    _check_spec(spec)
    in_shape = _check_in_shape(spec, in_shape)
    names = layer_names(spec)
    keys = jax.random.split(key, len(names))
    common = dict(W_std=spec.W_std, b_std=spec.b_std, parameterization=spec.parameterization, dtype=dtype)
    params: Params = {}
    fan = in_shape[-1]
    width = spec.width if isinstance(spec, MLP) else spec.channels
    for name, k in zip(names[:-1], keys[:-1]):
        w_shape = (fan, width) if isinstance(spec, MLP) else spec.filter_shape + (fan, width)
        params[name] = layers.init_affine(k, w_shape, weight_norm=spec.norm == "weight", **common)
        fan = width
    params["readout"] = layers.init_affine(keys[-1], (fan, spec.out_dim), weight_norm=False, **common)
    return params


def _check_params(spec, params, x) -> None:
    names = layer_names(spec)
    if not isinstance(params, dict) or set(params) != set(names):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params must be a dict with layers {list(names)}, got {got}")
    fan_in = params[names[0]]["W"].shape[-2]
    if x.shape[-1] != fan_in:
        raise ValueError(f"x has {x.shape[-1]} input features/channels but params expect {fan_in}")


def apply(spec, params: Params, x) -> jax.Array:
    """Forward pass ``f(params, x)`` of shape ``(N, spec.out_dim)`` for a batch ``x`` of shape ``(N, *in_shape)``.

    Pure (jit/vmap/grad-able). ``x`` is cast to the dtype of the parameters. For ``norm="batch"``
    the normalisation statistics are those of this ``x`` (see the module docstring).
    """
    _check_spec(spec)
    spec.check_input(x)
    _check_params(spec, params, x)
    names = layer_names(spec)
    h = jnp.asarray(x, dtype=params[names[0]]["W"].dtype)
    act = activation_fn(spec)
    common = dict(W_std=spec.W_std, b_std=spec.b_std, parameterization=spec.parameterization)
    affine = layers.dense if isinstance(spec, MLP) else layers.conv
    norm = {None: None, "weight": None, "layer": layers.layer_norm, "batch": layers.batch_norm}[spec.norm]
    for name in names[:-1]:
        h = affine(params[name], h, **common)
        if norm is not None:
            h = norm(h)
        h = act(h)
    if isinstance(spec, CNN):
        h = jnp.mean(h, axis=tuple(range(1, h.ndim - 1)))
    return layers.dense(params["readout"], h, **common)


def scale_invariant_mask(spec, params: Params) -> Dict[str, Dict[str, bool]]:
    """Which parameter arrays ``w`` are scale-invariant: ``f(c * w) = f(w)`` for all ``c > 0`` (others fixed).

    Same structure as ``params``, bool leaves. Marked ``True``:

    * ``norm="weight"``: every hidden ``"W"`` (the direction ``v``); the gains ``g`` and biases are not.
    * ``norm="batch"``: every hidden ``"W"``. A hidden bias is subtracted again by the batch mean,
      so ``f`` does not depend on it at all; it is marked ``False`` because it carries no direction (its
      gradient is identically zero and L2 simply shrinks it to 0).
    * ``norm="layer"``: every hidden ``"W"`` *when the spec has no biases*. With biases the pre-norm
      ``W x + b`` is invariant only under the joint scaling ``(c W, c b)``, not under either array alone,
      so both are marked ``False``.

    The readout is never normalised, so its arrays are always ``False``; ``norm=None`` gives all ``False``.
    The invariance is exact up to the variance floor ``NORM_EPS = 1e-12`` of LayerNorm/BatchNorm.
    """
    _check_spec(spec)
    names = layer_names(spec)
    if not isinstance(params, dict) or set(params) != set(names):
        raise ValueError(f"params must be a dict with layers {list(names)}")
    hidden_w = spec.norm in ("weight", "batch") or (spec.norm == "layer" and not spec.has_bias)
    return {name: {key: bool(key == "W" and name != "readout" and hidden_w) for key in layer}
            for name, layer in params.items()}


def invariance_groups(spec, params: Params) -> Dict[str, Optional[str]]:
    """The invariant group of each layer's ``"W"``: ``"unit"`` when every output unit ``W[..., j]`` is
    scale-invariant on its own (BatchNorm: each unit is standardised separately; WeightNorm: ``v_j/‖v_j‖``),
    ``"matrix"`` when only the whole matrix is (LayerNorm without biases: standardisation across the units of
    an example), ``None`` when ``W`` is not scale-invariant (see :func:`scale_invariant_mask`). Per-unit
    groups are also invariant as a whole matrix, so whole-matrix measurements apply to every SI layer."""
    mask = scale_invariant_mask(spec, params)
    kind = "unit" if spec.norm in ("batch", "weight") else "matrix"
    return {name: (kind if m.get("W", False) else None) for name, m in mask.items()}


def param_count(params: Params) -> int:
    """Total number of scalar parameters."""
    return int(sum(a.size for layer in params.values() for a in layer.values()))
