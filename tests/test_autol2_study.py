"""Study 5 (AutoL2 vs fixed λ): smoke-size run, its claims, and the protocol pieces.

The claims compare final held-out accuracies paired over seeds, with the comparison λ picked on the
validation half (re-picked in every bootstrap resample). The synthetic-data tests check that the verdicts
follow from the intervals (a clearly worse AutoL2 fails, an equal one holds) and that the pick uses the
validation half, not the held-out numbers it is judged by. AutoL2's coefficient starts at λ0 and only ever
drops by factors of 10.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def autol2_report(tmp_path_factory):
    from widelimit.studies.autol2 import run

    out = tmp_path_factory.mktemp("autol2")
    return run("smoke", out, progress=False), out


def test_autol2_smoke_report(autol2_report):
    md, out = autol2_report
    text = md.read_text()
    assert "Verdict" in text and "How this was made" in text and "## Claims" in text and "reference" in text
    payload = json.loads((out / "autol2.json").read_text())
    setup = payload["data"]["setups"][0]
    autos, fixed = setup["autol2"], setup["fixed"]
    assert set(fixed) == {str(l) for l in payload["data"]["lams"]}
    from widelimit.studies.autol2 import label
    assert set(autos) == {label(a, r) for a, r in payload["data"]["auto_init"]}
    for s in [*autos.values(), *fixed.values()]:
        assert 0.0 <= s["final_mean"] <= s["best_mean"] <= 1.0
        assert len(s["acc_curve"]) == len(s["steps"]) and len(s["per_seed_final"]) == 4
        assert np.mean(s["per_seed_final"]) == pytest.approx(s["final_mean"])
    best = max(fixed, key=lambda k: fixed[k]["val_final_mean"])  # picked on the validation half, not the test half
    assert float(best) == setup["best_lam"]
    assert isinstance(setup["fixed_lams_differ"], bool) and "Fixed λ values" in text
    for a, s in autos.items():
        for lam in s["lam_curves"]:
            lam = np.asarray(lam)
            assert lam[0] == pytest.approx(float(a.split()[0]))
            ratios = lam[1:] / lam[:-1]
            # between logging points lambda may drop by 10 several times, never rise
            assert np.all(np.isclose(ratios, 1.0, rtol=1e-4) | (ratios < 0.1001)), \
                "AutoL2 lambda must only drop by factors of 10"


def test_autol2_smoke_claims_from_intervals(autol2_report):
    """The stored claims rebuild from the stored data; every verdict is the one its interval and band give;
    the paired difference AutoL2 − best fixed λ equals the mean over seeds computed here from the per-seed
    accuracies (best λ on the validation half)."""
    from widelimit.studies.autol2_claims import TIE, claims_from_data

    _, out = autol2_report
    js = json.loads((out / "autol2.json").read_text())
    assert [r.to_dict() for r in claims_from_data(js["data"], "smoke")] == js["claims"]
    setup = js["data"]["setups"][0]
    fixed = setup["fixed"]
    keys = [str(float(l)) for l in js["data"]["lams"]]
    val = np.array([fixed[k]["per_seed_val_final"] for k in keys]).T
    held = np.array([fixed[k]["per_seed_final"] for k in keys]).T
    j = int(np.argmax(val.mean(0)))
    for c in js["claims"]:
        m, (lo, hi) = c["measured"], c["band"]
        assert m["n"] == 4 and m["low"] <= m["estimate"] <= m["high"]
        want = "holds" if lo <= m["low"] and m["high"] <= hi else "fails" if m["high"] < lo or m["low"] > hi \
            else "inconclusive"
        assert c["verdict"] == want
        if "ties or beats the best fixed" in c["name"]:
            auto = np.array(setup["autol2"]["0.1"]["per_seed_final"])
            assert m["estimate"] == pytest.approx(np.mean(auto - held[:, j]))
            assert lo == pytest.approx(-TIE)


def _synthetic(auto_shift: float, n: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    lams = [0.0, 1e-3, 1e-2]
    base = np.array([0.60, 0.66, 0.62])
    noise = lambda: rng.normal(0, 0.005, (n, 3))  # noqa: E731
    val, held = base + noise(), base + noise()
    held[:, 2] += 0.08          # the held-out half favours λ = 1e-2 ...
    val[:, 2] -= 0.08           # ... the validation half λ = 1e-3: the pick must follow validation
    auto = held[:, 1] + auto_shift + rng.normal(0, 0.005, n)
    setup = {"setup": {"name": "syn"}, "autol2": {"0.1": {"per_seed_final": auto.tolist()}},
             "fixed": {str(l): {"per_seed_final": held[:, i].tolist(), "per_seed_val_final": val[:, i].tolist()}
                       for i, l in enumerate(lams)}}
    return {"lams": lams, "setups": [setup]}


@pytest.mark.parametrize("shift, verdict", [(0.0, "holds"), (-0.05, "fails"), (0.03, "holds")])
def test_autol2_claim_verdicts_on_synthetic_data(shift, verdict):
    from widelimit.studies.autol2_claims import claims_from_data

    res = {r.claim.name: r for r in claims_from_data(_synthetic(shift), "quick")}
    r = res["syn: AutoL2 λ0=0.1 ties or beats the best fixed λ"]
    assert r.verdict.value == verdict
    assert r.measured.estimate == pytest.approx(shift, abs=0.006)   # against λ = 1e-3 (validation pick)
    assert res["syn: fixed λ differ (best fixed λ beats λ = 0)"].verdict.value == "holds"


def test_committed_quick_report_rebuilds_from_its_data():
    from widelimit.studies.autol2_claims import claims_from_data

    js = json.loads((Path(__file__).resolve().parents[1] / "validation/quick/autol2.json").read_text())
    assert js["claims"] and all(c["measured"]["n"] >= 8 for c in js["claims"])
    assert [r.to_dict() for r in claims_from_data(js["data"], js["size"])] == js["claims"]


def test_sizes_declared():
    from widelimit.studies.autol2 import _SETTINGS

    assert {"smoke", "quick", "medium", "full"} <= set(_SETTINGS)
    assert all(len(_SETTINGS[s]["seeds"]) >= 8 for s in ("quick", "medium", "full"))
    assert all(su["steps"] == 4000 for su in _SETTINGS["full"]["setups"])


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
    from widelimit.studies import autol2

    with pytest.raises(ValueError, match="size"):
        autol2.run("huge", tmp_path)
    with pytest.raises(TypeError, match="out_dir"):
        autol2.run("smoke", 3)
