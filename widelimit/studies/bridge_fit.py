r"""The bridge between the norm dynamics and the best weight decay for a budget (docs/theory.md §6).

**Prediction.** For a scale-invariant group the norm relaxes to its equilibrium in
``tau(opt, eta, lam)`` steps (``equilibrium(...).relaxation_steps``: SGD ``1/(4 eta lam)``, heavy ball
``(1 - mu)/(4 eta lam)``, AdamW ``1/(2 eta lam)``). The hypothesis: the best weight decay for a budget of
``T`` steps (constant learning rate) sets that time to a fixed fraction of the budget,

    tau(opt, eta, lam_opt(T)) = r T,

with one dimensionless ``r`` for every budget, optimiser and network. ``r`` is fitted once (one budget, one
optimiser: :func:`fit_fraction`, a *driven* number) and then *predicts* ``lam_opt`` everywhere else
(:func:`lambda_for_relaxation`). Because ``tau`` depends on the optimiser at equal ``eta lam`` (heavy ball is
``(1 - mu)`` times SGD's, AdamW twice SGD's), the predicted ``eta lam_opt`` differs between optimisers by
those factors; the naive alternative "``eta lam_opt`` is universal" (:func:`naive_lambda`) does not.

**Measurement.** One run per (lam, seed) at constant learning rate: the run of budget ``T`` is the first
``T`` steps of a longer run, so every budget comes from the same runs. The test loss *at budget* ``T`` is the
mean of the logged test losses with step in ``[(1 - window) T, T]`` (minibatch noise; ``window = 0.1``);
``lam_opt(T)`` minimises the seed mean over the lam grid (parabola in ``log lam`` around the best grid point,
:func:`~widelimit.studies.common.refine_extremum`), with an interval from resampling seeds
(:func:`~widelimit.studies.claims.lambda_opt_interval`). ``t*(lam)`` is the step of the minimum of the
seed-mean test-loss curve over the whole run; the norm dynamics predict ``t* ∝ tau ∝ 1/lam`` (slope −1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..evidence import Interval

__all__ = ["OptimizerSpec", "relaxation_steps", "lambda_for_relaxation", "naive_lambda", "loss_at_budgets",
           "measured_lambda_opt", "fit_fraction", "Fraction"]


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimiser as trained: ``name`` (docs/theory.md §1), ``learning_rate`` η, ``momentum`` μ (heavy ball),
    ``d`` (parameters per invariant group; only AdamW's norm needs it, its relaxation does not)."""

    name: str
    learning_rate: float
    momentum: float = 0.0
    d: int = 1

    def label(self) -> str:
        extra = f", μ={self.momentum:g}" if self.name in ("momentum", "nesterov") else ""
        return f"{self.name} (η={self.learning_rate:g}{extra})"


def relaxation_steps(opt: OptimizerSpec, weight_decay) -> np.ndarray:
    """Predicted relaxation time (steps) at weight decay(s) ``weight_decay``: ``equilibrium(...).relaxation_steps``."""
    from ..dynamics.norms import equilibrium
    kw = {"momentum": opt.momentum} if opt.name in ("momentum", "nesterov") else {}
    if opt.name in ("adam", "adamw", "lion"):
        kw["d"] = opt.d
    if opt.name == "adam":
        raise ValueError("optimizer 'adam' (coupled L2): its relaxation depends on G and the norm; not bridged here")
    return np.asarray(equilibrium(opt.name, opt.learning_rate, np.asarray(weight_decay, float),
                                  **kw).relaxation_steps, float)


def lambda_for_relaxation(opt: OptimizerSpec, target_steps: float) -> float:
    """The weight decay whose predicted relaxation time is ``target_steps`` (root in ``log lam`` by brentq over
    ``eta lam`` in [1e-9, 0.5]; ``tau`` decreases monotonically in ``lam``)."""
    from scipy.optimize import brentq
    if not (np.isfinite(target_steps) and target_steps > 0):
        raise ValueError(f"target_steps must be finite and > 0, got {target_steps!r}")
    lo, hi = np.log(1e-9 / opt.learning_rate), np.log(0.5 / opt.learning_rate)
    f = lambda u: float(np.log(relaxation_steps(opt, np.exp(u))) - np.log(target_steps))
    if f(lo) < 0 or f(hi) > 0:
        raise ValueError(f"no weight decay with eta*lam in [1e-9, 0.5] relaxes in {target_steps:g} steps for "
                         f"{opt.label()}")
    return float(np.exp(brentq(f, lo, hi, xtol=1e-12)))


