"""Study 4 (scale-invariant norms): smoke-size run and the instrumentation it rests on.

The checks are physics, not snapshots: the instrumentation hooks must not change training; for plain SGD
the norm map driven by the measured minibatch G is exact (Pythagoras with g . w = 0), so the measured norms
must match it to float32 accuracy; the smoke study's headline claims (RMS angle vs sqrt(2 eta lam),
relaxation time vs 1/(4 eta lam), from hyper-parameters alone) must hold with intervals narrow enough to
fail a 10% error; without L2 the norm must grow and the effective learning rate fall; the committed quick
report's claims must be rebuilt from its stored data. Study 5 (AutoL2): tests/test_autol2_study.py.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from widelimit.arch import MLP
from widelimit.train import RunConfig


@pytest.fixture(scope="module")
def si_report(tmp_path_factory):
    from widelimit.studies.scale_invariant import run

    out = tmp_path_factory.mktemp("si")
    return run("smoke", out, progress=False), out


def _tiny_config(**kw):
    spec = MLP(depth=2, width=8, out_dim=10, norm="batch", parameterization="standard", W_std=0.1)
    base = dict(arch=spec, data="mnist1d", data_options={"n_train": 128, "n_test": 64}, optimizer="sgd",
                learning_rate=0.1, weight_decay=0.05, loss="xent", batch_size=32, steps=40, eval_every=10, seed=3)
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture(scope="module")
def tiny_run():
    from widelimit.studies.scale_invariant import instrumented_run

    cfg = _tiny_config()
    return cfg, instrumented_run(cfg)


def test_instrumented_run_does_not_change_training(tiny_run):
    """The hooks only observe: the instrumented run logs the same norms, G and accuracies as a plain
    train(config), and its per-step norms at the logging steps are the harness's ones."""
    from widelimit.train import train

    cfg, rec = tiny_run
    ref = train(cfg)
    for j, layer in enumerate(rec["layers"]):
        w_ref = np.asarray(ref.layers[f"weight_norm/{layer}"], float)
        x = np.append(rec["norm_sq"][:, j], rec["norm_sq_final"][j])[rec["eval_steps"]]
        np.testing.assert_allclose(np.sqrt(x), w_ref, rtol=1e-5)
        np.testing.assert_allclose(np.sqrt(rec["G_full"][:, j]), ref.layers[f"grad_norm_unit/{layer}"], rtol=1e-5)
        # per-unit records add up to the whole-matrix ones
        np.testing.assert_allclose(rec["unit_norm_sq"][:, j].sum(axis=-1), rec["norm_sq"][:, j], rtol=1e-5)
    np.testing.assert_array_equal(rec["test_acc"], ref.metrics["test_acc"])


def test_sgd_norm_map_is_exact_for_the_measured_G(tiny_run):
    """||w_{k+1}||^2 = (1 - eta lam)^2 ||w_k||^2 + eta^2 G_k/||w_k||^2 holds step by step on a real BN net."""
    from widelimit.dynamics.norms import solve_norm_map

    cfg, rec = tiny_run
    x = np.vstack([rec["norm_sq"], rec["norm_sq_final"][None]])
    pred = solve_norm_map("sgd", learning_rate=0.1, weight_decay=0.05, n_steps=cfg.steps, grad_norm_sq=rec["G_batch"],
                          norm_sq0=x[0])
    np.testing.assert_allclose(pred.norm_sq, x, rtol=2e-4)
    # and the angle: tan(angle) = eta ||g|| / ((1 - eta lam) ||w||) = eta sqrt(G) / ((1 - eta lam) x)
    tan_pred = 0.1 * np.sqrt(rec["G_batch"]) / ((1 - 0.1 * 0.05) * rec["norm_sq"])
    np.testing.assert_allclose(np.tan(rec["angle"]), tan_pred, rtol=2e-3)


