"""t*, lambda_opt, the c/(eta T) rule and loss curves for any :class:`~widelimit.dynamics.LossModel`
(docs/theory.md §3).

* :func:`t_star`: per weight decay, the time of the best test loss, on ``t = s / lam`` (``s`` log-spaced)
  refined by bounded 1-D minimisation in ``log t`` (flow) or by scanning the step counts between the
  neighbouring grid points (GD);
* :func:`lambda_opt`: per budget ``eta * T``, the theory's own best weight decay: a fine log grid
  (:data:`POINTS_PER_DECADE`) refined by bounded minimisation in ``log lam``;
* :func:`lambda_rule`: ``c / (eta T)`` with ``c = lam t*`` from reference rows with a clear interior
  minimum only (a separate, labelled output);
* :func:`loss_curves`: test loss (accuracy, train loss) on a grid.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
from scipy.optimize import minimize_scalar

from ..dynamics.modes import check_learning_rate
from ..validity import Validity
from .models import as_model, no_learning, unstable, verdict
from .results import Curves, LambdaOpt, LambdaRule, TStar

METRICS = ("loss", "accuracy")
POINTS_PER_DECADE = 24          # lambda_opt grid: 10^(1/24) = 1.10 between points before refinement
_GD_SCAN = 4096                 # at most this many step counts scanned when refining a GD t*


def _floats(name: str, value, positive: bool = False) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be numbers, got {type(value).__name__}") from e
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0) or (positive and np.any(arr <= 0)):
        raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {arr}")
    return arr


def _metric_fn(m, metric: str):
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if metric == "loss":
        return m.test_loss
    if not hasattr(m, "test_accuracy"):
        raise ValueError(f"{type(m).__name__} has no test_accuracy (accuracy needs the outputs of a given f0: "
                         "use an L2Flow / FlowLoss)")
    return lambda lam, t: -np.asarray(m.test_accuracy(lam, t))     # minimise minus the accuracy


def _run_learning_rate(m, learning_rate) -> Optional[float]:
    """The eta of the run: the model's own for GD models (a different one is an error), else the argument."""
    lr = check_learning_rate(learning_rate)
    own = getattr(m, "learning_rate", None)
    if own is not None:
        if lr is not None and not math.isclose(lr, own, rel_tol=1e-12):
            raise ValueError(f"learning_rate={lr} differs from the model's own learning_rate={own}")
        return own
    return lr


def _solver_error(m, solver_error, metric: str) -> bool:
    """Whether to state the solver's own stochastic error of t* / lambda_opt (docs/theory.md §4.3): models
    with random trace probes (a Hutch++ :class:`~widelimit.dynamics.krylov.KrylovLoss`) have one."""
    if solver_error is not None and not isinstance(solver_error, bool):
        raise TypeError(f"solver_error must be None, True or False, got {solver_error!r}")
    stochastic = hasattr(m, "jackknife_error") and getattr(m, "variance_method", None) == "hutch++"
    if solver_error and not stochastic:
        raise ValueError("solver_error=True: this model is exact (no random trace probes, no solver error "
                         "to state); only a Krylov model with variance='hutch++' has one")
    if solver_error and metric != "loss":
        raise ValueError("solver_error=True: the stochastic part is in the expected loss (metric='loss')")
    return bool(stochastic and metric == "loss" and solver_error is not False)


def _spread_input(model, seeds, level, metric):
    """Check ``seeds``/``level`` before any work; the spread model for ``seeds=n`` (docs/theory.md §3.5)."""
    from .spread import _check_level, _check_seeds, _check_spread_model, spread_model
    _check_seeds(seeds), _check_level(level)
    if metric != "loss":
        raise ValueError("seeds=n: the predicted spread is that of the test loss (metric='loss')")
    if hasattr(model, "ntk_train_train") and not hasattr(model, "test_loss"):     # a DataKernels
        return spread_model(model)
    return _check_spread_model(model)


