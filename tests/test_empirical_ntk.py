"""Empirical NTK: exact small cases, agreement with a flat-Jacobian reference, and the width-4096 limit."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from widelimit._x64 import x64
from widelimit.arch import CNN, MLP
from widelimit.kernels import analytic_kernels
from widelimit.nets import empirical_ntk, empirical_ntk_of_spec
from widelimit.nets import apply, init_params

RNG = np.random.default_rng(0)
KEY = jax.random.PRNGKey(3)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_linear_model_ntk_is_exact(parameterization):
    # f(x) = (W_std/sqrt(d)) x.W + b_std b (NTK param): Theta = W_std^2 x.x'/d + b_std^2, at any width.
    # Standard param: f = x.W + b, Theta = x.x' + 1.
    spec = MLP(depth=1, W_std=1.7, b_std=0.6, out_dim=3, parameterization=parameterization)
    x1, x2 = RNG.normal(size=(5, 4)), RNG.normal(size=(3, 4))
    got = empirical_ntk_of_spec(spec, KEY, x1, x2)
    want = 1.7 ** 2 * x1 @ x2.T / 4 + 0.6 ** 2 if parameterization == "ntk" else x1 @ x2.T + 1.0
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12)
    full = empirical_ntk_of_spec(spec, KEY, x1, x2, output="full")
    np.testing.assert_allclose(full, want[:, :, None, None] * np.eye(3), rtol=1e-12, atol=1e-14)


_APPLY = {}


def _reference_ntk(f, params, x1, x2):
    flat, unravel = ravel_pytree(params)
    jac = jax.jit(lambda w, x: jax.jacrev(lambda v: f(unravel(v), x))(w))  # (N, K, P)
    return np.asarray(jnp.einsum("ikp,jlp->ijkl", jac(flat, x1), jac(flat, x2)))


@pytest.mark.parametrize("spec,in_shape,batch_size,max_bytes", [
    (MLP(depth=3, width=6, b_std=0.3, out_dim=2, activation="erf"), (3,), 64, 2 ** 28),
    (MLP(depth=3, width=6, b_std=0.3, out_dim=2, activation="erf"), (3,), 2, 2 ** 28),
    (MLP(depth=3, width=6, b_std=0.3, out_dim=2, activation="erf"), (3,), 64, 1000),
    (CNN(depth=1, channels=3, ndim=1, b_std=0.3, out_dim=2, norm="weight"), (4, 2), 2, 2 ** 28),
])
def test_blocks_match_flat_jacobian_reference(spec, in_shape, batch_size, max_bytes):
    x1, x2 = RNG.normal(size=(5,) + in_shape), RNG.normal(size=(3,) + in_shape)
    f = _APPLY.setdefault(spec, functools.partial(apply, spec))  # one function per spec: compiled once
    with x64():
        params = init_params(spec, KEY, in_shape, dtype=jnp.float64)
        ref = _reference_ntk(f, params, x1, x2)
        ref_sym = _reference_ntk(f, params, x1, x1)
    kw = dict(batch_size=batch_size, max_bytes=max_bytes)
    np.testing.assert_allclose(empirical_ntk(f, params, x1, x2, output="full", **kw), ref, rtol=1e-11)
    np.testing.assert_allclose(empirical_ntk(f, params, x1, output="full", **kw), ref_sym, rtol=1e-11)
    mean = empirical_ntk(f, params, x1, x2, **kw)
    np.testing.assert_allclose(mean, np.einsum("ijkk->ij", ref) / 2, rtol=1e-11)


def test_float32_params_stay_float32():
    spec = MLP(depth=2, width=8)
    params = init_params(spec, KEY, (3,))
    out = empirical_ntk(lambda p, x: apply(spec, p, x), params, np.ones((2, 3)))
    assert out.dtype == np.float32 and out.shape == (2, 2)


def test_bad_arguments():
    spec = MLP(depth=2, width=8)
    params = init_params(spec, KEY, (3,))
    f = lambda p, x: apply(spec, p, x)  # noqa: E731
    with pytest.raises(ValueError, match="output"):
        empirical_ntk(f, params, np.ones((2, 3)), output="diag")
    with pytest.raises(ValueError, match="batch_size"):
        empirical_ntk(f, params, np.ones((2, 3)), batch_size=0)
    with pytest.raises(ValueError, match="x1 and x2"):
        empirical_ntk(f, params, np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="x2 must be None"):
        empirical_ntk_of_spec(MLP(depth=2, width=8, norm="batch"), KEY, np.ones((2, 3)), np.ones((2, 3)))


def test_batch_norm_ntk_uses_the_whole_batch():
    spec = MLP(depth=2, width=16, norm="batch")
    x = RNG.normal(size=(6, 3))
    theta = empirical_ntk_of_spec(spec, KEY, x, batch_size=2)
    with x64():
        params = init_params(spec, KEY, (3,), dtype=jnp.float64)
        ref = _reference_ntk(lambda p, z: apply(spec, p, z), params, x, x)[:, :, 0, 0]
    np.testing.assert_allclose(theta, ref, rtol=1e-11)


def _mean_rel_error(spec, x, want, seeds=(0, 1, 2), **kw):
    errs = [np.linalg.norm(empirical_ntk_of_spec(spec, jax.random.PRNGKey(s), x, **kw) - want) / np.linalg.norm(want)
            for s in seeds]
    return float(np.mean(errs)), errs


def test_wide_mlp_matches_native_ntk():
    # width 4096, one hidden layer: Monte-Carlo error of the empirical NTK is O(1/sqrt(width)).
    spec = MLP(depth=2, width=4096, b_std=0.2)
    x = RNG.normal(size=(8, 10))
    err, errs = _mean_rel_error(spec, x, analytic_kernels(spec, x, backend="native").ntk)
    assert err <= 0.05, errs


@pytest.mark.slow
@pytest.mark.parametrize("act", ["relu", "erf"])
def test_wide_deep_mlp_matches_native_ntk(act):
    spec = MLP(depth=3, width=4096, activation=act, W_std=math.sqrt(2.0) if act == "relu" else 1.5)
    x = RNG.normal(size=(8, 10))
    err, errs = _mean_rel_error(spec, x, analytic_kernels(spec, x, backend="native").ntk)
    assert err <= 0.05, errs


@pytest.mark.nt
def test_wide_cnn_matches_neural_tangents_ntk():
    spec = CNN(depth=1, channels=4096, kernel_size=3, ndim=2)
    x = RNG.normal(size=(8, 4, 4, 2))
    err, errs = _mean_rel_error(spec, x, analytic_kernels(spec, x, backend="nt").ntk)
    assert err <= 0.05, errs


@pytest.mark.nt
@pytest.mark.slow
def test_wide_deep_cnn_matches_neural_tangents_ntk():
    # 33.5M parameters: float32 instances (XLA's float64 convolution on CPU is ~50x slower), which is
    # ample for a 5% Monte-Carlo tolerance; one Jacobian block of all 8 examples (~1 GB).
    spec = CNN(depth=2, channels=4096, kernel_size=2, ndim=1, b_std=0.1)
    x = RNG.normal(size=(8, 5, 2))
    err, errs = _mean_rel_error(spec, x, analytic_kernels(spec, x, backend="nt").ntk, dtype=jnp.float32,
                                max_bytes=2 ** 30)
    assert err <= 0.05, errs


@pytest.mark.parametrize("spec", [MLP(depth=3, width=24, out_dim=3),
                                  MLP(depth=2, width=16, out_dim=2, activation="leaky_relu", slope=0.1),
                                  MLP(depth=1, out_dim=2)])
def test_layerwise_empirical_ntk_matches_jacobian(spec):
    import jax

    from widelimit._x64 import x64
    from widelimit.data import load_dataset
    from widelimit.nets import apply, init_params, mlp_empirical_ntk

    ds = load_dataset("digits", n_train=12, n_test=7, seed=0)
    x1, x2 = ds.x_train, ds.x_test
    with x64():
        p = init_params(spec, jax.random.PRNGKey(3), (64,), dtype=jax.numpy.float64)
        ref = empirical_ntk(lambda q, x: apply(spec, q, x), p, x1, x2)
    mine = mlp_empirical_ntk(spec, jax.tree_util.tree_map(np.asarray, p), x1, x2)
    np.testing.assert_allclose(mine, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())
    with pytest.raises(ValueError, match="bias-free"):
        mlp_empirical_ntk(spec.replace(b_std=0.1), p, x1)


def test_sampled_kernels_estimate_the_analytic_kernels():
    """NTK averaged over a few finite nets and NNGP as the covariance of their initial outputs approach the
    infinite-width kernels (Monte-Carlo errors ~ width^(-1/2) and ~ (draws)^(-1/2)); fields and shapes as
    DataKernels'."""
    import types

    from widelimit.nets import KernelEstimates, sampled_kernels
    spec = MLP(depth=2, width=2048, out_dim=2)
    rng = np.random.default_rng(7)
    xtr, xte = rng.normal(size=(10, 5)), rng.normal(size=(6, 5))
    ds = types.SimpleNamespace(x_train=xtr, x_test=xte, n_train=10, n_test=6)
    est = sampled_kernels(spec, ds, ntk_seeds=(0, 1, 2, 3), nngp_samples=512, chunk=128)
    assert isinstance(est, KernelEstimates) and est.ntk_seeds == 4 and est.nngp_draws == 512 * 2
    tt, xt = analytic_kernels(spec, xtr, backend="native"), analytic_kernels(spec, xte, xtr, backend="native")
    xx = np.diag(analytic_kernels(spec, xte, backend="native").nngp)
    rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))  # noqa: E731
    assert est.ntk_train_train.shape == (10, 10) and est.nngp_test_test.shape == (6,)
    np.testing.assert_array_equal(est.ntk_train_train, est.ntk_train_train.T)
    # measured (seed-fixed): NTK 0.018 / 0.024, NNGP 0.065
    assert rel(est.ntk_train_train, tt.ntk) < 0.05 and rel(est.ntk_test_train, xt.ntk) < 0.05
    assert rel(est.nngp_train_train, tt.nngp) < 0.15 and rel(est.nngp_test_train, xt.nngp) < 0.15
    assert rel(est.nngp_test_test, xx) < 0.15
