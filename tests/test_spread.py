"""The predicted spread over initial functions (docs/theory.md §3.5) against independent Monte Carlo.

References: 10^4 initial functions drawn from the joint NNGP with numpy's ``multivariate_normal`` (not the
model's square root), pushed through :class:`L2Flow` (its own closed form / GD recursion, all draws as
columns of one flow), and, for the n-seed quantities, disjoint groups of those draws (truly independent
n-seed averages) reduced on their own grids."""
import numpy as np
import pytest

from widelimit.arch import MLP
from widelimit.data import load_dataset
from widelimit.dynamics import ExpectedLoss, L2Flow, LossModel
from widelimit.dynamics.spread import LossSpread
from widelimit.kernels import DataKernels, analytic_kernels
from widelimit.predict.spread import lambda_opt_spread, loss_spread, spread_model, t_star_spread

N, M = 30, 20


@pytest.fixture(scope="module")
def data():
    return load_dataset("digits", classes=[3, 8], targets="pm1", n_train=N, n_test=M, seed=0)


@pytest.fixture(scope="module", params=[1, 2, 3])
def problem(request, data):
    L = request.param
    k = analytic_kernels(MLP(depth=L, out_dim=1), np.concatenate([data.x_train, data.x_test]))
    dk = DataKernels(k.ntk[:N, :N], k.ntk[N:, :N], data.y_train, data.y_test, L, k.nngp[:N, :N], k.nngp[N:, :N],
                     k.nngp[N:, N:])
    return dk, k.nngp


def _mc(dk, joint, lam, t, draws=10_000, eta=None, seed=12345):
    """Per-draw test and train MSE (draws, T) of prior draws pushed through L2Flow."""
    f0 = np.random.default_rng(seed).multivariate_normal(np.zeros(N + M), joint, size=draws, method="cholesky").T
    y = np.repeat(dk.y_train.reshape(N, 1), draws, axis=1)
    fl = L2Flow(dk.ntk_train_train, y, lam, dk.L, ntk_test_train=dk.ntk_test_train, f0_train=f0[:N],
                f0_test=f0[N:], learning_rate=eta, normalization=N)
    te = ((fl.test(t) - dk.y_test.reshape(1, M, 1)) ** 2).sum(1) / (2 * M)       # (T, draws)
    tr = ((fl.train(t) - dk.y_train.reshape(1, N, 1)) ** 2).sum(1) / (2 * N)
    return te.T, tr.T


def _var_se(x):
    """Sample variance over axis 0 and its standard error sqrt((m4 - s^4)/S)."""
    c = x - x.mean(0)
    s2, m4 = (c ** 2).mean(0), (c ** 4).mean(0)
    return s2, np.sqrt(np.maximum(m4 - s2 ** 2, 0) / x.shape[0])


@pytest.mark.parametrize("eta", [None, 0.5])
def test_loss_variance_matches_monte_carlo(problem, eta):
    dk, joint = problem
    sp = LossSpread.from_kernels(dk, learning_rate=eta)
    assert isinstance(sp, LossModel)
    t = np.array([0.0, 2.0, 20.0, 200.0])
    for lam in (0.003, 0.03):
        te, tr = _mc(dk, joint, lam, t, eta=eta)
        ex = ExpectedLoss.from_kernels(dk, learning_rate=eta)
        np.testing.assert_allclose(sp.test_loss_direct_mean(lam, t), ex.test_loss(lam, t), rtol=1e-9)
        for mc, var, mean in ((te, sp.test_loss_variance(lam, t), ex.test_loss(lam, t)),
                              (tr, sp.train_loss_variance(lam, t), ex.train_loss(lam, t))):
            s2, se = _var_se(mc)
            assert np.all(np.abs(s2 - var) < 5 * se), (dk.L, lam, eta, s2, var, se)
            assert np.all(np.abs(mc.mean(0) - mean) < 5 * mc.std(0) / np.sqrt(mc.shape[0]))
        # the variance is not the naive one of independent test points: the test outputs are correlated
        assert sp.test_loss_variance(lam, [0.0])[0] > 1.5 * 2 * np.sum(np.diag(dk.nngp_test_test) ** 2) / (2 * M) ** 2


def test_sampled_curves_reuse_draws_and_match_the_moments(problem):
    dk, _ = problem
    sp = LossSpread.from_kernels(dk)
    t = np.array([0.0, 10.0])
    z = sp.prior_draws(4000, seed=3)
    a = sp.sample_test_loss([0.01, 0.1], t, z=z)
    assert a.shape == (4000, 2, 2)
    np.testing.assert_array_equal(a[:, 0, 0], a[:, 1, 0])          # t = 0: the same draws for every λ
    for p, lam in enumerate((0.01, 0.1)):
        s2, se = _var_se(a[:, p])
        assert np.all(np.abs(s2 - sp.test_loss_variance(lam, t)) < 5 * se)


