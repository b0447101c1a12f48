"""Shared helpers for the validation studies: sizes, resumable per-point caching, report writing and
the extremum search that treats theory and measurement alike (how a report was made -- git state,
machine, command line -- is :mod:`widelimit.studies.machine`, re-exported here).

Every study module exposes ``run(size, out_dir, progress=True, resume=True) -> Path`` and uses the
pieces here:

* :func:`check_size` — validate ``size`` (``"quick"``, ``"full"``, or ``"smoke"``: a tiny size used
  only by the test suite) before any expensive work.
* :func:`~widelimit.studies.machine.machine_info`, :func:`~widelimit.studies.machine.command_line`,
  :func:`~widelimit.studies.machine.check_provenance` — the machine, the command, the git state.
* :class:`PointCache` — resumable per-point cache on top of :class:`widelimit.results.ResultStore`:
  ``cache.get_or_compute(config, compute)`` returns the stored arrays/summary for a JSON config,
  computing and storing them atomically the first time. A killed study resumes where it stopped.
* :func:`write_report` — write ``<out_dir>/<name>.md`` (title, summary, sections made of Markdown
  text, :class:`~widelimit.tables.Table` objects and :class:`Figure` references, then the command and
  the machine) and ``<out_dir>/<name>.json`` (the same tables as JSON plus free-form ``data``).
* :func:`progress_iter` — a tqdm progress bar that can be switched off.

Example (a study in ten lines)::

    from widelimit.studies.common import (PointCache, Figure, check_size, write_report, progress_iter)
    from widelimit.tables import Table

    def run(size="quick", out_dir="validation", progress=True, resume=True):
        size = check_size(size)
        cache = PointCache.for_study("mystudy", size, out_dir, resume=resume)
        tab = Table(["lam", "t*"])
        for lam in progress_iter([0.1, 0.01], "lambda", progress):
            res = cache.get_or_compute({"lam": lam}, lambda: ({"curve": {"y": ...}}, {"tstar": 3.0}))
            tab.add_row([lam, res.summary["tstar"]])
        return write_report("mystudy", out_dir, title="My study", size=size,
                            sections=[("Results", ["Some text.", tab, Figure("mystudy.png", "caption")])],
                            data={"anything": "json-able"})
"""
from __future__ import annotations

import enum
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..plots import Panel, Series, plot_panels  # noqa: F401  (the one plotting stack; re-exported)
from ..results import ResultStore, to_jsonable
from ..tables import Table
from . import machine as _made
from .machine import (GitState, allow_dirty_from_env, check_provenance, command_line,  # noqa: F401 (re-exported)
                      format_machine, git_state, machine_info, reproduce_command)

SIZES_ALL = ("smoke", "quick", "medium", "full")
CACHE_DIRNAME = ".cache"

PathLike = Union[str, "os.PathLike[str]"]


# -- sizes ------------------------------------------------------------------------------------------
def check_size(size: str, allowed: Sequence[str] = SIZES_ALL) -> str:
    """Return ``size`` if it is one of ``allowed`` (default smoke/quick/medium/full), else raise ValueError.

    ``"smoke"`` is a seconds-long size for the test suite only; reports made at that size say so.
    ``"quick"``: minutes on 2 CPU cores; ``"medium"``: about an hour for all studies on 2 CPU cores;
    ``"full"``: GPU-sized.
    """
    if not isinstance(size, str) or size not in allowed:
        raise ValueError(f"size must be one of {tuple(allowed)}, got {size!r}")
    return size


def check_out_dir(out_dir: PathLike) -> Path:
    """``out_dir`` as a Path (created if missing); TypeError if it is not a path."""
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a directory path (str or os.PathLike), got {type(out_dir).__name__}")
    p = Path(out_dir)
    if p.exists() and not p.is_dir():
        raise ValueError(f"out_dir {str(p)!r} exists and is not a directory")
    p.mkdir(parents=True, exist_ok=True)
    return p


# -- progress ---------------------------------------------------------------------------------------
def progress_iter(iterable: Iterable, desc: str, enabled: bool = True, total: Optional[int] = None):
    """``iterable`` wrapped in a tqdm bar (to stderr) when ``enabled``, else unchanged."""
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return iterable
    return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True)


