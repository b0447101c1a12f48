"""Sweeps resume after ``kill -9`` without redoing or losing completed runs; configs are validated up front."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from widelimit.arch import MLP
from widelimit.results import ResultStore
from widelimit.train import RunConfig, RunResult, run_sweep

ROOT = Path(__file__).resolve().parents[1]
N_RUNS = 6

SCRIPT = textwrap.dedent("""
    import os, sys, time
    from widelimit.train import loop
    loop.COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}
    from widelimit.arch import MLP
    from widelimit.data import load_dataset
    from widelimit.train import Program, RunConfig, run_sweep, train

    store, log, n, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    opts = dict(n_train=16, n_test=4, in_dim=3)
    configs = [RunConfig(arch=MLP(depth=2, width=8, out_dim=1), data="teacher", data_options=opts,
                         learning_rate=0.1, steps=10, eval_every=5, seed=s) for s in range(n)]
    data = load_dataset("teacher", **opts)
    prog = Program(configs[0], data)

    def logline(s):
        with open(log, "a") as fh:
            fh.write(s + "\\n")
            fh.flush()
            os.fsync(fh.fileno())

    def train_fn(c):
        logline(f"start {c.run_id} {os.getpid()}")
        r = train(c, data, program=prog)
        time.sleep(pause)
        logline(f"done {c.run_id} {os.getpid()}")
        return r

    run_sweep(configs, store, progress=False, train_fn=train_fn)
    logline(f"finished - {os.getpid()}")
""")


def _configs(n):
    return [RunConfig(arch=MLP(depth=2, width=8, out_dim=1), data="teacher",
                      data_options=dict(n_train=16, n_test=4, in_dim=3), learning_rate=0.1, steps=10,
                      eval_every=5, seed=s) for s in range(n)]


def _launch(script, store, log, pause):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, str(script), str(store), str(log), str(N_RUNS), str(pause)],
                            env=env, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_kill_9_and_resume(tmp_path):
    script = tmp_path / "sweep_worker.py"
    script.write_text(SCRIPT)
    store_dir, log = tmp_path / "store", tmp_path / "executions.log"
    all_ids = {c.run_id for c in _configs(N_RUNS)}
    assert len(all_ids) == N_RUNS

    p1 = _launch(script, store_dir, log, pause=0.5)
    deadline = time.time() + 300
    while True:  # wait until a couple of runs are complete, then kill -9 mid-sweep
        done = ResultStore(store_dir).run_ids() if (store_dir / "runs").exists() else []
        if len(done) >= 2:
            break
        if p1.poll() is not None:
            pytest.fail(f"worker exited early: {p1.stdout.read().decode()[-2000:]}")
        if time.time() > deadline:
            p1.kill()
            pytest.fail("worker made no progress in 300 s")
        time.sleep(0.05)
    os.kill(p1.pid, signal.SIGKILL)
    p1.wait()
    p1.stdout.close()
    store = ResultStore(store_dir)
    before = {rid: store.load(rid).written_at for rid in store.run_ids()}
    assert 2 <= len(before) < N_RUNS, "the sweep must be killed mid-way (raise the pause if this fails)"

    p2 = _launch(script, store_dir, log, pause=0.0)
    out, _ = p2.communicate(timeout=300)
    assert p2.returncode == 0, out.decode()[-2000:]

    events = [line.split() for line in log.read_text().splitlines()]
    pid1, pid2 = str(p1.pid), str(p2.pid)
    starts = Counter(rid for kind, rid, _ in events if kind == "start")
    # nothing completed before the kill was run again, nor rewritten
    for rid, written_at in before.items():
        assert starts[rid] == 1, f"completed run {rid} was executed {starts[rid]} times"
        assert store.load(rid).written_at == written_at
    # the resumed process ran exactly the runs that were missing, once each
    resumed = [rid for kind, rid, pid in events if kind == "start" and pid == pid2]
    assert sorted(resumed) == sorted(all_ids - set(before))
    assert not any(kind == "finished" and pid == pid1 for kind, _, pid in events)
    assert any(kind == "finished" and pid == pid2 for kind, _, pid in events)
    # the final store is complete and every record verifies and parses
    assert set(store.run_ids()) == all_ids
    for run in store:
        res = RunResult.from_stored(run)
        assert res.config.run_id == run.run_id
        assert res.metrics["train_loss"].shape == (3,) and np.all(np.isfinite(res.metrics["train_loss"]))
    assert list((store_dir / "tmp").iterdir()) == []  # killed writer's debris was cleaned up


def test_sweep_validates_first_skips_done_and_dedups(tmp_path):
    cfgs = _configs(3)
    calls = []

    def fake_train(c):
        calls.append(c.run_id)
        n = 3
        metrics = {k: np.linspace(1.0, 0.5, n) for k in ("train_loss", "train_acc", "test_loss", "test_acc", "weight_decay",
                                                          "lam", "time")}
        metrics["step"] = np.arange(n)
        return RunResult(c.canonical(), c.run_id, metrics, {}, {"outputs": np.zeros((n, 1, 1))})

    bad = cfgs + [cfgs[0].replace(steps=0)]
    with pytest.raises(ValueError, match=r"configs\[3\].*RunConfig\.steps"):
        run_sweep(bad, tmp_path / "s", progress=False, train_fn=fake_train)
    assert calls == [] and len(ResultStore(tmp_path / "s")) == 0  # nothing ran
    rep = run_sweep(cfgs + [cfgs[1]], tmp_path / "s", progress=True, train_fn=fake_train)
    assert len(rep.run_ids) == 3 and sorted(rep.trained) == sorted(calls) and rep.complete
    rep2 = run_sweep(cfgs, tmp_path / "s", progress=False, train_fn=fake_train)
    assert rep2.trained == [] and sorted(rep2.skipped) == sorted(c.run_id for c in cfgs)
    assert len(calls) == 3


def test_ensemble_sweep_stores_each_member(tmp_path, monkeypatch):
    from widelimit.train import loop
    monkeypatch.setattr(loop, "COMPILER_OPTIONS", {"xla_backend_optimization_level": 0})
    cfgs = _configs(3) + [c.replace(learning_rate=0.05) for c in _configs(2)]
    store = ResultStore(tmp_path / "e")
    rep = run_sweep(cfgs, store, progress=False, ensemble=True, ensemble_size=4)
    assert rep.complete and len(store) == 5
    seq = run_sweep([cfgs[4]], tmp_path / "seq", progress=False)  # the same run trained alone
    a = store.load(cfgs[4].run_id).streams["metrics"]
    b = ResultStore(tmp_path / "seq").load(seq.trained[0]).streams["metrics"]
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-7, err_msg=k)
