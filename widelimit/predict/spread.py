"""What the theory predicts for an average over n seeds, not only for infinitely many (docs/theory.md §3.5).

A finite-seed measurement averages the test MSE over ``n`` initial functions; the theory knows their
distribution (f0 ~ NNGP, the dynamics linear in f0), so it predicts the distribution of the n-seed value:

* :func:`loss_spread` -- the n-seed average test MSE at ``(weight_decay, t)``: exact mean and variance
  (``Var / n``), and central intervals from its exact distribution, a generalised chi-square
  ``(1/n) sum_i w_i chi'^2_{nK}(n nc_i) + rest`` (:meth:`LossSpread.chi_square_terms`), whose quantiles are
  taken from ``samples`` draws of that sum (cost O(samples * M), independent of N);
* :func:`t_star_spread` -- t* of the n-seed average curve, per weight decay;
* :func:`lambda_opt_spread` -- lambda_opt of the n-seed average loss after each budget.

The last two have no closed form: ``draws`` initial functions are sampled ONCE from the prior and pushed
through the closed-form (linear in f0) dynamics for every weight decay and time
(:meth:`~widelimit.dynamics.spread.LossSpread.sample_test_loss`, the same draws for every weight decay, as
a study shares its seeds across weight decays); ``groups`` n-seed averages are formed by picking ``n``
draws with replacement from that pool (the bootstrap distribution of an n-mean, accurate to
O(1/sqrt(draws)) in its quantiles; default ``draws = max(1000, 16 n)``), and each group's curve is
reduced exactly as :func:`~widelimit.predict.t_star` / :func:`~widelimit.predict.lambda_opt` reduce the
expected curve (grid minimum refined by a parabola in log t / log lam through its neighbours). Cost
O(draws * P * T * M * N * K) for the curves plus O(groups * draws * P * T) for the averages.

Intervals are central: ``[q((1 - level)/2), q((1 + level)/2)]`` of the predicted distribution.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, Mapping, Optional

import numpy as np

from ..dynamics.spread import LossSpread
from ..validity import Validity
from .models import unstable

_UNITS = {"t_star": "η·steps", "test_loss": "MSE", "weight_decay_opt": "1/(η·steps)"}


@dataclass(frozen=True, eq=False)
class SeedSpread:
    """Predicted distribution of a quantity measured as an average over ``seeds`` initial functions.

    Fields (arrays of shape (P,) over the rows -- weight decays for t* and the loss, budgets for lambda_opt):
      quantity: ``"t_star"`` (η·steps), ``"test_loss"`` (MSE) or ``"weight_decay_opt"`` (1/(η·steps)).
      rows: the weight decays (t*, loss) or budget times η·T (lambda_opt) of the rows.
      t: the time of each row (η·steps; NaN for t*, where t is the result).
      seeds: n, the number of seeds averaged; level: the central probability of ``[low, high]``.
      low, high: the predicted central interval of the n-seed value; median: its median.
      mean: its mean (exact for the loss; sample mean otherwise); std: its standard deviation.
      infinite_seeds: the same quantity of the expected (infinite-seed) curve on the same grid.
      grid_edge: per row, the fraction of n-seed averages whose optimum sat at an end of the grid (the
        interval is then only a bound there); 0 for the loss.
      validity: per row (UNSTABLE for GD outside its stable range: NaN everywhere; GRID_EDGE when more than
        ``1 - level`` of the averages sit at the grid edge; else OK).
      samples: the n-seed values behind the quantiles, (groups, P) (None for the loss).
      method: how the quantiles were obtained; model: the model's label.
    """

    quantity: str
    rows: np.ndarray
    t: np.ndarray
    seeds: int
    level: float
    low: np.ndarray
    high: np.ndarray
    median: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    infinite_seeds: np.ndarray
    grid_edge: np.ndarray
    validity: tuple
    samples: Optional[np.ndarray]
    method: str
    model: str = ""
    units: ClassVar[Mapping[str, str]] = MappingProxyType(dict(_UNITS))

    def interval(self, i: int = 0) -> tuple:
        """``(low, high)`` of row ``i`` (for :class:`widelimit.evidence.Claim` ``predicted_interval``)."""
        return float(self.low[i]), float(self.high[i])


def _check_seeds(seeds) -> int:
    if isinstance(seeds, bool) or not isinstance(seeds, numbers.Integral) or seeds < 1:
        raise ValueError(f"seeds must be an int >= 1 (number of seeds averaged), got {seeds!r}")
    return int(seeds)


def _check_level(level) -> float:
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    return float(level)


def _check_spread_model(model) -> LossSpread:
    if not isinstance(model, LossSpread):
        raise TypeError(f"model must be a widelimit.dynamics.LossSpread (the distribution over f0 ~ NNGP), got "
                        f"{type(model).__name__}; build it with spread_model(kernels) or "
                        "LossSpread.from_kernels(kernels, nngp_test_test=...)")
    return model


def spread_model(kernels, *, learning_rate: Optional[float] = None, nngp_test_test=None,
                 L: Optional[int] = None) -> LossSpread:
    """The spread model of a :class:`widelimit.kernels.DataKernels` (flow, or GD at ``learning_rate``);
    ``nngp_test_test`` (M, M) when the kernels hold only its diagonal."""
    return LossSpread.from_kernels(kernels, nngp_test_test=nngp_test_test, learning_rate=learning_rate, L=L)


def _quantiles(x: np.ndarray, level: float, axis: int = 0):
    a = (1.0 - level) / 2.0
    lo, med, hi = np.nanquantile(x, [a, 0.5, 1.0 - a], axis=axis)
    return lo, med, hi


def loss_spread(model, weight_decay: float, t, *, seeds: int, level: float = 0.8, samples: int = 20000,
                seed: int = 0) -> SeedSpread:
    """Predicted distribution of the ``seeds``-seed average test MSE at ``weight_decay`` and times ``t``
    (η·steps, 1-D): exact mean and standard deviation, quantiles from ``samples`` draws of its exact
    generalised chi-square distribution (module docstring)."""
    m = _check_spread_model(model)
    n, level = _check_seeds(seeds), _check_level(level)
    if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or samples < 100:
        raise ValueError(f"samples must be an int >= 100, got {samples!r}")
    t = np.atleast_1d(np.asarray(t, dtype=np.float64)).reshape(-1)
    lam = float(weight_decay)
    if unstable(m, m.learning_rate, lam):
        nan = np.full(t.size, np.nan)
        return SeedSpread("test_loss", np.full(t.size, lam), t, n, level, nan, nan, nan, nan, nan, nan,
                          np.zeros(t.size), (Validity.UNSTABLE,) * t.size, None, "unstable", m.label)
    mean = m.test_loss(lam, t)
    std = np.sqrt(m.test_loss_variance(lam, t) / n)
    k = m.y_test.reshape(m.n_test, -1).shape[1]
    scale = 1.0 / (2 * m.n_test * k)
    rng = np.random.default_rng(seed)
    lo, med, hi = (np.empty(t.size) for _ in range(3))
    for i, ti in enumerate(t):
        w, nc, rest = m.chi_square_terms(lam, float(ti), "test")
        draw = np.full(int(samples), rest)
        for wi, ci in zip(w, nc):
            draw += (wi / n) * rng.noncentral_chisquare(n * k, n * ci, int(samples)) if ci > 0 else \
                (wi / n) * rng.chisquare(n * k, int(samples))
        lo[i], med[i], hi[i] = _quantiles(draw * scale, level)
    return SeedSpread("test_loss", np.full(t.size, lam), t, n, level, lo, hi, med, mean, std, mean,
                      np.zeros(t.size), (Validity.OK,) * t.size, None,
                      f"exact generalised chi-square, quantiles from {samples} draws", m.label)


def _group_weights(draws: int, seeds: int, groups: int, rng) -> np.ndarray:
    """(groups, draws) averaging matrix: each row picks ``seeds`` draws with replacement, weight 1/seeds each."""
    idx = rng.integers(0, draws, size=(groups, seeds))
    w = np.zeros((groups, draws))
    np.add.at(w, (np.repeat(np.arange(groups), seeds), idx.reshape(-1)), 1.0 / seeds)
    return w


def _draws_and_groups(m: LossSpread, draws: int, seeds: int, groups: int, seed: int):
    """Prior draws (:meth:`LossSpread.prior_draws`) and the group averaging matrix, from independent streams
    of ``seed``."""
    s_z, s_g = np.random.SeedSequence(seed).generate_state(2)
    return m.prior_draws(draws, int(s_z)), _group_weights(draws, seeds, groups, np.random.default_rng(s_g))


def _argmin_refined(x: np.ndarray, curves: np.ndarray):
    """Per row of ``curves`` (G, X) on the grid ``x`` (X,): the minimiser refined by a parabola in log x
    through the grid minimum and its neighbours, and whether the grid minimum sat at an end."""
    j = np.argmin(curves, axis=1)
    edge = (j == 0) | (j == x.size - 1)
    u = np.log(x)
    out = x[j].astype(np.float64).copy()
    inner = ~edge
    if np.any(inner):
        jj = j[inner]
        rows = np.nonzero(inner)[0]
        u0, u1, u2 = u[jj - 1], u[jj], u[jj + 1]
        y0, y1, y2 = curves[rows, jj - 1], curves[rows, jj], curves[rows, jj + 1]
        den = (u0 - u1) * (u0 - u2) * (u1 - u2)
        a = (u2 * (y1 - y0) + u1 * (y0 - y2) + u0 * (y2 - y1))
        b = (u2 ** 2 * (y0 - y1) + u1 ** 2 * (y2 - y0) + u0 ** 2 * (y1 - y2))
        with np.errstate(divide="ignore", invalid="ignore"):
            vert = np.where((a / den) > 0, -b / (2 * a), u1)
        out[rows] = np.exp(np.clip(vert, u0, u2))
    return out, edge


def _setup(model, seeds, level, draws, groups):
    m = _check_spread_model(model)
    n, level = _check_seeds(seeds), _check_level(level)
    draws = max(1000, 16 * n) if draws is None else draws
    for name, v in (("draws", draws), ("groups", groups)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 2:
            raise ValueError(f"{name} must be an int >= 2, got {v!r}")
    return m, n, level, int(draws), int(groups)


def _summarise(quantity, rows, t, n, level, vals, edge, inf_vals, bad, method, label):
    lo, med, hi = _quantiles(vals, level)
    frac = edge.mean(axis=0)
    flags = tuple(Validity.UNSTABLE if b else (Validity.GRID_EDGE if f > 1.0 - level else Validity.OK)
                  for b, f in zip(bad, frac))
    return SeedSpread(quantity, rows, t, n, level, lo, hi, med, np.nanmean(vals, 0), np.nanstd(vals, 0),
                      inf_vals, frac, flags, vals, method, label)


def t_star_spread(model, weight_decays, *, seeds: int, level: float = 0.8, draws: Optional[int] = None,
                  groups: int = 2000, seed: int = 0, s_range: tuple = (1e-3, 1e2), n_grid: int = 120) -> SeedSpread:
    """Predicted distribution of t* (η·steps) of the ``seeds``-seed average test-MSE curve, per weight decay.

    The curve is evaluated on ``t = s / lam`` with ``n_grid`` log-spaced ``s`` in ``s_range`` (for GD: the
    distinct step counts ``>= 1`` of that grid); every weight decay uses the same prior draws. Returns a
    :class:`SeedSpread` (``infinite_seeds``: t* of the expected curve on the same grid)."""
    m, n, level, draws, groups = _setup(model, seeds, level, draws, groups)
    lams = np.atleast_1d(np.asarray(weight_decays, dtype=np.float64)).reshape(-1)
    if lams.size == 0 or not np.all(np.isfinite(lams)) or np.any(lams <= 0):
        raise ValueError(f"weight_decays must be finite and > 0, got {weight_decays!r}")
    lo_s, hi_s = s_range
    if not (0 < lo_s < hi_s < np.inf) or int(n_grid) < 3:
        raise ValueError(f"s_range must be (lo, hi) with 0 < lo < hi and n_grid >= 3, got {s_range}, {n_grid}")
    z, w = _draws_and_groups(m, draws, n, groups, seed)
    s = np.geomspace(lo_s, hi_s, int(n_grid))
    gd = m.learning_rate
    vals, edge = np.full((groups, lams.size), np.nan), np.zeros((groups, lams.size), bool)
    inf_vals, bad = np.full(lams.size, np.nan), []
    for p, lam in enumerate(lams):
        bad.append(unstable(m, gd, float(lam)))
        if bad[-1]:
            continue
        t = s / lam
        if gd is not None:
            t = np.unique(np.maximum(np.rint(t / gd), 1.0)) * gd
        per_draw = m.sample_test_loss([lam], t, z=z)[:, 0]             # (draws, T)
        vals[:, p], edge[:, p] = _argmin_refined(t, w @ per_draw)
        inf_vals[p] = _argmin_refined(t, m.test_loss(float(lam), t)[None])[0][0]
    return _summarise("t_star", lams, np.full(lams.size, np.nan), n, level, vals, edge, inf_vals, bad,
                      f"{draws} prior draws, {groups} groups of {n} (with replacement)", m.label)


def lambda_opt_spread(model, *, steps, learning_rate: Optional[float] = None, seeds: int, level: float = 0.8,
                      weight_decays=None, draws: Optional[int] = None, groups: int = 2000, seed: int = 0,
                      points_per_decade: int = 12, s_range: tuple = (1e-3, 1e2)) -> SeedSpread:
    """Predicted distribution of lambda_opt (1/(η·steps)) of the ``seeds``-seed average test MSE after each
    budget of ``steps`` (time ``eta * steps``; ``learning_rate``: a flow model's eta, default 1, a GD model
    uses its own). The grid is ``weight_decays`` or log-spaced with ``points_per_decade`` over
    ``lam * eta T`` in ``s_range`` (GD: capped below 1/eta); all budgets and weight decays share the draws."""
    m, n, level, draws, groups = _setup(model, seeds, level, draws, groups)
    gd = m.learning_rate
    if gd is not None and learning_rate is not None and not math.isclose(float(learning_rate), gd, rel_tol=1e-12):
        raise ValueError(f"learning_rate={learning_rate} differs from the model's own learning_rate={gd}")
    eta = gd if gd is not None else (1.0 if learning_rate is None else float(learning_rate))
    if not eta > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    steps_a = np.atleast_1d(np.asarray(steps, dtype=np.float64)).reshape(-1)
    if steps_a.size == 0 or not np.all(np.isfinite(steps_a)) or np.any(steps_a <= 0):
        raise ValueError(f"steps must be budgets > 0, got {steps!r}")
    time = eta * steps_a
    if weight_decays is None:
        lo, hi = s_range[0] / time.max(), s_range[1] / time.min()
        if gd is not None:
            hi = min(hi, (1.0 - 1e-9) / gd)
        grid = np.geomspace(lo, hi, max(3, int(math.ceil(points_per_decade * math.log10(hi / lo))) + 1))
    else:
        grid = np.sort(np.asarray(weight_decays, dtype=np.float64).reshape(-1))
        if grid.size < 3 or np.any(grid <= 0):
            raise ValueError("weight_decays must hold at least 3 values > 0")
    if gd is not None:
        grid = grid[[not unstable(m, gd, float(x)) for x in grid]]
    bad_all = (gd is not None and gd * m.mu_max >= 2.0) or grid.size < 3
    z, w = _draws_and_groups(m, draws, n, groups, seed)
    vals, edge = np.full((groups, time.size), np.nan), np.zeros((groups, time.size), bool)
    inf_vals = np.full(time.size, np.nan)
    if not bad_all:
        per_draw = m.sample_test_loss(grid, time, z=z)                  # (draws, G, B)
        for b in range(time.size):
            vals[:, b], edge[:, b] = _argmin_refined(grid, w @ per_draw[:, :, b])
        expected = np.asarray(m.test_loss_grid(grid, time))              # (G, B)
        inf_vals = _argmin_refined(grid, expected.T)[0]

    return _summarise("weight_decay_opt", time, time, n, level, vals, edge, inf_vals, [bad_all] * time.size,
                      f"{draws} prior draws, {groups} groups of {n} (with replacement); grid of {grid.size} λ",
                      m.label)


__all__ = ["SeedSpread", "spread_model", "loss_spread", "t_star_spread", "lambda_opt_spread"]
