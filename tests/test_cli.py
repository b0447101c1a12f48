"""Tests for the ``widelimit`` command line (run in-process through ``main([...])``)."""
import csv
import json
import math
import sys
import types

import numpy as np
import pytest

from widelimit import cli

SUBCOMMANDS = [[], ["solve"], ["table"], ["table", "ntk"], ["table", "norms"], ["validate"], ["derive"]]


@pytest.mark.parametrize("sub", SUBCOMMANDS, ids=lambda s: " ".join(s) or "top")
def test_help_every_subcommand(sub, capsys):
    assert cli.main(sub + ["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: widelimit" + "".join(" " + s for s in sub))
    assert "--help" in out


def test_help_mentions_options_and_studies(capsys):
    cli.main(["solve", "--help"])
    out = capsys.readouterr().out
    for opt in ("--depth", "--W-std", "--parameterization", "--data", "--kernels", "--lams", "--lr", "--t-max"):
        assert opt in out
    cli.main(["validate", "--help"])
    out = capsys.readouterr().out
    from widelimit.studies import STUDIES
    for name in STUDIES:
        assert name in out
    assert "quick" in STUDIES  # the main job's study


BAD = [
    (["solve", "--depth", "0"], "--depth"),
    (["solve", "--depth", "two"], "--depth"),
    (["solve", "--lams", "-0.1"], "--lams"),
    (["solve", "--lams", "nan"], "--lams"),
    (["solve", "--activation", "tanh"], "--activation"),
    (["solve", "--data", "cifar100"], "--data"),
    (["solve", "--classes", "3"], "--classes"),
    (["solve", "--n-train", "0"], "--n-train"),
    (["solve", "--W-std", "0"], "--W-std"),
    (["solve", "--steps-max", "100"], "--lr"),
    (["solve", "--t-min", "10", "--t-max", "1"], "--t-min"),
    (["solve", "--b-std", "0.1"], "homogeneous"),
    (["solve", "--activation", "erf"], "homogeneous"),
    (["solve", "--data", "teacher", "--classes", "0,1"], "--classes"),
    (["solve", "--data", "digits", "--n-train", "2000"], "n_train"),
    (["solve", "--kernels", "/nonexistent/k.npz"], "--kernels"),
    (["solve", "--targets", "pm1"], "pm1"),
    (["table", "ntk", "--budgets", "100"], "--lr"),
    (["table", "ntk", "--format", "html"], "--format"),
    (["table", "ntk", "--out", "x.xlsx"], "--out"),
    (["table", "norms", "--momentum", "1.0"], "--momentum"),
    (["table", "norms", "--out", "n.html"], "--out"),
    (["table", "norms", "--optimizers", "adamw"], "--group-size"),
    (["table", "norms", "--optimizers", "rmsprop"], "--optimizers"),
    (["table", "norms", "--lrs", "0"], "--lrs"),
    (["table", "norms", "--betas", "0.9"], "--betas"),
    (["table", "norms", "--lrs", "10", "--lams", "0.5"], "--lrs"),
    (["table"], "TABLE"),
    ([], "SUBCOMMAND"),
    (["validate", "nosuchstudy"], "STUDY"),
    (["validate", "quick", "--size", "huge"], "--size"),
    (["derive", "nosuch"], "NAME"),
]


@pytest.mark.parametrize("argv,needle", BAD, ids=lambda a: " ".join(a) if isinstance(a, list) else a)
def test_bad_arguments_exit_2_naming_the_option(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "error" in err and needle in err
    assert not any(tmp_path.iterdir())  # nothing written before the arguments were checked


# ------------------------------------------------------------------------------------------------
# end to end on a tiny problem, numbers checked against direct library calls
# ------------------------------------------------------------------------------------------------
DATA = dict(n_train=60, n_test=60, seed=3, classes=[0, 1, 2])
DATA_ARGS = ["--data", "digits", "--n-train", "60", "--n-test", "60", "--seed", "3", "--classes", "0,1,2"]


@pytest.fixture(scope="module")
def problem():
    """The same tiny problem built directly with the library (independent of the CLI code)."""
    from widelimit.arch import MLP
    from widelimit.data import load_dataset
    from widelimit.kernels import analytic_kernels
    ds = load_dataset("digits", **DATA)
    spec = MLP(depth=3)
    k_tt = analytic_kernels(spec, ds.x_train).ntk
    k_xt = analytic_kernels(spec, ds.x_test, ds.x_train).ntk
    return types.SimpleNamespace(ds=ds, k_tt=k_tt, k_xt=k_xt, L=3)


def _direct(problem, lam, t):
    """Direct closed form: train/test MSE 1/(2NK) sum (f - y)^2 and test accuracy at times t."""
    from widelimit.dynamics.ntk_l2 import L2Flow
    fl = L2Flow(problem.k_tt, problem.ds.y_train, lam, problem.L, k_test_train=problem.k_xt)
    f_tr, f_te = fl.train(np.asarray(t)), fl.test(np.asarray(t))
    y_tr, y_te = problem.ds.y_train, problem.ds.y_test
    tr = 0.5 * np.mean((f_tr - y_tr) ** 2, axis=(-2, -1))
    te = 0.5 * np.mean((f_te - y_te) ** 2, axis=(-2, -1))
    acc = np.mean(np.argmax(f_te, -1) == np.argmax(y_te, -1), axis=-1)
    return tr, te, acc


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [{k: (v if v in ("True", "False") else float(v)) for k, v in r.items()} for r in rows]


def test_solve_end_to_end(problem, tmp_path, capsys):
    out = tmp_path / "solve"
    rc = cli.main(["solve"] + DATA_ARGS + ["--f0", "zero", "--depth", "3", "--lams", "0.1", "0.01", "--lr", "0.5",
                                           "--t-min", "0.01", "--t-max", "1000", "--n-times", "40",
                                           "--out", str(out), "--no-progress"])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "t*" in stdout and "c = λt*" in stdout
    for name in ("trajectories.csv", "trajectories.json", "trajectories.png", "summary.md", "summary.json"):
        assert (out / name).stat().st_size > 100
    rows = _read_csv(out / "trajectories.csv")
    assert len(rows) == 2 * 40
    assert list(rows[0]) == ["λ", "t", "steps", "train loss", "test loss", "train acc", "test acc"]
    t = np.geomspace(0.01, 1000, 40)
    for lam in (0.1, 0.01):
        sel = [r for r in rows if r["λ"] == lam]
        np.testing.assert_allclose([r["t"] for r in sel], t, rtol=1e-12)
        np.testing.assert_allclose([r["steps"] for r in sel], t / 0.5, rtol=1e-12)
        tr, te, acc = _direct(problem, lam, t)
        np.testing.assert_allclose([r["train loss"] for r in sel], tr, rtol=1e-9, atol=1e-14)
        np.testing.assert_allclose([r["test loss"] for r in sel], te, rtol=1e-9, atol=1e-14)
        np.testing.assert_array_equal([r["test acc"] for r in sel], acc)
    # JSON carries the same numbers
    js = json.loads((out / "trajectories.json").read_text())
    assert js["rows"][5]["test loss"] == rows[5]["test loss"]
    # summary: t* is the minimiser of the directly computed test loss, c = lam t*
    summ = json.loads((out / "summary.json").read_text())["rows"]
    assert [r["λ"] for r in summ] == [0.1, 0.01]
    for r in summ:
        lam, ts = r["λ"], r["t*"]
        assert r["c = λt*"] == pytest.approx(lam * ts, rel=1e-12)
        assert r["steps*"] == pytest.approx(ts / 0.5, rel=1e-12)
        _, te, _ = _direct(problem, lam, ts * np.array([0.9, 0.99, 1.0, 1.01, 1.1]))
        assert te[2] <= te.min() + 1e-15 and te[2] == pytest.approx(r["test loss at t*"], rel=1e-9)
        assert 0.05 < lam * ts < 2.0  # t* is of order 1/lam (THEORY.md: lam t* ~ 0.28 on digits)
        assert r["kernel decay"] == pytest.approx(1 / (2 * 2 * lam)) and r["output decay"] == pytest.approx(1 / (3 * lam))


def test_solve_from_saved_kernels_matches_dataset_path(problem, tmp_path):
    kfile = tmp_path / "k.npz"
    np.savez(kfile, k_train_train=problem.k_tt, k_test_train=problem.k_xt, y_train=problem.ds.y_train,
             y_test=problem.ds.y_test, L=3)
    args = ["--lams", "0.03", "--t-min", "0.1", "--t-max", "100", "--n-times", "7", "--no-plot", "--no-progress"]
    assert cli.main(["solve", "--kernels", str(kfile), "--out", str(tmp_path / "a")] + args) == 0
    assert cli.main(["solve"] + DATA_ARGS + ["--f0", "zero", "--out", str(tmp_path / "b")] + args) == 0
    a, b = _read_csv(tmp_path / "a" / "trajectories.csv"), _read_csv(tmp_path / "b" / "trajectories.csv")
    assert len(a) == 7 and not (tmp_path / "a" / "trajectories.png").exists()
    for ra, rb in zip(a, b):
        for k in ra:
            assert ra[k] == pytest.approx(rb[k], rel=1e-12, abs=1e-15)
    # the degree must come from somewhere
    np.savez(kfile, k_train_train=problem.k_tt, k_test_train=problem.k_xt, y_train=problem.ds.y_train,
             y_test=problem.ds.y_test)
    assert cli.main(["solve", "--kernels", str(kfile), "--out", str(tmp_path / "c")] + args) == 2
    assert cli.main(["solve", "--kernels", str(kfile), "--L", "3", "--out", str(tmp_path / "c")] + args) == 0
    assert cli.main(["solve", "--kernels", str(kfile), "--data", "digits", "--out", str(tmp_path / "d")] + args) == 2
    # a file with the NNGP parts: --f0 auto picks the expectation over f0, as the dataset path does
    from widelimit.arch import MLP
    from widelimit.kernels import analytic_kernels
    ds = problem.ds
    nn_tt = analytic_kernels(MLP(depth=3), ds.x_train).nngp
    nn_xt = analytic_kernels(MLP(depth=3), ds.x_test, ds.x_train).nngp
    nn_diag = np.diag(analytic_kernels(MLP(depth=3), ds.x_test).nngp)
    np.savez(kfile, k_train_train=problem.k_tt, k_test_train=problem.k_xt, y_train=ds.y_train, y_test=ds.y_test,
             nngp_train_train=nn_tt, nngp_test_train=nn_xt, nngp_test_diag=nn_diag, L=3)
    assert cli.main(["solve", "--kernels", str(kfile), "--out", str(tmp_path / "f")] + args) == 0
    assert cli.main(["solve"] + DATA_ARGS + ["--out", str(tmp_path / "g")] + args) == 0
    f, g = _read_csv(tmp_path / "f" / "trajectories.csv"), _read_csv(tmp_path / "g" / "trajectories.csv")
    assert "expected test loss" in f[0]
    for rf, rg in zip(f, g):
        for k in rf:
            assert rf[k] == pytest.approx(rg[k], rel=1e-12, abs=1e-15)
    bad = problem.k_tt.copy()
    bad[0, 1] += 1.0  # not symmetric: the solver refuses it, the CLI reports it (exit 1, no traceback)
    np.savez(kfile, k_train_train=bad, k_test_train=problem.k_xt, y_train=problem.ds.y_train,
             y_test=problem.ds.y_test, L=3)
    assert cli.main(["solve", "--kernels", str(kfile), "--out", str(tmp_path / "e")] + args) == 1


def test_table_ntk_end_to_end(problem, tmp_path, capsys):
    from widelimit.dynamics.ntk_l2 import L2Flow
    out = tmp_path / "ntk.json"
    rc = cli.main(["table", "ntk"] + DATA_ARGS + ["--f0", "zero", "--lams", "0.1", "0.01", "--budgets", "100", "1000",
                                                  "--lr", "0.1", "--out", str(out), "--no-progress"])
    assert rc == 0
    tabs = json.loads(out.read_text())["tables"]
    per_lam, per_budget = tabs["tstar"]["rows"], tabs["lambda_opt"]["rows"]
    assert [r["λ"] for r in per_lam] == [0.1, 0.01]
    for r in per_lam:
        lam, ts = r["λ"], r["t*"]
        _, te, _ = _direct(problem, lam, ts * np.array([0.98, 1.0, 1.02]))
        assert te[1] <= te.min() + 1e-15
        assert r["c = λt*"] == pytest.approx(lam * ts, rel=1e-12)
        assert r["steps*"] == pytest.approx(ts / 0.1, rel=1e-12)
        assert r["kernel decay"] == pytest.approx(1 / (2 * 2 * lam) / 0.1, rel=1e-12)   # in steps
        assert r["output decay"] == pytest.approx(1 / (3 * lam) / 0.1, rel=1e-12)
    c0 = per_lam[0]["c = λt*"]  # the largest lambda
    fl = L2Flow(problem.k_tt, problem.ds.y_train, 0.1, 3, k_test_train=problem.k_xt)
    for r, T in zip(per_budget, (100, 1000)):
        assert r["T"] == T and r["ηT"] == pytest.approx(0.1 * T)
        assert r["λ_opt = c/(ηT)"] == pytest.approx(c0 / (0.1 * T), rel=1e-12)
        _, te, _ = _direct(problem, r["λ_opt = c/(ηT)"], [0.1 * T])
        assert r["test loss (rule)"] == pytest.approx(te[0], rel=1e-9)
        _, te, _ = _direct(problem, r["λ argmin"], [0.1 * T])
        assert r["test loss (argmin)"] == pytest.approx(te[0], rel=1e-9)
        assert r["test loss (argmin)"] <= r["test loss (rule)"] + 1e-15
    del fl
    # CSV with --out writes one file per table; Markdown goes to stdout by default
    rc = cli.main(["table", "ntk"] + DATA_ARGS + ["--f0", "zero", "--lams", "0.1", "--budgets", "100", "--lr", "0.1",
                                                  "--out", str(tmp_path / "t.csv"), "--no-progress"])
    assert rc == 0
    assert _read_csv(tmp_path / "t_tstar.csv")[0]["t*"] == pytest.approx(per_lam[0]["t*"], rel=1e-12)
    assert len(_read_csv(tmp_path / "t_lambda_opt.csv")) == 1
    capsys.readouterr()
    assert cli.main(["table", "ntk"] + DATA_ARGS + ["--lams", "0.1", "--no-progress", "--format", "latex"]) == 0
    tex = capsys.readouterr().out
    assert r"\toprule" in tex and r"\ensuremath{\lambda}" in tex


def test_table_norms_against_closed_forms(tmp_path):
    out = tmp_path / "norms.csv"
    rc = cli.main(["table", "norms", "--lrs", "0.1", "0.01", "--lams", "5e-4", "5e-3", "--momentum", "0.8",
                   "--betas", "0.9", "0.99", "--group-size", "1000", "--steps-per-epoch", "50",
                   "--optimizers", "sgd", "momentum", "adamw", "adam-l2", "--out", str(out)])
    assert rc == 0
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 * 2 * 2
    assert [r["optimizer"] for r in rows[::4]] == ["sgd", "momentum", "adamw", "adam-l2"]
    for r in rows:
        eta, lam = float(r["η"]), float(r["λ"])
        ang, relax = float(r["angular update"]), float(r["relaxation steps"])
        assert float(r["ηλ"]) == pytest.approx(eta * lam)
        if r["optimizer"] == "sgd":  # THEORY.md section 4
            assert ang == pytest.approx(math.sqrt(2 * eta * lam), rel=1e-12)
            assert relax == pytest.approx(1 / (4 * eta * lam), rel=1e-12)  # u = ||w||^4 relaxes at 4 eta lam
            assert float(r["effective LR"]) == pytest.approx(math.sqrt(2 * eta * lam / 1.0), rel=1e-12)
        elif r["optimizer"] == "momentum":
            assert ang == pytest.approx(math.sqrt(2 * eta * lam / 1.8), rel=1e-12)
            assert float(r["μ"]) == 0.8
        elif r["optimizer"] == "adamw":
            assert ang == pytest.approx(math.sqrt(2 * eta * lam * 0.1 / 1.9), rel=1e-12)
            assert relax == pytest.approx(1 / (2 * eta * lam), rel=1e-12)  # EMA time scale 1/(eta lam), halved for x
            assert float(r["β1"]) == 0.9
        assert float(r["relaxation epochs"]) == pytest.approx(relax / 50, rel=1e-12)
        assert float(r["relaxation time"]) == pytest.approx(eta * relax, rel=1e-12)
    # default: SGD family only without --group-size, with a note saying why
    md = tmp_path / "n.md"
    assert cli.main(["table", "norms", "--out", str(md)]) == 0
    text = md.read_text(encoding="utf-8")
    assert "| sgd" in text and "| nesterov" in text and "| adamw" not in text and "--group-size" in text


# ------------------------------------------------------------------------------------------------
# validate and derive dispatch
# ------------------------------------------------------------------------------------------------
def test_validate_dispatches_to_registry(tmp_path, monkeypatch, capsys):
    import widelimit.studies as studies
    calls = []

    def fake_run(size, out_dir, progress=True, resume=True):
        calls.append((size, out_dir, progress, resume))
        p = out_dir / "fake.md"
        p.write_text("ok")
        return p

    monkeypatch.setitem(studies.STUDIES, "fake", ("unused", "a fake study"))
    monkeypatch.setattr(studies, "get_study", lambda name: fake_run)
    rc = cli.main(["validate", "fake", "--size", "full", "--out", str(tmp_path / "v"), "--resume", "--no-progress"])
    assert rc == 0
    assert calls == [("full", tmp_path / "v", False, True)]
    printed = capsys.readouterr().out
    assert str(tmp_path / "v" / "fake.md") in printed
    assert printed.startswith("ok\n")                     # the report itself is printed
    assert cli.main(["validate", "fake", "--out", str(tmp_path / "v"), "--quiet", "--no-progress"]) == 0
    assert capsys.readouterr().out == f"report: {tmp_path / 'v' / 'fake.md'}\n"
    monkeypatch.chdir(tmp_path)
    assert cli.main(["validate", "fake"]) == 0
    assert calls[-1] == ("quick", cli.Path("validation") / "quick", True, False)


def test_validate_without_registry_fails_clearly(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "widelimit.studies", None)  # makes the import fail
    assert cli.main(["validate", "quick"]) == 1
    assert "studies" in capsys.readouterr().err


def test_derive_runs_scripts_by_path(tmp_path, monkeypatch, capsys):
    root = tmp_path / "derivations"
    root.mkdir()
    for name, ok in (("ntk_l2", True), ("scale_invariant", False)):
        (root / f"{name}.py").write_text(
            "from pathlib import Path\n"
            f"def main(out_path):\n    Path(out_path).write_text('# {name}\\n')\n    return {{'a': True, 'b': {ok}}}\n")
    monkeypatch.setattr(cli, "_derivations_dir", lambda: root)
    out = tmp_path / "out"
    assert cli.main(["derive", "ntk_l2", "--out", str(out), "--no-progress"]) == 0
    assert (out / "ntk_l2.md").read_text() == "# ntk_l2\n"
    assert "2/2 checks passed" in capsys.readouterr().out
    assert cli.main(["derive", "--out", str(out), "--no-progress"]) == 1  # a failed check -> exit 1
    assert "scale_invariant: b" in capsys.readouterr().err
    (root / "ntk_l2.py").unlink()
    assert cli.main(["derive", "ntk_l2", "--out", str(out)]) == 1
    assert "not found" in capsys.readouterr().err


def test_module_entry_point():
    import os
    import subprocess
    from pathlib import Path
    root = str(Path(cli.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "widelimit.cli", "table", "norms", "--lrs", "0.1", "--lams", "0.001",
                        "--optimizers", "sgd", "--format", "csv"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(r.stdout.splitlines()))
    assert float(rows[0]["angular update"]) == pytest.approx(math.sqrt(2 * 0.1 * 0.001), rel=1e-12)
    r = subprocess.run([sys.executable, "-m", "widelimit.cli", "solve", "--depth", "0"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 2 and "--depth" in r.stderr


def test_solve_expected_over_nngp_init(problem, tmp_path):
    """Default --f0 (auto = nngp with a dataset): expected test loss over f0 ~ NNGP, checked against the
    ensemble covariance solver."""
    from widelimit.arch import MLP
    from widelimit.dynamics.ensemble import L2FlowEnsemble
    rc = cli.main(["solve"] + DATA_ARGS + ["--lams", "0.05", "--t-min", "0.1", "--t-max", "300",
                                           "--n-times", "9", "--no-progress", "--out", str(tmp_path)])
    assert rc == 0
    rows = _read_csv(tmp_path / "trajectories.csv")
    ds = problem.ds
    ens = L2FlowEnsemble.from_spec(MLP(depth=3), ds.x_train, ds.y_train, 0.05, x_test=ds.x_test)

    def expected(t):
        t = np.asarray(t, dtype=float)
        mean, var = ens.mean(t).test, ens.cov(t, diagonal=True).test
        return 0.5 * np.mean((mean - ds.y_test) ** 2, axis=(-2, -1)) + 0.5 * np.mean(var, axis=-1)

    t = np.geomspace(0.1, 300, 9)
    np.testing.assert_allclose([r["expected test loss"] for r in rows], expected(t), rtol=1e-8)
    assert all(r["expected test loss"] > r["test loss"] for r in rows[:-1])  # the f0 variance adds loss
    summ = json.loads((tmp_path / "summary.json").read_text())["rows"][0]
    ts = summ["t*"]
    around = expected(ts * np.array([0.9, 1.0, 1.1]))
    assert around[1] <= around.min() * (1 + 1e-9)
    assert summ["test loss at t*"] == pytest.approx(around[1], rel=1e-6)
    # saved kernels need the NNGP parts for --f0 nngp
    kfile = tmp_path / "k.npz"
    np.savez(kfile, k_train_train=problem.k_tt, k_test_train=problem.k_xt, y_train=ds.y_train, y_test=ds.y_test, L=3)
    assert cli.main(["table", "ntk", "--kernels", str(kfile), "--f0", "nngp", "--lams", "0.1", "--no-progress"]) == 2


def test_solve_regression_has_no_accuracy(tmp_path):
    rc = cli.main(["solve", "--data", "teacher", "--n-train", "30", "--n-test", "20", "--depth", "1",
                   "--lams", "0.1", "--n-times", "5", "--no-plot", "--no-progress", "--out", str(tmp_path)])
    assert rc == 0
    rows = _read_csv(tmp_path / "trajectories.csv")
    assert list(rows[0]) == ["λ", "t", "train loss", "test loss", "expected test loss"]
    from widelimit.tables import Table
    summ = Table.from_json((tmp_path / "summary.json").read_text()).records()[0]
    assert math.isinf(summ["kernel decay"])  # L = 1: the kernel never decays (ridge limit)
    assert summ["output decay"] == pytest.approx(1 / 0.1)


@pytest.mark.slow
@pytest.mark.nt
def test_solve_cnn_with_neural_tangents(tmp_path):
    from widelimit.arch import CNN
    from widelimit.data import load_dataset
    from widelimit.dynamics.ntk_l2 import L2Flow
    from widelimit.kernels import analytic_kernels
    rc = cli.main(["solve", "--arch", "cnn", "--depth", "1", "--channels", "8", "--n-train", "20", "--n-test",
                   "20", "--classes", "0,1", "--targets", "pm1", "--lams", "0.1", "--t-min", "0.1", "--t-max",
                   "100", "--n-times", "6", "--no-plot", "--no-progress", "--out", str(tmp_path)])
    assert rc == 0
    ds = load_dataset("digits", n_train=20, n_test=20, classes=[0, 1], targets="pm1", layout="image")
    spec = CNN(depth=1, channels=8, ndim=2)
    fl = L2Flow(analytic_kernels(spec, ds.x_train).ntk, ds.y_train, 0.1, 2,
                k_test_train=analytic_kernels(spec, ds.x_test, ds.x_train).ntk)
    t = np.geomspace(0.1, 100, 6)
    te = 0.5 * np.mean((fl.test(t) - ds.y_test) ** 2, axis=(-2, -1))
    rows = _read_csv(tmp_path / "trajectories.csv")
    np.testing.assert_allclose([r["test loss"] for r in rows], te, rtol=1e-9)


@pytest.mark.slow
def test_derive_real_scripts(tmp_path, capsys):
    root = cli._derivations_dir()
    names = [n for n in cli.DERIVATIONS if (root / f"{n}.py").is_file()]
    if not names:
        pytest.skip("no derivation scripts in this checkout")
    assert cli.main(["derive", *names, "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    for n in names:
        assert (tmp_path / f"{n}.md").stat().st_size > 500
        assert f"{n}: wrote" in out and "checks passed" in out
