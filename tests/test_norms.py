"""Scale-invariant norm dynamics: solvers, closed forms, schedules, predictions and input checks.

Closed forms are checked by differentiating them against the ODE written out here independently, the
solvers against each other and against literature values (docs/theory.md §6), and the SGD map against
a direct scalar recursion.
"""
import math

import numpy as np
import pytest

from widelimit.dynamics import norms as N
from widelimit.dynamics.norms_schedules import as_series
from widelimit.predict_norms import norm_prediction_table, norm_predictions

SGD_FAMILY = [("sgd", {}), ("momentum", {"momentum": 0.9}), ("nesterov", {"momentum": 0.9})]
ALL = SGD_FAMILY + [("adamw", {}), ("adam", {})]


def ode_rhs(name, x, eta, lam, G, d, mu=0.0, b1=0.9):
    """The slow ODE dx/dk written out per optimiser (eps = 0, lam^2 x^2 << G)."""
    S = 1.0 / (1.0 - mu)
    if name in ("sgd", "momentum", "nesterov"):
        return -2 * eta * lam * S * x + eta ** 2 * S ** 2 * G / x
    if name == "adamw":
        return -2 * eta * lam * x + eta ** 2 * d
    return -2 * eta * lam * np.sqrt(d / G) * x ** 1.5 + eta ** 2 * d


# ------------------------------------------------------------------------------------------------
# closed forms
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,kw", ALL)
@pytest.mark.parametrize("ratio", [0.2, 3.0])
def test_trajectory_solves_the_ode(name, kw, ratio):
    eta, lam, G, d = 0.01, 0.02, 2.0, 300
    eq = N.equilibrium(name, eta, lam, grad_norm_sq=G, d=d, **kw)
    x0 = ratio * float(eq.norm_sq)
    k = np.linspace(0, 4 * float(eq.relaxation_steps), 201)
    x = N.norm_sq_trajectory(name, k, learning_rate=eta, weight_decay=lam, norm_sq0=x0, grad_norm_sq=G, d=d, **kw)
    assert x[0] == pytest.approx(x0, rel=1e-12)
    h = 1e-4 * float(eq.relaxation_steps)
    xp = N.norm_sq_trajectory(name, k + h, learning_rate=eta, weight_decay=lam, norm_sq0=x0, grad_norm_sq=G, d=d, **kw)
    xm = N.norm_sq_trajectory(name, np.maximum(k - h, 0), learning_rate=eta, weight_decay=lam, norm_sq0=x0,
                              grad_norm_sq=G, d=d, **kw)
    deriv = (xp - xm) / (k + h - np.maximum(k - h, 0))
    rhs = ode_rhs(name, x, eta, lam, G, d, kw.get("momentum", 0.0))
    scale = np.max(np.abs(rhs))
    np.testing.assert_allclose(deriv[1:], rhs[1:], rtol=1e-5, atol=1e-7 * scale)
    # it approaches the equilibrium monotonically
    dev = np.abs(x - float(eq.norm_sq))
    assert np.all(np.diff(dev) <= 1e-12 * float(eq.norm_sq)) and dev[-1] < 0.05 * dev[0]


