"""Closed-form infinite-width NNGP and NTK of fully-connected networks, in NumPy float64.

No JAX and no neural-tangents: this module runs anywhere. For an :class:`widelimit.arch.MLP` with
``norm=None`` it returns the same kernels as neural-tangents' ``stax`` for the same network
(``Dense(width, W_std, b_std, parameterization) -> activation`` repeated ``depth - 1`` times, then
``Dense(out_dim, ...)``), per output (the kernels are isotropic across the ``out_dim`` outputs).

Recursion, for inputs of dimension ``d`` (each pair of inputs handled independently):

* input: ``K(x, x') = <x, x'> / d``, ``Theta = 0``;
* Dense layer, NTK parameterisation: ``K <- W_std^2 K + b_std^2``, then ``Theta <- K + W_std^2 Theta``;
* Dense layer, standard parameterisation, fan-in ``n`` (``d`` for the first layer, ``width`` after):
  ``Theta <- n K + W_std^2 Theta (+ 1 with biases)``, then ``K <- W_std^2 K + b_std^2``. The standard
  NTK therefore depends on the widths (it grows with ``width``), exactly as in neural-tangents, where the
  limit keeps the width fixed inside the NTK (Sohl-Dickstein et al. 2020, arXiv 2001.07301);
* activation ``phi``: ``K <- E[phi(u) phi(v)]``, ``Theta <- E[phi'(u) phi'(v)] * Theta`` for
  ``(u, v) ~ N(0, [[K11, K12], [K12, K22]])``.

Gaussian expectations (``theta = arctan2(sqrt(K11 K22 - K12^2), K12)``, the angle between the inputs):

* ``a*min(u,0) + b*max(u,0)`` (ReLU: a=0, b=1; LeakyReLU: a=slope, b=1; ABReLU):
  ``E[phi phi] = (a-b)^2/(2 pi) sqrt(K11 K22 - K12^2) + ((a^2+b^2)/2 - (a-b)^2 theta/(2 pi)) K12``,
  ``E[phi' phi'] = (a^2+b^2)/2 - (a-b)^2 theta/(2 pi)`` (arc-cosine kernels of degree 1 and 0);
  on the diagonal ``E[phi(u)^2] = (a^2+b^2)/2 K11``;
* ``erf``: ``E[phi phi] = (2/pi) arcsin(2 K12 / sqrt((1+2K11)(1+2K22)))``,
  ``E[phi' phi'] = (4/pi) / sqrt((1+2K11)(1+2K22) - 4 K12^2)``;
* identity: unchanged.

The variances ``K11``, ``K22`` are propagated with their own diagonal formulas. When ``x2`` is ``x1``,
the diagonal of ``K`` is set to the variances at the input, so an input's angle with itself stays exactly
0 through every layer. This matters: ``sqrt(K11 K22 - K12^2)`` has infinite slope at angle 0, so a
rounding error ``eps`` in ``K12`` becomes an error ``~sqrt(eps) ~ 1e-8`` (relative) in the kernel;
with the exact diagonal the result agrees with neural-tangents to ~1e-15 everywhere.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from ..arch import MLP

Array = np.ndarray


def _abrelu_slopes(spec: MLP) -> Tuple[float, float]:
    if spec.activation == "relu":
        return 0.0, 1.0
    if spec.activation == "leaky_relu":
        return float(spec.slope), 1.0
    return float(spec.abrelu_a), float(spec.abrelu_b)


def _abrelu(a: float, b: float, nngp: Array, var1: Array, var2: Array, ntk: Array):
    prod = var1[:, None] * var2[None, :]
    root = np.sqrt(np.maximum(prod - nngp ** 2, 0.0))
    both_zero = (root == 0.0) & (nngp == 0.0)
    angle = np.where(both_zero, math.pi / 2, np.arctan2(root, nngp))
    factor = (a - b) ** 2 / (2 * math.pi)
    dot_sigma = (a ** 2 + b ** 2) / 2 - factor * angle
    nngp = factor * root + dot_sigma * nngp
    diag = (a ** 2 + b ** 2) / 2
    return nngp, diag * var1, diag * var2, ntk * dot_sigma


def _erf(nngp: Array, var1: Array, var2: Array, ntk: Array):
    prod = (1 + 2 * var1)[:, None] * (1 + 2 * var2)[None, :]
    root = np.sqrt(np.maximum(prod - 4 * nngp ** 2, 0.0))
    factor = 2 / math.pi
    with np.errstate(divide="ignore"):
        dot_sigma = 2 * factor / root
    nngp = factor * np.arctan2(2 * nngp, root)

    def diag(v):
        return factor * np.arctan2(v, np.sqrt(v + 0.25))

    return nngp, diag(var1), diag(var2), ntk * dot_sigma


def _check_inputs(spec: MLP, x1, x2) -> Tuple[Array, Array, bool]:
    if not isinstance(spec, MLP):
        raise TypeError(f"spec must be a widelimit.arch.MLP for the native backend, got {type(spec).__name__}")
    if spec.norm is not None:
        raise ValueError(f"the native backend has no normalisation layers (spec.norm={spec.norm!r}); "
                         "use backend='nt'")
    x1 = np.asarray(x1, dtype=np.float64)
    spec.check_input(x1, "x1")
    x2 = x1 if x2 is None else np.asarray(x2, dtype=np.float64)
    same = x2 is x1 or (x2.shape == x1.shape and np.array_equal(x1, x2))
    spec.check_input(x2, "x2")
    if x2.shape[1] != x1.shape[1]:
        raise ValueError(f"x1 and x2 must have the same number of features, got {x1.shape[1]} and {x2.shape[1]}")
    if x1.shape[1] == 0:
        raise ValueError("x1 must have at least one feature")
    return x1, x2, same


def mlp_kernels(spec: MLP, x1, x2: Optional[Array] = None) -> Tuple[Array, Array]:
    """Infinite-width ``(ntk, nngp)`` of an MLP spec between rows of ``x1`` ``(N1, d)`` and ``x2`` ``(N2, d)``.

    Returns two float64 arrays of shape ``(N1, N2)`` (``x2=None`` means ``x2 = x1``), per output unit.
    The NTK is unnormalised, ``Theta(x, x') = sum_p df(x)/dtheta_p df(x')/dtheta_p`` in the limit.
    """
    x1, x2, same = _check_inputs(spec, x1, x2)
    d = x1.shape[1]
    nngp = x1 @ x2.T / d
    var1 = np.einsum("ij,ij->i", x1, x1) / d
    var2 = var1 if same else np.einsum("ij,ij->i", x2, x2) / d
    if same:  # an input's angle with itself is exactly 0 (the arc-cosine maps are ill-conditioned there)
        np.fill_diagonal(nngp, var1)
    ntk = np.zeros_like(nngp)
    W2 = spec.W_std ** 2
    b2 = 0.0 if spec.b_std is None else spec.b_std ** 2
    for layer in range(spec.depth):
        if spec.parameterization == "standard":
            fan_in = d if layer == 0 else spec.width
            ntk = fan_in * nngp + W2 * ntk
            if spec.has_bias:
                ntk = ntk + 1.0
            nngp, var1, var2 = (W2 * k + b2 for k in (nngp, var1, var2))
        else:
            nngp, var1, var2 = (W2 * k + b2 for k in (nngp, var1, var2))
            ntk = nngp + W2 * ntk
        if layer == spec.depth - 1:
            break
        if spec.activation == "erf":
            nngp, var1, var2, ntk = _erf(nngp, var1, var2, ntk)
        elif spec.activation != "identity":
            nngp, var1, var2, ntk = _abrelu(*_abrelu_slopes(spec), nngp, var1, var2, ntk)
    return ntk, nngp


__all__ = ["mlp_kernels"]
