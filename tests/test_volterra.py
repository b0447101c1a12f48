"""The Volterra solver (widelimit.dynamics.volterra): homogeneous reduction to the closed form, the prior
average against ExpectedLoss, direct ODE integration of a finite linearised model, bad input."""
import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.special import softmax

from widelimit.arch import MLP
from widelimit.dynamics.loss import ExpectedLoss
from widelimit.dynamics.ntk_l2 import L2Flow
from widelimit.dynamics.protocol import check_model
from widelimit.dynamics.volterra import CrossScaleFlow, default_step, homogeneous_initial
from widelimit.dynamics.volterra_loss import VolterraLoss
from widelimit.kernels.native import mlp_kernels


def _problem(seed=0, n=7, m=4, k=2, d=4):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)), rng.normal(size=(m, d)), rng.normal(size=(n, k)), rng.normal(size=(m, k)),
            rng)


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_homogeneous_reduces_to_closed_form(weight_decay):
    x, xt, y, _, rng = _problem()
    spec = MLP(depth=3)                                     # bias-free ReLU: L = 3
    f0, f0t = rng.normal(size=y.shape), rng.normal(size=(xt.shape[0], y.shape[1]))
    ktt, kxt = mlp_kernels(spec, x)[0], mlp_kernels(spec, xt, x)[0]
    cs = CrossScaleFlow(spec, x, y, x_test=xt, rtol=1e-6, step=0.08)
    t = np.array([40.0, 0.0, 0.3, 4.0])
    for init, (a, b) in ((homogeneous_initial(f0, f0t, 3), (f0, f0t)), (None, (None, None))):
        ref = L2Flow(ktt, y, weight_decay, 3, ntk_test_train=kxt, f0_train=a, f0_test=b)(t)
        out = cs.solve(weight_decay, t, initial=init)
        err = max(np.max(np.abs(out.train - ref.train)) / np.max(np.abs(ref.train)),
                  np.max(np.abs(out.test - ref.test)) / np.max(np.abs(ref.test)))
        assert err < 1e-10
        assert err <= out.error_estimate <= cs.rtol          # the stated error is an upper estimate


def test_prior_average_equals_expected_loss_for_homogeneous_net():
    x, xt, y, yt, _ = _problem(1, n=5, m=3)
    spec = MLP(depth=2, activation="leaky_relu", slope=0.2)
    ktt, ntt = mlp_kernels(spec, x)
    kxt, nxt = mlp_kernels(spec, xt, x)
    ref = ExpectedLoss(ktt, kxt, ntt, nxt, mlp_kernels(spec, xt)[1], y, yt, 2)
    model = check_model(VolterraLoss(spec, x, y, xt, yt, f0="prior"))
    t = np.array([0.0, 0.5, 6.0, 60.0])
    np.testing.assert_allclose(model.test_loss(0.03, t), ref.test_loss(0.03, t), rtol=1e-9)
    np.testing.assert_allclose(model.train_loss(0.03, t), ref.train_loss(0.03, t), rtol=1e-9)
    assert model.zero_loss() == pytest.approx(ref.zero_loss(), rel=1e-15)
    assert model.mu_max == pytest.approx(ref.mu_max, rel=1e-12)


def _direct_ode(net, x, xt, y, lam, t, loss):
    """Integrate the finite linearised-along-the-path model in parameter space: K independent parameter
    copies (one per output, all starting at theta_0), ``f_k = f(s theta_0) + J(s theta_0) delta_k`` and
    ``d delta_k/dt = -J(s theta_0)^T dl/df_k - lam delta_k`` (``s = exp(-lam t)``)."""
    n, k = y.shape
    P = net.n_params

    def outputs(tt, delta, xx):
        s = np.exp(-lam * tt)
        return net.outputs(s, xx)[:, :1] + net.jacobian(s, xx) @ delta.reshape(k, P).T

    def rhs(tt, delta):
        f = outputs(tt, delta, x)
        grad = (f - y) / y.size if loss == "mse" else (softmax(f, axis=1) - y) / n
        jac = net.jacobian(np.exp(-lam * tt), x)
        net._cache.clear()
        return (-(jac.T @ grad).T - lam * delta.reshape(k, P)).ravel()

    sol = solve_ivp(rhs, (0, t.max()), np.zeros(k * P), t_eval=t, method="DOP853", rtol=1e-12, atol=1e-14)
    assert sol.success
    tr = np.stack([outputs(tt, sol.y[:, i], x) for i, tt in enumerate(sol.t)])
    te = np.stack([outputs(tt, sol.y[:, i], xt) for i, tt in enumerate(sol.t)])
    net._cache.clear()
    return tr, te


