"""Training harness: configs, optimiser update rules, the loop against hand-written GD, metrics, ensembles."""
import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from widelimit._x64 import x64
from widelimit.arch import CNN, MLP
from widelimit.data import load_dataset
from widelimit.nets import apply
from widelimit.train import (Program, RunConfig, make_optimizer, member_configs, train,
                             train_ensemble)
from widelimit.train.metrics import accuracy, angle, layer_angles, mse_loss

TEACHER = dict(n_train=24, n_test=8, in_dim=5)


@pytest.fixture(autouse=True)
def fast_compile(monkeypatch):
    """Short runs: halve XLA compile time (same program semantics; slower execution)."""
    from widelimit.train import loop
    monkeypatch.setattr(loop, "COMPILER_OPTIONS", {"xla_backend_optimization_level": 0})


def _cfg(**kw):
    base = dict(arch=MLP(depth=3, width=16, out_dim=1), data="teacher", data_options=dict(TEACHER),
                learning_rate=0.1, steps=20, eval_every=5)
    base.update(kw)
    return RunConfig(**base)


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("changes, field", [
    ({"arch": {"kind": "MLP", "depth": 0}}, "arch"),
    ({"arch": "mlp"}, "arch"),
    ({"arch": MLP(depth=2, out_dim=3)}, "arch"),                       # out_dim != 1 target column
    ({"arch": CNN(depth=1, ndim=2)}, "data_options"),                  # CNN needs an image layout
    ({"data": "imagenet"}, "data"),
    ({"data_options": {"n_train": -1}}, "data_options"),
    ({"optimizer": "lbfgs"}, "optimizer"),
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"learning_rate": {"kind": "piecewise", "boundaries": [5], "values": [0.1]}}, "learning_rate"),
    ({"momentum": 0.9}, "momentum"),  # gd takes no momentum
    ({"optimizer": "momentum", "momentum": 1.5}, "momentum"),
    ({"optimizer": "lion", "eps": 1e-8}, "eps"),  # lion takes no eps
    ({"weight_decay": -1e-3}, "weight_decay"),
    ({"weight_decay": {"kind": "autol2", "factor": 0.5}}, "weight_decay"),
    ({"weight_decay": {"kind": "autol2", "rule": "bogus"}}, "weight_decay"),
    ({"weight_decay": {"kind": "autol2", "bogus": 1}}, "weight_decay"),
    ({"weight_decay_mask": "*/W"}, "weight_decay_mask"),
    ({"loss": "hinge"}, "loss"),
    ({"loss": "xent"}, "loss"),                                        # regression data
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 100}, "batch_size"),                               # > n_train = 24
    ({"steps": 0}, "steps"),
    ({"eval_every": 2.5}, "eval_every"),
    ({"seed": -1}, "seed"),
    ({"dtype": "float16"}, "dtype"),
    ({"probe_size": -1}, "probe_size"),
])
def test_invalid_configs_are_rejected_naming_the_field(changes, field):
    cfg = _cfg(**changes)
    with pytest.raises((ValueError, TypeError), match=rf"RunConfig\.{field}"):
        cfg.validate()
    with pytest.raises((ValueError, TypeError), match=rf"RunConfig\.{field}"):
        train(cfg)  # rejected before any data loading or compilation


def test_config_json_roundtrip_and_stable_run_id():
    cfg = _cfg(weight_decay={"kind": "autol2", "init_weight_decay": 0.05}, weight_decay_mask=["*/W"], tags={"study": "x"},
               learning_rate={"kind": "piecewise", "boundaries": [10], "values": [0.1, 0.01]})
    back = RunConfig.from_json(cfg.to_json())
    assert back == cfg and back.run_id == cfg.run_id
    assert json.loads(cfg.to_json())["arch"]["kind"] == "MLP"
    rid = cfg.run_id
    assert re.fullmatch(r"[0-9a-f]{16}", rid), rid    # 16 lower-case hex digits, nothing else
    # spelled-out defaults, different tags: same run; any real change: a different run
    explicit = cfg.replace(data_options={**TEACHER, "noise": 0.0, "teacher": "relu"}, tags={})
    assert explicit.run_id == rid
    assert cfg.replace(seed=1).run_id != rid
    assert cfg.replace(weight_decay={"kind": "autol2", "init_weight_decay": 0.1}).run_id != rid
    # canonical config carries the AutoL2 defaults and the dataset defaults
    c = cfg.canonical()
    assert c.weight_decay["factor"] == 10.0 and c.weight_decay["measure_every"] == 10 and c.data_options["noise"] == 0.0
    with pytest.raises(ValueError, match="unknown field"):
        RunConfig.from_dict({**cfg.to_dict(), "lr": 1})


