"""Predictions from the L2 flow: loss/accuracy curves, t*, lambda_opt, table rows."""
import numpy as np
import pytest

import widelimit.predict as P
from widelimit.dynamics.ntk_l2 import L2Flow
from widelimit.predict import FlowMetrics, lambda_opt, loss_curves, t_star, to_rows


def _problem(seed=0, N=40, M=30, K=4, D=30, f0=False, f0_test_only=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N + M, D))
    w = rng.normal(size=(D, K))
    a = (np.maximum(x @ x.T / D, 0) + x @ x.T / D) * 40           # PSD
    y = np.eye(K)[np.argmax(x @ w, 1)]
    kw = {}
    if f0:
        kw = dict(f0_train=0.3 * rng.normal(size=(N, K)), f0_test=0.3 * rng.normal(size=(M, K)))
    if f0_test_only:
        kw = dict(f0_test=0.3 * rng.normal(size=(M, K)))
    flow = L2Flow(a[:N, :N], y[:N], 0.01, 3, k_test_train=a[N:, :N], **kw)
    return flow, y[N:]


def _direct_loss(flow, lam, t, yt):
    return np.array([np.sum((f - yt) ** 2) / (2 * yt.size) for f in flow.with_lam(lam).test(t)])


@pytest.mark.parametrize("f0", ["none", "both", "test only"])
@pytest.mark.parametrize("gram", [True, False])
def test_loss_matches_direct_evaluation(f0, gram, monkeypatch):
    if not gram:
        monkeypatch.setattr(P, "_GRAM_BYTES", 0)
    flow, yt = _problem(f0=f0 == "both", f0_test_only=f0 == "test only")
    m = FlowMetrics(flow, yt)
    assert m._gram is gram
    t = np.array([0.0, 0.5, 5.0, 50.0, 500.0, np.inf])
    for lam in (0.0, 0.003, 0.1):
        np.testing.assert_allclose(m.test_loss(lam, t), _direct_loss(flow, lam, t, yt), rtol=1e-10, atol=1e-14)


def test_accuracy_and_train_loss_match_direct_evaluation():
    flow, yt = _problem(f0=True)
    m = FlowMetrics(flow, yt)
    t = np.array([0.0, 3.0, 30.0])
    fl = flow.with_lam(0.02)
    acc = [np.mean(np.argmax(f, 1) == np.argmax(yt, 1)) for f in fl.test(t)]
    np.testing.assert_array_equal(m.test_accuracy(0.02, t), acc)
    tr = [np.sum((f - flow.y_train) ** 2) / (2 * flow.y_train.size) for f in fl.train(t)]
    np.testing.assert_allclose(m.train_loss(0.02, t), tr, rtol=1e-12)
    # one output: accuracy is sign agreement
    flow1 = L2Flow(flow.k_train_train, 2 * flow.y_train[:, 0] - 1, 0.01, 3, k_test_train=flow.k_test_train)
    yt1 = 2 * yt[:, 0] - 1
    want = [np.mean(np.sign(f) == yt1) for f in flow1.with_lam(0.02).test(t)]
    np.testing.assert_array_equal(FlowMetrics(flow1, yt1).test_accuracy(0.02, t), want)


def test_curves_shapes_and_rows():
    flow, yt = _problem()
    lams = np.array([0.01, 0.1])
    s = np.geomspace(0.01, 10, 7)
    c = loss_curves(flow, yt, lams=lams, t=s[None, :] / lams[:, None], accuracy=True, train_loss=True)
    assert c.test_loss.shape == c.test_accuracy.shape == c.train_loss.shape == c.t.shape == (2, 7)
    np.testing.assert_allclose(c.test_loss[1], _direct_loss(flow, 0.1, s / 0.1, yt), rtol=1e-10)
    rows = to_rows(c)
    assert len(rows) == 14 and set(rows[0]) == {"lam", "t", "test_loss", "test_accuracy", "train_loss"}
    assert rows[8]["lam"] == 0.1 and rows[8]["t"] == pytest.approx(s[1] / 0.1)


def test_t_star_is_the_minimum_of_the_test_loss():
    flow, yt = _problem()
    m = FlowMetrics(flow, yt)
    lams = np.array([0.003, 0.01, 0.03])
    r = t_star(m, lams=lams, eta=0.5)
    assert not r.at_edge.any()
    np.testing.assert_allclose(r.c, lams * r.t_star, rtol=1e-15)
    np.testing.assert_allclose(r.steps, r.t_star / 0.5, rtol=1e-15)
    for lam, ts, best in zip(lams, r.t_star, r.best):
        dense = np.geomspace(1e-3, 1e2, 5000) / lam
        loss = _direct_loss(flow, lam, dense, yt)
        assert best <= loss.min() + 1e-13                       # no grid point is better
        assert best == pytest.approx(_direct_loss(flow, lam, [ts], yt)[0], rel=1e-10)
        h = 1e-4 * ts                                           # and it is a stationary point
        lp, lm = _direct_loss(flow, lam, [ts + h, ts - h], yt)
        assert abs(lp - lm) / (2 * h) * ts < 1e-6 * best
    acc = t_star(m, lams=lams, metric="accuracy")
    for lam, ts, best in zip(lams, acc.t_star, acc.best):
        grid = np.geomspace(1e-3, 1e2, 200) / lam
        vals = m.test_accuracy(lam, grid)
        assert best == vals.max() and ts == grid[np.argmax(vals)]


