"""Output paths, checked before any computation, and moving an old run store aside (never deleting).

Every check raises :class:`~widelimit.cli.errors.UsageError` with a one-line message that starts with the
option (``--out: ...``), so the command exits with status 2 before it computes anything.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Iterable, List

from .errors import UsageError


def _writable_ancestor(path: Path, option: str) -> Path:
    """The nearest existing ancestor of ``path`` (or ``path`` itself); it must be a directory we can write
    in. Writability is probed by creating (and removing) a temporary file, which also catches read-only
    file systems and root-owned mounts where permission bits say nothing."""
    p = path
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    if not p.is_dir():
        raise UsageError(f"{option}: {str(p)!r} is a file, so {str(path)!r} cannot be created below it")
    try:
        with tempfile.NamedTemporaryFile(dir=p, prefix=".widelimit-probe-"):
            pass
    except OSError as e:
        raise UsageError(f"{option}: cannot write in {str(p)!r} ({e.strerror or e})") from None
    return p


def check_out_dir(path: Path, option: str = "--out", *, files: Iterable[str] = (), force: bool = False) -> Path:
    """``path`` must be a directory (existing or creatable) we can write in. ``files`` are the names the
    command will write there: an existing one is an error unless ``force``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option}: {str(path)!r} exists and is a file, not a directory")
    _writable_ancestor(path, option)
    if not force:
        existing = [n for n in files if (path / n).exists()]
        if existing:
            raise UsageError(f"{option}: {str(path)!r} already holds {', '.join(existing)}; pass --force to "
                             "overwrite, or choose another directory")
    return path


def check_out_files(paths: Iterable[Path], option: str = "--out", *, force: bool = False) -> List[Path]:
    """Each of ``paths`` must be a file we can create, or overwrite with ``force`` (never a directory)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            raise UsageError(f"{option}: {str(p)!r} is a directory; give a file name such as "
                             f"{str(p / 'table.md')!r}")
        if p.exists() and not force:
            raise UsageError(f"{option}: {str(p)!r} exists; pass --force to overwrite it")
        _writable_ancestor(p.parent, option)
        out.append(p)
    return out


def move_aside(path: Path) -> Path:
    """Rename ``path`` to ``<name>.old-<YYYYmmdd-HHMMSS>`` next to it (a suffix ``-2``, ``-3``... if that
    exists) and return the new path. Nothing is deleted."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.old-{stamp}")
    k = 2
    while target.exists():
        target = path.with_name(f"{path.name}.old-{stamp}-{k}")
        k += 1
    os.replace(path, target)
    return target