def t_star(model, y_test=None, *, weight_decays=None, learning_rate: Optional[float] = None,
           metric: str = "loss", s_range: tuple = (1e-3, 1e2), n_grid: int = 200, refine: bool = True,
           seeds: Optional[int] = None, level: float = 0.8, solver_error: Optional[bool] = None) -> TStar:
    """Time ``t*`` (η·steps) of the best test loss (or accuracy) for each weight decay, with validity.

    ``model``: any :class:`~widelimit.dynamics.LossModel`, an :class:`L2Flow` / :class:`L2FlowEnsemble`
    with ``y_test``, or a :class:`widelimit.kernels.DataKernels` (-> :func:`predict_model`).
    ``learning_rate``: the run's eta, for ``steps_star`` and the UNSTABLE / TOO_FAST checks (GD models
    use their own). The search runs on ``t = s / lam`` with ``n_grid`` log-spaced ``s`` in ``s_range``.
    ``seeds=n``: also the predicted central ``level`` interval of t* of an n-seed average
    (:func:`widelimit.predict.spread.t_star_spread`; ``model`` must be a
    :class:`~widelimit.dynamics.spread.LossSpread` or a DataKernels with the full test-test NNGP); default
    None: the infinite-seed mean only.
    ``solver_error``: state ``t_star_solver_se``, the jackknife standard error of t* over the random probes
    of a stochastic (Hutch++) Krylov model; ``None`` (default) does so whenever the model is stochastic,
    at the cost of one more search per probe (16 by default); ``False`` skips it.
    """
    if seeds is not None:
        model = _spread_input(model, seeds, level, metric)
    m = as_model(model, y_test)
    fn = _metric_fn(m, metric)
    with_se = _solver_error(m, solver_error, metric)
    if weight_decays is None:
        raise TypeError("t_star needs weight_decays (the L2 coefficients to search t* for)")
    lams = _floats("weight_decays", weight_decays, positive=True)
    lo, hi = s_range
    if not (0 < lo < hi < np.inf):
        raise ValueError(f"s_range must be (lo, hi) with 0 < lo < hi < inf, got {s_range}")
    if int(n_grid) < 3:
        raise ValueError(f"n_grid must be >= 3, got {n_grid}")
    eta = _run_learning_rate(m, learning_rate)
    gd = getattr(m, "learning_rate", None)
    s = np.geomspace(lo, hi, int(n_grid))
    ts, best, flags = np.full(lams.size, np.nan), np.full(lams.size, np.nan), []
    zero = float(m.zero_loss())
    for i, lam in enumerate(lams):
        bad = unstable(m, eta, lam)
        if bad and gd is not None:                # GD that diverges: no loss to minimise
            flags.append(Validity.UNSTABLE)
            continue
        t = s / lam
        if gd is not None:
            t = np.unique(np.maximum(np.rint(t / gd), 1.0)) * gd
        vals = np.asarray(fn(lam, t), dtype=np.float64)
        j = int(np.argmin(vals))
        edge = j in (0, t.size - 1)
        ts[i], best[i] = t[j], vals[j]
        if refine and not edge:
            ts[i], best[i] = _refine_time(fn, lam, t[j - 1], t[j + 1], gd, ts[i], best[i], metric)
        loss_best = best[i] if metric == "loss" else float(m.test_loss(lam, [ts[i]])[0])
        flags.append(verdict(is_unstable=bad, is_no_learning=no_learning(loss_best, zero), at_edge=edge,
                             steps=None if eta is None else ts[i] / eta))
    out_best = best if metric == "loss" else -best
    band = {}
    if seeds is not None:
        from .spread import t_star_spread
        sp = t_star_spread(m, lams, seeds=seeds, level=level, s_range=s_range)
        band = dict(seeds=int(seeds), level=float(level), t_star_low=sp.low, t_star_high=sp.high)
    if with_se:
        band["t_star_solver_se"] = m.jackknife_error(lambda r: t_star(
            r, weight_decays=lams, learning_rate=learning_rate, metric=metric, s_range=s_range, n_grid=n_grid,
            refine=refine, solver_error=False).t_star)
    return TStar(lams, ts, None if eta is None else ts / eta, lams * ts, out_best, tuple(flags), zero, metric,
                 eta, getattr(m, "label", ""), **band)


def _refine_time(fn, lam, t_lo, t_hi, gd, t0, v0, metric):
    """Refine a grid minimum between its neighbours: bounded search in log t (flow, loss) or a scan of the
    step counts (GD); accuracy (piecewise constant) is not refined."""
    if metric != "loss":
        return t0, v0
    if gd is None:
        res = minimize_scalar(lambda u: float(fn(lam, [math.exp(u)])[0]), method="bounded",
                              bounds=(math.log(t_lo), math.log(t_hi)), options={"xatol": 1e-8})
        return (math.exp(res.x), float(res.fun)) if res.fun <= v0 else (t0, v0)
    k = np.arange(int(round(t_lo / gd)), int(round(t_hi / gd)) + 1)
    if k.size > _GD_SCAN:
        k = np.unique(np.rint(np.geomspace(k[0], k[-1], _GD_SCAN)))
    vals = np.asarray(fn(lam, k * gd))
    j = int(np.argmin(vals))
    return (float(k[j] * gd), float(vals[j])) if vals[j] <= v0 else (t0, v0)


