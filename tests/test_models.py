"""Users' own models: adapters (plain JAX, Flax linen, Flax nnx, Equinox) and measured structure."""
import numpy as np
import pytest

import jax
import jax.numpy as jnp

from widelimit._x64 import x64
from widelimit.models import Invariance, TheoryKind, analyse_structure, as_model, from_jax

flax = pytest.importorskip("flax", reason="flax is in the 'models' extra (current-JAX environment)")
eqx = pytest.importorskip("equinox", reason="equinox is in the 'models' extra (current-JAX environment)")
from flax import linen, nnx  # noqa: E402

D, H, K = 5, 16, 3


def _weights(seed=0):
    r = np.random.default_rng(seed)
    return [r.normal(size=(D, H)) / np.sqrt(D), r.normal(size=(H, H)) / np.sqrt(H), r.normal(size=(H, K)) / np.sqrt(H)]


def _plain(ws):
    def apply(p, x):
        h = jax.nn.relu(x @ p["w1"])
        h = jax.nn.relu(h @ p["w2"])
        return h @ p["w3"]
    return from_jax(apply, {"w1": ws[0], "w2": ws[1], "w3": ws[2]})


class _Linen(linen.Module):
    @linen.compact
    def __call__(self, x):
        x = linen.relu(linen.Dense(H, use_bias=False)(x))
        x = linen.relu(linen.Dense(H, use_bias=False)(x))
        return linen.Dense(K, use_bias=False)(x)


