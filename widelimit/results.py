"""Append-only, crash-safe, multi-writer store of training runs, each tagged with the code that made it.

Layout of a store directory::

    <root>/runs/<run_id>@<code_version>/config.json    the run's configuration (JSON)
    <root>/runs/<run_id>@<code_version>/<stream>.npz   one record per metric stream (arrays, no pickles)
    <root>/runs/<run_id>@<code_version>/COMPLETE.json  completion marker: summary, stream checksums,
                                                       timestamps, provenance (code version, git commit,
                                                       dirty flag, host, library versions)
    <root>/runs/<run_id>/                              a record of the earlier format (no code version)
    <root>/locks/<run_id>@<code_version>.lock          claim files (POSIX record locks, see below)
    <root>/tmp/                                        staging area for runs being written

**Provenance.** A store handle works at one code version (default
:func:`widelimit.provenance.code_version`, the hash of the training sources): ``has``, ``load``,
``run_ids`` and iteration see only the runs recorded at that version, so a run trained by different code
is never reused — it is recomputed and stored beside the old record, which is kept (never deleted).
Records of other versions stay readable with ``load(run_id, code_version=...)``; :meth:`ResultStore.versions`
lists them. Records of the earlier format carry no code version (:data:`LEGACY`); they are read with
``code_version=LEGACY`` and are reused only after an explicit :meth:`ResultStore.migrate_legacy`.

**Atomicity.** A run is staged in ``tmp/`` (every file written to a temporary name, flushed, fsync'ed
and ``os.replace``'d into place, the marker last), then the whole directory is published with one atomic
``rename`` into ``runs/``. A process killed at any moment (``kill -9``) leaves either the complete run or
nothing in ``runs/`` (plus possibly debris in ``tmp/``, which readers ignore and
:meth:`ResultStore.cleanup` removes). Writing a run that is already complete raises
:class:`RunExistsError`; two writers racing on the same run cannot both publish (``rename`` onto a
non-empty directory fails), so there are never duplicates.

**Concurrent writers** (processes, machines on a shared filesystem): :meth:`ResultStore.claim` takes an
exclusive POSIX record lock (``fcntl.lockf``) on the run's lock file, so only one worker trains a given
run at a time. The kernel (or the NFS lock manager) drops the lock when its holder dies, even by
``SIGKILL``, so there are no stale locks to clean up; the shared filesystem must support POSIX locks
(local disks, NFSv3 with lockd, NFSv4, Lustre/GPFS mounted with locking). Run ids are chosen by the
caller (for training runs: the configuration hash :attr:`widelimit.train.RunConfig.run_id`).
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np

_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_MARKER = "COMPLETE.json"
_CV_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
#: code version of records written before code versions were stored (layout ``runs/<run_id>/``)
LEGACY = "legacy"


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
    """A complete run read back from a :class:`ResultStore`.

    ``code_version``: the code version it was recorded at (:data:`LEGACY` for the earlier format);
    ``provenance``: what the writer recorded (code version, git commit and dirty flag, host, versions).
    """

    run_id: str
    config: Dict[str, Any]
    streams: Dict[str, Dict[str, np.ndarray]]
    summary: Dict[str, Any]
    written_at: float
    path: Path
    code_version: str = LEGACY
    provenance: Dict[str, Any] = field(default_factory=dict)


# locks held by this process (POSIX record locks are per process: a second claim from the same process
# would succeed at the kernel level and closing it would drop the first, so claims are also tracked here)
_HELD: set = set()
_HELD_GUARD = threading.Lock()


class Claim:
    """An exclusive claim on one run (context manager; truthy when acquired). See :meth:`ResultStore.claim`."""

    def __init__(self, path: Path, blocking: bool, timeout: Optional[float], poll: float = 0.05) -> None:
        self.path = path
        self.blocking = blocking
        self.timeout = timeout
        self.poll = poll
        self.acquired = False
        self._fd: Optional[int] = None
        self._key = str(path)

    def _try(self) -> bool:
        with _HELD_GUARD:
            if self._key in _HELD:
                return False
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EACCES, errno.EAGAIN):
                    return False
                raise OSError(exc.errno, f"cannot lock {str(self.path)!r} (the store's filesystem must "
                                         f"support POSIX record locks): {exc.strerror}") from exc
            _HELD.add(self._key)
            self._fd = fd
        info = f"{socket.gethostname()} {os.getpid()} {time.time():.3f}\n".encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, info, 0)
        return True

    def acquire(self) -> bool:
        t0 = time.monotonic()
        while not self._try():
            if not self.blocking or (self.timeout is not None and time.monotonic() - t0 >= self.timeout):
                return False
            time.sleep(self.poll)
        self.acquired = True
        return True

    def release(self) -> None:
        if self._fd is not None:
            with _HELD_GUARD:
                try:
                    fcntl.lockf(self._fd, fcntl.LOCK_UN)
                finally:
                    os.close(self._fd)
                    self._fd = None
                    _HELD.discard(self._key)
        self.acquired = False

    def __bool__(self) -> bool:
        return self.acquired

    def __enter__(self) -> "Claim":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _split_dir(name: str) -> Tuple[str, str]:
    rid, sep, cv = name.partition("@")
    return (rid, cv) if sep else (rid, LEGACY)


class ResultStore:
    """Append-only directory of runs at one code version: ``has``, ``write``, ``load``, ``claim``,
    iteration over the complete runs of that version.

    ``code_version``: the version this handle reads and writes; default
    :func:`widelimit.provenance.code_version` (hash of the training sources of this process).
    """

    def __init__(self, path, *, code_version: Optional[str] = None) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a directory path, got {path!r}")
        if code_version is None:
            from .provenance import code_version as _cv
            code_version = _cv()
        if not isinstance(code_version, str) or not _CV_RE.match(code_version) or code_version == LEGACY:
            raise ValueError(f"code_version must be a string of letters, digits, '_', '-', '.' (1-64 chars) "
                             f"other than {LEGACY!r}, got {code_version!r}")
        self.code_version = code_version
        self.root = Path(path)
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"path {str(self.root)!r} exists and is not a directory")
        for sub in ("runs", "tmp", "locks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"ResultStore({str(self.root)!r}, {len(self)} runs at {self.code_version})"

    # -- queries -------------------------------------------------------------------------------
    def _run_dir(self, run_id: str, code_version: Optional[str] = None) -> Path:
        _check_id("run_id", run_id)
        cv = self.code_version if code_version is None else code_version
        if not isinstance(cv, str) or not _CV_RE.match(cv):
            raise ValueError(f"code_version must be a code-version string, got {cv!r}")
        return self.root / "runs" / (run_id if cv == LEGACY else f"{run_id}@{cv}")

    def has(self, run_id: str) -> bool:
        """Whether ``run_id`` is complete in the store at this handle's code version."""
        return (self._run_dir(run_id) / _MARKER).is_file()

    __contains__ = has

    def records(self) -> List[Tuple[str, str]]:
        """``(run_id, code_version)`` of every complete record, all versions (legacy ones as
        :data:`LEGACY`), sorted."""
        out = []
        for p in (self.root / "runs").iterdir():
            if (p / _MARKER).is_file():
                out.append(_split_dir(p.name))
        return sorted(out)

    def versions(self, run_id: str) -> List[str]:
        """Code versions at which ``run_id`` is complete (this handle's and others), sorted."""
        _check_id("run_id", run_id)
        return sorted(cv for rid, cv in self.records() if rid == run_id)

    def run_ids(self) -> List[str]:
        """Ids of the complete runs at this handle's code version, sorted."""
        return sorted(rid for rid, cv in self.records() if cv == self.code_version)

    def __len__(self) -> int:
        return len(self.run_ids())

    def __iter__(self) -> Iterator[StoredRun]:
        for rid in self.run_ids():
            yield self.load(rid)

    # -- claims --------------------------------------------------------------------------------
    def claim(self, run_id: str, *, blocking: bool = False, timeout: Optional[float] = None) -> Claim:
        """An exclusive claim on training ``run_id`` at this code version, for ``with`` blocks::

            with store.claim(rid) as got:
                if got and not store.has(rid):
                    ...train and store.write(rid, ...)

        Non-blocking by default (``got`` is False when another process or thread holds it); with
        ``blocking`` it waits (at most ``timeout`` seconds). The claim is released on exit and, if
        the holder dies, by the operating system.
        """
        path = self._run_dir(run_id)
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout >= 0):
            raise ValueError(f"timeout must be None or a number >= 0, got {timeout!r}")
        return Claim(self.root / "locks" / f"{path.name}.lock", bool(blocking), timeout)

    # -- write ---------------------------------------------------------------------------------
    def write(self, run_id: str, config: Mapping[str, Any],
              streams: Mapping[str, Mapping[str, Any]], summary: Optional[Mapping[str, Any]] = None) -> Path:
        """Store one complete run atomically at this handle's code version and return its directory.

        ``config`` and ``summary`` must be JSON-serialisable (numpy scalars/arrays are converted);
        ``streams`` maps a stream name (e.g. ``"metrics"``, ``"layers"``, ``"probe"``) to a dict of arrays,
        each stream becoming one ``.npz`` record. The marker records :func:`widelimit.provenance.provenance`.
        Raises :class:`RunExistsError` if ``run_id`` is already complete at this code version.
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
            raise RunExistsError(f"run {run_id!r} is already complete in {str(self.root)!r} at "
                                 f"{self.code_version} (append-only)")
        from .provenance import provenance
        prov = {**provenance(), "code_version": self.code_version}
        config_bytes = json.dumps(to_jsonable(config), sort_keys=True, indent=1).encode()
        summary_obj = to_jsonable(dict(summary or {}))
        return self._publish(final, run_id, config_bytes,
                             {name: _npz_bytes(arrays) for name, arrays in streams.items()},
                             summary_obj, prov, time.time())

    def _publish(self, final: Path, run_id: str, config_bytes: bytes, streams: Mapping[str, bytes],
                 summary_obj: Any, prov: Mapping[str, Any], written_at: float) -> Path:
        stage = self.root / "tmp" / f"{run_id}.{_host_tag()}~{os.getpid()}.{uuid.uuid4().hex[:8]}"
        stage.mkdir(parents=True)
        try:
            _atomic_write(stage / "config.json", config_bytes)
            checks = {}
            for name, data in streams.items():
                _atomic_write(stage / f"{name}.npz", data)
                checks[name] = hashlib.sha256(data).hexdigest()
            marker = {"run_id": run_id, "written_at": written_at, "pid": os.getpid(),
                      "code_version": prov["code_version"], "provenance": to_jsonable(dict(prov)),
                      "streams": checks, "config_sha256": hashlib.sha256(config_bytes).hexdigest(),
                      "summary": summary_obj}
            _atomic_write(stage / _MARKER, json.dumps(marker, sort_keys=True, indent=1).encode())
            _fsync_dir(stage)
            if final.exists() and not (final / _MARKER).is_file():  # incomplete, not made by this class
                try:
                    os.rename(final, self.root / "tmp" / f"stale-{final.name}-{uuid.uuid4().hex[:8]}")
                except OSError:
                    pass
            try:
                os.rename(stage, final)
            except OSError as exc:  # another writer published the same run first
                if (final / _MARKER).is_file():
                    raise RunExistsError(f"run {run_id!r} was completed concurrently") from exc
                raise
            _fsync_dir(final.parent)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
        return final

    # -- read ----------------------------------------------------------------------------------
    def load(self, run_id: str, *, code_version: Optional[str] = None, verify: bool = True) -> StoredRun:
        """Read a complete run at this handle's code version (or at ``code_version``: another version,
        or :data:`LEGACY`); with ``verify`` the stream checksums recorded in the marker are checked."""
        d = self._run_dir(run_id, code_version)
        if not (d / _MARKER).is_file():
            others = [v for v in self.versions(run_id) if v != (code_version or self.code_version)]
            hint = (f"; recorded at other code version(s) {others} (load them with code_version=...)"
                    if others else "")
            raise KeyError(f"run {run_id!r} is not complete in {str(self.root)!r} at "
                           f"{code_version or self.code_version}{hint}")
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
                         marker["written_at"], d, marker.get("code_version", LEGACY),
                         dict(marker.get("provenance") or {}))

    def migrate_legacy(self) -> List[str]:
        """Adopt every record of the earlier format (no code version) at this handle's code version:
        each is copied (verified, bytes unchanged) into the current layout with ``migrated_from: "legacy"``
        in its provenance; the legacy record is kept. Explicit, because the code that trained those runs
        is unknown. Returns the adopted run ids (those not already present at this version)."""
        from .provenance import provenance
        done = []
        for rid, cv in self.records():
            if cv != LEGACY or self.has(rid):
                continue
            old = self.load(rid, code_version=LEGACY)
            d = old.path
            marker = json.loads((d / _MARKER).read_text())
            prov = {**provenance(), "code_version": self.code_version, "migrated_from": LEGACY}
            streams = {name: (d / f"{name}.npz").read_bytes() for name in marker["streams"]}
            try:
                self._publish(self._run_dir(rid), rid, (d / "config.json").read_bytes(), streams,
                              marker["summary"], prov, marker["written_at"])
            except RunExistsError:
                continue
            done.append(rid)
        return done

    def cleanup(self, *, foreign_after_s: float = 86400.0) -> int:
        """Remove staging debris left by killed writers and return the count: debris of this host whose
        process is gone, and debris of other hosts (shared filesystem) older than ``foreign_after_s``."""
        removed = 0
        me = _host_tag()
        for p in (self.root / "tmp").iterdir():
            m = _STAGE_RE.match(p.name)
            if m:
                host = m.group("host") or me
                if host == me and _pid_alive(int(m.group("pid"))):
                    continue
                if host != me and time.time() - _mtime(p) < foreign_after_s:
                    continue
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed += 1
        return removed


_STAGE_RE = re.compile(r"^.+?\.(?:(?P<host>[A-Za-z0-9-]+)~)?(?P<pid>\d+)\.[0-9a-f]{8}$")


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])[:40] or "host"


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


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


__all__ = ["ResultStore", "StoredRun", "Claim", "RunExistsError", "LEGACY", "to_jsonable"]
