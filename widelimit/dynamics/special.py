"""Stable per-mode closed form of the NTK-regime gradient flow with L2 (NumPy float64).

One eigenmode (eigenvalue ``mu`` of the normalised kernel ``Theta_0 / (N K)``) of the infinite-width
MSE flow of an L-homogeneous network with L2 coefficient ``lam`` obeys

    df/dt = -mu exp(-kappa t) (f - y) - beta f,      kappa = 2 (L - 1) lam,  beta = L lam,

(time ``t`` is physical time, ``t = eta * steps``). Its solution is ``f(t) = P(t) f(0) + J(t) y`` with

    P(t) = exp(-beta t - mu tau(t)),                 tau(t) = (1 - exp(-kappa t)) / kappa,
    J(t) = int_0^t mu exp(-kappa s) P(t) / P(s) ds
         = z_t^{1-a} e^{z_t} [Gamma(a, z_t) - Gamma(a, z_0)],
    a = 1 - beta / kappa = (L - 2) / (2 (L - 1)),     z_0 = mu / kappa,   z_t = z_0 exp(-kappa t).

``kappa = 0`` (``L = 1`` or ``lam = 0``) is the ridge / plain NTK flow with rate ``r = mu + beta``:
``P = exp(-r t)``, ``J = (mu / r)(1 - exp(-r t))``.

The naive gamma formula multiplies ``exp(mu / kappa)`` by a difference of two nearly equal numbers.
This module evaluates ``J`` without overflow or cancellation, choosing per element one of

* **series** (``z_0 <= 2``): ``J = z_0 e^{-beta t} e^{z_t} sum_n (-z_0)^n / n! * h_{n+a}(kappa t)`` with
  ``h_c(x) = (1 - e^{-c x}) / c`` (``h_0(x) = x``), every term free of cancellation;
* **quadrature** (``z_0 > 2`` and ``t (mu + beta + kappa) <= 4``): Gauss-Legendre on the positive
  integrand of ``J / mu`` over ``[0, t]`` (early times, where ``J ~ mu t`` is small);
* **scaled gamma** (otherwise): ``J = U(a, z_t) - P(t) U(a, z_0)`` with the bounded scaled function
  ``U(a, z) = z^{1-a} e^z Gamma(a, z) = int_0^inf e^{-u} (1 + u/z)^{a-1} du`` in ``(0, 1]``
  (continued fraction for ``z >= 1.5``, power series below). In this regime ``P U(a, z_0) <= U(a, z_t)/2``.

The test-point formula needs ``J / mu`` and ``(e^{-beta t} - P) / mu``; both are returned directly and
stay finite as ``mu -> 0``. Accuracy against an mpmath reference is ~1e-13 relative
(``tests/test_special.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from scipy.special import gamma as _gamma_fn

_EULER_GAMMA = 0.57721566490153286061
_Z_SERIES = 2.0          # z_0 at or below which the difference series is used
_QUAD_SCALE = 4.0        # t * (mu + beta + kappa) at or below which quadrature is used
_U_CF_MIN = 1.5          # z at or above which U uses the continued fraction
_U_ASYMPTOTIC = 1e15     # z above which U = 1 - (1 - a)/z to double precision
_LOG_TINY_Z = math.log(1e-150)  # below: U(a, z) from its leading term in log z
_GL_X, _GL_W = np.polynomial.legendre.leggauss(32)


@dataclass(frozen=True)
class ModeCoefficients:
    """Per-mode coefficients of ``f(t) = P f(0) + J y`` (all float64, broadcast shape of ``mu``, ``t``).
    Iterates over its five arrays in field order (``ModeCoefficients(*(g(x) for x in c))`` maps them).

    * ``P``: propagator of the initial value, ``exp(-beta t - mu tau)``;
    * ``J``: gain of the target;
    * ``decay``: ``exp(-beta t)``, the decay of any output that the kernel does not touch;
    * ``J_over_mu``: ``J / mu``, finite as ``mu -> 0``;
    * ``gap_over_mu``: ``(exp(-beta t) - P) / mu``, finite as ``mu -> 0``.
    """

    P: np.ndarray
    J: np.ndarray
    decay: np.ndarray
    J_over_mu: np.ndarray
    gap_over_mu: np.ndarray

    def __iter__(self):
        return iter(tuple(getattr(self, f.name) for f in fields(self)))


def rates(lam: float, L: int) -> tuple[float, float]:
    """``(kappa, beta) = (2 (L - 1) lam, L lam)``: kernel decay rate and output decay rate (1/time)."""
    return 2.0 * (L - 1) * lam, float(L) * lam


def _phi1(x: np.ndarray) -> np.ndarray:
    """``(1 - exp(-x)) / x`` for ``x >= 0`` (1 at 0, 0 at inf)."""
    x = np.asarray(x, dtype=np.float64)
    ok = (x > 0) & np.isfinite(x)
    xs = np.where(ok, x, 1.0)
    return np.where(ok, -np.expm1(-xs) / xs, np.where(x == 0, 1.0, 0.0))


def effective_time(t: np.ndarray, kappa: float) -> np.ndarray:
    """``tau(t) = int_0^t exp(-kappa s) ds = (1 - exp(-kappa t)) / kappa`` (``t`` if ``kappa = 0``)."""
    t = np.asarray(t, dtype=np.float64)
    if kappa == 0.0:
        return t.copy()
    return t * _phi1(kappa * t)


def scaled_upper_gamma(a: float, z: np.ndarray) -> np.ndarray:
    """``U(a, z) = z^{1-a} e^z Gamma(a, z) = int_0^inf e^{-u} (1 + u/z)^{a-1} du`` for ``0 <= a < 1``.

    Bounded in ``[0, 1]``, increasing in ``z``; ``U(a, 0) = 0``, ``U(a, z) -> 1 - (1-a)/z`` as
    ``z -> inf``. ``a = 0`` gives ``z e^z E1(z)``.
    """
    if not 0.0 <= a < 1.0:
        raise ValueError(f"a must be in [0, 1), got {a}")
    z = np.asarray(z, dtype=np.float64)
    out = np.zeros_like(z)
    big = z > _U_ASYMPTOTIC
    out[big] = 1.0 - (1.0 - a) / z[big]
    cf = (z >= _U_CF_MIN) & ~big
    if cf.any():
        out[cf] = _u_continued_fraction(a, z[cf])
    small = (z > 0) & (z < _U_CF_MIN)
    if small.any():
        out[small] = _u_series(a, z[small])
    return out


# (upper z bound, depth) for the continued fraction: depths are ~1.3x the number of Lentz steps
# to reach |delta - 1| < 1e-16 at the lower end of each band (measured for a in [0, 1/2)).
_CF_BANDS = ((3.0, 84), (10.0, 50), (50.0, 22), (1e3, 12), (np.inf, 6))


def _u_continued_fraction(a: float, z: np.ndarray) -> np.ndarray:
    """``U = z / (b_0 + a_1/(b_1 + a_2/(b_2 + ...)))``, Legendre's continued fraction for Gamma(a, z)
    (``b_i = z + 2i + 1 - a``, ``a_i = -i (i - a)``), evaluated bottom-up at a depth set per band of z."""
    out = np.empty_like(z)
    lo = 0.0
    for hi, depth in _CF_BANDS:
        sel = (z >= lo) & (z < hi)
        lo = hi
        if not sel.any():
            continue
        zs = z[sel]
        tail = zs + (2 * depth + 1 - a)
        for i in range(depth, 0, -1):
            tail = zs + (2 * i - 1 - a) - i * (i - a) / tail
        out[sel] = zs / tail
    return out


def _lower_series(a: float, z: np.ndarray) -> np.ndarray:
    """``sum_n z^n / (a)_{n+1}`` (positive terms), ``= z^{-a} e^z gamma(a, z)``, for ``a > 0``."""
    term = np.full_like(z, 1.0 / a)
    total = term.copy()
    for n in range(1, 200):
        term = term * z / (a + n)
        total += term
        if np.all(term <= 1e-17 * total):
            break
    return total


def _u_series(a: float, z: np.ndarray) -> np.ndarray:
    """U(a, z) for ``0 < z < 1.5`` from the power series of the lower incomplete gamma / E1."""
    if a == 0.0:
        term = z.copy()             # Ein(z) = sum_{n>=1} (-1)^{n+1} z^n / (n n!)
        ein = z.copy()
        for n in range(2, 32):      # 1.5^31 / 31! < 1e-28
            term = -term * z / n
            ein += term / n
        return z * np.exp(z) * (-_EULER_GAMMA - np.log(z) + ein)
    b = 1.0 - a
    return _gamma_fn(a) * z ** b * np.exp(z) - z * _lower_series(a, z)


def _u_tiny(a: float, log_z: np.ndarray) -> np.ndarray:
    """U(a, z) for ``z = exp(log_z) < 1e-150`` (z itself may underflow): leading term only.

    ``a > 0``: ``Gamma(a) z^{1-a}`` (next term ``z / a`` is ``< z^a ~ 1e-37`` relative);
    ``a = 0``: ``z (-log z - gamma_E)``.
    """
    if a == 0.0:
        return np.exp(log_z) * (-log_z - _EULER_GAMMA)
    return _gamma_fn(a) * np.exp((1.0 - a) * log_z)


def mode_coefficients(mu, t, lam: float, L: int) -> ModeCoefficients:
    """Closed-form coefficients of one eigenmode of the L2 flow, broadcast over ``mu`` and ``t``.

    Args:
      mu: eigenvalue(s) of the normalised NTK ``Theta_0/(N K)`` (1/time); negative values (round-off)
        are treated as 0.
      t: physical time(s) ``eta * steps``, ``>= 0``, may be ``np.inf``.
      lam: L2 coefficient (penalty ``(lam/2)||theta||^2``), ``>= 0``.
      L: homogeneity degree of the network in its parameters, ``>= 1``.

    Returns:
      :class:`ModeCoefficients` with arrays of the broadcast shape of ``mu`` and ``t``.

    Conventions at ``t = inf``: ``L >= 2, lam > 0``: everything is 0. ``kappa = 0`` (``L = 1`` or
    ``lam = 0``) with rate ``r = mu + beta > 0``: ``J = mu / r``; a mode with ``r = 0`` is never
    learned and its ``J / mu`` is set to 0 (pseudo-inverse convention).
    """
    mu, t = np.broadcast_arrays(np.asarray(mu, dtype=np.float64), np.asarray(t, dtype=np.float64))
    shape = mu.shape
    mu = np.maximum(mu.ravel(), 0.0)
    t = t.ravel().copy()
    kappa, beta = rates(lam, L)
    with np.errstate(over="ignore", under="ignore"):
        if kappa == 0.0:
            res = _coeffs_no_decay(mu, t, beta)
        else:
            res = _coeffs_decaying(mu, t, kappa, beta, L)
    return ModeCoefficients(*(r.reshape(shape) for r in res))


def _coeffs_no_decay(mu: np.ndarray, t: np.ndarray, beta: float):
    """kappa = 0: ``df/dt = -mu (f - y) - beta f`` (ridge flow for L = 1; plain NTK flow for lam = 0)."""
    r = mu + beta
    inf = np.isinf(t)
    tf = np.where(inf, 0.0, t)
    P = np.where(inf, 0.0, np.exp(-r * tf))
    P = np.where(inf & (r == 0), 1.0, P)
    decay = np.where(inf, 0.0 if beta > 0 else 1.0, np.exp(-beta * tf))
    j_mu = tf * _phi1(r * tf)
    with np.errstate(divide="ignore"):
        j_inf = np.where(r > 0, 1.0 / np.where(r > 0, r, 1.0), 0.0)
    j_mu = np.where(inf, j_inf, j_mu)
    gap_mu = decay * tf * _phi1(mu * tf)
    gap_inf = 0.0 if beta > 0 else np.where(mu > 0, 1.0 / np.where(mu > 0, mu, 1.0), 0.0)
    gap_mu = np.where(inf, gap_inf, gap_mu)
    return P, mu * j_mu, decay, j_mu, gap_mu


def _coeffs_decaying(mu: np.ndarray, t: np.ndarray, kappa: float, beta: float, L: int):
    """kappa > 0 (L >= 2, lam > 0)."""
    a = (L - 2) / (2.0 * (L - 1))
    n = mu.size
    P = np.zeros(n)
    decay = np.zeros(n)
    j_mu = np.zeros(n)
    gap_mu = np.zeros(n)
    fin = np.isfinite(t)
    tf = np.where(fin, t, 0.0)
    tau = effective_time(tf, kappa)
    decay[fin] = np.exp(-beta * tf[fin])
    P[fin] = np.exp(-beta * tf[fin] - mu[fin] * tau[fin])
    gap_mu[fin] = decay[fin] * tau[fin] * _phi1(mu[fin] * tau[fin])

    z0 = mu / kappa
    pos = fin & (tf > 0)
    series = pos & (z0 <= _Z_SERIES)
    quad = pos & ~series & (tf * (mu + beta + kappa) <= _QUAD_SCALE)
    gam = pos & ~series & ~quad
    if series.any():
        j_mu[series] = _j_over_mu_series(a, z0[series], tf[series], kappa, beta)
    if quad.any():
        j_mu[quad] = _j_over_mu_quadrature(mu[quad], tf[quad], kappa, beta)
    if gam.any():
        log_zt = np.log(z0[gam]) - kappa * tf[gam]
        tiny = log_zt < _LOG_TINY_Z
        u_t = np.empty_like(log_zt)
        u_t[~tiny] = scaled_upper_gamma(a, np.exp(log_zt[~tiny]))
        u_t[tiny] = _u_tiny(a, log_zt[tiny])
        J = u_t - P[gam] * scaled_upper_gamma(a, z0[gam])
        j_mu[gam] = J / mu[gam]
    return P, mu * j_mu, decay, j_mu, gap_mu


# (upper z0 bound, number of terms): z0^n / n! < 1e-19 beyond the last term in each band
_SERIES_BANDS = tuple((z, next(n for n in range(1, 60) if z ** n / math.factorial(n) < 1e-19)) for z in
                      (1e-6, 1e-3, 0.05, 0.5, _Z_SERIES))


def _j_over_mu_series(a: float, z0: np.ndarray, t: np.ndarray, kappa: float, beta: float):
    """``J/mu = e^{-beta t} e^{z_t} / kappa * sum_n (-z0)^n/n! h_{n+a}(kappa t)`` for ``z0 <= 2``,
    ``h_c(x) = (1 - e^{-c x}) / c`` (``h_0(x) = x``); the alternating sum loses at most ``e^{2 z0}``.

    ``e^{-(n+a) x}`` comes from running products where ``x >= 0.7`` (no cancellation in ``1 - e^{-c x}``
    there) and from ``expm1`` below.
    """
    x = kappa * t
    total = np.zeros_like(z0)
    lo = -1.0
    for hi, n_terms in _SERIES_BANDS:
        for big in (False, True):
            sel = (z0 > lo) & (z0 <= hi) & ((x >= 0.7) if big else (x < 0.7))
            if not sel.any():
                continue
            zs, xs = z0[sel], x[sel]
            coef = np.ones_like(zs)
            acc = np.zeros_like(zs)
            if big:
                q = np.exp(-xs)
                p = np.exp(-a * xs)
            for n in range(n_terms + 1):
                c = n + a
                if c == 0.0:
                    h = xs
                elif big:
                    h = (1.0 - p) / c
                else:
                    h = -np.expm1(-c * xs) / c
                acc += coef * h
                coef = coef * (-zs) / (n + 1)
                if big:
                    p = p * q
            total[sel] = acc
        lo = hi
    zt = z0 * np.exp(-x)
    return np.exp(-beta * t + zt) * total / kappa


def _j_over_mu_quadrature(mu: np.ndarray, t: np.ndarray, kappa: float, beta: float):
    """``J/mu = int_0^t exp(-kappa s - beta (t-s) - mu e^{-kappa s} tau(t-s)) ds`` by 32-point Gauss-Legendre."""
    half = 0.5 * t[:, None]
    s = half * (1.0 + _GL_X[None, :])
    u = t[:, None] - s
    tau_u = u * _phi1(kappa * u)
    expo = -kappa * s - beta * u - mu[:, None] * np.exp(-kappa * s) * tau_u
    return half[:, 0] * (np.exp(expo) @ _GL_W)


__all__ = ["ModeCoefficients", "mode_coefficients", "rates", "effective_time", "scaled_upper_gamma"]
