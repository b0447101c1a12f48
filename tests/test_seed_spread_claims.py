"""The studies' predicted n-seed intervals (widelimit/studies/seed_spread.py, docs/theory.md §3.5)."""
from __future__ import annotations

import numpy as np
import pytest

from widelimit.arch import MLP
from widelimit.data import load_dataset
from widelimit.predict import loss_spread, t_star_spread
from widelimit.studies.ntk_tools import TheoryCurves, dataset_kernels
from widelimit.studies.seed_spread import spread_model, full_test_nngp, tstar_and_min_spread


@pytest.fixture(scope="module")
def model():
    spec = MLP(depth=3, width=32, out_dim=1)
    ds = load_dataset("digits", classes=[3, 8], targets="pm1", n_train=30, n_test=40, seed=0)
    dk = dataset_kernels(spec, ds)
    kxx = full_test_nngp(spec, ds)
    assert kxx.shape == (40, 40) and np.allclose(np.diag(kxx), dk.nngp_test_test)
    return dk, spread_model(dk, kxx)


def test_tstar_interval_is_that_of_predict_t_star_spread(model):
    """Same draws, groups and grid as widelimit.predict.t_star_spread: the same quantiles."""
    _, sm = model
    lams = [0.1, 0.03]
    t_iv, _ = tstar_and_min_spread(sm, lams, seeds=2, draws=300, groups=500, n_grid=60, seed=3)
    ref = t_star_spread(sm, lams, seeds=2, draws=300, groups=500, n_grid=60, seed=3)
    for i in range(2):
        assert t_iv[i] == pytest.approx(ref.interval(i), rel=1e-12)


def test_min_loss_interval_against_exact_loss_distribution_at_t_star(model):
    """The minimum over t of the n-seed curve lies below its value at the fixed time t* of the expected
    curve, and close to it: its quantiles against the exact generalised chi-square of loss_spread at t*."""
    dk, sm = model
    lam, n = 0.1, 4
    t_best = TheoryCurves(dk).t_star(lam)[0]
    _, m_iv = tstar_and_min_spread(sm, [lam], seeds=n, draws=2000, groups=4000, n_grid=120)
    exact = loss_spread(sm, lam, [t_best], seeds=n, samples=20000)
    lo, hi = m_iv[0]
    assert lo < hi
    assert lo <= exact.low[0] * 1.02 and hi <= exact.high[0] * 1.02
    assert lo >= 0.85 * exact.low[0] and hi >= 0.85 * exact.high[0]


def test_interval_narrows_with_seeds(model):
    """Var of the n-seed mean ~ 1/n: the 80% t* interval for 16 seeds is much narrower than for 1."""
    _, sm = model
    (a,), _ = tstar_and_min_spread(sm, [0.1], seeds=1, draws=300, groups=500)
    (b,), _ = tstar_and_min_spread(sm, [0.1], seeds=16, draws=300, groups=500)
    assert (b[1] - b[0]) < 0.5 * (a[1] - a[0])


def test_bad_input(model):
    _, sm = model
    with pytest.raises(ValueError, match="seeds"):
        tstar_and_min_spread(sm, [0.1], seeds=0)
    with pytest.raises(ValueError, match="weight_decays"):
        tstar_and_min_spread(sm, [-1.0], seeds=2)
    with pytest.raises(TypeError, match="model"):
        tstar_and_min_spread(object(), [0.1], seeds=2)
