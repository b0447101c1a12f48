"""widelimit.compare and `widelimit compare`: a user's model, its own kernels, the prediction and training.

Fast: bad input errors before any compute (Python and CLI), the model's Monte-Carlo kernels against the
analytic kernels within their Monte-Carlo error, an end-to-end run on a tiny NTK MLP (report written) and
on a LayerNorm net (scale-invariant path). Slow: at width 512 on 64 digits (3 vs 8), compare's t* and
λ_opt equal the analytic path's within the kernels' Monte-Carlo error, and the trained networks' curves
lie in the predicted n-seed intervals (the width study, docs/theory.md §2, finds width 512 inside the
NTK regime at this size).
"""
import json

import numpy as np
import pytest

import jax.numpy as jnp

pytest.importorskip("flax", reason="flax is in the 'models' extra (current-JAX environment)")

from _compare_models import digits_38, layernorm_model, ntk_mlp  # noqa: E402

import widelimit  # noqa: E402
from widelimit.cli.app import main  # noqa: E402
from widelimit.comparison import core  # noqa: E402
from widelimit.models import from_jax  # noqa: E402
from widelimit.validity import Verdict  # noqa: E402

BASE = dict(weight_decays=[0.05], learning_rate=0.2, steps=10, seeds=2, eval_every=2, ntk_seeds=1,
            nngp_samples=16)


@pytest.fixture(autouse=True)
def fast_compile(monkeypatch):
    """Short runs: compile time dominates, so compile the training programs with XLA's quick settings."""
    from widelimit.train import loop

    monkeypatch.setattr(loop, "COMPILER_OPTIONS", {"xla_backend_optimization_level": 0})


@pytest.fixture
def no_compute(monkeypatch):
    """Any structure analysis (the first compute of compare) fails the test."""
    def boom(*a, **k):
        raise AssertionError("compute started before the input was validated")
    monkeypatch.setattr(core, "analyse_structure", boom)


# -- bad input, before any compute -------------------------------------------------------------------
def test_output_shape_vs_targets(no_compute):
    ds = digits_38(16)
    model = ntk_mlp(ds.x_train.shape[1], width=8, out=2)          # 2 outputs, targets have 1 column
    with pytest.raises(ValueError, match=r"^y: targets of shape \(16, 1\) do not match .*\(16, 2\)"):
        widelimit.compare(model, ds, **BASE)


def test_params_not_a_pytree_of_arrays(no_compute):
    ds = digits_38(16)
    apply = lambda p, x: x @ p["w"]  # noqa: E731
    with pytest.raises(TypeError, match="^params: every leaf must be an array"):
        widelimit.compare(apply, ds, params={"w": "not an array"}, **BASE)
    with pytest.raises(TypeError, match="^params: every leaf must be a floating-point array"):
        widelimit.compare(apply, ds, params={"w": np.ones((64, 1), np.int32)}, **BASE)
    with pytest.raises(ValueError, match="^params: a plain apply function needs its params"):
        widelimit.compare(apply, ds, **BASE)


@pytest.mark.parametrize("change, match", [
    (dict(learning_rate=-0.1), "^learning_rate: must be > 0"),
    (dict(seeds=1), "^seeds: must be >= 2"),
    (dict(weight_decays=[]), "^weight_decays: need a non-empty list"),
    (dict(weight_decays=[0.05, -1.0]), "^weight_decays: must be > 0"),
    (dict(weight_decays=[6.0]), "^weight_decays: learning_rate \\* weight_decay must be < 1"),
    (dict(optimizer="rmsprop"), "^optimizer: must be one of"),
    (dict(steps=0), "^steps: must be > 0"),
    (dict(batch_size=100), "^batch_size: 100 exceeds the 16 training examples"),
    (dict(weight_decay_mask=["Dense_*/kernel"]), r"^weight_decay_mask: \['Dense_\*/kernel'\] match no parameter array; arrays are \['W0', 'W1', 'W2'\]"),
])
def test_bad_hyper_parameters(no_compute, change, match):
    ds = digits_38(16)
    with pytest.raises((ValueError, TypeError), match=match):
        widelimit.compare(ntk_mlp(ds.x_train.shape[1], width=8), ds, **{**BASE, **change})