def test_t_star_scales_like_one_over_lambda_on_digits():
    """THEORY.md section 2: 3-layer ReLU NTK, 200 digits, one-hot targets, f0 = 0: lam t* is the same for
    every lam (reported ~0.28 for lam in {0.1, 0.03, 0.01, 0.003})."""
    from sklearn.datasets import load_digits
    from widelimit.arch import MLP
    x, labels = load_digits(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(x))
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = np.eye(10)[labels]
    flow = L2Flow.from_spec(MLP(depth=3, out_dim=10), x[idx[:200]], y[idx[:200]], 0.01, x_test=x[idx[200:]])
    r = t_star(flow, y[idx[200:]], lams=[0.1, 0.03, 0.01, 0.003])
    assert not r.at_edge.any()
    assert r.c.max() / r.c.min() < 1.15
    assert np.all((r.c > 0.2) & (r.c < 0.36))


def test_lambda_opt_matches_brute_force_and_depends_on_eta_times_steps():
    flow, yt = _problem()
    lams = np.geomspace(1e-4, 1.0, 13)
    steps = np.array([10.0, 100.0, 1000.0, 1e4])
    eta = np.array([0.1, 1.0])
    r = lambda_opt(flow, yt, lams=lams, steps=steps[None, :], eta=eta[:, None])
    assert r.lam_opt.shape == r.time.shape == (2, 4) and r.values.shape == (2, 4, 13)
    for i, e in enumerate(eta):
        for j, s in enumerate(steps):
            losses = [_direct_loss(flow, lam, [e * s], yt)[0] for lam in lams]
            assert r.lam_opt[i, j] == lams[int(np.argmin(losses))]
            assert r.best[i, j] == pytest.approx(min(losses), rel=1e-10)
            assert r.c[i, j] == pytest.approx(r.lam_opt[i, j] * e * s)
    # (eta = 0.1, 1000 steps) and (eta = 1, 100 steps) are the same time
    assert r.lam_opt[0, 2] == r.lam_opt[1, 1]
    rows = to_rows(r)
    assert len(rows) == 8 and {"eta", "steps", "time", "lam_opt", "c", "best", "at_edge"} <= set(rows[0])
    acc = lambda_opt(flow, yt, lams=lams, steps=steps, eta=0.5, metric="accuracy")
    for j, s in enumerate(steps):
        accs = [FlowMetrics(flow, yt).test_accuracy(lam, [0.5 * s])[0] for lam in lams]
        assert acc.best[j] == max(accs)


def test_t_star_rows():
    flow, yt = _problem()
    r = t_star(flow, yt, lams=[0.01, 0.03], n_grid=50)
    rows = to_rows(r)
    assert len(rows) == 2 and rows[1]["lam"] == 0.03 and "steps" not in rows[0]
    assert rows[0]["c"] == pytest.approx(0.01 * rows[0]["t_star"])


def test_bad_input():
    flow, yt = _problem()
    with pytest.raises(ValueError, match="y_test must have shape"):
        FlowMetrics(flow, yt[:-1])
    with pytest.raises(ValueError, match="no test points"):
        FlowMetrics(L2Flow(flow.k_train_train, flow.y_train, 0.1, 2), yt)
    with pytest.raises(TypeError, match="flow must be an L2Flow"):
        FlowMetrics("flow", yt)
    with pytest.raises(ValueError, match="metric must be one of"):
        t_star(flow, yt, lams=[0.1], metric="f1")
    with pytest.raises(ValueError, match="lams must be > 0"):
        t_star(flow, yt, lams=[0.0, 0.1])
    with pytest.raises(ValueError, match="lams must be >= 0"):
        lambda_opt(flow, yt, lams=[-0.1], steps=[10])
    with pytest.raises(ValueError, match="eta must be > 0"):
        lambda_opt(flow, yt, lams=[0.1], steps=[10], eta=0.0)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        lambda_opt(flow, yt, lams=[0.1], steps=[-10])
    with pytest.raises(ValueError, match="y_test is required"):
        t_star(flow, lams=[0.1])
    with pytest.raises(ValueError, match="s_range"):
        t_star(flow, yt, lams=[0.1], s_range=(1.0, 0.1))
    with pytest.raises(TypeError, match="result must be"):
        to_rows({"a": 1})
