#!/usr/bin/env python3
"""The one prepared device script: every study at one size, within a hard time budget, resumable.

Usage (from the repository root; installs nothing)::

    python validation/gpu/run.py --out "$OUT"                       # full sizes (planned), 540 s budget
    python validation/gpu/run.py --size smoke --studies width --budget-s 60 --out /tmp/o   # CPU rehearsal

What it does, in order:

1. Checks what the machine has. Missing pure-data dependencies are replaced by shims served from
   ``validation/gpu/data/datasets.npz`` (sklearn's digits, MNIST-1D at the default generator arguments,
   written on a CPU machine by ``--bundle-data``) and a no-op ``tqdm``; nothing is installed.
2. Sets float32 matmuls to full precision (``jax_default_matmul_precision = "highest"``: no TF32).
3. Measures training throughput on the largest planned MLP (samples/s, achieved FLOP/s against the fp32
   peak of :data:`widelimit.studies.plan.PEAK_FP32`).
4. Runs the studies cheapest-first (predicted by :func:`widelimit.studies.plan.plan`; for ``full`` the
   resized entries :func:`~widelimit.studies.plan.proposed_full` by default, ``--table-sizes`` for the
   studies' own tables), each in a subprocess killed when the budget runs out. Every run and point is
   stored as it finishes in ``--work`` (default ``out/gpu-work``, git-ignored), so calling the script
   again resumes; ``--resume-from`` unpacks a ``results.tar.gz`` of an earlier call first.
5. Packs ``$OUT/results.tar.gz`` (the stores), ``$OUT/reports.tar.gz`` (Markdown, JSON, PNG) and
   ``$OUT/summary.json`` (machine, plan, per-study status and seconds, throughput).

Exit status: 0 when every study finished, 3 when the budget ran out first (rerun to resume), 2 on bad
arguments, 1 when a study failed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = Path(__file__).resolve().parent / "data" / "datasets.npz"
RESERVE_S = 15.0  # kept back from the budget for packing (at most 10% of it)


# -- dependency shims ---------------------------------------------------------------------------------
def install_shims() -> list:
    """Shims for missing data/progress packages; returns the names shimmed."""
    import numpy as np

    def missing(mod: str) -> bool:
        try:
            __import__(mod)
        except ImportError:
            return True
        return False

    done = []
    if missing("tqdm.auto"):
        class _Bar:
            def __init__(self, iterable=None, *a, **k):
                self.iterable = iterable

            def __iter__(self):
                return iter(self.iterable if self.iterable is not None else [])

            def update(self, n=1):
                pass

            def close(self):
                pass

            def set_postfix(self, *a, **k):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *e):
                pass
        tq = types.ModuleType("tqdm")
        auto = types.ModuleType("tqdm.auto")
        auto.tqdm = tq.tqdm = _Bar
        tq.auto = auto
        sys.modules.update({"tqdm": tq, "tqdm.auto": auto})
        done.append("tqdm")
    need_digits = missing("sklearn.datasets")
    need_m1d = missing("mnist1d.data")
    if (need_digits or need_m1d) and not BUNDLE.exists():
        raise SystemExit(f"sklearn/mnist1d missing and no data bundle at {BUNDLE}: run --bundle-data on a "
                         "machine that has them")
    if need_digits or need_m1d:
        z = dict(np.load(BUNDLE, allow_pickle=False))
    if need_digits:
        sk = types.ModuleType("sklearn")
        ds = types.ModuleType("sklearn.datasets")
        ds.load_digits = lambda: types.SimpleNamespace(data=z["digits_data"], target=z["digits_target"])
        sk.datasets = ds
        sys.modules.update({"sklearn": sk, "sklearn.datasets": ds})
        done.append("sklearn.datasets (bundled digits)")
    if need_m1d:
        args0 = json.loads(str(z["mnist1d_args"]))
        m1 = types.ModuleType("mnist1d")
        md = types.ModuleType("mnist1d.data")

        def make_dataset(args):
            if {k: v for k, v in vars(args).items()} != args0:
                raise RuntimeError("the bundled MNIST-1D covers the default generator arguments only")
            return {k: z[f"mnist1d_{k}"] for k in ("x", "y", "x_test", "y_test")}
        md.get_dataset_args = lambda: types.SimpleNamespace(**args0)
        md.make_dataset = make_dataset
        m1.data = md
        sys.modules.update({"mnist1d": m1, "mnist1d.data": md})
        done.append("mnist1d.data (bundled)")
    return done


def bundle_data() -> Path:
    """Write the data bundle (needs sklearn and mnist1d): digits and MNIST-1D at default arguments."""
    import random

    import mnist1d.data as m1d
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    args = m1d.get_dataset_args()
    state = np.random.get_state(), random.getstate()
    ds = m1d.make_dataset(args)
    np.random.set_state(state[0])
    random.setstate(state[1])
    BUNDLE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(BUNDLE, digits_data=d.data, digits_target=d.target,
                        mnist1d_args=json.dumps({k: v for k, v in vars(args).items()}),
                        **{f"mnist1d_{k}": np.asarray(ds[k]) for k in ("x", "y", "x_test", "y_test")})
    return BUNDLE


# -- one study in a subprocess ------------------------------------------------------------------------
STUDY_CHILD = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("widelimit_gpu_run", {script!r})
gpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu)
gpu.install_shims()
import jax
jax.config.update("jax_default_matmul_precision", "highest")
name, size, out, planned = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
if planned:
    import importlib
    from widelimit.studies.plan import proposed_full
    mod = importlib.import_module("widelimit.studies." + name)
    table = getattr(mod, "SIZES", None) or getattr(mod, "_SETTINGS")
    table[size] = proposed_full()[name]
from widelimit.studies import get_study
print("REPORT", get_study(name)(size, out, progress=False))
"""


