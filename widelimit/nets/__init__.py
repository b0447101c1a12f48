"""Finite-width networks (plain JAX) matching the :mod:`widelimit.arch` specs.

``init_params(spec, key, in_shape)`` -> params, ``apply(spec, params, x)`` -> ``(N, out_dim)``,
``scale_invariant_mask(spec, params)`` -> bool pytree, ``invariance_groups(spec, params)`` -> per layer
"unit" / "matrix" / None. See :mod:`widelimit.nets.network`.
"""
from .network import apply, init_params, invariance_groups, layer_names, param_count, scale_invariant_mask
from .empirical import (KernelEstimates, empirical_ntk, empirical_ntk_of_spec, mlp_empirical_ntk,  # noqa: E402
                        sampled_kernels)
from .homogeneity import homogeneity_degree, measure_homogeneity  # noqa: E402

__all__ = ["init_params", "apply", "scale_invariant_mask", "invariance_groups", "layer_names", "param_count",
           "empirical_ntk", "empirical_ntk_of_spec", "mlp_empirical_ntk", "sampled_kernels",
           "KernelEstimates", "homogeneity_degree", "measure_homogeneity"]
