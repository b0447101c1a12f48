"""The test-loss models (ExpectedLoss, FlowLoss; flow and GD) against independent references.

References: the ensemble covariance of L2FlowEnsemble, Monte Carlo over f0 ~ NNGP draws pushed through
L2Flow, a plain step-by-step GD recursion in function space written here, and the closed-form flow
(GD -> flow as eta -> 0, first order)."""
import numpy as np
import pytest

from widelimit.arch import MLP
from widelimit.dynamics import ExpectedLoss, FlowLoss, L2Flow, L2FlowEnsemble, LossModel, gd_mode_coefficients
from widelimit.kernels import DataKernels, analytic_kernels


@pytest.fixture(scope="module")
def problem():
    from widelimit.data import load_dataset
    ds = load_dataset("digits", n_train=40, n_test=30, seed=0)
    spec = MLP(depth=3, out_dim=10)
    x = np.concatenate([ds.x_train, ds.x_test])
    k = analytic_kernels(spec, x)
    n = ds.n_train
    dk = DataKernels(k.ntk[:n, :n], k.ntk[n:, :n], ds.y_train, ds.y_test, 3, k.nngp[:n, :n], k.nngp[n:, :n],
                     k.nngp[n:, n:], source="digits 40/30, MLP(depth=3)")
    return ds, k, dk


def _gd_reference(ktt, kxt, y, f0, f0x, lam, L, eta, steps):
    """Function-space GD at infinite width, step by step, without eigendecomposition:
    f' = c^L f - eta c^{L-1} c^{2(L-1)k} Theta~ (f - y), c = 1 - eta lam (docs/theory.md §2.4)."""
    norm = y.size
    c = 1.0 - eta * lam
    f, fx, out = f0.copy(), f0x.copy(), {}
    for k in range(max(steps) + 1):
        if k in steps:
            out[k] = (f.copy(), fx.copy())
        s = eta * c ** (L - 1) * c ** (2 * (L - 1) * k) / norm
        r = f - y
        f, fx = c ** L * f - s * ktt @ r, c ** L * fx - s * kxt @ r
    return [out[k] for k in steps]


def test_models_implement_the_protocol(problem):
    _, _, dk = problem
    for m in (ExpectedLoss.from_kernels(dk), FlowLoss.from_kernels(dk), ExpectedLoss.from_kernels(dk).with_learning_rate(0.5)):
        assert isinstance(m, LossModel)
        assert m.n_train == 40 and m.n_test == 30 and m.L == 3
        assert m.mu_max == pytest.approx(np.linalg.eigvalsh(dk.ntk_train_train / dk.y_train.size).max(), rel=1e-10)


def test_expected_loss_at_zero_nngp_is_the_f0_zero_loss(problem):
    _, _, dk = problem
    z = dk.replace(nngp_train_train=0 * dk.nngp_train_train, nngp_test_train=0 * dk.nngp_test_train,
                   nngp_test_test=0 * dk.nngp_test_test)
    t = np.array([0.0, 1.0, 30.0, 300.0])
    for eta in (None, 0.5):
        e, f = ExpectedLoss.from_kernels(z, learning_rate=eta), FlowLoss.from_kernels(z, learning_rate=eta)
        for lam in (0.0, 0.01):
            np.testing.assert_allclose(e.test_loss(lam, t), f.test_loss(lam, t), rtol=1e-12)
            np.testing.assert_allclose(e.train_loss(lam, t), f.train_loss(lam, t), rtol=1e-12)
    # with the real NNGP the average is strictly above the mean function's loss (positive variance)
    e = ExpectedLoss.from_kernels(dk)
    assert np.all(e.test_loss(0.01, t) > FlowLoss.from_kernels(dk).test_loss(0.01, t))