def test_data_shape_mismatch_and_empty_weight_decay_mask_are_caught_before_training():
    data = load_dataset("teacher", **TEACHER)
    with pytest.raises(ValueError, match="weight_decay_mask"):
        Program(_cfg(weight_decay=0.1, weight_decay_mask=["nothing/*"]), data)
    with pytest.raises(ValueError, match="in_dim|features"):
        train(_cfg(arch=MLP(depth=2, width=8, in_dim=7)), data)


# ------------------------------------------------------------------------------------------------
# optimiser update rules, checked against the formulas
# ------------------------------------------------------------------------------------------------
def _params():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    return {"hidden0": {"W": jax.random.normal(k1, (3, 4)), "b": jax.random.normal(k2, (4,))},
            "readout": {"W": jax.random.normal(k3, (4, 1))}}


def _zeros(p):
    return jax.tree_util.tree_map(jnp.zeros_like, p)


def test_l2_only_on_chosen_groups():
    p, eta, lam = _params(), 0.1, 0.3
    for mask, on in [(["readout/*"], {("readout", "W")}),
                     (["*/W"], {("hidden0", "W"), ("readout", "W")}),
                     ({"hidden0": {"W": False, "b": True}, "readout": {"W": False}}, {("hidden0", "b")}),
                     (lambda q: {"hidden0": {"W": True, "b": False}, "readout": {"W": False}},
                      {("hidden0", "W")}),
                     (None, {("hidden0", "W"), ("hidden0", "b"), ("readout", "W")})]:
        tx = make_optimizer("gd", eta, weight_decay=lam, weight_decay_mask=mask)
        u, _ = tx.update(_zeros(p), tx.init(p), p)
        for layer in p:
            for name in p[layer]:
                want = -eta * lam * p[layer][name] if (layer, name) in on else 0.0 * p[layer][name]
                np.testing.assert_allclose(u[layer][name], want, rtol=1e-6, atol=0)


def test_l2_schedule_is_followed():
    p = _params()
    sched = lambda k: 0.1 * (k + 1)  # noqa: E731
    tx = make_optimizer("sgd", 1.0, weight_decay=sched)
    s = tx.init(p)
    for k in range(3):
        u, s = tx.update(_zeros(p), s, p)
        np.testing.assert_allclose(u["readout"]["W"], -0.1 * (k + 1) * p["readout"]["W"], rtol=1e-6)


def test_adam_coupled_l2_vs_adamw_decoupled():
    """Zero loss gradient, first step. Coupled: Adam normalises g' = lam*theta, so every coordinate moves
    by eta * g'/(|g'| + eps) ~ eta * sign(theta), whatever lam. Decoupled: Adam(0) = 0 and the step is
    exactly eta * lam * theta."""
    p, eta, lam, eps = _params(), 0.01, 1e-3, 1e-8
    a = make_optimizer("adam", eta, weight_decay=lam, eps=eps)
    w = make_optimizer("adamw", eta, weight_decay=lam, eps=eps)
    ua, _ = a.update(_zeros(p), a.init(p), p)
    uw, _ = w.update(_zeros(p), w.init(p), p)
    for layer in p:
        for name, th in p[layer].items():
            g = lam * th
            np.testing.assert_allclose(ua[layer][name], -eta * g / (jnp.abs(g) + eps), rtol=1e-5)
            np.testing.assert_allclose(uw[layer][name], -eta * lam * th, rtol=1e-6)
    # and with a real gradient g: coupled sees g + lam*theta inside Adam, decoupled adds lam*theta outside
    grads = jax.tree_util.tree_map(lambda t: 0.5 * jnp.cos(t), p)
    ua, _ = a.update(grads, a.init(p), p)
    uw, _ = w.update(grads, w.init(p), p)
    for layer in p:
        for name, th in p[layer].items():
            g = grads[layer][name]
            np.testing.assert_allclose(ua[layer][name], -eta * (g + lam * th) / (jnp.abs(g + lam * th) + eps),
                                       rtol=1e-5)
            np.testing.assert_allclose(uw[layer][name], -eta * (g / (jnp.abs(g) + eps) + lam * th), rtol=1e-5)


