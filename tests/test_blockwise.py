"""Blockwise analytic kernels (bounded memory, memmap, resume, JAX) and the large-N datasets."""
import json

import numpy as np
import pytest

from widelimit.arch import MLP
from widelimit.kernels.blockwise import blockwise_kernels
from widelimit.kernels.native import mlp_kernels

SPECS = [MLP(depth=3, activation="relu"), MLP(depth=2, activation="erf"),
         MLP(depth=3, activation="relu", parameterization="standard", width=64)]


@pytest.fixture(scope="module")
def xs():
    rng = np.random.default_rng(0)
    return rng.standard_normal((230, 9)), rng.standard_normal((70, 9))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.activation}-{s.parameterization}")
@pytest.mark.parametrize("device", ["numpy", "jax"])
def test_matches_native(spec, device, xs):
    x, x2 = xs
    ref = mlp_kernels(spec, x)
    out = blockwise_kernels(spec, x, block=64, dtype="float64", device=device, progress=False, verbose=False)
    for k, r in zip(("ntk", "nngp"), ref):
        np.testing.assert_allclose(out[k], r, rtol=1e-13, atol=1e-13 * np.abs(r).max())
        np.testing.assert_array_equal(out[k], out[k].T)              # mirrored exactly
    ref2 = mlp_kernels(spec, x2, x)
    out2 = blockwise_kernels(spec, x2, x, block=50, dtype="float32", device=device, progress=False,
                             verbose=False, get=("ntk",))
    assert set(out2) == {"ntk"} and out2["ntk"].dtype == np.float32
    np.testing.assert_allclose(out2["ntk"], ref2[0], rtol=1e-6)     # float32 storage: one rounding


def test_memmap_resume(xs, tmp_path, capsys):
    x, _ = xs
    spec = SPECS[0]
    ref = mlp_kernels(spec, x)[0]
    blockwise_kernels(spec, x, block=40, path=tmp_path, dtype="float64", progress=False, get=("ntk",))
    assert "GiB" in capsys.readouterr().err                          # memory printed before starting
    rec = json.loads((tmp_path / "progress.json").read_text())
    assert len(rec["kernels"]["ntk"]) == 21                          # 6 x 6 blocks, upper triangle
    # simulate an interruption: forget 5 blocks and poison their entries; a resume recomputes exactly those
    lost = rec["kernels"]["ntk"][-5:]
    rec["kernels"]["ntk"] = rec["kernels"]["ntk"][:-5]
    (tmp_path / "progress.json").write_text(json.dumps(rec))
    mm = np.load(tmp_path / "ntk.npy", mmap_mode="r+")
    for i, j in lost:
        mm[i:i + 40, j:j + 40] = np.nan
    mm.flush()
    del mm
    out = blockwise_kernels(spec, x, block=40, path=tmp_path, dtype="float64", progress=False, get=("ntk",))
    assert isinstance(out["ntk"], np.memmap)
    np.testing.assert_allclose(out["ntk"], ref, rtol=1e-13)
    # other inputs under the same path: an error, never a mix and never an overwrite
    with pytest.raises(ValueError, match="another computation"):
        blockwise_kernels(spec, 2 * x, block=40, path=tmp_path, dtype="float64", progress=False, get=("ntk",))
    np.testing.assert_allclose(np.load(tmp_path / "ntk.npy"), ref, rtol=1e-13)


def test_bad_input(xs):
    x, _ = xs
    with pytest.raises(ValueError, match="get"):
        blockwise_kernels(SPECS[0], x, get=("ntk", "foo"), verbose=False)
    with pytest.raises(ValueError, match="dtype"):
        blockwise_kernels(SPECS[0], x, dtype="float16", verbose=False)
    with pytest.raises(ValueError, match="block"):
        blockwise_kernels(SPECS[0], x, block=0, verbose=False)
    with pytest.raises(MemoryError, match="path="):                 # 2 x 10^6 x 10^6 float32 = 7 TiB
        blockwise_kernels(SPECS[0], np.zeros((10 ** 6, 3)) + 1.0, verbose=False)


def test_mnist1d_large_sizes():
    from widelimit.data_large import load_mnist1d_large
    ds = load_mnist1d_large(4500, 603, seed=1, cache=False)
    assert ds.x_train.shape == (4500, 40) and ds.x_test.shape == (603, 40) and ds.y_train.shape == (4500, 10)
    assert np.allclose(ds.x_train.mean(0), 0, atol=1e-12)            # feature-normalised on the train split
    # train and test signals are distinct generated samples
    assert not (set(map(bytes, ds.x_train.astype(np.float32))) & set(map(bytes, ds.x_test.astype(np.float32))))
    counts = np.bincount(ds.c_train, minlength=10)
    assert counts.min() > 350                                         # all ten classes, roughly balanced
    with pytest.raises(ValueError, match="n_train"):
        load_mnist1d_large(0)


def test_large_data_kernels_and_bytes(xs, tmp_path):
    """The large-N container keeps float32 storage (no float64 copy), matches the native kernels and the
    exact test diagonal, and :func:`kernel_bytes` is exactly what it stores."""
    from widelimit.kernels.blockwise import kernel_bytes, large_data_kernels
    x, x2 = xs
    spec = SPECS[0]
    y, yt = np.eye(3)[np.arange(len(x)) % 3], np.eye(3)[np.arange(len(x2)) % 3]
    k = large_data_kernels(spec, x, y, x2, yt, path=tmp_path, block=64, progress=False, verbose=False)
    assert k.ntk_train_train.dtype == np.float32 and isinstance(k.ntk_train_train, np.memmap)
    assert k.L == 3 and k.has_nngp
    ntk, nngp = mlp_kernels(spec, x)
    np.testing.assert_allclose(k.ntk_train_train, ntk, rtol=1e-6)
    np.testing.assert_allclose(k.nngp_test_train, mlp_kernels(spec, x2, x)[1], rtol=1e-6)
    np.testing.assert_allclose(k.nngp_test_test, np.diag(mlp_kernels(spec, x2)[1]), rtol=1e-14)
    assert k.nbytes == kernel_bytes(len(x), len(x2), nngp=True, dtype="float32")
    # one set of fields with DataKernels (the shared base), kept as stored here
    from dataclasses import fields

    from widelimit.kernels.container import DataKernels, KernelBlocks
    assert issubclass(type(k), KernelBlocks) and issubclass(DataKernels, KernelBlocks)
    assert [f.name for f in fields(k)] == [f.name for f in fields(DataKernels)]
    assert (k.n_train, k.n_test) == (len(x), len(x2)) and not isinstance(k, DataKernels)
    assert kernel_bytes(50_000, 1000, nngp=False, dtype="float32") == 4 * (50_000 ** 2 + 1000 * 50_000)
    with pytest.raises(ValueError, match="n_train"):
        kernel_bytes(0, 10)
    with pytest.raises(ValueError, match="spec"):
        large_data_kernels(MLP(depth=3, activation="relu", b_std=0.1), x, y, x2, yt)
