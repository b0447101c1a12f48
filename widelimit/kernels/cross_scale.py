"""Cross-scale infinite-width kernels of a plain MLP (docs/theory.md §5), in NumPy float64.

For parameters ``theta_0`` drawn at initialisation and two scales ``s, s' > 0`` the network at the scaled
parameters ``s theta_0`` has outputs ``g(x; s) = f(x; s theta_0)`` and Jacobian ``J(s theta_0)``. At infinite
width (per output unit, for one ``x``-pair)

* cross-scale NNGP: ``K(x, x'; s, s') = E[g(x; s) g(x'; s')]``,
* cross-scale NTK:  ``Theta(x, x'; s, s') = <J(s theta_0)(x), J(s' theta_0)(x')>`` (unnormalised, the
  derivative is with respect to the parameters, evaluated at the scaled point).

Both follow from the ordinary layer recursion (:mod:`widelimit.kernels.native`) run on two copies of the
network, copy ``a`` with every weight and bias multiplied by ``s`` and copy ``b`` by ``s'``. With
``Phi`` the post-activation covariances of the previous layer (``Phi = <x, x'>/d`` at the input) and
``W = W_std``, ``B = b_std`` (0 without biases):

* Dense layer: ``q_ab = s s' (W^2 Phi_ab + B^2)``, ``q_aa = s^2 (W^2 Phi_aa + B^2)``, and
  NTK parameterisation ``Theta <- (W^2 Phi_ab + B^2) + s s' W^2 Theta``;
  standard parameterisation ``Theta <- n Phi_ab (+ 1 with biases) + s s' W^2 Theta`` (``n`` = fan-in).
  The layer's own parameters contribute without a scale factor (the derivative is taken at the scaled
  point, but the layer is linear in its own parameters); the earlier ones pass through ``s W`` and ``s' W``.
* activation: ``Phi_ab = E[phi(u) phi(v)]``, ``Theta <- E[phi'(u) phi'(v)] Theta`` for
  ``(u, v) ~ N(0, [[q_aa, q_ab], [q_ab, q_bb]])``, by the same closed forms as the native kernels
  (arc-cosine for ``a min(u,0) + b max(u,0)``, arcsine for erf), which hold for unequal variances.

Every native activation has a closed form; :func:`bivariate_expectation` (Gauss-Hermite quadrature over
the bivariate Gaussian) evaluates ``E[phi(u) psi(v)]`` for any other function and is the independent check
of the closed forms in the tests.

Numerics. The arc-cosine and erf maps have infinite slope at correlation 1, which an input reaches with
itself (and, for homogeneous nets, at every pair of scales). The recursion therefore carries
``c = 1 - rho`` (one minus the correlation of the two copies) through stable formulas instead of
``q_ab``: at a Dense layer ``1 - rho' = (W^4 Phi_aa Phi_bb c(2 - c) + W^2 B^2 ((sqrt Phi_aa - sqrt
Phi_bb)^2 + 2 c sqrt(Phi_aa Phi_bb))) / (sqrt(AB) (sqrt(AB) + C))`` (a sum of non-negative terms), and
at the activations the differences are rewritten without cancellation (see the functions below). An
input with itself at ``s = s'`` keeps ``c = 0`` exactly, and the kernels agree with
:func:`widelimit.kernels.native.mlp_kernels` to ~1e-15.
"""
from __future__ import annotations

import contextlib
import math
from typing import NamedTuple, Optional, Tuple

import numpy as np

from ..arch import MLP

Array = np.ndarray


class CrossScaleKernels(NamedTuple):
    """Cross-scale kernels, float64, per output: shape ``(N1, N2)`` for scalar scales, ``(P, N1, N2)``
    for ``P`` pairs of scales.

    ntk: ``Theta(x1, x2; scale1, scale2)`` (unnormalised). nngp: ``K(x1, x2; scale1, scale2)``.
    """

    ntk: Array
    nngp: Array


