"""Finite-width networks (plain JAX) matching the :mod:`widelimit.arch` specs.

``init_params(spec, key, in_shape)`` -> params, ``apply(spec, params, x)`` -> ``(N, out_dim)``,
``scale_invariant_mask(spec, params)`` -> bool pytree. See :mod:`widelimit.nets.network`.
"""
from .network import apply, init_params, layer_names, param_count, scale_invariant_mask

__all__ = ["init_params", "apply", "scale_invariant_mask", "layer_names", "param_count"]