@pytest.mark.parametrize("name,kw", ALL)
def test_equilibrium_is_fixed_point_with_stated_rate_and_angle(name, kw):
    eta, lam, G, d, b1 = 0.003, 0.01, 1.7, 500, 0.9
    mu = kw.get("momentum", 0.0)
    eq = N.equilibrium(name, eta, lam, grad_norm_sq=G, d=d, **kw)
    x = float(eq.norm_sq)
    assert abs(ode_rhs(name, x, eta, lam, G, d, mu)) < 1e-12 * eta ** 2 * max(d, G / x)
    h = 1e-6 * x
    slope = (ode_rhs(name, x + h, eta, lam, G, d, mu) - ode_rhs(name, x - h, eta, lam, G, d, mu)) / (2 * h)
    assert float(eq.relaxation_steps) == pytest.approx(-1.0 / slope, rel=1e-6)
    # angle = lr kappa sqrt(S2 G)/x with kappa = sqrt(d x/G) for Adam (noise-dominated model)
    S2 = {"sgd": 1.0, "momentum": 1 / (1 - mu ** 2), "nesterov": (1 + mu) ** 2 + mu ** 4 / (1 - mu ** 2),
          "adamw": (1 - b1) / (1 + b1), "adam": (1 - b1) / (1 + b1)}[name]
    kappa = 1.0 if name in ("sgd", "momentum", "nesterov") else math.sqrt(d * x / G)
    assert float(eq.angular_update) == pytest.approx(eta * kappa * math.sqrt(S2 * G) / x, rel=1e-12)
    assert float(eq.effective_lr) == pytest.approx(eta * kappa / x, rel=1e-12)


def test_equilibrium_angles_match_literature():
    eta, lam = np.array([0.1, 0.01]), np.array([5e-4, 1e-3])
    for G in (0.3, 30.0):  # SGD/momentum/AdamW angles do not depend on G
        sgd = N.equilibrium("sgd", eta, lam, grad_norm_sq=G)
        np.testing.assert_allclose(sgd.angular_update, np.sqrt(2 * eta * lam), rtol=1e-12)
        np.testing.assert_allclose(sgd.norm_sq ** 2, eta * G / (2 * lam), rtol=1e-12)
        np.testing.assert_allclose(sgd.effective_lr, np.sqrt(2 * eta * lam / G), rtol=1e-12)
        for mu in (0.5, 0.9):
            hb = N.equilibrium("momentum", eta, lam, grad_norm_sq=G, momentum=mu)
            np.testing.assert_allclose(hb.angular_update, np.sqrt(2 * eta * lam / (1 + mu)), rtol=1e-12)
            nag = N.equilibrium("nesterov", eta, lam, grad_norm_sq=G, momentum=mu)
            assert np.all(nag.angular_update > hb.angular_update)
            np.testing.assert_allclose(nag.norm_sq, hb.norm_sq, rtol=1e-12)
        for b1 in (0.0, 0.9):
            aw = N.equilibrium("adamw", eta, lam, grad_norm_sq=G, d=100, b1=b1)
            np.testing.assert_allclose(aw.angular_update, np.sqrt(2 * eta * lam * (1 - b1) / (1 + b1)),
                                       rtol=1e-12)
            np.testing.assert_allclose(aw.norm_sq, eta * 100 / (2 * lam), rtol=1e-12)
    # Adam + L2: the angle depends on G and d -- eta^(2/3) lam^(1/3) d^(1/3) G^(-1/6)
    a = N.equilibrium("adam", 1e-3, 1e-2, grad_norm_sq=1.0, d=1000)
    b = N.equilibrium("adam", 8e-3, 1e-2, grad_norm_sq=1.0, d=1000)
    c = N.equilibrium("adam", 1e-3, 8e-2, grad_norm_sq=1.0, d=1000)
    e = N.equilibrium("adam", 1e-3, 1e-2, grad_norm_sq=64.0, d=1000)
    g = N.equilibrium("adam", 1e-3, 1e-2, grad_norm_sq=1.0, d=8000)
    assert float(b.angular_update / a.angular_update) == pytest.approx(4.0, rel=1e-12)   # 8^(2/3)
    assert float(c.angular_update / a.angular_update) == pytest.approx(2.0, rel=1e-12)   # 8^(1/3)
    assert float(e.angular_update / a.angular_update) == pytest.approx(0.5, rel=1e-12)   # 64^(-1/6)
    assert float(g.angular_update / a.angular_update) == pytest.approx(2.0, rel=1e-12)   # 8^(1/3)


