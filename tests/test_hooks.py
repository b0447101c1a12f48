"""Instrumentation hooks of the training loop (widelimit.train.hooks) and the new optimisers.

Each probe is checked against an independent computation: per-unit angles and norms from parameters saved
by separate runs (NumPy, float64, arccos), the moment rescaling against the optimiser states' own fields,
Lion and Muon against optax's own ``optax.lion`` / ``optax.contrib.muon`` with their weight decay.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from widelimit.arch import MLP
from widelimit.train import Hooks, RunConfig, make_optimizer, train
from widelimit.train.hooks import adam_preconditioner, kick, rescale_moments, weight_probes


def _cfg(**kw):
    base = dict(arch=MLP(depth=3, width=8, out_dim=10, norm="batch", parameterization="standard", W_std=0.5),
                data="digits", data_options={"n_train": 96, "n_test": 32}, optimizer="momentum",
                learning_rate=0.05, weight_decay=0.01, loss="xent", batch_size=32, steps=6, eval_every=3, seed=1)
    base.update(kw)
    return RunConfig(**base)


LAYERS = ["hidden0", "hidden1"]


def test_step_probes_against_saved_parameters():
    """Per-unit and whole-matrix angles between θ_k and θ_{k+1}, norms and G, recomputed in NumPy from the
    parameters of runs of k and k+1 steps (the first k steps of both are the same computation)."""
    k = 4
    cfg = _cfg(steps=k + 1, eval_every=1)
    r1 = train(cfg, hooks=Hooks(step_probes=weight_probes(LAYERS, per_unit=True)), keep_params=True)
    rec, p1 = r1.steps, r1.params
    p0 = train(cfg.replace(steps=k, eval_every=1), keep_params=True).params
    for j, n in enumerate(LAYERS):
        a, b = np.asarray(p0[n]["W"], np.float64), np.asarray(p1[n]["W"], np.float64)
        cos_u = np.sum(a * b, 0) / np.sqrt(np.sum(a * a, 0) * np.sum(b * b, 0))
        np.testing.assert_allclose(rec["unit_angle"][k, j], np.arccos(np.clip(cos_u, -1, 1)), rtol=2e-3, atol=1e-6)
        cos = np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b))
        np.testing.assert_allclose(rec["angle"][k, j], np.arccos(cos), rtol=2e-3)
        np.testing.assert_allclose(rec["unit_norm_sq"][k, j], np.sum(a * a, 0), rtol=1e-5)
        np.testing.assert_allclose(rec["norm_sq"][k, j], np.sum(a * a), rtol=1e-5)
    assert rec["unit_angle"].shape == (k + 1, 2, 8) and rec["loss"].shape == (k + 1,)
    # per-unit angles are not all equal (BatchNorm units move independently)
    assert np.std(rec["unit_angle"][k, 0]) > 0.05 * np.mean(rec["unit_angle"][k, 0])


def test_hooks_observe_only_kick_rescales_and_ensembles_carry_them():
    """Hooks do not change training; a ×2 kick before step 3 of a BatchNorm net multiplies ‖W‖² of the kicked
    layers by 4 at that step and leaves the function (minibatch loss) unchanged; ensembles carry hooks."""
    from widelimit.train import train_ensemble

    cfg = _cfg(optimizer="sgd", steps=4, eval_every=2)
    probes = weight_probes(LAYERS)
    plain = train(cfg)
    base = train(cfg, hooks=Hooks(step_probes=probes))
    for key in ("train_loss", "test_loss", "param_norm"):
        np.testing.assert_allclose(base.metrics[key], plain.metrics[key], rtol=1e-6)
    kicked = train(cfg, hooks=Hooks(step_probes=probes, before_step=kick(LAYERS, 3, 2.0)))
    np.testing.assert_allclose(kicked.steps["norm_sq"][:3], base.steps["norm_sq"][:3], rtol=1e-6)
    np.testing.assert_allclose(kicked.steps["norm_sq"][3], 4 * base.steps["norm_sq"][3], rtol=1e-5)
    np.testing.assert_allclose(kicked.steps["loss"][3], base.steps["loss"][3], rtol=1e-4)
    ens = train_ensemble(cfg, seeds=[1, 2], hooks=Hooks(step_probes=probes))
    np.testing.assert_allclose(ens.runs[0].steps["norm_sq"], base.steps["norm_sq"], rtol=1e-5)
    assert not np.allclose(ens.runs[1].steps["norm_sq"], base.steps["norm_sq"])


@pytest.mark.parametrize("name, fields", [("adam", {"mu": 0.5, "nu": 0.25}), ("momentum", {"trace": 0.5}),
                                          ("lion", {"mu": 0.5}), ("muon", {"mu": 0.5, "nu": 0.25})])
def test_rescale_moments_only_touches_the_named_layers(name, fields):
    params = {"hidden0": {"W": jnp.ones((3, 2))}, "readout": {"W": jnp.ones((2, 1)), "b": jnp.ones(1)}}
    grads = jax.tree_util.tree_map(lambda a: 2.0 + jnp.arange(a.size, dtype=a.dtype).reshape(a.shape), params)
    tx = make_optimizer(name, 0.1, weight_decay=0.01)
    _, state = tx.update(grads, tx.init(params), params)
    new = rescale_moments(state, ["hidden0"], 2.0)
    seen = 0
    for field, factor in fields.items():
        import optax.tree_utils as otu
        old_all = otu.tree_get_all_with_path(state, field)
        new_all = dict(otu.tree_get_all_with_path(new, field))
        for path, old in old_all:
            nv = new_all[path]
            for layer in ("hidden0", "readout"):
                o, v = old[layer]["W"], nv[layer]["W"]
                if not hasattr(o, "shape"):
                    continue  # masked (Muon's partition)
                f = factor if layer == "hidden0" else 1.0
                np.testing.assert_allclose(v, f * o, rtol=1e-6)
                seen += layer == "hidden0"
    assert seen >= 1


def test_adam_preconditioner_against_the_state():
    """After the first Adam update v̂ = g² (no L2), so κ = 1/(sqrt(mean g²) + ε) with g the step-0 minibatch
    gradient, computed here independently with jax.grad on the run's own initial parameters and batch."""
    from widelimit.data import load_dataset
    from widelimit.nets import apply
    from widelimit.train.loop import Program, minibatch
    from widelimit.train.metrics import xent_loss

    cfg = _cfg(optimizer="adam", weight_decay=0.0, steps=2, eval_every=2)
    r = train(cfg, hooks=Hooks(step_probes={"adam": adam_preconditioner(["hidden0"], 0.999, 1e-8)}))
    data = load_dataset(cfg.data, **cfg.data_options)
    prog = Program(cfg, data)
    key = jax.random.PRNGKey(cfg.seed)
    p = prog.init_params(key)
    arr = prog.arrays(data)
    xb, yb = minibatch(arr["x_train"], arr["y_train"], jax.random.split(key)[1], 0, cfg.batch_size)
    g = jax.grad(lambda q: xent_loss(apply(prog.spec, q, xb), yb))(p)["hidden0"]["W"]
    np.testing.assert_allclose(r.steps["adam"]["kappa"][0, 0], 1 / (np.sqrt(np.mean(np.square(g))) + 1e-8),
                               rtol=1e-4)
    assert r.steps["adam"]["aniso"][0, 0] >= 1.0 - 1e-6  # Cauchy–Schwarz: ≥ 1 whatever the spread


