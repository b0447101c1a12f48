"""DataKernels: validation on construction, .npz round trip, bad and empty files as ValueErrors."""
import numpy as np
import pytest

from widelimit.kernels import FORMAT_VERSION, DataKernels


def _dk(nngp=True, diag=True, N=6, M=4, K=2):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N + M, 3))
    a = x @ x.T + 0.1 * np.eye(N + M)
    b = 0.5 * a + 0.2
    kw = {}
    if nngp:
        kw = dict(nngp_train_train=b[:N, :N], nngp_test_train=b[N:, :N],
                  nngp_test_test=np.diag(b[N:, N:]) if diag else b[N:, N:])
    return DataKernels(a[:N, :N], a[N:, :N], rng.normal(size=(N, K)), rng.normal(size=(M, K)), 3,
                       source="unit test", **kw)


@pytest.mark.parametrize("nngp,diag", [(True, True), (True, False), (False, True)])
def test_round_trip(tmp_path, nngp, diag):
    dk = _dk(nngp, diag)
    path = dk.save(tmp_path / "k.npz")
    back = DataKernels.load(path)
    assert back.L == 3 and back.source == "unit test" and back.has_nngp is nngp
    for f in ("ntk_train_train", "ntk_test_train", "y_train", "y_test", "nngp_train_train", "nngp_test_train",
              "nngp_test_test"):
        a, b = getattr(dk, f), getattr(back, f)
        assert (a is None and b is None) or np.array_equal(a, b), f
    with np.load(path) as z:
        assert int(z["format_version"]) == FORMAT_VERSION


def test_construction_names_the_bad_field():
    dk = _dk()
    with pytest.raises(ValueError, match="ntk_train_train is not symmetric"):
        dk.replace(ntk_train_train=dk.ntk_train_train + np.triu(np.ones((6, 6)), 1))
    with pytest.raises(ValueError, match="ntk_test_train must have shape"):
        dk.replace(ntk_test_train=dk.ntk_test_train[:, :-1])
    with pytest.raises(ValueError, match="y_test must have shape"):
        dk.replace(y_test=dk.y_test[:, :1])
    with pytest.raises(ValueError, match="y_train contains NaN"):
        dk.replace(y_train=np.full_like(dk.y_train, np.nan))
    with pytest.raises(ValueError, match="all three NNGP blocks"):
        dk.replace(nngp_test_train=None)
    with pytest.raises(ValueError, match="nngp_test_test has a negative diagonal"):
        dk.replace(nngp_test_test=-dk.nngp_test_test)
    with pytest.raises(ValueError, match="L must be an int"):
        dk.replace(L=0)
    with pytest.raises(ValueError, match="nngp_train_train is not positive semi-definite"):
        dk.replace(nngp_train_train=dk.nngp_train_train - 10 * np.eye(6)).validate()


def test_bad_files_are_value_errors(tmp_path):
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        DataKernels.load(empty)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="not a readable .npz"):
        DataKernels.load(junk)
    with pytest.raises(ValueError, match="no such kernel file"):
        DataKernels.load(tmp_path / "missing.npz")
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.ones(3))
    with pytest.raises(ValueError, match="not a widelimit kernel file"):
        DataKernels.load(foreign)
    dk = _dk()
    path = dk.save(tmp_path / "k.npz")
    with np.load(path) as z:
        data = dict(z)
    np.savez(tmp_path / "v99.npz", **{**data, "format_version": np.array(99)})
    with pytest.raises(ValueError, match="format_version 99"):
        DataKernels.load(tmp_path / "v99.npz")
    del data["y_test"]
    np.savez(tmp_path / "noy.npz", **data)
    with pytest.raises(ValueError, match="missing field.*y_test"):
        DataKernels.load(tmp_path / "noy.npz")
    bad = {**dict(np.load(path)), "ntk_train_train": dk.ntk_train_train - 100 * np.eye(6)}
    np.savez(tmp_path / "npsd.npz", **bad)
    with pytest.raises(ValueError, match="npsd.npz: ntk_train_train is not positive semi-definite"):
        DataKernels.load(tmp_path / "npsd.npz")


def test_from_spec_matches_analytic_kernels():
    from widelimit.arch import MLP
    from widelimit.kernels import analytic_kernels
    rng = np.random.default_rng(1)
    x, xt = rng.normal(size=(7, 5)), rng.normal(size=(300, 5))      # > 256 test points: blocked diagonal
    y, yt = rng.normal(size=(7, 2)), rng.normal(size=(300, 2))
    spec = MLP(depth=2, out_dim=2)
    dk = DataKernels.from_spec(spec, x, y, xt, yt)
    assert dk.L == 2 and dk.has_nngp and dk.nngp_test_test.shape == (300,)
    np.testing.assert_allclose(dk.ntk_test_train, analytic_kernels(spec, xt, x).ntk, rtol=1e-14)
    np.testing.assert_allclose(dk.nngp_test_test, np.diag(analytic_kernels(spec, xt).nngp), rtol=1e-14)
    with pytest.raises(ValueError, match="homogeneous"):
        DataKernels.from_spec(MLP(depth=2, b_std=0.1), x, y, xt, yt)
