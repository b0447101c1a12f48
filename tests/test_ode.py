"""Numerical function-space flow (any loss) against the closed form and a parameter-space model."""
import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.special import log_softmax, softmax

from widelimit.dynamics.ntk_l2 import L2Flow
from widelimit.dynamics.ode import integrate_flow, xent_grad


def _problem(seed=0, N=24, M=8, K=3, D=40, scale=20.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N + M, D))
    a = scale * x @ x.T / D
    return a[:N, :N], a[N:, :N], rng.normal(size=(N, K)), rng.normal(size=(N, K)), rng.normal(size=(M, K))


@pytest.mark.parametrize("lam,L", [(0.0, 3), (0.1, 1), (0.05, 2), (0.05, 3), (0.2, 8)])
def test_mse_matches_closed_form(lam, L):
    ktt, kxt, y, f0, f0x = _problem()
    ts = np.array([[0.0, 0.1, 1.0], [5.0, 20.0, 60.0]])
    num = integrate_flow(ktt, y, lam, L, ts, ntk_test_train=kxt, f0_train=f0, f0_test=f0x)
    ref = L2Flow(ktt, y, lam, L, ntk_test_train=kxt, f0_train=f0, f0_test=f0x)(ts)
    assert num.train.shape == ref.train.shape == (2, 3, 24, 3) and num.test.shape == (2, 3, 8, 3)
    np.testing.assert_allclose(num.train, ref.train, rtol=0, atol=1e-8)
    np.testing.assert_allclose(num.test, ref.test, rtol=0, atol=1e-8)


def test_mse_implicit_solver_with_jacobian():
    ktt, kxt, y, f0, f0x = _problem(N=8, M=3, K=2)
    ts = np.array([0.0, 1.0, 30.0])
    num = integrate_flow(ktt, y, 0.05, 3, ts, ntk_test_train=kxt, f0_train=f0, f0_test=f0x, method="Radau",
                         rtol=1e-11, atol=1e-13)
    ref = L2Flow(ktt, y, 0.05, 3, ntk_test_train=kxt, f0_train=f0, f0_test=f0x)(ts)
    np.testing.assert_allclose(num.train, ref.train, rtol=0, atol=1e-8)
    np.testing.assert_allclose(num.test, ref.test, rtol=0, atol=1e-8)


def test_unsorted_times_and_custom_gradient():
    ktt, kxt, y, f0, f0x = _problem()
    ts = np.array([3.0, 0.0, 1.0, 3.0])
    a = integrate_flow(ktt, y, 0.1, 2, ts, f0_train=f0)
    # a custom gradient, written here: twice the MSE gradient is the MSE flow with the kernel doubled
    b = integrate_flow(ktt, y, 0.1, 2, ts, f0_train=f0, loss=lambda f, yy: 2.0 * (f - yy) / yy.size)
    ref = L2Flow(2.0 * ktt, y, 0.1, 2, f0_train=f0).train(ts)
    np.testing.assert_allclose(b.train, ref, rtol=0, atol=1e-8)
    assert np.abs(b.train[0] - a.train[0]).max() > 1e-3         # and it really is a different flow
    np.testing.assert_allclose(a.train, L2Flow(ktt, y, 0.1, 2, f0_train=f0).train(ts), rtol=0, atol=1e-8)
    np.testing.assert_allclose(a.train[1], f0, rtol=0, atol=0)
    np.testing.assert_allclose(a.train[0], a.train[3], rtol=0, atol=0)
    assert a.test is None


def _linear_model_problem(seed=0, N=20, M=6, d=5, K=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N + M, d))
    labels = rng.integers(0, K, size=N)
    return x[:N], x[N:], np.eye(K)[labels], 0.3 * rng.normal(size=(d, K))