def test_no_weight_decay_growth_laws_closed_form():
    k = np.array([0.0, 100.0, 1000.0])
    u = N.norm_sq_trajectory("sgd", k, learning_rate=0.1, weight_decay=0.0, norm_sq0=2.0, grad_norm_sq=3.0) ** 2
    np.testing.assert_allclose(u, 4.0 + 2 * 0.01 * 3.0 * k, rtol=1e-12)
    for name in ("adamw", "adam"):
        x = N.norm_sq_trajectory(name, k, learning_rate=0.01, weight_decay=0.0, norm_sq0=2.0, grad_norm_sq=3.0, d=50)
        np.testing.assert_allclose(x, 2.0 + 1e-4 * 50 * k, rtol=1e-12)
    eq = N.equilibrium("sgd", 0.1, 0.0, grad_norm_sq=1.0)
    assert np.isinf(eq.norm_sq) and eq.effective_lr == 0 and eq.angular_update == 0


def test_exact_sgd_equilibrium_is_the_maps_fixed_point():
    eta, lam, G = 0.2, 0.05, 4.0   # eta*lam = 0.01: visibly different from the leading order
    eq = N.equilibrium("sgd", eta, lam, grad_norm_sq=G, exact=True)
    r = N.solve_norm_map("sgd", learning_rate=eta, weight_decay=lam, n_steps=3000, grad_norm_sq=G, norm_sq0=0.1)
    assert r.norm_sq[-1, 0] == pytest.approx(float(eq.norm_sq), rel=1e-10)
    assert math.cos(r.angular_update[-1, 0]) == pytest.approx(1 - eta * lam, rel=1e-10)
    lead = N.equilibrium("sgd", eta, lam, grad_norm_sq=G)
    assert abs(float(lead.norm_sq) / float(eq.norm_sq) - 1) > 1e-3
    # linearised relaxation of the exact map: the deviation shrinks by 2(1-eta lam)^2-1 per step
    dev = np.abs(r.norm_sq[200:260, 0] - float(eq.norm_sq))
    factor = np.exp(np.mean(np.diff(np.log(dev))))
    assert factor == pytest.approx(math.exp(-1 / float(eq.relaxation_steps)), rel=1e-6)


# ------------------------------------------------------------------------------------------------
# solvers
# ------------------------------------------------------------------------------------------------
def test_sgd_map_is_the_exact_scalar_recursion_with_schedules():
    n = 500
    rng = np.random.default_rng(0)
    G = rng.uniform(0.5, 2.0, size=(n, 2))
    lr = N.warmup(0.3, 50, after=N.cosine_decay(0.3, 450, alpha=0.1), init_value=0.01)
    lam = N.lambda_drops(0.01, [200, 350], factor=10)
    r = N.solve_norm_map("sgd", learning_rate=lr, weight_decay=lam, n_steps=n, grad_norm_sq=G, norm_sq0=[0.5, 4.0])
    x = np.array([0.5, 4.0])
    for k in range(n):
        eta, l = float(lr(k)), float(lam(k))
        ang = np.arctan2(eta * np.sqrt(G[k] / x), (1 - eta * l) * np.sqrt(x))
        np.testing.assert_allclose(r.angular_update[k], ang, rtol=1e-12)
        x = (1 - eta * l) ** 2 * x + eta ** 2 * G[k] / x
        np.testing.assert_allclose(r.norm_sq[k + 1], x, rtol=1e-12)
    np.testing.assert_allclose(r.effective_lr[:, 0], lr(np.arange(n)) / r.norm_sq[:-1, 0], rtol=1e-12)
    np.testing.assert_allclose(r.time[-1, 0], np.sum(lr(np.arange(n))), rtol=1e-12)


def test_sgd_ode_is_exact_for_constant_inputs():
    r = N.solve_norm_ode("momentum", learning_rate=0.05, weight_decay=1e-3, n_steps=4000, grad_norm_sq=2.0,
                         norm_sq0=[0.3, 30.0], momentum=0.8)
    k = np.arange(4001)[:, None]
    ref = N.norm_sq_trajectory("momentum", k, learning_rate=0.05, weight_decay=1e-3, norm_sq0=np.array([0.3, 30.0]),
                               grad_norm_sq=2.0, momentum=0.8)
    np.testing.assert_allclose(r.norm_sq, ref, rtol=1e-10)


