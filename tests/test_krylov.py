"""Krylov solver of the L2 dynamics (docs/theory.md §4) against the dense eigendecomposition path."""
import warnings

import numpy as np
import pytest

from widelimit.arch import MLP
from widelimit.data import load_dataset
from widelimit.dynamics import ExpectedLoss, FlowLoss, L2Flow
from widelimit.dynamics.krylov import KernelMatrix, KrylovConvergenceWarning, KrylovLoss
from widelimit.kernels.native import mlp_kernels

LAMS = (1e-5, 1e-3, 1e-1)
S = np.array([0.05, 0.5, 3.0, 10.0])     # lam * t


@pytest.fixture(scope="module")
def problem():
    ds = load_dataset("teacher", n_train=400, n_test=80, in_dim=12, out_dim=3, seed=3)
    spec = MLP(depth=3, activation="relu")
    ntt, ktt = mlp_kernels(spec, ds.x_train)
    nxt, kxt = mlp_kernels(spec, ds.x_test, ds.x_train)
    kxx = np.array([mlp_kernels(spec, ds.x_test[i:i + 1])[1][0, 0] for i in range(ds.n_test)])
    return dict(ntt=ntt, ktt=ktt, nxt=nxt, kxt=kxt, kxx=kxx, y=ds.y_train, yt=ds.y_test, L=3)


@pytest.fixture(scope="module")
def mean_model(problem):
    p = problem
    return KrylovLoss(p["ntt"], p["y"], p["L"], ntk_test_train=p["nxt"], y_test=p["yt"], tol=1e-11)


def _rel(a, b):
    return np.linalg.norm((a - b).reshape(len(a), -1), axis=1) / np.linalg.norm(b.reshape(len(b), -1), axis=1)


def test_outputs_match_dense(problem, mean_model):
    p, m = problem, mean_model
    assert m.basis.converged and m.basis.dim < p["ntt"].shape[0]       # a genuine reduction
    flow = L2Flow(p["ntt"], p["y"], 0.0, p["L"], ntk_test_train=p["nxt"])
    for lam in LAMS:
        t = S / lam
        dense = flow.with_weight_decay(lam)
        assert np.max(_rel(m.test_outputs(lam, t), dense.test(t))) < 1e-9
        assert np.max(_rel(m.train_outputs(lam, t), dense.train(t))) < 1e-9
    dense_loss = FlowLoss(flow, p["yt"])
    for lam in LAMS:
        np.testing.assert_allclose(m.test_loss(lam, S / lam), dense_loss.test_loss(lam, S / lam), rtol=1e-9)
        np.testing.assert_allclose(m.train_loss(lam, S / lam), dense_loss.train_loss(lam, S / lam), rtol=1e-8)
    assert m.zero_loss() == pytest.approx(dense_loss.zero_loss(), rel=1e-14)
    assert m.mu_max == pytest.approx(flow.mu_max, rel=1e-10)


def test_given_f0_and_gd(problem):
    p = problem
    rng = np.random.default_rng(0)
    f0, f0x = rng.standard_normal(p["y"].shape), rng.standard_normal(p["yt"].shape)
    m = KrylovLoss(p["ntt"], p["y"], p["L"], ntk_test_train=p["nxt"], y_test=p["yt"], f0_train=f0, f0_test=f0x)
    flow = L2Flow(p["ntt"], p["y"], 0.0, p["L"], ntk_test_train=p["nxt"], f0_train=f0, f0_test=f0x)
    for lam in LAMS:
        t = S / lam
        assert np.max(_rel(m.test_outputs(lam, t), flow.with_weight_decay(lam).test(t))) < 1e-9
    eta = 0.5 / flow.mu_max          # GD at a finite learning rate, same basis
    gd_k, gd_d = m.with_learning_rate(eta), FlowLoss(flow, p["yt"], learning_rate=eta)
    t = np.array([3.0, 40.0, 400.0]) * eta
    np.testing.assert_allclose(gd_k.test_loss(1e-2, t), gd_d.test_loss(1e-2, t), rtol=1e-9)
    assert not np.allclose(gd_k.test_loss(1e-2, t), m.test_loss(1e-2, t), rtol=1e-3)   # GD != flow here


