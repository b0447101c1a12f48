"""Dataset loaders: shapes, splits, targets, normalisation, option validation, no network access, and the
CIFAR-10 python-pickle reader on a tiny fixture written here in the official format."""
import pickle
import random
import socket

import numpy as np
import pytest

from widelimit.data import (DATASETS, DatasetNotFoundError, check_dataset_options, dataset_options,
                            load_dataset)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a dataset loader tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    try:
        import requests
        monkeypatch.setattr(requests, "get", refuse)
    except ImportError:
        pass


# ------------------------------------------------------------------------------------------------
# teacher
# ------------------------------------------------------------------------------------------------
def test_teacher_shapes_determinism_and_noise(no_network):
    a = load_dataset("teacher", n_train=40, n_test=10, in_dim=5, out_dim=2, seed=3)
    b = load_dataset("teacher", n_train=40, n_test=10, in_dim=5, out_dim=2, seed=3)
    c = load_dataset("teacher", n_train=40, n_test=10, in_dim=5, out_dim=2, seed=4)
    assert a.x_train.shape == (40, 5) and a.y_train.shape == (40, 2)
    assert a.x_test.shape == (10, 5) and a.y_test.shape == (10, 2)
    assert a.labels is None and a.task == "regression" and a.c_train is None
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.allclose(a.x_train, c.x_train)
    # noiseless: targets equal the teacher function; with noise the residual has the requested scale
    np.testing.assert_allclose(a.y_train, a.meta["noiseless_train"])
    n = load_dataset("teacher", n_train=4000, n_test=10, in_dim=5, noise=0.3, seed=3)
    resid = n.y_train - n.meta["noiseless_train"]
    assert abs(resid.std() - 0.3) < 0.02


def test_teacher_linear_sphere_and_signal_layout():
    d = load_dataset("teacher", n_train=30, n_test=5, in_dim=7, teacher="linear", input_dist="sphere",
                     layout="signal")
    assert d.x_train.shape == (30, 7, 1)
    np.testing.assert_allclose(np.sum(d.x_train[..., 0] ** 2, axis=1), 7.0, rtol=1e-12)
    # a linear teacher: targets lie in the span of the inputs (least squares fits them exactly)
    x = d.x_train[..., 0]
    beta, *_ = np.linalg.lstsq(x, d.y_train, rcond=None)
    np.testing.assert_allclose(x @ beta, d.y_train, atol=1e-10)


# ------------------------------------------------------------------------------------------------
# digits
# ------------------------------------------------------------------------------------------------
def test_digits_default_split_onehot_and_feature_normalisation(no_network):
    d = load_dataset("digits")
    assert d.n_train + d.n_test == 1797 and d.n_test == round(0.2 * 1797)
    assert d.x_train.shape == (d.n_train, 64) and d.y_train.shape == (d.n_train, 10)
    assert d.labels == tuple(range(10))
    np.testing.assert_array_equal(d.y_train.sum(1), 1.0)
    np.testing.assert_array_equal(np.argmax(d.y_train, 1), d.c_train)
    # per-feature standardisation with training statistics: train mean 0, std 1 (or 0 for constant pixels)
    np.testing.assert_allclose(d.x_train.mean(0), 0.0, atol=1e-12)
    std = d.x_train.std(0)
    assert np.all((np.abs(std - 1) < 1e-9) | (std < 1e-12))
    # test split uses the *training* statistics, so its mean is not exactly zero
    assert np.abs(d.x_test.mean(0)).max() > 1e-3


def test_digits_binary_pm1_image_layout_and_split_disjoint():
    from sklearn.datasets import load_digits

    d = load_dataset("digits", classes=[3, 8], targets="pm1", layout="image", n_train=100, n_test=50,
                     normalize=None, seed=1)
    assert d.x_train.shape == (100, 8, 8, 1) and d.y_train.shape == (100, 1)
    assert d.labels == (3, 8)
    assert set(np.unique(d.y_train)) == {-1.0, 1.0}
    # -1 <-> classes[0] = 3, +1 <-> classes[1] = 8, checked against the raw sklearn images
    raw = load_digits()
    lookup = {row.tobytes(): lab for row, lab in zip(raw.data.astype(np.float64), raw.target)}
    for x, y in zip(d.x_train.reshape(100, 64), d.y_train[:, 0]):
        assert lookup[x.tobytes()] == (8 if y > 0 else 3)
    # train and test come from disjoint draws of the pool
    tr = {x.tobytes() for x in d.x_train.reshape(100, -1)}
    te = [x.tobytes() for x in d.x_test.reshape(50, -1)]
    n_pool = int(np.isin(raw.target, [3, 8]).sum())
    assert 100 + 50 <= n_pool
    dup_rows = len(raw.data) - len({r.tobytes() for r in raw.data})
    assert sum(t in tr for t in te) <= dup_rows  # only identical images could coincide


def test_digits_centered_targets_l2_and_global_normalisation():
    d = load_dataset("digits", classes=[0, 1, 2], targets="onehot_centered", normalize="l2", n_train=60,
                     n_test=20)
    np.testing.assert_allclose(d.y_train.sum(1), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.sum(d.x_train ** 2, 1), 64.0, rtol=1e-12)
    g = load_dataset("digits", normalize="global", n_train=300, n_test=20)
    assert abs(g.x_train.mean()) < 1e-12 and abs(g.x_train.std() - 1) < 1e-12