@pytest.mark.parametrize("name", ["adamw", "adam"])
def test_adam_ode_rk4_matches_closed_form(name):
    eta, lam, G, d = 1e-3, 1e-3 if name == "adam" else 0.05, 1.0, 400
    eq = N.equilibrium(name, eta, lam, grad_norm_sq=G, d=d)
    n = int(4 * float(eq.relaxation_steps))
    x0 = np.array([0.2, 3.0]) * float(eq.norm_sq)
    r = N.solve_norm_ode(name, learning_rate=eta, weight_decay=lam, n_steps=n, grad_norm_sq=G, norm_sq0=x0, d=d, eps=0.0)
    ref = N.norm_sq_trajectory(name, np.arange(n + 1)[:, None], learning_rate=eta, weight_decay=lam, norm_sq0=x0,
                               grad_norm_sq=G, d=d)
    # the solver keeps lam^2 x in Adam's second moment, the closed form drops it: relative size lam^2 x^2/G
    tol = 1e-7 + 2 * (lam ** 2 * np.max(ref) ** 2 / G)
    np.testing.assert_allclose(r.norm_sq, ref, rtol=tol)


@pytest.mark.parametrize("name,kw", ALL)
def test_map_equilibrium_and_relaxation_match_closed_form_for_small_lr_lam(name, kw):
    # eta*lam small: 1e-4, and 1e-5 for momentum where the ODE needs 8 eta lam/(1-mu)^2 << 1 (measured:
    # the map's relaxation is 8% faster than the ODE's at eta*lam = 1e-4, mu = 0.9); Adam's beta2 fast so
    # its second moment is quasi-static.
    eta, lam, G, d = (1e-3, 0.1, 1.0, 200) if name == "adamw" else \
        (2e-3, 4e-3, 1.0, 200) if name == "adam" else (0.1, 1e-3 if name == "sgd" else 1e-4, 1.0, None)
    eq = N.equilibrium(name, eta, lam, grad_norm_sq=G, d=d, **kw)
    tau = float(eq.relaxation_steps)
    n = int(8 * tau)
    x0 = float(eq.norm_sq) * 0.25
    r = N.solve_norm_map(name, learning_rate=eta, weight_decay=lam, n_steps=n, grad_norm_sq=G, norm_sq0=x0, d=d,
                         b2=0.9, eps=0.0, **kw)
    assert r.norm_sq[-1, 0] == pytest.approx(float(eq.norm_sq), rel=3e-3)
    assert r.angular_update[-1, 0] == pytest.approx(float(eq.angular_update), rel=3e-3)
    assert r.effective_lr[-1, 0] == pytest.approx(float(eq.effective_lr), rel=3e-3)
    # relaxation: fit the map and the closed-form ODE trajectory the same way (natural variable)
    power = 2 if name in ("sgd", "momentum", "nesterov") else 1
    k = np.arange(n + 1)
    ode = N.norm_sq_trajectory(name, k, learning_rate=eta, weight_decay=lam, norm_sq0=x0, grad_norm_sq=G, d=d, **kw)
    tau_map = N.fit_relaxation_time(k, r.norm_sq[:, 0] ** power)[0]
    tau_ode = N.fit_relaxation_time(k, ode ** power)[0]
    if name != "adam":  # linear ODE in x^power: the fit returns tau itself
        assert tau_ode == pytest.approx(tau, rel=1e-3)
    assert tau_map == pytest.approx(tau_ode, rel=0.03)


