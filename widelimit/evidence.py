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

Further pieces (all used by the studies; the API is stable):

* :func:`bootstrap_seeds` — interval of any statistic of per-seed *arrays* (e.g. t* of the seed-averaged
  loss curve, or a fitted slope over several λ): seeds are resampled jointly, so correlations between the
  values computed from the same seed are kept;
* :func:`fit_power_law` — the one least-squares fit ``log y = slope · log x + log prefactor``
  (:class:`PowerLaw`); the interval of a slope comes from :func:`bootstrap_seeds` over it;
* :func:`claims_markdown` — the claims table (failures first, driven claims in their own table);
  :func:`verdict_counts`; ``ClaimResult.to_dict`` / :func:`result_from_dict` for JSON storage.

Example::

    iv = bootstrap_seeds(test_loss, lambda x: t_star(time, x.mean(0)))     # test_loss (n_seeds, n_logs)
    res = judge(Claim("t* at λ=0.01", "t* [η·steps]", predicted=28.5, tolerance=0.1), iv)
    res.verdict is Verdict.HOLDS
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from .validity import Verdict

__all__ = ["Interval", "Claim", "ClaimResult", "PowerLaw", "bootstrap_interval", "bootstrap_seeds", "judge",
           "fit_power_law", "claims_markdown", "verdict_counts", "result_from_dict", "VERDICT_ORDER"]


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

    @classmethod
    def from_dict(cls, d: dict) -> "Interval":
        return cls(float(d["estimate"]), float(d["low"]), float(d["high"]), float(d["level"]), int(d["n"]),
                   str(d["method"]))


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


#: order in which verdicts are listed: failures first, so they are as visible as successes
VERDICT_ORDER = (Verdict.FAILS, Verdict.INCONCLUSIVE, Verdict.HOLDS)


def result_from_dict(d: dict) -> ClaimResult:
    """Inverse of :meth:`ClaimResult.to_dict` (for claims stored in a study's JSON)."""
    pi = d.get("predicted_interval")
    claim = Claim(name=d["name"], quantity=d["quantity"], predicted=float(d["predicted"]),
                  tolerance=float(d["tolerance"]), relative=bool(d["relative"]), driven=bool(d["driven"]),
                  study=d.get("study", ""), size=d.get("size", ""),
                  predicted_interval=None if pi is None else (float(pi[0]), float(pi[1])), note=d.get("note", ""))
    return ClaimResult(claim, Interval.from_dict(d["measured"]), Verdict(d["verdict"]),
                       (float(d["band"][0]), float(d["band"][1])))


def bootstrap_seeds(per_seed, statistic: Callable[[np.ndarray], float], *, level: float = 0.9,
                    n_resamples: int = 2000, seed: int = 0) -> Interval:
    """Bootstrap interval of ``statistic(per_seed)`` where axis 0 of ``per_seed`` indexes independent seeds.

    ``per_seed`` is an array (n_seeds, ...) or a tuple of such arrays sharing axis 0 (then ``statistic``
    receives the tuple, each member resampled with the same seeds). The seeds are resampled with
    replacement (``scipy.stats.bootstrap`` on the seed indices; BCa, percentile where BCa is undefined), so
    a statistic of several quantities computed from the same seeds (a slope over λ) keeps their correlation.
    ``estimate`` is the statistic of all seeds. A statistic that is undefined (non-finite) on all seeds is a
    ValueError; resamples on which it is undefined make the interval fall back to percentiles of the finite
    resamples (``method`` says ``percentile (k undefined)``).
    """
    from scipy import stats

    arrays = per_seed if isinstance(per_seed, tuple) else (per_seed,)
    arrays = tuple(np.asarray(a, dtype=float) for a in arrays)
    n = arrays[0].shape[0] if arrays[0].ndim else 0
    if n < 2 or any(a.ndim == 0 or a.shape[0] != n for a in arrays):
        raise ValueError(f"per_seed: need >= 2 seeds on axis 0 of every array, got shapes "
                         f"{[a.shape for a in arrays]}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: must lie in (0, 1), got {level}")

    def stat_idx(idx):
        sel = tuple(a[np.asarray(idx, dtype=int)] for a in arrays)
        return float(statistic(sel if isinstance(per_seed, tuple) else sel[0]))

    est = stat_idx(np.arange(n))
    if not np.isfinite(est):
        raise ValueError("statistic: undefined (non-finite) on the full set of seeds")
    idx = np.arange(n, dtype=float)
    rng = np.random.default_rng(seed)
    import warnings
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")   # BCa undefined (degenerate resamples): handled below
        res = stats.bootstrap((idx,), stat_idx, confidence_level=level, n_resamples=n_resamples, method="BCa",
                              random_state=rng, vectorized=False)
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        method = "BCa over seeds"
        if not (np.isfinite(lo) and np.isfinite(hi)):
            dist = np.asarray(res.bootstrap_distribution, dtype=float)
            fin = dist[np.isfinite(dist)]
            bad = int(dist.size - fin.size)
            if fin.size == 0 or np.ptp(fin) == 0.0 and bad == 0:
                return Interval(est, est, est, level, n, "degenerate")
            a = (1 - level) / 2
            lo, hi = (float(v) for v in np.quantile(fin, [a, 1 - a]))
            method = "percentile over seeds" + (f" ({bad} of {dist.size} resamples undefined)" if bad else "")
    return Interval(est, min(lo, est), max(hi, est), level, n, method)


