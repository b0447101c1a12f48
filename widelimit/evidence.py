"""Claims, intervals and verdicts: how a study states what theory predicts and judges it (docs/theory.md §8).

A :class:`Claim` names one quantity defined identically on the theory and the measurement side, the value
the theory predicts *from hyper-parameters and kernels alone* (``driven=True`` marks a prediction computed
from a measured input; such claims are reported but kept out of headline numbers) and a tolerance band.
A measurement is a set of per-seed values; :func:`bootstrap_interval` turns it into a confidence interval
over seeds (``scipy.stats.bootstrap``), and :func:`judge` gives the verdict from the interval:

* ``HOLDS``        the whole interval lies inside the band,
* ``FAILS``        the interval and the band do not overlap,
* ``INCONCLUSIVE`` otherwise (more seeds would decide).

The band is ``predicted · (1 ± tolerance)`` for ``relative=True`` (default) or ``predicted ± tolerance``;
when the theory itself predicts a spread for the same number of seeds (``predicted_interval``), the band
is that interval widened by the tolerance on each side.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from .validity import Verdict

__all__ = ["Interval", "Claim", "ClaimResult", "bootstrap_interval", "judge"]


@dataclass(frozen=True)
class Interval:
    """A central interval ``[low, high]`` around ``estimate`` at confidence ``level`` from ``n`` samples."""

    estimate: float
    low: float
    high: float
    level: float
    n: int
    method: str

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def to_dict(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "level": self.level,
                "n": self.n, "method": self.method}


def bootstrap_interval(samples: Sequence[float], statistic: Callable[[np.ndarray], float] = np.mean, *,
                       level: float = 0.9, n_resamples: int = 4000, seed: int = 0) -> Interval:
    """Bootstrap confidence interval of ``statistic`` over independent samples (e.g. one value per seed).

    Uses ``scipy.stats.bootstrap`` (BCa; percentile where BCa is undefined, e.g. all samples equal).
    Non-finite samples are rejected: a diverged run must be reported, not silently dropped.
    """
    from scipy import stats

    x = np.asarray(samples, dtype=float).ravel()
    if x.size < 2:
        raise ValueError(f"samples: need at least 2 values for an interval, got {x.size}")
    if not np.all(np.isfinite(x)):
        raise ValueError("samples: contain non-finite values (diverged runs?); handle them explicitly")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: must lie in (0, 1), got {level}")
    est = float(statistic(x))
    if np.ptp(x) == 0.0:
        return Interval(est, est, est, level, int(x.size), "degenerate")
    method = "BCa"
    with np.errstate(all="ignore"):
        res = stats.bootstrap((x,), statistic, confidence_level=level, n_resamples=n_resamples,
                              method="BCa", random_state=np.random.default_rng(seed), vectorized=False)
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            method = "percentile"
            res = stats.bootstrap((x,), statistic, confidence_level=level, n_resamples=n_resamples,
                                  method="percentile", random_state=np.random.default_rng(seed),
                                  vectorized=False)
            lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return Interval(est, lo, hi, level, int(x.size), method)


@dataclass(frozen=True)
class Claim:
    """A falsifiable statement: ``quantity`` (with units) is predicted to be ``predicted``."""

    name: str
    quantity: str
    predicted: float
    tolerance: float
    relative: bool = True
    driven: bool = False
    study: str = ""
    size: str = ""
    predicted_interval: Optional[Tuple[float, float]] = None
    note: str = ""

    def __post_init__(self) -> None:
        if not np.isfinite(self.predicted):
            raise ValueError(f"predicted: claim {self.name!r} has a non-finite prediction {self.predicted}")
        if not (self.tolerance >= 0 and np.isfinite(self.tolerance)):
            raise ValueError(f"tolerance: must be finite and >= 0, got {self.tolerance}")

    def band(self) -> Tuple[float, float]:
        lo, hi = self.predicted_interval if self.predicted_interval is not None else (self.predicted,) * 2
        if self.relative:
            return (min(lo * (1 - self.tolerance), lo * (1 + self.tolerance)),
                    max(hi * (1 - self.tolerance), hi * (1 + self.tolerance)))
        return lo - self.tolerance, hi + self.tolerance


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    measured: Interval
    verdict: Verdict
    band: Tuple[float, float] = field(default=(np.nan, np.nan))

    def to_dict(self) -> dict:
        c = self.claim
        return {"name": c.name, "quantity": c.quantity, "predicted": c.predicted,
                "predicted_interval": list(c.predicted_interval) if c.predicted_interval else None,
                "tolerance": c.tolerance, "relative": c.relative, "driven": c.driven, "study": c.study,
                "size": c.size, "note": c.note, "band": list(self.band), "measured": self.measured.to_dict(),
                "verdict": self.verdict.value}


def judge(claim: Claim, measured: Interval) -> ClaimResult:
    """Verdict of ``claim`` from the measured interval (see the module docstring)."""
    lo, hi = claim.band()
    if lo <= measured.low and measured.high <= hi:
        v = Verdict.HOLDS
    elif measured.high < lo or measured.low > hi:
        v = Verdict.FAILS
    else:
        v = Verdict.INCONCLUSIVE
    return ClaimResult(claim, measured, v, (lo, hi))