def test_map_and_ode_agree_under_schedules():
    n = 6000
    lr = N.step_decay(0.1, [3000], factor=0.3)
    for name, kw in SGD_FAMILY:
        # the ODE needs eta*lam << (1-mu)^2 with momentum
        lam = N.lambda_drops(2e-3 if name == "sgd" else 2e-4, [1500, 4500], factor=4)
        x0 = 10.0 if name == "sgd" else 40.0   # start where the angular step is small (< 0.03 rad)
        m = N.solve_norm_map(name, learning_rate=lr, weight_decay=lam, n_steps=n, grad_norm_sq=1.0, norm_sq0=x0, **kw)
        o = N.solve_norm_ode(name, learning_rate=lr, weight_decay=lam, n_steps=n, grad_norm_sq=1.0, norm_sq0=x0, **kw)
        np.testing.assert_allclose(m.norm_sq[100:], o.norm_sq[100:], rtol=0.02)
        np.testing.assert_allclose(m.angular_update[2000:], o.angular_update[2000:], rtol=0.02)
    for name in ("adamw", "adam"):
        l2 = N.lambda_drops(0.05 if name == "adamw" else 5e-3, [1500, 4500], factor=4)
        m = N.solve_norm_map(name, learning_rate=1e-3, weight_decay=l2, n_steps=n, grad_norm_sq=1.0, norm_sq0=1.0,
                             d=200, b2=0.9)
        o = N.solve_norm_ode(name, learning_rate=1e-3, weight_decay=l2, n_steps=n, grad_norm_sq=1.0, norm_sq0=1.0,
                             d=200)
        np.testing.assert_allclose(m.norm_sq[100:], o.norm_sq[100:], rtol=0.02)
        np.testing.assert_allclose(m.angular_update[2000:], o.angular_update[2000:], rtol=0.02)


def test_lambda_drop_sgd_equals_concatenated_constant_runs():
    n1, n2 = 1500, 900
    full = N.solve_norm_map("sgd", learning_rate=0.2, weight_decay=N.lambda_drops(0.01, [n1]), n_steps=n1 + n2,
                            grad_norm_sq=1.5, norm_sq0=2.0)
    a = N.solve_norm_map("sgd", learning_rate=0.2, weight_decay=0.01, n_steps=n1, grad_norm_sq=1.5, norm_sq0=2.0)
    b = N.solve_norm_map("sgd", learning_rate=0.2, weight_decay=0.001, n_steps=n2, grad_norm_sq=1.5,
                         norm_sq0=a.norm_sq[-1])
    np.testing.assert_allclose(full.norm_sq, np.vstack([a.norm_sq, b.norm_sq[1:]]), rtol=1e-13)
    # after the drop the angle heads to the new equilibrium sqrt(2 eta lam / 10) (from above)
    assert full.angular_update[n1 - 1, 0] == pytest.approx(math.acos(1 - 0.2 * 0.01), rel=1e-3)
    assert np.all(np.diff(full.angular_update[n1 + 1:, 0]) < 0)


def test_without_weight_decay_norm_grows_and_effective_lr_decays():
    n = 10000
    r = N.solve_norm_map("sgd", learning_rate=0.1, weight_decay=0.0, n_steps=n, grad_norm_sq=2.0, norm_sq0=1.0)
    u = r.norm_sq[:, 0] ** 2
    k = np.arange(n + 1)
    # exact map: u' = u + 2 eta^2 G + eta^4 G^2/u, so u - u0 = 2 eta^2 G k (1 + O(log k / k))
    np.testing.assert_allclose((u[1000:] - 1.0) / (2 * 0.01 * 2.0 * k[1000:]), 1.0, rtol=2e-3)
    slope = np.polyfit(np.log(k[2000:n]), np.log(r.effective_lr[2000:, 0]), 1)[0]
    assert slope == pytest.approx(-0.5, abs=0.02)
    for name in ("adamw", "adam"):
        a = N.solve_norm_map(name, learning_rate=1e-3, weight_decay=0.0, n_steps=n, grad_norm_sq=2.0, norm_sq0=1.0,
                             d=100, b2=0.99)
        growth = np.polyfit(k[5000:], a.norm_sq[5000:, 0], 1)[0]
        assert growth == pytest.approx(1e-6 * 100, rel=0.01)  # ||w||^2 grows by eta^2 d per step
        assert np.all(np.diff(a.effective_lr[100:, 0]) < 0)