def test_scale_invariant_smoke_report(si_report):
    md, out = si_report
    assert md.exists() and md.name == "scale_invariant.md"
    text = md.read_text()
    assert "How this was made" in text and "Smoke size" in text and "## Claims" in text
    payload = json.loads((out / "scale_invariant.json").read_text())
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs, "no plots written"
    for p in pngs:
        assert f"({p})" in text, f"{p} not referenced in the report"
    cases = payload["data"]["cases"]
    assert cases and payload["data"]["no_l2"]
    for c in cases:
        if c["case"]["optimizer"] == "sgd":  # the exact map: measured norms reproduced to float32 accuracy
            assert max(abs(v) for v in c["map_norm_med"]) < 1e-3
            assert max(abs(v) for v in c["map_norm_end"]) < 1e-3
    for c in payload["data"]["no_l2"]:
        assert all(b > a for a, b in zip(c["norm0"], c["norm_final_meas"]))
        assert all(b < a for a, b in zip(c["eff0_meas"], c["eff_final_meas"]))


def test_scale_invariant_smoke_claims_measured_vs_theory(si_report):
    """Headline claims of the smoke study (4 seeds, SGD, eta = 0.2, lam = 0.1): the RMS angular update against
    sqrt(2 eta lam) and the relaxation time against 1/(4 eta lam), both from hyper-parameters alone. Each must
    hold, with an interval whose half-width is below half the tolerance (so a 10% / 25% error would fail)."""
    from widelimit.studies.scale_invariant import TOLERANCES, claims_from_data

    _, out = si_report
    js = json.loads((out / "scale_invariant.json").read_text())
    claims = {c["name"]: c for c in js["claims"]}
    lr, lam = 0.2, 0.1
    ang = [c for n, c in claims.items() if n.endswith("RMS angular update")]
    tau = [c for n, c in claims.items() if n.endswith("relaxation time")]
    assert ang and tau
    for c, pred, tol in [(c, math.sqrt(2 * lr * lam), TOLERANCES["angle"]) for c in ang] + \
                        [(c, 1 / (4 * lr * lam), TOLERANCES["tau"]) for c in tau]:
        assert not c["driven"] and c["predicted"] == pytest.approx(pred, rel=1e-9)
        m = c["measured"]
        assert m["n"] == 4 and m["low"] <= m["estimate"] <= m["high"]
        assert (m["high"] - m["low"]) / 2 < tol * pred / 2, f"{c['name']}: interval too wide to test the claim"
        assert abs(m["estimate"] - pred) < tol * pred - (m["high"] - m["low"]) / 2, c["name"]
        assert c["verdict"] == "holds", c["name"]
    # driven claims (norm map fed the measured G) are labelled so, and the claims rebuild from the stored data
    assert all(c["driven"] for n, c in claims.items() if "map driven" in n or "closed-form" in n)
    assert [r.to_dict() for r in claims_from_data(js["data"], "smoke")] == js["claims"]


def test_committed_quick_report_rebuilds_from_its_data():
    """The claims in validation/quick/scale_invariant.json are exactly what its stored data give."""
    from pathlib import Path

    from widelimit.studies.scale_invariant import claims_from_data

    js = json.loads((Path(__file__).resolve().parents[1] / "validation/quick/scale_invariant.json").read_text())
    assert js["claims"], "the committed quick report has no claims"
    assert [r.to_dict() for r in claims_from_data(js["data"], js["size"])] == js["claims"]
    assert min(c["measured"]["n"] for c in js["claims"]) >= 4 and \
        max(c["measured"]["n"] for c in js["claims"]) >= 8


def test_sizes_declared():
    from widelimit.studies.scale_invariant import SIZES

    assert {"smoke", "quick", "medium", "full"} <= set(SIZES)
    assert all(SIZES[s]["seeds"] >= 8 for s in ("quick", "medium", "full"))


