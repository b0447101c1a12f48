"""Resumable, distributable sweeps: ``run_sweep(configs, store)`` trains every configuration not yet in the
store, through any executor (:mod:`widelimit.execution`).

Every configuration is validated first (nothing is computed if one is invalid). Runs already complete
in the :class:`widelimit.results.ResultStore` at the current code version (same ``run_id``, the
configuration hash, and same training sources) are skipped, so a sweep killed at any moment (``kill -9``)
resumes where it stopped: completed runs are neither redone nor lost (the store publishes each run
atomically). Work is cut into *tasks* (:func:`train_task`): one run, or with ``ensemble=True`` a group of at
most ``ensemble_size`` structurally identical runs trained together, vmapped. A task claims its runs in the
store before training them (:meth:`ResultStore.claim`), so sweeps running at the same time on the same
store — several processes, or the workers of a cluster on a shared filesystem — never train a run twice;
a run whose claimant died (its lock is dropped by the OS) is trained by the next task that needs it.
Datasets and compiled programs are cached per process.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from ..data import load_dataset
from ..results import ResultStore, RunExistsError
from .config import RunConfig
from .loop import Program, RunResult, precision, train


@dataclass
class SweepReport:
    """What a sweep did: ids of all distinct runs, those skipped (already complete), those trained by
    this sweep and those completed meanwhile by another sweep sharing the store (``by_others``)."""

    run_ids: List[str]
    skipped: List[str] = field(default_factory=list)
    trained: List[str] = field(default_factory=list)
    by_others: List[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return len(self.skipped) + len(self.trained) + len(self.by_others) == len(self.run_ids)


@dataclass(frozen=True)
class TaskResult:
    """What one :func:`train_task` did: ``trained`` / ``by_others`` run ids, the worker's ``code_version``
    (of its training sources) and ``host``."""

    trained: List[str]
    by_others: List[str]
    code_version: str
    host: str


class _LRU(OrderedDict):
    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize

    def get_or(self, key, make):
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = make()
        self[key] = value
        while len(self) > self.maxsize:
            self.popitem(last=False)
        return value


_DATA = _LRU(4)       # per process: datasets by (name, options, dtype)
_PROGRAMS = _LRU(8)   # per process: compiled programs by (structure key, dataset key)


def _dataset(c: RunConfig):
    key = json.dumps([c.data, c.data_options, c.dtype], sort_keys=True)

    def make():
        with precision(c.dtype):
            return load_dataset(c.data, **c.data_options)
    return key, _DATA.get_or(key, make)


def _train_runs(cs: Sequence[RunConfig], ensemble: bool, train_fn) -> List[RunResult]:
    if train_fn is not None:
        return [train_fn(c) for c in cs]
    dkey, data = _dataset(cs[0])
    if ensemble:
        from .ensemble import train_members
        return train_members(list(cs), data).runs
    out = []
    for c in cs:
        dkey, data = _dataset(c)

        def make(c=c, data=data):
            with precision(c.dtype):
                return Program(c, data)
        prog = _PROGRAMS.get_or((c.structure_key(), dkey), make)
        out.append(train(c, data, program=prog))
    return out


def train_task(root: str, code_version: str, configs: Sequence[Dict[str, Any]], *, ensemble: bool = False,
               train_fn: Optional[Callable[[RunConfig], RunResult]] = None,
               expected_code: Optional[str] = None) -> TaskResult:
    """Train the runs ``configs`` (config dicts, :meth:`RunConfig.to_dict`) that are missing from the store
    at ``root`` / ``code_version`` and store them; runs a worker of any executor can execute.

    Each run is claimed first; runs claimed by someone else are waited for and then either found complete
    (``by_others``) or trained here (their claimant died). With ``ensemble`` the runs (structurally
    identical) are trained together by :func:`widelimit.train.ensemble.train_members`. ``expected_code``:
    the submitter's training-code version; a worker whose sources differ refuses to train (RuntimeError).
    """
    import socket

    from ..provenance import code_version as own_code

    if expected_code is not None and own_code() != expected_code:
        raise RuntimeError(f"worker {socket.gethostname()} has training code {own_code()}, the sweep was "
                           f"submitted from code {expected_code}: install the same widelimit on every worker")
    store = ResultStore(root, code_version=code_version)
    cs = [RunConfig.from_dict(d).canonical() for d in configs]
    trained: List[str] = []
    by_others: List[str] = []
    claims = []
    try:
        mine, waiting = [], []
        for c in cs:
            cl = store.claim(c.run_id)
            if cl.acquire():
                claims.append(cl)
                if store.has(c.run_id):
                    by_others.append(c.run_id)
                else:
                    mine.append(c)
            else:
                waiting.append(c)
        rounds = [mine]
        later = []
        for c in waiting:  # someone else is training these: wait for its claim to go
            cl = store.claim(c.run_id, blocking=True)
            cl.acquire()
            claims.append(cl)
            (by_others.append(c.run_id) if store.has(c.run_id) else later.append(c))
        rounds.append(later)
        for group in rounds:
            if not group:
                continue
            for c, result in zip(group, _train_runs(group, ensemble, train_fn)):
                if result.run_id != c.run_id:
                    raise ValueError(f"train_fn returned a result for run {result.run_id}, expected {c.run_id}")
                try:
                    result.save(store)
                    trained.append(c.run_id)
                except RunExistsError:  # published by a writer that did not claim it: same run, same code
                    by_others.append(c.run_id)
    finally:
        for cl in claims:
            cl.release()
    return TaskResult(trained, by_others, own_code(), socket.gethostname())


class _NoBar:
    def __init__(self, *args, **kwargs) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def run_sweep(configs: Iterable[RunConfig], store, *, progress: bool = True, ensemble: bool = False,
              ensemble_size: int = 32, train_fn: Optional[Callable[[RunConfig], RunResult]] = None,
              executor: Any = None) -> SweepReport:
    """Train every configuration in ``configs`` whose run is not complete in ``store``.

    ``store``: a :class:`ResultStore` or a directory path (it must be on a filesystem the executor's
    workers share). ``progress``: show a tqdm bar (completed runs count as done from the start).
    ``ensemble``: train structurally identical runs together, vmapped, in groups of at most
    ``ensemble_size``. ``train_fn``: replaces :func:`train` for sequential runs (tests; custom loops; it must
    be picklable for executors in other processes) and returns a :class:`RunResult` for its config.
    ``executor``: where tasks run — an executor or a spec for :func:`widelimit.execution.get_executor`;
    default :func:`widelimit.execution.current_executor`, else this process.
    """
    from ..execution import current_executor, get_executor
    from ..provenance import code_version as own_code

    if not isinstance(store, ResultStore):
        store = ResultStore(store)
    configs = list(configs)
    for i, c in enumerate(configs):
        if not isinstance(c, RunConfig):
            raise TypeError(f"configs[{i}] must be a RunConfig, got {type(c).__name__}")
    canon: Dict[str, RunConfig] = {}
    for i, c in enumerate(configs):  # validate everything before any compute
        try:
            cc = c.canonical()
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"configs[{i}]: {exc}") from exc
        canon.setdefault(cc.run_id, cc)
    if isinstance(ensemble_size, bool) or not isinstance(ensemble_size, int) or ensemble_size < 1:
        raise ValueError(f"ensemble_size must be an int >= 1, got {ensemble_size!r}")
    ex = get_executor(executor if executor is not None else current_executor())
    owned = ex is not executor and ex is not current_executor()
    store.cleanup()
    report = SweepReport(run_ids=list(canon))
    todo = []
    for rid in canon:
        (report.skipped if store.has(rid) else todo).append(rid)
    tasks: List[List[str]] = []
    if ensemble and train_fn is None:
        groups: Dict[str, List[str]] = {}
        for rid in todo:
            groups.setdefault(canon[rid].structure_key(), []).append(rid)
        for rids in groups.values():
            tasks.extend(rids[s:s + ensemble_size] for s in range(0, len(rids), ensemble_size))
    else:
        tasks = [[rid] for rid in todo]

    try:
        from tqdm.auto import tqdm
    except ImportError:  # a bare GPU machine: no progress bar
        progress = False
        tqdm = _NoBar
    bar = tqdm(total=len(canon), initial=len(report.skipped), disable=not progress, desc="sweep",
               unit="run", dynamic_ncols=True)
    import concurrent.futures as cf

    pending: set = set()
    parts = iter(tasks)

    def submit_next() -> None:
        part = next(parts, None)
        if part is not None:
            pending.add(ex.submit(train_task, str(store.root), store.code_version,
                                  [canon[r].to_dict() for r in part],
                                  ensemble=bool(ensemble and train_fn is None), train_fn=train_fn,
                                  expected_code=own_code()))

    try:  # keep about two tasks per worker in flight; the first error stops the sweep
        for _ in range(2 * max(1, int(getattr(ex, "n_workers", 1)))):
            submit_next()
        while pending:
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                pending.discard(fut)
                res: TaskResult = fut.result()
                report.trained.extend(res.trained)
                report.by_others.extend(res.by_others)
                bar.update(len(res.trained) + len(res.by_others))
                submit_next()
    finally:
        for fut in pending:
            fut.cancel()
        bar.close()
        if owned:
            ex.shutdown()
    return report


__all__ = ["run_sweep", "SweepReport", "train_task", "TaskResult"]
