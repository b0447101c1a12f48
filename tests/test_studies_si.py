"""Smoke-size runs of study 4 (scale-invariant norms) and study 5 (AutoL2 vs fixed lambda).

The checks are physics, not snapshots: the instrumentation hooks must not change training; for
plain SGD the norm map driven by the measured minibatch G is exact (Pythagoras with g . w = 0), so the
measured norms must match it to float32 accuracy; without L2 the norm must grow and the effective learning
rate fall; AutoL2's coefficient starts at 0.1 and only ever decreases by factors of 10.
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


@pytest.fixture(scope="module")
def autol2_report(tmp_path_factory):
    from widelimit.studies.autol2 import run

    out = tmp_path_factory.mktemp("autol2")
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
    assert "How this was made" in text and "Smoke size" in text
    payload = json.loads((out / "scale_invariant.json").read_text())
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs, "no plots written"
    for p in pngs:
        assert f"({p})" in text, f"{p} not referenced in the report"
        assert (out / p).stat().st_size > 1000
    cases = payload["data"]["cases"]
    assert cases and payload["data"]["no_l2"]
    for c in cases:
        for v in c["angle_eq_meas"] + c["angle_eq_closed"]:
            assert 0 < v < 1
        if c["case"]["optimizer"] == "sgd":  # the exact map: measured norms reproduced to float32 accuracy
            assert max(abs(v) for v in c["map_norm_med"]) < 1e-3
            assert max(abs(v) for v in c["map_norm_end"]) < 1e-3
            lam, lr = c["case"]["lam"], c["case"]["lr"]
            assert c["angle_eq_closed"] == pytest.approx([math.sqrt(2 * lr * lam)] * len(c["layers"]))
    for c in payload["data"]["no_l2"]:
        assert all(b > a for a, b in zip(c["norm0"], c["norm_final_meas"]))
        assert all(b < a for a, b in zip(c["eff0_meas"], c["eff_final_meas"]))
    assert len(payload["tables"]) == 4


def test_autol2_smoke_report(autol2_report):
    md, out = autol2_report
    text = md.read_text()
    assert "Verdict" in text and "How this was made" in text
    payload = json.loads((out / "autol2.json").read_text())
    setup = payload["data"]["setups"][0]
    autos, fixed = setup["autol2"], setup["fixed"]
    assert set(fixed) == {str(l) for l in payload["data"]["lams"]}
    assert set(autos) == {str(a) for a in payload["data"]["auto_init"]}
    for s in [*autos.values(), *fixed.values()]:
        assert 0.0 <= s["final_mean"] <= s["best_mean"] <= 1.0
        assert len(s["acc_curve"]) == len(s["steps"])
    best = max(fixed, key=lambda k: fixed[k]["val_final_mean"])  # picked on the validation half, not the test half
    assert float(best) == setup["best_lam"]
    assert isinstance(setup["fixed_lams_differ"], bool) and "Fixed λ values" in text
    for a, s in autos.items():
        for lam in s["lam_curves"]:
            lam = np.asarray(lam)
            assert lam[0] == pytest.approx(float(a))
            ratios = lam[1:] / lam[:-1]
            # between logging points lambda may drop by 10 several times, never rise
            assert np.all(np.isclose(ratios, 1.0, rtol=1e-4) | (ratios < 0.1001)), \
                "AutoL2 lambda must only drop by factors of 10"
    for p in out.glob("*.png"):
        assert f"({p.name})" in text


def test_split_test_halves_are_disjoint_and_accuracy_per_split():
    from widelimit.studies.autol2 import split_accuracy, split_test

    val, held = split_test(11)
    assert len(val) == 5 and len(held) == 6 and not set(val) & set(held) and set(val) | set(held) == set(range(11))
    assert not np.array_equal(val, np.arange(5))  # a permutation, not the first half in file order
    y = np.eye(3)[[0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1]]
    f = np.stack([y, np.roll(y, 1, axis=1)])  # logging point 0: all right; 1: all wrong
    np.testing.assert_array_equal(split_accuracy(f, y, val), [1.0, 0.0])
    with pytest.raises(ValueError, match="n_test"):
        split_test(1)


def test_steps_to():
    from widelimit.studies.autol2 import steps_to

    steps = np.array([0, 10, 20, 30])
    assert steps_to(steps, np.array([0.1, 0.5, 0.9, 0.95]), 0.9) == 20
    assert math.isnan(steps_to(steps, np.array([0.1, 0.5, 0.6, 0.7]), 0.9))
    with pytest.raises(ValueError, match="steps and acc"):
        steps_to(steps, np.array([0.1, 0.2]), 0.5)


def test_bad_inputs_raise_before_work(tmp_path):
    from widelimit.studies import autol2, scale_invariant
    from widelimit.studies.scale_invariant import instrumented_run

    for mod in (scale_invariant, autol2):
        with pytest.raises(ValueError, match="size"):
            mod.run("huge", tmp_path)
        with pytest.raises(ValueError, match="size"):
            mod.run("medium", tmp_path)  # not offered by these two studies (yet)
        with pytest.raises(TypeError, match="out_dir"):
            mod.run("smoke", 3)
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