def test_n_seed_t_star_interval_against_monte_carlo(data):
    k = analytic_kernels(MLP(depth=3, out_dim=1), np.concatenate([data.x_train, data.x_test]))
    dk = DataKernels(k.ntk[:N, :N], k.ntk[N:, :N], data.y_train, data.y_test, 3, k.nngp[:N, :N], k.nngp[N:, :N],
                     k.nngp[N:, N:])
    n, lam = 4, 0.01
    sp = spread_model(dk)
    pred = t_star_spread(sp, [lam], seeds=n, level=0.8, draws=1500, groups=3000, seed=1, n_grid=100)
    # Monte Carlo of the same dynamics: disjoint groups of n independent draws, t* on a finer grid
    t = np.geomspace(1e-3, 1e2, 300) / lam
    te, _ = _mc(dk, k.nngp, lam, t, draws=4 * 1000, seed=99)
    ts = t[np.argmin(te.reshape(1000, n, -1).mean(1), axis=1)]
    inside = np.mean((ts >= pred.low[0]) & (ts <= pred.high[0]))
    assert abs(inside - 0.8) < 0.06, (inside, pred.low, pred.high)      # 4.7 binomial sd at 1000 groups
    np.testing.assert_allclose(np.median(ts), pred.median[0], rtol=0.08)
    assert pred.low[0] < pred.infinite_seeds[0] < pred.high[0]
    # more seeds: a narrower interval
    wide = t_star_spread(sp, [lam], seeds=1, draws=1500, groups=3000, seed=1, n_grid=100)
    assert wide.high[0] - wide.low[0] > 1.5 * (pred.high[0] - pred.low[0])


def test_loss_spread_exact_quantiles_against_monte_carlo(problem):
    dk, joint = problem
    sp = LossSpread.from_kernels(dk)
    n, lam, t = 8, 0.01, np.array([0.0, 30.0])
    pred = loss_spread(sp, lam, t, seeds=n, level=0.8, samples=40000)
    te, _ = _mc(dk, joint, lam, t, draws=8 * 1500, seed=5)
    avg = te.reshape(1500, n, -1).mean(1)
    inside = np.mean((avg >= pred.low) & (avg <= pred.high), axis=0)
    assert np.all(np.abs(inside - 0.8) < 0.05), inside                     # 4.8 binomial sd at 1500 groups
    np.testing.assert_allclose(pred.std, avg.std(0), rtol=0.1)
    np.testing.assert_allclose(pred.mean, sp.test_loss(lam, t), rtol=1e-12)


def test_lambda_opt_spread_against_monte_carlo(data):
    k = analytic_kernels(MLP(depth=3, out_dim=1), np.concatenate([data.x_train, data.x_test]))
    dk = DataKernels(k.ntk[:N, :N], k.ntk[N:, :N], data.y_train, data.y_test, 3, k.nngp[:N, :N], k.nngp[N:, :N],
                     k.nngp[N:, N:])
    sp = spread_model(dk)
    n, T = 4, 100.0
    grid = np.geomspace(1e-4, 1.0, 81)                                 # 10^(1/20) apart
    pred = lambda_opt_spread(sp, steps=[T], seeds=n, weight_decays=grid, draws=1500, groups=3000, seed=2)
    f0 = np.random.default_rng(7).multivariate_normal(np.zeros(N + M), k.nngp, size=4 * 800, method="cholesky").T
    y = np.repeat(dk.y_train.reshape(N, 1), f0.shape[1], axis=1)
    losses = []
    for lam in grid:
        fl = L2Flow(dk.ntk_train_train, y, lam, 3, ntk_test_train=dk.ntk_test_train, f0_train=f0[:N],
                    f0_test=f0[N:], normalization=N)
        losses.append(((fl.test([T])[0] - dk.y_test.reshape(M, 1)) ** 2).sum(0) / (2 * M))
    avg = np.array(losses).T.reshape(800, n, -1).mean(1)                 # (groups, G)
    u, lo_mc = np.log(grid), []
    for row in avg:                                                      # parabola in log λ (np.polyfit)
        j = int(np.clip(np.argmin(row), 1, grid.size - 2))
        a, b, _ = np.polyfit(u[j - 1:j + 2], row[j - 1:j + 2], 2)
        lo_mc.append(np.exp(np.clip(-b / (2 * a), u[j - 1], u[j + 1])))
    lo_mc = np.array(lo_mc)
    inside = np.mean((lo_mc >= pred.low[0]) & (lo_mc <= pred.high[0]))
    assert abs(inside - 0.8) < 0.07, (inside, pred.low, pred.high)       # 4.9 binomial sd at 800 groups
    assert pred.low[0] < pred.infinite_seeds[0] < pred.high[0]