def test_momentum_heavy_ball_and_nesterov_by_hand():
    p, eta, lam, mu = _params(), 0.1, 0.2, 0.9
    g1 = jax.tree_util.tree_map(lambda t: jnp.sin(t), p)
    for nesterov in (False, True):
        tx = make_optimizer("nesterov" if nesterov else "momentum", eta, weight_decay=lam, momentum=mu)
        s = tx.init(p)
        u1, s = tx.update(g1, s, p)
        p1 = optax.apply_updates(p, u1)
        u2, s = tx.update(g1, s, p1)
        th0, th1, g = p["readout"]["W"], p1["readout"]["W"], g1["readout"]["W"]
        v1 = g + lam * th0
        v2 = mu * v1 + g + lam * th1
        if nesterov:
            np.testing.assert_allclose(u1["readout"]["W"], -eta * (mu * v1 + g + lam * th0), rtol=1e-5)
            np.testing.assert_allclose(u2["readout"]["W"], -eta * (mu * v2 + g + lam * th1), rtol=1e-5)
        else:
            np.testing.assert_allclose(u1["readout"]["W"], -eta * v1, rtol=1e-6)
            np.testing.assert_allclose(u2["readout"]["W"], -eta * v2, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("phi", [1e-6, 3e-4, 0.05, 1.0, 3.0])
def test_angle_of_a_known_rotation(phi):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 5))
    u = rng.standard_normal((6, 5))
    u -= np.sum(u * a) / np.sum(a * a) * a  # orthogonal to a
    ah, uh = a / np.linalg.norm(a), u / np.linalg.norm(u)
    b = 2.7 * (math.cos(phi) * ah + math.sin(phi) * uh)  # a rotated by phi in the (a, u) plane, rescaled
    got = float(angle(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)))
    assert got == pytest.approx(phi, rel=1e-3, abs=1e-7)  # float32, also for tiny angles
    la = layer_angles({"l": {"W": jnp.asarray(a)}}, {"l": {"W": jnp.asarray(b)}})
    assert float(la["l"]) == pytest.approx(phi, rel=1e-3, abs=1e-7)