def run_study(name: str, size: str, reports: Path, planned: bool, timeout: float) -> dict:
    t0 = time.perf_counter()
    code = STUDY_CHILD.format(script=str(Path(__file__).resolve()))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = reports / f"{name}.log"
    with open(log, "w") as fh:
        p = subprocess.Popen([sys.executable, "-c", code, name, size, str(reports), "1" if planned else "0"],
                             cwd=str(ROOT), env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = p.wait(timeout=max(1.0, timeout))
            status = "done" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)  # the stores are crash-safe: everything finished so far is kept
            p.wait()
            status, rc = "budget", None
    tail = log.read_text()[-2000:] if log.exists() else ""
    return {"study": name, "status": status, "rc": rc, "seconds": time.perf_counter() - t0,
            "log_tail": tail if status != "done" else ""}


# -- throughput ---------------------------------------------------------------------------------------
def throughput(width: int, n_train: int, steps: int, members: int) -> dict:
    """Train one vmapped ensemble of the largest planned MLP shape; samples/s and achieved FLOP/s."""
    import jax

    from widelimit.arch import MLP
    from widelimit.studies.plan import PEAK_FP32, Workload, run_flops
    from widelimit.train import RunConfig
    from widelimit.train.ensemble import train_members

    cfg = RunConfig(arch=MLP(depth=3, width=width, out_dim=10), data="teacher",
                    data_options=dict(n_train=n_train, n_test=256, in_dim=64, out_dim=10), learning_rate=0.05,
                    steps=steps, eval_every=steps, probe_size=0)
    res = train_members([cfg.replace(seed=s) for s in range(members)])
    w = Workload("throughput", "", cfg.arch, (64,), n_train, 256, None, steps, steps, members)
    fl = run_flops(w) * members
    run_s = res.info["run_s"]
    return {"width": width, "n_train": n_train, "steps": steps, "members": members, "run_s": run_s,
            "compile_s": res.info["compile_s"], "samples_per_s": members * steps * n_train / run_s,
            "achieved_flops": fl / run_s, "fraction_of_fp32_peak": fl / run_s / PEAK_FP32,
            "devices": [str(d) for d in jax.devices()]}


def check_planned_sizes(studies) -> list:
    """Each planned entry must have exactly the keys of the study's own ``full`` entry (per variant for
    list-valued tables), so that the study reads it as it reads its table; returns the problems found."""
    import importlib

    from widelimit.studies.plan import proposed_full
    ov, problems = proposed_full(), []
    for name in studies:
        mod = importlib.import_module(f"widelimit.studies.{name}")
        own = (getattr(mod, "SIZES", None) or getattr(mod, "_SETTINGS"))["full"]
        new = ov[name]
        pairs = list(zip(own, new)) if isinstance(own, list) else [(own, new)]
        if isinstance(own, list) and len(own) != len(new):
            problems.append(f"{name}: {len(new)} variants planned, the table has {len(own)}")
        for o, n in pairs:
            if set(o) != set(n):
                problems.append(f"{name}: planned keys differ from the table's: {sorted(set(o) ^ set(n))}")
    return problems


