"""The executor interface and the in-process / local-process backends (see :mod:`widelimit.execution`)."""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import threading
from typing import Any, Callable, Iterator, Optional, Protocol, runtime_checkable


@runtime_checkable
class Executor(Protocol):
    """What :func:`widelimit.train.run_sweep` needs from an execution backend.

    ``submit(fn, *args, **kwargs)`` schedules ``fn(*args, **kwargs)`` and returns a
    :class:`concurrent.futures.Future`; ``fn`` and its arguments must be picklable for backends that run
    elsewhere. ``n_workers``: how many tasks run at once (a hint for grouping). ``shutdown()`` frees what
    the executor created.
    """

    n_workers: int

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future: ...

    def shutdown(self, wait: bool = True) -> None: ...


class SerialExecutor:
    """Runs each task at ``submit`` in this process and returns an already finished future (exceptions
    are stored in it, as in every backend)."""

    n_workers = 1

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            fut.set_exception(exc)
        return fut

    def shutdown(self, wait: bool = True) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()

    def __repr__(self) -> str:
        return "SerialExecutor()"


class ProcessExecutor(cf.ProcessPoolExecutor):
    """A pool of ``max_workers`` fresh processes (``spawn``: JAX must not be forked) on this machine."""

    def __init__(self, max_workers: Optional[int] = None) -> None:
        if max_workers is not None and (isinstance(max_workers, bool) or not isinstance(max_workers, int)
                                        or max_workers < 1):
            raise ValueError(f"max_workers must be None or an int >= 1, got {max_workers!r}")
        self.n_workers = max_workers or max(1, len(os.sched_getaffinity(0)))
        super().__init__(max_workers=self.n_workers, mp_context=multiprocessing.get_context("spawn"))

    def __repr__(self) -> str:
        return f"ProcessExecutor(max_workers={self.n_workers})"


def get_executor(spec: Any = None):
    """An executor from ``spec``: an object with ``submit`` (returned as is), ``None``/``"serial"``,
    ``"processes"``/``"processes:N"``, ``"dask-local:N"`` (a local Dask cluster of N worker processes,
    closed with the executor) or ``"dask:ADDRESS"`` (an existing Dask scheduler)."""
    if spec is not None and not isinstance(spec, str):
        if callable(getattr(spec, "submit", None)):
            return spec
        raise TypeError(f"spec must be an executor or a string, got {type(spec).__name__}")
    if spec is None or spec == "serial":
        return SerialExecutor()
    kind, _, arg = spec.partition(":")
    if kind == "processes":
        return ProcessExecutor(_count(spec, arg) if arg else None)
    if kind == "dask-local":
        from .dask_backend import DaskExecutor
        return DaskExecutor.local(_count(spec, arg) if arg else 2)
    if kind == "dask" and arg:
        from .dask_backend import DaskExecutor
        return DaskExecutor(address=arg)
    raise ValueError(f"spec must be 'serial', 'processes[:N]', 'dask-local[:N]' or 'dask:ADDRESS', got {spec!r}")


def _count(spec: str, arg: str) -> int:
    try:
        n = int(arg)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"spec {spec!r}: the worker count must be an int >= 1")
    return n


_DEFAULT = threading.local()


def current_executor():
    """The executor set by the innermost :func:`use_executor` block of this thread, or ``None``."""
    stack = getattr(_DEFAULT, "stack", None)
    return stack[-1] if stack else None


@contextlib.contextmanager
def use_executor(executor) -> Iterator[Any]:
    """Make ``executor`` (an executor or a :func:`get_executor` spec) the default of ``run_sweep`` inside
    the block; an executor built here from a spec is shut down on exit."""
    ex = get_executor(executor)
    owned = ex is not executor
    stack = getattr(_DEFAULT, "stack", None)
    if stack is None:
        stack = _DEFAULT.stack = []
    stack.append(ex)
    try:
        yield ex
    finally:
        stack.pop()
        if owned:
            ex.shutdown()


__all__ = ["Executor", "SerialExecutor", "ProcessExecutor", "get_executor", "use_executor", "current_executor"]
