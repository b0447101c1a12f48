"""Homogeneity degree ``L`` of a network in its parameters: ``f(alpha * theta) = alpha**L f(theta)``.

:func:`homogeneity_degree` is the structural answer of the spec (``spec.homogeneity_degree``: bias-free
with a positively 1-homogeneous activation: ``L`` = number of weight layers; a single affine layer or
LayerNorm/BatchNorm nets: ``L = 1``; otherwise ``None``).
:func:`measure_homogeneity` checks the relation numerically on a random finite float64 instance.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

#: Relative tolerance of the proportionality ``f(alpha theta) = r f(theta)`` and of ``|L - round(L)|``.
HOMOGENEITY_RTOL = 1e-8


def homogeneity_degree(spec) -> Optional[int]:
    """``spec.homogeneity_degree``: ``L`` for an L-homogeneous network, ``None`` otherwise."""
    return spec.homogeneity_degree


def measure_homogeneity(spec, x, key, alphas: Sequence[float] = (0.5, 2.0, 3.0), *,
                        rtol: float = HOMOGENEITY_RTOL) -> Optional[int]:
    """Fit ``L`` in ``f(alpha theta) = alpha**L f(theta)`` on a random float64 instance of ``spec`` at inputs ``x``.

    For each ``alpha`` the ratio ``r = <f_alpha, f> / <f, f>`` gives ``L_alpha = log r / log alpha``.
    Returns ``round(L)`` when, for every ``alpha``, ``f_alpha = r f`` holds to relative error ``rtol``
    and ``|L_alpha - round(L)| <= 10 rtol max(1, |L|) / |log alpha|``; otherwise ``None``. All
    parameter arrays (weights, biases, weight-norm gains) are scaled together.

    The structural rule it checks: a depth-1 (affine) model with bias is 1-homogeneous in ``(W, b)``;
    with LayerNorm/BatchNorm every hidden weight and bias is scale-invariant and
    ``f(alpha theta) = alpha f(theta)`` (``L = 1``, any activation); with weight normalisation the gains
    carry the scale (``L`` = number of weight layers when bias-free with a homogeneous activation).
    This function reports what it measures.
    """
    import jax
    import jax.numpy as jnp

    from .._x64 import x64
    from .network import apply, init_params

    alphas = tuple(float(a) for a in alphas)
    if not alphas or any(not math.isfinite(a) or a <= 0 or a == 1.0 for a in alphas):
        raise ValueError(f"alphas must be positive numbers other than 1, got {alphas!r}")
    x = np.asarray(x, dtype=np.float64)
    spec.check_input(x)
    with x64():
        params = init_params(spec, key, x.shape[1:], dtype=jnp.float64)
        f = np.asarray(apply(spec, params, x))
        ff = float(np.vdot(f, f))
        if not ff > 0:
            raise ValueError("the network output is identically zero at these inputs; use other inputs x")
        degrees = []
        for a in alphas:
            fa = np.asarray(apply(spec, jax.tree_util.tree_map(lambda p: a * p, params), x))
            r = float(np.vdot(fa, f)) / ff
            if not r > 0 or np.linalg.norm(fa - r * f) > rtol * np.linalg.norm(fa):
                return None
            degrees.append(math.log(r) / math.log(a))
    L = round(degrees[0])
    if all(abs(d - L) <= 10 * rtol * max(1.0, abs(L)) / abs(math.log(a)) for d, a in zip(degrees, alphas)):
        return int(L)
    return None


__all__ = ["homogeneity_degree", "measure_homogeneity", "HOMOGENEITY_RTOL"]
