"""Lion and Muon on scale-invariant groups: closed forms against exact simulations of optax.lion and
optax.contrib.muon (docs/theory.md §6), the published Lion formula, validity flags and input checks.

The objective is noise-only and scale-invariant: the gradient at ``w`` is ``P_w xi / ||w||`` with fresh
Gaussian ``xi`` each step (``P_w`` the projection tangent to ``w``), i.e. the gradient of a loss of
``w/||w||`` dominated by minibatch noise. The optimisers are optax's own.
"""
import math

import numpy as np
import pytest

from widelimit.dynamics import norms as N
from widelimit.dynamics import norms_update as U
from widelimit.dynamics.norms_optim import make_optimizer
from widelimit.validity import Validity

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402


def simulate(tx, shape, steps, x0, seeds=4):
    """``||w_k||^2`` (k = 1..steps) and the angle of every step, per seed, for optax transformation ``tx``."""
    def one(key):
        k0, key = jax.random.split(key)
        w = jax.random.normal(k0, shape)
        w = w / jnp.linalg.norm(w) * jnp.sqrt(x0)
        st = tx.init(w)

        def body(c, k):
            w, st = c
            xi = jax.random.normal(k, shape)
            g = (xi - jnp.sum(xi * w) / jnp.sum(w * w) * w) / jnp.linalg.norm(w)
            upd, st = tx.update(g, st, w)
            w2 = optax.apply_updates(w, upd)
            par = jnp.sum(w2 * w) / jnp.linalg.norm(w)
            perp = jnp.sqrt(jnp.maximum(jnp.sum(w2 * w2) - par ** 2, 0.0))
            return (w2, st), (jnp.sum(w2 * w2), jnp.arctan2(perp, par))
        _, out = jax.lax.scan(body, (w, st), jax.random.split(key, steps))
        return out
    x, ang = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(0), seeds))
    return np.asarray(x, dtype=np.float64), np.asarray(ang, dtype=np.float64)


