"""L2Flow: the closed-form NTK-regime MSE flow with L2 (issue 3 checks)."""
import tracemalloc
from collections import namedtuple

import numpy as np
import pytest

from widelimit.dynamics.ntk_l2 import FlowOutputs, L2Flow


def _problem(seed=0, N=30, M=12, K=3, D=50, ridge=0.05):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N + M, D))
    a = x @ x.T / D + ridge * np.eye(N + M)   # joint train+test kernel, PSD
    return dict(ktt=a[:N, :N], kxt=a[N:, :N], y=rng.normal(size=(N, K)),
                f0=rng.normal(size=(N, K)), f0x=rng.normal(size=(M, K)))


def _rhs(p, sol, f_train, f_test, t):
    """Right-hand side of the function-space ODE with the unnormalised kernel / (N K)."""
    n = p["y"].size
    g = np.exp(-sol.kappa * t) * (f_train - p["y"]) / n
    return -p["ktt"] @ g - sol.beta * f_train, -p["kxt"] @ g - sol.beta * f_test


@pytest.mark.parametrize("lam,L", [(0.0, 3), (0.1, 1), (0.1, 2), (0.05, 3), (0.3, 7)])
def test_closed_form_solves_the_ode(lam, L):
    """Differentiate sol(t) numerically (5-point stencil) and compare with the ODE's right-hand side."""
    p = _problem()
    sol = L2Flow(p["ktt"], p["y"], lam, L, ntk_test_train=p["kxt"], f0_train=p["f0"], f0_test=p["f0x"])
    for t in (0.3, 4.0, 25.0):
        h = 1e-3
        ts = t + h * np.array([-2, -1, 0, 1, 2])
        tr, te = sol(ts)
        d = lambda f: (f[0] - 8 * f[1] + 8 * f[3] - f[4]) / (12 * h)  # noqa: E731
        rtr, rte = _rhs(p, sol, tr[2], te[2], t)
        scale = max(np.abs(rtr).max(), np.abs(rte).max(), 1e-300)
        assert np.abs(d(tr) - rtr).max() <= 1e-7 * scale
        assert np.abs(d(te) - rte).max() <= 1e-7 * scale


def test_initial_value_and_limits():
    p = _problem()
    for L in (1, 2, 3, 6):
        sol = L2Flow(p["ktt"], p["y"], 0.07, L, ntk_test_train=p["kxt"], f0_train=p["f0"], f0_test=p["f0x"])
        tr, te = sol(0.0)
        np.testing.assert_allclose(tr, p["f0"], rtol=0, atol=1e-13)
        np.testing.assert_array_equal(te, p["f0x"])
        tr, te = sol(np.inf)
        if L >= 2:     # everything decays to 0
            assert np.all(tr == 0) and np.all(te == 0)
            far = sol(2e3)
            assert np.abs(far.train).max() < 1e-50 and np.abs(far.test).max() < 1e-50
        else:          # ridge regression with the normalised kernel
            th, thx = p["ktt"] / p["y"].size, p["kxt"] / p["y"].size
            a = th + 0.07 * np.eye(len(th))
            np.testing.assert_allclose(tr, th @ np.linalg.solve(a, p["y"]), rtol=1e-11, atol=1e-13)
            np.testing.assert_allclose(te, thx @ np.linalg.solve(a, p["y"]), rtol=1e-11, atol=1e-13)


