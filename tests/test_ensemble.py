"""L2FlowEnsemble: ensemble mean/covariance over NNGP-distributed initialisations."""
import numpy as np
import pytest

from widelimit.dynamics.ensemble import L2FlowEnsemble
from widelimit.dynamics.ntk_l2 import L2Flow


def _kernels(seed=0, N=20, M=8, D=40):
    """A joint NTK and a different joint NNGP kernel on train + test, both PSD."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N + M, D))
    ntk = x @ x.T / D + 0.1
    nngp = np.tanh(x @ x.T / D) + 0.05 * np.eye(N + M)
    nngp = nngp @ nngp / (N + M)            # PSD
    return ntk, nngp, N, M


def _ensemble(lam, L, K=2, seed=0):
    ntk, nngp, N, M = _kernels(seed)
    y = np.random.default_rng(seed + 10).normal(size=(N, K))
    ens = L2FlowEnsemble(ntk[:N, :N], nngp[:N, :N], y, lam, L, ntk_test_train=ntk[N:, :N],
                         nngp_test_train=nngp[N:, :N], nngp_test_test=nngp[N:, N:])
    return ens, ntk, nngp, y, N, M


@pytest.mark.parametrize("lam,L", [(0.05, 1), (0.05, 2), (0.1, 3), (0.0, 3)])
def test_monte_carlo(lam, L):
    """Sample f0 from the joint NNGP prior, run L2Flow per sample, compare moments."""
    ens, ntk, nngp, y, N, M = _ensemble(lam, L, K=1)
    S = 20000
    rng = np.random.default_rng(1)
    chol = np.linalg.cholesky(nngp + 1e-12 * np.eye(N + M))
    f0 = chol @ rng.normal(size=(N + M, S))
    # samples as output columns of one flow (the kernel is shared; keep the K = 1 normalisation)
    sol = L2Flow(ntk[:N, :N], np.repeat(y, S, axis=1), lam, L, ntk_test_train=ntk[N:, :N],
                 f0_train=f0[:N], f0_test=f0[N:], normalization=N * 1.0)
    ts = np.array([0.0, 2.0, 15.0])
    tr, te = sol(ts)
    mean, cov = ens.mean(ts), ens.cov(ts)
    var_d = ens.cov(ts, diagonal=True)
    for got, m, c, vd in ((tr, mean.train[..., 0], cov.train, var_d.train),
                          (te, mean.test[..., 0], cov.test, var_d.test)):
        np.testing.assert_allclose(np.einsum("tii->ti", c), vd, rtol=1e-10, atol=1e-14)
        sd = np.sqrt(np.maximum(vd, 1e-30))
        z = (got.mean(-1) - m) / (sd / np.sqrt(S))
        assert np.abs(z).max() < 5.0
        emp = np.einsum("tis,tjs->tij", got - got.mean(-1, keepdims=True),
                        got - got.mean(-1, keepdims=True)) / (S - 1)
        # Var of an empirical covariance entry: (c_ii c_jj + c_ij^2) / S
        se = np.sqrt((vd[:, :, None] * vd[:, None, :] + c ** 2) / S)
        assert np.abs(emp - c).max() / se.max() < 6.0 and np.all(np.abs(emp - c) <= 6 * se + 1e-14)


def test_zero_time_is_the_prior_and_limits():
    ens, ntk, nngp, y, N, M = _ensemble(0.1, 3)
    c0 = ens.cov(0.0)
    np.testing.assert_allclose(c0.train, nngp[:N, :N], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(c0.test, nngp[N:, N:], rtol=1e-12, atol=1e-14)
    assert np.all(ens.mean(0.0).train == 0) and np.all(ens.mean(0.0).test == 0)
    cinf = ens.cov(np.inf)
    assert np.all(cinf.train == 0) and np.all(cinf.test == 0)
    # cov shapes for array times
    c = ens.cov(np.array([[0.5, 1.0]]))
    assert c.train.shape == (1, 2, N, N) and c.test.shape == (1, 2, M, M)
    np.testing.assert_allclose(c.test[0, 1], c.test[0, 1].T, rtol=1e-12, atol=1e-15)
    assert np.linalg.eigvalsh(c.test[0, 1]).min() > -1e-12


def test_train_only_and_missing_kernels():
    ntk, nngp, N, M = _kernels()
    y = np.ones((N, 1))
    ens = L2FlowEnsemble(ntk[:N, :N], nngp[:N, :N], y, 0.1, 2)
    assert ens.cov(1.0).test is None and ens.mean(1.0).test is None
    ens2 = L2FlowEnsemble(ntk[:N, :N], nngp[:N, :N], y, 0.1, 2, ntk_test_train=ntk[N:, :N])
    assert ens2.mean(1.0).test.shape == (M, 1) and ens2.cov(1.0).test is None
    with pytest.raises(ValueError, match="without ntk_test_train"):
        L2FlowEnsemble(ntk[:N, :N], nngp[:N, :N], y, 0.1, 2, nngp_test_train=nngp[N:, :N],
                       nngp_test_test=nngp[N:, N:])
    with pytest.raises(ValueError, match="nngp_test_test"):
        L2FlowEnsemble(ntk[:N, :N], nngp[:N, :N], y, 0.1, 2, ntk_test_train=ntk[N:, :N],
                       nngp_test_train=nngp[N:, :N])
    with pytest.raises(ValueError, match="nngp_train_train must have shape"):
        L2FlowEnsemble(ntk[:N, :N], nngp[:N - 1, :N - 1], y, 0.1, 2)
    with pytest.raises(ValueError, match="nngp_train_train is not symmetric"):
        L2FlowEnsemble(ntk[:N, :N], np.triu(nngp[:N, :N]) + np.eye(N), y, 0.1, 2)
    with pytest.raises(ValueError, match="nngp_test_train must have shape"):
        L2FlowEnsemble(ntk[:N, :N], nngp[:N, :N], y, 0.1, 2, ntk_test_train=ntk[N:, :N],
                       nngp_test_train=nngp[N:, :N - 1], nngp_test_test=nngp[N:, N:])


def test_from_spec():
    from widelimit.arch import MLP
    from widelimit.kernels import analytic_kernels
    rng = np.random.default_rng(0)
    x, xt, y = rng.normal(size=(12, 4)), rng.normal(size=(5, 4)), rng.normal(size=(12, 1))
    spec = MLP(depth=2)
    ens = L2FlowEnsemble.from_spec(spec, x, y, 0.1, x_test=xt)
    k, kx, kxx = analytic_kernels(spec, x), analytic_kernels(spec, xt, x), analytic_kernels(spec, xt)
    ref = L2FlowEnsemble(k.ntk, k.nngp, y, 0.1, 2, ntk_test_train=kx.ntk, nngp_test_train=kx.nngp,
                         nngp_test_test=kxx.nngp)
    np.testing.assert_allclose(ens.cov(1.0).test, ref.cov(1.0).test, rtol=1e-12)
    assert ens.flow.L == 2


@pytest.mark.nt
def test_lambda_zero_matches_neural_tangents_ensemble():
    import neural_tangents as nt
    from neural_tangents import stax
    from widelimit._x64 import x64
    rng = np.random.default_rng(0)
    x, xt, y = rng.normal(size=(24, 5)), rng.normal(size=(9, 5)), rng.normal(size=(24, 2))
    _, _, kernel_fn = stax.serial(stax.Dense(1, W_std=1.5, parameterization="ntk"), stax.Relu(),
                                  stax.Dense(1, W_std=1.5, parameterization="ntk"), stax.Relu(),
                                  stax.Dense(1, W_std=1.5, parameterization="ntk"))
    ts = np.array([0.0, 0.3, 5.0, 100.0])
    with x64():
        predict = nt.predict.gradient_descent_mse_ensemble(kernel_fn, x, y)
        te = predict(ts, xt, "ntk", compute_cov=True)
        tr = predict(ts, None, "ntk", compute_cov=True)
        te_mean, te_cov = np.asarray(te.mean), np.asarray(te.covariance)
        tr_mean, tr_cov = np.asarray(tr.mean), np.asarray(tr.covariance)
    assert te_cov.dtype == np.float64
    ens = L2FlowEnsemble.from_kernel_fn(kernel_fn, x, y, 0.0, 3, x_test=xt)
    mean, cov = ens.mean(ts), ens.cov(ts)
    np.testing.assert_allclose(mean.test, te_mean, rtol=0, atol=1e-10)
    np.testing.assert_allclose(mean.train, tr_mean, rtol=0, atol=1e-10)
    np.testing.assert_allclose(cov.test, te_cov, rtol=0, atol=1e-10)
    np.testing.assert_allclose(cov.train, tr_cov, rtol=0, atol=1e-10)
