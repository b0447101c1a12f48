"""Tests for the ``widelimit`` command line (run in-process through ``main([...])``)."""
import csv
import json
import math
import sys
import types

import numpy as np
import pytest

from widelimit import cli
from widelimit.cli import derive as cli_derive
from widelimit.tables import Table

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
    for opt in ("--depth", "--W-std", "--parameterization", "--data", "--kernels", "--weight-decay",
                "--learning-rate", "--t-max", "--f0", "--force"):
        assert opt in out
    assert "--lams" not in out and "--lr " not in out
    cli.main(["validate", "--help"])
    out = capsys.readouterr().out
    from widelimit.studies import STUDIES
    for name in STUDIES:
        assert name in out
    assert "quick" in STUDIES  # the main job's study


BAD = [
    (["solve", "--depth", "0"], "--depth"),
    (["solve", "--depth", "two"], "--depth"),
    (["solve", "--weight-decay", "-0.1"], "--weight-decay"),
    (["solve", "--weight-decay", "nan"], "--weight-decay"),
    (["solve", "--lams", "0.1"], "--lams"),                      # the old name is gone
    (["solve", "--activation", "tanh"], "--activation"),
    (["solve", "--data", "cifar100"], "--data"),
    (["solve", "--classes", "3"], "--classes"),
    (["solve", "--n-train", "0"], "--n-train"),
    (["solve", "--W-std", "0"], "--W-std"),
    (["solve", "--f0", "auto"], "--f0"),
    (["solve", "--steps-max", "100"], "--learning-rate"),
    (["solve", "--t-min", "10", "--t-max", "1"], "--t-min"),
    (["solve", "--b-std", "0.1"], "homogeneous"),
    (["solve", "--activation", "erf"], "homogeneous"),
    (["solve", "--data", "teacher", "--classes", "0,1"], "--classes"),
    (["solve", "--data", "digits", "--n-train", "2000"], "n_train"),
    (["solve", "--kernels", "/nonexistent/k.npz"], "--kernels"),
    (["solve", "--targets", "pm1"], "pm1"),
    (["table", "ntk", "--budgets", "100"], "--learning-rate"),
    (["table", "ntk", "--lr", "0.1"], "--lr"),
    (["table", "ntk", "--format", "html"], "--format"),
    (["table", "ntk", "--out", "x.xlsx"], "--out"),
    (["table", "ntk", "--search-weight-decay", "0.1"], "--budgets"),
    (["table", "ntk", "--gd"], "--learning-rate"),
    (["solve", "--gd"], "--learning-rate"),
    (["table", "norms", "--momentum", "1.0"], "--momentum"),
    (["table", "norms", "--out", "n.html"], "--out"),
    (["table", "norms", "--optimizers", "adamw"], "--group-size"),
    (["table", "norms", "--optimizers", "rmsprop"], "--optimizers"),
    (["table", "norms", "--optimizers", "adam-l2"], "--optimizers"),   # one name per optimiser: 'adam'
    (["table", "norms", "--optimizers", "muon"], "--shape"),
    (["table", "norms", "--optimizers", "lion"], "--group-size"),
    (["table", "norms", "--learning-rate", "0"], "--learning-rate"),
    (["table", "norms", "--b1", "1.5"], "--b1"),
    (["table", "norms", "--learning-rate", "10", "--weight-decay", "0.5"], "--learning-rate"),
    (["table"], "TABLE"),
    ([], "SUBCOMMAND"),
    (["validate", "nosuchstudy"], "STUDY"),
    (["validate", "quick", "--size", "huge"], "--size"),
    (["validate", "quick", "--resume", "--fresh"], "--fresh"),
    (["derive", "nosuch"], "NAME"),
    (["solve", "--solver", "lu"], "--solver"),
    (["table", "ntk", "--kernel-dtype", "float16"], "--kernel-dtype"),
    (["solve", "--kernel-dir", "kd"], "--kernel-dir"),                    # the eigh path has no memmaps
    (["table", "ntk", "--solver", "krylov", "--seeds", "4"], "--seeds"),   # the spread is dense-only
    (["solve", "--data", "mnist1d", "--n-train", "5000", "--classes", "0,1"], "--classes"),
]


