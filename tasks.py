#!/usr/bin/env python3
"""One-file bootstrap for widelimit: creates the environments it needs, then runs.

    python3 tasks.py main [ARGS...]   # quick validation on sklearn digits (the main job), into out/quick;
                                      # ARGS replace the default `validate` arguments
    python3 tasks.py test [--slow] [--env nt|jax|both] [PYTEST ARGS...]

Only the standard library is used here, so this runs on a machine that has nothing but
python3 and pip. Two virtual environments live under ``.venvs/`` (git-ignored):

* ``jax`` - current JAX from the registry, *without* neural-tangents or TensorFlow, with the optional
            model adapters (flax, equinox) and the cluster engine (dask); used by ``main`` and ``test``.
* ``nt``  - the pinned stack on which neural-tangents 0.6.5 works
            (jax/jaxlib 0.4.38, tf2jax 0.3.6, tensorflow 2.21.0); built only by ``test``.

An environment is (re)built when it is missing or when ``pyproject.toml`` changed since it
was built (a hash is stored inside the environment).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENVS = ROOT / ".venvs"
EXTRAS = {"nt": "nt,dev", "jax": "dev,models,cluster"}


def _python(env: str) -> Path:
    return VENVS / env / "bin" / "python"


def _stamp() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_env(env: str) -> Path:
    """Create (or refresh) the virtual environment ``env`` and return its python."""
    if env not in EXTRAS:
        raise SystemExit(f"unknown environment {env!r}; expected one of {sorted(EXTRAS)}")
    py = _python(env)
    stamp_file = VENVS / env / "widelimit-stamp"
    stamp = _stamp()  # of the pyproject.toml this install reads (it may change while pip runs)
    if py.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return py
    print(f"[widelimit] setting up environment .venvs/{env} (first run only; this takes a few minutes)",
          flush=True)
    if not py.exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(VENVS / env)])
    pip = [str(py), "-m", "pip", "--disable-pip-version-check"]
    subprocess.check_call(pip + ["install", "-q", "--upgrade", "pip", "setuptools", "wheel"])
    cmd = pip + ["install", "-q", "--upgrade", "-e", f".[{EXTRAS[env]}]"]
    subprocess.check_call(cmd, cwd=ROOT)
    stamp_file.write_text(stamp)
    return py


def run(program: Path, args: list[str]) -> int:
    """Run ``program args`` (an environment's python or one of its scripts) in the checkout root."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return subprocess.call([str(program)] + args, cwd=ROOT, env=env)


def cmd_main(argv: list[str]) -> int:
    # The quick validation needs no neural-tangents: it runs in the current-JAX environment, so the main
    # job never installs TensorFlow. The pinned neural-tangents environment is built only by `test`.
    py = ensure_env("jax")
    args = argv or ["quick", "--size", "quick", "--out", "out/quick", "--resume"]
    return run(py, ["-m", "widelimit.cli", "validate"] + args)


def cmd_test(argv: list[str]) -> int:
    envs = ["nt", "jax"]
    extra: list[str] = []
    slow = False
    it = iter(argv)
    for a in it:
        if a == "--slow":
            slow = True
        elif a == "--env":
            choice = next(it, "both")
            envs = ["nt", "jax"] if choice == "both" else [choice]
        else:
            extra.append(a)
    marker = [] if slow else ["-m", "not slow"]
    # Test files are spread over worker processes (pytest-xdist, one file per worker at a time, so module
    # fixtures are built once); WIDELIMIT_TEST_WORKERS=0 runs everything in this process.
    n_workers = os.environ.get("WIDELIMIT_TEST_WORKERS", str(min(os.cpu_count() or 1, 2)))
    workers = ["-n", n_workers, "--dist", "loadfile"] if n_workers not in ("0", "1") else []
    status = 0
    for i, env in enumerate(envs):
        py = ensure_env(env)
        if i == 0:  # the layer contracts (.importlinter) are checked once, with import-linter
            print("\n[widelimit] ===== layer contracts (import-linter, .importlinter) =====", flush=True)
            status = run(py.parent / "lint-imports", [".importlinter"])
            print(f"[widelimit] layer contracts: exit code {status}", flush=True)
        print(f"\n[widelimit] ===== tests in environment '{env}' =====", flush=True)
        rc = run(py, ["-m", "pytest", "-q", *workers, *marker, *extra])
        print(f"[widelimit] environment '{env}': pytest exit code {rc}", flush=True)
        status = status or rc
    return status


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {"main", "test", "env"}:
        print(__doc__)
        return 2
    cmd, argv = sys.argv[1], sys.argv[2:]
    if cmd == "env":
        for env in argv or ["nt", "jax"]:
            print(ensure_env(env))
        return 0
    return cmd_main(argv) if cmd == "main" else cmd_test(argv)


if __name__ == "__main__":
    sys.exit(main())