# ------------------------------------------------------------------------------------------------
# MNIST-1D
# ------------------------------------------------------------------------------------------------
def test_mnist1d_generated_offline_cached_and_rng_untouched(no_network, monkeypatch, tmp_path):
    monkeypatch.setenv("WIDELIMIT_CACHE_DIR", str(tmp_path))
    np.random.seed(123)
    random.seed(123)
    np_before, py_before = np.random.random(), random.random()
    np.random.seed(123)
    random.seed(123)
    d = load_dataset("mnist1d", n_train=200, n_test=100, seed=0)
    # make_dataset reseeds the global RNGs; the loader must restore them
    assert np.random.random() == np_before and random.random() == py_before
    assert d.x_train.shape == (200, 40) and d.y_train.shape == (200, 10) and d.x_test.shape == (100, 40)
    cached = list(tmp_path.glob("mnist1d-*.npz"))
    assert len(cached) == 1
    with np.load(cached[0]) as z:
        assert z["x"].shape == (4000, 40) and z["x_test"].shape == (1000, 40)
    d2 = load_dataset("mnist1d", n_train=200, n_test=100, seed=0, layout="signal", classes=[0, 1])
    assert d2.x_train.shape[1:] == (40, 1) and d2.labels == (0, 1)
    d3 = load_dataset("mnist1d", n_train=200, n_test=100, seed=0)  # from the cache: identical
    np.testing.assert_array_equal(d.x_train, d3.x_train)
    np.testing.assert_array_equal(d.y_test, d3.y_test)


# ------------------------------------------------------------------------------------------------
# CIFAR-10 (official python-pickle format, tiny fixture)
# ------------------------------------------------------------------------------------------------
def _write_cifar(root, n_per_batch=6, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name, n in [(f"data_batch_{i}", n_per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        d = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
             b"filenames": [f"img{i}.png".encode() for i in range(n)]}
        with open(root / name, "wb") as fh:
            pickle.dump(d, fh, protocol=2)
        batches[name] = (data, labels)
    with open(root / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh, protocol=2)
    return batches


def test_cifar10_reads_fixture_in_official_format(tmp_path, no_network):
    root = tmp_path / "cifar-10-batches-py"
    batches = _write_cifar(root)
    d = load_dataset("cifar10", path=str(root), normalize=None, dtype="float64")
    assert d.x_train.shape == (30, 32, 32, 3) and d.x_test.shape == (5, 32, 32, 3)
    assert d.y_train.shape == (30, 10)
    # every training image is one of the fixture rows, decoded as R plane, G plane, B plane (row-major)
    raw = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = np.concatenate([batches[f"data_batch_{i}"][1] for i in range(1, 6)])
    for x, c in zip(d.x_train, d.c_train):
        matches = [j for j in range(len(raw)) if abs(x[0, 1, 0] * 255 - raw[j, 1]) < 1e-9
                   and abs(x[2, 3, 1] * 255 - raw[j, 1024 + 2 * 32 + 3]) < 1e-9
                   and abs(x[31, 30, 2] * 255 - raw[j, 2048 + 31 * 32 + 30]) < 1e-9]
        assert matches, "decoded pixel layout does not match the CIFAR row format"
        j = matches[0]
        np.testing.assert_allclose(x[..., 0].ravel() * 255, raw[j, :1024])
        np.testing.assert_allclose(x[..., 2].ravel() * 255, raw[j, 2048:])
        assert labels[j] == d.labels[c]
    # parent directory is accepted too; flat layout; class subset; channel normalisation
    e = load_dataset("cifar10", path=str(tmp_path), layout="flat", classes=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert e.x_train.shape == (30, 3072) and e.x_train.dtype == np.float32
    img = e.x_train.reshape(30, 32, 32, 3)
    np.testing.assert_allclose(img.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)


def test_cifar10_missing_gives_clear_error(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="never downloads"):
        load_dataset("cifar10", path=str(tmp_path / "nowhere"))
    root = tmp_path / "partial"
    _write_cifar(root)
    (root / "test_batch").unlink()
    with pytest.raises(ValueError, match="test_batch"):  # DatasetNotFoundError is a ValueError too
        check_dataset_options("cifar10", path=str(root))


# ------------------------------------------------------------------------------------------------
# option validation
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, options, match", [
    ("digits", {"n_trian": 5}, "n_trian"),
    ("digits", {"classes": [1]}, "classes"),
    ("digits", {"classes": [1, 11]}, "classes"),
    ("digits", {"targets": "pm1"}, "pm1"),
    ("digits", {"layout": "signal"}, "layout"),
    ("teacher", {"noise": -1.0}, "noise"),
    ("mnist1d", {"seed": -2}, "seed"),
    ("nope", {}, "dataset name"),
])
def test_invalid_options_are_rejected_by_name(name, options, match):
    with pytest.raises(ValueError, match=match):
        check_dataset_options(name, **options)


def test_wrong_types_and_sizes():
    with pytest.raises(TypeError, match="n_train"):
        check_dataset_options("digits", n_train=2.5)
    with pytest.raises(ValueError, match="exceeds"):
        load_dataset("digits", classes=[0, 1], n_train=1000)
    assert set(dataset_options("digits")) >= {"classes", "n_train", "n_test", "seed", "targets", "layout"}
    assert set(DATASETS) == {"teacher", "digits", "mnist1d", "cifar10"}