def test_result_object_shapes_time_and_interpolation():
    r = N.solve_norm_map("nesterov", learning_rate=np.linspace(0.1, 0.05, 50), weight_decay=1e-3, n_steps=50,
                         grad_norm_sq=np.ones((1, 3)), norm_sq0=[1.0, 2.0, 3.0], momentum=0.5)
    assert r.norm_sq.shape == (51, 3) and r.angular_update.shape == (50, 3)
    assert r.effective_lr.shape == (50, 3) and r.update_norm_sq.shape == (50, 3)
    assert r.n_steps == 50 and r.n_groups == 3 and r.method == "map"
    np.testing.assert_allclose(r.time[-1], np.sum(np.linspace(0.1, 0.05, 50)))
    np.testing.assert_allclose(r.at(10.5), 0.5 * (r.norm_sq[10] + r.norm_sq[11]))
    np.testing.assert_allclose(r.norm ** 2, r.norm_sq)
    with pytest.raises(ValueError, match="step"):
        r.at(51)


# ------------------------------------------------------------------------------------------------
# schedules
# ------------------------------------------------------------------------------------------------
def test_schedules_values_and_optax_compatibility():
    optax = pytest.importorskip("optax")
    k = np.arange(1000)
    ours = N.cosine_decay(0.5, 800, alpha=0.1)(k)
    theirs = np.asarray(optax.cosine_decay_schedule(0.5, 800, alpha=0.1)(k), dtype=np.float64)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    # an optax schedule drives the solver directly
    sched = optax.exponential_decay(0.1, transition_steps=100, decay_rate=0.5)
    r = N.solve_norm_map("sgd", learning_rate=sched, weight_decay=1e-3, n_steps=300, grad_norm_sq=1.0, norm_sq0=1.0)
    np.testing.assert_allclose(r.learning_rate[:, 0], 0.1 * 0.5 ** (k[:300] / 100), rtol=1e-6)
    sd = N.step_decay(1.0, [10, 20], factor=0.1)(np.array([0, 9, 10, 19, 20, 100]))
    np.testing.assert_allclose(sd, [1, 1, 0.1, 0.1, 0.01, 0.01])
    wu = N.warmup(2.0, 4)(np.arange(7))
    np.testing.assert_allclose(wu, [0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0])
    drops = N.lambda_drops(0.1, [5], factor=10)(np.array([4, 5]))
    np.testing.assert_allclose(drops, [0.1, 0.01])
    np.testing.assert_allclose(N.constant(3.0)(np.arange(3)), 3.0)


def test_as_series_forms():
    np.testing.assert_allclose(as_series(2.0, "lr", 3, 2), 2.0)
    np.testing.assert_allclose(as_series(np.arange(3.0), "lr", 3, 2)[:, 1], [0, 1, 2])
    np.testing.assert_allclose(as_series(np.array([[1.0, 2.0]]), "lr", 3, 2)[2], [1, 2])
    # a non-vectorised callable returning a per-group vector
    per_group = as_series(lambda k: [float(k), 10.0 + k], "G", 4, 2)
    np.testing.assert_allclose(per_group[3], [3.0, 13.0])
    with pytest.raises(ValueError, match="lr.*n_steps=3"):
        as_series(np.ones(5), "lr", 3, 2)
    with pytest.raises(ValueError, match="G"):
        as_series(lambda k: [1.0, 2.0, 3.0], "G", 4, 2)


