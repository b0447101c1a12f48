"""Where runs execute: one executor interface for :func:`widelimit.train.run_sweep` and the studies.

An *executor* has ``submit(fn, *args, **kwargs) -> concurrent.futures.Future`` and ``shutdown()``
(:class:`Executor`). Backends:

* :class:`SerialExecutor` — in this process, one task after another (the default);
* :class:`ProcessExecutor` — a ``concurrent.futures`` pool of fresh (``spawn``) processes on this machine;
* :class:`~widelimit.execution.dask_backend.DaskExecutor` — a Dask ``distributed`` cluster (local or many
  machines); tasks write their runs straight into the shared result store, so a worker that dies loses
  only its unfinished run, which another worker then trains.

:func:`get_executor` builds one from a short spec (``"serial"``, ``"processes:4"``, ``"dask-local:2"``,
``"dask:tcp://scheduler:8786"``); :func:`use_executor` makes one the default of every ``run_sweep`` inside
a ``with`` block (so a study can be dispatched to a cluster without changing its code);
:func:`current_executor` returns that default (``None``: run in-process).
"""
from .base import (Executor, ProcessExecutor, SerialExecutor, current_executor, get_executor,
                   use_executor)

__all__ = ["Executor", "SerialExecutor", "ProcessExecutor", "DaskExecutor", "get_executor", "use_executor",
           "current_executor"]


def __getattr__(name):  # Dask is optional and heavy: import it only when asked for
    if name == "DaskExecutor":
        from .dask_backend import DaskExecutor
        return DaskExecutor
    raise AttributeError(name)