def test_expected_loss_exact_and_probed(problem):
    p = problem
    kw = dict(ntk_test_train=p["nxt"], y_test=p["yt"], nngp_train_train=p["ktt"], nngp_test_train=p["kxt"],
              nngp_test_test_diag=p["kxx"])
    dense = ExpectedLoss(p["ntt"], p["nxt"], p["ktt"], p["kxt"], p["kxx"], p["y"], p["yt"], p["L"])
    with pytest.warns(RuntimeWarning, match="costs more than the dense path"):      # M = N / 5
        exact = KrylovLoss(p["ntt"], p["y"], p["L"], variance_probes="exact", **kw)
    probed = KrylovLoss(p["ntt"], p["y"], p["L"], variance_sketch=24, variance_probes=12, **kw)
    worst = 0.0
    for lam in LAMS:
        t = S / lam
        ref = dense.test_loss(lam, t)
        np.testing.assert_allclose(exact.test_loss(lam, t), ref, rtol=1e-8)
        err = probed.test_loss_error(lam, t)
        assert np.all(err > 0)
        worst = max(worst, float(np.max(np.abs(probed.test_loss(lam, t) - ref) / err)))
    assert worst < 5.0           # inside 5 stated standard errors everywhere


def test_error_estimate_is_an_honest_bound(problem):
    p = problem
    flow = L2Flow(p["ntt"], p["y"], 0.0, p["L"], ntk_test_train=p["nxt"])
    for tol in (1e-3, 1e-6):
        m = KrylovLoss(p["ntt"], p["y"], p["L"], ntk_test_train=p["nxt"], y_test=p["yt"], tol=tol,
                       weight_decay_range=(1e-4, 1e-2))
        assert m.basis.converged and 0 < m.basis.error_estimate <= tol
        true = max(np.max(_rel(m.test_outputs(lam, S / lam), flow.with_weight_decay(lam).test(S / lam)))
                   for lam in (1e-4, 1e-3, 1e-2))
        assert true <= m.basis.error_estimate


def test_not_converged_warns_or_raises(problem):
    p = problem
    with pytest.warns(KrylovConvergenceWarning, match="error estimate"):
        m = KrylovLoss(p["ntt"], p["y"], p["L"], ntk_test_train=p["nxt"], y_test=p["yt"], max_dim=12)
    assert not m.basis.converged and m.basis.error_estimate > 1e-10
    with pytest.raises(RuntimeError, match="not converged"):
        KrylovLoss(p["ntt"], p["y"], p["L"], max_dim=12, on_failure="raise")


def test_bad_kernels():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((60, 60))
    y = rng.standard_normal((60, 2))
    with pytest.raises(ValueError, match="not symmetric"):
        KrylovLoss(x @ x.T + 0.1 * rng.standard_normal((60, 60)), y, 3)
    with pytest.raises(ValueError, match="positive semi-definite"):
        KrylovLoss(x @ x.T - 30 * np.eye(60) * np.diag(x @ x.T).mean() / 30 - 5 * np.eye(60)
                   + np.diag(np.full(60, 0.0)), y, 3)
    a = x @ x.T
    a[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        KrylovLoss(a, y, 3)
    with pytest.raises(ValueError, match="y_train"):
        KrylovLoss(x @ x.T, y[:5], 3)
    with pytest.raises(ValueError, match="variance_probes"):
        KrylovLoss(x @ x.T, y, 3, ntk_test_train=x[:5] @ x.T, y_test=y[:5], nngp_train_train=x @ x.T,
                   nngp_test_train=x[:5] @ x.T, nngp_test_test_diag=np.ones(5), variance_probes=1)


def test_non_psd_found_by_ritz_values():
    """A kernel whose sampled entries look fine but that has one negative direction."""
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.standard_normal((400, 400)))
    ev = np.geomspace(1.0, 1e-6, 400)
    ev[5] = -0.3
    a = (q * ev) @ q.T
    a = 0.5 * (a + a.T)
    with pytest.raises(ValueError, match="positive semi-definite"):
        KrylovLoss(a * 800, rng.standard_normal((400, 2)), 3)


