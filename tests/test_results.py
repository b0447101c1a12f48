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
    path = store.load("r").path / "metrics.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        store.load("r")
    marker = json.loads((path.parent / "COMPLETE.json").read_text())
    assert set(marker["streams"]) == {"metrics", "layers", "probe"}


# -- provenance -------------------------------------------------------------------------------------
def test_code_version_is_recorded_and_a_mismatch_is_recomputed_beside_the_old_record(tmp_path):
    from widelimit.provenance import code_version, git_state

    old = ResultStore(tmp_path, code_version="cv-old")
    old.write("r", {"a": 1}, _streams(0), {"v": 1})
    run = old.load("r")
    assert run.code_version == "cv-old" and run.provenance["code_version"] == "cv-old"
    commit, dirty = git_state()
    assert run.provenance["git_commit"] == commit and run.provenance["git_dirty"] == dirty
    new = ResultStore(tmp_path, code_version="cv-new")
    assert not new.has("r") and new.run_ids() == [] and len(new) == 0
    with pytest.raises(KeyError, match="cv-old"):
        new.load("r")
    new.write("r", {"a": 1}, _streams(1), {"v": 2})  # recomputed: stored beside, old one kept
    assert new.load("r").summary == {"v": 2} and old.load("r").summary == {"v": 1}
    assert new.versions("r") == ["cv-new", "cv-old"]
    assert new.load("r", code_version="cv-old").summary == {"v": 1}
    # the default handle works at this process's training-code version
    default = ResultStore(tmp_path)
    assert default.code_version == code_version() and not default.has("r")
    with pytest.raises(ValueError, match="code_version"):
        ResultStore(tmp_path, code_version="bad/version")


def test_code_version_hashes_file_contents_not_times(tmp_path):
    import shutil

    from widelimit import provenance as pv

    shutil.copytree(pv.PACKAGE_ROOT, tmp_path / "pkg", ignore=shutil.ignore_patterns("__pycache__"))
    root = tmp_path / "pkg"
    h0 = pv.hash_sources(root=root)
    assert h0 == pv.hash_sources() and h0 == pv.code_version()  # location-independent
    f = root / "train" / "loop.py"
    os.utime(f, (1, 1))
    assert pv.hash_sources(root=root) == h0  # times do not matter
    f.write_text(f.read_text() + "\n# changed\n")
    assert pv.hash_sources(root=root) != h0  # contents do
    (root / "train" / "new_module.py").write_text("x = 1\n")
    h2 = pv.hash_sources(root=root)
    f.write_text(f.read_text().replace("\n# changed\n", ""))
    assert pv.hash_sources(root=root) not in (h0, h2)
    h3 = pv.hash_sources(root=root)
    (root / "studies" / "quick.py").write_text("# not a training source\n")
    assert pv.hash_sources(root=root) == h3  # only the training sources count
    with pytest.raises(ValueError, match="sources"):
        pv.hash_sources(["no_such_dir"], root=root)


def test_legacy_records_are_read_explicitly_and_migrated_explicitly(tmp_path):
    from widelimit.results import LEGACY

    store = ResultStore(tmp_path, code_version="cv-now")
    path = store.write("r", {"a": 1}, _streams(3), {"v": 3})
    # turn it into a record of the earlier format: bare run id directory, marker without provenance
    marker = json.loads((path / "COMPLETE.json").read_text())
    del marker["code_version"], marker["provenance"]
    (path / "COMPLETE.json").write_text(json.dumps(marker))
    path.rename(tmp_path / "runs" / "r")
    assert not store.has("r") and store.records() == [("r", LEGACY)]
    legacy = store.load("r", code_version=LEGACY)
    assert legacy.code_version == LEGACY and legacy.summary == {"v": 3}
    assert store.migrate_legacy() == ["r"] and store.migrate_legacy() == []
    adopted = store.load("r")
    assert adopted.provenance["migrated_from"] == LEGACY and adopted.written_at == legacy.written_at
    for k, v in legacy.streams["probe"].items():
        np.testing.assert_array_equal(adopted.streams["probe"][k], v)
    assert (tmp_path / "runs" / "r" / "COMPLETE.json").is_file()  # the legacy record is kept


def test_claims_are_exclusive_within_a_process_and_released(tmp_path):
    store = ResultStore(tmp_path)
    with store.claim("r") as a:
        assert a
        with store.claim("r") as b:
            assert not b
        assert not store.claim("r", blocking=True, timeout=0.1).acquire()
        with store.claim("other") as c:
            assert c
    with store.claim("r") as d:
        assert d
    with pytest.raises(ValueError, match="timeout"):
        store.claim("r", timeout=-1)
