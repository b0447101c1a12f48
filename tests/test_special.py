"""Per-mode closed form of the L2 flow against an mpmath high-precision reference (issue 3).

The reference solves the mode ODE ``df/dt = -mu e^{-kappa t}(f - y) - beta f`` from its definition:
``P = exp(-int_0^t (mu e^{-kappa s} + beta) ds)`` and ``J = int_0^t mu e^{-kappa s} P(t)/P(s) ds``,
the latter as ``z_t^{1-a} e^{z_t} int_{z_t}^{z_0} w^{a-1} e^{-w} dw`` evaluated with mpmath's incomplete
gamma / E1 at a working precision raised until the difference of the two gamma values is resolved
(cross-checked against ``mpmath.quad`` of the s-integral below).
"""
import warnings

import mpmath as mp
import numpy as np
import pytest

from widelimit.dynamics.special import mode_coefficients, rates, scaled_upper_gamma

RTOL = 1e-10
ATOL = 1e-290   # "absolute where the value is ~0": below this the float64 result may be 0 or subnormal


def _gamma_difference(a, zt, z0):
    """``int_{zt}^{z0} w^{a-1} e^{-w} dw`` with enough digits to survive the subtraction."""
    for extra in (10, 40, 120, 400, 1200):
        with mp.workdps(40 + extra):
            if a == 0:
                hi = mp.e1(zt)
                d = hi - mp.e1(z0)
            else:
                hi = mp.gammainc(a, zt)
                d = hi - mp.gammainc(a, z0)
            if d != 0 and abs(d) > abs(hi) * mp.mpf(10) ** (-(extra - 5)):
                return +d
    raise AssertionError("reference did not resolve the gamma difference")


def reference(mu, t, lam, L):
    """(P, J, J/mu, (e^{-beta t} - P)/mu) at 40 significant digits."""
    with mp.workdps(40):
        mu, t, lam = mp.mpf(mu), mp.mpf(t), mp.mpf(lam)
        kappa, beta = 2 * (L - 1) * lam, L * lam
        if mp.isinf(t):
            if kappa > 0:
                return (0, 0, 0, 0)
            r = mu + beta
            return (0, mu / r, 1 / r, 0 if beta > 0 else 1 / mu)
        if t == 0:
            return (1, 0, 0, 0)
        tau = t if kappa == 0 else -mp.expm1(-kappa * t) / kappa
        P = mp.exp(-beta * t - mu * tau)
        gap = mp.exp(-beta * t) * (-mp.expm1(-mu * tau)) / mu
        if kappa == 0:
            r = mu + beta
            J = mu / r * (-mp.expm1(-r * t))
        else:
            a = mp.mpf(L - 2) / (2 * (L - 1))
            z0 = mu / kappa
            zt = z0 * mp.exp(-kappa * t)
            J = zt ** (1 - a) * mp.exp(zt) * _gamma_difference(a, zt, z0)
        return (P, J, J / mu, gap)


def _quad_reference_J(mu, t, lam, L):
    with mp.workdps(40):
        mu, t, lam = mp.mpf(mu), mp.mpf(t), mp.mpf(lam)
        kappa, beta = 2 * (L - 1) * lam, L * lam
        f = lambda s: mu * mp.exp(-kappa * s - beta * (t - s)
                                  - mu / kappa * (mp.exp(-kappa * s) - mp.exp(-kappa * t)))
        return mp.quad(f, [0, t / 2, t])


def _sample(rng, n):
    """(mu, t, lam, L) over the issue's stress grid, with extra weight on early/late times and on
    the switching points of the implementation."""
    out = []
    while len(out) < n:
        L = int(rng.integers(1, 11))
        lam = 10 ** rng.uniform(-6, 0)
        kappa, beta = rates(lam, L)
        kind = len(out) % 4
        if kind == 0:
            mu, t = 10 ** rng.uniform(-10, 4), 10 ** rng.uniform(-4, 3) / lam
        elif kind == 1:
            mu = 10 ** rng.uniform(-10, 4)
            t = 10 ** rng.uniform(-12, 0.5) / (mu + beta + kappa)
        elif kind == 2 and kappa > 0:
            mu, t = kappa * rng.uniform(1, 4), 10 ** rng.uniform(-4, 3) / lam
        else:
            mu = max(kappa, 1e-6) * 10 ** rng.uniform(0, 9)
            t = rng.uniform(1, 12) / (mu + beta + kappa)
        if 1e-10 <= mu <= 1e4 and t <= 1e3 / lam:
            out.append((mu, t, lam, L))
    return out


def _check_points(points):
    worst = 0.0
    for mu, t, lam, L in points:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with np.errstate(over="raise", invalid="raise", divide="raise"):
                got = mode_coefficients(mu, t, lam, L)
        want = reference(mu, t, lam, L)
        for name, g, w in zip(("P", "J", "J/mu", "gap/mu"),
                              (got.P, got.J, got.J_over_mu, got.gap_over_mu), want):
            g = float(g)
            assert np.isfinite(g), (name, mu, t, lam, L)
            err = abs(mp.mpf(g) - w)
            assert err <= RTOL * abs(w) + ATOL, (name, mu, t, lam, L, g, float(w))
            if abs(w) > ATOL:
                worst = max(worst, float(err / abs(w)))
    return worst


def test_reference_agrees_with_quadrature():
    for mu, t, lam, L in [(1.0, 0.5, 0.1, 2), (1e-3, 1e-2, 0.1, 3), (100.0, 1e-3, 0.01, 5),
                          (1e4, 1e3, 1e-6, 2), (3.0, 20.0, 0.2, 10)]:
        J = reference(mu, t, lam, L)[1]
        assert abs(J - _quad_reference_J(mu, t, lam, L)) <= 1e-25 * abs(J)


