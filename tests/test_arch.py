"""Bad architecture specs and inputs fail early with errors that name the offending field."""
import math

import jax
import numpy as np
import pytest

from widelimit.arch import CNN, MLP, from_dict
from widelimit.kernels import analytic_kernels
from widelimit.nets import empirical_ntk_of_spec, measure_homogeneity
from widelimit.nets import init_params


@pytest.mark.parametrize("cls,kwargs,field", [
    (MLP, dict(depth=2, activation="tanh"), "activation"),
    (CNN, dict(depth=2, activation="gelu"), "activation"),
    (MLP, dict(depth=0), "depth"),
    (CNN, dict(depth=-1), "depth"),
    (MLP, dict(depth=2, W_std=-1.0), "W_std"),
    (MLP, dict(depth=2, W_std=0.0), "W_std"),
    (MLP, dict(depth=2, b_std=-0.1), "b_std"),
    (CNN, dict(depth=1, b_std=-2.0), "b_std"),
    (MLP, dict(depth=2, W_std=math.inf), "W_std"),
    (MLP, dict(depth=2, width=0), "width"),
    (CNN, dict(depth=1, channels=0), "channels"),
    (CNN, dict(depth=1, ndim=3), "ndim"),
    (MLP, dict(depth=2, parameterization="mup"), "parameterization"),
    (MLP, dict(depth=2, norm="group"), "norm"),
])
def test_bad_spec_raises_value_error_naming_field(cls, kwargs, field):
    with pytest.raises(ValueError, match=field):
        cls(**kwargs)


@pytest.mark.parametrize("spec,x,field", [
    (MLP(depth=2), np.ones((4, 3, 2)), "x1"),
    (MLP(depth=2, in_dim=5), np.ones((4, 3)), "in_dim"),
    (CNN(depth=1, ndim=2), np.ones((4, 6, 2)), "x1"),
    (CNN(depth=1, ndim=1, in_channels=3), np.ones((4, 6, 2)), "in_channels"),
])
def test_input_shape_that_does_not_fit_raises_before_compute(spec, x, field):
    # analytic_kernels checks the shape before choosing a backend: for a CNN in the current-JAX
    # environment a late check would surface as an ImportError for neural-tangents instead.
    with pytest.raises(ValueError, match=field):
        analytic_kernels(spec, x)
    with pytest.raises(ValueError, match=field):
        empirical_ntk_of_spec(spec, jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError):
        measure_homogeneity(spec, x, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="in_shape"):
        init_params(spec, jax.random.PRNGKey(0), x.shape[1:])


def test_round_trip_and_derived_quantities():
    spec = CNN(depth=2, channels=8, ndim=1, W_std=1.1)
    assert from_dict(spec.to_dict()) == spec
    assert spec.n_weight_layers == 3 and spec.homogeneity_degree == 3
    assert spec.kernel_decay_rate(0.1) == pytest.approx(2 * 2 * 0.1)
    with pytest.raises(ValueError, match="homogeneous"):
        MLP(depth=2, b_std=0.1).kernel_decay_rate(0.1)
    with pytest.raises(ValueError, match="kind"):
        from_dict({"kind": "RNN", "depth": 1})
