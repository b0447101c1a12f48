"""Runs derivations/scale_invariant.py (sympy) and checks the numerical map against its exact results."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from widelimit.dynamics import norms as N

_PATH = Path(__file__).resolve().parents[1] / "derivations" / "scale_invariant.py"


@pytest.fixture(scope="module")
def deriv():
    spec = importlib.util.spec_from_file_location("scale_invariant_derivation", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def report(deriv, tmp_path_factory):
    out = tmp_path_factory.mktemp("deriv") / "si.md"
    checks = deriv.main(out)
    return checks, out.read_text()


def test_all_symbolic_checks_pass_and_report_is_written(report):
    checks, text = report
    assert len(checks) >= 44
    failed = [k for k, ok in checks.items() if not ok]
    assert not failed, failed
    for needle in ("SGD with L2", "Nesterov", "AdamW", "Adam with coupled L2", "Assumption A1", "| ok |",
                   "Lion and Muon", "published", "per coordinate"):
        assert needle in text
    assert "FAILED" not in text


@pytest.mark.parametrize("name,kw", [("sgd", {}), ("momentum", {"momentum": 0.8}),
                                     ("nesterov", {"momentum": 0.8}), ("adamw", {"b1": 0.9})])
def test_moment_map_fixed_point_equals_exact_lyapunov_solution(deriv, name, kw):
    # eta*lam = 2e-3 is large enough that the exact and leading-order equilibria differ visibly
    eta, lam, G, d = 0.05, 0.04, 3.0, 100
    subs = {deriv.eta: eta, deriv.lam: lam, deriv.G: G, deriv.d: d, deriv.mu: kw.get("momentum", 0.0),
            deriv.b1: kw.get("b1", 0.9)}
    exact = float(deriv.exact_equilibrium(name).subs(subs))
    r = N.solve_norm_map(name, learning_rate=eta, weight_decay=lam, n_steps=15000, grad_norm_sq=G, norm_sq0=1.0, d=d,
                         b2=0.9, eps=0.0, **kw)
    got = r.norm_sq[-1, 0] ** (1 if name == "adamw" else 2)
    assert got == pytest.approx(exact, rel=1e-9)
    lead = N.equilibrium(name, eta, lam, grad_norm_sq=G, d=d, **kw).norm_sq
    lead = float(lead) ** (1 if name == "adamw" else 2)
    assert abs(lead / exact - 1) > 1e-4   # the check above is sharper than the leading-order law
    assert abs(lead / exact - 1) < 0.02


def test_committed_report_is_current(report):
    committed = _PATH.with_suffix(".md")
    assert committed.exists(), "run python derivations/scale_invariant.py to generate the report"
    old, new = committed.read_text(), report[1]
    if old.splitlines()[2] != new.splitlines()[2]:   # other sympy version: LaTeX may be printed differently
        old, new = old[old.index("## Checks"):], new[new.index("## Checks"):]
    assert new == old, "derivations/scale_invariant.md is stale: run python derivations/scale_invariant.py"