# ------------------------------------------------------------------------------------------------
# measurement helpers
# ------------------------------------------------------------------------------------------------
def test_angular_update_and_unit_grad_norm():
    a = np.array([[3.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    t = np.array([1e-7, 0.3])
    b = np.stack([5.0 * np.array([np.cos(t[0]), np.sin(t[0]), 0.0]),
                  2.0 * np.array([np.cos(np.pi / 4 + t[1]), np.sin(np.pi / 4 + t[1]), 0.0])])
    np.testing.assert_allclose(N.angular_update(a, b), t, rtol=1e-9)
    g = np.array([[0.0, 2.0, 0.0]])
    assert N.unit_grad_norm_sq(g, np.array([[3.0, 0.0, 0.0]]))[0] == pytest.approx(36.0)
    with pytest.raises(ValueError, match="w_prev and w_next"):
        N.angular_update(a, b[:1])


def test_fit_relaxation_time_recovers_tau():
    rng = np.random.default_rng(1)
    k = np.arange(0, 2000)
    z = 5.0 - 4.0 * np.exp(-k / 321.0) + 0.01 * rng.standard_normal(k.size)
    tau, zi, A = N.fit_relaxation_time(k, z)
    assert tau == pytest.approx(321.0, rel=0.01) and zi == pytest.approx(5.0, abs=0.01)
    assert A == pytest.approx(-4.0, rel=0.01)


# ------------------------------------------------------------------------------------------------
# predictions
# ------------------------------------------------------------------------------------------------
def test_norm_predictions_grid_rows():
    lrs = np.array([0.05, 0.1, 0.2])
    lams = np.array([1e-4, 1e-3])[:, None]
    rows = norm_predictions("momentum", lrs, lams, grad_norm_sq=2.0, momentum=0.9, steps_per_epoch=50)
    assert len(rows) == 6
    for row in rows:
        eq = N.equilibrium("momentum", row["learning_rate"], row["weight_decay"], grad_norm_sq=2.0, momentum=0.9)
        assert row["angular_update"] == pytest.approx(math.sqrt(2 * row["learning_rate"] * row["weight_decay"] / 1.9))
        assert row["norm_sq"] == pytest.approx(float(eq.norm_sq))
        assert row["relaxation_steps"] == pytest.approx(0.1 / (4 * row["learning_rate"] * row["weight_decay"]))
        assert row["relaxation_epochs"] == pytest.approx(row["relaxation_steps"] / 50)
        assert row["relaxation_time"] == pytest.approx(row["learning_rate"] * row["relaxation_steps"])
        assert row["momentum"] == 0.9 and row["b1"] is None
    assert [r["learning_rate"] for r in rows[:3]] == list(lrs)  # C order over the broadcast grid
    # momentum itself can be a grid
    rows = norm_predictions("nesterov", 0.1, 1e-3, momentum=[0.0, 0.5, 0.9])
    assert [r["momentum"] for r in rows] == [0.0, 0.5, 0.9]
    assert math.isnan(rows[0]["norm_sq"]) and math.isnan(rows[0]["relaxation_epochs"])
    table = norm_prediction_table(["sgd", "momentum", "adamw", "adam"], 0.01, 1e-3, momentum=0.9, d=128,
                                  grad_norm_sq=1.0, steps_per_epoch=10)
    assert [r["optimizer"] for r in table] == ["sgd", "momentum", "adamw", "adam"]
    assert all(np.isfinite(r["angular_update"]) and np.isfinite(r["relaxation_epochs"]) for r in table)


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
BASE = dict(learning_rate=0.1, weight_decay=1e-3, n_steps=10, grad_norm_sq=1.0, norm_sq0=1.0)


@pytest.mark.parametrize("solver", [N.solve_norm_map, N.solve_norm_ode])
@pytest.mark.parametrize("opt,changes,match", [
    ("sgd", dict(weight_decay=-1e-3), "weight_decay"),
    ("sgd", dict(learning_rate=0.0), "learning_rate"),
    ("sgd", dict(learning_rate=-0.1), "learning_rate"),
    ("sgd", dict(learning_rate=np.array([0.1] * 9 + [-0.1])), "learning_rate"),
    ("momentum", dict(momentum=1.0), "momentum"),
    ("nesterov", dict(momentum=-0.1), "momentum"),
    ("sgd", dict(momentum=0.9), "momentum"),
    ("adamw", dict(b1=1.0, d=10), "b1"),
    ("adam", dict(b2=1.5, d=10), "b2"),
    ("adam", dict(b2=0.99), "d"),
    ("adamw", dict(eps=-1.0, d=10), "eps"),
    ("sgd", dict(norm_sq0=[1.0, 2.0], grad_norm_sq=np.ones((10, 3))), "mismatched group arrays"),
    ("adamw", dict(norm_sq0=[1.0, 2.0], d=[10, 10, 10]), "mismatched group arrays"),
    ("sgd", dict(grad_norm_sq=np.ones(7)), "grad_norm_sq"),
    ("sgd", dict(grad_norm_sq=-1.0), "grad_norm_sq"),
    ("sgd", dict(norm_sq0=0.0), "norm_sq0"),
    ("sgd", dict(norm0=1.0), "norm_sq0"),
    ("sgd", dict(n_steps=0), "n_steps"),
    ("sgd", dict(learning_rate=2.0, weight_decay=0.6), "learning_rate \\* weight_decay"),
    ("adam", {}, "optimizer"),
    ("adamw", dict(d=0), "d"),
])
def test_bad_input_names_the_argument(solver, opt, changes, match):
    kw = dict(BASE)
    kw.update(changes)
    with pytest.raises((ValueError, TypeError), match=match):
        solver(opt, **kw)


@pytest.mark.parametrize("changes,match", [
    (dict(weight_decay=-1.0), "weight_decay"), (dict(learning_rate=0.0), "learning_rate"), (dict(momentum=1.2), "momentum"),
    (dict(b1=-0.1), "b1"), (dict(grad_norm_sq=-2.0), "grad_norm_sq"),
    (dict(learning_rate=np.ones(3), weight_decay=np.ones(2) * 1e-3), "mismatched"),
])
def test_bad_input_closed_forms(changes, match):
    kw = dict(learning_rate=0.1, weight_decay=1e-3, grad_norm_sq=1.0, momentum=0.5, b1=0.9)
    kw.update(changes)
    with pytest.raises((ValueError, TypeError), match=match):
        N.equilibrium("momentum", kw.pop("learning_rate"), kw.pop("weight_decay"), **kw)
    with pytest.raises(ValueError, match="d"):
        N.equilibrium("adamw", 0.1, 1e-3)
    with pytest.raises(ValueError, match="exact"):
        N.equilibrium("momentum", 0.1, 1e-3, grad_norm_sq=1.0, momentum=0.5, exact=True)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        norm_predictions("sgd", 0.1, 1e-3, steps_per_epoch=0)
    with pytest.raises(ValueError, match="momentum"):
        norm_predictions("momentum", 0.1, 1e-3, momentum=[0.5, 1.0])


def test_grad_buffer_dot_input():
    kw = dict(learning_rate=0.1, weight_decay=1e-3, n_steps=50, grad_norm_sq=1.0, norm_sq0=1.0, momentum=0.9)
    with pytest.raises(ValueError, match="grad_buffer_dot"):
        N.solve_norm_map("momentum", grad_buffer_dot=np.ones(3), **kw)
    base = N.solve_norm_map("momentum", **kw)
    zero = N.solve_norm_map("momentum", grad_buffer_dot=0.0, **kw)
    np.testing.assert_array_equal(base.norm_sq, zero.norm_sq)
    # a fresh gradient anti-correlated with the buffer slows the norm's growth
    anti = N.solve_norm_map("momentum", grad_buffer_dot=-0.2, **kw)
    assert np.all(anti.norm_sq[5:, 0] < base.norm_sq[5:, 0])
