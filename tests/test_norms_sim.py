"""Exact simulation of scale-invariant objectives with optax optimisers vs the norm theory.

Objective per group (``n_groups`` independent groups of ``d`` parameters, float64):
``l(w) = 0.5 * sum_j a_j (u_j . w_hat)^2 + sigma * xi_t . w_hat`` with ``w_hat = w/||w||``, a fixed random
low-rank quadratic (8 dense directions u_j, curvatures a_j in [-signal, signal]) and fresh Gaussian noise
``xi_t`` every step (a minibatch-noise stand-in, so the equilibrium is non-trivial). The loss depends on
``w_hat`` only, so every group is exactly scale-invariant; gradients come from ``jax.grad`` and updates
from optax (``sgd``, ``sgd(momentum)``, ``sgd(momentum, nesterov=True)``,
``chain(add_decayed_weights, adam)`` for coupled L2, ``adamw``).

Logged per step: ``||w_k||^2``, the measured unit-norm statistic ``G_k = ||g_k||^2 ||w_k||^2`` (loss gradient,
without L2), the angle between ``w_k`` and ``w_{k+1}``, and the measured effective learning rate
(``lr/||w||^2`` for SGD-type; for Adam ``lr * (g . P g)/(||g||^2 ||w||^2)`` with Adam's actual
preconditioner ``P = diag(1/(sqrt(nu_hat) + eps))``). The theory is driven by the measured ``G_k``.

Relaxation time: ``fit_relaxation_time`` (least squares ``z = z_inf + A exp(-k/tau)``) applied identically to
the group-mean of ``z = ||w||^4`` (SGD family) or ``||w||^2`` (Adam) from the simulation and from the theory.
"""
import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402

from widelimit._x64 import x64  # noqa: E402
from widelimit.dynamics import norms as N  # noqa: E402


def make_optimizer(name, lr, lam, momentum=0.9, beta2=0.999):
    """optax optimiser; ``lr`` and ``lam`` may be tracers (built inside the jitted run)."""
    if name == "adamw":
        return optax.adamw(lr, b2=beta2, weight_decay=lam)
    base = {"sgd": lambda: optax.sgd(lr),
            "momentum": lambda: optax.sgd(lr, momentum=momentum),
            "nesterov": lambda: optax.sgd(lr, momentum=momentum, nesterov=True),
            "adam": lambda: optax.adam(lr, b2=beta2)}[name]()
    return optax.chain(optax.add_decayed_weights(lam), base)


_RUNNERS: dict = {}


def _runner(name, n_steps, d, n_groups, momentum, beta2):
    """Jitted simulation for one optimiser and shape, compiled once and reused across (lr, lam, x0, seed)."""
    cache_key = (name, n_steps, d, n_groups, momentum, beta2)
    if cache_key in _RUNNERS:
        return _RUNNERS[cache_key]
    is_adam = name in ("adam", "adamw")
    sigma = 1.0 / math.sqrt(d)    # G ~ sigma^2 d = 1 from the noise

    def run(key, lr, lam, x0, signal):
        k_u, k_w, key = jax.random.split(key, 3)
        U = jax.random.normal(k_u, (8, d), dtype=jnp.float64) / math.sqrt(d)
        a = signal * jnp.linspace(-1.0, 1.0, 8)
        w0 = jax.random.normal(k_w, (n_groups, d), dtype=jnp.float64)
        w0 = w0 / jnp.linalg.norm(w0, axis=1, keepdims=True) * jnp.sqrt(x0)

        def loss(w, xi):
            wh = w / jnp.linalg.norm(w, axis=1, keepdims=True)
            return jnp.sum(0.5 * jnp.sum(a * (wh @ U.T) ** 2, axis=1) + sigma * jnp.sum(xi * wh, axis=1))

        opt = make_optimizer(name, lr, lam, momentum, beta2)

        def step(carry, _):
            w, st, key = carry
            key, sk = jax.random.split(key)
            g = jax.grad(loss)(w, jax.random.normal(sk, w.shape, dtype=jnp.float64))
            x = jnp.sum(w * w, axis=1)
            gg = jnp.sum(g * g, axis=1)
            upd, st = opt.update(g, st, w)
            wn = optax.apply_updates(w, upd)
            wh = w / jnp.sqrt(x)[:, None]
            par = jnp.sum(wn * wh, axis=1)
            perp = jnp.linalg.norm(wn - par[:, None] * wh, axis=1)
            if is_adam:
                nu = optax.tree_utils.tree_get(st, "nu")
                cnt = optax.tree_utils.tree_get(st, "count")
                P = 1.0 / (jnp.sqrt(nu / (1.0 - beta2 ** cnt)) + 1e-8)
                eff = lr * jnp.sum(g * g * P, axis=1) / (gg * x)
            else:
                eff = lr / x
            return (wn, st, key), (x, gg * x, jnp.arctan2(perp, par), eff)

        (wT, _, _), out = jax.lax.scan(step, (w0, opt.init(w0), key), None, length=n_steps)
        return jnp.sum(wT * wT, axis=1), out

    _RUNNERS[cache_key] = jax.jit(run)
    return _RUNNERS[cache_key]