# -- resumable per-point cache ----------------------------------------------------------------------
def config_key(config: Mapping[str, Any]) -> str:
    """Stable id of a JSON-able config: sha256 of its canonical JSON (sorted keys), 20 hex chars."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping, got {type(config).__name__}")
    text = json.dumps(to_jsonable(dict(config)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class CachedPoint:
    """One cached computation: ``streams`` (name -> dict of arrays), ``summary`` (JSON-able dict),
    ``config`` and whether it was ``loaded`` from disk (True) or just computed (False)."""

    config: Dict[str, Any]
    streams: Dict[str, Dict[str, np.ndarray]]
    summary: Dict[str, Any]
    loaded: bool


Computed = Tuple[Mapping[str, Mapping[str, Any]], Mapping[str, Any]]


class PointCache:
    """Resumable cache of study points in a :class:`~widelimit.results.ResultStore`.

    A point is identified by a JSON-able ``config`` (include everything the result depends on: study,
    size, dataset, spec, λ, η, seeds, ...). ``get_or_compute(config, compute)`` returns the stored point
    if it exists, else calls ``compute() -> (streams, summary)`` — ``streams`` a mapping
    ``{stream name: {array name: array}}``, ``summary`` a JSON-able dict — stores it atomically and
    returns it. A study killed at any moment therefore restarts from the last finished point.

    With ``resume=False`` the cache directory is wiped on construction, so everything is recomputed.
    """

    def __init__(self, root: PathLike, resume: bool = True) -> None:
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root must be a directory path, got {type(root).__name__}")
        if not isinstance(resume, bool):
            raise TypeError(f"resume must be a bool, got {type(resume).__name__}")
        self.root = Path(root)
        if not resume and self.root.exists():
            shutil.rmtree(self.root)
        self.store = ResultStore(self.root)
        self.hits = 0
        self.misses = 0
        #: training runs (widelimit.train) made through this cache: trained now / reused, and the
        #: compute seconds recorded in all of them (compile + run, when they were trained)
        self.runs_trained = 0
        self.runs_reused = 0
        self.train_seconds = 0.0

    @classmethod
    def for_study(cls, name: str, size: str, out_dir: PathLike, resume: bool = True) -> "PointCache":
        """The cache of study ``name`` at ``size``: ``<out_dir>/.cache/<name>-<size>``."""
        return cls(Path(out_dir) / CACHE_DIRNAME / f"{name}-{size}", resume=resume)

    def get_or_compute(self, config: Mapping[str, Any], compute: Callable[[], Computed]) -> CachedPoint:
        """Return the point for ``config``, computing and storing it with ``compute()`` if missing."""
        key = config_key(config)
        cfg = to_jsonable(dict(config))
        if self.store.has(key):
            run = self.store.load(key)
            if run.config == cfg:
                self.hits += 1
                return CachedPoint(cfg, run.streams, dict(run.summary), True)
        out = compute()
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError("compute() must return a tuple (streams, summary)")
        streams, summary = out
        self.store.write(key, cfg, streams, summary)
        self.misses += 1
        run = self.store.load(key)
        return CachedPoint(cfg, run.streams, dict(run.summary), False)


# -- reports ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Figure:
    """A PNG to show in a report: ``path`` (absolute, or relative to the report's directory) and a
    ``caption`` printed under it."""

    path: PathLike
    caption: str = ""


Block = Union[str, Table, Figure]
Section = Tuple[str, Sequence[Block]]


def _figure_md(fig: Figure, out_dir: Path) -> str:
    p = Path(fig.path)
    if p.is_absolute():
        try:
            p = p.relative_to(out_dir.resolve())
        except ValueError:
            p = Path(os.path.relpath(p, out_dir.resolve()))
    rel = p.as_posix()
    alt = fig.caption.split(".")[0] if fig.caption else rel
    md = f"![{alt}]({rel})"
    return md + (f"\n\n*{fig.caption}*" if fig.caption else "")


def write_report(name: str, out_dir: PathLike, *, title: str, sections: Sequence[Section],
                 size: str, summary: Optional[str] = None, data: Optional[Mapping[str, Any]] = None,
                 command: Optional[str] = None, machine: Optional[Mapping[str, Any]] = None,
                 elapsed_s: Optional[float] = None, cache: Optional["PointCache"] = None,
                 claims: Sequence[Any] = ()) -> Path:
    """Write the study report ``<out_dir>/<name>.md`` and ``<out_dir>/<name>.json``; return the .md path.

    ``sections`` is a list of ``(heading, blocks)``; each block is Markdown text (``str``), a
    :class:`~widelimit.tables.Table` (rendered as Markdown; its JSON goes into the .json file) or a
    :class:`Figure`. ``summary`` is a paragraph under the title. ``command`` defaults to
    :func:`command_line` (this process), ``machine`` to :func:`machine_info`. The report ends with a
    "How this was made" section: command, canonical reproduce command, machine, size, wall time, and with
    ``cache`` how many points/training runs were computed now or reused from an earlier run (``--resume``).

    ``claims`` (:class:`widelimit.evidence.ClaimResult`) are rendered first, as the study's claims table
    (failures first), and stored under ``claims`` in the JSON; ``validation/REPORT.md`` and the README
    findings are generated from them. Writing into the committed ``validation/`` from a tree with
    uncommitted code changes is refused (:func:`check_provenance`); the commit is recorded either way.

    The JSON file holds ``{name, title, size, command, reproduce, git, machine, elapsed_s, cache,
    written_at, claims, tables: [{section, ...table.to_dict()}], data}`` (``data`` converted with
    ``to_jsonable``).
    """
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
        raise ValueError(f"name must be a non-empty string without slashes or spaces, got {name!r}")
    out = check_out_dir(out_dir)
    if not isinstance(title, str) or not title:
        raise ValueError(f"title must be a non-empty string, got {title!r}")
    check_size(size)
    git = _made.check_provenance(out)
    cmd = command if command is not None else _made.command_line()
    mach = dict(machine) if machine is not None else _made.machine_info()
    lines: List[str] = [f"# {title}", ""]
    if size == "smoke":
        lines += ["> **Smoke size** (test-suite only): numbers are not meaningful.", ""]
    if git.dirty:
        lines += [f"> **Written from a tree with uncommitted code changes** (commit {git.commit}): the numbers "
                  "may not be reproducible from that commit.", ""]
    if summary:
        lines += [summary.strip(), ""]
    from ..evidence import ClaimResult, claims_markdown
    claims = list(claims)
    if not all(isinstance(c, ClaimResult) for c in claims):
        raise TypeError("claims must be ClaimResult objects (widelimit.evidence.judge)")
    if claims:
        lines += ["## Claims", "", claims_markdown(claims, with_study=False), ""]
    tables_json = []
    for sec in sections:
        if not (isinstance(sec, tuple) and len(sec) == 2 and isinstance(sec[0], str)):
            raise TypeError(f"each section must be a (heading, blocks) tuple, got {sec!r}")
        heading, blocks = sec
        lines += [f"## {heading}", ""]
        for b in blocks:
            if isinstance(b, Table):
                lines += [b.to_markdown().rstrip(), ""]
                tables_json.append({"section": heading, **b.to_dict()})
            elif isinstance(b, Figure):
                lines += [_figure_md(b, out), ""]
            elif isinstance(b, str):
                lines += [b.strip(), ""]
            else:
                raise TypeError(f"section {heading!r}: blocks must be str, Table or Figure, got "
                                f"{type(b).__name__}")
    repro = _made.reproduce_command(name, size, out)
    lines += ["## How this was made", "",
              f"- Command: `{cmd}`",
              f"- To regenerate: `{repro}`",
              f"- Size: `{size}`" + (f"; wall time {elapsed_s:.0f} s" if elapsed_s is not None else ""),
              f"- Code: git {git.describe()}",
              f"- Machine: {_made.format_machine(mach)}"]
    if cache is not None:
        lines.append(f"- Cache `{Path(cache.root).as_posix()}`: {cache.misses} point(s) computed now, {cache.hits} "
                     f"reused; training runs: {cache.runs_trained} trained now, {cache.runs_reused} reused from an "
                     f"earlier run of the same code path; {cache.train_seconds:.0f} s of training compute recorded "
                     "in them (compile + run, measured when each was trained)")
    lines += [
              f"- Written: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}", ""]
    cache_info = None if cache is None else {
        "points_computed": cache.misses, "points_reused": cache.hits, "runs_trained": cache.runs_trained,
        "runs_reused": cache.runs_reused, "train_seconds": cache.train_seconds}
    md_path = out / f"{name}.md"
    md_path.write_text("\n".join(lines))
    payload = {"name": name, "title": title, "size": size, "command": cmd, "reproduce": repro,
               "git": {"commit": git.commit, "dirty": git.dirty},
               "machine": mach, "elapsed_s": elapsed_s, "cache": cache_info, "written_at": time.time(),
               "claims": [c.to_dict() for c in claims], "tables": tables_json,
               "data": to_jsonable(dict(data or {}))}
    (out / f"{name}.json").write_text(json.dumps(_finite(payload), indent=1, sort_keys=False))
    return md_path


def _finite(obj: Any) -> Any:
    """Replace NaN/inf floats by None / "inf" strings so the JSON is standard."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None if np.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


class Stopwatch:
    """Wall-clock timer: ``sw = Stopwatch(); ...; sw.elapsed`` (seconds)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


@dataclass(frozen=True)
class StudyStart:
    """What every study's ``run`` begins with (:func:`start_study`).

    Fields: ``size`` (validated), ``out`` (the output directory, created), ``cache`` (the study's
    :class:`PointCache` at ``<out>/.cache/<name>-<size>``, wiped when not resuming) and ``stopwatch``
    (started before any compute: the report's wall time)."""

    size: str
    out: Path
    cache: "PointCache"
    stopwatch: Stopwatch


def start_study(name: str, size: str, out_dir: PathLike, *, resume: bool = True) -> StudyStart:
    """Validate ``size`` and ``out_dir``, refuse a dirty tree for the committed ``validation/``
    (:func:`~widelimit.studies.machine.check_provenance`) -- all before any compute -- then start the
    stopwatch and open the study's cache."""
    size = check_size(size)
    out = check_out_dir(out_dir)
    _made.check_provenance(out)
    sw = Stopwatch()
    return StudyStart(size, out, PointCache.for_study(name, size, out, resume=resume), sw)


# -- extrema and fits -------------------------------------------------------------------------------
class Where(str, enum.Enum):
    """Where the best sample of a grid lies (:func:`refine_extremum`); compares equal to its label."""

    INTERIOR = "interior"      # inside the grid: a genuine extremum (refined by a parabola)
    FIRST = "first"            # at the first sample: the optimum may lie before the grid (an upper bound)
    LAST = "last"              # at the last sample: the optimum may lie beyond the grid (a lower bound)
    NONE = "none"              # no finite sample: no location (NaN)

    def __str__(self) -> str:
        return self.value


def refine_extremum(x, y, *, log_x: bool = True, kind: str = "min") -> Tuple[float, float, Where]:
    """Location and value of the minimum (``kind="min"``) or maximum of samples ``y(x)``.

    Takes the best finite sample, then, when it has a finite neighbour on each side, the vertex of the
    parabola through the three points (in ``log x`` if ``log_x``), clipped to the neighbours' interval.
    Returns ``(x_best, y_best, where)`` with ``where`` a :class:`Where`: ``INTERIOR``, ``FIRST`` (best at
    the first sample: the optimum may lie before the grid), ``LAST`` (may lie beyond it) or ``NONE`` (no
    finite sample; NaNs returned).
    """
    if kind not in ("min", "max"):
        raise ValueError(f"kind must be 'min' or 'max', got {kind!r}")
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"x and y must be non-empty and of the same length, got {x.shape} and {y.shape}")
    if log_x and np.any(x <= 0):
        raise ValueError("x must be > 0 with log_x=True")
    sign = 1.0 if kind == "min" else -1.0
    z = np.where(np.isfinite(y), sign * y, np.inf)
    if not np.any(np.isfinite(z)):
        return float("nan"), float("nan"), Where.NONE
    i = int(np.argmin(z))
    u = np.log(x) if log_x else x
    if i == 0 or i == x.size - 1 or not (np.isfinite(z[i - 1]) and np.isfinite(z[i + 1])):
        where = Where.FIRST if i == 0 else (Where.LAST if i == x.size - 1 else Where.INTERIOR)
        return float(x[i]), float(y[i]), where
    u0, u1, u2 = u[i - 1], u[i], u[i + 1]
    z0, z1, z2 = z[i - 1], z[i], z[i + 1]
    den = (u0 - u1) * (u0 - u2) * (u1 - u2)
    a = (u2 * (z1 - z0) + u1 * (z0 - z2) + u0 * (z2 - z1)) / den
    b = (u2 ** 2 * (z0 - z1) + u1 ** 2 * (z2 - z0) + u0 ** 2 * (z1 - z2)) / den
    if not a > 0:
        return float(x[i]), float(y[i]), Where.INTERIOR
    uv = float(np.clip(-b / (2 * a), u0, u2))
    c = z1 - a * u1 ** 2 - b * u1
    zv = min(a * uv ** 2 + b * uv + c, z1)
    return float(np.exp(uv) if log_x else uv), float(sign * zv), Where.INTERIOR


__all__ = ["SIZES_ALL", "check_size", "check_out_dir", "machine_info", "format_machine", "command_line",
           "reproduce_command", "progress_iter", "config_key", "CachedPoint", "PointCache", "Figure",
           "write_report", "Stopwatch", "StudyStart", "start_study", "GitState", "git_state", "check_provenance", "allow_dirty_from_env", "Where",
           "refine_extremum", "Series", "Panel", "plot_panels"]