def test_bad_input_is_rejected_before_work(problem):
    dk, _ = problem
    with pytest.raises(ValueError, match="nngp_test_test"):
        LossSpread.from_kernels(dk.replace(nngp_test_test=np.diag(dk.nngp_test_test)))
    sp = LossSpread.from_kernels(dk)
    with pytest.raises(ValueError, match="seeds"):
        t_star_spread(sp, [0.01], seeds=0)
    with pytest.raises(ValueError, match="level"):
        loss_spread(sp, 0.01, [1.0], seeds=2, level=1.5)
    with pytest.raises(TypeError, match="LossSpread"):
        t_star_spread(ExpectedLoss.from_kernels(dk), [0.01], seeds=2)
    with pytest.raises(ValueError, match="draws"):
        sp.prior_draws(1)


def test_spread_study_smoke(tmp_path):
    """The study at smoke size: every claim's measured interval overlaps its predicted band (no FAILS), and
    the calibration claim and its data are stored."""
    import json

    from widelimit.studies import get_study
    from widelimit.validity import Verdict
    get_study("spread")("smoke", tmp_path, progress=False)
    js = json.loads((tmp_path / "spread.json").read_text())
    verdicts = {c["name"]: c["verdict"] for c in js["claims"]}
    assert any(n.startswith("calibration") for n in verdicts) and len(verdicts) == 8
    assert Verdict.FAILS.value not in verdicts.values(), verdicts
    cal = js["data"]["calibration"]
    assert 0.0 <= cal["fraction"] <= 1.0 and sum(cal["count"]) >= 10
    assert (tmp_path / "spread.png").exists()


def test_cli_seeds_prints_the_python_intervals(tmp_path, capsys):
    """``widelimit table ntk --seeds n``: the interval columns are predict.spread's for the same kernels; the
    flag needs --f0 nngp; a kernel file with only the test-test diagonal is a one-line usage error."""
    from widelimit import cli
    import json
    args = ["--data", "digits", "--classes", "3,8", "--targets", "pm1", "--n-train", "30", "--n-test", "20",
            "--depth", "3", "--weight-decay", "0.03", "--no-progress"]
    out = tmp_path / "t.json"
    assert cli.main(["table", "ntk"] + args + ["--seeds", "4", "--out", str(out)]) == 0   # computed kernels
    row = json.loads(out.read_text())["rows"][0]
    assert row["t* 80% low (4 seeds)"] < row["t*"] < row["t* 80% high (4 seeds)"]
    ds = load_dataset("digits", classes=[3, 8], targets="pm1", n_train=30, n_test=20, seed=0)
    k = analytic_kernels(MLP(depth=3, out_dim=1), np.concatenate([ds.x_train, ds.x_test]))
    dk = DataKernels(k.ntk[:N, :N], k.ntk[N:, :N], ds.y_train, ds.y_test, 3, k.nngp[:N, :N], k.nngp[N:, :N],
                     k.nngp[N:, N:])
    full = tmp_path / "full.npz"
    dk.save(full)
    assert cli.main(["table", "ntk", "--kernels", str(full), "--weight-decay", "0.03", "--seeds", "4",
                     "--learning-rate", "0.1", "--budgets", "300", "--no-progress", "--out", str(out),
                     "--force"]) == 0
    tabs = json.loads(out.read_text())["tables"]
    rows, opt = tabs["tstar"]["rows"], tabs["lambda_opt"]["rows"][0]
    ref = t_star_spread(spread_model(dk), [0.03], seeds=4)
    ref_opt = lambda_opt_spread(spread_model(dk), steps=[300], learning_rate=0.1, seeds=4)
    np.testing.assert_allclose([opt["λ_opt 80% low (4 seeds)"], opt["λ_opt 80% high (4 seeds)"]],
                               [ref_opt.low[0], ref_opt.high[0]], rtol=1e-9)
    np.testing.assert_allclose([rows[0]["t* 80% low (4 seeds)"], rows[0]["t* 80% high (4 seeds)"]],
                               [ref.low[0], ref.high[0]], rtol=1e-9)
    assert cli.main(["table", "ntk"] + args + ["--seeds", "4", "--f0", "zero"]) == 2
    assert "--seeds" in capsys.readouterr().err
    kfile = tmp_path / "k.npz"
    dk.replace(nngp_test_test=np.diag(dk.nngp_test_test)).save(kfile)
    assert cli.main(["table", "ntk", "--kernels", str(kfile), "--weight-decay", "0.03", "--seeds", "4",
                     "--no-progress"]) == 2
    assert "--seeds" in capsys.readouterr().err


