"""Provenance of stored runs: which code trained them.

:func:`code_version` is a hash of the *contents* of the source files that determine what a training run
computes (the training harness ``widelimit/train``, the networks ``widelimit/nets``, the architecture
specs ``widelimit/arch.py``, the datasets ``widelimit/data.py`` and the precision switch
``widelimit/_x64.py``; see :data:`TRAINING_SOURCES`). It is computed once per process from the files
themselves, not from git, so it is the same in a checkout, in a copy without ``.git`` on a GPU machine and
in a cluster worker that imports the same files. A stored run is reused only when its recorded code
version equals the current one (:class:`widelimit.results.ResultStore`).

:func:`provenance` adds what is useful to a reader but not part of the identity: the git commit and
whether the tree had uncommitted changes (``None`` outside a git checkout), the host, and library
versions.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

PACKAGE_ROOT = Path(__file__).resolve().parent

#: paths (relative to the package directory) whose ``.py`` files define what a training run computes
TRAINING_SOURCES: Tuple[str, ...] = ("train", "nets", "arch.py", "data.py", "_x64.py")


def source_files(sources: Sequence[str] = TRAINING_SOURCES, root: Path = PACKAGE_ROOT) -> Tuple[Path, ...]:
    """The ``.py`` files named by ``sources`` (files or directories, searched recursively), sorted."""
    out = []
    for rel in sources:
        p = Path(root) / rel
        if p.is_dir():
            out.extend(q for q in p.rglob("*.py") if "__pycache__" not in q.parts)
        elif p.is_file():
            out.append(p)
        else:
            raise ValueError(f"sources: {rel!r} is neither a file nor a directory under {str(root)!r}")
    return tuple(sorted(set(out)))


def hash_sources(sources: Sequence[str] = TRAINING_SOURCES, root: Path = PACKAGE_ROOT) -> str:
    """``"cv-"`` + the first 16 hex digits of sha256 over (relative path, file bytes) of
    :func:`source_files`; independent of file times, the absolute location and git."""
    h = hashlib.sha256()
    for f in source_files(sources, root):
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        data = f.read_bytes()
        h.update(len(data).to_bytes(8, "little") + data)
    return "cv-" + h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def code_version() -> str:
    """The code version of the training sources of this process (computed once, then cached)."""
    return hash_sources()


def _git(args, cwd) -> Optional[str]:
    try:
        r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


@functools.lru_cache(maxsize=None)
def git_state() -> Tuple[Optional[str], Optional[bool]]:
    """``(commit, dirty)`` of the checkout holding this package, or ``(None, None)`` outside git.
    ``dirty``: tracked files differ from the commit (untracked files are ignored)."""
    root = PACKAGE_ROOT.parent
    if not (root / ".git").exists():
        return None, None
    sha = _git(["rev-parse", "HEAD"], root)
    if not sha:
        return None, None
    status = _git(["status", "--porcelain", "--untracked-files=no"], root)
    return sha, (None if status is None else bool(status))


def provenance() -> Dict[str, Any]:
    """JSON-able record stored with every run: ``code_version``, ``git_commit``, ``git_dirty``,
    ``host``, ``python``, ``jax``/``jaxlib``/``numpy`` versions (those already imported; none is imported
    here)."""
    commit, dirty = git_state()
    out: Dict[str, Any] = {"code_version": code_version(), "git_commit": commit, "git_dirty": dirty,
                           "host": socket.gethostname(), "python": platform.python_version()}
    for mod in ("jax", "jaxlib", "numpy"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", None)
    out["pid"] = os.getpid()
    return out


__all__ = ["TRAINING_SOURCES", "source_files", "hash_sources", "code_version", "git_state", "provenance"]
