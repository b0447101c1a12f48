"""Pieces shared by ``solve`` and ``table ntk``: the per-λ table of t* (same columns, same units in both
commands) and the options of the theory model."""
from __future__ import annotations

import math
import time
from typing import List, Optional

from . import _theory
from .argtypes import positive_int
from .errors import UsageError
from .options import add_solver_options
from .progress import announce, progress

#: units of every column of the per-λ table (times in physical time t = η·steps, step counts in steps)
TSTAR_UNITS = {"λ": "1/(η·steps)", "t*": "η·steps", "steps*": "steps", "c = λt*": "1",
               "test loss at t*": "MSE", "test acc at t*": "fraction", "kernel decay": "η·steps",
               "output decay": "η·steps", "validity": "enum"}

F0_NOTE = {"zero": "f0 = 0: the mean function over random initialisations (--f0 zero)",
           "nngp": "expected test MSE over random initial functions f0 ~ NNGP (the default model: what a seed "
                   "average of finite networks measures)"}


def add_model_options(g) -> None:
    """``--gd``: the theory of full-batch GD at ``--learning-rate`` instead of gradient flow; ``--solver``,
    ``--kernel-dtype``, ``--kernel-dir`` (:func:`widelimit.cli.options.add_solver_options`)."""
    g.add_argument("--gd", action="store_true",
                   help="predict full-batch gradient descent at --learning-rate (discrete steps) instead of "
                        "the gradient flow (η → 0 at fixed η·steps)")
    add_solver_options(g)


def check_model_options(args) -> None:
    if getattr(args, "gd", False) and args.learning_rate is None:
        raise UsageError("--gd models discrete steps: give the learning rate with --learning-rate")
    if getattr(args, "seeds", None) is not None and args.f0 != "nngp":
        raise UsageError("--seeds: the spread over n seeds is that of random initial functions f0 ~ NNGP; "
                         "it needs --f0 nngp (the default)")


def add_seeds_option(g) -> None:
    """``--seeds n``: the predicted central interval for an average over n seeds (docs/theory.md §3.5)."""
    g.add_argument("--seeds", type=positive_int, default=None, metavar="n",
                   help="also give the predicted central 80%% interval of each number for an average over n "
                        "seeds (the spread over random initial functions f0 ~ NNGP, by sampling f0 through "
                        "the closed form); default: the infinite-seed mean only")


def build_model(prob, args, f0=None):
    """The prediction model of ``prob`` (``--f0``, flow or ``--gd``), as Python's ``predict_model``; with
    ``--seeds`` the spread model (the same expected loss, and its distribution over f0)."""
    lr = args.learning_rate if getattr(args, "gd", False) else None
    if getattr(args, "seeds", None) is not None and (f0 or args.f0) == "nngp":
        return _theory.spread_model(prob, lr)
    return _theory.loss_model(prob, f0 or args.f0, lr, getattr(args, "solver_resolved", None) or args.solver,
                              show_progress=not getattr(args, "no_progress", False))


def mean_model(prob, args, model):
    """The f0 = 0 (mean-function) model next to ``model``: ``model`` itself for ``--f0 zero``, else the one
    on the same decomposition (``model.mean_model()``: no second eigendecomposition or Krylov build), else
    a new one (``--seeds``)."""
    if args.f0 == "zero":
        return model
    if hasattr(model, "mean_model"):
        return model.mean_model()
    return build_model(prob, args, "zero")


def tstar_rows(model, weight_decays, args) -> List[_theory.Row]:
    """:func:`widelimit.predict.t_star` for every weight decay λ (progress bar over λ)."""
    rows: List[_theory.Row] = []
    lams = list(weight_decays)
    probes = getattr(model, "random_probes", 0)
    if probes and lams:   # stochastic solver: each t* also gets its jackknife s.e. (one search per probe)
        t0 = time.perf_counter()
        _theory.t_star(model, lams[:1], args.learning_rate, solver_error=False)
        announce(args, f"t* for {len(lams)} λ with its solver error ({probes + 1} searches per λ: the jackknife "
                       f"over the {probes} Hutch++ probes)", (time.perf_counter() - t0) * (probes + 1) * len(lams))
    for lam in progress(lams, args, desc="t* per λ"):
        rows += _theory.t_star_rows(_theory.t_star(model, [lam], args.learning_rate))
    return rows