def test_spread_study_sizes_are_valid_configurations():
    """Every size of the spread study (medium/full not run here) builds valid training configurations."""
    from widelimit.studies import spread
    from widelimit.train import RunConfig
    for size, p in spread.SIZES.items():
        opts = dict(classes=spread.CLASSES, targets="pm1", n_train=p["n_train"], n_test=p["n_test"])
        for w in (p["width_init"], p["width"]):
            RunConfig(arch=MLP(depth=p["depth"], width=w, out_dim=1), data="digits", data_options=opts,
                      optimizer="gd", learning_rate=p["eta"], weight_decay=p["weight_decays"][0],
                      steps=p["steps"], eval_every=p["eval_every"]).validate()
        assert p["seeds_init"] // p["n_init"] >= 2 and p["seeds"] // p["n_train_groups"] >= 2, size


def test_study_initial_networks_are_the_training_harness_initial_networks():
    """Part A of the study (vmapped initialisation, no training) sees the same f0 as widelimit.train."""
    from widelimit.studies.spread import _initial_test_losses
    from widelimit.train import RunConfig, train
    opts = dict(classes=[3, 8], targets="pm1", n_train=12, n_test=16, seed=0)
    ds = load_dataset("digits", **opts)
    cfg = RunConfig(arch=MLP(depth=3, width=64, out_dim=1), data="digits", data_options=opts, optimizer="gd",
                    learning_rate=0.1, weight_decay=0.01, steps=1, eval_every=1, dtype="float32")
    mine = _initial_test_losses(cfg, ds, [0, 1])
    ref = [float(np.asarray(train(cfg.replace(seed=s)).metrics["test_loss"])[0]) for s in (0, 1)]
    np.testing.assert_allclose(mine, ref, rtol=1e-5)
    assert np.ptp(mine) > 0


def test_python_api_seeds_gives_the_spread_interval(data):
    """``t_star(..., seeds=n)`` / ``lambda_opt(..., seeds=n)`` carry predict.spread's interval; default none."""
    from widelimit.predict import lambda_opt, t_star, table_rows
    k = analytic_kernels(MLP(depth=3, out_dim=1), np.concatenate([data.x_train, data.x_test]))
    dk = DataKernels(k.ntk[:N, :N], k.ntk[N:, :N], data.y_train, data.y_test, 3, k.nngp[:N, :N], k.nngp[N:, :N],
                     k.nngp[N:, N:])
    sp = spread_model(dk)
    ts = t_star(dk, weight_decays=[0.03, 0.01], seeds=4)                 # DataKernels with the full K_xx
    ref = t_star_spread(sp, [0.03, 0.01], seeds=4)
    np.testing.assert_allclose(ts.t_star_low, ref.low, rtol=1e-12)
    np.testing.assert_allclose(ts.t_star_high, ref.high, rtol=1e-12)
    assert np.all(ts.t_star_low < ts.t_star) and np.all(ts.t_star < ts.t_star_high) and ts.seeds == 4
    np.testing.assert_allclose(ts.t_star, t_star(ExpectedLoss.from_kernels(dk), weight_decays=[0.03, 0.01]).t_star,
                               rtol=1e-9)                                   # the mean is unchanged
    assert t_star(sp, weight_decays=[0.03]).t_star_low is None
    rows, units = table_rows(ts)
    assert "t_star_low" in rows[0] and units["t_star_high"] == "η·steps"
    lo = lambda_opt(sp, steps=[30, 300], learning_rate=0.1, seeds=4)
    ref_lo = lambda_opt_spread(sp, steps=[30, 300], learning_rate=0.1, seeds=4)
    np.testing.assert_allclose(lo.weight_decay_opt_low, ref_lo.low, rtol=1e-12)
    assert np.all(lo.weight_decay_opt_low < lo.weight_decay_opt)
    assert np.all(lo.weight_decay_opt < lo.weight_decay_opt_high)
    with pytest.raises(TypeError, match="LossSpread"):
        t_star(ExpectedLoss.from_kernels(dk), weight_decays=[0.01], seeds=4)
    with pytest.raises(ValueError, match="seeds"):
        lambda_opt(sp, steps=[30], seeds=0)
