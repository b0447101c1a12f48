"""Finite-width networks: parameter layout, initialisation statistics, homogeneity, scale invariance."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from widelimit._x64 import x64
from widelimit.arch import CNN, MLP
from widelimit.nets import apply, init_params, layer_names, param_count, scale_invariant_mask

KEY = jax.random.PRNGKey(0)


def _x(shape, seed=1, dtype=jnp.float32):
    return jax.random.normal(jax.random.PRNGKey(seed), shape, dtype)


def _scale(params, name, key, c):
    out = {n: dict(l) for n, l in params.items()}
    out[name][key] = c * out[name][key]
    return out


def _rel(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


@pytest.mark.parametrize("spec,in_shape,names", [
    (MLP(depth=1, width=8), (5,), ["readout"]),
    (MLP(depth=3, width=8, out_dim=2), (5,), ["hidden0", "hidden1", "readout"]),
    (CNN(depth=2, channels=6, ndim=1), (9, 3), ["hidden0", "hidden1", "readout"]),
    (CNN(depth=1, channels=6, ndim=2, kernel_size=2), (5, 4, 3), ["hidden0", "readout"]),
])
def test_layout_and_output_shape(spec, in_shape, names):
    params = init_params(spec, KEY, in_shape)
    assert list(params) == names
    assert tuple(layer_names(spec)) == tuple(names)
    for name, layer in params.items():
        assert set(layer) == {"W"}
    if isinstance(spec, MLP):
        assert params["readout"]["W"].shape == ((spec.width if spec.depth > 1 else in_shape[0]), spec.out_dim)
    else:
        assert params["hidden0"]["W"].shape == spec.filter_shape + (in_shape[-1], spec.channels)
        assert params["readout"]["W"].shape == (spec.channels, spec.out_dim)
    out = apply(spec, params, _x((7,) + in_shape))
    assert out.shape == (7, spec.out_dim)
    assert out.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out)))


def test_bias_and_weight_norm_keys():
    spec = MLP(depth=3, width=8, b_std=0.1, norm="weight")
    params = init_params(spec, KEY, (4,))
    assert set(params["hidden0"]) == {"W", "b", "g"}
    assert set(params["readout"]) == {"W", "b"}
    assert np.all(np.asarray(params["hidden1"]["g"]) == 1.0)
    assert param_count(params) == (4 * 8 + 8 + 8) + (8 * 8 + 8 + 8) + (8 + 1)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_init_statistics(parameterization):
    spec = MLP(depth=2, width=2000, W_std=1.7, b_std=0.3, parameterization=parameterization)
    p = init_params(spec, KEY, (50,))
    w_sd, b_sd = float(jnp.std(p["hidden0"]["W"])), float(jnp.std(p["hidden0"]["b"]))
    if parameterization == "ntk":
        assert w_sd == pytest.approx(1.0, rel=0.02) and b_sd == pytest.approx(1.0, rel=0.1)
    else:
        assert w_sd == pytest.approx(1.7 / math.sqrt(50), rel=0.02)
        assert b_sd == pytest.approx(0.3, rel=0.1)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_parameterisations_define_same_function_distribution(parameterization):
    # Both parameterisations give pre-activations of variance W_std^2 |x|^2 / d at the first layer.
    spec = MLP(depth=1, width=1, W_std=1.3, out_dim=4000, parameterization=parameterization)
    x = _x((1, 30))
    out = apply(spec, init_params(spec, KEY, (30,)), x)
    want = 1.3 ** 2 * float(jnp.sum(x ** 2)) / 30
    assert float(jnp.var(out)) == pytest.approx(want, rel=0.08)


def test_dense_matches_manual_formula():
    spec = MLP(depth=2, width=3, W_std=1.5, b_std=0.2, activation="erf")
    p = init_params(spec, KEY, (4,))
    x = _x((2, 4))
    h = jax.scipy.special.erf(1.5 / 2.0 * x @ p["hidden0"]["W"] + 0.2 * p["hidden0"]["b"])
    want = 1.5 / math.sqrt(3) * h @ p["readout"]["W"] + 0.2 * p["readout"]["b"]
    np.testing.assert_allclose(apply(spec, p, x), want, rtol=1e-5)


@pytest.mark.parametrize("spec,in_shape", [
    (MLP(depth=1, width=16), (3,)),
    (MLP(depth=2, width=16, activation="leaky_relu", slope=0.2), (3,)),
    (MLP(depth=3, width=16, activation="abrelu", abrelu_a=-0.5, abrelu_b=2.0), (3,)),
    (MLP(depth=4, width=16, activation="identity", parameterization="standard"), (3,)),
    (MLP(depth=5, width=16), (3,)),
    (CNN(depth=1, channels=8, ndim=1), (6, 2)),
    (CNN(depth=2, channels=8, ndim=2), (4, 4, 2)),
])
def test_homogeneity_bias_free(spec, in_shape):
    L = spec.homogeneity_degree
    assert L == spec.n_weight_layers
    with x64():
        p = init_params(spec, KEY, in_shape, dtype=jnp.float64)
        x = _x((5,) + in_shape, dtype=jnp.float64)
        f = apply(spec, p, x)
        for alpha in (0.5, 3.0):
            scaled = jax.tree_util.tree_map(lambda a: alpha * a, p)
            np.testing.assert_allclose(apply(spec, scaled, x), alpha ** L * f, rtol=1e-10, atol=1e-12)


def test_biases_break_homogeneity():
    spec = MLP(depth=3, width=16, b_std=0.5)
    with x64():
        p = init_params(spec, KEY, (3,), dtype=jnp.float64)
        x = _x((5, 3), dtype=jnp.float64)
        scaled = jax.tree_util.tree_map(lambda a: 2.0 * a, p)
        assert _rel(apply(spec, scaled, x), 8.0 * apply(spec, p, x)) > 1e-3


NORMED = [
    (MLP(depth=3, width=16, norm="layer"), (5,)),
    (MLP(depth=3, width=16, norm="batch", b_std=0.3), (5,)),
    (MLP(depth=3, width=16, norm="weight", b_std=0.3), (5,)),
    (MLP(depth=2, width=16, norm="weight", parameterization="standard"), (5,)),
    (CNN(depth=2, channels=8, ndim=1, norm="layer"), (6, 2)),
    (CNN(depth=2, channels=8, ndim=2, norm="batch"), (4, 4, 2)),
    (CNN(depth=1, channels=8, ndim=2, norm="weight", b_std=0.1), (4, 4, 2)),
]


@pytest.mark.parametrize("spec,in_shape", NORMED)
def test_masked_groups_are_scale_invariant(spec, in_shape):
    with x64():
        p = init_params(spec, KEY, in_shape, dtype=jnp.float64)
        x = _x((6,) + in_shape, dtype=jnp.float64)
        f = apply(spec, p, x)
        mask = scale_invariant_mask(spec, p)
        assert jax.tree_util.tree_structure(mask) == jax.tree_util.tree_structure(p)
        marked = [(n, k) for n, l in mask.items() for k, v in l.items() if v]
        assert {n for n, _ in marked} == {n for n in p if n != "readout"}
        assert all(k == "W" for _, k in marked)
        for n, k in marked:
            for c in (0.1, 7.0):
                np.testing.assert_allclose(apply(spec, _scale(p, n, k, c), x), f, rtol=1e-8, atol=1e-10)
        # readout weights are not scale-invariant (the output is affine in them)
        assert _rel(apply(spec, _scale(p, "readout", "W", 2.0), x), f) > 0.1


def test_unnormalised_mask_is_all_false():
    spec = MLP(depth=3, width=8, b_std=0.1)
    p = init_params(spec, KEY, (3,))
    assert not any(jax.tree_util.tree_leaves(scale_invariant_mask(spec, p)))


def test_layer_norm_with_bias_only_jointly_invariant():
    spec = MLP(depth=2, width=16, norm="layer", b_std=1.0)
    with x64():
        p = init_params(spec, KEY, (5,), dtype=jnp.float64)
        x = _x((6, 5), dtype=jnp.float64)
        f = apply(spec, p, x)
        assert not any(jax.tree_util.tree_leaves(scale_invariant_mask(spec, p)))
        assert _rel(apply(spec, _scale(p, "hidden0", "W", 5.0), x), f) > 1e-3
        joint = _scale(_scale(p, "hidden0", "W", 5.0), "hidden0", "b", 5.0)
        np.testing.assert_allclose(apply(spec, joint, x), f, rtol=1e-8)


def test_batch_norm_is_stateless_and_ignores_hidden_bias():
    spec = MLP(depth=2, width=16, norm="batch", b_std=1.0)
    with x64():
        p = init_params(spec, KEY, (5,), dtype=jnp.float64)
        x = _x((8, 5), dtype=jnp.float64)
        f = apply(spec, p, x)
        # the hidden bias is removed by the batch mean
        np.testing.assert_allclose(apply(spec, _scale(p, "hidden0", "b", -3.0), x), f, rtol=1e-8, atol=1e-10)
        # statistics come from the batch passed in: a sub-batch gives different outputs
        assert _rel(apply(spec, p, x[:4]), f[:4]) > 1e-3
        # each hidden feature is standardised over the batch
        h = x @ p["hidden0"]["W"] * (spec.W_std / math.sqrt(5))
        z = (h - h.mean(0)) / h.std(0)
        want = jnp.maximum(z, 0) @ p["readout"]["W"] * (spec.W_std / 4) + p["readout"]["b"]
        np.testing.assert_allclose(f, want, rtol=1e-8)


def test_weight_norm_formula():
    spec = MLP(depth=2, width=16, norm="weight", W_std=1.4)
    with x64():
        p = init_params(spec, KEY, (5,), dtype=jnp.float64)
        p["hidden0"]["g"] = jnp.linspace(0.5, 2.0, 16)
        x = _x((3, 5), dtype=jnp.float64)
        v = p["hidden0"]["W"]
        h = 1.4 * p["hidden0"]["g"] * (x @ v) / jnp.linalg.norm(v, axis=0)
        want = jnp.maximum(h, 0) @ p["readout"]["W"] * (1.4 / 4)
        np.testing.assert_allclose(apply(spec, p, x), want, rtol=1e-10)


def test_jit_grad_vmap():
    spec = CNN(depth=1, channels=4, ndim=1, b_std=0.1)
    p = init_params(spec, KEY, (5, 2))
    x = _x((3, 5, 2))
    f = jax.jit(lambda q, z: apply(spec, q, z))
    np.testing.assert_allclose(f(p, x), apply(spec, p, x), rtol=1e-6)
    g = jax.grad(lambda q: jnp.sum(apply(spec, q, x) ** 2))(p)
    assert jax.tree_util.tree_structure(g) == jax.tree_util.tree_structure(p)
    mlp = MLP(depth=2, width=4)
    ps = jax.vmap(lambda k: init_params(mlp, k, (3,)))(jax.random.split(KEY, 3))
    assert jax.vmap(lambda q: apply(mlp, q, x[:, :3, 0]))(ps).shape == (3, 3, 1)


def test_float64_params_give_float64_outputs():
    spec = MLP(depth=2, width=4)
    with x64():
        p = init_params(spec, KEY, (3,), dtype=jnp.float64)
        assert apply(spec, p, np.ones((2, 3))).dtype == jnp.float64


@pytest.mark.parametrize("spec,in_shape,x_shape", [
    (MLP(depth=2), (3, 4), None),
    (MLP(depth=2, in_dim=3), (4,), None),
    (CNN(depth=1, ndim=2), (5, 3), None),
    (CNN(depth=1, ndim=1, in_channels=2), (5, 3), None),
    (MLP(depth=2), (3,), (4, 5)),
    (MLP(depth=2), (3,), (4, 3, 1)),
    (CNN(depth=1, ndim=1), (5, 3), (2, 5, 4)),
])
def test_bad_shapes_raise(spec, in_shape, x_shape):
    with pytest.raises(ValueError, match="in_shape|x "):
        if x_shape is None:
            init_params(spec, KEY, in_shape)
        else:
            apply(spec, init_params(spec, KEY, in_shape), jnp.ones(x_shape))


def test_bad_params_raise():
    spec = MLP(depth=3)
    with pytest.raises(ValueError, match="params"):
        apply(spec, init_params(MLP(depth=2), KEY, (3,)), jnp.ones((2, 3)))
    with pytest.raises(TypeError, match="spec"):
        init_params("mlp", KEY, (3,))
    with pytest.raises(ValueError, match="in_shape"):
        init_params(spec, KEY, (0,))


NT_CASES = [
    (MLP(depth=3, width=12, b_std=0.2, activation="leaky_relu", slope=0.1), (5,)),
    (MLP(depth=2, width=12, parameterization="standard", activation="erf", out_dim=3), (5,)),
    (MLP(depth=3, width=12, norm="layer", b_std=0.4), (5,)),
    (MLP(depth=1, W_std=1.3, b_std=0.5), (5,)),
    (CNN(depth=2, channels=6, ndim=1, b_std=0.1, activation="abrelu", abrelu_a=-0.3, abrelu_b=1.2), (7, 3)),
    (CNN(depth=1, channels=6, ndim=2, kernel_size=2, parameterization="standard", norm="layer", b_std=0.3),
     (4, 5, 2)),
]


@pytest.mark.nt
@pytest.mark.parametrize("spec,in_shape", NT_CASES)
def test_apply_equals_neural_tangents_apply(spec, in_shape):
    from widelimit.kernels.nt_backend import stax_of_spec, to_nt_params
    init_fn, nt_apply, _ = stax_of_spec(spec)
    with x64():
        p = init_params(spec, KEY, in_shape, dtype=jnp.float64)
        x = _x((4,) + in_shape, dtype=jnp.float64)
        nt_p = to_nt_params(spec, p)
        # same pytree structure and shapes as neural-tangents' own init
        _, ref_p = init_fn(KEY, (4,) + in_shape)
        assert jax.tree_util.tree_structure(nt_p) == jax.tree_util.tree_structure(ref_p)
        assert [a.shape for a in jax.tree_util.tree_leaves(nt_p)] == \
            [a.shape for a in jax.tree_util.tree_leaves(ref_p)]
        np.testing.assert_allclose(apply(spec, p, x), nt_apply(nt_p, x), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("norm, kind", [("batch", "unit"), ("weight", "unit"), ("layer", "matrix")])
def test_invariance_groups_per_unit_vs_whole_matrix(norm, kind):
    """Scaling one output unit's weights W[:, j] leaves f unchanged for BatchNorm/WeightNorm (per-unit groups)
    but not for LayerNorm, where only the whole matrix is invariant."""
    from widelimit.nets import invariance_groups

    spec = MLP(depth=3, width=6, out_dim=2, norm=norm, parameterization="standard")
    params = init_params(spec, jax.random.PRNGKey(0), (5,))
    groups = invariance_groups(spec, params)
    assert groups == {"hidden0": kind, "hidden1": kind, "readout": None}
    x = jax.random.normal(jax.random.PRNGKey(1), (16, 5))
    f0 = apply(spec, params, x)
    W = params["hidden1"]["W"]
    one = {**params, "hidden1": {**params["hidden1"], "W": W.at[:, 2].multiply(3.0)}}
    whole = {**params, "hidden1": {**params["hidden1"], "W": 3.0 * W}}
    np.testing.assert_allclose(apply(spec, whole, x), f0, rtol=1e-4, atol=1e-5)
    changed = float(jnp.max(jnp.abs(apply(spec, one, x) - f0)))
    if kind == "unit":
        assert changed < 1e-4
    else:
        assert changed > 1e-2