def check_spec(spec) -> MLP:
    """``spec`` if the cross-scale recursion covers it (a plain MLP), else TypeError/ValueError."""
    if not isinstance(spec, MLP):
        raise TypeError(f"spec must be a widelimit.arch.MLP for cross-scale kernels, got {type(spec).__name__}")
    if spec.norm is not None:
        raise ValueError(f"spec.norm={spec.norm!r}: the cross-scale recursion covers plain MLPs only "
                         "(no normalisation layers)")
    if spec.activation == "abrelu" and spec.abrelu_a == 0 and spec.abrelu_b == 0:
        raise ValueError("spec has abrelu_a = abrelu_b = 0 (the zero activation): nothing to compute")
    return spec


def _check_scales(scale1, scale2) -> Tuple[Array, Array, bool]:
    out = []
    for name, s in (("scale1", scale1), ("scale2", scale2)):
        try:
            a = np.asarray(s, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a number or a 1-D array of numbers, got {type(s).__name__}") from None
        if a.ndim > 1:
            raise ValueError(f"{name} must be a scalar or 1-D, got shape {a.shape}")
        if not np.all(np.isfinite(a)) or np.any(a <= 0):
            raise ValueError(f"{name} must be finite and > 0 (a parameter scale s = exp(-lam t)), got {s!r}")
        out.append(a)
    a, b = out
    scalar = a.ndim == 0 and b.ndim == 0
    a, b = np.broadcast_arrays(np.atleast_1d(a), np.atleast_1d(b))
    return a.astype(np.float64), b.astype(np.float64), scalar


def _sin_minus_theta_cos(theta: Array, sin_t: Array, cos_t: Array, xp=np) -> Array:
    """``sin(theta) - theta cos(theta)`` from the known ``sin_t = sin(theta)``, ``cos_t = cos(theta)``,
    without cancellation near 0 (series below 0.1)."""
    out = sin_t - theta * cos_t
    if xp is not np:                  # jax: both branches (fused by jit)
        t2 = theta * theta
        return xp.where(theta < 0.1, theta * t2 * (1 / 3 - t2 * (1 / 30 - t2 * (1 / 840 - t2 / 45360))), out)
    small = theta < 0.1
    if np.any(small):                 # the series only where it is needed (the diagonal, near-parallel pairs)
        t = theta[small]
        t2 = t * t
        out[small] = t * t2 * (1 / 3 - t2 * (1 / 30 - t2 * (1 / 840 - t2 / 45360)))
    return out


def _abrelu_step(a, b, qa, qb, c, ntk, xp=np):
    """Arc-cosine maps for ``a min(u,0) + b max(u,0)``; returns post ``(Phi_aa, Phi_bb, Phi_ab, c)``, ntk."""
    theta = 2 * xp.arcsin(xp.sqrt(xp.clip(c, 0.0, 2.0) / 2))
    sin_t = xp.sqrt(xp.maximum(c * (2 - c), 0.0))
    factor = (a - b) ** 2 / (2 * math.pi)
    diag = (a ** 2 + b ** 2) / 2
    dot = diag - factor * theta
    sq = xp.sqrt(qa[..., :, None] * qb[..., None, :])
    phi_ab = sq * (factor * sin_t + dot * (1 - c))
    c_new = xp.clip((diag * c - factor * _sin_minus_theta_cos(theta, sin_t, 1 - c, xp)) / diag, 0.0, 2.0)
    c_new = xp.where(sq == 0, 1.0, c_new)
    return diag * qa, diag * qb, phi_ab, c_new, ntk * dot


def _erf_step(qa, qb, c, ntk, xp=np):
    """Arcsine maps of erf; the correlation of the outputs is computed as
    ``1 - rho' = [(sqrt(A1 A2) - asin z) + (asin z - asin(rho z))] / sqrt(A1 A2)`` with
    ``z = sqrt(z1 z2)``, ``z_i = 2 q_i / (1 + 2 q_i)``, ``A_i = asin z_i`` and the second bracket as
    ``asin(z (1 - rho^2) / (sqrt(1 - rho^2 z^2) + rho sqrt(1 - z^2)))`` (for ``rho >= 0``)."""
    rho = 1 - c
    z1, z2 = 2 * qa / (1 + 2 * qa), 2 * qb / (1 + 2 * qb)
    a1, a2 = xp.arcsin(z1), xp.arcsin(z2)
    zz = xp.sqrt(z1[..., :, None] * z2[..., None, :])
    a12 = xp.arcsin(rho * zz)
    g = xp.sqrt(a1[..., :, None] * a2[..., None, :])
    one_m_r2 = xp.maximum(c * (2 - c), 0.0)
    with _quiet(xp):
        stable = xp.arcsin(zz * one_m_r2 / (xp.sqrt(1 - rho ** 2 * zz ** 2) + rho * xp.sqrt(1 - zz ** 2)))
        second = xp.where(rho >= 0, stable, xp.arcsin(zz) - a12)
        c_new = xp.where(g > 0, ((g - xp.arcsin(zz)) + second) / g, 1.0)
    q_ab_terms = 1 + 2 * qa[..., :, None] + 2 * qb[..., None, :] \
        + 4 * qa[..., :, None] * qb[..., None, :] * one_m_r2
    dot = (4 / math.pi) / xp.sqrt(q_ab_terms)
    f = 2 / math.pi
    return f * a1, f * a2, f * a12, xp.clip(c_new, 0.0, 2.0), ntk * dot


def _slopes(spec: MLP) -> Tuple[float, float]:
    if spec.activation == "relu":
        return 0.0, 1.0
    if spec.activation == "leaky_relu":
        return float(spec.slope), 1.0
    return float(spec.abrelu_a), float(spec.abrelu_b)


def _quiet(xp):
    return np.errstate(invalid="ignore", divide="ignore") if xp is np else contextlib.nullcontext()


def _dense_c(xp, W2, B2, pa, pb, phi_ab, c):
    """``c = 1 - rho`` after a Dense layer, from the stable formula of the module docstring."""
    A, B = W2 * pa + B2, W2 * pb + B2
    C = W2 * phi_ab + B2
    sab = xp.sqrt(A[..., :, None] * B[..., None, :])
    spa, spb = xp.sqrt(pa)[..., :, None], xp.sqrt(pb)[..., None, :]
    num = W2 * W2 * (spa * spb) ** 2 * c * (2 - c) + W2 * B2 * ((spa - spb) ** 2 + 2 * c * spa * spb)
    with _quiet(xp):
        c = xp.where(sab > 0, xp.where(C > 0, num / (sab * (sab + C)), 1 - C / sab), 1.0)
    return A, B, C, xp.clip(c, 0.0, 2.0)


def _activation(xp, activation, slopes, qa, qb, q_ab, c, ntk):
    if activation == "identity":
        return qa, qb, q_ab, c, ntk
    if activation == "erf":
        return _erf_step(qa, qb, c, ntk, xp)
    return _abrelu_step(*slopes, qa, qb, c, ntk, xp)


def _layer(xp, cfg, layer, s1, s2, pa, pb, phi_ab, c, ntk):
    """One Dense layer (and, unless it is the output layer, its activation) of the recursion in the module
    docstring; returns the state entering the next layer, or ``(ntk, q_ab)`` after the output layer."""
    depth, W2, B2, parameterization, activation, slopes, d, width, has_bias = cfg
    ss = (s1 * s2)[:, None, None]
    last = layer == depth - 1
    if last:          # the output layer: its correlation c is not needed
        A, B, C = W2 * pa + B2, W2 * pb + B2, W2 * phi_ab + B2
    else:
        A, B, C, c = _dense_c(xp, W2, B2, pa, pb, phi_ab, c)
    if parameterization == "standard":
        fan_in = d if layer == 0 else width
        own = fan_in * phi_ab + (1.0 if has_bias else 0.0)
    else:
        own = C
    ntk = own + ss * W2 * ntk
    qa, qb, q_ab = s1[:, None] ** 2 * A, s2[:, None] ** 2 * B, ss * C
    if last:
        return ntk, q_ab
    return _activation(xp, activation, slopes, qa, qb, q_ab, c, ntk)


def _layers(xp, cfg, first, s1, s2, pa, pb, phi_ab, c, ntk):
    """The layer recursion (module docstring) from layer ``first`` on, on arrays of module ``xp`` (numpy,
    or jax.numpy under jit); ``(pa, pb, phi_ab, c, ntk)`` is the state entering that layer."""
    for layer in range(first, cfg[0] - 1):
        pa, pb, phi_ab, c, ntk = _layer(xp, cfg, layer, s1, s2, pa, pb, phi_ab, c, ntk)
    return _layer(xp, cfg, cfg[0] - 1, s1, s2, pa, pb, phi_ab, c, ntk)


def _scale_free_prefix(cfg, pa, pb, phi_ab, c):
    """The state after the first Dense layer and its activation at unit scales, for a positively
    homogeneous activation (``a min(u,0) + b max(u,0)``, identity) and depth >= 2.

    The first layer's pre-activation covariances are ``s s' (W^2 Phi + B^2)`` (and ``s^2 (...)``,
    ``s'^2 (...)``), so their correlation ``1 - c`` does not depend on the scales, and a positively
    homogeneous activation maps ``(s u, s' v)`` to ``s s'`` times the unit-scale expectations; the NTK
    entering layer 2 is scale-free (the layer's own term times the scale-free derivative expectation). So
    the state at scales ``(s, s')`` is ``(s^2 Phi_aa, s'^2 Phi_bb, s s' Phi_ab, c, ntk)`` of this
    unit-scale state, and only layers 2 ... L are computed per scale pair (equal to the full recursion to
    rounding, tests/test_cross_scale.py). Returned without the pair axis."""
    one = np.ones(1)
    state = _layer(np, cfg, 0, one, one, pa[None], pb[None], phi_ab[None], c[None], np.zeros(phi_ab.shape))
    return tuple(a[0] for a in state)


_JIT = {}


def _layers_jax():
    """:func:`_layers` compiled by jax.jit (float64 inside :func:`widelimit._x64.x64`); built on first use."""
    if "fn" not in _JIT:
        import functools

        import jax
        import jax.numpy as jnp
        _JIT["fn"] = jax.jit(functools.partial(_layers, jnp), static_argnums=(0, 1))
    return _JIT["fn"]


def cross_scale_kernels(spec: MLP, x1, x2: Optional[Array] = None, *, scale1, scale2,
                        backend: str = "numpy", _prefix: bool = True) -> CrossScaleKernels:
    """Infinite-width cross-scale ``(ntk, nngp)`` between rows of ``x1`` (N1, d) at parameter scale
    ``scale1`` and rows of ``x2`` (N2, d) at ``scale2`` (``x2=None``: ``x2 = x1``).

    ``scale1``, ``scale2``: positive numbers, or 1-D arrays of equal length ``P`` (one kernel per pair,
    result shape ``(P, N1, N2)``). At ``scale1 = scale2 = 1`` these are the ordinary native kernels; for
    an L-homogeneous spec ``ntk = (s s')^(L-1) Theta``, ``nngp = (s s')^L K``. The standard-
    parameterisation NTK depends on ``spec.width`` as in :mod:`widelimit.kernels.native`.
    ``backend``: ``"numpy"`` (default) or ``"jax"`` (the same recursion compiled by jax.jit in float64:
    one fused pass over the ``N1 x N2`` entries, several times faster for large kernels; agrees with
    numpy to rounding). For a positively homogeneous activation (ReLU family, identity) the first layer
    is computed once for all pairs (scale-free up to factors, :func:`_scale_free_prefix`); ``_prefix=False``
    runs the whole recursion per pair (the tests' reference).
    """
    check_spec(spec)
    if backend not in ("numpy", "jax"):
        raise ValueError(f"backend must be 'numpy' or 'jax', got {backend!r}")
    s1, s2, scalar = _check_scales(scale1, scale2)
    x1 = np.asarray(x1, dtype=np.float64)
    spec.check_input(x1, "x1")
    same = x2 is None
    x2 = x1 if x2 is None else np.asarray(x2, dtype=np.float64)
    spec.check_input(x2, "x2")
    if x2.shape[1] != x1.shape[1] or x1.shape[1] == 0:
        raise ValueError(f"x1 and x2 must have the same, non-zero number of features, got {x1.shape[1]} "
                         f"and {x2.shape[1]}")
    same = same or (x2.shape == x1.shape and np.array_equal(x1, x2))
    d = x1.shape[1]
    n1, n2 = np.linalg.norm(x1, axis=1), np.linalg.norm(x2, axis=1)
    phi_ab = np.broadcast_to(x1 @ x2.T / d, (s1.size, x1.shape[0], x2.shape[0]))
    nn = n1[:, None] * n2[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(nn > 0, np.clip(1 - (x1 @ x2.T) / nn, 0.0, 2.0), 1.0)
    if same:
        np.fill_diagonal(c, 0.0)  # an input with itself: correlation exactly 1
    c = np.broadcast_to(c, phi_ab.shape)
    pa = np.broadcast_to(n1 ** 2 / d, (s1.size, x1.shape[0]))
    pb = np.broadcast_to(n2 ** 2 / d, (s2.size, x2.shape[0]))
    cfg = (spec.depth, spec.W_std ** 2, 0.0 if spec.b_std is None else spec.b_std ** 2, spec.parameterization,
           spec.activation, _slopes(spec) if spec.activation not in ("erf", "identity") else (0.0, 0.0), d,
           spec.width, bool(spec.has_bias))
    first, ntk = 0, np.zeros(phi_ab.shape[-2:])
    if _prefix and spec.activation != "erf" and spec.depth >= 2:
        # layer 1 and its activation are scale-free up to factors (see _scale_free_prefix): computed once
        pa1, pb1, phi1, c, ntk = _scale_free_prefix(cfg, pa[0], pb[0], phi_ab[0], c[0])
        pa, pb, phi_ab = s1[:, None] ** 2 * pa1, s2[:, None] ** 2 * pb1, (s1 * s2)[:, None, None] * phi1
        first = 1
    if backend == "jax":
        from .._x64 import x64
        with x64():
            ntk, q_ab = _layers_jax()(cfg, first, s1, s2, pa, pb, phi_ab, c, ntk)
            ntk, q_ab = np.asarray(ntk), np.asarray(q_ab)
    else:
        ntk, q_ab = _layers(np, cfg, first, s1, s2, pa, pb, phi_ab, c, ntk)
    if scalar:
        return CrossScaleKernels(ntk[0], q_ab[0])
    return CrossScaleKernels(ntk, q_ab)


def bivariate_expectation(fn1, fn2, q11, q22, q12, n_points: int = 64) -> float:
    """``E[fn1(u) fn2(v)]`` for ``(u, v) ~ N(0, [[q11, q12], [q12, q22]])`` by tensor Gauss-Hermite
    quadrature with ``n_points`` nodes per axis (exact for polynomials of degree < 2 n_points; for
    functions with kinks, such as ReLU, the error falls only algebraically in ``n_points``)."""
    if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 1:
        raise ValueError(f"n_points must be a positive int, got {n_points!r}")
    cov = np.array([[q11, q12], [q12, q22]], dtype=np.float64)
    if not np.all(np.isfinite(cov)) or q11 < 0 or q22 < 0 or q12 ** 2 > q11 * q22 * (1 + 1e-12):
        raise ValueError(f"(q11, q22, q12) = {(q11, q22, q12)} is not a covariance")
    from scipy.special import roots_hermitenorm
    x, w = roots_hermitenorm(n_points)  # weight exp(-x^2/2)
    w = w / math.sqrt(2 * math.pi)
    l11 = math.sqrt(q11)
    rho = q12 / (l11 * math.sqrt(q22)) if q11 > 0 and q22 > 0 else 0.0
    u = l11 * x[:, None]
    v = math.sqrt(q22) * (rho * x[:, None] + math.sqrt(max(1 - rho * rho, 0.0)) * x[None, :])
    return float(np.sum(w[:, None] * w[None, :] * np.asarray(fn1(u)) * np.asarray(fn2(v))))


__all__ = ["CrossScaleKernels", "cross_scale_kernels", "bivariate_expectation", "check_spec"]