class _Nnx(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(D, H, use_bias=False, rngs=rngs)
        self.l2 = nnx.Linear(H, H, use_bias=False, rngs=rngs)
        self.l3 = nnx.Linear(H, K, use_bias=False, rngs=rngs)

    def __call__(self, x):
        return self.l3(nnx.relu(self.l2(nnx.relu(self.l1(x)))))


class _Eqx(eqx.Module):
    layers: list

    def __init__(self, key):
        k = jax.random.split(key, 3)
        self.layers = [eqx.nn.Linear(D, H, use_bias=False, key=k[0]), eqx.nn.Linear(H, H, use_bias=False, key=k[1]),
                       eqx.nn.Linear(H, K, use_bias=False, key=k[2])]

    def __call__(self, x):
        x = jax.nn.relu(self.layers[0](x))
        x = jax.nn.relu(self.layers[1](x))
        return self.layers[2](x)


def _four_models(ws):
    """The same network written four ways, with identical float64 weights."""
    plain = _plain(ws)
    x0 = jnp.zeros((1, D))
    variables = _Linen().init(jax.random.PRNGKey(0), x0)
    variables = {"params": {f"Dense_{i}": {"kernel": jnp.asarray(w)} for i, w in enumerate(ws)}}
    linen_m = as_model(_Linen(), variables)
    net = _Nnx(nnx.Rngs(0))
    for layer, w in zip((net.l1, net.l2, net.l3), ws):
        layer.kernel.set_value(jnp.asarray(w))
    nnx_m = as_model(net)
    e = _Eqx(jax.random.PRNGKey(0))
    e = eqx.tree_at(lambda m: [l.weight for l in m.layers], e, [jnp.asarray(w.T) for w in ws])
    eqx_m = as_model(e)
    return {"jax": plain, "flax.linen": linen_m, "flax.nnx": nnx_m, "equinox": eqx_m}


def _entk(model, x):
    jac = jax.jacrev(model.apply)(model.params, x)          # leaves (n, K, *shape)
    leaves = [j.reshape(x.shape[0], K, -1) for j in jax.tree_util.tree_leaves(jac)]
    return sum(np.einsum("ikp,jlp->ijkl", j, j) for j in leaves)


def test_same_network_four_frameworks_same_outputs_and_ntk():
    with x64():
        ws = _weights()
        x = jnp.asarray(np.random.default_rng(1).normal(size=(7, D)))
        models = _four_models(ws)
        assert {m.framework for m in models.values()} == set(models)
        ref_f = np.asarray(models["jax"].output(x))
        ref_k = _entk(models["jax"], x)
        assert np.linalg.norm(ref_k) > 0
        for name, m in models.items():
            np.testing.assert_allclose(np.asarray(m.output(x)), ref_f, rtol=1e-10, atol=1e-12, err_msg=name)
            np.testing.assert_allclose(_entk(m, x), ref_k, rtol=1e-10, atol=1e-12, err_msg=name)


def test_bias_free_relu_mlp_is_3_homogeneous_in_every_framework():
    ws = _weights()
    x = np.random.default_rng(2).normal(size=(6, D))
    for name, m in _four_models(ws).items():
        s = analyse_structure(m, x)
        assert s.degree == 3, name
        assert all(g.degree == 1 for g in s.groups), name
        assert s.theories == (TheoryKind.NTK_L2_FLOW,), name


def test_biases_break_homogeneity_and_are_named():
    r = np.random.default_rng(3)
    p = {"w1": r.normal(size=(D, H)), "b1": r.normal(size=H), "w2": r.normal(size=(H, H)), "b2": r.normal(size=H),
         "w3": r.normal(size=(H, K))}

    def apply(q, x):
        return jax.nn.relu(jax.nn.relu(x @ q["w1"] + q["b1"]) @ q["w2"] + q["b2"]) @ q["w3"]
    s = analyse_structure(from_jax(apply, p), r.normal(size=(6, D)))
    assert s.degree is None and s.theories == (TheoryKind.NONE,)
    assert "biases break it" in s.reason and "b1" in s.reason and "b2" in s.reason
    by = {g.name: g for g in s.groups}
    assert by["['w3']"].degree == 1 and by["['b1']"].degree is None and by["['w1']"].degree is None
    # A bias in the first layer only is jointly homogeneous: relu(a(xW + b)) = a relu(xW + b), so L = 2.
    p1 = {"w1": p["w1"], "b1": p["b1"], "w2": r.normal(size=(H, K))}
    s1 = analyse_structure(from_jax(lambda q, x: jax.nn.relu(x @ q["w1"] + q["b1"]) @ q["w2"], p1), r.normal(size=(6, D)))
    assert s1.degree == 2 and s1.theories == (TheoryKind.NTK_L2_FLOW,)


def test_erf_breaks_homogeneity_without_biases():
    r = np.random.default_rng(4)
    p = {"w1": r.normal(size=(D, H)), "w2": r.normal(size=(H, K))}
    m = from_jax(lambda q, x: jax.scipy.special.erf(x @ q["w1"]) @ q["w2"], p)
    s = analyse_structure(m, r.normal(size=(6, D)))
    assert s.degree is None and "non-homogeneous activation" in s.reason


def _norm_net(kind):
    r = np.random.default_rng(5)
    p = {"w1": r.normal(size=(D, H)), "w2": r.normal(size=(H, H)), "w3": r.normal(size=(H, K))}

    def norm(h, w):
        if kind == "batch":      # per unit (column) over the batch
            return (h - h.mean(0)) / jnp.sqrt(h.var(0) + 1e-12)
        if kind == "layer":      # per example over units
            return (h - h.mean(1, keepdims=True)) / jnp.sqrt(h.var(1, keepdims=True) + 1e-12)
        raise ValueError(kind)

    def apply(q, x):
        h = jax.nn.relu(norm(x @ q["w1"], q["w1"]))
        h = jax.nn.relu(norm(h @ q["w2"], q["w2"]))
        return h @ q["w3"]
    return from_jax(apply, p), r.normal(size=(12, D))


def test_batchnorm_weights_invariant_per_unit_layernorm_whole():
    bn, x = _norm_net("batch")
    s = analyse_structure(bn, x)
    by = {g.name: g for g in s.groups}
    for w in ("['w1']", "['w2']"):
        assert by[w].degree == 0 and by[w].invariance is Invariance.PER_UNIT and by[w].unit_axis == 1, w
    assert by["['w3']"].degree == 1 and by["['w3']"].invariance is Invariance.NONE
    assert s.degree == 1 and TheoryKind.SCALE_INVARIANT_NORMS in s.theories
    assert TheoryKind.NTK_L2_FLOW not in s.theories
    ln, x = _norm_net("layer")
    by = {g.name: g for g in analyse_structure(ln, x).groups}
    for w in ("['w1']", "['w2']"):
        assert by[w].degree == 0 and by[w].invariance is Invariance.WHOLE, w


def test_weightnorm_rows_are_per_unit_invariant():
    r = np.random.default_rng(6)
    p = {"v": r.normal(size=(H, D)), "g": np.ones(H), "w2": r.normal(size=(H, K))}

    def apply(q, x):
        w = q["g"][:, None] * q["v"] / jnp.linalg.norm(q["v"], axis=1, keepdims=True)
        return jax.nn.relu(x @ w.T) @ q["w2"]
    s = analyse_structure(from_jax(apply, p), r.normal(size=(6, D)))
    v = {g.name: g for g in s.groups}["['v']"]
    assert v.invariance is Invariance.PER_UNIT and v.unit_axis == 0 and v.n_units == H


def test_flax_nnx_batchnorm_in_batch_mode_is_detected():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(D, H, use_bias=False, rngs=rngs)
            self.bn = nnx.BatchNorm(H, use_running_average=False, use_bias=False, use_scale=False, rngs=rngs)
            self.l2 = nnx.Linear(H, K, use_bias=False, rngs=rngs)

        def __call__(self, x):
            return self.l2(nnx.relu(self.bn(self.l1(x))))
    s = analyse_structure(as_model(Net(nnx.Rngs(0))), np.random.default_rng(7).normal(size=(16, D)))
    l1 = [g for g in s.groups if "l1" in g.name][0]
    assert l1.degree == 0 and l1.invariance is Invariance.PER_UNIT and l1.unit_axis == 1


def test_bad_inputs_fail_clearly_before_compute():
    with pytest.raises(TypeError, match="params"):
        from_jax(lambda p, x: x, {"w": [1.0, 2.0]})
    with pytest.raises(ValueError, match="params"):
        from_jax(lambda p, x: x, {})
    with pytest.raises(TypeError, match="model"):
        as_model(42)
    m = _plain(_weights())
    with pytest.raises(ValueError, match="y: targets"):
        m.check_targets(np.zeros((4, D)), np.zeros((4, K + 1)))
    with pytest.raises(ValueError, match="groups"):
        analyse_structure(m, np.ones((3, D)), groups={"g": ["['nope']"]})
    with pytest.raises(ValueError, match="alphas"):
        analyse_structure(m, np.ones((3, D)), alphas=(1.0,))
