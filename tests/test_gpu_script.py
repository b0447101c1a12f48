"""The prepared device script (validation/gpu/run.py) rehearsed on the CPU at the smoke size: a hard
budget, incremental stores that a second call resumes, a few packed files; data shims equal the real data."""
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "validation" / "gpu" / "run.py"


def _call(out, work, *args, timeout=400):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--work", str(work), *args], cwd=str(ROOT),
                       env=env, capture_output=True, text=True, timeout=timeout)
    return p, time.monotonic() - t0


def _stored(work):
    from widelimit.results import ResultStore
    out = {}
    for d in sorted((work / "reports" / ".cache").glob("*")):
        st = ResultStore(d)
        out.update({(d.name, rid): st.load(rid).written_at for rid in st.run_ids()})
    return out


def test_hard_budget_kills_the_study_and_still_packs(tmp_path):
    """Fast smoke: a budget far too short for the study; the script stops it, packs, exits 3.

    The study is the width study at quick size (minutes of training even on a quiet machine), so the 20 s
    budget is certain to run out whatever the load (at smoke size a quiet machine finished it in 15 s)."""
    budget = 20.0
    p, wall = _call(tmp_path / "o", tmp_path / "w", "--size", "quick", "--studies", "width", "--budget-s",
                    str(budget), "--throughput", "off", timeout=200)
    assert p.returncode == 3, p.stdout[-2000:] + p.stderr[-2000:]
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert sorted(os.listdir(tmp_path / "o")) == ["reports.tar.gz", "results.tar.gz", "summary.json"]
    assert s["elapsed_s"] <= budget + 5, "the hard budget was not kept"
    assert [(r["study"], r["status"]) for r in s["studies"]] == [("width", "budget")]
    assert s["studies"][0]["seconds"] > 1  # it was started, then killed at the deadline
    assert s["provenance"]["code_version"].startswith("cv-") and s["plan"]["predicted_s"]["width"] > 0


@pytest.mark.slow
def test_budget_resume_and_packing(tmp_path):
    work = tmp_path / "work"
    budget = 20.0
    p1, wall1 = _call(tmp_path / "o1", work, "--size", "smoke", "--studies", "width", "--budget-s", str(budget),
                      "--throughput", "off")
    assert p1.returncode in (0, 3), p1.stdout[-2000:] + p1.stderr[-2000:]
    s1 = json.loads((tmp_path / "o1" / "summary.json").read_text())
    assert s1["elapsed_s"] <= budget + 10, "the hard budget was not kept"
    assert (p1.returncode == 3) == (s1["studies"][0]["status"] == "budget")
    first = _stored(work)
    # second call: resumes from the stores; nothing stored before is redone or rewritten
    p2, _ = _call(tmp_path / "o2", work, "--size", "smoke", "--studies", "width", "--budget-s", "300",
                  "--throughput", "off")
    assert p2.returncode == 0, p2.stdout[-2000:] + p2.stderr[-2000:]
    second = _stored(work)
    assert all(second.get(k) == v for k, v in first.items())
    assert len(second) > len(first) or p1.returncode == 0
    with tarfile.open(tmp_path / "o2" / "reports.tar.gz") as tf:
        names = tf.getnames()
    assert "reports/width.md" in names and "reports/width.json" in names
    with tarfile.open(tmp_path / "o2" / "results.tar.gz") as tf:
        assert any(n.startswith("reports-cache/width-smoke/runs/") for n in tf.getnames())
    # a fresh work directory resumes from the packed archive of the second call: nothing retrained
    p3, _ = _call(tmp_path / "o3", tmp_path / "work2", "--size", "smoke", "--studies", "width", "--budget-s",
                  "300", "--throughput", "off", "--resume-from", str(tmp_path / "o2" / "results.tar.gz"))
    assert p3.returncode == 0, p3.stdout[-2000:] + p3.stderr[-2000:]
    assert _stored(tmp_path / "work2") == second


def test_bad_arguments_exit_2(tmp_path):
    (tmp_path / "file").write_text("x")
    p, _ = _call(tmp_path / "file", tmp_path / "w", "--size", "smoke", timeout=120)
    assert p.returncode == 2 and "--out" in p.stderr
    p, _ = _call(tmp_path / "o", tmp_path / "w", "--studies", "nope", "--size", "smoke", timeout=120)
    assert p.returncode == 2 and "--studies" in p.stderr


def test_data_shims_equal_the_real_packages(tmp_path):
    """On a machine without sklearn / mnist1d / tqdm the script serves the bundled data: identical arrays."""
    child = textwrap.dedent(f"""
        import sys, json, importlib.util
        for m in ("sklearn", "sklearn.datasets", "mnist1d", "mnist1d.data", "tqdm", "tqdm.auto"):
            sys.modules[m] = None  # as if not installed
        spec = importlib.util.spec_from_file_location("gpu_run", {str(SCRIPT)!r})
        gpu = importlib.util.module_from_spec(spec); spec.loader.exec_module(gpu)
        print(json.dumps(gpu.install_shims()))
        import numpy as np
        from widelimit.data import load_dataset
        d = load_dataset("digits"); m = load_dataset("mnist1d", cache=False)
        np.savez({str(tmp_path / "shim.npz")!r}, dx=d.x_train, dy=d.y_train, mx=m.x_train, my=m.y_test)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", child], cwd=str(ROOT), env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(json.loads(p.stdout.strip().splitlines()[-1])) == 3
    from widelimit.data import load_dataset
    d, m = load_dataset("digits"), load_dataset("mnist1d", cache=False)
    z = np.load(tmp_path / "shim.npz")
    for a, b in ((z["dx"], d.x_train), (z["dy"], d.y_train), (z["mx"], m.x_train), (z["my"], m.y_test)):
        np.testing.assert_array_equal(a, np.asarray(b))


@pytest.mark.slow
def test_full_rehearsal_all_studies_smoke(tmp_path):
    p, _ = _call(tmp_path / "o", tmp_path / "w", "--size", "smoke", "--budget-s", "900", timeout=1000)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert {r["study"] for r in s["studies"]} == set(json.loads(json.dumps(s["plan"]["predicted_s"])))
    assert all(r["status"] == "done" for r in s["studies"])
    assert s["throughput"]["samples_per_s"] > 0


def test_dry_run_plans_full_and_checks_the_planned_sizes(tmp_path):
    p, _ = _call(tmp_path / "o", tmp_path / "w", "--dry-run", timeout=200)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "**total**" in p.stdout and "PROBLEM" not in p.stdout
    total = float(p.stdout.split("**total** | **")[1].split("**")[0])
    assert 420 < total < 580  # the planned full sizes fit one ~9-minute GPU command