def lambda_opt(model, y_test=None, *, steps, learning_rate=None, weight_decays=None, metric: str = "loss",
               s_range: tuple = (1e-3, 1e2), refine: bool = True, seeds: Optional[int] = None,
               level: float = 0.8, solver_error: Optional[bool] = None) -> LambdaOpt:
    """The theory's own best weight decay for budgets of ``steps`` at ``learning_rate`` (default 1 for a
    flow model; a GD model's own), with validity per budget.

    The budget is the time ``eta * T``. Without ``weight_decays`` the grid is log-spaced with
    :data:`POINTS_PER_DECADE` from ``s_range[0] / max(time)`` to ``s_range[1] / min(time)`` (for GD capped
    below ``1/eta``); the grid minimum is refined by bounded minimisation in ``log lam`` between its
    neighbours (loss only: accuracy is piecewise constant and is reported at the best grid point).
    ``seeds=n``: also the predicted central ``level`` interval of lambda_opt of an n-seed average
    (:func:`widelimit.predict.spread.lambda_opt_spread`, on its own grid unless ``weight_decays`` is given;
    ``model`` as for :func:`t_star`); default None: the infinite-seed optimum only.
    ``solver_error``: as for :func:`t_star` (``weight_decay_opt_solver_se``, on the same grid).
    """
    if seeds is not None:
        model = _spread_input(model, seeds, level, metric)
    m = as_model(model, y_test)
    fn = _metric_fn(m, metric)
    with_se = _solver_error(m, solver_error, metric)
    gd = getattr(m, "learning_rate", None)
    eta_a = np.asarray(gd if learning_rate is None and gd is not None
                       else (1.0 if learning_rate is None else learning_rate), dtype=np.float64)
    if gd is not None and not np.allclose(eta_a, gd, rtol=1e-12):
        raise ValueError(f"learning_rate differs from the model's own learning_rate={gd}")
    steps_a = np.asarray(steps, dtype=np.float64)
    _floats("learning_rate", eta_a, positive=True)
    _floats("steps", steps_a)
    eta_b, steps_b = np.broadcast_arrays(eta_a, steps_a)
    time = eta_b * steps_b
    tf = time.reshape(-1)
    if weight_decays is None:
        lo = s_range[0] / max(tf.max(), 1e-300)
        hi = s_range[1] / max(tf[tf > 0].min() if np.any(tf > 0) else 1.0, 1e-300)
        if gd is not None:
            hi = min(hi, (1.0 - 1e-9) / gd)
        grid = np.geomspace(lo, hi, max(3, int(math.ceil(POINTS_PER_DECADE * math.log10(hi / lo))) + 1))
    else:
        grid = np.sort(_floats("weight_decays", weight_decays))
    zero = float(m.zero_loss())
    u_t, inv = np.unique(tf, return_inverse=True)
    bad_all = gd is not None and gd * m.mu_max >= 2.0
    table = np.full((u_t.size, grid.size), np.nan)
    if not bad_all:
        ok = np.array([not unstable(m, gd, lam) for lam in grid])
        if metric == "loss" and hasattr(m, "test_loss_grid"):      # one pass for all weight decays
            table[:, ok] = np.asarray(m.test_loss_grid(grid[ok], u_t)).T
        else:
            for g in np.nonzero(ok)[0]:
                table[:, g] = fn(grid[g], u_t)
    opt, best, flags = np.full(u_t.size, np.nan), np.full(u_t.size, np.nan), []
    for k, t in enumerate(u_t):
        row = table[k]
        if bad_all or not np.any(np.isfinite(row)):
            flags.append(Validity.UNSTABLE)
            continue
        j = int(np.nanargmin(row))
        valid = np.nonzero(np.isfinite(row))[0]
        edge = j in (valid[0], valid[-1])
        opt[k], best[k] = grid[j], row[j]
        if refine and metric == "loss" and not edge and grid[j - 1] > 0:
            res = minimize_scalar(lambda u: float(fn(math.exp(u), [t])[0]), method="bounded",
                                  bounds=(math.log(grid[j - 1]), math.log(grid[j + 1])), options={"xatol": 1e-6})
            if res.fun <= best[k]:
                opt[k], best[k] = math.exp(res.x), float(res.fun)
        loss_best = best[k] if metric == "loss" else float(m.test_loss(opt[k], [t])[0])
        flags.append(verdict(is_unstable=False, is_no_learning=no_learning(loss_best, zero), at_edge=edge))
    shape = time.shape
    lam_opt, best_v = opt[inv].reshape(shape), best[inv].reshape(shape)
    values = table[inv].reshape(shape + (grid.size,))
    sign = 1.0 if metric == "loss" else -1.0
    flat = [flags[i] for i in inv.reshape(-1)]
    for i, (e, lam) in enumerate(zip(eta_b.reshape(-1), lam_opt.reshape(-1))):   # the run's GD at its eta
        if flat[i] is not Validity.UNSTABLE and unstable(m, float(e), 0.0 if np.isnan(lam) else float(lam)):
            flat[i] = Validity.UNSTABLE
    band = {}
    if seeds is not None:
        from .spread import lambda_opt_spread
        sp = lambda_opt_spread(m, steps=u_t / (gd if gd is not None else 1.0), learning_rate=gd or 1.0,
                               seeds=seeds, level=level, s_range=s_range,
                               weight_decays=None if weight_decays is None else grid)
        band = dict(seeds=int(seeds), level=float(level), weight_decay_opt_low=sp.low[inv].reshape(shape),
                    weight_decay_opt_high=sp.high[inv].reshape(shape))
    if with_se:
        band["weight_decay_opt_solver_se"] = m.jackknife_error(lambda r: lambda_opt(
            r, steps=steps, learning_rate=learning_rate, weight_decays=grid, metric=metric, s_range=s_range,
            refine=refine, solver_error=False).weight_decay_opt)
    return LambdaOpt(np.array(eta_b), np.array(steps_b), time, lam_opt, sign * best_v, lam_opt * time,
                     tuple(flat), zero, grid, sign * values, metric,
                     getattr(m, "label", ""), **band)


