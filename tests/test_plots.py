"""Tests for widelimit.plots: every plot writes a non-empty PNG and validates its inputs."""
import numpy as np
import pytest

from widelimit import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path, min_bytes=2000):
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > min_bytes


def _png_size(path):
    data = path.read_bytes()
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_fit_power_law_is_the_evidence_fit():
    from widelimit import evidence
    assert plots.fit_power_law is evidence.fit_power_law     # one fit, tested in test_evidence.py


def test_plot_panels_with_error_bars(tmp_path):
    x = np.geomspace(1e-3, 1e-1, 5)
    y = 0.3 / x
    err = np.vstack([0.1 * y, 0.2 * y])
    pan = plots.Panel([plots.Series(x, y, "o", "measured", "C0", yerr=err), plots.Series(x, y, "-", None, "C1")],
                      "λ", "t*", "t* vs λ")
    p = plots.plot_panels(tmp_path / "p.png", [pan, plots.Panel([plots.Series(x, y)], logy=False)], ncols=2)
    assert _is_png(p, 5000)
    w, h = _png_size(p)
    assert w > 1.8 * h                                       # two panels side by side
    with pytest.raises(ValueError, match="png"):
        plots.plot_panels(tmp_path / "p.pdf", [pan])
    with pytest.raises(ValueError, match="empty"):
        plots.plot_panels(tmp_path / "q.png", [])
    with pytest.raises(TypeError, match="Panel"):
        plots.plot_panels(tmp_path / "q.png", ["not a panel"])


def test_all_plots_write_pngs(tmp_path):
    t = np.geomspace(1e-2, 1e3, 80)
    lams = [0.1, 0.03, 0.01]
    test = np.array([1 / (1 + t) + lam * t * 0.1 for lam in lams])
    p = plots.plot_l2_trajectories(t, lams, test, tmp_path / "traj.png", train_loss=0.5 * test,
                                   t_star=[3.0, np.nan, 30.0], title="x")
    assert p == tmp_path / "traj.png" and _is_png(p)
    w, h = _png_size(p)
    assert 500 <= w <= 1000 and 300 <= h <= 700  # small: about 6x4 in at 120 dpi
    # per-lambda time grids
    tt = np.stack([t / lam for lam in lams])
    assert _is_png(plots.plot_l2_trajectories(tt, lams, test, tmp_path / "traj2.png", logy=False))
    assert _is_png(plots.plot_tstar_vs_lambda(lams, [2.8, 9.3, 28.0], tmp_path / "ts.png",
                                              t_star_theory=[2.9, 9.5, 29.0]))
    assert _is_png(plots.plot_lambda_opt_vs_budget([100, 1000, 10000], [1e-2, 1e-3, 1e-4], tmp_path / "lo.png",
                                                   lam_opt_meas=[1.2e-2, 9e-4, 1.1e-4]))
    s = np.arange(1, 300)
    assert _is_png(plots.plot_norm_trajectories(s, {"conv1": np.sqrt(s), "conv2": s ** 0.3},
                                                tmp_path / "sub" / "n.png",
                                                predicted={"conv1": 1.02 * np.sqrt(s)},
                                                equilibrium={"conv1": 17.0}, logx=True))
    assert _is_png(plots.plot_theory_vs_measurement([1, 2, 3], [1.1, 1.9, 3.3], tmp_path / "tm.png",
                                                    labels=["a", "b", "c"]))


def test_plot_input_validation(tmp_path):
    t = np.geomspace(1, 10, 5)
    with pytest.raises(ValueError, match="test_loss"):
        plots.plot_l2_trajectories(t, [0.1, 0.2], np.ones((3, 5)), tmp_path / "a.png")
    with pytest.raises(ValueError, match="t must have shape"):
        plots.plot_l2_trajectories(np.ones(4), [0.1], np.ones((1, 5)), tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"\.png"):
        plots.plot_tstar_vs_lambda([1, 2], [1, 2], tmp_path / "a.pdf")
    with pytest.raises(ValueError, match="lam_opt_meas"):
        plots.plot_lambda_opt_vs_budget([1, 2], [1, 2], tmp_path / "a.png", lam_opt_meas=[1])
    with pytest.raises(ValueError, match="measured"):
        plots.plot_norm_trajectories([1, 2], {}, tmp_path / "a.png")
    with pytest.raises(ValueError, match="same shape"):
        plots.plot_theory_vs_measurement([1, 2], [1], tmp_path / "a.png")
    assert not list(tmp_path.iterdir())  # nothing written on bad input


def test_no_pyplot_state(tmp_path):
    """Plotting never imports pyplot (no GUI backend, no global figure registry, nothing to show)."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = str(Path(plots.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = ("import sys, widelimit.plots as p; "
            f"p.plot_theory_vs_measurement([1, 2], [1, 2], {str(tmp_path / 'x.png')!r}); "
            "print('matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    assert (tmp_path / "x.png").exists()