def test_float32_memmap_kernel(problem, tmp_path):
    p = problem
    k32 = np.lib.format.open_memmap(tmp_path / "k.npy", mode="w+", dtype=np.float32, shape=p["ntt"].shape)
    k32[:] = p["ntt"]
    op = KernelMatrix("k", k32, 1.0, chunk_bytes=8 * 400 * 64)       # 7 row chunks
    v = np.random.default_rng(0).standard_normal((400, 3))
    ref = k32.astype(np.float64) @ v
    np.testing.assert_allclose(op.matmat(v), ref, rtol=0, atol=1e-13 * np.abs(ref).max())
    m = KrylovLoss(k32, p["y"], p["L"], ntk_test_train=p["nxt"].astype(np.float32), y_test=p["yt"])
    flow = L2Flow(k32.astype(np.float64), p["y"], 0.0, p["L"], ntk_test_train=p["nxt"].astype(np.float32))
    for lam in LAMS:
        assert np.max(_rel(m.test_outputs(lam, S / lam), flow.with_weight_decay(lam).test(S / lam))) < 1e-9


def test_predict_solver_switch(problem):
    from widelimit.kernels import DataKernels
    from widelimit.predict import lambda_opt, predict_model, t_star
    p = problem
    dk = DataKernels(p["ntt"], p["nxt"], p["y"], p["yt"], 3, p["ktt"], p["kxt"], p["kxx"])
    kr, de = predict_model(dk, solver="krylov", f0="zero"), predict_model(dk, solver="eigh", f0="zero")
    assert isinstance(kr, KrylovLoss) and not isinstance(de, KrylovLoss)
    assert isinstance(predict_model(dk, f0="zero"), type(de))         # auto: dense below KRYLOV_MIN_N
    lams = [1e-4, 1e-3, 1e-2]
    np.testing.assert_allclose(t_star(kr, weight_decays=lams).t_star, t_star(de, weight_decays=lams).t_star,
                               rtol=1e-6)
    steps = [300, 3000, 30000]
    np.testing.assert_allclose(lambda_opt(kr, steps=steps).weight_decay_opt,
                               lambda_opt(de, steps=steps).weight_decay_opt, rtol=1e-5)
    with pytest.raises(ValueError, match="solver"):
        predict_model(dk, solver="lu")