def test_bad_data_and_out_dir(no_compute, tmp_path):
    ds = digits_38(16)
    model = ntk_mlp(ds.x_train.shape[1], width=8)
    with pytest.raises(ValueError, match="^data: y_train must have shape"):
        widelimit.compare(model, (ds.x_train, ds.y_train[:, 0], ds.x_test, ds.y_test), **BASE)
    with pytest.raises(TypeError, match="^data: expected a widelimit Dataset"):
        widelimit.compare(model, "digits", **BASE)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="^out_dir: .* is not a directory"):
        widelimit.compare(model, ds, out_dir=f, **BASE)
    with pytest.raises(ValueError, match="^out_dir: .* is not empty"):
        widelimit.compare(model, ds, out_dir=tmp_path, **BASE)
    no_init = from_jax(model.apply, model.params)
    with pytest.raises(ValueError, match="^model: seeds need fresh initialisations"):
        widelimit.compare(no_init, ds, **BASE)


@pytest.mark.parametrize("spec, match", [
    ("no_colon", "^--model: expected package.module:factory"),
    ("no_such_module_xyz:make", "^--model: cannot import 'no_such_module_xyz' .ModuleNotFoundError"),
    ("_compare_models:missing", "^--model: '_compare_models' has no attribute 'missing'"),
    ("_compare_models:NTKMLP.width", "^--model: _compare_models:NTKMLP.width is not callable"),
    ("_compare_models:not_a_model", r"^--model: _compare_models:not_a_model\(\) did not return a model: model: cannot adapt"),
    ("_compare_models:broken", r"^--model: _compare_models:broken\(\) raised RuntimeError: this factory fails"),
    ("_compare_models:wrong_targets", r"^y: targets of shape \(16, 1\) do not match"),
])
def test_cli_bad_factory(capsys, tmp_path, no_compute, spec, match):
    import re

    code = main(["compare", "--model", spec, "--weight-decay", "0.05", "--learning-rate", "0.2", "--steps", "10",
                 "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("widelimit compare: error: "), err
    assert re.search(match, err.split("error: ", 1)[1]), err


# -- the model's own kernels against the analytic ones -------------------------------------------------
def test_model_kernels_match_analytic_within_mc_error():
    from widelimit import MLP, analytic_kernels
    from widelimit._x64 import x64
    from widelimit.models.kernels import model_kernels

    ds = digits_38(16)
    model = ntk_mlp(ds.x_train.shape[1], width=512)    # at 256 the outputs' heavier-than-Gaussian tails show
    S = 128
    with x64():
        k = model_kernels(model.with_dtype(jnp.float64), ds.x_train, ds.x_test, ntk_seeds=range(3),
                          nngp_samples=S, full_test=True)
    a = analytic_kernels(MLP(depth=3, out_dim=1), np.concatenate([ds.x_train, ds.x_test]).astype(np.float64))
    n = ds.n_train
    ntk_tt, ntk_xt, nngp = a.ntk[:n, :n], a.ntk[n:, :n], a.nngp
    # NTK: the trace (the quantity whose Monte-Carlo error the module reports) within 3 standard errors
    assert abs(np.trace(k.ntk_train_train) / np.trace(ntk_tt) - 1) < 3 * k.ntk_rel_error
    assert abs(k.ntk_test_train.sum() / ntk_xt.sum() - 1) < 3 * k.ntk_rel_error + 0.02
    # NNGP: the trace within 3 of its reported standard errors, and every entry against its Monte-Carlo
    # standard error sqrt((K_ii K_jj + K_ij^2) / S) for Gaussian f0 (the infinite-width prior)
    assert abs(np.trace(k.nngp_train_train) / np.trace(nngp[:n, :n]) - 1) < 3 * k.nngp_rel_error
    for emp, i, j in ((k.nngp_train_train, slice(0, n), slice(0, n)), (k.nngp_test_train, slice(n, None), slice(0, n)),
                      (k.nngp_test_test, slice(n, None), slice(n, None))):
        ref = nngp[i, j]
        d_i, d_j = np.diag(nngp)[i], np.diag(nngp)[j]
        se = np.sqrt((np.outer(d_i, d_j) + ref ** 2) / S)
        z2 = np.mean(((emp - ref) / se) ** 2)
        assert 0.1 < z2 < 3.0, z2
    # and a wrong scale is detected: the same test on twice the kernel fails
    assert abs(np.trace(2 * k.ntk_train_train) / np.trace(ntk_tt) - 1) > 3 * k.ntk_rel_error


# -- a user's model trained by widelimit's one loop ---------------------------------------------------
def test_user_model_in_the_training_loop():
    import jax

    from widelimit.train import RunConfig, train, train_ensemble
    from widelimit.train.config import user_arch

    ds = digits_38(16)
    model = ntk_mlp(ds.x_train.shape[1], width=16)
    eta, lam, T = 0.3, 0.1, 5
    cfg = RunConfig(arch=user_arch(model.name), data="digits-3-8", learning_rate=eta, weight_decay=lam, steps=T,
                    eval_every=1, weight_decay_mask=["W0", "W1"], probe_size=4)
    r = train(cfg.replace(seed=3), data=ds, model=model, keep_params=True)
    # the same GD by hand: θ ← θ − η(∇ℓ + λ m θ), m the mask (readout W2 without decay), ℓ = MSE/2
    p = model.init(jax.random.split(jax.random.PRNGKey(3))[0])
    loss = lambda q: 0.5 * jnp.mean((model.apply(q, ds.x_train) - ds.y_train) ** 2)  # noqa: E731
    losses = []
    for _ in range(T):
        g = jax.grad(loss)(p)
        p = {k: p[k] - eta * (g[k] + (lam * p[k] if k != "W2" else 0.0)) for k in p}
        losses.append(loss(p))
    np.testing.assert_allclose(r.metrics["train_loss"][1:], losses, rtol=2e-5)
    for k in p:
        np.testing.assert_allclose(r.params[k], p[k], rtol=1e-4, atol=1e-6)
    w0 = np.linalg.norm(np.asarray(p["W0"]))
    assert r.layers["weight_norm/['W0']"][-1] == pytest.approx(w0, rel=1e-5)
    assert r.probe["outputs"].shape == (T + 1, 4, 1)
    # vmapped over seeds (init vmapped over keys): member (seed 3, λ) equals the single run
    e = train_ensemble(cfg, seeds=[0, 3], weight_decays=[lam], data=ds, model=model)
    np.testing.assert_allclose(e.runs[1].metrics["test_loss"], r.metrics["test_loss"], rtol=1e-5)
    assert not np.allclose(e.runs[0].metrics["test_loss"], r.metrics["test_loss"])
    # AutoL2 runs through the same program
    auto = {"kind": "autol2", "init_weight_decay": 0.1, "measure_every": 2}
    r3 = train(cfg.replace(weight_decay=auto), data=ds, model=model)
    assert r3.metrics["weight_decay"][0] == pytest.approx(0.1) and "autol2_decays" in r3.metrics
    # bad input: a user arch without model=, a model with a spec arch, unknown scale-invariant group
    with pytest.raises(ValueError, match="^model: a user's model needs"):
        train(cfg, data=ds)
    with pytest.raises(ValueError, match="^scale_invariant: "):
        train(cfg, data=ds, model=model, scale_invariant=["nope"])


@pytest.mark.slow
def test_nnx_and_equinox_models_train_vmapped_over_seeds():
    import equinox as eqx
    import jax
    from flax import nnx

    from widelimit.models import from_equinox, from_flax_nnx
    from widelimit.train import RunConfig, train, train_ensemble
    from widelimit.train.config import user_arch

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(64, 16, use_bias=False, rngs=rngs)
            self.l2 = nnx.Linear(16, 1, use_bias=False, rngs=rngs)

        def __call__(self, x):
            return self.l2(nnx.relu(self.l1(x)))

    mlp = lambda key: eqx.nn.MLP(64, 1, 16, 2, use_bias=False, key=key)  # noqa: E731
    ds = digits_38(16)
    cfg = RunConfig(arch=user_arch("net"), data="digits-3-8", learning_rate=0.1, weight_decay=0.01, steps=3,
                    eval_every=1)
    for model in (from_flax_nnx(Net(nnx.Rngs(0)), init=lambda k: Net(nnx.Rngs(k))),
                  from_equinox(mlp(jax.random.PRNGKey(0)), init=mlp)):
        e = train_ensemble(cfg, seeds=[0, 1], data=ds, model=model)
        one = train(cfg.replace(seed=1), data=ds, model=model)
        np.testing.assert_allclose(e.runs[1].metrics["test_loss"], one.metrics["test_loss"], rtol=1e-5)
        assert not np.allclose(e.runs[0].metrics["test_loss"], one.metrics["test_loss"])


# -- end to end ---------------------------------------------------------------------------------------
def test_compare_end_to_end_tiny(tmp_path):
    ds = digits_38(16)
    model = ntk_mlp(ds.x_train.shape[1], width=32)
    r = widelimit.compare(model, ds, out_dir=tmp_path / "rep", **{**BASE, "weight_decays": [0.05, 0.1]})
    assert r.structure.degree == 3 and r.ntk is not None and r.ntk_skipped == ""
    assert r.ntk.data_kernels.L == 3 and "measured at initialisation" in r.ntk.inputs
    assert r.test_loss.shape == (2, 2, 6) and r.time.tolist() == pytest.approx(0.2 * np.arange(0, 11, 2))
    # function-space outputs are logged: their test MSE is the logged test loss
    assert r.test_outputs.shape == (2, 2, 6, 16, 1)
    np.testing.assert_allclose(0.5 * np.mean((r.test_outputs - ds.y_test) ** 2, axis=(-2, -1)), r.test_loss,
                               rtol=1e-5)
    assert {"weight_norm/['W0']", "angular_update_mean/['W2']", "grad_norm/['W1']"} <= set(r.layers)
    # the logged step-0 loss is the loss of model.init(split(PRNGKey(seed))[0]) (the loop's init)
    import jax
    p0 = model.init(jax.random.split(jax.random.PRNGKey(1))[0])
    f0 = np.asarray(model.apply(p0, ds.x_test))
    assert r.test_loss[1, 0, 0] == pytest.approx(0.5 * np.mean((f0 - ds.y_test) ** 2), rel=1e-5)
    assert any(c.claim.name.startswith("t* at") for c in r.claims) or all(
        not np.isfinite(v) for v in r.ntk.t_star_spread.low)
    files = {p.name for p in (tmp_path / "rep").iterdir()}
    assert {"compare.md", "compare.json", "test_loss.png"} <= files
    js = json.loads((tmp_path / "rep" / "compare.json").read_text())
    assert js["ntk"]["L"] == 3 and len(js["claims"]) == len(r.claims)
    with pytest.raises(Exception):
        r.model = "other"                                        # frozen


def test_compare_scale_invariant_group():
    ds = digits_38(16)
    model = layernorm_model(ds.x_train.shape[1])
    r = widelimit.compare(model, ds, weight_decays=[0.05], learning_rate=0.5, steps=40, seeds=2, eval_every=4,
                          noise_steps=10)
    names = [g.name for g in r.structure.scale_invariant_groups]
    assert names == ["['W1']"] and r.ntk is None and "structure" in r.ntk_skipped
    (pred,) = r.norms
    # G is the measured ||grad||^2 ||w||^2 over the first 10 steps; GD's equilibrium is x*^2 = η G/(2λ)
    # with x* = ||w||^2 (docs/theory.md §6: the gradient of a scale-invariant group scales as 1/||w||)
    G = np.mean(r.layers["grad_norm_unit/['W1']"][:, :, r.steps <= 10] ** 2)
    assert pred.grad_norm_sq[0] == pytest.approx(G, rel=1e-6)
    assert pred.norm_sq[0] ** 2 == pytest.approx(0.5 * G / (2 * 0.05), rel=1e-6)
    assert r.claims and all(c.claim.driven for c in r.claims)


@pytest.mark.slow
def test_cli_compare_writes_report(capsys, tmp_path):
    out = tmp_path / "rep"
    code = main(["compare", "--model", "_compare_models:tiny", "--weight-decay", "0.05", "--learning-rate", "0.2",
                 "--steps", "10", "--seeds", "2", "--eval-every", "2", "--ntk-seeds", "1", "--nngp-samples", "16",
                 "--out", str(out)])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert "cost: flax-ntk-mlp-32: " in cap.err and "4 networks" not in cap.err and "2 networks" in cap.err
    assert cap.out.startswith("flax-ntk-mlp-32: ntk-l2-flow; claims ") and str(out / "compare.md") in cap.out
    assert {"compare.md", "compare.json", "test_loss.png"} <= {p.name for p in out.iterdir()}
    # a second run into the same directory needs --force
    code = main(["compare", "--model", "_compare_models:tiny", "--weight-decay", "0.05", "--learning-rate", "0.2",
                 "--steps", "10", "--out", str(out), "--no-progress"])
    assert code == 2 and "is not empty" in capsys.readouterr().err


# -- slow: agreement with the analytic path and with training --------------------------------------------
@pytest.mark.slow
def test_compare_reproduces_analytic_prediction_and_training():
    from widelimit import MLP, DataKernels, analytic_kernels, lambda_opt, predict_model, t_star

    ds = digits_38(64)
    lams, eta, steps = [0.02, 0.05], 0.2, 200
    r = widelimit.compare(ntk_mlp(ds.x_train.shape[1], width=512), ds, weight_decays=lams, learning_rate=eta,
                          steps=steps, seeds=8, eval_every=2, ntk_seeds=4, nngp_samples=256)
    n = ds.n_train
    a = analytic_kernels(MLP(depth=3, out_dim=1), np.concatenate([ds.x_train, ds.x_test]).astype(np.float64))
    dk = DataKernels(a.ntk[:n, :n], a.ntk[n:, :n], ds.y_train, ds.y_test, 3, a.nngp[:n, :n], a.nngp[n:, :n],
                     np.diag(a.nngp[n:, n:]))
    pm = predict_model(dk, learning_rate=eta)
    ts_a = t_star(pm, weight_decays=lams, learning_rate=eta).t_star
    lo_a = lambda_opt(pm, steps=[steps], learning_rate=eta).weight_decay_opt
    mc = 2 * np.hypot(r.ntk.kernels.ntk_rel_error, r.ntk.kernels.nngp_rel_error)      # relative MC error
    np.testing.assert_allclose(r.ntk.t_star.t_star, ts_a, rtol=mc)
    np.testing.assert_allclose(r.ntk.lambda_opt.weight_decay_opt, lo_a, rtol=mc)
    # measured vs predicted: no claim fails; the t* claims hold
    assert all(c.verdict is not Verdict.FAILS for c in r.claims), [(c.claim.name, c.verdict) for c in r.claims]
    assert all(c.verdict is Verdict.HOLDS for c in r.claims if c.claim.name.startswith("t*"))
