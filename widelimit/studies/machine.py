"""How a report was made: the git state of the checkout (and the refusal to write committed reports from
a dirty tree), the machine, and the command line.

* :func:`git_state` / :func:`check_provenance` — commit and dirtiness of this checkout; reports written
  into the committed ``validation/`` from a tree with uncommitted code changes are refused unless
  ``WIDELIMIT_ALLOW_DIRTY=1`` (:func:`allow_dirty_from_env`).
* :func:`machine_info` — a JSON-able description of the machine (CPU model, cores available, memory,
  JAX version/backend/devices, Python/NumPy versions, git commit); :func:`format_machine` one line of it.
* :func:`command_line` — the exact command line of this process (``sys.argv``), shell-quoted, plus
  :func:`reproduce_command`, the canonical call that regenerates a study.
"""
from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]


# -- machine and command ----------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gib() -> Optional[float]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class GitState:
    """The code a report was made with: ``commit`` (short hash, None outside a git checkout) and ``dirty``
    (tracked files other than ``validation/`` and ``README.md`` differ from the commit: the report may not
    be reproducible from ``commit``)."""

    commit: Optional[str]
    dirty: bool

    def describe(self) -> str:
        if self.commit is None:
            return "unknown (not a git checkout)"
        return self.commit + (" (with uncommitted changes outside validation/ and README.md)" if self.dirty else " (clean)")


def git_state(root: Optional[PathLike] = None) -> GitState:
    """Commit and dirtiness of the checkout at ``root`` (default: this package's repository). Generated
    outputs under ``validation/`` and ``README.md`` (whose findings block the report rebuilds; no study reads
    it) do not count as dirty: regenerating several studies or sizes in a row changes them."""
    root = Path(root) if root is not None else REPO_ROOT
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)validation",
                                ":(exclude)README.md"], cwd=root, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return GitState(None, False)
    return GitState(sha or None, bool(dirty) if sha else False)


def _git_commit() -> Optional[str]:
    g = git_state()
    return None if g.commit is None else g.describe()


def allow_dirty_from_env() -> bool:
    """``WIDELIMIT_ALLOW_DIRTY=1`` in the environment: write committed reports from a dirty tree anyway."""
    return os.environ.get("WIDELIMIT_ALLOW_DIRTY", "") not in ("", "0")


def check_provenance(out_dir: PathLike, allow_dirty: Optional[bool] = None) -> GitState:
    """Refuse (RuntimeError) to write reports into the repository's committed ``validation/`` from a tree
    with uncommitted code changes, unless ``allow_dirty`` (default: :func:`allow_dirty_from_env`); such a
    report then says so. Called before any compute and again when the report is written. Reports written
    elsewhere only record the state."""
    g = git_state()
    allow = allow_dirty_from_env() if allow_dirty is None else bool(allow_dirty)
    try:
        inside = Path(out_dir).resolve().is_relative_to((REPO_ROOT / "validation").resolve())
    except (OSError, ValueError):
        inside = False
    if inside and g.dirty and not allow:
        raise RuntimeError(f"out_dir {str(out_dir)!r} is the committed validation/ and the tree has uncommitted "
                           "code changes: commit first, or set WIDELIMIT_ALLOW_DIRTY=1 (the report will say so)")
    return g


def machine_info() -> Dict[str, Any]:
    """Describe the machine this process runs on (JSON-able dict).

    Keys: ``platform``, ``cpu``, ``cpus_available`` (cores this process may use), ``cpus_total``,
    ``memory_gib``, ``python``, ``numpy``, ``jax``, ``jax_backend``, ``jax_devices``, ``git_commit``.
    """
    try:
        avail = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        avail = os.cpu_count()
    info: Dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus_available": avail,
        "cpus_total": os.cpu_count(),
        "memory_gib": _mem_total_gib(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    try:
        import jax
        info["jax"] = jax.__version__
        info["jax_backend"] = jax.default_backend()
        info["jax_devices"] = [str(getattr(d, "device_kind", d)) for d in jax.devices()]
    except Exception as exc:  # pragma: no cover - jax is a hard dependency
        info["jax"] = f"unavailable ({exc})"
    info["git_commit"] = _git_commit()
    return info


def format_machine(info: Mapping[str, Any]) -> str:
    """One Markdown line describing ``machine_info()``."""
    devs = info.get("jax_devices") or []
    dev = f"{len(devs)}× {devs[0]}" if devs else "?"
    mem = info.get("memory_gib")
    return (f"{info.get('cpu', '?')}, {info.get('cpus_available', '?')} of {info.get('cpus_total', '?')} "
            f"cores available, {mem if mem is not None else '?'} GiB RAM; {info.get('platform', '?')}; "
            f"Python {info.get('python', '?')}, NumPy {info.get('numpy', '?')}, JAX {info.get('jax', '?')} "
            f"(backend {info.get('jax_backend', '?')}: {dev}); git {info.get('git_commit') or '?'}")


def command_line(argv: Optional[Sequence[str]] = None) -> str:
    """The exact command line of this process, shell-quoted.

    ``sys.executable`` is shown relative to the current directory when it lies below it (e.g.
    ``.venvs/nt/bin/python``); a script argv[0] ending in ``widelimit/cli.py`` or ``__main__.py`` is shown
    as ``-m widelimit.cli`` so the command can be pasted back.
    """
    argv = list(sys.argv if argv is None else argv)
    exe = sys.executable or "python"
    try:
        exe = os.path.relpath(exe) if not os.path.relpath(exe).startswith("..") else exe
    except ValueError:
        pass
    if argv:
        a0 = argv[0].replace(os.sep, "/")
        if a0.endswith("widelimit/cli.py") or a0.endswith("widelimit/__main__.py"):
            argv = ["-m", "widelimit.cli"] + argv[1:]
        elif a0.endswith("pytest/__main__.py") or a0.endswith("/pytest") or a0 == "pytest":
            argv = ["-m", "pytest"] + argv[1:]
        elif a0 == "-c":
            argv = ["-c", "..."] + argv[1:]
        else:
            try:
                rel = os.path.relpath(argv[0])
                argv = [rel if not rel.startswith("..") else argv[0]] + argv[1:]
            except ValueError:
                pass
    return " ".join(shlex.quote(a) for a in [exe] + argv)


def reproduce_command(name: str, size: str, out_dir: PathLike) -> str:
    """The canonical command that regenerates study ``name`` at ``size`` into ``out_dir``
    (``smoke`` is not a command-line size: it is given as the equivalent Python call)."""
    out = Path(out_dir).as_posix()
    if size == "smoke":
        return (f"PYTHONPATH=. .venvs/nt/bin/python -c \"from widelimit.studies import get_study; "
                f"get_study('{name}')('smoke', '{out}')\"")
    return f"PYTHONPATH=. .venvs/nt/bin/python -m widelimit.cli validate {name} --size {size} --out {out}"


__all__ = ["REPO_ROOT", "GitState", "git_state", "allow_dirty_from_env", "check_provenance", "machine_info",
           "format_machine", "command_line", "reproduce_command"]