def test_query_outside_checked_region_warns(problem):
    """Queries less damped than the stopping rule checked (weight decay below the range at t > 1/lo) get a
    warning (the stated error does not cover them); others do not."""
    p = problem
    m = KrylovLoss(p["ntt"], p["y"], p["L"], ntk_test_train=p["nxt"], y_test=p["yt"],
                   weight_decay_range=(1e-3, 1e-1), horizon=10.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.test_outputs(1e-2, [1.0, 1e3, 1e5])                   # checked decay (any t: more damping)
        m.test_outputs(0.0, [10.0, 1e3])                        # lam = 0 but t <= 1/lo
    with pytest.warns(KrylovConvergenceWarning, match="outside the region"):
        m.test_outputs(0.0, [1e4])                              # lam = 0 at t > 1/lo: never checked
    m2 = KrylovLoss(p["ntt"], p["y"], p["L"], ntk_test_train=p["nxt"], y_test=p["yt"],
                    weight_decay_range=(1e-3, 1e-1), horizon=10.0)
    with pytest.warns(KrylovConvergenceWarning, match="outside the region"):
        m2.test_loss(1e-5, [2e3])                               # below the range, t > 1/lo


def test_blas_threads_limits_and_restores():
    from threadpoolctl import threadpool_info
    from widelimit.dynamics.krylov.lanczos import blas_threads

    def blas():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas()
    with blas_threads(1):
        assert blas() and all(n == 1 for n in blas())
    assert blas() == before
    with blas_threads(None):
        assert blas() == before
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads"):
            blas_threads(bad)
    with pytest.raises(ValueError, match="threads"):
        KrylovLoss(np.eye(4), np.ones(4), 2, threads=0)


def test_lockstep_equals_separate_runs(problem):
    """Two bases grown with shared passes (:func:`lockstep`) are the bases grown one after the other, and
    each shared pass counts once."""
    from widelimit.dynamics.krylov.lanczos import BlockLanczos, block_lanczos, lockstep
    p = problem
    a = p["ntt"] / p["y"].size
    starts = [p["y"], np.random.default_rng(5).standard_normal((400, 7))]

    def sol(s0):          # exp(-3 A) applied to the start, the quantity whose convergence stops the run
        return lambda q, theta, w: [q @ (w * np.exp(-3.0 * theta)) @ (w.T @ (q.T @ s0))]

    sep = [block_lanczos(lambda x: a @ x, st, solution=sol(st), tol=1e-9, max_dim=200) for st in starts]
    calls = []

    def mm(x):
        calls.append(x.shape[1])
        return a @ x
    both = lockstep(mm, [BlockLanczos(st, solution=sol(st), tol=1e-9, max_dim=200) for st in starts])
    assert len(calls) == max(b.n_blocks for b in both) < sum(b.n_blocks for b in both)
    assert calls[0] == sum(s.shape[1] for s in starts)
    for s_, b_ in zip(sep, both):
        assert (s_.dim, s_.n_blocks, s_.converged) == (b_.dim, b_.n_blocks, True)
        np.testing.assert_allclose(b_.ritz_values, s_.ritz_values, rtol=1e-10, atol=1e-12 * s_.ritz_values.max())
        assert np.linalg.norm(s_.q - b_.q @ (b_.q.T @ s_.q)) < 1e-8     # the same space


def test_progress_callback_once_per_pass(problem):
    p = problem
    calls = []
    m = KrylovLoss(p["ntt"], p["y"], p["L"], ntk_test_train=p["nxt"], y_test=p["yt"], nngp_train_train=p["ktt"],
                   nngp_test_train=p["kxt"], nngp_test_test_diag=p["kxx"], progress=lambda k, d: calls.append((k, d)))
    assert [k for k, _ in calls] == list(range(1, max(m.basis.n_blocks, m.variance_basis.n_blocks) + 1))
    assert calls[-1][1] == [m.basis.dim, m.variance_basis.dim]
    with pytest.raises(TypeError, match="progress"):
        KrylovLoss(p["ntt"], p["y"], p["L"], progress="bar")


def test_mean_model_is_the_f0_zero_model(problem):
    """``mean_model()`` of the NNGP-averaged models (Krylov and dense) is the f0 = 0 model built on its own."""
    p = problem
    kw = dict(ntk_test_train=p["nxt"], y_test=p["yt"])
    avg = KrylovLoss(p["ntt"], p["y"], p["L"], **kw, nngp_train_train=p["ktt"], nngp_test_train=p["kxt"],
                     nngp_test_test_diag=p["kxx"])
    own = KrylovLoss(p["ntt"], p["y"], p["L"], **kw)
    dense = ExpectedLoss(p["ntt"], p["nxt"], p["ktt"], p["kxt"], p["kxx"], p["y"], p["yt"], p["L"])
    flow = FlowLoss(L2Flow(p["ntt"], p["y"], 0.0, p["L"], ntk_test_train=p["nxt"]), p["yt"])
    mk, md = avg.mean_model(), dense.mean_model()
    assert not mk.averaged and avg.averaged and mk.label.startswith("f0 = 0") and mk.mean_model() is mk
    for lam in LAMS:
        t = S / lam
        np.testing.assert_allclose(mk.test_loss(lam, t), own.test_loss(lam, t), rtol=1e-12)
        np.testing.assert_allclose(md.test_loss(lam, t), flow.test_loss(lam, t), rtol=1e-12)
        va, vm = avg.test_loss(lam, t), mk.test_loss(lam, t)
        assert np.all(va >= vm) and va[0] > vm[0]      # the variance term: >= 0, decaying like exp(-2 L lam t)
