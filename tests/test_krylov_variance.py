"""Krylov expected loss: the automatic exact / Hutch++ choice of the variance trace and its stated error
(docs/theory.md §4.3), and the fast block orthonormalisation / float64-memmap operator paths."""
import numpy as np
import pytest

from widelimit.arch import MLP
from widelimit.data import load_dataset
from widelimit.dynamics import ExpectedLoss
from widelimit.dynamics.krylov import KernelMatrix, KrylovConvergenceWarning, KrylovLoss
from widelimit.dynamics.krylov.lanczos import _orthonormal_columns
from widelimit.kernels.native import mlp_kernels

LAMS = (1e-5, 1e-3, 1e-1)
S = np.array([0.05, 0.5, 3.0, 10.0])     # lam * t


@pytest.fixture(scope="module")
def problem():
    ds = load_dataset("teacher", n_train=400, n_test=12, in_dim=12, out_dim=3, seed=5)
    spec = MLP(depth=3, activation="relu")
    ntt, ktt = mlp_kernels(spec, ds.x_train)
    nxt, kxt = mlp_kernels(spec, ds.x_test, ds.x_train)
    kxx = np.array([mlp_kernels(spec, ds.x_test[i:i + 1])[1][0, 0] for i in range(ds.n_test)])
    kw = dict(ntk_test_train=nxt, y_test=ds.y_test, nngp_train_train=ktt, nngp_test_train=kxt,
              nngp_test_test_diag=kxx)
    dense = ExpectedLoss(ntt, nxt, ktt, kxt, kxx, ds.y_train, ds.y_test, 3)
    return dict(ntt=ntt, y=ds.y_train, kw=kw, dense=dense)


def test_auto_picks_exact_for_few_test_points_and_its_error_is_honest(problem):
    p = problem
    m = KrylovLoss(p["ntt"], p["y"], 3, **p["kw"])           # 8 * 12 test points <= N / 4: exact
    assert m.variance_method == "exact" and m.variance_exact and "variance exact" in m.label
    assert m.variance_basis.converged
    for lam in LAMS:
        t = S / lam
        ref = p["dense"].test_loss(lam, t)
        got, err = m.test_loss(lam, t), m.test_loss_error(lam, t)
        np.testing.assert_allclose(got, ref, rtol=1e-9)
        assert np.all(np.abs(got - ref) <= err + 1e-15 * ref)   # the stated error bounds the true one
        assert np.all(err <= 1e-8 * ref)                          # and is small: no stochastic part


def test_forced_hutchpp_states_a_stochastic_error(problem):
    p = problem
    m = KrylovLoss(p["ntt"], p["y"], 3, variance="hutch++", variance_sketch=2, variance_probes=4, **p["kw"])
    assert m.variance_method == "hutch++" and not m.variance_exact
    ref = p["dense"].test_loss(1e-3, S / 1e-3)
    err = m.test_loss_error(1e-3, S / 1e-3)
    assert np.all(err[:2] > 1e-6 * ref[:2])        # a genuine stochastic error is stated (lam t <= 0.5; the
    #                                                variance itself decays to 0 later) ...
    assert np.all(np.abs(m.test_loss(1e-3, S / 1e-3) - ref) < 6 * err)   # ... and it covers the truth


def test_auto_picks_hutchpp_when_exact_does_not_fit(problem):
    p = problem
    with pytest.warns(KrylovConvergenceWarning, match="not converged"):    # 8 * 12 > max_dim = 80
        m = KrylovLoss(p["ntt"], p["y"], 3, max_dim=80, **p["kw"])
    assert m.variance_method == "hutch++"


def test_bad_variance_argument(problem):
    p = problem
    with pytest.raises(ValueError, match="variance must be one of"):
        KrylovLoss(p["ntt"], p["y"], 3, variance="stochastic", **p["kw"])


def test_gram_orthonormalisation_matches_svd():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((300, 12)) * np.geomspace(1.0, 1e-3, 12)   # well conditioned: Gram path
    u, top, low = _orthonormal_columns(w, 1e-12)
    np.testing.assert_allclose(u.T @ u, np.eye(12), atol=1e-13)
    np.testing.assert_allclose(u @ (u.T @ w), w, atol=1e-12)            # same span
    assert top == pytest.approx(np.linalg.norm(w, 2), rel=1e-12)
    w2 = w.copy()
    w2[:, -1] = w2[:, 0] + 1e-11 * rng.standard_normal(300)            # nearly dependent: SVD path
    u2, _, low2 = _orthonormal_columns(w2, 1e-9)
    assert u2.shape[1] == 11 and low2 > 1e-9
    np.testing.assert_allclose(u2.T @ u2, np.eye(11), atol=1e-13)


