"""Tests of widelimit.evidence: intervals over seeds, the one power-law fit, verdicts and the claims table."""
from __future__ import annotations

import numpy as np
import pytest

from widelimit.evidence import (Claim, Interval, PowerLaw, bootstrap_interval, bootstrap_seeds, claims_markdown,
                                fit_power_law, judge, result_from_dict, verdict_counts)
from widelimit.validity import Verdict


def test_bootstrap_seeds_covers_the_true_mean_at_its_level():
    """Coverage of the 90% interval of a seed mean over many independent experiments (8 seeds each)."""
    rng = np.random.default_rng(1)
    hits = 0
    trials = 150
    for k in range(trials):
        x = rng.normal(2.0, 0.5, size=(8, 3))
        iv = bootstrap_seeds(x, lambda a: a[:, 0].mean(), n_resamples=400, seed=k)
        hits += iv.low <= 2.0 <= iv.high
    # BCa with 8 samples under-covers a little; far from 90% would mean a broken resampling
    assert 0.75 <= hits / trials <= 0.97


def test_bootstrap_seeds_resamples_seeds_jointly():
    """A statistic of two arrays from the same seeds keeps their correlation: the difference of two
    perfectly correlated quantities has a zero-width interval, unlike independent resampling would give."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(10, 4))
    iv = bootstrap_seeds((a, a + 1.0), lambda t: float(np.mean(t[1] - t[0])))
    assert iv.estimate == pytest.approx(1.0) and iv.high - iv.low < 1e-12
    wide = bootstrap_seeds(a, lambda x: float(x.mean()))
    assert wide.high - wide.low > 0.1


def test_bootstrap_seeds_rejects_bad_input():
    with pytest.raises(ValueError, match="per_seed"):
        bootstrap_seeds(np.ones((1, 3)), np.mean)
    with pytest.raises(ValueError, match="per_seed"):
        bootstrap_seeds((np.ones((3, 2)), np.ones((4, 2))), lambda t: 0.0)
    with pytest.raises(ValueError, match="statistic"):
        bootstrap_seeds(np.ones((3, 2)), lambda x: float("nan"))
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap_interval([1.0, np.inf])


def test_fit_power_law_exact_and_filtered():
    x = np.geomspace(1e-3, 1e-1, 7)
    f = fit_power_law(x, 0.28 / x)
    assert isinstance(f, PowerLaw) and f.slope == pytest.approx(-1.0, abs=1e-12)
    assert f.prefactor == pytest.approx(0.28, rel=1e-10) and f.n_points == 7
    assert f(2.0) == pytest.approx(0.14)
    g = fit_power_law(np.r_[x, 1.0, 2.0], np.r_[3 * x ** 0.5, np.nan, -1.0])
    assert g.slope == pytest.approx(0.5, abs=1e-12) and g.n_points == 7
    with pytest.raises(ValueError, match="two distinct"):
        fit_power_law([1.0, 1.0], [1.0, 2.0])
    assert np.isnan(fit_power_law([1.0], [1.0], strict=False).slope)


def test_judge_bands_and_verdicts():
    c = Claim("t*", "t* [η·steps]", predicted=10.0, tolerance=0.1)
    assert judge(c, Interval(10.0, 9.5, 10.5, 0.9, 8, "x")).verdict is Verdict.HOLDS
    assert judge(c, Interval(12.0, 11.5, 12.5, 0.9, 8, "x")).verdict is Verdict.FAILS
    assert judge(c, Interval(10.8, 10.5, 11.5, 0.9, 8, "x")).verdict is Verdict.INCONCLUSIVE
    neg = Claim("slope", "d log t*/d log λ", predicted=-1.0, tolerance=0.1, relative=False)
    assert judge(neg, Interval(-0.95, -1.05, -0.92, 0.9, 8, "x")).verdict is Verdict.HOLDS
    assert judge(neg, Interval(-1.3, -1.4, -1.2, 0.9, 8, "x")).verdict is Verdict.FAILS
    with pytest.raises(ValueError, match="predicted"):
        Claim("x", "y", predicted=float("nan"), tolerance=0.1)


def test_claims_table_lists_failures_first_and_driven_apart():
    iv_ok, iv_bad = Interval(1.0, 0.99, 1.01, 0.9, 8, "x"), Interval(2.0, 1.9, 2.1, 0.9, 8, "x")
    res = [judge(Claim("good", "q", 1.0, 0.1, study="s", size="quick"), iv_ok),
           judge(Claim("bad", "q", 1.0, 0.1, study="s", size="quick"), iv_bad),
           judge(Claim("rule", "q", 1.0, 0.1, driven=True, study="s", size="quick"), iv_bad)]
    md = claims_markdown(res)
    assert md.index("| **fails** | bad") < md.index("| holds | good") < md.index("Driven claims") < md.index("rule")
    assert verdict_counts(res) == {"fails": 1, "inconclusive": 0, "holds": 1}
    back = [result_from_dict(r.to_dict()) for r in res]
    assert back == res