def simulate(name, lr, lam, n_steps, *, x0, d=256, n_groups=8, signal=0.1, momentum=0.9, beta2=0.999,
             seed=0):
    """Run the optimiser on the scale-invariant objective; returns dict of float64 numpy arrays."""
    with x64():
        run = _runner(name, n_steps, d, n_groups, momentum, beta2)
        f64 = lambda v: jnp.asarray(v, dtype=jnp.float64)
        xT, (xs, G, ang, eff) = run(jax.random.PRNGKey(seed), f64(lr), f64(lam), f64(x0), f64(signal))
        xs = np.concatenate([np.asarray(xs), np.asarray(xT)[None]])
        return dict(norm_sq=xs, G=np.asarray(G), angle=np.asarray(ang), eff=np.asarray(eff))


# name, lr, lam, extra theory kwargs, d; eta*lam chosen so relaxation takes ~250-1000 steps
CASES = {
    "sgd": (0.1, 0.01, {}, 256),
    "momentum": (0.1, 1e-3, {"momentum": 0.9}, 256),
    "nesterov": (0.1, 1e-3, {"momentum": 0.9}, 256),
    "adamw": (1e-3, 0.5, {"b2": 0.99}, 256),
    "adam": (2e-3, 8e-3, {"b2": 0.99}, 256),
}


def _theory_kw(kw):
    return {k: v for k, v in kw.items() if k != "b2"}


def _n_steps(name, n_tau=6):
    lr, lam, kw, d = CASES[name]
    return int(n_tau * float(N.equilibrium(name, lr, lam, grad_norm_sq=1.0, d=d, **_theory_kw(kw)).relaxation_steps))


def _run_case(name, lr, lam, kw, d, n_tau=6, seed=0):
    eq0 = N.equilibrium(name, lr, lam, grad_norm_sq=1.0, d=d, **_theory_kw(kw))
    tau = float(eq0.relaxation_steps)
    n = int(n_tau * tau)
    sim = simulate(name, lr, lam, n, x0=0.25 * float(eq0.norm_sq), d=d, seed=seed,
                   momentum=kw.get("momentum", 0.9), beta2=kw.get("b2", 0.999))
    theory = N.solve_norm_map(name, learning_rate=lr, weight_decay=lam, n_steps=n, grad_norm_sq=sim["G"],
                              norm_sq0=sim["norm_sq"][0], d=d, **kw)
    return sim, theory, tau, n


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    name = request.param
    lr, lam, kw, d = CASES[name]
    sim, theory, tau, n = _run_case(name, lr, lam, kw, d)
    return name, lr, lam, kw, d, sim, theory, tau, n


def test_norm_trajectory_follows_theory(case):
    name, lr, lam, kw, d, sim, theory, tau, n = case
    if name == "sgd":   # the SGD map is exact given the measured G: agreement to round-off
        np.testing.assert_allclose(theory.norm_sq, sim["norm_sq"], rtol=1e-9)
        np.testing.assert_allclose(theory.angular_update, sim["angle"], rtol=1e-7)
    rel = np.abs(theory.norm_sq.mean(1) / sim["norm_sq"].mean(1) - 1)
    assert rel.max() < 0.05, f"{name}: max relative deviation of mean ||w||^2 {rel.max():.3f}"
    # the norm really moved: it grew ~4x toward equilibrium
    assert sim["norm_sq"].mean(1)[-1] > 3 * sim["norm_sq"].mean(1)[0]


def test_equilibrium_angular_update_within_5_percent(case):
    name, lr, lam, kw, d, sim, theory, tau, n = case
    late = slice(int(4 * tau), n)
    G_late = float(sim["G"][late].mean())
    eq = N.equilibrium(name, lr, lam, grad_norm_sq=G_late, d=d, **_theory_kw(kw))
    rms = lambda a: float(np.sqrt(np.mean(a[late] ** 2)))   # closed forms give E[theta^2]
    measured = rms(sim["angle"])
    assert measured == pytest.approx(float(eq.angular_update), rel=0.05), \
        f"{name}: measured {measured:.5g} vs closed form {float(eq.angular_update):.5g}"
    assert measured == pytest.approx(rms(theory.angular_update), rel=0.03)