@pytest.mark.parametrize("argv,needle", BAD, ids=lambda a: " ".join(a) if isinstance(a, list) else a)
def test_bad_arguments_exit_2_naming_the_option(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "error" in err and needle in err
    assert len(err.strip().splitlines()) == 1              # one line, no usage block, no traceback
    assert not any(tmp_path.iterdir())  # nothing written before the arguments were checked


@pytest.fixture
def no_compute(monkeypatch):
    """Make any kernel computation fail loudly: output checks must come first."""
    import widelimit.cli.problem as problem

    def boom(args):
        raise AssertionError("computed before the output paths were checked")
    for mod in ("solve", "table_ntk"):
        monkeypatch.setattr(f"widelimit.cli.{mod}.load_problem", boom)
    monkeypatch.setattr(problem, "load_problem", boom)


OUT_ERRORS = [
    (["solve", "--out", "/proc/widelimit-test/x"], "cannot write"),       # not writable, even for root
    (["solve", "--out", "FILE"], "not a directory"),                       # an existing file where a dir is needed
    (["solve", "--out", "FILE/sub"], "is a file"),
    (["solve", "--out", "DONE"], "--force"),                               # earlier results not overwritten
    (["table", "ntk", "--out", "FILE", "--format", "md"], "--force"),
    (["table", "ntk", "--out", "DIR", "--format", "md"], "is a directory"),
    (["table", "ntk", "--out", "/proc/widelimit-test/t.md"], "cannot write"),
    (["table", "ntk", "--out", "DONE/t.csv", "--learning-rate", "0.1", "--budgets", "10"], "--force"),
    (["table", "norms", "--out", "FILE", "--format", "csv"], "--force"),
    (["derive", "--out", "DONE"], "--force"),
    (["derive", "--out", "FILE"], "not a directory"),
    (["validate", "quick", "--out", "FILE"], "not a directory"),
    (["validate", "quick", "--out", "/proc/widelimit-test"], "cannot write"),
]


@pytest.mark.parametrize("argv,needle", OUT_ERRORS, ids=lambda a: " ".join(a) if isinstance(a, list) else a)
def test_output_paths_checked_before_computing(argv, needle, tmp_path, monkeypatch, capsys, no_compute):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("keep me")
    (tmp_path / "DIR").mkdir()
    done = tmp_path / "DONE"
    done.mkdir()
    for name in ("trajectories.csv", "ntk_l2.md", "t_lambda_opt.csv"):
        (done / name).write_text("keep me")
    import widelimit.studies as studies
    monkeypatch.setattr(studies, "get_study", lambda name: pytest.fail("study started"))
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    assert cli.main(argv + ["--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--out" in err and needle in err, err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before      # nothing created or removed
    assert (tmp_path / "FILE").read_text() == "keep me" and (done / "trajectories.csv").read_text() == "keep me"


@pytest.mark.parametrize("content", [b"", b"not an npz file at all", b"PK\x03\x04truncated zip"],
                         ids=["empty", "text", "truncated"])
def test_unreadable_kernels_file_is_one_line_usage_error(content, tmp_path, capsys):
    k = tmp_path / "k.npz"
    k.write_bytes(content)
    for argv in (["solve", "--out", str(tmp_path / "o")], ["table", "ntk"]):
        assert cli.main(argv + ["--kernels", str(k), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "--kernels" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


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
    fl = L2Flow(problem.k_tt, problem.ds.y_train, lam, problem.L, ntk_test_train=problem.k_xt)
    f_tr, f_te = fl.train(np.asarray(t)), fl.test(np.asarray(t))
    y_tr, y_te = problem.ds.y_train, problem.ds.y_test
    tr = 0.5 * np.mean((f_tr - y_tr) ** 2, axis=(-2, -1))
    te = 0.5 * np.mean((f_te - y_te) ** 2, axis=(-2, -1))
    acc = np.mean(np.argmax(f_te, -1) == np.argmax(y_te, -1), axis=-1)
    return tr, te, acc


def _read_csv(path):
    """Rows of a CLI CSV as dicts keyed by the bare column names (units stripped; values parsed)."""
    return Table.from_csv(open(path, encoding="utf-8").read()).records()


def _expected_loss(problem, lam, t):
    """Independent reference for the default model: E over f0 ~ NNGP of the test MSE, from the ensemble
    covariance solver (mean and variance of the outputs)."""
    from widelimit.arch import MLP
    from widelimit.dynamics.ensemble import L2FlowEnsemble
    ds = problem.ds
    ens = L2FlowEnsemble.from_spec(MLP(depth=3), ds.x_train, ds.y_train, lam, x_test=ds.x_test)
    t = np.asarray(t, dtype=float)
    mean, var = ens.mean(t).test, ens.cov(t, diagonal=True).test
    return 0.5 * np.mean((mean - ds.y_test) ** 2, axis=(-2, -1)) + 0.5 * np.mean(var, axis=-1)


def test_solve_end_to_end(problem, tmp_path, capsys):
    out = tmp_path / "solve"
    rc = cli.main(["solve"] + DATA_ARGS + ["--f0", "zero", "--depth", "3", "--weight-decay", "0.1", "0.01",
                                           "--learning-rate", "0.5", "--t-min", "0.01", "--t-max", "1000",
                                           "--n-times", "40", "--out", str(out), "--no-progress"])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "t* [η·steps]" in stdout and "c = λt*" in stdout and "validity [enum]" in stdout
    for name in ("trajectories.csv", "trajectories.json", "trajectories.png", "summary.md", "summary.json"):
        assert (out / name).stat().st_size > 100
    header = [line for line in (out / "trajectories.csv").read_text().splitlines() if not line.startswith("#")][0]
    assert header == ("λ [1/(η·steps)],t [η·steps],steps [steps],train loss [MSE],test loss [MSE],"
                      "test acc (f0 = 0) [fraction]")
    rows = _read_csv(out / "trajectories.csv")
    assert len(rows) == 2 * 40
    t = np.geomspace(0.01, 1000, 40)
    for lam in (0.1, 0.01):
        sel = [r for r in rows if r["λ"] == lam]
        np.testing.assert_allclose([r["t"] for r in sel], t, rtol=1e-12)
        np.testing.assert_allclose([r["steps"] for r in sel], t / 0.5, rtol=1e-12)
        tr, te, acc = _direct(problem, lam, t)
        np.testing.assert_allclose([r["train loss"] for r in sel], tr, rtol=1e-9, atol=1e-14)
        np.testing.assert_allclose([r["test loss"] for r in sel], te, rtol=1e-9, atol=1e-14)
        np.testing.assert_array_equal([r["test acc (f0 = 0)"] for r in sel], acc)
    js = json.loads((out / "trajectories.json").read_text())
    assert js["rows"][5]["test loss"] == rows[5]["test loss"] and js["units"]["t"] == "η·steps"
    summ = json.loads((out / "summary.json").read_text())
    assert summ["units"]["t*"] == "η·steps" and summ["units"]["kernel decay"] == "η·steps"
    assert [r["λ"] for r in summ["rows"]] == [0.1, 0.01]
    for r in summ["rows"]:
        lam, ts = r["λ"], r["t*"]
        assert r["validity"] == "ok"
        assert r["c = λt*"] == pytest.approx(lam * ts, rel=1e-12)
        assert r["steps*"] == pytest.approx(ts / 0.5, rel=1e-12)
        _, te, _ = _direct(problem, lam, ts * np.array([0.9, 0.99, 1.0, 1.01, 1.1]))
        assert te[2] <= te.min() + 1e-15 and te[2] == pytest.approx(r["test loss at t*"], rel=1e-9)
        assert r["kernel decay"] == pytest.approx(1 / (2 * 2 * lam)) and r["output decay"] == pytest.approx(1 / (3 * lam))


def test_solve_from_saved_kernels_matches_dataset_path(problem, tmp_path):
    from widelimit.kernels import DataKernels
    kfile = tmp_path / "k.npz"
    DataKernels(problem.k_tt, problem.k_xt, problem.ds.y_train, problem.ds.y_test, 3).save(kfile)
    args = ["--weight-decay", "0.03", "--t-min", "0.1", "--t-max", "100", "--n-times", "7", "--no-plot",
            "--no-progress", "--f0", "zero"]
    assert cli.main(["solve", "--kernels", str(kfile), "--out", str(tmp_path / "a")] + args) == 0
    assert cli.main(["solve"] + DATA_ARGS + ["--out", str(tmp_path / "b")] + args) == 0
    a, b = _read_csv(tmp_path / "a" / "trajectories.csv"), _read_csv(tmp_path / "b" / "trajectories.csv")
    assert len(a) == 7 and not (tmp_path / "a" / "trajectories.png").exists()
    for ra, rb in zip(a, b):
        for k in ra:
            assert ra[k] == pytest.approx(rb[k], rel=1e-12, abs=1e-15)
    # the default --f0 nngp needs the NNGP blocks: a one-line error naming --f0
    assert cli.main(["solve", "--kernels", str(kfile), "--out", str(tmp_path / "n")] + args[:-2]) == 2
    # --L overrides the file's degree; data options contradict --kernels
    assert cli.main(["solve", "--kernels", str(kfile), "--L", "2", "--out", str(tmp_path / "c")] + args) == 0
    l2 = _read_csv(tmp_path / "c" / "trajectories.csv")
    assert any(abs(x["test loss"] - y["test loss"]) > 1e-6 for x, y in zip(l2, a))
    assert cli.main(["solve", "--kernels", str(kfile), "--data", "digits", "--out", str(tmp_path / "d")] + args) == 2
    # a file with the NNGP parts gives the default model, as the dataset path does
    from widelimit.arch import MLP
    from widelimit.kernels import analytic_kernels
    ds = problem.ds
    nn_tt = analytic_kernels(MLP(depth=3), ds.x_train).nngp
    nn_xt = analytic_kernels(MLP(depth=3), ds.x_test, ds.x_train).nngp
    nn_diag = np.diag(analytic_kernels(MLP(depth=3), ds.x_test).nngp)
    DataKernels(problem.k_tt, problem.k_xt, ds.y_train, ds.y_test, 3, nn_tt, nn_xt, nn_diag).save(kfile)
    assert cli.main(["solve", "--kernels", str(kfile), "--out", str(tmp_path / "f")] + args[:-2]) == 0
    assert cli.main(["solve"] + DATA_ARGS + ["--out", str(tmp_path / "g")] + args[:-2]) == 0
    f, g = _read_csv(tmp_path / "f" / "trajectories.csv"), _read_csv(tmp_path / "g" / "trajectories.csv")
    assert "test loss (f0 = 0)" in f[0]
    for rf, rg in zip(f, g):
        for k in rf:
            assert rf[k] == pytest.approx(rg[k], rel=1e-12, abs=1e-15)
    # a plain .npz that is not a kernel file, and a non-symmetric kernel: one-line --kernels errors
    np.savez(kfile, ntk_train_train=problem.k_tt, ntk_test_train=problem.k_xt, y_train=ds.y_train, y_test=ds.y_test)
    assert cli.main(["solve", "--kernels", str(kfile), "--out", str(tmp_path / "e")] + args) == 2
    bad = problem.k_tt.copy()
    bad[0, 1] += 1.0
    np.savez(kfile, format=np.array("widelimit.kernels"), format_version=np.array(1), L=np.array(3),
             ntk_train_train=bad, ntk_test_train=problem.k_xt, y_train=ds.y_train, y_test=ds.y_test)
    assert cli.main(["solve", "--kernels", str(kfile), "--out", str(tmp_path / "e")] + args) == 2
    assert not (tmp_path / "e").exists()


def test_table_ntk_lambda_opt_is_the_theory_optimum(problem, tmp_path, capsys):
    out = tmp_path / "ntk.json"
    rc = cli.main(["table", "ntk"] + DATA_ARGS + ["--weight-decay", "0.1", "0.01", "--budgets", "100", "1000",
                                                  "--learning-rate", "0.1", "--out", str(out), "--no-progress"])
    assert rc == 0
    tabs = json.loads(out.read_text())["tables"]
    per_lam, per_budget = tabs["tstar"]["rows"], tabs["lambda_opt"]["rows"]
    assert tabs["lambda_opt"]["units"]["T"] == "steps" and tabs["lambda_opt"]["units"]["ηT"] == "η·steps"
    assert tabs["tstar"]["units"]["t*"] == "η·steps" and tabs["tstar"]["units"]["kernel decay"] == "η·steps"
    assert [r["λ"] for r in per_lam] == [0.1, 0.01]
    for r in per_lam:   # t* of the default model (E over f0 ~ NNGP), against the ensemble solver
        lam, ts = r["λ"], r["t*"]
        around = _expected_loss(problem, lam, ts * np.array([0.97, 1.0, 1.03]))
        assert around[1] <= around.min() * (1 + 1e-9)
        assert r["test loss at t*"] == pytest.approx(around[1], rel=1e-7)
        assert r["steps*"] == pytest.approx(ts / 0.1, rel=1e-12)
        assert r["kernel decay"] == pytest.approx(1 / (2 * 2 * lam), rel=1e-12)   # same units as solve
    ok = [r for r in per_lam if r["validity"] == "ok"]
    c = float(np.exp(np.mean(np.log([r["c = λt*"] for r in ok])))) if ok else None   # geometric mean
    zero = 0.5 * np.mean(problem.ds.y_test ** 2)
    for r, T in zip(per_budget, (100, 1000)):
        assert r["T"] == T and r["ηT"] == pytest.approx(0.1 * T)
        # the theory's own optimum: no λ on an independent dense grid does better
        lam_grid = np.geomspace(r["λ_opt"] / 3, r["λ_opt"] * 3, 13)
        dense = np.array([_expected_loss(problem, lam, [0.1 * T])[0] for lam in lam_grid])
        assert r["test loss at λ_opt"] <= dense.min() * (1 + 1e-6)
        assert r["test loss at λ_opt"] == pytest.approx(_expected_loss(problem, r["λ_opt"], [0.1 * T])[0], rel=1e-7)
        assert r["validity"] == ("no-learning" if r["test loss at λ_opt"] >= 0.99 * zero else "ok")
        if c is None:
            assert r["rule c/(ηT)"] is None
        else:
            assert r["rule c/(ηT)"] == pytest.approx(c / (0.1 * T), rel=1e-12)
            assert r["test loss (rule)"] >= r["test loss at λ_opt"] - 1e-12
    # the same numbers as the Python API with its defaults (one prediction path)
    from widelimit.arch import MLP
    from widelimit.kernels import DataKernels
    from widelimit.kernels import analytic_kernels
    from widelimit.predict import lambda_opt, predict_model, t_star
    ds = problem.ds
    an = lambda a, b=None: analytic_kernels(MLP(depth=3), a, b).nngp  # noqa: E731
    dk = DataKernels(problem.k_tt, problem.k_xt, ds.y_train, ds.y_test, 3, an(ds.x_train), an(ds.x_test, ds.x_train),
                     np.diag(an(ds.x_test)))
    py_t = t_star(predict_model(dk), weight_decays=[0.1, 0.01], learning_rate=0.1)
    np.testing.assert_allclose([r["t*"] for r in per_lam], py_t.t_star, rtol=1e-12)
    assert [r["validity"] for r in per_lam] == [v.value for v in py_t.validity]
    py_l = lambda_opt(predict_model(dk), steps=[100, 1000], learning_rate=0.1)
    np.testing.assert_allclose([r["λ_opt"] for r in per_budget], py_l.weight_decay_opt, rtol=1e-12)
    # CSV with --out writes one self-describing file per table; Markdown goes to stdout by default
    rc = cli.main(["table", "ntk"] + DATA_ARGS + ["--weight-decay", "0.1", "--budgets", "100", "--learning-rate",
                                                  "0.1", "--out", str(tmp_path / "t.csv"), "--no-progress"])
    assert rc == 0
    t = Table.from_csv((tmp_path / "t_tstar.csv").read_text())
    assert t.records()[0]["t*"] == pytest.approx(per_lam[0]["t*"], rel=1e-12) and t.units["t*"] == "η·steps"
    assert t.meta["learning_rate"] == 0.1 and t.meta["f0"] == "nngp"
    assert len(_read_csv(tmp_path / "t_lambda_opt.csv")) == 1
    capsys.readouterr()
    assert cli.main(["table", "ntk"] + DATA_ARGS + ["--weight-decay", "0.1", "--no-progress", "--format", "latex"]) == 0
    tex = capsys.readouterr().out
    assert r"\toprule" in tex and r"\ensuremath{\lambda}" in tex


def test_validity_flags_and_warnings(problem, tmp_path, capsys):
    """The three out-of-range cases of issue 10 are flagged in the table and warned about on stderr."""
    # an enormous weight decay: the best test loss is the zero function's
    assert cli.main(["solve"] + DATA_ARGS + ["--weight-decay", "1e6", "0.01", "--n-times", "5", "--no-plot",
                                             "--no-progress", "--out", str(tmp_path / "s")]) == 0
    err = capsys.readouterr().err
    summ = {r["λ"]: r for r in json.loads((tmp_path / "s" / "summary.json").read_text())["rows"]}
    assert summ[1e6]["validity"] == "no-learning" and summ[0.01]["validity"] == "ok"
    warns = [line for line in err.splitlines() if "warning" in line]
    assert len(warns) == 1 and "λ = 1e+06" in warns[0] and "no-learning" in warns[0]
    # a learning rate beyond the GD stability limit eta * mu_max >= 2
    assert cli.main(["table", "ntk"] + DATA_ARGS + ["--weight-decay", "0.01", "--learning-rate", "100",
                                                    "--format", "json", "--no-progress"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["rows"][0]["validity"] == "unstable" and "unstable" in cap.err
    assert cli.main(["table", "ntk"] + DATA_ARGS + ["--weight-decay", "0.01", "--learning-rate", "0.1",
                                                    "--format", "json", "--no-progress"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["rows"][0]["validity"] == "ok" and "warning" not in cap.err
    # a relaxation shorter than one step
    assert cli.main(["table", "norms", "--learning-rate", "1", "--weight-decay", "0.5", "--optimizers", "sgd",
                     "--format", "json"]) == 0
    cap = capsys.readouterr()
    row = json.loads(cap.out)["rows"][0]
    assert row["relaxation"] == pytest.approx(0.5) and row["validity"] == "below-step"
    assert "below-step" in cap.err and len(cap.err.strip().splitlines()) == 1


def test_table_ntk_gd_model_counts_whole_steps(problem, capsys):
    """--gd: the theory of full-batch GD at η (Python: predict_model(kernels, learning_rate=η)); its t* is a
    whole number of steps and differs from the flow's at a large η."""
    argv = ["table", "ntk"] + DATA_ARGS + ["--weight-decay", "0.01", "--learning-rate", "1.5", "--format", "json",
                                           "--no-progress"]
    assert cli.main(argv + ["--gd"]) == 0
    gd = json.loads(capsys.readouterr().out)
    assert cli.main(argv) == 0
    flow = json.loads(capsys.readouterr().out)
    steps_gd, steps_flow = gd["rows"][0]["steps*"], flow["rows"][0]["steps*"]
    assert steps_gd == round(steps_gd) and steps_flow != round(steps_flow)
    assert "GD" in gd["meta"]["model"] and "flow" in flow["meta"]["model"]
    assert abs(steps_gd - steps_flow) / steps_flow < 0.5


def test_table_norms_against_closed_forms(tmp_path):
    out = tmp_path / "norms.csv"
    rc = cli.main(["table", "norms", "--learning-rate", "0.1", "0.01", "--weight-decay", "5e-4", "5e-3",
                   "--momentum", "0.8", "--b1", "0.9", "--b2", "0.99", "--group-size", "1000",
                   "--steps-per-epoch", "50", "--optimizers", "sgd", "momentum", "adamw", "adam", "--out", str(out)])
    assert rc == 0
    rows = _read_csv(out)
    assert len(rows) == 4 * 2 * 2
    assert [r["optimizer"] for r in rows[::4]] == ["sgd", "momentum", "adamw", "adam"]
    for r in rows:
        eta, lam = r["η"], r["λ"]
        ang, relax = r["angular update"], r["relaxation"]
        assert r["ηλ"] == pytest.approx(eta * lam)
        assert r["validity"] == "ok" or r["optimizer"] == "adam"    # adam: the norm theory's own flag
        if r["optimizer"] == "sgd":  # docs/theory.md section 6
            assert ang == pytest.approx(math.sqrt(2 * eta * lam), rel=1e-12)
            assert relax == pytest.approx(1 / (4 * eta * lam), rel=1e-12)  # u = ||w||^4 relaxes at 4 eta lam
            assert r["effective LR"] == pytest.approx(math.sqrt(2 * eta * lam / 1.0), rel=1e-12)
        elif r["optimizer"] == "momentum":
            assert ang == pytest.approx(math.sqrt(2 * eta * lam / 1.8), rel=1e-12)
            assert r["μ"] == 0.8
        elif r["optimizer"] == "adamw":
            assert ang == pytest.approx(math.sqrt(2 * eta * lam * 0.1 / 1.9), rel=1e-12)
            assert relax == pytest.approx(1 / (2 * eta * lam), rel=1e-12)  # EMA time scale 1/(eta lam), halved for x
            assert r["β1"] == 0.9
        assert r["relaxation epochs"] == pytest.approx(relax / 50, rel=1e-12)
        assert r["relaxation time"] == pytest.approx(eta * relax, rel=1e-12)
    # default: the SGD family only without --group-size, with a note saying why
    md = tmp_path / "n.md"
    assert cli.main(["table", "norms", "--out", str(md)]) == 0
    text = md.read_text(encoding="utf-8")
    assert "| sgd" in text and "| nesterov" in text and "| adamw" not in text and "--group-size" in text
    assert "relaxation [steps]" in text and "| gd " not in text
    # every optimiser name of Python, with what it needs
    assert cli.main(["table", "norms", "--optimizers", "gd", "lion", "muon", "--group-size", "1024", "--shape", "32",
                     "32", "--out", str(tmp_path / "all.json")]) == 0
    rows = json.loads((tmp_path / "all.json").read_text())["rows"]
    assert [r["optimizer"] for r in rows] == ["sgd", "lion", "muon"]   # as Python names them: gd is sgd's map
    assert rows[0]["angular update"] == pytest.approx(math.sqrt(2 * 0.1 * 5e-4), rel=1e-12)   # gd = sgd's map
    assert all(r["validity"] in ("ok", "too-fast", "below-step") and r["angular update"] > 0 for r in rows)


# ------------------------------------------------------------------------------------------------
# validate and derive dispatch
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def fake_study(monkeypatch):
    """A registered study whose run() records its calls and keeps one stored run under <out>/.cache."""
    import widelimit.studies as studies
    calls = []

    def fake_run(size, out_dir, progress=True, resume=True):
        calls.append((size, out_dir, progress, resume))
        store = out_dir / ".cache" / f"fake-{size}"
        store.mkdir(parents=True, exist_ok=True)
        (store / f"run{len(calls)}.json").write_text("{}")
        p = out_dir / "fake.md"
        p.write_text("# fake\n\nok")
        return p

    monkeypatch.setitem(studies.STUDIES, "fake", ("unused", "a fake study"))
    monkeypatch.setattr(studies, "get_study", lambda name: fake_run)
    return calls


def test_validate_resumes_by_default_outside_validation(tmp_path, monkeypatch, capsys, fake_study):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["validate", "fake"]) == 0
    # default output outside the committed validation/, resume on
    assert fake_study == [("quick", cli.validate.DEFAULT_ROOT / "quick", True, True)]
    assert cli.validate.DEFAULT_ROOT.parts[0] != "validation" and not (tmp_path / "validation").exists()
    printed = capsys.readouterr().out
    assert printed.startswith("# fake\n\nok\n")                  # the report itself is printed
    out = tmp_path / "v"
    assert cli.main(["validate", "fake", "--size", "full", "--out", str(out), "--quiet", "--no-progress"]) == 0
    assert fake_study[-1] == ("full", out, False, True)
    assert capsys.readouterr().out == f"report: {out / 'fake.md'}\n"
    assert cli.main(["validate", "fake", "--size", "full", "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in (out / ".cache" / "fake-full").iterdir()) == ["run2.json", "run3.json"]


def test_validate_fresh_moves_the_store_aside(tmp_path, capsys, fake_study):
    out = tmp_path / "v"
    assert cli.main(["validate", "fake", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["validate", "fake", "--out", str(out), "--quiet", "--fresh"]) == 0
    err = capsys.readouterr().err
    moved = [p for p in (out / ".cache").iterdir() if p.name.startswith("fake-quick.old-")]
    assert len(moved) == 1 and (moved[0] / "run1.json").is_file()        # nothing deleted
    assert sorted(p.name for p in (out / ".cache" / "fake-quick").iterdir()) == ["run2.json"]
    assert "--fresh" in err and str(moved[0]) in err
    assert fake_study[-1][3] is True      # the study itself never wipes anything
    assert cli.main(["validate", "fake", "--out", str(out), "--quiet", "--fresh"]) == 0
    assert len([p for p in (out / ".cache").iterdir() if ".old-" in p.name]) == 2


def test_validate_refuses_dirty_committed_reports_before_computing(tmp_path, monkeypatch, capsys, fake_study):
    import os
    import widelimit.studies.common as common
    seen = []

    def check(out_dir, allow_dirty=None):
        seen.append(os.environ.get("WIDELIMIT_ALLOW_DIRTY"))
        if os.environ.get("WIDELIMIT_ALLOW_DIRTY") != "1":
            raise RuntimeError("out_dir is the committed validation/ and the tree has uncommitted code changes")
    monkeypatch.setattr(common, "check_provenance", check, raising=False)
    monkeypatch.delenv("WIDELIMIT_ALLOW_DIRTY", raising=False)
    assert cli.main(["validate", "fake", "--out", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--allow-dirty" in err and fake_study == []
    assert cli.main(["validate", "fake", "--out", str(tmp_path / "v"), "--allow-dirty", "--quiet"]) == 0
    assert len(fake_study) == 1 and seen == [None, "1"]
    monkeypatch.delenv("WIDELIMIT_ALLOW_DIRTY", raising=False)


def test_validate_all_and_report(tmp_path, monkeypatch, capsys, fake_study):
    import widelimit.studies as studies
    import widelimit.studies.report as report
    monkeypatch.setattr(studies, "STUDIES", {"fake": ("unused", "a fake study")})
    built = []
    monkeypatch.setattr(report, "build_report", lambda root: built.append(root) or root / "REPORT.md")
    out = tmp_path / "validation" / "quick"
    assert cli.main(["validate", "all", "--out", str(out), "--report", "--quiet"]) == 0
    assert len(fake_study) == 1 and built == [out.parent]
    assert f"assembled: {out.parent / 'REPORT.md'}" in capsys.readouterr().out
    assert cli.validate.REGENERATE == "python -m widelimit.studies.report --regenerate quick"
    assert cli.validate.REGENERATE.split()[2] == report.__name__


def test_cost_estimate_announced_for_slow_work(problem, tmp_path, monkeypatch, capsys, fake_study):
    import widelimit.cli.problem as cli_problem
    monkeypatch.setattr(cli_problem, "kernel_cost_s", lambda *a, **k: 95.0)
    assert cli.main(["table", "ntk"] + DATA_ARGS + ["--weight-decay", "0.01", "--format", "csv"]) == 0
    err = capsys.readouterr().err
    assert "estimated cost: kernels of 60 train / 60 test points ≈ 95 s" in err
    monkeypatch.setattr(cli_problem, "kernel_cost_s", lambda *a, **k: 2.0)      # fast work: no line
    assert cli.main(["table", "ntk"] + DATA_ARGS + ["--weight-decay", "0.01", "--format", "csv"]) == 0
    assert "estimated cost" not in capsys.readouterr().err
    monkeypatch.setattr(cli.validate, "last_elapsed_s", lambda name, size: 600.0)
    assert cli.main(["validate", "fake", "--out", str(tmp_path / "v"), "--quiet"]) == 0
    assert "estimated cost: fake at size quick" in capsys.readouterr().err
    assert cli.main(["validate", "fake", "--out", str(tmp_path / "v"), "--quiet", "--no-progress"]) == 0
    assert "estimated cost" not in capsys.readouterr().err
    assert cli.validate.last_elapsed_s("quick", "quick") >= 0.0


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
    monkeypatch.setattr(cli_derive, "derivations_dir", lambda: root)
    out = tmp_path / "out"
    assert cli.main(["derive", "ntk_l2", "--out", str(out), "--no-progress"]) == 0
    assert (out / "ntk_l2.md").read_text() == "# ntk_l2\n"
    assert "2/2 checks passed" in capsys.readouterr().out
    assert cli.main(["derive", "--out", str(out), "--no-progress"]) == 2      # would overwrite ntk_l2.md
    assert "--force" in capsys.readouterr().err
    assert cli.main(["derive", "--out", str(out), "--no-progress", "--force"]) == 1  # a failed check -> exit 1
    assert "scale_invariant: b" in capsys.readouterr().err
    (root / "ntk_l2.py").unlink()
    assert cli.main(["derive", "ntk_l2", "--out", str(out), "--force"]) == 1
    assert "not found" in capsys.readouterr().err


def test_module_entry_point():
    import os
    import subprocess
    from pathlib import Path
    root = str(Path(cli.__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "widelimit.cli", "table", "norms", "--learning-rate", "0.1",
                        "--weight-decay", "0.001", "--optimizers", "sgd", "--format", "csv"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = Table.from_csv(r.stdout).records()
    assert rows[0]["angular update"] == pytest.approx(math.sqrt(2 * 0.1 * 0.001), rel=1e-12)
    r = subprocess.run([sys.executable, "-m", "widelimit.cli", "solve", "--depth", "0"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 2 and "--depth" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_solve_expected_over_nngp_init(problem, tmp_path):
    """Default --f0 (nngp): expected test loss over f0 ~ NNGP, against the ensemble covariance solver;
    the same numbers as the Python default model."""
    from widelimit.dynamics.loss import ExpectedLoss
    rc = cli.main(["solve"] + DATA_ARGS + ["--weight-decay", "0.05", "--t-min", "0.1", "--t-max", "300",
                                           "--n-times", "9", "--no-progress", "--out", str(tmp_path)])
    assert rc == 0
    rows = _read_csv(tmp_path / "trajectories.csv")
    t = np.geomspace(0.1, 300, 9)
    np.testing.assert_allclose([r["test loss"] for r in rows], _expected_loss(problem, 0.05, t), rtol=1e-8)
    assert all(r["test loss"] > r["test loss (f0 = 0)"] for r in rows[:-1])  # the f0 variance adds loss
    summ = json.loads((tmp_path / "summary.json").read_text())["rows"][0]
    ts = summ["t*"]
    around = _expected_loss(problem, 0.05, ts * np.array([0.9, 1.0, 1.1]))
    assert around[1] <= around.min() * (1 + 1e-9)
    assert summ["test loss at t*"] == pytest.approx(around[1], rel=1e-6)
    from widelimit.arch import MLP
    from widelimit.kernels import analytic_kernels
    ds = problem.ds
    py = ExpectedLoss(problem.k_tt, problem.k_xt, analytic_kernels(MLP(depth=3), ds.x_train).nngp,
                      analytic_kernels(MLP(depth=3), ds.x_test, ds.x_train).nngp,
                      np.diag(analytic_kernels(MLP(depth=3), ds.x_test).nngp), ds.y_train, ds.y_test, 3)
    np.testing.assert_allclose([r["test loss"] for r in rows], py.test_loss(0.05, t), rtol=1e-12)


def test_solve_regression_has_no_accuracy(tmp_path):
    rc = cli.main(["solve", "--data", "teacher", "--n-train", "30", "--n-test", "20", "--depth", "1",
                   "--weight-decay", "0.1", "--n-times", "5", "--no-plot", "--no-progress", "--out", str(tmp_path)])
    assert rc == 0
    rows = _read_csv(tmp_path / "trajectories.csv")
    assert list(rows[0]) == ["λ", "t", "train loss", "test loss", "test loss (f0 = 0)"]
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
                   "20", "--classes", "0,1", "--targets", "pm1", "--weight-decay", "0.1", "--f0", "zero", "--t-min", "0.1", "--t-max",
                   "100", "--n-times", "6", "--no-plot", "--no-progress", "--out", str(tmp_path)])
    assert rc == 0
    ds = load_dataset("digits", n_train=20, n_test=20, classes=[0, 1], targets="pm1", layout="image")
    spec = CNN(depth=1, channels=8, ndim=2)
    fl = L2Flow(analytic_kernels(spec, ds.x_train).ntk, ds.y_train, 0.1, 2,
                ntk_test_train=analytic_kernels(spec, ds.x_test, ds.x_train).ntk)
    t = np.geomspace(0.1, 100, 6)
    te = 0.5 * np.mean((fl.test(t) - ds.y_test) ** 2, axis=(-2, -1))
    rows = _read_csv(tmp_path / "trajectories.csv")
    np.testing.assert_allclose([r["test loss"] for r in rows], te, rtol=1e-9)


@pytest.mark.slow
def test_derive_real_scripts(tmp_path, capsys):
    root = cli_derive.derivations_dir()
    names = [n for n in cli_derive.DERIVATIONS if (root / f"{n}.py").is_file()]
    if not names:
        pytest.skip("no derivation scripts in this checkout")
    assert cli.main(["derive", *names, "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    for n in names:
        assert (tmp_path / f"{n}.md").stat().st_size > 500
        assert f"{n}: wrote" in out and "checks passed" in out


# ------------------------------------------------------------------------------------------------
# --solver, memory check and large N (issue 11)
# ------------------------------------------------------------------------------------------------
def test_solver_krylov_matches_eigh(capsys):
    """``--solver krylov`` (matrix-free, float32 kernels) gives the t* and losses of ``--solver eigh``
    (the f0 = 0 mean function is exact to rounding in both; float32 storage limits agreement to ~1e-6)."""
    rows = {}
    for solver in ("eigh", "krylov"):
        assert cli.main(["table", "ntk"] + DATA_ARGS + ["--f0", "zero", "--solver", solver, "--weight-decay",
                                                        "0.03", "0.003", "--format", "json", "--no-progress"]) == 0
        out = json.loads(capsys.readouterr().out)
        rows[solver] = out["rows"]
        assert ("Krylov" in out["meta"]["model"]) == (solver == "krylov")
    for a, b in zip(rows["eigh"], rows["krylov"]):
        assert b["t*"] == pytest.approx(a["t*"], rel=1e-4)
        assert b["test loss at t*"] == pytest.approx(a["test loss at t*"], rel=1e-5)


@pytest.mark.parametrize("extra,hint", [
    (["--solver", "eigh"], "--solver krylov"),
    (["--solver", "krylov", "--kernel-dtype", "float64"], "--kernel-dtype float32"),
    (["--solver", "krylov"], "--kernel-dir"),
    (["--solver", "krylov", "--kernel-dir", "kd"], "smaller --n-train"),
])
def test_kernels_that_do_not_fit_are_a_one_line_usage_error(extra, hint, tmp_path, monkeypatch, capsys,
                                                             no_compute):
    """With (pretend) 1 MiB available, 600 training points do not fit: exit 2 before anything is
    computed or written, one line naming --n-train, the bytes needed and the way out."""
    import widelimit.kernels.blockwise as blockwise
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(blockwise, "available_memory_bytes", lambda: 2 ** 20)
    argv = ["--data", "digits", "--n-train", "600", "--n-test", "100"] + extra
    for cmd in (["solve", "--out", "o"], ["table", "ntk"]):
        assert cli.main(cmd + argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "--n-train 600" in err and hint in err, err
        assert "GiB" in err and "available" in err
    assert not any(tmp_path.iterdir())


def test_memory_line_and_large_mnist1d_on_disk(tmp_path, capsys):
    """MNIST-1D beyond its default split (generated by data_large), Krylov on memory-mapped float32 kernels
    under --kernel-dir: the memory line comes first on stderr, the kernels are on disk, and a second run
    resumes them (same table, no block recomputed)."""
    kd = tmp_path / "kd"
    argv = ["table", "ntk", "--data", "mnist1d", "--n-train", "4010", "--n-test", "40", "--f0", "zero",
            "--solver", "krylov", "--kernel-dir", str(kd), "--weight-decay", "0.01", "--format", "json"]
    assert cli.main(argv) == 0
    cap = capsys.readouterr()
    first = [line for line in cap.err.replace("\r", "\n").splitlines() if line.strip()][0]
    assert first.startswith("memory: kernels 0.06 GiB (float32, memory-mapped") and "GiB available" in first
    out = json.loads(cap.out)
    assert "4010 train / 40 test" in out["caption"]
    k = np.load(kd / "train_train" / "ntk.npy", mmap_mode="r")
    assert k.shape == (4010, 4010) and k.dtype == np.float32
    progress = json.loads((kd / "train_train" / "progress.json").read_text())
    assert len(progress["kernels"]["ntk"]) == 3                        # 2x2 blocks of 2048, upper triangle
    stamp = (kd / "train_train" / "ntk.npy").stat().st_mtime_ns
    assert cli.main(argv + ["--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == out["rows"]
    assert (kd / "train_train" / "ntk.npy").stat().st_mtime_ns == stamp   # resumed: nothing rewritten