def naive_lambda(fit_opt: OptimizerSpec, fit_lambda: float, fit_budget: int, opt: OptimizerSpec,
                 budget: int) -> float:
    """The alternative without the optimiser's relaxation time: ``eta lam_opt T`` universal."""
    return fit_opt.learning_rate * fit_lambda * fit_budget / (opt.learning_rate * budget)


def loss_at_budgets(step, loss, budgets: Sequence[int], window: float = 0.1) -> np.ndarray:
    """Test loss at each budget: mean of the logs with ``(1 - window) T <= step <= T``; ``loss`` (..., n_logs)
    on ``step`` (n_logs,) -> (..., n_budgets). Every budget must be a logged step."""
    step = np.asarray(step)
    x = np.asarray(loss, np.float64)
    if x.shape[-1] != step.size:
        raise ValueError(f"loss has {x.shape[-1]} logs, step has {step.size}")
    if not 0 <= window < 1:
        raise ValueError(f"window must lie in [0, 1), got {window!r}")
    out = []
    for T in budgets:
        if T not in set(step.tolist()):
            raise ValueError(f"budget {T} is not a logged step")
        sel = (step >= (1 - window) * T) & (step <= T)
        out.append(x[..., sel].mean(axis=-1))
    return np.stack(out, axis=-1)


def measured_lambda_opt(lams, loss_b) -> Tuple[float, str, Interval]:
    """``(lam_opt, where, interval)`` of the seed-mean loss at one budget; ``loss_b`` (n_lam, n_seeds).
    ``where`` is ``interior`` / ``first`` / ``last``; at a grid edge the optimum is only bounded, and the
    interval is open on that side (``[low, inf)`` or ``[0, high]``), so a claim predicting a value beyond the
    edge is inconclusive, never confirmed by the edge value itself."""
    from .claims import lambda_opt_interval
    from .common import refine_extremum
    lams = np.asarray(lams, float)
    lam, _, where = refine_extremum(lams, np.asarray(loss_b, float).mean(axis=1), log_x=True, kind="min")
    iv = lambda_opt_interval(lams, loss_b)
    if where == "last":     # only a lower bound: the optimum may lie anywhere beyond the grid
        iv = Interval(lam, min(iv.low, lam), np.inf, iv.level, iv.n, "grid edge: lower bound")
    elif where == "first":  # only an upper bound
        iv = Interval(lam, 0.0, max(iv.high, lam), iv.level, iv.n, "grid edge: upper bound")
    return lam, where, iv


@dataclass(frozen=True)
class Fraction:
    """The fitted fraction ``r = tau(lam_opt)/T`` (dimensionless) with its interval (mapped from the
    interval of ``lam_opt``; ``tau`` is monotone), the fit point and ``driven=True`` (it is a measurement)."""

    r: float
    low: float
    high: float
    optimizer: OptimizerSpec
    budget: int
    lambda_opt: float
    variant: str
    driven: bool = True

    def predict(self, opt: OptimizerSpec, budget: int) -> Tuple[float, Tuple[float, float]]:
        """``(lam_pred, (low, high))`` for ``opt`` at ``budget`` (the range from ``r``'s interval)."""
        lam = lambda_for_relaxation(opt, self.r * budget)
        a, b = lambda_for_relaxation(opt, self.high * budget), lambda_for_relaxation(opt, self.low * budget)
        return lam, (min(a, b), max(a, b))


def fit_fraction(opt: OptimizerSpec, budget: int, lambda_opt: float, interval: Interval,
                 variant: str = "") -> Fraction:
    """``r = tau(opt, lam_opt)/T`` at the fit point, interval from ``interval`` of ``lam_opt``."""
    if not (np.isfinite(lambda_opt) and lambda_opt > 0):
        raise ValueError(f"lambda_opt must be finite and > 0, got {lambda_opt!r}")
    r = float(relaxation_steps(opt, lambda_opt)) / budget
    ends = [float(relaxation_steps(opt, v)) / budget for v in (interval.low, interval.high)
            if 0 < v < np.inf]
    lo, hi = (min(ends), max(ends)) if ends else (r, r)
    return Fraction(r, min(lo, r), max(hi, r), opt, int(budget), float(lambda_opt), variant)


def summary_dict(f: Optional[Fraction]) -> Dict[str, float]:
    """JSON-able summary of a fit."""
    if f is None:
        return {}
    return {"r": f.r, "low": f.low, "high": f.high, "optimizer": f.optimizer.name,
            "learning_rate": f.optimizer.learning_rate, "budget": f.budget, "lambda_opt": f.lambda_opt,
            "variant": f.variant, "driven": True}
