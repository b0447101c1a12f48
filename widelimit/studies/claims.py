"""Measured quantities of the NTK studies as bootstrap intervals over seeds (docs/theory.md §8).

The theory predicts the *seed-averaged* test loss (the loss averaged over the random initial function), so
every measured quantity here is a statistic of the seed-averaged curve, and its interval comes from
resampling whole seeds (:func:`widelimit.evidence.bootstrap_seeds`):

* :func:`tstar_interval` — t* (time of the minimum, parabola in log t) of the seed-mean test-loss curve;
* :func:`min_loss_interval` — the value of that minimum;
* :func:`slope_interval` — slope of log t* against log λ over several λ trained with the same seeds
  (resampled jointly, so the correlation between λ is kept);
* :func:`lambda_opt_interval` — the λ minimising the seed-mean test loss at one step budget (parabola in
  log λ over the grid).

Each returns an :class:`~widelimit.evidence.Interval`; a study pairs it with a
:class:`~widelimit.evidence.Claim` and :func:`~widelimit.evidence.judge`. :func:`judge_all` judges a
list of ``(claim, interval)`` pairs, skipping none: an undefined measurement is reported, not dropped.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from ..evidence import Claim, ClaimResult, Interval, bootstrap_seeds, fit_power_law, judge
from .common import refine_extremum

__all__ = ["tstar_of_mean", "tstar_interval", "min_loss_interval", "slope_interval", "lambda_opt_interval",
           "judge_all"]


def _check(time, loss) -> Tuple[np.ndarray, np.ndarray]:
    t = np.asarray(time, np.float64).reshape(-1)
    x = np.asarray(loss, np.float64)
    if x.ndim != 2 or x.shape[1] != t.size:
        raise ValueError(f"loss must have shape (n_seeds, {t.size}), got {x.shape}")
    return t, x


def tstar_of_mean(time, loss) -> Tuple[float, float, str]:
    """``(t*, loss*, where)`` of the seed-mean of ``loss`` (n_seeds, n_logs) on ``time`` (n_logs,), ``t > 0``."""
    t, x = _check(time, loss)
    keep = t > 0
    return refine_extremum(t[keep], x.mean(axis=0)[keep], log_x=True, kind="min")


def tstar_interval(time, loss, **kw) -> Interval:
    """Interval of t* of the seed-mean curve over seeds (``loss`` (n_seeds, n_logs))."""
    t, x = _check(time, loss)
    return bootstrap_seeds(x, lambda a: tstar_of_mean(t, a)[0], **kw)


def min_loss_interval(time, loss, **kw) -> Interval:
    """Interval of the minimum of the seed-mean curve over seeds."""
    t, x = _check(time, loss)
    return bootstrap_seeds(x, lambda a: tstar_of_mean(t, a)[1], **kw)


def slope_interval(lams: Sequence[float], times: Sequence[np.ndarray], losses: Sequence[np.ndarray],
                   **kw) -> Interval:
    """Interval of the slope of log t* vs log λ, t* of the seed-mean curve at each λ; ``losses[i]``
    (n_seeds, n_logs_i) on ``times[i]``, the same seeds for every λ (resampled jointly)."""
    lams = np.asarray(lams, np.float64)
    if not (lams.size == len(times) == len(losses)) or lams.size < 2:
        raise ValueError("lams, times, losses: need >= 2 λ and one curve per λ")
    checked = [_check(t, x) for t, x in zip(times, losses)]
    n = checked[0][1].shape[0]
    if any(x.shape[0] != n for _, x in checked):
        raise ValueError("losses: every λ needs the same seeds")
    idx = np.arange(n)

    def slope(sel):
        ts = [tstar_of_mean(t, x[sel.astype(int)])[0] for t, x in checked]
        return fit_power_law(lams, ts, strict=False).slope

    return bootstrap_seeds(idx.astype(float), slope, **kw)


def lambda_opt_interval(lams: Sequence[float], loss_at_T, **kw) -> Interval:
    """Interval of the λ minimising the seed-mean test loss at one budget; ``loss_at_T`` (n_lam, n_seeds)."""
    lams = np.asarray(lams, np.float64)
    x = np.asarray(loss_at_T, np.float64)
    if x.ndim != 2 or x.shape[0] != lams.size:
        raise ValueError(f"loss_at_T must have shape ({lams.size}, n_seeds), got {x.shape}")
    return bootstrap_seeds(x.T, lambda a: refine_extremum(lams, a.mean(axis=0), log_x=True, kind="min")[0], **kw)


def judge_all(pairs: Sequence[Tuple[Claim, Interval]]) -> List[ClaimResult]:
    """``[judge(claim, interval) ...]`` in the given order."""
    return [judge(c, iv) for c, iv in pairs]