@pytest.mark.parametrize("activation,loss,rtol", [pytest.param("relu", "mse", 1e-4, marks=pytest.mark.slow),
                                                   ("erf", "mse", 1e-7), ("erf", "xent", 1e-7)])
def test_volterra_equals_direct_integration_of_linearised_model(activation, loss, rtol):
    """The solver with the empirical cross-scale kernel of ONE finite net (biases, non-homogeneous) against
    direct ODE integration of the same model in parameter space (no width limit involved: exact).

    A finite ReLU net with biases has kinks in s (units change sign as the weights shrink), so its kernel is
    only piecewise smooth in time: the error expansion behind the Romberg estimate does not hold there (the
    estimate is checked only for the smooth erf net; for ReLU the actual error must stay below 10 rtol).
    The infinite-width kernels are smooth in (s, s') on s' <= s except at s = s' itself, which is the
    endpoint of the integral (docs/theory.md §5), so the estimate applies to them."""
    from _scaled_net import ScaledNet

    x, xt, y, _, rng = _problem(2, n=4, m=2, k=3)
    if loss == "xent":
        y = np.eye(3)[rng.integers(0, 3, size=4)]
    spec = MLP(depth=3, width=8, activation=activation, b_std=0.5, W_std=1.5)
    net = ScaledNet(spec, 0, x.shape[1])
    lam, t = 0.3, np.array([0.0, 0.7, 5.0])
    ref_tr, ref_te = _direct_ode(net, x, xt, y, lam, t, loss)

    def initial(s):
        return (np.stack([np.repeat(net.outputs(a, x)[:, :1], 3, axis=1) for a in s]),
                np.stack([np.repeat(net.outputs(a, xt)[:, :1], 3, axis=1) for a in s]))

    cs = CrossScaleFlow(None, x, y, x_test=xt, rtol=rtol, kernel_fn=net.kernel_fn())
    out = cs.solve(lam, t, initial=initial, loss=loss)
    net._cache.clear()
    scale = max(np.max(np.abs(ref_tr)), np.max(np.abs(ref_te)), np.max(np.abs(y)))
    err = max(np.max(np.abs(out.train - ref_tr)), np.max(np.abs(out.test - ref_te))) / scale
    if activation == "erf":
        assert err <= out.error_estimate + 1e-10 and out.error_estimate <= rtol
        assert err < 1e-8
    else:
        assert err < 10 * rtol
    assert np.max(np.abs(ref_tr[-1] - ref_tr[0])) > 0.1 * scale        # it did learn something


def test_bad_input_raises_before_any_kernel_is_evaluated():
    calls = []

    def counting_kernel(*args):
        calls.append(args)
        raise AssertionError("kernel evaluated")

    x, xt, y, yt, _ = _problem()
    with pytest.raises(ValueError, match="too coarse"):
        CrossScaleFlow(None, x, y, rtol=1e-8, step=0.5, kernel_fn=counting_kernel)
    with pytest.raises(ValueError, match="rtol"):
        CrossScaleFlow(None, x, y, rtol=0.0, kernel_fn=counting_kernel)
    with pytest.raises(ValueError, match="step"):
        CrossScaleFlow(None, x, y, step=-1.0, kernel_fn=counting_kernel)
    with pytest.raises(ValueError, match="y_train"):
        CrossScaleFlow(None, x, y[:3], kernel_fn=counting_kernel)
    with pytest.raises(TypeError, match="spec"):
        CrossScaleFlow(MLP(depth=2), x, y, kernel_fn=counting_kernel)
    assert calls == []
    with pytest.raises(ValueError, match="norm"):
        CrossScaleFlow(MLP(depth=2, norm="batch"), x, y)
    cs = CrossScaleFlow(MLP(depth=2, b_std=0.1), x, y, x_test=xt)
    for bad in (dict(t=[-1.0]), dict(t=[np.inf]), dict(t=[[1.0]])):
        with pytest.raises(ValueError, match="t must"):
            cs.solve(0.1, **bad)
    with pytest.raises(ValueError, match="weight_decay|lam"):
        cs.solve(-0.1, [1.0])
    with pytest.raises(ValueError, match="loss"):
        cs.solve(0.1, [1.0], loss="hinge")
    with pytest.raises(ValueError, match="initial"):
        cs.solve(0.1, [1.0], initial="prior", loss="xent")
    with pytest.raises(ValueError, match="f0"):
        VolterraLoss(MLP(depth=2), x, y, xt, yt, f0="given")
    assert default_step(1e-6) < default_step(1e-4)


