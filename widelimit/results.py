"""Append-only, crash-safe store of training runs.

Layout of a store directory::

    <root>/runs/<run_id>/config.json      the run's configuration (JSON)
    <root>/runs/<run_id>/<stream>.npz     one record per metric stream (arrays, no pickles)
    <root>/runs/<run_id>/COMPLETE.json    completion marker: summary, stream checksums, timestamps
    <root>/tmp/                           staging area for runs being written

Atomicity: a run is staged in ``tmp/`` (every file written to a temporary name, flushed, fsync'ed and
``os.replace``'d into place, the marker last), then the whole directory is published with one atomic
``rename`` into ``runs/``. A process killed at any moment (``kill -9``) therefore leaves either the
complete run or nothing in ``runs/`` (plus possibly debris in ``tmp/``, which readers ignore and
:meth:`ResultStore.cleanup` removes). The store is append-only: writing a run id that is already
complete raises :class:`RunExistsError`. Run ids are chosen by the caller (for training runs: the hash
of the configuration, :attr:`widelimit.train.RunConfig.run_id`).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional

import numpy as np

_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_MARKER = "COMPLETE.json"


class RunExistsError(FileExistsError):
    """The run id is already complete in the store (the store is append-only)."""


def _check_id(name: str, value) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value) or value in (".", ".."):
        raise ValueError(f"{name} must be a string of letters, digits, '_', '-', '.' (1-128 chars), "
                         f"got {value!r}")
    return value


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays (and tuples) inside ``obj`` to plain JSON types."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "__array__") and hasattr(obj, "shape"):  # jax arrays
        return np.asarray(obj).tolist()
    return obj


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _npz_bytes(arrays: Mapping[str, Any]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


@dataclass(frozen=True)
class StoredRun:
    """A complete run read back from a :class:`ResultStore`."""

    run_id: str
    config: Dict[str, Any]
    streams: Dict[str, Dict[str, np.ndarray]]
    summary: Dict[str, Any]
    written_at: float
    path: Path


class ResultStore:
    """Append-only directory of runs: ``has``, ``write``, ``load``, iteration over complete runs."""

    def __init__(self, path) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a directory path, got {path!r}")
        self.root = Path(path)
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"path {str(self.root)!r} exists and is not a directory")
        (self.root / "runs").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"ResultStore({str(self.root)!r}, {len(self)} runs)"

    # -- queries -------------------------------------------------------------------------------
    def _run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / _check_id("run_id", run_id)

    def has(self, run_id: str) -> bool:
        """Whether ``run_id`` is complete in the store."""
        return (self._run_dir(run_id) / _MARKER).is_file()

    __contains__ = has

    def run_ids(self) -> List[str]:
        """Ids of the complete runs, sorted."""
        runs = self.root / "runs"
        return sorted(p.name for p in runs.iterdir() if (p / _MARKER).is_file())

    def __len__(self) -> int:
        return len(self.run_ids())

    def __iter__(self) -> Iterator[StoredRun]:
        for rid in self.run_ids():
            yield self.load(rid)

    # -- write ---------------------------------------------------------------------------------
    def write(self, run_id: str, config: Mapping[str, Any],
              streams: Mapping[str, Mapping[str, Any]], summary: Optional[Mapping[str, Any]] = None) -> Path:
        """Store one complete run atomically and return its directory.

        ``config`` and ``summary`` must be JSON-serialisable (numpy scalars/arrays are converted);
        ``streams`` maps a stream name (e.g. ``"metrics"``, ``"layers"``, ``"probe"``) to a dict of arrays,
        each stream becoming one ``.npz`` record. Raises :class:`RunExistsError` if ``run_id`` is
        already complete.
        """
        final = self._run_dir(run_id)
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping, got {type(config).__name__}")
        if not isinstance(streams, Mapping):
            raise TypeError(f"streams must be a mapping of stream name -> dict of arrays, got "
                            f"{type(streams).__name__}")
        for name, arrays in streams.items():
            _check_id("stream name", name)
            if not isinstance(arrays, Mapping):
                raise TypeError(f"stream {name!r} must be a dict of arrays, got {type(arrays).__name__}")
        if self.has(run_id):
            raise RunExistsError(f"run {run_id!r} is already complete in {str(self.root)!r} (append-only)")
        config_bytes = json.dumps(to_jsonable(config), sort_keys=True, indent=1).encode()
        summary_obj = to_jsonable(dict(summary or {}))
        stage = self.root / "tmp" / f"{run_id}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        stage.mkdir(parents=True)
        try:
            _atomic_write(stage / "config.json", config_bytes)
            checks = {}
            for name, arrays in streams.items():
                data = _npz_bytes(arrays)
                _atomic_write(stage / f"{name}.npz", data)
                checks[name] = hashlib.sha256(data).hexdigest()
            marker = {"run_id": run_id, "written_at": time.time(), "pid": os.getpid(),
                      "streams": checks, "config_sha256": hashlib.sha256(config_bytes).hexdigest(),
                      "summary": summary_obj}
            _atomic_write(stage / _MARKER, json.dumps(marker, sort_keys=True, indent=1).encode())
            _fsync_dir(stage)
            if final.exists():  # an incomplete directory (not made by this class): move it aside
                shutil.move(str(final), str(self.root / "tmp" / f"stale-{run_id}-{uuid.uuid4().hex[:8]}"))
            try:
                os.rename(stage, final)
            except OSError as exc:  # another writer published the same run first
                if self.has(run_id):
                    raise RunExistsError(f"run {run_id!r} was completed concurrently") from exc
                raise
            _fsync_dir(final.parent)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
        return final

    # -- read ----------------------------------------------------------------------------------
    def load(self, run_id: str, *, verify: bool = True) -> StoredRun:
        """Read a complete run; with ``verify`` the stream checksums recorded in the marker are checked."""
        d = self._run_dir(run_id)
        if not (d / _MARKER).is_file():
            raise KeyError(f"run {run_id!r} is not complete in {str(self.root)!r}")
        marker = json.loads((d / _MARKER).read_text())
        config_bytes = (d / "config.json").read_bytes()
        if verify and hashlib.sha256(config_bytes).hexdigest() != marker["config_sha256"]:
            raise ValueError(f"run {run_id!r}: config.json does not match its checksum (corrupted store)")
        streams = {}
        for name, digest in marker["streams"].items():
            data = (d / f"{name}.npz").read_bytes()
            if verify and hashlib.sha256(data).hexdigest() != digest:
                raise ValueError(f"run {run_id!r}: stream {name!r} does not match its checksum")
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                streams[name] = {k: z[k] for k in z.files}
        return StoredRun(run_id, json.loads(config_bytes), streams, marker["summary"],
                         marker["written_at"], d)

    def cleanup(self) -> int:
        """Remove staging debris left by killed writers (those whose process is gone). Returns the count."""
        removed = 0
        for p in (self.root / "tmp").iterdir():
            m = re.match(r"^.+\.(\d+)\.[0-9a-f]{8}$", p.name)
            if m and _pid_alive(int(m.group(1))):
                continue
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed += 1
        return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["ResultStore", "StoredRun", "RunExistsError", "to_jsonable"]