@dataclass(frozen=True)
class PowerLaw:
    """Least-squares power law ``y ≈ prefactor · x^slope`` fitted in log–log over ``n_points`` pairs."""

    slope: float
    prefactor: float
    n_points: int

    def __call__(self, x):
        return self.prefactor * np.asarray(x, dtype=float) ** self.slope


def fit_power_law(x, y, *, strict: bool = True) -> PowerLaw:
    """The one power-law fit of the project: ``log y = slope · log x + log prefactor`` by least squares over
    the pairs with finite, positive x and y. Fewer than two distinct such x: ValueError (``strict``) or a
    :class:`PowerLaw` of NaNs. For an interval, bootstrap it over seeds with :func:`bootstrap_seeds`."""
    try:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise TypeError(f"x, y: must be arrays of numbers ({e})") from None
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if len(np.unique(x[ok])) < 2:
        if strict:
            raise ValueError("fit_power_law needs at least two distinct positive finite x with positive finite y")
        return PowerLaw(float("nan"), float("nan"), int(ok.sum()))
    slope, icpt = np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)
    return PowerLaw(float(slope), float(np.exp(icpt)), int(ok.sum()))


def verdict_counts(results: Sequence[ClaimResult]) -> dict:
    """``{verdict value: count}`` over ``results`` (driven claims excluded: they are not headline evidence)."""
    out = {v.value: 0 for v in VERDICT_ORDER}
    for r in results:
        if not r.claim.driven:
            out[r.verdict.value] += 1
    return out


def _num(v: float) -> str:
    return f"{v:.4g}"


def _row(r: ClaimResult, with_study: bool) -> str:
    c, m = r.claim, r.measured
    pred = _num(c.predicted) + (f" [{_num(c.predicted_interval[0])}, {_num(c.predicted_interval[1])}]"
                                if c.predicted_interval else "")
    tol = f"±{c.tolerance:.0%}" if c.relative else f"±{_num(c.tolerance)}"
    meas = f"{_num(m.estimate)} [{_num(m.low)}, {_num(m.high)}]"
    cells = [f"**{r.verdict.value}**" if r.verdict is not Verdict.HOLDS else r.verdict.value, c.name, c.quantity,
             pred, tol, meas, str(m.n)]
    if with_study:
        cells += [c.study, c.size]
    cells.append(c.note)
    return "| " + " | ".join(s.replace("|", "\\|") for s in cells) + " |"


def claims_markdown(results: Sequence[ClaimResult], *, with_study: bool = True, level_note: bool = True) -> str:
    """Markdown claims table: verdict, claim, quantity, predicted, tolerance, measured estimate [CI], seeds,
    (study, size), note. Failures first, then inconclusive, then holds; claims whose prediction is driven
    by a measured quantity follow in a separate table (not headline evidence)."""
    head = ["verdict", "claim", "quantity", "predicted", "tolerance", "measured [CI]", "seeds"] + \
        (["study", "size"] if with_study else []) + ["note"]
    order = {v: k for k, v in enumerate(VERDICT_ORDER)}
    lines: list = []
    for driven in (False, True):
        rows = sorted((r for r in results if r.claim.driven == driven), key=lambda r: order[r.verdict])
        if not rows:
            continue
        if driven:
            lines += ["", "Driven claims (the prediction uses a measured input; not headline evidence):", ""]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += [_row(r, with_study) for r in rows]
    if not lines:
        return "No claims were judged."
    if level_note:
        levels = sorted({f"{r.measured.level:.0%}" for r in results})
        lines += ["", f"Measured: estimate from all seeds, [{'/'.join(levels)} bootstrap interval over seeds]. "
                  "Verdict: holds = interval inside predicted·(1 ± tolerance); fails = no overlap; "
                  "inconclusive = straddles the band edge (docs/theory.md §8)."]
    return "\n".join(lines)