LION_CASES = [  # eta, lam, b1, b2: eta*lam/(1-b2) = 0.1 (the (1-eta lam)^j factor matters) and 0.015
    (1e-3, 1.0, 0.9, 0.99),
    pytest.param(3e-4, 1.0, 0.95, 0.98, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("eta,lam,b1,b2", LION_CASES)
def test_lion_equilibrium_against_optax(eta, lam, b1, b2):
    shape, d = (32, 32), 1024
    eq = N.equilibrium("lion", eta, lam, d=d, b1=b1, b2=b2)
    tau = float(eq.relaxation_steps)
    n = int(7 * tau)
    x, ang = simulate(optax.lion(eta, b1, b2, weight_decay=lam), shape, n, 0.5 * float(eq.norm_sq))
    late = slice(int(3 * tau), n)
    assert x[:, late].mean() == pytest.approx(float(eq.norm_sq), rel=0.05)
    assert math.sqrt(np.mean(ang[:, late] ** 2)) == pytest.approx(float(eq.angular_update), rel=0.03)
    # the trajectory from 0.5 x* and zero buffers: the start-up (updates less coherent, the norm first
    # shrinks) and the growth term (older gradients larger while the norm grows) are in the map
    traj = N.solve_norm_map("lion", learning_rate=eta, weight_decay=lam, n_steps=n,
                            norm_sq0=0.5 * float(eq.norm_sq), d=d, b1=b1, b2=b2)
    xm = x.mean(0)
    k0 = int(1 / (1 - b2))
    np.testing.assert_allclose(traj.norm_sq[1:k0 + 1, 0], xm[:k0], rtol=0.01)
    np.testing.assert_allclose(traj.norm_sq[1:, 0], xm, rtol=0.03)
    # relaxation: e-folding of ||w||^2, fitted on the mean trajectory after the start-up
    tau_fit = N.fit_relaxation_time(np.arange(3 * k0, n), xm[3 * k0:])[0]
    assert tau_fit == pytest.approx(tau, rel=0.10)


def test_lion_published_formula():
    # the small-eta*lam limit of the exact arcsin law is within 1% of the published angle at optax's betas
    for b1, b2 in ((0.9, 0.99), (0.95, 0.98), (0.9, 0.999)):
        pub = float(U.lion_angle_published(1e-5, 1.0, b1, b2))
        ours = float(N.equilibrium("lion", 1e-5, 1.0, d=100, b1=b1, b2=b2).angular_update)
        assert ours == pytest.approx(pub, rel=0.03)
    assert float(U.lion_angle_published(1e-5, 1.0)) == pytest.approx(
        float(N.equilibrium("lion", 1e-5, 1.0, d=100).angular_update), rel=0.01)
    # against the optax simulation where eta*lam/(1-b2) is small (0.03): within 3%
    eta, lam, b1, b2 = 1e-3, 0.3, 0.9, 0.99
    eq = N.equilibrium("lion", eta, lam, d=1024, b1=b1, b2=b2)
    tau = float(eq.relaxation_steps)
    n = int(6 * tau)
    x, ang = simulate(optax.lion(eta, b1, b2, weight_decay=lam), (32, 32), n, float(eq.norm_sq), seeds=2)
    rms = math.sqrt(np.mean(ang[:, int(2 * tau):] ** 2))
    assert rms == pytest.approx(float(U.lion_angle_published(eta, lam, b1, b2)), rel=0.03)


MUON_CASES = [  # shape, beta, nesterov
    ((32, 32), 0.95, True),
    pytest.param((16, 64), 0.9, True, marks=pytest.mark.slow),
    pytest.param((64, 16), 0.95, False, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("shape,beta,nesterov", MUON_CASES)
def test_muon_equilibrium_against_optax(shape, beta, nesterov):
    from optax.contrib import muon
    eta, lam = 0.02, 0.1
    eq = N.equilibrium("muon", eta, lam, shape=shape, b1=beta, nesterov=nesterov)
    tau = float(eq.relaxation_steps)
    n = int(7 * tau)
    x, ang = simulate(muon(eta, beta=beta, weight_decay=lam, nesterov=nesterov), shape, n,
                      0.5 * float(eq.norm_sq))
    late = slice(int(3 * tau), n)
    assert x[:, late].mean() == pytest.approx(float(eq.norm_sq), rel=0.05)
    assert math.sqrt(np.mean(ang[:, late] ** 2)) == pytest.approx(float(eq.angular_update), rel=0.03)
    ode = N.solve_norm_ode("muon", learning_rate=eta, weight_decay=lam, n_steps=n, norm_sq0=0.5 * float(eq.norm_sq),
                           shape=shape, b1=beta, nesterov=nesterov)
    np.testing.assert_allclose(ode.norm_sq[1:, 0], x.mean(0), rtol=0.03)


def test_muon_update_norm_matches_optax_newton_schulz():
    """F0 = ||NS(C/||C||)||^2 and the cosine alpha from Marchenko--Pastur quantiles (the large-matrix limit)
    vs optax's own orthogonalisation of Gaussian matrices; exact orthogonalisation gives min(m, n)."""
    from optax.contrib._muon import orthogonalize_via_newton_schulz
    rng = np.random.default_rng(0)
    opt = make_optimizer("muon")
    coeffs = jnp.asarray(opt.ns_coeffs)
    ns = jax.jit(jax.vmap(lambda c: orthogonalize_via_newton_schulz(c, coeffs, 5)))
    for shape in ((48, 48), (24, 96), (96, 24)):
        C = rng.normal(size=(16,) + shape).astype(np.float32)
        O = np.asarray(ns(jnp.asarray(C)), dtype=np.float64)
        F_meas = np.mean(np.sum(O ** 2, axis=(1, 2)))
        cos = np.mean(np.sum(O * C, axis=(1, 2)) / np.sqrt(np.sum(O ** 2, axis=(1, 2)) * np.sum(C ** 2, axis=(1, 2))))
        F0, alpha = U.muon_spectrum_stats(opt, shape)
        assert F0 == pytest.approx(F_meas, rel=0.02)
        assert alpha == pytest.approx(cos, rel=0.01)
        assert U.muon_spectrum_stats(make_optimizer("muon", exact_orthogonalisation=True), shape)[0] == \
            pytest.approx(min(shape), rel=1e-9)
    # optax's scale_by_shape factor
    assert U.muon_shape_scale(opt, (16, 64)) == pytest.approx(2.0)
    assert U.muon_shape_scale(opt, (64, 16)) == pytest.approx(1.0)
    assert U.muon_shape_scale(make_optimizer("muon", consistent_rms=0.2), (16, 64)) == pytest.approx(1.6)


def test_coherence_sums_match_the_series():
    """D against a direct sum over the impulse responses (the closed-form rho_j must equal the
    autocorrelation of a_j), for Lion and both Muon variants."""
    for opt in (make_optimizer("lion"), make_optimizer("lion", b1=0.5, b2=0.9), make_optimizer("muon"),
                make_optimizer("muon", b1=0.8, nesterov=False)):
        a = U.response_coefficients(opt, 6000)
        assert float(np.sum(a)) == pytest.approx(1.0, rel=1e-9)
        assert float(np.sum(a * a)) == pytest.approx(U.response_sq(opt), rel=1e-9)
        ac = np.correlate(a, a, "full")[a.size - 1:][:40] / np.sum(a * a)
        np.testing.assert_allclose(U.correlation(opt, np.arange(40)), ac, rtol=1e-9, atol=1e-14)
    # the decay factor: D decreases with eta*lam; at eta*lam = 0 Lion's D is the arcsin sum
    o = make_optimizer("lion")
    assert U.coherence(o, decay=1e-3) < U.coherence(o, decay=0.0)
    j = np.arange(1, 20000)
    direct = 1 + 4 / np.pi * np.sum(np.arcsin(U.correlation(o, j)))
    assert U.coherence(o) == pytest.approx(direct, rel=1e-9)


def test_lion_and_muon_closed_forms_consistent_with_map():
    for name, kw in (("lion", dict(d=500)), ("muon", dict(shape=(20, 40)))):
        eta, lam = 0.01, 0.2
        eq = N.equilibrium(name, eta, lam, **kw)
        x_star, tau = float(eq.norm_sq), float(eq.relaxation_steps)
        r = N.solve_norm_map(name, learning_rate=eta, weight_decay=lam, n_steps=int(30 * tau), norm_sq0=1.0, **kw)
        assert r.norm_sq[-1, 0] == pytest.approx(x_star, rel=1e-6)
        assert r.angular_update[-1, 0] == pytest.approx(float(eq.angular_update), rel=1e-2)
        # a small kick after equilibrium relaxes with the predicted time (growth term included)
        n = int(8 * tau)
        kick = N.solve_norm_map(name, learning_rate=eta, weight_decay=lam, n_steps=int(10 * tau) + n,
                                norm_sq0=1.0, **kw)
        base = kick.norm_sq[-n - 1:, 0]
        k = np.arange(n + 1)
        tr = N.norm_sq_trajectory(name, k, learning_rate=eta, weight_decay=lam, norm_sq0=1.02 * x_star, **kw)
        assert N.fit_relaxation_time(k, tr)[0] == pytest.approx(tau, rel=1e-3)
        assert base[-1] == pytest.approx(x_star, rel=1e-6)
        # without weight decay ||w||^2 grows linearly at eta^2 F D per step
        g = N.norm_sq_trajectory(name, 100.0, learning_rate=eta, weight_decay=0.0, norm_sq0=1.0, **kw)
        opt = make_optimizer(name)
        F = U.update_norm_sq(opt, kw.get("d"), kw.get("shape"))
        assert float(g) == pytest.approx(1.0 + 100 * eta ** 2 * F * U.coherence(opt, kw.get("shape")), rel=1e-9)
    # the map's own relaxation from a kick at equilibrium (stationary buffers) matches relaxation_steps:
    # iterate the map written out here, with the growth term
    opt = make_optimizer("lion")
    el = 1e-3
    D, Dp = U.coherence(opt, decay=el), U.coherence_slope(opt, decay=el)
    src = 1e-6 * 100 * D
    xs = src / (el * (2 - el))
    x, prev, out = 1.05 * xs, 1.05 * xs, []
    for _ in range(3000):
        x, prev = (1 - el) ** 2 * x + src + 1e-6 * 100 * Dp * np.log(x / prev), x
        out.append(x)
    tau_map = N.fit_relaxation_time(np.arange(3000), np.asarray(out))[0]
    assert tau_map == pytest.approx(float(U.relaxation_steps(opt, None, el)), rel=0.02)


def test_validity_flags():
    below = N.equilibrium("sgd", 1.0, 0.5, grad_norm_sq=1.0)
    assert below.validity.item() is Validity.BELOW_STEP and float(below.relaxation_steps) < 1
    fast = N.equilibrium("adamw", 0.1, 0.5, d=100)       # tau = 10 steps < 1/(1-b2) = 1000
    assert fast.validity.item() is Validity.TOO_FAST
    ok = N.equilibrium("lion", 1e-4, 0.1, d=100)
    assert ok.validity.item() is Validity.OK
    grid = N.equilibrium("adamw", np.array([1e-6, 0.9]), 1.0, d=100)   # tau = 1/(2 eta lam)
    assert list(grid.validity) == [Validity.OK, Validity.BELOW_STEP]
    assert N.equilibrium("lion", 0.9, 1.0, d=100).validity.item() is not Validity.OK
    for name, kw in (("lion", dict(d=10)), ("muon", dict(shape=(4, 4))), ("sgd", dict(grad_norm_sq=1.0))):
        with pytest.raises(ValueError, match="learning_rate \\* weight_decay"):
            N.equilibrium(name, 2.0, 0.5, **kw)


@pytest.mark.parametrize("name,kw,match", [
    ("lion", dict(), "d"),
    ("muon", dict(), "shape"),
    ("muon", dict(shape=(4,)), "shape"),
    ("muon", dict(shape=(4, 0)), "shape"),
    ("muon", dict(shape=(4, 4), d=17), "disagrees"),
    ("lion", dict(d=10, b2=1.0), "b2"),
    ("muon", dict(shape=(4, 4), ns_steps=0), "ns_steps"),
    ("muon", dict(shape=(4, 4), consistent_rms=-1.0), "consistent_rms"),
])
def test_bad_input(name, kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        N.equilibrium(name, 0.01, 0.1, **kw)
    with pytest.raises((ValueError, TypeError), match=match):
        N.solve_norm_map(name, learning_rate=0.01, weight_decay=0.1, n_steps=5, norm_sq0=1.0, **kw)
