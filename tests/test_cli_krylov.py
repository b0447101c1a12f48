"""The CLI's Krylov path (issue 11): the tuned pass settings of ``bench_scale.py --tune`` end to end, the
``--solver`` help read from ``KRYLOV_MIN_N``, and ``--kernel-dir`` stores reused, never overwritten."""
import json

import numpy as np
import pytest

from widelimit import cli
from widelimit.dynamics.krylov import KernelMatrix, KrylovLoss
from widelimit.dynamics.krylov import operator as op_mod
from widelimit.predict import models

ARGS = ["--data", "digits", "--n-train", "120", "--n-test", "40", "--seed", "1", "--solver", "krylov",
        "--weight-decay", "0.03", "--no-progress"]


def _blas_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    return max(i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")


@pytest.mark.parametrize("cmd", [["table", "ntk", "--format", "json"], ["solve", "--no-plot", "--out", "o"]])
def test_cli_krylov_runs_with_the_tuned_settings(cmd, monkeypatch, tmp_path, capsys):
    """BLAS on one thread while the Krylov model builds and during every float32 kernel pass, and the
    operators' chunk buffer at the measured default -- what ``bench_scale.py end-to-end --tune`` set
    (there: 16 MiB chunks; the default is now 4 MiB, benchmarks/RESULTS_scale.md §6)."""
    monkeypatch.chdir(tmp_path)
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):   # as a 2-core machine starts
        if _blas_threads() < 2:
            pytest.skip("BLAS has one thread here: nothing to limit")
        seen = {"build": [], "pass": [], "rows": set()}
        real_build, real_chunks = KrylovLoss.from_kernels.__func__, KernelMatrix._chunks

        def build(cls, *a, **kw):
            seen["build"].append(_blas_threads())
            return real_build(cls, *a, **kw)

        def chunks(self, *a):
            seen["rows"].add((self.rows, self.shape[1], self.matrix.dtype.name))
            for item in real_chunks(self, *a):
                seen["pass"].append(_blas_threads())
                yield item

        monkeypatch.setattr(KrylovLoss, "from_kernels", classmethod(build))
        monkeypatch.setattr(KernelMatrix, "_chunks", chunks)
        assert cli.main(cmd + ARGS + ["--f0", "zero"]) == 0
        assert _blas_threads() == 2                                     # restored afterwards
    capsys.readouterr()
    assert seen["build"] and set(seen["build"]) == {1}
    assert seen["pass"] and set(seen["pass"]) == {1}
    assert {(r, d) for r, n, d in seen["rows"]} == {(op_mod._CHUNK_BYTES // (8 * 120), "float32")}


def test_eigh_keeps_blas_threads(monkeypatch, capsys):
    from widelimit.cli import _theory
    with _theory.solver_threads("eigh", 10 ** 6):
        n_eigh = _blas_threads()
    with _theory.solver_threads("auto", models.KRYLOV_MIN_N - 1):
        n_auto_small = _blas_threads()
    with _theory.solver_threads("auto", models.KRYLOV_MIN_N):
        n_auto_large = _blas_threads()
    with _theory.solver_threads("auto", models.KRYLOV_MIN_N_ZERO, "zero"):
        n_auto_zero = _blas_threads()
    assert n_auto_large == n_auto_zero == 1 and n_eigh == n_auto_small == _blas_threads()


def test_solver_help_reads_the_threshold(monkeypatch, capsys):
    monkeypatch.setattr(models, "KRYLOV_MIN_N", 12345)
    monkeypatch.setattr(models, "KRYLOV_MIN_N_ZERO", 678)
    for cmd in (["table", "ntk"], ["solve"]):
        assert cli.main(cmd + ["--help"]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert "krylov from 12345 training points (678 with --f0 zero)" in out


def test_resolve_solver():
    assert models.KRYLOV_MIN_N_ZERO < models.KRYLOV_MIN_N
    for f0, n in (("nngp", models.KRYLOV_MIN_N), ("zero", models.KRYLOV_MIN_N_ZERO)):
        assert models.resolve_solver("auto", n, f0) == "krylov"
        assert models.resolve_solver("auto", n - 1, f0) == "eigh"
    assert models.resolve_solver("auto", models.KRYLOV_MIN_N_ZERO) == "eigh"       # default f0: nngp
    assert models.resolve_solver("eigh", 10 ** 6) == "eigh" and models.resolve_solver("krylov", 10) == "krylov"
    with pytest.raises(ValueError, match="solver"):
        models.resolve_solver("dense", 10)
    with pytest.raises(ValueError, match="f0"):
        models.resolve_solver("auto", 10, "prior")


def test_predict_model_auto_by_f0():
    """``predict_model(solver="auto")`` switches by f0: Krylov for the mean function from KRYLOV_MIN_N_ZERO,
    the dense expected loss below KRYLOV_MIN_N (threshold lowered here so the test stays small)."""
    from widelimit.kernels import DataKernels
    from widelimit.kernels.native import mlp_kernels
    from widelimit.arch import MLP
    rng = np.random.default_rng(0)
    x, xt = rng.standard_normal((60, 5)), rng.standard_normal((10, 5))
    spec = MLP(depth=3)
    (ntt, ktt), (nxt, kxt) = mlp_kernels(spec, x), mlp_kernels(spec, xt, x)
    kxx = np.diag(mlp_kernels(spec, xt)[1])
    dk = DataKernels(ntt, nxt, rng.standard_normal((60, 2)), rng.standard_normal((10, 2)), 3, ktt, kxt, kxx)
    import unittest.mock as mock
    with mock.patch.object(models, "KRYLOV_MIN_N_ZERO", 60):
        assert isinstance(models.predict_model(dk, f0="zero"), KrylovLoss)
        assert not isinstance(models.predict_model(dk), KrylovLoss)
    assert not isinstance(models.predict_model(dk, f0="zero"), KrylovLoss)            # 60 < 1000


def test_kernel_dir_subset_reused_and_other_run_refused(tmp_path, capsys):
    """``--f0 nngp`` stores NTK + NNGP; a later ``--f0 zero`` (NTK only) reuses the NTK files untouched (the
    bug: they were overwritten in place); a run of another size in the same directory is a one-line
    usage error (exit 2) that leaves the files alone."""
    kd = tmp_path / "kd"
    common = ["table", "ntk", "--data", "digits", "--n-test", "40", "--seed", "1", "--solver", "krylov",
              "--weight-decay", "0.03", "--no-progress", "--format", "json"]
    base = common + ["--kernel-dir", str(kd)]
    assert cli.main(base + ["--n-train", "120"]) == 0
    capsys.readouterr()
    files = sorted(kd.rglob("*.npy")) + sorted(kd.rglob("progress.json"))
    assert len(files) == 6                                             # ntk, nngp and a record, twice
    stamps = {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in files}
    assert cli.main(base + ["--n-train", "120", "--f0", "zero"]) == 0
    zero = json.loads(capsys.readouterr().out)
    assert {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in files} == stamps
    assert cli.main(base + ["--n-train", "100", "--f0", "zero"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--kernel-dir" in err and "another computation" in err
    assert {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in files} == stamps
    # the reused NTK gives the table of a fresh computation
    assert cli.main(common + ["--kernel-dir", str(tmp_path / "fresh"), "--n-train", "120", "--f0", "zero"]) == 0
    fresh = json.loads(capsys.readouterr().out)
    assert np.allclose([r["t*"] for r in fresh["rows"]], [r["t*"] for r in zero["rows"]], rtol=1e-12)


def test_cli_states_the_krylov_solver_error(monkeypatch, capsys):
    """With the stochastic (Hutch++) Krylov model the t* and lambda_opt tables carry the jackknife solver
    s.e. (the same numbers the Python API states), and its cost is announced before the searches."""
    from widelimit.cli import progress
    from widelimit.predict import lambda_opt, t_star
    monkeypatch.setattr(progress, "ANNOUNCE_S", 0.0)
    args = ["table", "ntk", "--data", "digits", "--n-train", "300", "--n-test", "150", "--seed", "1",
            "--solver", "krylov", "--weight-decay", "0.003", "--budgets", "1000", "--learning-rate", "1",
            "--format", "json"]
    assert cli.main(args) == 0
    cap = capsys.readouterr()
    assert "17 searches per λ: the jackknife over the 16 Hutch++ probes" in cap.err
    tables = json.loads(cap.out)["tables"]
    row, opt = tables["tstar"]["rows"][0], tables["lambda_opt"]["rows"][0]
    assert tables["tstar"]["units"]["t* solver s.e."] == "η·steps"
    assert tables["lambda_opt"]["units"]["λ_opt solver s.e."] == "1/(η·steps)"
    assert 0 < row["t* solver s.e."] < 0.05 * row["t*"] and 0 < opt["λ_opt solver s.e."] < 0.05 * opt["λ_opt"]
    # the same numbers from the Python API on the same problem
    from widelimit.cli import _theory
    from widelimit.cli.problem import load_problem
    ns = cli.build_parser().parse_args(args + ["--no-progress"])
    model = _theory.loss_model(load_problem(ns), "nngp", None, "krylov")
    ts = t_star(model, weight_decays=[0.003])
    lo = lambda_opt(model, steps=[1000], learning_rate=1.0)
    assert row["t* solver s.e."] == pytest.approx(float(ts.t_star_solver_se[0]), rel=1e-9)
    assert opt["λ_opt solver s.e."] == pytest.approx(float(np.ravel(lo.weight_decay_opt_solver_se)[0]), rel=1e-9)