@pytest.mark.parametrize("lam", [0.0, 0.2])
def test_xent_equals_parameter_space_flow_of_a_linear_model(lam):
    """A linear model f = x W (L = 1) has the constant NTK x x'^T: its function-space flow is exact."""
    x, xt, y, w0 = _linear_model_problem()
    N, (d, K) = x.shape[0], w0.shape

    def dw(t, w):
        W = w.reshape(d, K)
        g = (softmax(x @ W, axis=-1) - y) / N          # d loss / d f
        return (-x.T @ g - lam * W).ravel()

    ts = np.array([0.0, 0.5, 4.0, 20.0])
    res = solve_ivp(dw, (0, ts[-1]), w0.ravel(), t_eval=ts, method="DOP853", rtol=1e-12, atol=1e-14)
    W = res.y.T.reshape(len(ts), d, K)
    num = integrate_flow(x @ x.T, y, lam, 1, ts, ntk_test_train=xt @ x.T, f0_train=x @ w0, f0_test=xt @ w0,
                         loss="xent")
    np.testing.assert_allclose(num.train, x @ W, rtol=0, atol=1e-8)
    np.testing.assert_allclose(num.test, xt @ W, rtol=0, atol=1e-8)


def test_xent_long_time_is_stationary_point_of_regularised_loss():
    """L = 1, lam > 0: f_inf = -(1/lam) Theta grad loss(f_inf) (minimiser of loss + lam/2 |theta|^2)."""
    x, xt, y, w0 = _linear_model_problem(seed=1)
    lam = 0.3
    th = x @ x.T
    f = integrate_flow(th, y, lam, 1, 200.0, f0_train=x @ w0, loss="xent").train
    np.testing.assert_allclose(f, -th @ xent_grad(f, y) / lam, rtol=0, atol=1e-8)
    # and the loss actually decreased from the start
    loss = lambda f: -np.mean(np.sum(y * log_softmax(f, axis=-1), -1))  # noqa: E731
    assert loss(f) < loss(x @ w0)


def test_xent_decaying_kernel_solves_its_ode():
    """L >= 2: the returned trajectory satisfies the ODE (checked by a 5-point stencil)."""
    ktt, kxt, _, f0, f0x = _problem(scale=5.0)
    y = np.eye(3)[np.arange(24) % 3]
    lam, L = 0.1, 3
    h, t = 1e-3, 2.0
    ts = t + h * np.array([-2, -1, 0, 1, 2])
    o = integrate_flow(ktt, y, lam, L, ts, ntk_test_train=kxt, f0_train=f0, f0_test=f0x, loss="xent")
    d = (o.train[0] - 8 * o.train[1] + 8 * o.train[3] - o.train[4]) / (12 * h)
    dx = (o.test[0] - 8 * o.test[1] + 8 * o.test[3] - o.test[4]) / (12 * h)
    g = xent_grad(o.train[2], y)
    np.testing.assert_allclose(d, -np.exp(-4 * lam * t) * ktt @ g - 3 * lam * o.train[2], rtol=0, atol=1e-7)
    np.testing.assert_allclose(dx, -np.exp(-4 * lam * t) * kxt @ g - 3 * lam * o.test[2], rtol=0, atol=1e-7)


def test_bad_input():
    ktt, kxt, y, f0, f0x = _problem()
    with pytest.raises(ValueError, match="loss must be one of"):
        integrate_flow(ktt, y, 0.1, 2, 1.0, loss="hinge")
    with pytest.raises(TypeError, match="loss must be"):
        integrate_flow(ktt, y, 0.1, 2, 1.0, loss=3)
    with pytest.raises(ValueError, match="t must be finite"):
        integrate_flow(ktt, y, 0.1, 2, np.inf)
    with pytest.raises(ValueError, match="t must be >= 0"):
        integrate_flow(ktt, y, 0.1, 2, -1.0)
    with pytest.raises(ValueError, match="y_train must have shape"):
        integrate_flow(ktt, y[:, 0], 0.1, 2, 1.0, loss="xent")
    with pytest.raises(ValueError, match="ntk_test_train must have shape"):
        integrate_flow(ktt, y, 0.1, 2, 1.0, ntk_test_train=kxt[:, :5])
    with pytest.raises(ValueError, match="weight_decay must be"):
        integrate_flow(ktt, y, -0.1, 2, 1.0)
    with pytest.raises(ValueError, match="ntk_train_train is not symmetric"):
        integrate_flow(np.triu(ktt), y, 0.1, 2, 1.0)
