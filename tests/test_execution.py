"""Executors: run_sweep through the in-process, process-pool and Dask (a real 2-worker LocalCluster)
backends gives results identical to a serial sweep; errors and mismatched worker code are reported."""
import concurrent.futures as cf

import numpy as np
import pytest

from widelimit.arch import MLP
from widelimit.execution import (Executor, ProcessExecutor, SerialExecutor, current_executor, get_executor,
                                 use_executor)
from widelimit.results import ResultStore
from widelimit.train import RunConfig, run_sweep
from widelimit.train.sweep import train_task

OPTS = dict(n_train=16, n_test=4, in_dim=3)


def _configs():
    base = RunConfig(arch=MLP(depth=2, width=8, out_dim=1), data="teacher", data_options=OPTS,
                     learning_rate=0.1, steps=12, eval_every=4)
    return [base.replace(seed=0), base.replace(seed=1, learning_rate=0.05),
            base.replace(arch=MLP(depth=3, width=8, out_dim=1), seed=2)]


def _streams(store, ids):
    return {rid: store.load(rid).streams for rid in ids}


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for rid in a:
        for stream in ("metrics", "layers", "probe"):
            assert a[rid][stream].keys() == b[rid][stream].keys()
            for k, v in a[rid][stream].items():
                if stream == "metrics" and k == "time":
                    continue
                np.testing.assert_array_equal(v, b[rid][stream][k], err_msg=f"{rid} {stream}/{k}")


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    root = tmp_path_factory.mktemp("serial")
    rep = run_sweep(_configs(), root, progress=False, executor="serial")
    assert rep.complete and len(rep.trained) == 3
    store = ResultStore(root)
    return _streams(store, rep.run_ids)


def _boom(c):
    raise ArithmeticError(f"no training for {c.seed}")


def test_specs_and_protocol():
    assert isinstance(SerialExecutor(), Executor) and isinstance(get_executor(None), SerialExecutor)
    ex = SerialExecutor()
    assert get_executor(ex) is ex
    f = ex.submit(divmod, 7, 2)
    assert f.result() == (3, 1)
    assert isinstance(ex.submit(divmod, 1, 0).exception(), ZeroDivisionError)
    for bad in ("threads", "processes:0", "dask", "dask-local:x"):
        with pytest.raises(ValueError, match="spec"):
            get_executor(bad)
    with pytest.raises(TypeError, match="spec"):
        get_executor(3)
    assert current_executor() is None
    with use_executor("serial") as a:
        assert current_executor() is a
    assert current_executor() is None


def test_errors_propagate_and_stop_the_sweep(tmp_path):
    with pytest.raises(ArithmeticError, match="no training"):
        run_sweep(_configs()[:2], tmp_path, progress=False, train_fn=_boom)
    assert len(ResultStore(tmp_path)) == 0


def test_worker_with_other_code_refuses(tmp_path):
    with pytest.raises(RuntimeError, match="same widelimit"):
        train_task(str(tmp_path), "cv-x", [_configs()[0].to_dict()], expected_code="cv-some-other-code")
    assert len(ResultStore(tmp_path, code_version="cv-x")) == 0


def _fresh_code_version():
    """Workers hash the training sources when they start: re-hash here too, so that an edit of the
    sources since this process first hashed them is not mistaken for a foreign worker."""
    from widelimit.provenance import code_version
    code_version.cache_clear()


@pytest.mark.slow
def test_process_pool_matches_serial(tmp_path, serial):
    _fresh_code_version()
    with ProcessExecutor(1) as ex:
        rep = run_sweep(_configs()[:2], tmp_path, progress=False, executor=ex)
    assert sorted(rep.trained) == sorted(rep.run_ids)
    _assert_identical(_streams(ResultStore(tmp_path), rep.run_ids), {r: serial[r] for r in rep.run_ids})


def test_dask_local_cluster_of_two_workers_matches_serial(tmp_path, serial):
    distributed = pytest.importorskip("distributed", reason="Dask distributed is not installed in this env")
    from widelimit.execution import DaskExecutor

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        ex = DaskExecutor(client)
        _fresh_code_version()
        assert ex.n_workers == 2
        with use_executor(ex):  # the default executor of every run_sweep in the block
            rep = run_sweep(_configs(), tmp_path, progress=False)
        assert sorted(rep.trained) == sorted(rep.run_ids) and rep.complete
        pids = {ResultStore(tmp_path).load(r).provenance["pid"] for r in rep.run_ids}
        assert len(pids) == 2, "both workers must have trained runs"
        _assert_identical(_streams(ResultStore(tmp_path), rep.run_ids), serial)
        # resubmitting finds everything complete; a failing task's error comes back through the future
        again = run_sweep(_configs(), tmp_path, progress=False, executor=ex)
        assert again.trained == [] and sorted(again.skipped) == sorted(rep.run_ids)
        fut = ex.submit(divmod, 1, 0)
        assert isinstance(fut, cf.Future) and isinstance(fut.exception(timeout=60), ZeroDivisionError)