def test_effective_learning_rate(case):
    name, lr, lam, kw, d, sim, theory, tau, n = case
    late = slice(int(4 * tau), n)
    G_late = float(sim["G"][late].mean())
    eq = N.equilibrium(name, lr, lam, grad_norm_sq=G_late, d=d, **_theory_kw(kw))
    measured = float(sim["eff"][late].mean())
    assert measured == pytest.approx(float(eq.effective_lr), rel=0.05)
    # along the whole trajectory (after Adam's first steps) the predicted effective lr tracks the run
    sl = slice(20, n)
    rel = np.abs(theory.effective_lr[sl].mean(1) / sim["eff"][sl].mean(1) - 1)
    assert rel.max() < 0.06, f"{name}: effective lr max deviation {rel.max():.3f}"


def test_relaxation_time_within_10_percent(case):
    name, lr, lam, kw, d, sim, theory, tau, n = case
    p = 2 if name in ("sgd", "momentum", "nesterov") else 1
    k = np.arange(n + 1)
    tau_sim = N.fit_relaxation_time(k, (sim["norm_sq"] ** p).mean(1))[0]
    tau_th = N.fit_relaxation_time(k, (theory.norm_sq ** p).mean(1))[0]
    assert tau_sim == pytest.approx(tau_th, rel=0.10), f"{name}: sim {tau_sim:.0f} vs theory {tau_th:.0f}"
    if name == "sgd":  # and the closed form 1/(4 eta lam) (exact-map correction O(eta lam))
        assert tau_sim == pytest.approx(tau, rel=0.10)


@pytest.mark.parametrize("name", ["sgd", "momentum", "adamw", "adam"])
def test_without_l2_norm_grows_as_predicted(name):
    lr, _, kw, d = CASES[name]
    n = _n_steps(name)   # same shapes as the L2 case: the compiled simulation is reused
    sim = simulate(name, lr, 0.0, n, x0=1.0, d=d, momentum=kw.get("momentum", 0.9),
                   beta2=kw.get("b2", 0.999))
    theory = N.solve_norm_map(name, learning_rate=lr, weight_decay=0.0, n_steps=n, grad_norm_sq=sim["G"],
                              norm_sq0=sim["norm_sq"][0], d=d, **kw)
    xs = sim["norm_sq"].mean(1)
    np.testing.assert_allclose(theory.norm_sq.mean(1), xs, rtol=0.03)
    k = np.arange(n + 1)
    G = float(sim["G"].mean())
    if name in ("sgd", "momentum"):
        S = 1 / (1 - kw.get("momentum", 0.0))
        # ||w||^4 grows linearly at 2 eta^2 S^2 G per step
        slope = np.polyfit(k[200:], (sim["norm_sq"] ** 2).mean(1)[200:], 1)[0]
        assert slope == pytest.approx(2 * lr ** 2 * S ** 2 * G, rel=0.05)
    else:
        # ||w||^2 grows linearly at eta^2 d per step, whatever G
        slope = np.polyfit(k[200:], xs[200:], 1)[0]
        assert slope == pytest.approx(lr ** 2 * d, rel=0.05)
    # the effective learning rate decays, as predicted
    eff = sim["eff"].mean(1)
    assert np.all(np.diff(eff[100::100]) < 0)
    np.testing.assert_allclose(theory.effective_lr[100:].mean(1), eff[100:], rtol=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["adamw", "adam", "momentum", "nesterov"])
def test_default_betas_and_smaller_lr_lam(name):
    """Default Adam beta2 = 0.999 (v lags the norm: the map models it, the quasi-static ODE does not) and
    momentum at eta*lam = 2.5e-5, where the slow ODE is accurate too."""
    lr, lam, kw, d = {"adamw": (1e-3, 0.1, {}, 512), "adam": (1e-3, 3e-3, {}, 512),
                      "momentum": (0.05, 5e-4, {"momentum": 0.9}, 512),
                      "nesterov": (0.05, 5e-4, {"momentum": 0.9}, 512)}[name]
    sim, theory, tau, n = _run_case(name, lr, lam, kw, d, n_tau=6, seed=1)
    late = slice(int(4 * tau), n)
    eq = N.equilibrium(name, lr, lam, grad_norm_sq=float(sim["G"][late].mean()), d=d, **kw)
    assert float(np.sqrt(np.mean(sim["angle"][late] ** 2))) == pytest.approx(float(eq.angular_update), rel=0.05)
    p = 1 if name.startswith("adam") else 2
    k = np.arange(n + 1)
    tau_sim = N.fit_relaxation_time(k, (sim["norm_sq"] ** p).mean(1))[0]
    tau_th = N.fit_relaxation_time(k, (theory.norm_sq ** p).mean(1))[0]
    assert tau_sim == pytest.approx(tau_th, rel=0.10)
    if name in ("momentum", "nesterov"):
        assert tau_sim == pytest.approx(tau, rel=0.10)
