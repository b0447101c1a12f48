"""The claims table, REPORT.md and the README findings block are generated from the stored study results:
the committed ones must be exactly what the generator prints from the committed results."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from widelimit.evidence import Claim, Interval, judge
from widelimit.studies import machine
from widelimit.studies.common import check_provenance, write_report
from widelimit.studies.report import (README_BEGIN, README_END, findings_markdown, readme_with_findings,
                                      report_text)

ROOT = Path(__file__).resolve().parents[1]
VALIDATION = ROOT / "validation"


def test_committed_readme_block_is_generated():
    readme = (ROOT / "README.md").read_text()
    assert readme.count(README_BEGIN) == 1 and readme.count(README_END) == 1
    assert readme_with_findings(readme, findings_markdown(VALIDATION)) == readme, (
        "README findings block is stale: run `python -m widelimit.studies.report`")


def test_committed_report_is_generated():
    assert report_text(VALIDATION) == (VALIDATION / "REPORT.md").read_text(), (
        "validation/REPORT.md is stale: run `python -m widelimit.studies.report`")


def _same(a, b, path="claims") -> None:
    """``a == b`` for JSON-like values, floats to 1e-12 relative (everything else exactly): the BCa
    bootstrap's last bits move between SciPy releases (measured: one interval end differed by one ulp,
    -0.8699669640998219 against ...218, under SciPy 1.17.1), which says nothing about where the claims
    came from; a hand-edited or stale claim differs far more than that."""
    if isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0) or (math.isnan(a) and math.isnan(b)), (path, a, b)
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), (path, sorted(a), sorted(b))
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        assert len(a) == len(b), (path, len(a), len(b))
        for i, (u, v) in enumerate(zip(a, b)):
            _same(u, v, f"{path}[{i}]")
    else:
        assert type(a) is type(b) and a == b, (path, a, b)


def test_committed_quick_claims_rebuild_from_stored_results():
    """The quick study's claims are recomputed from the per-seed curves stored in its JSON."""
    from widelimit.studies.quick import claims_from_data
    js = json.loads((VALIDATION / "quick" / "quick.json").read_text())
    if not js.get("claims"):
        pytest.skip("validation/quick/quick.json predates stored claims (regenerate the quick reports)")
    _same([c.to_dict() for c in claims_from_data(js["data"], js["size"])], js["claims"])


def test_claims_comparison_catches_a_changed_claim():
    """The comparison above is not a no-op: a changed estimate, verdict or name is caught."""
    js = json.loads((VALIDATION / "quick" / "quick.json").read_text())
    if not js.get("claims"):
        pytest.skip("validation/quick/quick.json predates stored claims")
    claims = js["claims"]
    _same(claims, json.loads(json.dumps(claims)))
    for mutate in (lambda c: c.__setitem__("name", c["name"] + " "),
                   lambda c: c["measured"].__setitem__("estimate", c["measured"]["estimate"] * (1 + 1e-9)),
                   lambda c: c.__setitem__("verdict", "holds" if c.get("verdict") != "holds" else "fails")):
        changed = json.loads(json.dumps(claims))
        mutate(changed[0])
        with pytest.raises(AssertionError):
            _same(changed, claims)


def _claims():
    ok = judge(Claim("good one", "t*", 1.0, 0.1, study="tstar", size="quick"), Interval(1.0, 0.98, 1.02, 0.9, 8, "x"))
    bad = judge(Claim("bad one", "t*", 1.0, 0.1, study="tstar", size="quick"), Interval(2.0, 1.9, 2.1, 0.9, 8, "x"))
    return [ok, bad]


def test_report_opens_with_claims_failures_first(tmp_path):
    write_report("tstar", tmp_path / "quick", title="T star", size="quick", sections=[], command="c",
                 machine={}, claims=_claims())
    write_report("width", tmp_path / "quick", title="W", size="quick", sections=[], command="c", machine={})
    text = report_text(tmp_path)
    assert text.index("## Claims") < text.index("## Studies") < text.index("### T star")
    assert text.index("bad one") < text.index("good one")
    assert "1 fails, 0 inconclusive, 1 holds" in text and "without claims" in text and "width (quick)" in text
    block = findings_markdown(tmp_path)
    assert block.index("**fails** — bad one") < block.index("**holds** — good one")
    with pytest.raises(ValueError, match="markers"):
        readme_with_findings("no markers here", block)
    # deterministic: the same stored files give the same text
    assert report_text(tmp_path) == text


def test_reports_into_validation_refuse_a_dirty_tree(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "git_state", lambda root=None: machine.GitState("abc1234", True))
    monkeypatch.delenv("WIDELIMIT_ALLOW_DIRTY", raising=False)
    with pytest.raises(RuntimeError, match="uncommitted"):
        check_provenance(VALIDATION / "quick")
    assert check_provenance(VALIDATION / "quick", allow_dirty=True).dirty
    # elsewhere: recorded, and the report says so
    md = write_report("x", tmp_path, title="X", size="quick", sections=[], command="c", machine={})
    assert "uncommitted code changes" in md.read_text()
    assert json.loads((tmp_path / "x.json").read_text())["git"] == {"commit": "abc1234", "dirty": True}
    monkeypatch.setenv("WIDELIMIT_ALLOW_DIRTY", "1")
    assert check_provenance(VALIDATION / "quick").commit == "abc1234"
