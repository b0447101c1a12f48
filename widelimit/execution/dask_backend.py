"""Dask ``distributed`` backend of the executor interface (:mod:`widelimit.execution`).

Why Dask rather than Ray: it is pure Python and pip-installable everywhere (no native object store or
raylet), its scheduler runs on any machine reachable over TCP (also started by HPC batch systems through
``dask-jobqueue``/``dask-mpi``), ``LocalCluster`` gives a real multi-process cluster in a test, and its
futures follow ``concurrent.futures``. Our tasks are coarse (one run or one vmapped group, seconds to
minutes) and write their results to the shared store, so Ray's strengths (actors, a shared-memory object
store for large intermediate arrays, millisecond tasks) are not needed.
"""
from __future__ import annotations

import concurrent.futures as cf
import threading
from typing import Any, Callable, Optional


def _require():
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the Dask backend needs the 'distributed' package (pip install "
                          "'widelimit[cluster]')") from exc
    return distributed


class DaskExecutor:
    """Submit tasks to a Dask cluster: ``DaskExecutor(client)``, ``DaskExecutor(address="tcp://h:8786")``
    or :meth:`local` (a ``LocalCluster`` of worker processes owned by the executor).

    ``submit`` returns a :class:`concurrent.futures.Future` mirroring the Dask future (tasks are
    submitted with ``pure=False``: every call runs, nothing is deduplicated by Dask — the result store
    does that).
    """

    def __init__(self, client: Any = None, *, address: Optional[str] = None) -> None:
        distributed = _require()
        if (client is None) == (address is None):
            raise ValueError("give exactly one of client and address")
        if client is not None and not isinstance(client, distributed.Client):
            raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
        self._owned = []
        if client is None:
            client = distributed.Client(address)
            self._owned.append(client)
        self.client = client
        self._pending = set()
        self._lock = threading.Lock()

    @classmethod
    def local(cls, n_workers: int = 2, threads_per_worker: int = 1, **kwargs: Any) -> "DaskExecutor":
        """A new ``LocalCluster`` of ``n_workers`` processes (closed by :meth:`shutdown`)."""
        distributed = _require()
        if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
            raise ValueError(f"n_workers must be an int >= 1, got {n_workers!r}")
        cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                                           processes=True, dashboard_address=None, **kwargs)
        client = distributed.Client(cluster)
        ex = cls(client)
        ex._owned = [client, cluster]
        return ex

    @property
    def n_workers(self) -> int:
        info = self.client.scheduler_info()
        return max(1, sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values()))

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        out: cf.Future = cf.Future()
        dfut = self.client.submit(fn, *args, pure=False, **kwargs)
        with self._lock:
            self._pending.add(dfut)

        def done(f) -> None:
            try:
                if f.status == "cancelled":
                    out.cancel() or out.set_exception(cf.CancelledError())
                elif f.status == "error":
                    out.set_exception(f.exception())
                else:
                    out.set_result(f.result())
            except BaseException as exc:  # noqa: BLE001
                if not out.done():
                    out.set_exception(exc)
            finally:
                with self._lock:
                    self._pending.discard(f)

        out.set_running_or_notify_cancel()
        dfut.add_done_callback(done)
        return out

    def shutdown(self, wait: bool = True) -> None:
        for obj in self._owned:
            try:
                obj.close()
            except Exception:  # noqa: BLE001 - best effort on teardown
                pass
        self._owned = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()

    def __repr__(self) -> str:
        return f"DaskExecutor({self.client!r})"


__all__ = ["DaskExecutor"]
