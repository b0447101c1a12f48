"""The on-disk kernel store of blockwise_kernels (widelimit/kernels/_store.py): a request for a subset of a
richer earlier run reuses its finished files read-only and untouched; unfinished kernels resume exactly
their missing blocks; files of another computation or without a record are never overwritten."""
import hashlib
import json

import numpy as np
import pytest

from widelimit.arch import MLP
from widelimit.kernels import blockwise
from widelimit.kernels.blockwise import blockwise_kernels
from widelimit.kernels.native import mlp_kernels

SPEC = MLP(depth=3, activation="relu")
KW = dict(block=40, dtype="float32", progress=False, verbose=False)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(5).standard_normal((150, 7))


def _files(root):
    return {f.name: (f.stat().st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest())
            for f in sorted(root.iterdir())}


@pytest.fixture
def count_blocks(monkeypatch):
    """Counts the blocks computed (the NumPy block function), with the kernels each one writes."""
    calls = []
    real = blockwise._numpy_block

    def spy(spec, a, b, diag, out_ntk, out_nngp, *args, **kw):
        calls.append((out_ntk is not None, out_nngp is not None))
        return real(spec, a, b, diag, out_ntk, out_nngp, *args, **kw)

    monkeypatch.setattr(blockwise, "_numpy_block", spy)
    return calls


def test_subset_of_richer_run_is_reused_untouched(x, tmp_path, count_blocks):
    full = blockwise_kernels(SPEC, x, path=tmp_path, **KW)
    assert len(count_blocks) == 10                                   # 4 x 4 blocks, upper triangle
    ref_ntk = np.array(full["ntk"])
    del full
    before = _files(tmp_path)
    count_blocks.clear()
    out = blockwise_kernels(SPEC, x, path=tmp_path, get=("ntk",), **KW)
    assert count_blocks == []                                        # nothing recomputed
    assert set(out) == {"ntk"} and out["ntk"].mode == "r"            # read-only: cannot be overwritten
    np.testing.assert_array_equal(out["ntk"], ref_ntk)
    np.testing.assert_allclose(out["ntk"], mlp_kernels(SPEC, x)[0], rtol=1e-6)
    assert _files(tmp_path) == before                                # files and record untouched
    out = blockwise_kernels(SPEC, x, path=tmp_path, get=("nngp",), **KW)
    assert count_blocks == [] and out["nngp"].mode == "r" and _files(tmp_path) == before


def test_superset_computes_only_the_missing_kernel(x, tmp_path, count_blocks):
    blockwise_kernels(SPEC, x, path=tmp_path, get=("ntk",), **KW)
    ntk_before = _files(tmp_path)["ntk.npy"]
    count_blocks.clear()
    out = blockwise_kernels(SPEC, x, path=tmp_path, **KW)
    assert len(count_blocks) == 10 and set(count_blocks) == {(False, True)}   # only the NNGP is written
    assert out["ntk"].mode == "r" and _files(tmp_path)["ntk.npy"] == ntk_before
    ntk, nngp = mlp_kernels(SPEC, x)
    np.testing.assert_allclose(out["nngp"], nngp, rtol=1e-6)
    np.testing.assert_allclose(out["ntk"], ntk, rtol=1e-6)


def test_incomplete_kernel_resumes_exactly_its_missing_blocks(x, tmp_path, count_blocks):
    blockwise_kernels(SPEC, x, path=tmp_path, **KW)
    rec = json.loads((tmp_path / "progress.json").read_text())
    lost = rec["kernels"]["nngp"][-3:]
    rec["kernels"]["nngp"] = rec["kernels"]["nngp"][:-3]             # the NNGP interrupted, the NTK finished
    (tmp_path / "progress.json").write_text(json.dumps(rec))
    mm = np.load(tmp_path / "nngp.npy", mmap_mode="r+")
    for i, j in lost:
        mm[i:i + 40, j:j + 40] = np.nan
    mm.flush()
    del mm
    ntk_before = _files(tmp_path)["ntk.npy"]
    count_blocks.clear()
    out = blockwise_kernels(SPEC, x, path=tmp_path, get=("ntk",), **KW)   # the finished NTK alone: no work
    assert count_blocks == [] and out["ntk"].mode == "r"
    out = blockwise_kernels(SPEC, x, path=tmp_path, **KW)
    assert count_blocks == [(False, True)] * 3                        # the 3 lost NNGP blocks, nothing else
    np.testing.assert_allclose(out["nngp"], mlp_kernels(SPEC, x)[1], rtol=1e-6)
    assert _files(tmp_path)["ntk.npy"] == ntk_before
    rec = json.loads((tmp_path / "progress.json").read_text())
    assert len(rec["kernels"]["ntk"]) == len(rec["kernels"]["nngp"]) == 10


def test_record_of_the_earlier_format_is_reused(x, tmp_path, count_blocks):
    blockwise_kernels(SPEC, x, path=tmp_path, **KW)
    rec = json.loads((tmp_path / "progress.json").read_text())
    # the earlier record: one key (which included the kernels requested) and one list of finished blocks
    (tmp_path / "progress.json").write_text(json.dumps({"key": rec["key"], "done": rec["kernels"]["ntk"]}))
    before = _files(tmp_path)
    count_blocks.clear()
    out = blockwise_kernels(SPEC, x, path=tmp_path, get=("ntk",), **KW)
    assert count_blocks == [] and out["ntk"].mode == "r" and _files(tmp_path) == before


def test_other_computation_or_unrecorded_files_are_never_overwritten(x, tmp_path, count_blocks):
    blockwise_kernels(SPEC, x, path=tmp_path, get=("ntk",), **KW)
    before = _files(tmp_path)
    count_blocks.clear()
    for kw in (dict(x1=x[:-1]), dict(x1=x, dtype="float64"), dict(x1=x, block=50),
               dict(x1=x, spec=MLP(depth=2, activation="relu"))):
        args = dict(KW, spec=SPEC, path=tmp_path, get=("ntk",))
        args.update(kw)
        with pytest.raises(ValueError, match="another computation"):
            blockwise_kernels(args.pop("spec"), args.pop("x1"), **args)
    assert count_blocks == [] and _files(tmp_path) == before
    (tmp_path / "progress.json").unlink()                            # files without their record
    with pytest.raises(ValueError, match="no progress.json record"):
        blockwise_kernels(SPEC, x, path=tmp_path, get=("ntk",), **KW)
    (tmp_path / "progress.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable progress.json"):
        blockwise_kernels(SPEC, x, path=tmp_path, get=("ntk",), **KW)
    assert count_blocks == []
