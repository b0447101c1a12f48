"""Predictions for any loss model: curves, t*, lambda_opt (refined), the c/(eta T) rule, validity, rows."""
import numpy as np
import pytest

import widelimit.dynamics.loss as loss_module
from widelimit.dynamics import ExpectedLoss, FlowLoss, L2FlowEnsemble
from widelimit.dynamics.ntk_l2 import L2Flow
from widelimit.kernels import DataKernels
from widelimit.predict import (lambda_opt, lambda_rule, loss_curves, predict_model, t_star, table_rows,
                               to_rows)
from widelimit.validity import Validity



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
    flow = L2Flow(a[:N, :N], y[:N], 0.01, 3, ntk_test_train=a[N:, :N], **kw)
    return flow, y[N:]


def _kernels(seed=0, N=40, M=30, K=4, D=30):
    """A DataKernels with an NNGP (a different PSD kernel of the same inputs)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N + M, D))
    w = rng.normal(size=(D, K))
    a = (np.maximum(x @ x.T / D, 0) + x @ x.T / D) * 40
    b = 0.05 * (x @ x.T / D) ** 2 + 0.01            # PSD (Schur product), a different kernel
    y = np.eye(K)[np.argmax(x @ w, 1)]
    return DataKernels(a[:N, :N], a[N:, :N], y[:N], y[N:], 3, b[:N, :N], b[N:, :N], np.diag(b[N:, N:]),
                       source="test problem")


def _direct_loss(flow, lam, t, yt):
    return np.array([np.sum((f - yt) ** 2) / (2 * yt.size) for f in flow.with_weight_decay(lam).test(t)])


@pytest.mark.parametrize("f0", ["none", "both", "test only"])
@pytest.mark.parametrize("gram", [True, False])
def test_loss_matches_direct_evaluation(f0, gram, monkeypatch):
    if not gram:
        monkeypatch.setattr(loss_module, "_GRAM_BYTES", 0)
    flow, yt = _problem(f0=f0 == "both", f0_test_only=f0 == "test only")
    m = FlowLoss(flow, yt)
    assert m._gram is gram
    t = np.array([0.0, 0.5, 5.0, 50.0, 500.0, np.inf])
    for lam in (0.0, 0.003, 0.1):
        np.testing.assert_allclose(m.test_loss(lam, t), _direct_loss(flow, lam, t, yt), rtol=1e-10, atol=1e-14)


def test_accuracy_and_train_loss_match_direct_evaluation():
    flow, yt = _problem(f0=True)
    m = FlowLoss(flow, yt)
    t = np.array([0.0, 3.0, 30.0])
    fl = flow.with_weight_decay(0.02)
    acc = [np.mean(np.argmax(f, 1) == np.argmax(yt, 1)) for f in fl.test(t)]
    np.testing.assert_array_equal(m.test_accuracy(0.02, t), acc)
    tr = [np.sum((f - flow.y_train) ** 2) / (2 * flow.y_train.size) for f in fl.train(t)]
    np.testing.assert_allclose(m.train_loss(0.02, t), tr, rtol=1e-12)
    # one output: accuracy is sign agreement
    flow1 = L2Flow(flow.ntk_train_train, 2 * flow.y_train[:, 0] - 1, 0.01, 3, ntk_test_train=flow.ntk_test_train)
    yt1 = 2 * yt[:, 0] - 1
    want = [np.mean(np.sign(f) == yt1) for f in flow1.with_weight_decay(0.02).test(t)]
    np.testing.assert_array_equal(FlowLoss(flow1, yt1).test_accuracy(0.02, t), want)


def test_curves_shapes_and_rows():
    flow, yt = _problem()
    lams = np.array([0.01, 0.1])
    s = np.geomspace(0.01, 10, 7)
    c = loss_curves(flow, yt, weight_decays=lams, t=s[None, :] / lams[:, None], accuracy=True, train_loss=True)
    assert c.test_loss.shape == c.test_accuracy.shape == c.train_loss.shape == c.t.shape == (2, 7)
    np.testing.assert_allclose(c.test_loss[1], _direct_loss(flow, 0.1, s / 0.1, yt), rtol=1e-10)
    rows = to_rows(c)
    assert len(rows) == 14 and set(rows[0]) == {"weight_decay", "t", "test_loss", "test_accuracy", "train_loss"}
    assert rows[8]["weight_decay"] == 0.1 and rows[8]["t"] == pytest.approx(s[1] / 0.1)
    _, units = table_rows(c)
    assert units["t"] == "η·steps" and units["test_loss"] == "MSE"


def test_t_star_is_the_minimum_of_the_test_loss():
    flow, yt = _problem()
    m = FlowLoss(flow, yt)
    lams = np.array([0.003, 0.01, 0.03])
    r = t_star(m, weight_decays=lams, learning_rate=0.5)
    assert r.validity == (Validity.OK,) * 3
    np.testing.assert_allclose(r.c, lams * r.t_star, rtol=1e-15)
    np.testing.assert_allclose(r.steps_star, r.t_star / 0.5, rtol=1e-15)
    for lam, ts, best in zip(lams, r.t_star, r.best):
        dense = np.geomspace(1e-3, 1e2, 5000) / lam
        loss = _direct_loss(flow, lam, dense, yt)
        assert best <= loss.min() + 1e-13                       # no grid point is better
        assert best == pytest.approx(_direct_loss(flow, lam, [ts], yt)[0], rel=1e-10)
        h = 1e-4 * ts                                           # and it is a stationary point
        lp, lm = _direct_loss(flow, lam, [ts + h, ts - h], yt)
        assert abs(lp - lm) / (2 * h) * ts < 1e-6 * best
    acc = t_star(m, weight_decays=lams, metric="accuracy")
    for lam, ts, best in zip(lams, acc.t_star, acc.best):
        grid = np.geomspace(1e-3, 1e2, 200) / lam
        vals = m.test_accuracy(lam, grid)
        assert best == vals.max() and ts == grid[np.argmax(vals)]


def test_t_star_scales_like_one_over_lambda_on_digits():
    """docs/theory.md §3.1: 3-layer ReLU NTK, 200 digits, one-hot targets, f0 = 0: lam t* is the same for
    every lam (~0.28 for lam in {0.1, 0.03, 0.01, 0.003})."""
    from sklearn.datasets import load_digits
    from widelimit.arch import MLP
    x, labels = load_digits(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(x))
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = np.eye(10)[labels]
    flow = L2Flow.from_spec(MLP(depth=3, out_dim=10), x[idx[:200]], y[idx[:200]], 0.01, x_test=x[idx[200:]])
    r = t_star(flow, y[idx[200:]], weight_decays=[0.1, 0.03, 0.01, 0.003])
    # f0 = 0 with one-hot targets: at the larger lam the minimum is interior but within 1% of the zero
    # function's loss -- flagged NO_LEARNING; lam = 0.003 learns clearly
    for v, best in zip(r.validity, r.best):
        assert v is (Validity.NO_LEARNING if best >= 0.99 * r.zero_loss else Validity.OK)
    assert r.validity[0] is Validity.NO_LEARNING and r.validity[-1] is Validity.OK
    assert r.c.max() / r.c.min() < 1.15
    assert np.all((r.c > 0.2) & (r.c < 0.36))


def test_lambda_opt_matches_brute_force_and_depends_on_eta_times_steps():
    flow, yt = _problem()
    lams = np.geomspace(1e-4, 1.0, 13)
    steps = np.array([10.0, 100.0, 1000.0, 1e4])
    eta = np.array([0.1, 1.0])
    r = lambda_opt(flow, yt, weight_decays=lams, steps=steps[None, :], learning_rate=eta[:, None], refine=False)
    assert r.weight_decay_opt.shape == r.time.shape == (2, 4) and r.values.shape == (2, 4, 13)
    for i, e in enumerate(eta):
        for j, s in enumerate(steps):
            losses = [_direct_loss(flow, lam, [e * s], yt)[0] for lam in lams]
            assert r.weight_decay_opt[i, j] == lams[int(np.argmin(losses))]
            assert r.best[i, j] == pytest.approx(min(losses), rel=1e-10)
            assert r.c[i, j] == pytest.approx(r.weight_decay_opt[i, j] * e * s)
    # (eta = 0.1, 1000 steps) and (eta = 1, 100 steps) are the same time
    assert r.weight_decay_opt[0, 2] == r.weight_decay_opt[1, 1]
    rows = to_rows(r)
    assert len(rows) == 8
    assert {"learning_rate", "steps", "time", "weight_decay_opt", "c", "best", "validity"} <= set(rows[0])
    acc = lambda_opt(flow, yt, weight_decays=lams, steps=steps, learning_rate=0.5, metric="accuracy")
    for j, s in enumerate(steps):
        accs = [FlowLoss(flow, yt).test_accuracy(lam, [0.5 * s])[0] for lam in lams]
        assert acc.best[j] == max(accs)


def test_t_star_rows():
    flow, yt = _problem()
    r = t_star(flow, yt, weight_decays=[0.01, 0.03], n_grid=50)
    rows = to_rows(r)
    assert len(rows) == 2 and rows[1]["weight_decay"] == 0.03 and "steps_star" not in rows[0]
    assert rows[0]["validity"] == "ok"
    assert rows[0]["c"] == pytest.approx(0.01 * rows[0]["t_star"])


def test_bad_input():
    flow, yt = _problem()
    with pytest.raises(ValueError, match="y_test must have shape"):
        FlowLoss(flow, yt[:-1])
    with pytest.raises(ValueError, match="no test points"):
        FlowLoss(L2Flow(flow.ntk_train_train, flow.y_train, 0.1, 2), yt)
    with pytest.raises(TypeError, match="flow must be an L2Flow"):
        FlowLoss("flow", yt)
    with pytest.raises(ValueError, match="metric must be one of"):
        t_star(flow, yt, weight_decays=[0.1], metric="f1")
    with pytest.raises(ValueError, match="weight_decays must be finite and > 0"):
        t_star(flow, yt, weight_decays=[0.0, 0.1])
    with pytest.raises(ValueError, match="weight_decays must be finite and >= 0"):
        lambda_opt(flow, yt, weight_decays=[-0.1], steps=[10])
    with pytest.raises(ValueError, match="learning_rate must be finite and > 0"):
        lambda_opt(flow, yt, weight_decays=[0.1], steps=[10], learning_rate=0.0)
    with pytest.raises(ValueError, match="steps must be finite and >= 0"):
        lambda_opt(flow, yt, weight_decays=[0.1], steps=[-10])
    with pytest.raises(ValueError, match="y_test is required"):
        t_star(flow, weight_decays=[0.1])
    with pytest.raises(ValueError, match="s_range"):
        t_star(flow, yt, weight_decays=[0.1], s_range=(1.0, 0.1))
    with pytest.raises(TypeError, match="LossModel"):
        t_star(object(), weight_decays=[0.1])
    with pytest.raises(ValueError, match="differs from the model's own"):
        t_star(predict_model(_kernels(), learning_rate=0.5), weight_decays=[0.1], learning_rate=0.1)
    with pytest.raises(ValueError, match="test_accuracy"):
        t_star(predict_model(_kernels()), weight_decays=[0.1], metric="accuracy")
    with pytest.raises(TypeError, match="result must be"):
        to_rows({"a": 1})


# ------------------------------------------------------------------------------------------------
# the default model, every model accepted, lambda_opt refined, the rule, validity
def test_default_model_is_the_f0_average_and_every_model_is_accepted():
    dk = _kernels()
    assert isinstance(predict_model(dk), ExpectedLoss)
    assert isinstance(predict_model(dk, f0="zero"), FlowLoss)
    assert predict_model(dk, learning_rate=0.5).learning_rate == 0.5
    lams = [0.01, 0.03]
    want = t_star(ExpectedLoss.from_kernels(dk), weight_decays=lams)
    ens = L2FlowEnsemble(dk.ntk_train_train, dk.nngp_train_train, dk.y_train, 0.01, 3,
                         ntk_test_train=dk.ntk_test_train, nngp_test_train=dk.nngp_test_train,
                         nngp_test_test=np.diag(dk.nngp_test_test))
    for model, y in ((dk, None), (ens, dk.y_test), (predict_model(dk), None)):
        got = t_star(model, y, weight_decays=lams)
        np.testing.assert_allclose(got.t_star, want.t_star, rtol=1e-12)
    zero = t_star(predict_model(dk, f0="zero"), weight_decays=lams)
    assert np.all(np.abs(zero.t_star / want.t_star - 1) > 1e-3)      # the f0 = 0 model really differs
    with pytest.raises(ValueError, match="f0 must be one of"):
        predict_model(dk, f0="random")


@pytest.mark.parametrize("eta", [None, 0.5])
def test_lambda_opt_is_the_theory_optimum_not_a_grid_edge(eta):
    """The default grid + bounded refinement finds the minimiser of the model's own loss: no point of a
    dense brute-force grid is better, and the optimum is interior (not the lower grid edge)."""
    dk = _kernels()
    m = predict_model(dk, learning_rate=eta)
    steps = np.array([20.0, 200.0])
    lr = 0.5 if eta is None else None
    r = lambda_opt(m, steps=steps, learning_rate=lr)
    assert r.validity == (Validity.OK, Validity.OK)
    for j, T in enumerate(steps):
        dense = np.geomspace(r.grid[0], r.grid[-1], 800)
        losses = m.test_loss_grid(dense, [0.5 * T])[:, 0]
        assert r.best[j] <= losses.min() + 1e-12
        assert r.grid[0] < r.weight_decay_opt[j] < r.grid[-1]
        k = int(np.argmin(losses))
        assert abs(np.log(r.weight_decay_opt[j] / dense[k])) < 2 * np.log(dense[1] / dense[0]) + 1e-3
    assert r.weight_decay_opt[1] < r.weight_decay_opt[0]              # longer budget, smaller lam
    assert r.units["weight_decay_opt"] == "1/(η·steps)" and r.units["time"] == "η·steps"


def test_lambda_rule_takes_c_only_from_clear_interior_minima():
    dk = _kernels()
    m = predict_model(dk)
    refs = [1e3, 0.03, 0.01]                  # 1e3: t* below the window -> flagged, left out
    ts = t_star(m, weight_decays=refs)
    assert ts.validity[0] is not Validity.OK and ts.validity[1:] == (Validity.OK, Validity.OK)
    rule = lambda_rule(m, reference_weight_decays=refs, steps=[100.0, 1000.0], learning_rate=0.5)
    np.testing.assert_array_equal(rule.reference_weight_decay, [0.03, 0.01])
    assert rule.c == pytest.approx(np.sqrt(ts.c[1] * ts.c[2]), rel=1e-12)
    np.testing.assert_allclose(rule.weight_decay_rule, rule.c / (0.5 * np.array([100.0, 1000.0])))
    assert rule.validity is Validity.OK
    none = lambda_rule(m, reference_weight_decays=[1e3], steps=[100.0], learning_rate=0.5)
    assert none.validity is Validity.NO_INTERIOR_OPTIMUM and np.isnan(none.c)


def test_validity_flags():
    dk = _kernels()
    m = predict_model(dk)
    mu = m.mu_max
    # NO_LEARNING: a budget so short that nothing is learned (within 1% of the zero function)
    r = lambda_opt(m, steps=[2e-4], learning_rate=0.5 / mu, weight_decays=mu * np.array([1e-3, 1e-2, 0.1]))
    assert r.validity == (Validity.NO_LEARNING,) and r.best[0] >= 0.99 * r.zero_loss
    # ... while the same budget at a learning rate where GD diverges is UNSTABLE first
    r = lambda_opt(m, steps=[2e-4 * 0.5 / 2.5], learning_rate=2.5 / mu, weight_decays=mu * np.array([1e-3, 1e-2]))
    assert r.validity == (Validity.UNSTABLE,)
    # GRID_EDGE: every searched weight decay lies above the optimum (which still learns)
    ok = lambda_opt(m, steps=[2000.0], learning_rate=0.5)
    assert ok.validity == (Validity.OK,)
    edge = lambda_opt(m, steps=[2000.0], learning_rate=0.5, weight_decays=ok.weight_decay_opt * [2, 3, 4])
    assert edge.validity == (Validity.GRID_EDGE,) and edge.weight_decay_opt[0] == edge.grid[0]
    assert t_star(m, weight_decays=[0.01], s_range=(1e-3, 1e-2)).validity == (Validity.GRID_EDGE,)
    # UNSTABLE: GD with eta mu_max >= 2 (model or run), or eta lam >= 1; never a number for a GD model
    eta = 2.5 / mu
    gd = predict_model(dk, learning_rate=eta)
    r = t_star(gd, weight_decays=[0.01])
    assert r.validity == (Validity.UNSTABLE,) and np.isnan(r.t_star[0])
    assert lambda_opt(gd, steps=[100.0]).validity == (Validity.UNSTABLE,)
    assert t_star(m, weight_decays=[0.01], learning_rate=eta).validity == (Validity.UNSTABLE,)
    assert lambda_opt(m, steps=[100.0], learning_rate=eta).validity == (Validity.UNSTABLE,)
    small = predict_model(dk, learning_rate=0.5 / mu)
    assert t_star(small, weight_decays=[2.5 * mu]).validity == (Validity.UNSTABLE,)     # eta lam = 1.25
    # TOO_FAST: t* is fewer than 5 steps of a stable learning rate
    base = t_star(m, weight_decays=[0.2])
    eta = base.t_star[0] / 3
    assert eta * mu < 2 and base.validity == (Validity.OK,)
    fast = t_star(m, weight_decays=[0.2], learning_rate=eta)
    assert fast.validity == (Validity.TOO_FAST,) and fast.steps_star[0] == pytest.approx(3.0)
    # OK with enough steps
    assert t_star(m, weight_decays=[0.2], learning_rate=base.t_star[0] / 50).validity == (Validity.OK,)

