"""AutoL2 decisions on synthetic measurement sequences.

The rule under test (widelimit.train.autol2): every ``measure_every`` steps a measurement (loss, accuracy)
arrives; it *improves* if loss < best loss or accuracy > best accuracy; lam is divided by ``factor`` when the
last ``patience`` measurements all failed and the physical time since the last decay (or the start) is
at least ``refractory / lam``. The expected decay steps below are worked out by hand in the comments, and
random sequences are checked against an independent pure-Python implementation of the rule.

``rule="reference"`` (the released AutoL2 code, docs/theory.md §7) is checked against a plain-Python transcription
of the reference loop written here, on a recorded training trace (tests/data/autol2_trace.json) and on
random sequences: the decay steps must be identical.
"""
import json
from pathlib import Path
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from widelimit._x64 import x64
from widelimit.train import AutoL2, autol2, autol2_advance, autol2_init, autol2_observe


def _drive(meas_loss, meas_acc, lr, steps, init_lam=0.1, dtype=jnp.float32, mask=None, **kw):
    """Run the optax transform for ``steps`` updates (fixed params, zero gradients); measurement ``i`` is
    offered at steps ``10 i .. 10 i + 9``. Returns the lam used by each update, read off the update itself."""
    params = {"layer": {"W": jnp.ones(3, dtype), "b": jnp.ones(2, dtype)}}
    tx = optax.chain(autol2(AutoL2(init_weight_decay=init_lam, **kw), learning_rate=lr, mask=mask),
                     optax.scale(-lr))
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    k = np.arange(steps) // kw.get("measure_every", 10)
    losses = jnp.asarray(np.asarray(meas_loss)[k], dtype)
    accs = jnp.asarray(np.asarray(meas_acc)[k], dtype)

    @jax.jit
    def run(init):
        state = tx.init(params)
        state = (state[0]._replace(weight_decay=jnp.asarray(init, dtype)), state[1])

        def body(s, la):
            u, s = tx.update(zeros, s, params, train_loss=la[0], train_accuracy=la[1])
            return s, (-u["layer"]["W"][0] / lr, u["layer"]["b"][0])
        return jax.lax.scan(body, state, (losses, accs))
    state, (lams, b_updates) = run(init_lam)
    return np.asarray(lams), state[0], np.asarray(b_updates)


def _decay_steps(lams):
    return [int(i) for i in np.nonzero(np.diff(lams) != 0)[0] + 1]