def test_stress_grid_fast():
    worst = _check_points(_sample(np.random.default_rng(0), 160))
    assert worst < RTOL


@pytest.mark.slow
def test_stress_grid_big():
    worst = _check_points(_sample(np.random.default_rng(1), 4000))
    assert worst < RTOL


@pytest.mark.parametrize("L", [1, 2, 3, 4, 10])
def test_edges_t0_tinf_and_vectorised_grid(L):
    lam = 0.03
    mu = np.logspace(-10, 4, 57)
    t = np.concatenate([[0.0], np.logspace(-12, np.log10(1e3 / lam), 40), [np.inf]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            c = mode_coefficients(mu[None, :], t[:, None], lam, L)
    for arr in c:
        assert arr.shape == (t.size, mu.size) and np.all(np.isfinite(arr))
    assert np.all(c.P[0] == 1.0) and np.all(c.J[0] == 0.0) and np.all(c.gap_over_mu[0] == 0.0)
    if L >= 2:
        assert np.all(c.P[-1] == 0.0) and np.all(c.J[-1] == 0.0)
    else:   # ridge: J(inf) = mu / (mu + lam)
        np.testing.assert_allclose(c.J[-1], mu / (mu + lam), rtol=1e-14)
    # 0 <= P, 0 <= J, P + J <= 1 (f with f0 = y = 1 never exceeds 1 and stays >= 0)
    assert np.all(c.P >= 0) and np.all(c.J >= 0) and np.all(c.P + c.J <= 1 + 1e-14)
    # the vectorised result equals the scalar one on a few entries
    for i, j in [(5, 3), (20, 40), (35, 56)]:
        s = mode_coefficients(mu[j], t[i], lam, L)
        assert float(s.J) == c.J[i, j] and float(s.P) == c.P[i, j]


def test_lambda_zero_is_plain_ntk_flow():
    mu = np.logspace(-10, 4, 30)[None, :]
    t = np.concatenate([[0.0], np.logspace(-6, 6, 20)])[:, None]
    for L in (1, 2, 5):
        c = mode_coefficients(mu, t, 0.0, L)
        np.testing.assert_allclose(c.P, np.exp(-mu * t), rtol=1e-15, atol=0)
        np.testing.assert_allclose(c.J, -np.expm1(-mu * t), rtol=1e-15, atol=0)
        np.testing.assert_allclose(c.J_over_mu, -np.expm1(-mu * t) / mu, rtol=1e-14, atol=0)
        np.testing.assert_allclose(c.gap_over_mu, c.J_over_mu, rtol=1e-15, atol=0)


@pytest.mark.parametrize("L", [1, 2, 3, 7])
def test_mu_to_zero_limits_are_finite_and_continuous(L):
    """J/mu and (e^{-beta t} - P)/mu at mu = 0 are the limits of those at tiny mu."""
    lam = 0.1
    kappa, beta = rates(lam, L)
    t = np.array([1e-3, 0.7, 5.0, 60.0])
    c0 = mode_coefficients(0.0, t, lam, L)
    c1 = mode_coefficients(1e-13, t, lam, L)
    np.testing.assert_allclose(c0.J_over_mu, c1.J_over_mu, rtol=1e-11)
    np.testing.assert_allclose(c0.gap_over_mu, c1.gap_over_mu, rtol=1e-11)
    # analytic mu = 0 limits: int_0^t e^{-kappa s - beta (t - s)} ds and e^{-beta t} tau(t)
    tau = t if kappa == 0 else -np.expm1(-kappa * t) / kappa
    np.testing.assert_allclose(c0.gap_over_mu, np.exp(-beta * t) * tau, rtol=1e-14)
    d = kappa - beta
    want = t * np.exp(-beta * t) if d == 0 else np.exp(-beta * t) * -np.expm1(-d * t) / d
    np.testing.assert_allclose(c0.J_over_mu, want, rtol=1e-13)
    assert np.all(c0.J == 0.0)


def test_negative_eigenvalues_clip_to_zero():
    c = mode_coefficients(np.array([-1e-17, 0.0]), 2.0, 0.1, 3)
    assert c.J_over_mu[0] == c.J_over_mu[1] and c.P[0] == c.P[1]


@pytest.mark.parametrize("a", [0.0, 0.25, 1 / 3, 4 / 9])
def test_scaled_upper_gamma(a):
    z = np.concatenate([[0.0], np.logspace(-300, 300, 61), np.logspace(-1, 1.5, 40), [1.4999, 1.5]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        u = scaled_upper_gamma(a, z)
    assert u[0] == 0.0 and np.all((u[1:] > 0) & (u[1:] <= 1))
    order = np.argsort(z, kind="stable")          # U(a, z) increases from 0 to 1 with z (z unsorted here)
    assert np.all(np.diff(u[order]) >= -1e-15 * u[order][1:])
    for zi, ui in zip(z[1:], u[1:]):
        with mp.workdps(40):
            zz = mp.mpf(zi)
            g = mp.e1(zz) if a == 0 else mp.gammainc(mp.mpf(a), zz)
            want = zz ** (1 - mp.mpf(a)) * mp.exp(zz) * g
        # a and b = 1 - a are float64-rounded: z^b carries a relative error ~ 1e-16 |log z|
        assert abs(mp.mpf(ui) - want) <= 1e-14 * (1 + abs(np.log(zi))) * want, (a, zi)


def test_bad_a_rejected():
    with pytest.raises(ValueError, match="a must be"):
        scaled_upper_gamma(1.0, np.ones(3))