def test_losses_and_accuracy_by_hand():
    f = jnp.asarray([[1.0, 2.0], [0.0, -1.0], [3.0, 0.5]])
    y = jnp.asarray([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # rows 1, 2 right; row 3 wrong
    assert float(mse_loss(f, y)) == pytest.approx(np.sum((np.asarray(f) - np.asarray(y)) ** 2) / (2 * 3 * 2))
    assert float(accuracy(f, y)) == pytest.approx(2 / 3)
    assert float(accuracy(jnp.asarray([[0.3], [-2.0]]), jnp.asarray([[1.0], [1.0]]))) == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------------
def test_training_reduces_loss_on_digits():
    cfg = RunConfig(arch=MLP(depth=3, width=64, out_dim=10), data="digits",
                    data_options=dict(n_train=200, n_test=200), learning_rate=2.0, weight_decay=1e-4, steps=300,
                    eval_every=100, probe_size=4)
    r = train(cfg)
    m = r.metrics
    np.testing.assert_array_equal(m["step"], [0, 100, 200, 300])
    np.testing.assert_allclose(m["time"], 2.0 * m["step"], rtol=1e-6)  # physical time t = eta * steps
    assert m["train_loss"][-1] < 0.5 * m["train_loss"][0]
    assert m["test_acc"][-1] > 0.5  # chance is 0.1
    np.testing.assert_allclose(m["weight_decay"], 1e-4, rtol=1e-6)
    assert np.isnan(r.layers["angular_update/hidden0"][0]) and np.all(r.layers["angular_update/hidden0"][1:] > 0)
    assert r.probe["outputs"].shape == (4, 4, 10) and r.probe["targets"].shape == (4, 10)
    assert r.run_id == cfg.run_id
    s = r.summary()
    assert s["best_test_acc"] == pytest.approx(np.max(m["test_acc"]))


def test_full_batch_gd_matches_hand_written_update():
    """float64, MLP with biases, L2 only on weights: the loop's trajectory equals
    theta <- theta - eta (grad l + lam * mask * theta) with l = 1/(2NK) sum (f - y)^2 written out here."""
    eta, lam, steps = 1e-3, 0.3, 4
    cfg = _cfg(arch=MLP(depth=3, width=16, out_dim=1, b_std=0.1), learning_rate=eta, weight_decay=lam,
               weight_decay_mask=["*/W"], steps=steps, eval_every=1, dtype="float64")
    with x64():
        data = load_dataset("teacher", **TEACHER)
        r = train(cfg, data, keep_params=True)
        spec = cfg.spec
        prog = Program(cfg, data)
        theta = prog.init_params(jax.random.PRNGKey(cfg.seed))
        x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
        N, K = y.shape

        def loss(th):
            return jnp.sum((apply(spec, th, x) - y) ** 2) / (2 * N * K)
        grad = jax.jit(jax.grad(loss))
        losses, norms = [], []
        for k in range(steps + 1):
            losses.append(float(loss(theta)))
            norms.append(float(jnp.linalg.norm(theta["hidden0"]["W"])))
            if k == steps:
                break
            g = grad(theta)
            theta = {layer: {n: v - eta * (g[layer][n] + (lam * v if n == "W" else 0.0))
                             for n, v in arrs.items()} for layer, arrs in theta.items()}
    np.testing.assert_allclose(r.metrics["train_loss"], losses, rtol=1e-12)
    np.testing.assert_allclose(r.layers["weight_norm/hidden0"], norms, rtol=1e-12)
    for layer in theta:
        for k in theta[layer]:
            np.testing.assert_allclose(r.params[layer][k], theta[layer][k], rtol=1e-11, atol=1e-14)
    w_sq = sum(float(np.sum(np.asarray(theta[layer]["W"]) ** 2)) for layer in theta)
    assert r.metrics["l2_penalty"][-1] == pytest.approx(0.5 * lam * w_sq, rel=1e-12)


def test_ensemble_equals_sequential_runs():
    """Minibatch SGD with AutoL2, 2 seeds x 2 learning rates, float64: the vmapped program gives each member
    the same numbers as training it alone; reruns are bitwise reproducible."""
    cfg = _cfg(batch_size=8, weight_decay={"kind": "autol2", "init_weight_decay": 0.05}, learning_rate=0.3, steps=30,
               eval_every=10, dtype="float64")
    ens = train_ensemble(cfg, seeds=[0, 1], learning_rates=[0.3, 0.1])
    assert [(m.seed, m.learning_rate) for m in ens.members] == [(0, 0.3), (0, 0.1), (1, 0.3), (1, 0.1)]
    with x64():
        data = load_dataset("teacher", **TEACHER)
        prog = Program(cfg, data)
    for m, er in zip(ens.members, ens.runs):
        sr = train(m, data, program=prog)
        assert er.run_id == sr.run_id == m.run_id
        for stream in ("metrics", "layers", "probe"):
            for k, v in getattr(sr, stream).items():
                np.testing.assert_allclose(getattr(er, stream)[k], v, rtol=1e-9, atol=1e-13, err_msg=k)
    again = train(ens.members[0], data, program=prog)
    np.testing.assert_array_equal(again.metrics["train_loss"], train(ens.members[0], data, program=prog)
                                  .metrics["train_loss"])
    # different seeds really are different networks
    assert not np.allclose(ens.runs[0].metrics["train_loss"], ens.runs[2].metrics["train_loss"])
    assert ens.stacked()["test_loss"].shape == (4, 4)


def test_member_grids():
    cfg = _cfg(weight_decay=0.01)
    assert len(member_configs(cfg, seeds=[0, 1, 2], weight_decays=[0.1, 0.2])) == 6
    zipped = member_configs(cfg, seeds=[0, 1], weight_decays=[0.1, 0.2], product=False)
    assert [(m.seed, m.weight_decay) for m in zipped] == [(0, 0.1), (1, 0.2)]
    with pytest.raises(ValueError, match="same length"):
        member_configs(cfg, seeds=[0, 1, 2], weight_decays=[0.1, 0.2], product=False)
    with pytest.raises(ValueError, match="learning_rates"):
        member_configs(cfg.replace(learning_rate={"kind": "constant", "value": 0.1}), learning_rates=[0.1])


def test_scale_invariant_layers_norm_growth_and_metrics():
    """LayerNorm MLP without biases: hidden weights are scale-invariant. Without L2, GD can only grow their
    norm (the gradient is orthogonal to w: ||w'||^2 = ||w||^2 + eta^2 ||g||^2); eff_lr and the unit-scale
    gradient norm are reported for them only."""
    cfg = _cfg(arch=MLP(depth=3, width=16, out_dim=1, norm="layer"), learning_rate=0.5, weight_decay=0.0, steps=40,
               eval_every=10)
    r = train(cfg)
    assert r.info["scale_invariant_layers"] == ["hidden0", "hidden1"]
    assert "eff_lr/readout" not in r.layers and "eff_lr/hidden1" in r.layers
    for layer in ("hidden0", "hidden1"):
        wn = r.layers[f"weight_norm/{layer}"]
        assert np.all(np.diff(wn) >= -1e-5 * wn[:-1])
        assert wn[-1] > wn[0]
        np.testing.assert_allclose(r.layers[f"eff_lr/{layer}"], 0.5 / wn ** 2, rtol=1e-5)
        np.testing.assert_allclose(r.layers[f"grad_norm_unit/{layer}"], r.layers[f"grad_norm/{layer}"] * wn,
                                   rtol=1e-5)


@pytest.mark.slow
def test_cnn_xent_autol2_run():
    """A 2-D CNN on digits images with softmax cross-entropy and AutoL2: lam only ever drops by the factor,
    the decay counter agrees with it, and training accuracy rises."""
    cfg = RunConfig(arch=CNN(depth=2, channels=8, out_dim=3, ndim=2), data="digits",
                    data_options=dict(classes=[0, 1, 2], layout="image", n_train=96, n_test=60),
                    loss="xent", optimizer="sgd", learning_rate=2.0, batch_size=32,
                    weight_decay={"kind": "autol2", "init_weight_decay": 0.01}, steps=600, eval_every=50)
    r = train(cfg)
    lam, decays = r.metrics["weight_decay"], r.metrics["autol2_decays"]
    assert np.all(np.diff(lam) <= 0)
    np.testing.assert_allclose(lam, 0.01 * 10.0 ** (-decays.astype(float)), rtol=1e-5)
    assert decays[-1] >= 1
    assert r.metrics["train_acc"][-1] > 0.9


def test_reference_autol2_in_the_loop_and_vmapped():
    """AutoL2(rule="reference") in the harness: vmapped over initial λ it matches single runs, λ only ever drops
    by the factor, and the rule is fed the current minibatch (so it is not the default rule's schedule)."""
    auto = {"kind": "autol2", "init_weight_decay": 0.5, "rule": "reference", "refractory": 0.01}
    cfg = _cfg(batch_size=8, weight_decay=auto, learning_rate=0.3, steps=60, eval_every=10)
    ens = train_ensemble(cfg, weight_decays=[0.5, 0.2])
    single = train(ens.members[1])
    np.testing.assert_allclose(ens.runs[1].metrics["weight_decay"], single.metrics["weight_decay"], rtol=1e-6)
    for r in ens.runs:
        lam = np.asarray(r.metrics["weight_decay"], float)
        ratio = lam[1:] / lam[:-1]
        assert np.all(np.isclose(ratio, 1.0) | np.isclose(ratio, 0.1) | np.isclose(ratio, 0.01))
        assert r.metrics["autol2_decays"][-1] >= 1 and lam[-1] < lam[0]
