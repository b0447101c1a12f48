"""Smoke run of the ``biases`` study (widelimit.studies.biases): finite MLPs with biases trained by GD with
L2 against the Volterra prediction; the tolerances come from the study's own bootstrap intervals."""
import json

import numpy as np
import pytest

from widelimit.evidence import Verdict
from widelimit.studies import biases


def test_biases_smoke_measured_matches_theory(tmp_path):
    md = biases.run("smoke", tmp_path, progress=False)
    data = json.loads(md.with_suffix(".json").read_text())
    claims = data["claims"]
    # A: the learned change of a ReLU net with biases is predicted to a few % and the error falls with width
    err = np.asarray(data["data"]["width"]["relu_b0.5"]["errors"])
    assert err.shape == (4, 2)
    assert err.mean(axis=0)[-1] < 0.05 and err.mean(axis=0)[-1] < err.mean(axis=0)[0]
    # B: t* of the seed-mean curve, measured vs predicted, within the claim band widened by the interval
    tstar = [c for c in claims if c["quantity"].startswith("t* of the seed-mean")]
    paired = [c for c in claims if "measured/predicted" in c["name"]]
    assert len(tstar) == 2 and len(paired) == 2, [c["name"] for c in claims]
    for c in tstar + paired:
        pred, tol = c["predicted"], c["tolerance"]
        m = c["measured"]
        half = (m["high"] - m["low"]) / 2
        assert abs(m["estimate"] - pred) <= tol * pred + half, c
        assert c["verdict"] != Verdict.FAILS.value


def test_biases_bad_size():
    with pytest.raises(ValueError, match="size"):
        biases.run("huge", "/tmp/never")