def _pack(out: Path, work: Path, reports: Path) -> list:
    made = []
    with tarfile.open(out / "results.tar.gz", "w:gz") as tf:
        cache = reports / ".cache"
        if cache.exists():
            tf.add(cache, arcname="reports-cache")
    made.append("results.tar.gz")
    with tarfile.open(out / "reports.tar.gz", "w:gz") as tf:
        for f in sorted(reports.glob("*")):
            if f.is_file() and f.suffix in (".md", ".json", ".png", ".log"):
                tf.add(f, arcname=f"reports/{f.name}")
    made.append("reports.tar.gz")
    return made


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="full", choices=("smoke", "quick", "medium", "full"))
    ap.add_argument("--studies", nargs="*", default=None, help="default: all")
    ap.add_argument("--budget-s", type=float, default=540.0, help="hard wall-clock budget (seconds)")
    ap.add_argument("--out", required=True, help="where the packed results go (e.g. $OUT)")
    ap.add_argument("--work", default=str(ROOT / "out" / "gpu-work"), help="persistent stores (resume)")
    ap.add_argument("--resume-from", default=None, help="a results.tar.gz from an earlier call")
    ap.add_argument("--table-sizes", action="store_true", help="full: the studies' own tables, not the plan's")
    ap.add_argument("--throughput", default="auto", help="'off', or WIDTH,N_TRAIN,STEPS,MEMBERS")
    ap.add_argument("--bundle-data", action="store_true", help="write the data bundle and exit")
    ap.add_argument("--dry-run", action="store_true", help="print the plan, check the planned sizes, train nothing")
    a = ap.parse_args(argv)
    if a.bundle_data:
        print(bundle_data())
        return 0
    t_start = time.monotonic()
    deadline = t_start + a.budget_s
    reserve = min(RESERVE_S, 0.1 * a.budget_s)
    out, work = Path(a.out), Path(a.work)
    for p, name in ((out, "--out"), (work, "--work")):
        if p.exists() and not p.is_dir():
            ap.error(f"{name} {str(p)!r} exists and is not a directory")
        p.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    from widelimit.studies.plan import STUDIES, plan, proposed_full
    studies = list(a.studies or STUDIES)
    bad = [s for s in studies if s not in STUDIES]
    if bad:
        ap.error(f"--studies: unknown {bad}; choose from {list(STUDIES)}")
    shims = install_shims()
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")
    import jax
    jax.config.update("jax_default_matmul_precision", "highest")
    from widelimit.provenance import provenance
    if a.resume_from:
        with tarfile.open(a.resume_from) as tf:
            tf.extractall(work / "unpacked", filter="data")
        cache = work / "unpacked" / "reports-cache"
        if cache.exists():
            (work / "reports" / ".cache").mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-a", "-n", f"{cache}/.", str(work / "reports" / ".cache")], check=False)
    reports = work / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    planned = a.size == "full" and not a.table_sizes
    if a.dry_run:
        from widelimit.studies.plan import format_plan
        problems = check_planned_sizes(studies) if planned else []
        print(format_plan(plan(a.size, "H200", studies, overrides=proposed_full() if planned else None)))
        for msg in problems:
            print("PROBLEM", msg)
        return 1 if problems else 0
    try:
        pl = plan(a.size, "H200", studies, overrides=proposed_full() if planned else None)
        order = sorted(studies, key=lambda s: pl.study_s.get(s, 0.0))
        plan_info = {"predicted_s": pl.study_s, "total_s": pl.total_s, "assumptions": pl.assumptions}
    except (ValueError, KeyError) as exc:  # a size the plan does not model
        order, plan_info = studies, {"error": str(exc)}
    summary = {"size": a.size, "planned_sizes": planned, "budget_s": a.budget_s, "shims": shims,
               "provenance": provenance(), "backend": jax.default_backend(),
               "devices": [str(d) for d in jax.devices()], "plan": plan_info, "studies": []}
    if a.throughput != "off" and time.monotonic() < deadline - reserve:
        on_gpu = jax.default_backend() == "gpu"
        spec = (a.throughput if a.throughput != "auto" else ("4096,2048,200,8" if on_gpu else "128,128,20,2"))
        w, n, s, m = (int(v) for v in spec.split(","))
        summary["throughput"] = throughput(w, n, s, m)
        print("throughput", json.dumps(summary["throughput"]), flush=True)
    status = 0
    for name in order:
        left = deadline - reserve - time.monotonic()
        if left <= 1:
            summary["studies"].append({"study": name, "status": "budget", "seconds": 0.0})
            status = status or 3
            continue
        r = run_study(name, a.size, reports, planned, left)
        print(f"{name}: {r['status']} in {r['seconds']:.0f} s", flush=True)
        summary["studies"].append(r)
        if r["status"] == "budget":
            status = status or 3
        elif r["status"] == "failed":
            status = 1
    summary["elapsed_s"] = time.monotonic() - t_start
    summary["packed"] = _pack(out, work, reports) + ["summary.json"]
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"packed {summary['packed']} into {out}; status {status}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
