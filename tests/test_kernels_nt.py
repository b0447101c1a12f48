"""Native kernels against neural-tangents, and the neural-tangents backend itself (pinned env only)."""
import itertools

import numpy as np
import pytest

from widelimit.arch import CNN, MLP
from widelimit.kernels import analytic_kernels, kernel_fn

pytestmark = pytest.mark.nt

RNG = np.random.default_rng(1)
X = np.vstack([RNG.normal(size=(5, 6)), 3.0 * RNG.normal(size=(2, 6))])  # includes larger-norm inputs

CASES = list(itertools.product(["relu", "leaky_relu", "abrelu", "erf", "identity"], ["ntk", "standard"],
                               [None, 0.35]))


@pytest.mark.parametrize("act,parameterization,b_std", CASES)
def test_native_equals_neural_tangents(act, parameterization, b_std):
    worst = 0.0
    for depth in (1, 2, 3, 4, 5):
        spec = MLP(depth=depth, width=48, activation=act, parameterization=parameterization, b_std=b_std,
                   W_std=1.3, slope=0.15, abrelu_a=-0.4, abrelu_b=1.5)
        native = analytic_kernels(spec, X, backend="native")
        nt = analytic_kernels(spec, X, backend="nt")
        for a, b in zip(native, nt):
            rel = np.max(np.abs(a - b)) / np.max(np.abs(b))
            worst = max(worst, rel)
            np.testing.assert_array_less(np.abs(a - b), 1e-10 * np.abs(b) + 1e-300,
                                         err_msg=f"depth={depth}")
        if depth != 3:
            continue
        # cross kernel between different inputs (the x2 code path)
        cross_native = analytic_kernels(spec, X[:3], X[3:], backend="native")
        cross_nt = analytic_kernels(spec, X[:3], X[3:], backend="nt")
        for a, b in zip(cross_native, cross_nt):
            np.testing.assert_array_less(np.abs(a - b), 1e-10 * np.abs(b) + 1e-300)
    assert worst < 1e-10


def test_backend_accepts_stax_triple_and_kernel_fn():
    from neural_tangents import stax
    triple = stax.serial(stax.Dense(64, W_std=1.5), stax.Erf(), stax.Dense(1, W_std=1.5))
    spec = MLP(depth=2, W_std=1.5, activation="erf")
    want = analytic_kernels(spec, X, backend="native")
    for model in (triple, triple[2]):
        got = analytic_kernels(model, X)
        np.testing.assert_allclose(got.ntk, want.ntk, rtol=1e-12)
        np.testing.assert_allclose(got.nngp, want.nngp, rtol=1e-12)
    with pytest.raises(ValueError, match="native"):
        analytic_kernels(triple, X, backend="native")


def test_cnn_and_layer_norm_kernels_run_blocked_and_symmetric():
    x = RNG.normal(size=(4, 3, 3, 2))
    spec = CNN(depth=2, channels=8, kernel_size=2, ndim=2, norm="layer", b_std=0.1)
    k = kernel_fn(spec)
    full = k(x)
    assert full.ntk.shape == (4, 4) and full.ntk.dtype == np.float64
    np.testing.assert_allclose(full.ntk, full.ntk.T, rtol=1e-12)
    assert np.linalg.eigvalsh(full.ntk).min() > 0
    np.testing.assert_allclose(k(x, batch_size=2).ntk, full.ntk, rtol=1e-12)


def test_cnn_with_one_pixel_is_an_mlp():
    # With one spatial position and 1-tap filters, convolutions are Dense layers and pooling is the
    # identity: the CNN of depth d is the MLP of depth d + 1.
    x = RNG.normal(size=(4, 1, 3))
    cnn = CNN(depth=2, channels=8, kernel_size=1, ndim=1, W_std=1.2)
    mlp = MLP(depth=3, W_std=1.2)
    a, b = analytic_kernels(cnn, x), analytic_kernels(mlp, x[:, 0, :])
    np.testing.assert_allclose(a.ntk, b.ntk, rtol=1e-12)
    np.testing.assert_allclose(a.nngp, b.nngp, rtol=1e-12)


@pytest.mark.parametrize("norm", ["batch", "weight"])
def test_unsupported_norms_are_rejected(norm):
    with pytest.raises(ValueError, match="norm"):
        analytic_kernels(MLP(depth=2, norm=norm), X)