def test_non_homogeneous_net_runs_through_predict_and_biases_matter():
    from widelimit.predict import t_star

    x, xt, y, yt, _ = _problem(3, n=6, m=4, k=1)
    biased = VolterraLoss(MLP(depth=2, activation="erf", b_std=0.8), x, y, xt, yt, f0="zero", rtol=1e-4)
    assert biased.L is None and check_model(biased) is biased
    res = t_star(biased, weight_decays=[0.1], n_grid=12, refine=False, s_range=(1e-2, 10.0))
    assert np.all(np.isfinite(res.t_star))
    plain = VolterraLoss(MLP(depth=2, activation="erf"), x, y, xt, yt, f0="zero", rtol=1e-4)
    t = np.array([1.0, 10.0])
    assert np.max(np.abs(biased.test_loss(0.1, t) - plain.test_loss(0.1, t))) > 1e-3


def test_symbolic_derivation_checks_pass(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "derivations" / "cross_scale.py"
    spec = importlib.util.spec_from_file_location("derivation_cross_scale", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(tmp_path / "cross_scale.md")
    assert res and all(res.values()), res
    assert "passes" in (tmp_path / "cross_scale.md").read_text()


@pytest.mark.slow
def test_finite_width_relu_with_biases_converges_to_volterra_prediction():
    """Real (nonlinear) full-batch GD with L2 at small step on ReLU MLPs with biases, widths 256..4096:
    the error of the learned change f_t - f_0 against the infinite-width Volterra prediction (started from
    the SAME net's g(x; s) = f(x; s theta_0)) falls with width, roughly like width^(-1/2)."""
    import jax
    import jax.numpy as jnp

    from _scaled_net import ScaledNet
    from widelimit._x64 import x64
    from widelimit.evidence import fit_power_law

    rng = np.random.default_rng(7)
    x, xt = rng.normal(size=(6, 4)), rng.normal(size=(3, 4))
    y = rng.normal(size=(6, 1))
    lam, eta, t_end = 0.3, 0.004, 3.0
    steps = int(round(t_end / eta))
    widths, errs = (256, 512, 1024, 2048, 4096), []
    for width in widths:
        spec = MLP(depth=2, width=width, b_std=0.5, W_std=1.4)     # one hidden layer: cheap on CPU
        per_seed = []
        for seed in range(2):
            net = ScaledNet(spec, seed, 4)
            with x64():
                f = net._f
                xj, xtj, yj = (jnp.asarray(a) for a in (x, xt, y))

                def loss(th):
                    return jnp.sum((f(th, xj) - yj) ** 2) / (2 * y.size) + 0.5 * lam * jnp.sum(th ** 2)

                @jax.jit
                def run(th):
                    return jax.lax.fori_loop(0, steps, lambda i, th: th - eta * jax.grad(loss)(th), th)

                th = run(net.theta0)
                ft, ftt = np.asarray(f(th, xj)), np.asarray(f(th, xtj))
            cs = CrossScaleFlow(spec, x, y, x_test=xt, rtol=1e-5)
            out = cs.solve(lam, [t_end], initial=lambda s: (np.stack([net.outputs(a, x) for a in s]),
                                                            np.stack([net.outputs(a, xt) for a in s])))
            f0, f0t = net.outputs(1.0, x), net.outputs(1.0, xt)
            change = np.concatenate([ft - f0, ftt - f0t]).ravel()
            pred = np.concatenate([out.train[0] - f0, out.test[0] - f0t]).ravel()
            per_seed.append(np.linalg.norm(change - pred) / np.linalg.norm(change))
        errs.append(float(np.mean(per_seed)))
    fit = fit_power_law(np.array(widths, float), np.array(errs))
    print("widths", widths, "relative error of the learned change", errs, "slope", fit.slope)
    assert errs[-1] < errs[0] / 2, errs
    assert -1.0 < fit.slope < -0.25, (fit, errs)


# -- separable (fitted-kernel) solver --------------------------------------------------------------------
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_separable_solver_reduces_to_closed_form_for_homogeneous_net(weight_decay):
    from widelimit.dynamics.volterra_separable import SeparableCrossScaleFlow

    x, xt, y, _, rng = _problem()
    spec = MLP(depth=3)
    f0, f0t = rng.normal(size=y.shape), rng.normal(size=(xt.shape[0], y.shape[1]))
    ktt, kxt = mlp_kernels(spec, x)[0], mlp_kernels(spec, xt, x)[0]
    fast = SeparableCrossScaleFlow(spec, x, y, x_test=xt, rtol=1e-6, step=0.08)
    assert fast.fit_error < 1e-13 and fast.rank == 1        # (s s')^2 Theta: one separable term, exact
    t = np.array([40.0, 0.0, 0.3, 4.0])
    ref = L2Flow(ktt, y, weight_decay, 3, ntk_test_train=kxt, f0_train=f0, f0_test=f0t)(t)
    out = fast.solve(weight_decay, t, initial=homogeneous_initial(f0, f0t, 3))
    err = max(np.max(np.abs(out.train - ref.train)) / np.max(np.abs(ref.train)),
              np.max(np.abs(out.test - ref.test)) / np.max(np.abs(ref.test)))
    assert err < 1e-10


@pytest.mark.parametrize("spec", [MLP(depth=3, b_std=0.5), MLP(depth=3, activation="erf", b_std=0.8),
                                  MLP(depth=4, b_std=1.0, W_std=1.2)])
def test_separable_solver_matches_nystrom_reference(spec):
    """The fitted-kernel solver against the kernel-at-every-node-pair Nystrom solver (same grids): the
    difference is the kernel-fit error (stated) times a modest factor, and far below 1e-6."""
    from widelimit.dynamics.volterra_separable import SeparableCrossScaleFlow

    x, xt, y, _, _ = _problem(2, n=6, m=3)
    t = np.array([0.5, 5.0, 60.0])
    fast = SeparableCrossScaleFlow(spec, x, y, x_test=xt, rtol=1e-5)
    assert fast.fit_error < 1e-7
    ref = CrossScaleFlow(spec, x, y, x_test=xt, rtol=1e-5).solve(0.05, t)
    out = fast.solve(0.05, t)
    for a, b in ((out.train, ref.train), (out.test, ref.test)):
        assert np.max(np.abs(a - b)) / np.max(np.abs(b)) < 1e-6
    # a too-low degree is visibly worse: the check can fail
    coarse = SeparableCrossScaleFlow(spec, x, y, x_test=xt, rtol=1e-5, degree=4)
    assert coarse.fit_error > 10 * fast.fit_error


def test_separable_bad_input():
    from widelimit.dynamics.volterra_separable import SeparableCrossScaleFlow

    x, xt, y, _, _ = _problem()
    with pytest.raises(ValueError, match="degree"):
        SeparableCrossScaleFlow(MLP(depth=2), x, y, degree=1)
    with pytest.raises(ValueError, match="n_samples"):
        SeparableCrossScaleFlow(MLP(depth=2), x, y, degree=6, n_samples=6)
    with pytest.raises(ValueError, match="method"):
        VolterraLoss(MLP(depth=2), x, y, xt, y[:4], method="fast")


def test_lambda_opt_and_curves_of_net_with_biases_through_predict():
    """predict.lambda_opt / loss_curves accept VolterraLoss (L = None); lambda_opt agrees with a brute-force
    argmin of the model's own test loss over a fine grid."""
    from widelimit.predict import lambda_opt, loss_curves

    x, xt, y, yt, _ = _problem(4, n=6, m=5, k=1)
    model = VolterraLoss(MLP(depth=2, b_std=0.7), x, y, xt, yt, f0="zero", rtol=1e-4, degree=12)
    lams = np.geomspace(0.01, 1.0, 9)
    curves = loss_curves(model, weight_decays=lams, t=np.array([1.0, 5.0]))
    assert curves.test_loss.shape == (9, 2) and np.all(np.isfinite(curves.test_loss))
    np.testing.assert_allclose(curves.test_loss[3], model.test_loss(lams[3], [1.0, 5.0]), rtol=1e-12)
    res = lambda_opt(model, steps=[5.0], weight_decays=lams, refine=False)
    brute = lams[int(np.argmin([model.test_loss(lam, [5.0])[0] for lam in lams]))]
    assert float(np.ravel(res.weight_decay_opt)[0]) == pytest.approx(brute, rel=1e-9)


def test_solve_many_equals_one_by_one():
    from widelimit.dynamics.volterra_separable import SeparableCrossScaleFlow

    x, xt, y, _, _ = _problem(5, n=6, m=3)
    flow = SeparableCrossScaleFlow(MLP(depth=3, b_std=0.5), x, y, x_test=xt, rtol=1e-5, degree=12)
    t = np.array([3.0, 0.0, 0.5, 30.0])
    lams = [0.0, 0.01, 0.2]
    for many, lam in zip(flow.solve_many(lams, t), lams):
        one = flow.solve(lam, t)
        np.testing.assert_allclose(many.test, one.test, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(many.train, one.train, rtol=1e-10, atol=1e-12)
        assert many.error_estimate == pytest.approx(one.error_estimate, rel=1e-3, abs=1e-14)