def test_l1_converges_to_ridge_over_time():
    p = _problem()
    sol = L2Flow(p["ktt"], p["y"], 0.2, 1, ntk_test_train=p["kxt"], f0_train=p["f0"], f0_test=p["f0x"])
    inf = sol.test(np.inf)
    errs = [np.abs(sol.test(t) - inf).max() for t in (10.0, 100.0, 1000.0)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-12


def test_shapes_scalar_array_and_vector_targets():
    p = _problem()
    sol = L2Flow(p["ktt"], p["y"], 0.1, 3, ntk_test_train=p["kxt"])
    out = sol(np.array([0.0, 1.0, np.inf]))
    assert isinstance(out, FlowOutputs)
    assert out.train.shape == (3, 30, 3) and out.test.shape == (3, 12, 3)
    assert sol.train(1.0).shape == (30, 3) and sol.test(np.ones((2, 5))).shape == (2, 5, 12, 3)
    np.testing.assert_array_equal(sol.train(1.0), out.train[1])
    # a 1-D target behaves as K = 1
    sol1 = L2Flow(p["ktt"], p["y"][:, 0], 0.1, 3, ntk_test_train=p["kxt"])
    sol1k = L2Flow(p["ktt"], p["y"][:, :1], 0.1, 3, ntk_test_train=p["kxt"])
    assert sol1.train(1.0).shape == (30,) and sol1.test([1.0, 2.0]).shape == (2, 12)
    np.testing.assert_allclose(sol1.test([1.0, 2.0]), sol1k.test([1.0, 2.0])[..., 0], rtol=1e-14)
    no_test = L2Flow(p["ktt"], p["y"], 0.1, 3)
    assert no_test(1.0).test is None
    with pytest.raises(ValueError, match="ntk_test_train"):
        no_test.test(1.0)


def test_outputs_are_independent_per_output_column():
    """The kernel is shared across outputs: solving column by column gives the same answer."""
    p = _problem()
    full = L2Flow(p["ktt"], p["y"], 0.05, 4, ntk_test_train=p["kxt"], f0_train=p["f0"], f0_test=p["f0x"],
                  normalization=p["y"].size)
    ts = np.array([0.5, 3.0])
    for k in range(3):
        col = L2Flow(p["ktt"], p["y"][:, k], 0.05, 4, ntk_test_train=p["kxt"], f0_train=p["f0"][:, k],
                     f0_test=p["f0x"][:, k], normalization=p["y"].size)
        np.testing.assert_allclose(col.test(ts), full.test(ts)[..., k], rtol=1e-12, atol=1e-14)


def test_normalization_and_with_weight_decay():
    p = _problem()
    n = p["y"].size
    a = L2Flow(p["ktt"], p["y"], 0.1, 3, ntk_test_train=p["kxt"], f0_train=p["f0"])
    b = L2Flow(p["ktt"] / n, p["y"], 0.1, 3, ntk_test_train=p["kxt"] / n, f0_train=p["f0"], normalization=1.0)
    ts = np.array([0.0, 2.0, 30.0])
    np.testing.assert_allclose(a.test(ts), b.test(ts), rtol=1e-12, atol=1e-14)
    c = a.with_weight_decay(0.02, L=5)
    fresh = L2Flow(p["ktt"], p["y"], 0.02, 5, ntk_test_train=p["kxt"], f0_train=p["f0"])
    assert c.eigenvectors is a.eigenvectors and c.weight_decay == 0.02 and a.weight_decay == 0.1
    np.testing.assert_allclose(c.test(ts), fresh.test(ts), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(c.train(ts), fresh.train(ts), rtol=1e-12, atol=1e-14)


def test_rank_deficient_kernel_is_fine():
    """Null modes of the kernel (mu = 0) do not move; test outputs stay finite, also at t = inf."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(25, 6))
    a = x @ x.T
    sol = L2Flow(a[:20, :20], rng.normal(size=(20, 2)), 0.1, 3, ntk_test_train=a[20:, :20],
                 f0_train=rng.normal(size=(20, 2)), f0_test=rng.normal(size=(5, 2)))
    ts = np.array([0.0, 1.0, 100.0, np.inf])
    out = sol(ts)
    assert np.all(np.isfinite(out.train)) and np.all(np.isfinite(out.test))
    # the component of f_X in the kernel's null space is never learned: it only decays, as e^{-beta t}
    mu, v = np.linalg.eigh(a[:20, :20])
    null = v[:, mu < 1e-9 * mu.max()]
    assert null.shape[1] == 14                      # rank 6
    beta = 3 * 0.1
    want = np.exp(-beta * ts)[:, None, None] * (null.T @ sol.f0_train)[None]
    np.testing.assert_allclose(np.einsum("nk,tnc->tkc", null, out.train), want, rtol=0, atol=1e-10)
    # L = 3: every output ends at zero
    np.testing.assert_allclose(out.train[-1], 0.0, atol=1e-12)
    np.testing.assert_allclose(out.test[-1], 0.0, atol=1e-12)


def test_memory_is_not_n_squared_times_t():
    rng = np.random.default_rng(0)
    N, M, K, T = 300, 100, 2, 400
    x = rng.normal(size=(N + M, 20))
    a = x @ x.T / 20
    sol = L2Flow(a[:N, :N], rng.normal(size=(N, K)), 0.01, 3, ntk_test_train=a[N:, :N])
    ts = np.logspace(-2, 4, T)
    tracemalloc.start()
    sol(ts)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * T * (N + M) * K * 8 + 20 * T * N * 8     # O(T (N + M) K + T N) ...
    assert peak < 0.1 * N * N * T * 8                            # ... far below one N x N x T array


def test_from_kernel_fn_with_a_plain_function():
    p = _problem()
    X = np.random.default_rng(1).normal(size=(42, 4))
    Pair = namedtuple("Pair", "ntk nngp")

    def kernel_fn(x1, x2, get):
        x2 = x1 if x2 is None else x2
        k = x1 @ x2.T + 1.0
        return Pair(k, 0.5 * k) if not isinstance(get, str) else k

    sol = L2Flow.from_kernel_fn(kernel_fn, X[:30], p["y"], 0.1, 2, x_test=X[30:])
    ref = L2Flow(X[:30] @ X[:30].T + 1, p["y"], 0.1, 2, ntk_test_train=X[30:] @ X[:30].T + 1)
    np.testing.assert_allclose(sol.test([1.0, 5.0]), ref.test([1.0, 5.0]), rtol=1e-12)


def test_from_spec_uses_analytic_ntk_and_degree():
    from widelimit.arch import MLP
    from widelimit.kernels import analytic_kernels
    rng = np.random.default_rng(0)
    x, xt, y = rng.normal(size=(20, 5)), rng.normal(size=(7, 5)), rng.normal(size=(20, 2))
    spec = MLP(depth=3, out_dim=2)
    sol = L2Flow.from_spec(spec, x, y, 0.05, x_test=xt)
    assert sol.L == 3
    ref = L2Flow(analytic_kernels(spec, x).ntk, y, 0.05, 3, ntk_test_train=analytic_kernels(spec, xt, x).ntk)
    np.testing.assert_allclose(sol.test([0.5, 20.0]), ref.test([0.5, 20.0]), rtol=1e-12)
    with pytest.raises(ValueError, match="homogeneous"):
        L2Flow.from_spec(MLP(depth=3, b_std=0.1), x, y, 0.05)


@pytest.mark.nt
def test_lambda_zero_matches_neural_tangents():
    import neural_tangents as nt
    from widelimit._x64 import x64
    for seed, K in [(0, 3), (1, 1)]:
        p = _problem(seed=seed, N=40, M=15, K=K, D=60, ridge=0.0)
        ts = np.array([0.0, 0.1, 0.5, 3.0, 50.0, 1e4])
        with x64():
            predict = nt.predict.gradient_descent_mse(p["ktt"], p["y"])
            want_tr, want_te = (np.asarray(a) for a in predict(ts, p["f0"], p["f0x"], p["kxt"]))
            inf_tr, inf_te = (np.asarray(a) for a in predict(None, p["f0"], p["f0x"], p["kxt"]))
        sol = L2Flow(p["ktt"], p["y"], 0.0, 3, ntk_test_train=p["kxt"], f0_train=p["f0"], f0_test=p["f0x"])
        got_tr, got_te = sol(ts)
        assert want_tr.dtype == np.float64
        np.testing.assert_allclose(got_tr, want_tr, rtol=0, atol=1e-10)
        np.testing.assert_allclose(got_te, want_te, rtol=0, atol=1e-10)
        tr, te = sol(np.inf)
        np.testing.assert_allclose(tr, inf_tr, rtol=0, atol=1e-10)
        np.testing.assert_allclose(te, inf_te, rtol=0, atol=1e-10)


@pytest.mark.nt
def test_from_kernel_fn_with_stax():
    from neural_tangents import stax
    from widelimit._x64 import x64
    rng = np.random.default_rng(0)
    x, xt, y = rng.normal(size=(16, 4)), rng.normal(size=(5, 4)), rng.normal(size=(16, 2))
    _, _, kernel_fn = stax.serial(stax.Dense(64, W_std=2 ** 0.5, parameterization="ntk"), stax.Relu(),
                                  stax.Dense(1, W_std=2 ** 0.5, parameterization="ntk"))
    sol = L2Flow.from_kernel_fn(kernel_fn, x, y, 0.1, 2, x_test=xt)
    with x64():
        ktt = np.asarray(kernel_fn(x, None, "ntk"))
        kxt = np.asarray(kernel_fn(xt, x, "ntk"))
    assert ktt.dtype == np.float64
    ref = L2Flow(ktt, y, 0.1, 2, ntk_test_train=kxt)
    np.testing.assert_allclose(sol.test([1.0, 3.0]), ref.test([1.0, 3.0]), rtol=1e-12)


# -- bad input ---------------------------------------------------------------------------------
def _bad(**over):
    p = _problem()
    args = dict(ntk_train_train=p["ktt"], y_train=p["y"], weight_decay=0.1, L=3, ntk_test_train=p["kxt"],
                f0_train=None, f0_test=None)
    args.update(over)
    return L2Flow(args.pop("ntk_train_train"), args.pop("y_train"), args.pop("weight_decay"), args.pop("L"), **args)


@pytest.mark.parametrize("over,exc,match", [
    (dict(ntk_train_train=np.triu(np.ones((30, 30)))), ValueError, "ntk_train_train is not symmetric"),
    (dict(ntk_train_train=-np.eye(30)), ValueError, "ntk_train_train is not positive semi-definite"),
    (dict(ntk_train_train=np.diag(np.r_[np.ones(29), -0.5]) + 0.0), ValueError, "ntk_train_train is not positive"),
    (dict(ntk_train_train=np.eye(30) + 2 * (np.eye(30, k=1) + np.eye(30, k=-1))), ValueError,
     "smallest eigenvalue"),
    (dict(ntk_train_train=np.full((30, 30), np.nan)), ValueError, "ntk_train_train contains NaN"),
    (dict(ntk_train_train=np.ones((30, 29))), ValueError, "ntk_train_train must be a non-empty square"),
    (dict(ntk_train_train="kernel"), TypeError, "ntk_train_train"),
    (dict(y_train=np.ones((29, 3))), ValueError, "y_train must have 30 rows"),
    (dict(y_train=np.array([[np.inf] * 3] * 30)), ValueError, "y_train contains NaN or inf"),
    (dict(ntk_test_train=np.ones((5, 29))), ValueError, "ntk_test_train must have shape"),
    (dict(ntk_test_train=np.full((5, 30), np.inf)), ValueError, "ntk_test_train contains NaN"),
    (dict(f0_train=np.ones((30, 4))), ValueError, "f0_train must have shape"),
    (dict(f0_test=np.ones((3, 3))), ValueError, "f0_test must have shape"),
    (dict(ntk_test_train=None, f0_test=np.ones((12, 3))), ValueError, "f0_test was given without"),
    (dict(weight_decay=-0.1), ValueError, "weight_decay must be finite and >= 0"),
    (dict(weight_decay=float("nan")), ValueError, "weight_decay must be finite"),
    (dict(weight_decay="0.1"), TypeError, "weight_decay must be a real number"),
    (dict(L=0), ValueError, "L must be >= 1"),
    (dict(L=2.5), TypeError, "L must be an int"),
    (dict(L=True), TypeError, "L must be an int"),
])
def test_bad_input_is_rejected(over, exc, match):
    with pytest.raises(exc, match=match):
        _bad(**over)


def test_bad_times_and_normalization_are_rejected():
    sol = _bad()
    with pytest.raises(ValueError, match="t must be >= 0"):
        sol(np.array([1.0, -1e-9]))
    with pytest.raises(ValueError, match="t contains NaN"):
        sol.train(float("nan"))
    with pytest.raises(TypeError, match="t must be a number"):
        sol.train("soon")
    with pytest.raises(ValueError, match="normalization must be finite and > 0"):
        _bad(normalization=0.0)
    with pytest.raises(ValueError, match="weight_decay must be"):
        sol.with_weight_decay(-1.0)
