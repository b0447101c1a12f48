"""The sympy/mpmath derivation of the L2 flow runs and every check in it passes."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("derivation_ntk_l2", ROOT / "derivations" / "ntk_l2.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_derivation_checks_pass_and_report_is_written(tmp_path):
    out = tmp_path / "ntk_l2.md"
    checks = _load().main(out)
    assert len(checks) >= 20
    failed = [k for k, ok in checks.items() if not ok]
    assert not failed, failed
    text = out.read_text()
    for needle in ("Euler", r"\Gamma(a, z_t) - \Gamma(a, z_0)", "ridge", "| check | result |"):
        assert needle in text
    assert "FAILED" not in text and text.count("| ok |") == len(checks)


def test_closed_form_matches_the_implementation():
    """The sympy closed form, evaluated numerically, equals widelimit.dynamics.special."""
    import numpy as np
    import sympy as sp
    from widelimit.dynamics.special import mode_coefficients
    mod = _load()
    P, J = mod.closed_form()
    for L, mu_, t_ in [(2, 0.4, 3.0), (3, 5.0, 0.7), (6, 0.01, 20.0)]:
        subs = {mod.kappa: 2 * (L - 1) * 0.1, mod.beta: L * 0.1, mod.mu: mu_, mod.t: t_}
        c = mode_coefficients(mu_, t_, 0.1, L)
        np.testing.assert_allclose(float(sp.N(P.subs(subs), 30)), c.P, rtol=1e-13)
        np.testing.assert_allclose(float(sp.N(J.subs(subs), 30)), c.J, rtol=1e-12)