def solver_se_note(what: str) -> str:
    return (f"{what} solver s.e.: the standard error of {what} from the Krylov solver's random trace probes "
            "(delete-one jackknife over the Hutch++ probes, docs/theory.md §4.3), not a spread over seeds")


def tstar_table(prob, model, rows, args, accuracy_model=None, spread=None):
    """The per-λ table: λ, t*, (steps*), c = λt*, test loss at t*, (test acc at t*, f0 = 0), kernel and
    output decay times, validity; with ``spread`` (a :class:`widelimit.predict.spread.SeedSpread` of t*
    over the same λ, ``--seeds``) the predicted central interval of t* for that many seeds."""
    from widelimit.tables import Table
    eta: Optional[float] = args.learning_rate
    spread_cols = [] if spread is None else [f"t* {spread.level:.0%} low ({spread.seeds} seeds)",
                                             f"t* {spread.level:.0%} high ({spread.seeds} seeds)"]
    se_cols = ["t* solver s.e."] if any(r.solver_se is not None for r in rows) else []
    cols = ["λ", "t*"] + se_cols + (["steps*"] if eta else []) + spread_cols + ["c = λt*", "test loss at t*"] \
        + (["test acc at t*"] if accuracy_model is not None else []) + ["kernel decay", "output decay", "validity"]
    units = dict(TSTAR_UNITS, **{c: "η·steps" for c in spread_cols + se_cols})
    table = Table(cols, title="Best test time t* per weight decay λ",
                  units={c: units[c] for c in cols},
                  caption=f"{prob.source}; L = {prob.L}" + (f"; η = {eta:g}" if eta else ""),
                  notes=[f"t* = time of the minimum of the infinite-width test MSE over λt ∈ [1e-3, 1e2] "
                         f"({model.label}); {F0_NOTE[args.f0]}; c = λ·t* (docs/theory.md §3)",
                         "kernel decay 1/(2(L−1)λ), output decay 1/(Lλ)"
                         + ("; test acc: the mean function (f0 = 0)" if accuracy_model is not None else ""),
                         "validity: " + ", ".join(sorted({r.validity.value for r in rows}))
                         + " (ok: inside the theory's range; see docs/theory.md §3)"],
                  meta={"L": prob.L, "learning_rate": eta, "f0": args.f0, "model": model.label,
                        "source": prob.source})
    if se_cols:
        table.notes.append(solver_se_note("t*"))
    if spread is not None:
        table.notes.append(f"t* low/high: the predicted central {spread.level:.0%} interval of t* of a "
                           f"{spread.seeds}-seed average test loss ({spread.method}; docs/theory.md §3.5)")
    for i, r in enumerate(rows):
        row = [r.weight_decay, r.t_star] + ([r.solver_se] if se_cols else []) + ([r.t_star / eta] if eta else [])
        row += [] if spread is None else [float(spread.low[i]), float(spread.high[i])]
        row += [r.weight_decay * r.t_star, r.loss]
        if accuracy_model is not None:
            row.append(float(accuracy_model.test_accuracy(r.weight_decay, [r.t_star])[0])
                       if math.isfinite(r.t_star) else None)
        table.add_row(row + list(_theory.decay_times(prob.L, r.weight_decay)) + [r.validity])
    return table


def validity_warnings(rows):
    """``(what, validity)`` pairs of the per-λ rows, for :func:`widelimit.cli.writing.warn_validity`."""
    return [(f"λ = {r.weight_decay:g}: t*", r.validity) for r in rows]