def lambda_rule(model, y_test=None, *, reference_weight_decays, steps, learning_rate=1.0, **t_star_options
                ) -> LambdaRule:
    """The rule ``lam = c / (eta T)`` with ``c`` the geometric mean of ``lam t*`` over the reference weight
    decays whose :func:`t_star` row is OK (a clear interior minimum that learns something).

    Rows flagged NO_LEARNING, GRID_EDGE, UNSTABLE or TOO_FAST are left out; with none left, ``c`` is NaN
    and the validity NO_INTERIOR_OPTIMUM.
    """
    m = as_model(model, y_test)
    ts = t_star(m, weight_decays=reference_weight_decays,
                learning_rate=learning_rate if getattr(m, "learning_rate", None) is None else None, **t_star_options)
    ok = np.array([v is Validity.OK for v in ts.validity])
    c = float(np.exp(np.mean(np.log(ts.c[ok])))) if np.any(ok) else float("nan")
    eta_b, steps_b = np.broadcast_arrays(np.asarray(learning_rate if getattr(m, "learning_rate", None) is None
                                                    else m.learning_rate, dtype=np.float64),
                                         _floats("steps", steps, positive=True).reshape(np.shape(steps)))
    time = eta_b * steps_b
    return LambdaRule(c, ts.weight_decay[ok], ts.c[ok], np.array(eta_b), np.array(steps_b), time, c / time,
                      Validity.OK if np.any(ok) else Validity.NO_INTERIOR_OPTIMUM)


def loss_curves(model, y_test=None, *, weight_decays, t, accuracy: bool = False, train_loss: bool = False
                ) -> Curves:
    """Test loss (and optionally accuracy and train loss) for every weight decay at times ``t``
    (η·steps): ``t`` is (T,) shared or (P, T) per weight decay. Returns :class:`Curves` with (P, T) arrays."""
    m = as_model(model, y_test)
    lams = _floats("weight_decays", weight_decays)
    ts = np.asarray(t, dtype=np.float64)
    if ts.ndim not in (1, 2) or np.any(np.isnan(ts)) or np.any(ts < 0):
        raise ValueError("t must be a (T,) or (P, T) array of times >= 0")
    ts = np.broadcast_to(ts, (lams.size, ts.shape[-1])) if ts.ndim == 1 else ts
    if ts.shape[0] != lams.size:
        raise ValueError(f"t must have shape (T,) or ({lams.size}, T), got {ts.shape}")
    loss = np.stack([m.test_loss(lam, tt) for lam, tt in zip(lams, ts)])
    if accuracy:
        _metric_fn(m, "accuracy")
    acc = np.stack([m.test_accuracy(lam, tt) for lam, tt in zip(lams, ts)]) if accuracy else None
    tr = np.stack([m.train_loss(lam, tt) for lam, tt in zip(lams, ts)]) if train_loss else None
    return Curves(lams, np.array(ts), loss, acc, tr, getattr(m, "label", ""))


__all__ = ["t_star", "lambda_opt", "lambda_rule", "loss_curves", "METRICS", "POINTS_PER_DECADE"]