def _tree(seed):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    return {"dense": {"W": jax.random.normal(k1, (5, 4)), "b": jax.random.normal(k2, (4,))},
            "conv": {"W": jax.random.normal(k3, (3, 2, 4))}}


@pytest.mark.parametrize("name", ["lion", "muon"])
def test_lion_and_muon_equal_optax_with_decoupled_weight_decay(name):
    """Our chain (optax direction, then λθ, then η) equals optax's own optimiser with weight decay λ over a
    few steps; Muon treats the 2-D weight with Newton–Schulz and the rest (bias, rank-3 conv) with Adam."""
    eta, lam = 0.05, 0.1
    p = _tree(0)
    ours = make_optimizer(name, eta, weight_decay=lam)
    if name == "lion":
        ref = optax.lion(eta, b1=0.9, b2=0.99, weight_decay=lam)
    else:
        ref = optax.contrib.muon(eta, beta=0.95, weight_decay=lam, adam_weight_decay=lam)
    s_o, s_r, p_o, p_r = ours.init(p), ref.init(p), p, p
    for i in range(4):
        g = _tree(10 + i)
        u_o, s_o = ours.update(g, s_o, p_o)
        u_r, s_r = ref.update(g, s_r, p_r)
        p_o, p_r = optax.apply_updates(p_o, u_o), optax.apply_updates(p_r, u_r)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), p_o, p_r)
    # and the decay is really there: without it the parameters differ
    nod = make_optimizer(name, eta, weight_decay=0.0)
    s, q = nod.init(p), p
    for i in range(4):
        u, s = nod.update(_tree(10 + i), s, q)
        q = optax.apply_updates(q, u)
    assert not np.allclose(q["dense"]["W"], p_o["dense"]["W"])


def test_optimizer_options_are_checked():
    with pytest.raises(ValueError, match="eps"):
        make_optimizer("lion", 0.1, eps=1e-8)
    with pytest.raises(ValueError, match="momentum"):
        make_optimizer("adam", 0.1, momentum=0.9)
    with pytest.raises(ValueError, match="optimizer name"):
        make_optimizer("adam_l2", 0.1)
    with pytest.raises(TypeError, match="hooks"):
        train(_cfg(), hooks={"x": 1})
