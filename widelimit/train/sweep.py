"""Resumable sweeps: ``run_sweep(configs, store)`` trains every configuration not yet in the store.

Every configuration is validated first (nothing is computed if one is invalid). Runs already complete
in the :class:`widelimit.results.ResultStore` (same ``run_id``, the configuration hash) are skipped, so a
sweep killed at any moment (``kill -9``) resumes where it stopped: completed runs are neither redone nor
lost (the store publishes each run atomically). Datasets are loaded once per distinct dataset, and runs
that differ only in seed / constant learning rate / constant L2 share one compiled program; with
``ensemble=True`` such runs are trained together, vmapped, in groups of at most ``ensemble_size``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional

from ..data import load_dataset
from ..results import ResultStore, RunExistsError
from .config import RunConfig
from .ensemble import train_members
from .loop import Program, RunResult, precision, train


@dataclass
class SweepReport:
    """What a sweep did: ids of all distinct runs, those skipped (already complete) and those trained."""

    run_ids: List[str]
    skipped: List[str] = field(default_factory=list)
    trained: List[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return len(self.skipped) + len(self.trained) == len(self.run_ids)


def run_sweep(configs: Iterable[RunConfig], store, *, progress: bool = True, ensemble: bool = False,
              ensemble_size: int = 32, train_fn: Optional[Callable[[RunConfig], RunResult]] = None
              ) -> SweepReport:
    """Train every configuration in ``configs`` whose run is not complete in ``store``.

    ``store``: a :class:`ResultStore` or a directory path. ``progress``: show a tqdm bar (completed runs
    count as done from the start). ``ensemble``: train structurally identical runs together with
    :func:`widelimit.train.ensemble.train_members`. ``train_fn``: replaces :func:`train` for sequential
    runs (tests; custom loops); it must return a :class:`RunResult` for the config it is given.
    """
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
    store.cleanup()
    report = SweepReport(run_ids=list(canon))
    todo = []
    for rid, c in canon.items():
        (report.skipped if store.has(rid) else todo).append(rid)

    from tqdm.auto import tqdm

    bar = tqdm(total=len(canon), initial=len(report.skipped), disable=not progress, desc="sweep",
               unit="run", dynamic_ncols=True)
    data_cache: Dict[str, object] = {}
    programs: Dict[str, Program] = {}

    def dataset(c: RunConfig):
        k = json.dumps([c.data, c.data_options, c.dtype], sort_keys=True)
        if k not in data_cache:
            with precision(c.dtype):
                data_cache[k] = load_dataset(c.data, **c.data_options)
        return data_cache[k]

    def save(result: RunResult, rid: str) -> None:
        if result.run_id != rid:
            raise ValueError(f"train_fn returned a result for run {result.run_id}, expected {rid}")
        try:
            result.save(store)
        except RunExistsError:  # a concurrent sweep on the same store finished it first: same run id,
            pass                # same configuration, so nothing is lost
        report.trained.append(rid)
        bar.update(1)

    try:
        if ensemble and train_fn is None:
            groups: Dict[str, List[str]] = {}
            for rid in todo:
                groups.setdefault(canon[rid].structure_key(), []).append(rid)
            for rids in groups.values():
                for start in range(0, len(rids), ensemble_size):
                    part = rids[start:start + ensemble_size]
                    res = train_members([canon[r] for r in part], dataset(canon[part[0]]))
                    for rid, run in zip(part, res.runs):
                        save(run, rid)
        else:
            for rid in todo:
                c = canon[rid]
                if train_fn is not None:
                    result = train_fn(c)
                else:
                    data = dataset(c)
                    skey = c.structure_key()
                    if skey not in programs:
                        with precision(c.dtype):
                            programs[skey] = Program(c, data)
                    result = train(c, data, program=programs[skey])
                save(result, rid)
    finally:
        bar.close()
    return report


__all__ = ["run_sweep", "SweepReport"]