def test_effective_lr_factor_is_one_without_adam_and_gradient_weighted_with_it(tiny_run):
    """kappa = 1 for SGD; for Adam it is sum g_i^2 P_i / sum g_i^2 with P_i = 1/(sqrt(v_hat_i) + eps): after
    the first Adam step v_hat = g^2 exactly, so kappa = sum g_i^2/(|g_i| + eps) / sum g_i^2."""
    from widelimit.studies.scale_invariant import instrumented_run

    _, rec = tiny_run
    np.testing.assert_array_equal(rec["kappa"], 1.0)
    cfg = _tiny_config(optimizer="adamw", learning_rate=4e-3, weight_decay=0.5, steps=10, eval_every=10)
    r = instrumented_run(cfg)
    G, x = r["G_batch"][0], r["norm_sq"][0]
    g_sq = G / x                                   # ||g||^2 of the first step
    k0 = r["kappa"][0]
    # kappa_0 = sum|g_i| / ||g||^2 (eps aside), and ||g|| <= sum|g_i| <= sqrt(d) ||g|| (Cauchy-Schwarz): it lies
    # between 1/||g|| and the isotropic 1/sqrt(mean v_hat) = sqrt(d)/||g|| (the study's former definition),
    # strictly below the latter unless all |g_i| are equal
    d = r["d"]
    iso = np.sqrt(d / g_sq)
    assert np.all(k0 >= (1 - 1e-4) / np.sqrt(g_sq)) and np.all(k0 < 0.99 * iso)
    assert np.all(np.isfinite(r["kappa"])) and np.all(r["kappa"] > 0)


def test_bad_inputs_raise_before_work(tmp_path):
    from widelimit.studies import scale_invariant
    from widelimit.studies.scale_invariant import instrumented_run, instrumented_runs

    with pytest.raises(ValueError, match="size"):
        scale_invariant.run("huge", tmp_path)
    with pytest.raises(TypeError, match="out_dir"):
        scale_invariant.run("smoke", 3)
    with pytest.raises(TypeError, match="config"):
        instrumented_runs([])
    with pytest.raises(TypeError, match="config"):
        instrumented_run({"arch": "mlp"})
    with pytest.raises(ValueError, match="constant"):
        instrumented_run(_tiny_config(weight_decay={"kind": "piecewise", "boundaries": [10], "values": [0.1, 0.01]}))
    with pytest.raises(ValueError, match="scale-invariant"):
        instrumented_run(_tiny_config(arch=MLP(depth=2, width=8, out_dim=10)))
    with pytest.raises(ValueError, match="eval_every"):
        instrumented_run(_tiny_config(), eval_every=7)


@pytest.mark.slow
def test_full_size_cnn_paths_run_at_tiny_size():
    """The full sizes add a BatchNorm 1-D CNN (study 4) and a BatchNorm CNN setup (study 5): exercise both code
    paths on a few steps so that the GPU-sized runs do not meet them for the first time."""
    from widelimit.studies import autol2, scale_invariant as si
    from widelimit.train import train

    case = si.Case("batch", "sgd", lr=0.1, lam=0.05, W_std=0.1, net="cnn")
    cfg = si.run_config(case, "smoke").replace(steps=40, eval_every=10, data_options={
        "n_train": 64, "n_test": 32, "layout": "signal"})
    rec = si.instrumented_run(cfg, kick_step=20)
    n_conv = cfg.spec.depth
    assert list(rec["layers"]) == [f"hidden{i}" for i in range(n_conv)]
    assert rec["unit_norms"].shape == (5, n_conv, cfg.spec.channels)
    assert np.all(rec["aniso"] == 1) and np.all(np.isfinite(rec["G_batch"]))
    # the kick multiplies W by 2 after SGD step 19, whose effect on the norm is exact:
    # ||w||^2 <- 4 ((1 - eta lam)^2 x + eta^2 G / x)
    x, G = rec["norm_sq"][19], rec["G_batch"][19]
    np.testing.assert_allclose(rec["norm_sq"][20], 4 * ((1 - 0.1 * 0.05) ** 2 * x + 0.01 * G / x), rtol=1e-4)
    out = si.analyse(case, rec, list(rec["layers"]), list(rec["d"]), cfg.canonical(), 20)
    assert np.all(np.isfinite(out["angle_eq_meas"]))
    setup = [s for s in autol2._SETTINGS["full"]["setups"] if "cnn" in s["name"]][0]
    base = autol2.base_config({**setup, "data_options": {"n_train": 64, "n_test": 32, "layout": "signal"},
                               "width": 8, "steps": 20, "eval_every": 10, "batch_size": 16})
    res = train(base.replace(weight_decay=dict(autol2.AUTOL2)))
    assert res.metrics["weight_decay"][0] == pytest.approx(autol2.AUTOL2["init_weight_decay"])
