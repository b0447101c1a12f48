"""The result store with several writer processes at once, one of them killed by SIGKILL mid-run:
nothing lost, nothing duplicated, every record intact."""
import json
import multiprocessing as mp
import os
import signal
import time
from collections import Counter

import numpy as np
import pytest

from widelimit.results import ResultStore

N_RUNS = 12
CV = "cv-concurrent-test"


def _worker(root, log, pause, run_ids):
    """A sweep worker that does not import JAX: claim, skip if complete, 'train' (sleep), write."""
    store = ResultStore(root, code_version=CV)

    def logline(s):
        with open(log, "a") as fh:
            fh.write(f"{s} {os.getpid()}\n")
            fh.flush()
            os.fsync(fh.fileno())

    for rid in run_ids:
        with store.claim(rid, blocking=True) as got:
            assert got
            if store.has(rid):
                continue
            logline(f"start {rid}")
            time.sleep(pause)
            seed = int(rid.split("-")[1])
            store.write(rid, {"seed": seed}, {"metrics": {"x": np.arange(1000.0) * seed}}, {"seed": seed})
            logline(f"done {rid}")


def _events(log):
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def test_concurrent_writers_with_one_killed(tmp_path):
    ctx = mp.get_context("spawn")
    root, log = tmp_path / "store", tmp_path / "log"
    ResultStore(root, code_version=CV)
    ids = [f"run-{i}" for i in range(N_RUNS)]
    # three workers over the same runs in different orders; worker 0 is slow and gets killed mid-run
    orders = [ids, ids[::-1], ids[N_RUNS // 2:] + ids[:N_RUNS // 2]]
    procs = [ctx.Process(target=_worker, args=(str(root), str(log), pause, order))
             for pause, order in zip((2.0, 0.15, 0.15), orders)]
    for p in procs:
        p.start()
    victim = procs[0]
    deadline = time.time() + 120
    while not any(e[0] == "start" and e[2] == str(victim.pid) for e in _events(log)):
        assert time.time() < deadline, "the first worker never started a run"
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)  # killed while it holds a claim and has a half-done run
    for p in procs:
        p.join(120)
    assert victim.exitcode == -signal.SIGKILL
    assert all(p.exitcode == 0 for p in procs[1:]), [p.exitcode for p in procs]
    ev = _events(log)
    killed_runs = [rid for kind, rid, pid in ev if kind == "start" and pid == str(victim.pid)]
    assert killed_runs and not any(pid == str(victim.pid) for kind, _, pid in ev if kind == "done")
    store = ResultStore(root, code_version=CV)
    # nothing lost: every run complete, including the one whose writer was killed
    assert store.run_ids() == sorted(ids)
    # nothing duplicated: each run finished exactly once, one record per run
    done = Counter(rid for kind, rid, _ in ev if kind == "done")
    assert all(done[r] == 1 for r in ids), done
    assert sorted(os.listdir(root / "runs")) == sorted(f"{r}@{CV}" for r in ids)
    for run in store:  # every record verifies (checksums) and holds what its writer computed
        seed = run.config["seed"]
        np.testing.assert_array_equal(run.streams["metrics"]["x"], np.arange(1000.0) * seed)
        assert run.provenance["code_version"] == CV and run.provenance["pid"] != victim.pid
    both_workers = {pid for kind, _, pid in ev if kind == "done"}
    assert len(both_workers) == 2  # the two surviving workers shared the work
    # the killed worker's staging debris (if any) is removable and nothing else is
    store.cleanup()
    assert all(not p.name.startswith("run-") or str(victim.pid) not in p.name for p in (root / "tmp").iterdir())


def test_racing_writers_cannot_both_publish(tmp_path):
    """Without claims, two handles writing the same run: one wins, the other gets RunExistsError."""
    from widelimit.results import RunExistsError

    a, b = ResultStore(tmp_path, code_version=CV), ResultStore(tmp_path, code_version=CV)
    a.write("r", {"who": "a"}, {"m": {"x": np.ones(3)}})
    with pytest.raises(RunExistsError):
        b.write("r", {"who": "b"}, {"m": {"x": np.zeros(3)}})
    # simulate the race past the has() check: publish directly onto the completed directory
    with pytest.raises(RunExistsError, match="concurrently"):
        b._publish(b._run_dir("r"), "r", json.dumps({"who": "b"}).encode(), {}, {},
                   {"code_version": CV}, 0.0)
    assert b.load("r").config == {"who": "a"} and os.listdir(tmp_path / "runs") == [f"r@{CV}"]


SWEEPER = """
import os, sys, time
import numpy as np
from widelimit.arch import MLP
from widelimit.train import RunConfig, RunResult, run_sweep

store, log, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
configs = [RunConfig(arch=MLP(depth=2, width=8, out_dim=1), data="teacher", data_options=dict(n_train=8, n_test=4),
                     steps=3, eval_every=1, seed=s) for s in range(n)]
if sys.argv[4] == "reverse":
    configs = configs[::-1]

def fake_train(c):
    with open(log, "a") as fh:
        fh.write(f"start {c.run_id} {os.getpid()}\\n")
    time.sleep(0.3)
    m = {k: np.linspace(1.0, 0.5, 3) for k in ("train_loss", "train_acc", "test_loss", "test_acc", "weight_decay",
                                                "lam", "time")}
    m["step"] = np.arange(3)
    return RunResult(c.canonical(), c.run_id, m, {}, {"outputs": np.zeros((3, 1, 1))})

with open(log + ".ready", "a") as fh:  # start together: wait for the other sweep
    fh.write("ready\\n")
t0 = time.time()
while open(log + ".ready").read().count("ready") < 2 and time.time() - t0 < 120:
    time.sleep(0.01)
rep = run_sweep(configs, store, progress=False, train_fn=fake_train)
print("REPORT", len(rep.trained), len(rep.by_others), len(rep.skipped), rep.complete)
"""


def test_two_concurrent_sweeps_train_each_run_once(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script, log, store = tmp_path / "sweeper.py", tmp_path / "log", tmp_path / "store"
    script.write_text(SWEEPER)
    env = dict(os.environ, PYTHONPATH=str(root))
    n = 8
    procs = [subprocess.Popen([sys.executable, str(script), str(store), str(log), str(n), order], env=env,
                              cwd=str(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for order in ("forward", "reverse")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    starts = Counter(line.split()[1] for line in log.read_text().splitlines())
    assert len(starts) == n and set(starts.values()) == {1}, starts  # each run trained exactly once
    reports = [line.split()[1:] for o in outs for line in o[0].splitlines() if line.startswith("REPORT")]
    assert sum(int(r[0]) for r in reports) == n and all(r[3] == "True" for r in reports)
    assert all(int(r[0]) >= 1 for r in reports), reports  # both sweeps really shared the work
    assert len(ResultStore(store)) == n