def test_hand_worked_sequence():
    # lr = 0.12, lam0 = 0.1, refractory 0.1/lam, measurements every 10 steps (time 1.2 apart)
    # m0 (step 0)  1.0/0.1  improves (first)      m1 (10)  0.8/0.2  improves
    # m2 (20)      0.9/0.2  fails                 m3 (30)  0.85/0.15 fails -> 2 fails, t=3.6 >= 0.1/0.1=1
    #   -> decay at step 30: lam = 0.01; next decay needs t >= 3.6 + 0.1/0.01 = 13.6, i.e. step >= 113.3
    # m4..m11 (40..110) fail but are refractory;  m12 (120, t=14.4) fails -> decay: lam = 0.001
    #   (next would need t >= 14.4 + 100: never within 200 steps)
    # m13 (130) 0.5 improves; m14.. fail.
    loss = [1.0, 0.8, 0.9, 0.85] + [0.9] * 9 + [0.5] + [0.6] * 6
    acc = [0.1, 0.2, 0.2, 0.15] + [0.1] * 9 + [0.1] + [0.1] * 6
    lams, state, _ = _drive(loss, acc, lr=0.12, steps=200)
    assert _decay_steps(lams) == [30, 120]
    np.testing.assert_allclose(lams[[0, 29, 30, 119, 120, 199]], [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)
    assert int(state.n_decays) == 2 and int(state.last_decay_step) == 120
    assert float(state.best_loss) == pytest.approx(0.5) and float(state.best_accuracy) == pytest.approx(0.2)
    assert int(state.n_measurements) == 20 and int(state.count) == 200
    assert float(state.time) == pytest.approx(200 * 0.12, rel=1e-5)


def test_refractory_period_is_in_physical_time():
    # Same measurements failing from m2 on, but lr = 0.0045: the first decay needs t >= 0.1/0.1 = 1,
    # i.e. step >= 1/0.0045 = 222.2, so it happens at the first measurement after that: step 230.
    loss = [1.0, 0.8] + [0.9] * 40
    acc = [0.1, 0.2] + [0.1] * 40
    lams, _, _ = _drive(loss, acc, lr=0.0045, steps=400)
    assert _decay_steps(lams) == [230]
    # and with refractory=0 the decay comes as soon as two measurements failed: m3 at step 30
    lams0, _, _ = _drive(loss, acc, lr=0.0045, steps=400, refractory=0.0)
    assert _decay_steps(lams0)[0] == 30


def test_criterion_neither_vs_either():
    # loss improves at every measurement, accuracy never moves after m0:
    # "neither" (fail only if neither improves): never decays; "either": m1 and m2 fail -> decay at 20.
    loss = [1.0 / (i + 1) for i in range(20)]
    acc = [0.5] * 20
    lams, _, _ = _drive(loss, acc, lr=0.12, steps=200)
    assert _decay_steps(lams) == []
    lams_e, _, _ = _drive(loss, acc, lr=0.12, steps=200, criterion="either")
    assert _decay_steps(lams_e)[0] == 20


def test_patience_factor_floor_and_mask():
    loss = [1.0] + [2.0] * 30
    acc = [0.5] + [0.1] * 30
    # patience 3: m1, m2, m3 must fail -> first decay at step 30 (t = 3.6 >= 1); floor at 0.05
    lams, _, b_up = _drive(loss, acc, lr=0.12, steps=300, patience=3, factor=4.0, min_weight_decay=0.05)
    assert _decay_steps(lams) == [30]
    np.testing.assert_allclose(lams[-1], 0.05, rtol=1e-6)  # 0.1/4 = 0.025 is floored at 0.05, then stays
    # default mask: every array decays (b too); with mask ["*/W"] the bias gets no L2
    assert np.all(b_up != 0)
    _, _, b_masked = _drive(loss, acc, lr=0.12, steps=20, mask=["*/W"])
    assert np.all(b_masked == 0)


def _reference(loss, acc, lr, steps, lam0, every=10, patience=2, factor=10.0, refractory=0.1):
    """Independent pure-Python statement of the rule (measurement processed before the step's update)."""
    lam, t, best_l, best_a, last_decay_t = lam0, 0.0, math.inf, -math.inf, 0.0
    fails, used = [], []
    for k in range(steps):
        if k % every == 0:
            m_l, m_a = loss[k // every], acc[k // every]
            improved = m_l < best_l or m_a > best_a
            best_l, best_a = min(best_l, m_l), max(best_a, m_a)
            fails.append(not improved)
            if len(fails) >= patience and all(fails[-patience:]) and t - last_decay_t >= refractory / lam:
                lam /= factor
                last_decay_t = t
        used.append(lam)
        t += lr
    return np.array(used)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_sequences_match_reference(seed):
    rng = np.random.default_rng(seed)
    n = 60
    # plateaus and occasional improvements, on a coarse grid so that ties happen too
    loss = np.round(np.maximum.accumulate(rng.random(n))[::-1] + 0.2 * rng.random(n), 1)
    acc = np.round(rng.random(n), 1)
    lr = float(rng.choice([0.05, 0.3]))
    lam0 = float(rng.choice([0.1, 0.5]))
    with x64():
        lams, _, _ = _drive(loss, acc, lr=lr, steps=n * 10, init_lam=lam0, dtype=jnp.float64)
    ref = _reference(list(loss), list(acc), lr, n * 10, lam0)
    np.testing.assert_allclose(lams, ref, rtol=1e-12)
    assert len(_decay_steps(ref)) >= 1  # the sequences do exercise the decay


def test_pure_functions_outside_optax_and_vmap_over_init_lam():
    """The same rule through autol2_init/observe/advance in a plain Python loop, and vmapped over lam0."""
    loss = [1.0, 0.8, 0.9, 0.85] + [0.9] * 16
    acc = [0.1, 0.2, 0.2, 0.15] + [0.1] * 16
    hp = AutoL2()
    state = autol2_init(0.2)
    used = []
    for k in range(200):
        if k % hp.measure_every == 0:
            state = autol2_observe(state, loss[k // 10], acc[k // 10], hp)
        used.append(float(state.weight_decay))
        state = autol2_advance(state, 0.12)
    ref = _reference(loss, acc, 0.12, 200, 0.2)
    np.testing.assert_allclose(used, ref, rtol=1e-6)

    def final_decays(lam0):
        s = autol2_init(lam0)
        for k in range(0, 200, 10):
            s = autol2_observe(s, loss[k // 10], acc[k // 10], hp)
            for _ in range(10):
                s = autol2_advance(s, 0.12)
        return s.n_decays, s.weight_decay
    n_dec, lam = jax.jit(jax.vmap(final_decays))(jnp.asarray([0.1, 0.2]))
    for i, lam0 in enumerate([0.1, 0.2]):
        r = _reference(loss, acc, 0.12, 200, lam0)
        assert int(n_dec[i]) == len(_decay_steps(r))
        np.testing.assert_allclose(float(lam[i]), r[-1], rtol=1e-6)


@pytest.mark.parametrize("kw, match", [
    ({"factor": 1.0}, "factor"), ({"criterion": "both"}, "criterion"), ({"measure_every": 0}, "measure_every"),
    ({"init_weight_decay": -0.1}, "init_weight_decay"), ({"refractory": float("nan")}, "refractory"),
    ({"patience": 1.5}, "patience"), ({"rule": "paper"}, "rule"), ({"rule": "reference", "patience": 3}, "patience"),
])
def test_invalid_hyperparameters(kw, match):
    with pytest.raises(ValueError, match=match):
        AutoL2(**kw)


def test_update_requires_both_measurements():
    tx = autol2(AutoL2(0.1), learning_rate=0.1)
    p = {"W": jnp.ones(2)}
    s = tx.init(p)
    with pytest.raises(ValueError, match="both"):
        tx.update(p, s, p, train_loss=1.0)
    with pytest.raises(ValueError, match="params"):
        tx.update(p, s)


# ------------------------------------------------------------------------------------------------
# rule="reference": the released code's rule
# ------------------------------------------------------------------------------------------------
def _reference_code(train_lm, train_accuracy_all, steps, lam0, meas_step=10, L2dec=10.0, delay=0.1):
    """The released AutoL2 loop, transcribed statement by statement (lists, try/except and all), in its own
    convention: coefficient L2 with penalty L2*sum(theta^2), i.e. L2 = lam/2. Returns the lam (= 2 L2) in
    effect at each step."""
    currL2 = lam0 / 2
    lm_hist, acc_hist, used = [], [], []
    idel0 = 0
    for i in range(steps):
        if i % meas_step == 0:
            lm_hist += [train_lm[i // meas_step]]
            acc_hist += [train_accuracy_all[i // meas_step]]
            if i > delay / currL2 + idel0 and len(lm_hist) > 2 and (
                    (minloss <= lm_hist[-1] and minloss <= lm_hist[-2])  # noqa: F821 (set below first)
                    or (maxacc >= acc_hist[-1] and maxacc >= acc_hist[-2])):  # noqa: F821
                currL2 = currL2 / L2dec
                idel0 = i
            elif len(lm_hist) >= 2:
                try:
                    maxacc = max(acc_hist[-2], maxacc)
                    minloss = min(lm_hist[-2], minloss)
                except NameError:
                    maxacc, minloss = acc_hist[-2], lm_hist[-2]
        used.append(2 * currL2)
    return np.array(used)


def _trace():
    d = json.loads((Path(__file__).parent / "data" / "autol2_trace.json").read_text())
    return np.asarray(d["train_loss"]), np.asarray(d["train_acc"]), np.asarray(d["step"])


@pytest.mark.parametrize("lam0", [0.1, 0.02, 0.5])
def test_reference_rule_on_a_recorded_trace(lam0):
    loss, acc, step = _trace()
    assert np.all(np.diff(step) == 10)
    steps = 10 * len(loss)
    with x64():
        lams, state, _ = _drive(loss, acc, lr=0.1, steps=steps, init_lam=lam0, dtype=jnp.float64, rule="reference")
    ref = _reference_code(list(loss), list(acc), steps, lam0)
    assert _decay_steps(lams) == _decay_steps(ref)
    np.testing.assert_allclose(lams, ref, rtol=1e-12)
    assert len(_decay_steps(ref)) >= 2  # the trace does exercise the rule
    assert int(state.n_decays) == len(_decay_steps(ref))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_reference_rule_on_random_sequences(seed):
    rng = np.random.default_rng(seed)
    n = 80
    loss = np.round(np.maximum.accumulate(rng.random(n))[::-1] + 0.2 * rng.random(n), 1)  # ties happen
    acc = np.round(rng.random(n), 1)
    lam0 = float(rng.choice([0.05, 0.2, 1.0]))
    with x64():
        lams, _, _ = _drive(loss, acc, lr=0.3, steps=n * 10, init_lam=lam0, dtype=jnp.float64, rule="reference")
    ref = _reference_code(list(loss), list(acc), n * 10, lam0)
    assert _decay_steps(lams) == _decay_steps(ref) and len(_decay_steps(ref)) >= 1


def test_reference_and_widelimit_rules_differ_where_documented():
    """Hand-worked: lam0 = 0.1 (L2 = 0.05, refractory i > 2 + i_last steps), lr = 1/64 (exact in binary).
    m0 (step 0) 1.0/0.1, m1 (10) 0.8/0.2: running min/max = m0 (loss 1.0, acc 0.1) after m1.
    m2 (20) 0.9/0.2: last two losses 0.8, 0.9 < 1.0 and accs 0.2, 0.2 > 0.1 -> no decay; min/max <- m1 (0.8/0.2).
    m3 (30) 0.85/0.15: losses 0.9, 0.85 >= 0.8 -> decay at 30 (i = 30 > 2). Then refractory is 20 steps
    (L2 = 0.005): m4 (40) fails the step test (40 > 50 is false), m5 (50): 50 > 50 false, m6 (60) decays.
    The widelimit rule measures the refractory period in physical time: 0.1/lam = 1 needs 64 steps at
    lr = 1/64, so its first decay is at the measurement at step 70."""
    loss = [1.0, 0.8, 0.9, 0.85] + [0.9] * 16
    acc = [0.1, 0.2, 0.2, 0.15] + [0.1] * 16
    lams, _, _ = _drive(loss, acc, lr=1 / 64, steps=200, rule="reference")
    assert _decay_steps(lams)[:2] == [30, 60]
    lams_w, _, _ = _drive(loss, acc, lr=1 / 64, steps=200)
    assert _decay_steps(lams_w)[0] == 70