def test_expected_loss_matches_ensemble_covariance(problem):
    """The O(N^2) quadratic form equals the mean of L2FlowEnsemble's test variances, and the mean-function
    loss the loss of the ensemble mean; the ensemble converts to the same model in predict."""
    ds, k, dk = problem
    n = ds.n_train
    el = ExpectedLoss.from_kernels(dk)
    t = np.array([0.0, 3.0, 30.0, 300.0])
    for lam in (0.0, 0.02):
        ens = L2FlowEnsemble(k.ntk[:n, :n], k.nngp[:n, :n], ds.y_train, lam, 3, ntk_test_train=k.ntk[n:, :n],
                             nngp_test_train=k.nngp[n:, :n], nngp_test_test=k.nngp[n:, n:])
        var = ens.cov(t, diagonal=True).test.mean(-1)
        np.testing.assert_allclose(el.variance(lam, t), var, rtol=1e-9, atol=1e-12)
        mean = ens.mean(t).test
        np.testing.assert_allclose(el.loss_of_mean(lam, t), 0.5 * np.mean((mean - ds.y_test) ** 2, axis=(1, 2)),
                                   rtol=1e-9)
        np.testing.assert_allclose(ExpectedLoss.from_ensemble(ens, ds.y_test).test_loss(lam, t),
                                   el.test_loss(lam, t), rtol=1e-12)
    assert el.test_loss(0.02, [0.0])[0] == pytest.approx(el.zero_loss() + 0.5 * np.mean(np.diag(k.nngp[n:, n:])),
                                                        rel=1e-12)


@pytest.mark.parametrize("eta", [None, 0.5])
def test_expected_loss_against_monte_carlo(problem, eta):
    """Average over sampled f0 ~ NNGP of the per-draw test and train losses agrees with the closed form."""
    ds, k, dk = problem
    n = ds.n_train
    el = ExpectedLoss.from_kernels(dk, learning_rate=eta)
    chol = np.linalg.cholesky(k.nngp + 1e-10 * np.eye(len(k.nngp)))
    rng = np.random.default_rng(0)
    t = np.array([1.0, 20.0])
    te, tr = [], []
    for _ in range(200):
        f0 = chol @ rng.standard_normal((len(k.nngp), 10))
        fl = FlowLoss(L2Flow(k.ntk[:n, :n], ds.y_train, 0.0, 3, ntk_test_train=k.ntk[n:, :n], f0_train=f0[:n],
                             f0_test=f0[n:]), ds.y_test, learning_rate=eta)
        te.append(fl.test_loss(0.03, t))
        tr.append(fl.train_loss(0.03, t))
    for draws, want in ((np.array(te), el.test_loss(0.03, t)), (np.array(tr), el.train_loss(0.03, t))):
        se = draws.std(0) / np.sqrt(len(draws))
        assert np.all(np.abs(draws.mean(0) - want) < 4 * se)


