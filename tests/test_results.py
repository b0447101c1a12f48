"""ResultStore: atomic, append-only, crash-tolerant run records."""
import json
import os

import numpy as np
import pytest

from widelimit.results import ResultStore, RunExistsError


def _streams(seed=0):
    rng = np.random.default_rng(seed)
    return {"metrics": {"step": np.arange(5), "test_loss": rng.random(5)},
            "layers": {"weight_norm/hidden0": rng.random(5)},
            "probe": {"outputs": rng.random((5, 3, 2)).astype(np.float32)}}


def test_write_load_roundtrip_and_iteration(tmp_path):
    store = ResultStore(tmp_path / "store")
    cfg = {"lr": np.float32(0.5), "arch": {"depth": 3}, "tags": ("a", "b")}
    s = _streams()
    assert not store.has("run1") and "run1" not in store
    store.write("run1", cfg, s, {"best": np.float64(0.25), "n": np.int64(3)})
    store.write("run2", {"lr": 1.0}, _streams(1))
    assert store.has("run1") and "run2" in store and len(store) == 2
    r = store.load("run1")
    assert r.config == {"lr": 0.5, "arch": {"depth": 3}, "tags": ["a", "b"]}
    assert r.summary == {"best": 0.25, "n": 3}
    for name, arrays in s.items():
        assert set(r.streams[name]) == set(arrays)
        for k, v in arrays.items():
            np.testing.assert_array_equal(r.streams[name][k], v)
            assert r.streams[name][k].dtype == np.asarray(v).dtype
    assert [run.run_id for run in store] == ["run1", "run2"]
    # a second handle on the same directory sees the same runs
    assert ResultStore(tmp_path / "store").run_ids() == ["run1", "run2"]


def test_append_only(tmp_path):
    store = ResultStore(tmp_path)
    store.write("r", {"a": 1}, _streams())
    with pytest.raises(RunExistsError):
        store.write("r", {"a": 2}, _streams(2))
    assert store.load("r").config == {"a": 1}


def test_bad_arguments(tmp_path):
    store = ResultStore(tmp_path)
    for bad in ["", "../x", "a/b", "x" * 200, 3]:
        with pytest.raises(ValueError, match="run_id"):
            store.write(bad, {}, {})
    with pytest.raises(TypeError, match="stream"):
        store.write("ok", {}, {"metrics": [1, 2]})
    with pytest.raises(ValueError, match="stream name"):
        store.write("ok", {}, {"a/b": {"x": np.ones(2)}})
    with pytest.raises(KeyError):
        store.load("missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        ResultStore(tmp_path / "file")


def test_crash_debris_is_ignored_and_cleaned(tmp_path):
    """What a writer killed mid-way can leave behind: a staging dir (dead pid) with partial files, or a
    run dir without its completion marker. Neither counts as a run, and the run can still be written."""
    store = ResultStore(tmp_path)
    dead_pid = 2 ** 22 + 12345  # above the default pid_max: no such process
    stage = tmp_path / "tmp" / f"r1.{dead_pid}.0123abcd"
    stage.mkdir()
    (stage / "config.json").write_text('{"half": ')
    (stage / ".metrics.npz.deadbeef.tmp").write_bytes(b"PK\x03")
    partial = tmp_path / "runs" / "r2"
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    assert store.run_ids() == [] and not store.has("r1") and not store.has("r2")
    store.write("r2", {"v": 2}, _streams())
    assert store.load("r2").config == {"v": 2}
    assert store.cleanup() >= 1
    assert not stage.exists()
    live = tmp_path / "tmp" / f"r3.{os.getpid()}.0123abcd"  # a writer that is still alive is left alone
    live.mkdir()
    store.cleanup()
    assert live.exists()


def test_corruption_is_detected(tmp_path):
    store = ResultStore(tmp_path)
    store.write("r", {"a": 1}, _streams())
    path = tmp_path / "runs" / "r" / "metrics.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        store.load("r")
    marker = json.loads((tmp_path / "runs" / "r" / "COMPLETE.json").read_text())
    assert set(marker["streams"]) == {"metrics", "layers", "probe"}
