"""Homogeneity degree: structural (spec) and measured on random finite instances."""
import jax
import numpy as np
import pytest

from widelimit.arch import CNN, MLP
from widelimit.nets import homogeneity_degree, measure_homogeneity

KEY = jax.random.PRNGKey(7)
X = np.random.default_rng(0).normal(size=(6, 5))


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_bias_free_relu_degree_is_depth(depth):
    spec = MLP(depth=depth, width=16)
    assert homogeneity_degree(spec) == depth
    assert measure_homogeneity(spec, X, KEY) == depth


@pytest.mark.parametrize("spec", [
    MLP(depth=3, width=16, activation="leaky_relu", slope=0.2),
    MLP(depth=2, width=16, activation="abrelu", abrelu_a=-0.3, abrelu_b=1.4, parameterization="standard"),
    MLP(depth=4, width=16, activation="identity"),
])
def test_other_homogeneous_activations(spec):
    assert measure_homogeneity(spec, X, KEY) == homogeneity_degree(spec) == spec.depth


@pytest.mark.parametrize("depth", [1, 2])
def test_cnn_degree_counts_readout(depth):
    spec = CNN(depth=depth, channels=6, ndim=1)
    x = np.random.default_rng(1).normal(size=(4, 5, 2))
    assert homogeneity_degree(spec) == depth + 1
    assert measure_homogeneity(spec, x, KEY) == depth + 1


@pytest.mark.parametrize("spec", [
    MLP(depth=2, width=16, b_std=0.1),
    MLP(depth=3, width=16, b_std=0.1),
    MLP(depth=5, width=16, b_std=1.0, activation="leaky_relu"),
    MLP(depth=3, width=16, activation="erf"),
    MLP(depth=2, width=16, activation="erf", b_std=0.5),
])
def test_not_homogeneous(spec):
    assert homogeneity_degree(spec) is None
    assert measure_homogeneity(spec, X, KEY) is None


def test_structural_degree_with_biases_and_norms_matches_measurement():
    # an affine model f = W x + b is 1-homogeneous in (W, b) jointly;
    assert MLP(depth=1, b_std=0.1).homogeneity_degree == 1
    assert measure_homogeneity(MLP(depth=1, width=16, b_std=0.1), X, KEY) == 1
    # LayerNorm/BatchNorm: hidden weights (and biases) are scale-invariant, only the readout scales: L = 1,
    # whatever the activation;
    for spec in (MLP(depth=3, width=16, norm="layer"), MLP(depth=3, width=16, norm="layer", activation="erf"),
                 MLP(depth=3, width=16, norm="layer", b_std=0.5), MLP(depth=2, width=16, norm="batch", b_std=0.5)):
        assert spec.homogeneity_degree == 1
        assert measure_homogeneity(spec, X, KEY) == 1
    # weight norm: the gains carry the scale, L = number of weight layers (bias-free ReLU) ...
    spec = MLP(depth=3, width=16, norm="weight")
    assert measure_homogeneity(spec, X, KEY) == spec.homogeneity_degree == 3
    # ... and hidden biases break it, as without normalisation.
    spec = MLP(depth=3, width=16, norm="weight", b_std=0.5)
    assert measure_homogeneity(spec, X, KEY) is spec.homogeneity_degree is None


@pytest.mark.parametrize("alphas", [(), (1.0,), (0.5, -2.0), (float("nan"),)])
def test_bad_alphas(alphas):
    with pytest.raises(ValueError, match="alphas"):
        measure_homogeneity(MLP(depth=2), X, KEY, alphas=alphas)


def test_bad_input_shape():
    with pytest.raises(ValueError, match="x"):
        measure_homogeneity(MLP(depth=2, in_dim=3), X, KEY)