def test_gd_model_matches_step_by_step_recursion(problem):
    """GD outputs (L2Flow with learning_rate) and losses equal an explicit function-space GD loop."""
    ds, k, dk = problem
    n = ds.n_train
    rng = np.random.default_rng(1)
    f0, f0x = rng.standard_normal(ds.y_train.shape), rng.standard_normal(ds.y_test.shape)
    steps = [0, 1, 7, 40]
    ref = _gd_reference(k.ntk[:n, :n], k.ntk[n:, :n], ds.y_train, f0, f0x, 0.05, 3, 0.7, steps)
    fl = L2Flow(k.ntk[:n, :n], ds.y_train, 0.05, 3, ntk_test_train=k.ntk[n:, :n], f0_train=f0, f0_test=f0x,
                learning_rate=0.7)
    tr, te = fl(0.7 * np.array(steps))
    for i, (a, b) in enumerate(ref):
        np.testing.assert_allclose(tr[i], a, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(te[i], b, rtol=1e-10, atol=1e-12)
    want = [0.5 * np.mean((b - ds.y_test) ** 2) for _, b in ref]
    np.testing.assert_allclose(FlowLoss(fl, ds.y_test).test_loss(0.05, 0.7 * np.array(steps)), want, rtol=1e-10)


def test_gd_tends_to_flow_first_order(problem):
    _, _, dk = problem
    t = np.array([0.0, 1.0, 10.0, 50.0])
    flow = ExpectedLoss.from_kernels(dk).test_loss(0.02, t)
    errs = [np.abs(ExpectedLoss.from_kernels(dk, learning_rate=eta).test_loss(0.02, t) - flow).max()
            for eta in (0.5, 0.05)]
    assert errs[1] < errs[0] / 5 and errs[1] < 1e-3
    assert errs[0] > 0        # GD at a finite step really differs from the flow


def test_gd_coefficients_vectorised_over_weight_decay(problem):
    _, _, dk = problem
    mu = np.linalg.eigvalsh(dk.ntk_train_train / dk.y_train.size)
    lams = np.array([0.0, 0.01, 0.3])
    many = gd_mode_coefficients(mu, np.array([0, 5, 60]), lams, 3, 0.5)
    for p, lam in enumerate(lams):
        one = gd_mode_coefficients(mu, np.array([0, 5, 60]), lam, 3, 0.5)
        for a, b in zip(many, one):
            np.testing.assert_allclose(a[:, p], b, rtol=1e-13, atol=1e-300)
    m = ExpectedLoss.from_kernels(dk, learning_rate=0.5)
    t = np.array([0.5, 10.0, 30.0])
    np.testing.assert_allclose(m.test_loss_grid(lams, t), np.stack([m.test_loss(lam, t) for lam in lams]),
                               rtol=1e-12)


def test_bad_inputs(problem):
    _, _, dk = problem
    with pytest.raises(ValueError, match="learning_rate"):
        ExpectedLoss.from_kernels(dk, learning_rate=-1.0)
    with pytest.raises(ValueError, match="NNGP"):
        ExpectedLoss.from_kernels(DataKernels(dk.ntk_train_train, dk.ntk_test_train, dk.y_train, dk.y_test, 3))
    with pytest.raises(ValueError, match="y_test"):
        FlowLoss(L2Flow(dk.ntk_train_train, dk.y_train, 0.0, 3, ntk_test_train=dk.ntk_test_train), dk.y_test[:-1])
    with pytest.raises(ValueError, match="learning_rate\\*weight_decay"):
        ExpectedLoss.from_kernels(dk, learning_rate=2.0).test_loss(0.6, [2.0])
    with pytest.raises(ValueError, match="t must"):
        ExpectedLoss.from_kernels(dk).test_loss(0.1, [-1.0])


def test_divergent_gd_is_never_a_negative_loss(problem):
    """GD far outside eta*mu_max < 2 (the issue's eta = 50): every loss the model returns is >= 0 and grows
    (divergence), or the model raises FloatingPointError once the quadratic form overflows -- never a
    negative or NaN MSE."""
    _, _, dk = problem
    m = ExpectedLoss.from_kernels(dk, learning_rate=50.0)
    assert 50.0 * m.mu_max > 2
    t = np.arange(1, 40) * 50.0
    vals = m.test_loss(0.01, t)           # c = 1 - eta lam = 0.5 shrinks the kernel: it ends at the zero function
    assert np.all(vals >= 0) and np.all(np.isfinite(vals))
    assert vals[-1] == pytest.approx(m.zero_loss(), rel=1e-6)
    vals = m.test_loss(0.0, t)            # without weight decay the top mode grows by |1 - eta mu_max| a step
    assert np.all(vals >= 0) and vals[-1] > 1e10 * vals[0]
    with pytest.raises(FloatingPointError):
        m.test_loss(0.0, [50.0 * 5000])


def test_clip_only_hides_round_off():
    from widelimit.dynamics.loss import _clip
    np.testing.assert_array_equal(_clip(np.array([-1e-12, 2.0]), np.array([10.0, 10.0]), "x"), [0.0, 2.0])
    with pytest.raises(FloatingPointError, match="negative"):
        _clip(np.array([-1e-3]), np.array([10.0]), "x")
    with pytest.raises(FloatingPointError, match="not finite"):
        _clip(np.array([np.nan]), np.array([1.0]), "x")