def test_float64_memmap_one_blas_call_and_nan(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 50))
    k = np.lib.format.open_memmap(tmp_path / "k.npy", mode="w+", dtype=np.float64, shape=(50, 50))
    k[:] = x @ x.T
    op = KernelMatrix("k", k, 2.0)
    v = rng.standard_normal((50, 3))
    np.testing.assert_allclose(op.matmat(v), (x @ x.T) @ v / 2.0, rtol=1e-13)
    np.testing.assert_allclose(op.rmatmat(v), (x @ x.T).T @ v / 2.0, rtol=1e-13)
    k[7, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        op.matmat(v)


def test_bad_nngp_and_test_kernels_named_before_the_solve(problem):
    p = problem
    kw = dict(p["kw"])
    bad = kw["nngp_train_train"].copy()
    bad[3, 9] += 0.5 * np.abs(bad).max()
    with pytest.raises(ValueError, match="nngp_train_train is not symmetric"):
        KrylovLoss(p["ntt"], p["y"], 3, **{**kw, "nngp_train_train": bad})
    nxt = kw["ntk_test_train"].copy()
    nxt[2, 5] = np.inf
    with pytest.raises(ValueError, match="ntk_test_train contains NaN or inf"):
        KrylovLoss(p["ntt"], p["y"], 3, **{**kw, "ntk_test_train": nxt})
    with pytest.raises(ValueError, match="nngp_test_train must have shape"):
        KrylovLoss(p["ntt"], p["y"], 3, **{**kw, "nngp_test_train": kw["nngp_test_train"][:, :-1]})


def test_exact_trace_warns_up_front_when_it_costs_more_than_dense(problem):
    p = problem
    kw = dict(p["kw"])
    m = 40                                   # 8 * 40 > N / 2 = 200
    sub = dict(kw, ntk_test_train=np.vstack([kw["ntk_test_train"]] * 4)[:m],
               nngp_test_train=np.vstack([kw["nngp_test_train"]] * 4)[:m],
               nngp_test_test_diag=np.concatenate([kw["nngp_test_test_diag"]] * 4)[:m],
               y_test=np.vstack([kw["y_test"]] * 4)[:m])
    with pytest.warns(RuntimeWarning, match="costs more than the dense path"):
        KrylovLoss(p["ntt"], p["y"], 3, variance="exact", **sub)


def test_jackknife_over_probes_reproduces_the_stated_error_and_covers_t_star(problem):
    import dataclasses

    from widelimit.predict import t_star
    p = problem
    m = KrylovLoss(p["ntt"], p["y"], 3, variance="hutch++", variance_sketch=2, variance_probes=8, seed=1,
                   **p["kw"])
    reps = m.probe_replicates()
    assert len(reps) == 8 and all(r._n_rem == 7 for r in reps)
    lam, t = 1e-3, S / 1e-3
    # the full estimate is the mean of the delete-one estimates (the probe estimator is linear)
    np.testing.assert_allclose(np.mean([r.variance(lam, t) for r in reps], axis=0), m.variance(lam, t),
                               rtol=1e-12)
    # for the (linear) variance, the jackknife s.e. is the sample s.e. that variance_error states, computed
    # here by another code path (variance_error with the Krylov part switched off)
    no_krylov = object.__new__(KrylovLoss)
    no_krylov.__dict__.update(m.__dict__)
    no_krylov.variance_basis = dataclasses.replace(m.variance_basis, error_estimate=0.0)
    np.testing.assert_allclose(m.jackknife_error(lambda r: r.variance(lam, t)), no_krylov.variance_error(lam, t),
                               rtol=1e-9)
    # a derived prediction: t* with its jackknife error, against the exact (dense) t*
    lams = np.array([1e-4, 1e-3, 1e-2])
    res = t_star(m, weight_decays=lams)                      # stochastic model: the error comes with it
    got, se = res.t_star, res.t_star_solver_se
    np.testing.assert_allclose(se, m.jackknife_error(lambda r: t_star(r, weight_decays=lams,
                                                                      solver_error=False).t_star), rtol=1e-12)
    ref_res = t_star(p["dense"], weight_decays=lams)
    ref = ref_res.t_star
    assert ref_res.t_star_solver_se is None                   # the dense path is exact: nothing to state
    assert np.all(se > 0)
    assert np.all(np.abs(got - ref) <= 4 * se)
    assert t_star(m, weight_decays=lams, solver_error=False).t_star_solver_se is None
    with pytest.raises(ValueError, match="exact"):
        t_star(p["dense"], weight_decays=lams, solver_error=True)
    with pytest.raises(TypeError, match="solver_error"):
        t_star(m, weight_decays=lams, solver_error="yes")


def test_probe_replicates_need_random_probes(problem):
    p = problem
    exact = KrylovLoss(p["ntt"], p["y"], 3, **p["kw"])
    with pytest.raises(ValueError, match="Hutch"):
        exact.probe_replicates()
    mean_only = KrylovLoss(p["ntt"], p["y"], 3, ntk_test_train=p["kw"]["ntk_test_train"], y_test=p["kw"]["y_test"])
    with pytest.raises(ValueError, match="Hutch"):
        mean_only.jackknife_error(lambda r: r.test_loss(1e-3, [1.0]))


def test_lambda_opt_states_its_solver_error_in_rows(problem):
    from widelimit.predict import lambda_opt, to_rows
    p = problem
    m = KrylovLoss(p["ntt"], p["y"], 3, variance="hutch++", variance_sketch=2, variance_probes=8, seed=1,
                   **p["kw"])
    res = lambda_opt(m, steps=[1e3, 1e4])
    ref = lambda_opt(p["dense"], steps=[1e3, 1e4]).weight_decay_opt
    se = res.weight_decay_opt_solver_se
    assert se.shape == res.weight_decay_opt.shape and np.all(se > 0)
    assert np.all(np.abs(res.weight_decay_opt - ref) <= 4 * se)
    rows = to_rows(res)
    assert rows[0]["weight_decay_opt_solver_se"] == pytest.approx(float(se[0]))
    assert res.units["weight_decay_opt_solver_se"] == "1/(η·steps)"
