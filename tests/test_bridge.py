"""The bridge study (norm relaxation time against λ_opt per budget): its pieces against closed forms, and a
smoke-size run whose verdicts must be the judge() of the stored intervals."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from widelimit.evidence import Interval, judge, result_from_dict
from widelimit.studies.bridge_fit import (OptimizerSpec, fit_fraction, lambda_for_relaxation, loss_at_budgets,
                                          measured_lambda_opt, naive_lambda, relaxation_steps)
from widelimit.validity import Verdict

SGD = OptimizerSpec("sgd", 0.5)
MOM = OptimizerSpec("momentum", 0.1, 0.9)
ADW = OptimizerSpec("adamw", 3e-3, d=64)


def test_relaxation_closed_forms():
    lam = np.array([1e-3, 1e-2])
    np.testing.assert_allclose(relaxation_steps(SGD, lam), 1 / (4 * 0.5 * lam), rtol=1e-12)
    np.testing.assert_allclose(relaxation_steps(MOM, lam), (1 - 0.9) / (4 * 0.1 * lam), rtol=1e-12)
    np.testing.assert_allclose(relaxation_steps(ADW, lam), 1 / (2 * 3e-3 * lam), rtol=1e-12)
    with pytest.raises(ValueError, match="adam"):
        relaxation_steps(OptimizerSpec("adam", 1e-3, d=4), 1e-2)


def test_lambda_for_relaxation_inverts_tau_and_separates_optimisers():
    for opt, tau in ((SGD, 1 / (4 * 0.5)), (MOM, 0.1 / (4 * 0.1)), (ADW, 1 / (2 * 3e-3))):
        assert lambda_for_relaxation(opt, 40.0) == pytest.approx(tau / 40.0, rel=1e-9)
    # same r T: heavy ball's eta*lam is (1 - mu) times SGD's, AdamW's twice SGD's
    el = {o.name: o.learning_rate * lambda_for_relaxation(o, 25.0) for o in (SGD, MOM, ADW)}
    assert el["momentum"] / el["sgd"] == pytest.approx(0.1, rel=1e-9)
    assert el["adamw"] / el["sgd"] == pytest.approx(2.0, rel=1e-9)
    # the naive rule keeps eta*lam*T fixed instead
    assert naive_lambda(SGD, 0.01, 500, MOM, 1000) * 0.1 * 1000 == pytest.approx(0.5 * 0.01 * 500)
    with pytest.raises(ValueError, match="target_steps"):
        lambda_for_relaxation(SGD, -1.0)


def test_loss_at_budgets_window_mean():
    step = np.arange(0, 101, 10)
    loss = np.tile(step.astype(float), (2, 3, 1))
    out = loss_at_budgets(step, loss, [50, 100], window=0.1)
    np.testing.assert_allclose(out[..., 0], 50.0)            # only step 50 lies in [45, 50]
    np.testing.assert_allclose(out[..., 1], 95.0)            # steps 90 and 100
    with pytest.raises(ValueError, match="budget 55"):
        loss_at_budgets(step, loss, [55])


def test_measured_lambda_opt_recovers_a_known_minimum_and_opens_edges():
    rng = np.random.default_rng(0)
    lams = np.geomspace(1e-3, 1e-1, 9)
    true = 7e-3
    loss = (np.log(lams / true) ** 2)[:, None] + 0.01 * rng.standard_normal((9, 8))
    lam, where, iv = measured_lambda_opt(lams, loss)
    assert where == "interior" and abs(math.log(lam / true)) < 0.05 and iv.low * 0.99 <= true <= iv.high * 1.01
    lam, where, iv = measured_lambda_opt(lams, -np.log(lams)[:, None] + 0 * loss)   # decreasing: edge
    assert where == "last" and iv.high == np.inf and iv.low <= lams[-1]


def test_fit_fraction_and_prediction_round_trip():
    iv = Interval(0.01, 0.008, 0.0125, 0.9, 8, "test")
    f = fit_fraction(SGD, 500, 0.01, iv, "v")
    assert f.driven and f.r == pytest.approx(1 / (4 * 0.5 * 0.01) / 500)
    assert f.low == pytest.approx(1 / (4 * 0.5 * 0.0125) / 500) and f.high == pytest.approx(1 / (4 * 0.5 * 0.008) / 500)
    lam, (lo, hi) = f.predict(SGD, 500)
    assert lam == pytest.approx(0.01) and lo == pytest.approx(0.008) and hi == pytest.approx(0.0125)
    lam, _ = f.predict(MOM, 1000)                              # (1-mu)/(4 eta r T)
    assert lam == pytest.approx(0.1 / (4 * 0.1 * f.r * 1000))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from widelimit.studies.bridge import run
    from widelimit.train import loop

    out = tmp_path_factory.mktemp("bridge")
    old = loop.COMPILER_OPTIONS
    loop.COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}
    try:
        md = run("smoke", out, progress=False)
    finally:
        loop.COMPILER_OPTIONS = old
    return md, json.loads((out / "bridge.json").read_text())


def test_smoke_verdicts_are_judged_from_intervals(smoke):
    md, js = smoke
    assert md.exists() and (md.parent / "bridge.png").exists()
    assert js["claims"], "the study must judge claims"
    for d in js["claims"]:
        r = result_from_dict(d)
        assert judge(r.claim, r.measured).verdict is r.verdict
        lo, hi = r.claim.band()
        span = max(hi - lo, abs(hi) * 0.1, 1e-12)
        above = Interval(hi + span, hi + span, hi + 2 * span, 0.9, 2, "moved")
        inside = Interval((lo + hi) / 2, lo + 0.25 * (hi - lo), hi - 0.25 * (hi - lo), 0.9, 2, "moved")
        assert judge(r.claim, above).verdict is Verdict.FAILS
        assert judge(r.claim, inside).verdict is Verdict.HOLDS


def test_smoke_fit_is_driven_and_the_rest_predicted(smoke):
    _, js = smoke
    lam_claims = [d for d in js["claims"] if "λ_opt" in d["name"]]
    driven = [d for d in lam_claims if d["driven"]]
    assert len(driven) == 1 and "in-sample" in driven[0]["note"]
    fit = js["data"]["fit"]
    assert fit["driven"] and fit["r"] > 0
    # the fitted r is tau(lam_opt)/T of the fit point, with SGD's closed form
    assert fit["r"] == pytest.approx(1 / (4 * fit["learning_rate"] * fit["lambda_opt"]) / fit["budget"], rel=1e-9)
    for row in js["data"]["lambda_opt"]:
        if row["in_sample"]:
            continue
        opt = OptimizerSpec("momentum", 0.1, 0.9) if row["optimizer"].startswith("momentum") else SGD
        assert row["pred"] == pytest.approx(lambda_for_relaxation(opt, fit["r"] * row["budget"]), rel=1e-9)


def test_smoke_measurements_are_sane(smoke):
    _, js = smoke
    rows = js["data"]["lambda_opt"]
    assert len({r["budget"] for r in rows}) >= 4
    for r in rows:
        assert 3e-3 * 0.999 <= r["lam"] <= 0.1 * 1.001          # inside the smoke grid
        assert r["best_acc"] > 0.3                               # 10 classes: well above chance
        assert r["where"] in ("interior", "first", "last")
    for t in js["data"]["t_star"]:
        assert 0 < t["t_star"] <= 200 and t["best_loss"] < math.log(10)


@pytest.mark.parametrize("size", ["smoke", "quick", "medium", "full"])
def test_every_size_is_a_valid_design(size):
    """Each size's configurations validate (no training), budgets are logged steps, the λ grids span >= 2
    decades with η·λ < 1, >= 4 budgets, >= 8 seeds above smoke, and the per-unit window starts after >= 5
    relaxation times."""
    from widelimit.studies.bridge import SIZES, base_config
    from widelimit.studies.bridge_units import UNIT_SIZES
    p = SIZES[size]
    assert len(p["budgets"]) >= 4 and p["fit_budget"] in p["budgets"]
    assert all(b % p["eval_every"] == 0 and b <= p["steps"] for b in p["budgets"])
    if size != "smoke":
        assert len(p["seeds"]) >= 8
    for v in p["variants"]:
        for o in v["optimizers"]:
            base_config(v, o, p).canonical()
            lams = np.asarray(o["lams"])
            if size != "smoke":
                assert lams.max() / lams.min() >= 99.9
            assert o["learning_rate"] * lams.max() < 1
    if size != "smoke":
        u = UNIT_SIZES[size]
        assert len(u["seeds"]) >= 8
        for r in u["runs"]:
            tau = (1 - r.get("momentum", 0.0)) / (4 * r["learning_rate"] * r["weight_decay"])
            assert u["window"][0] >= 5 * tau
