"""Pieces shared by ``solve`` and ``table ntk``: the per-λ table of t* (same columns, same units in both
commands) and the options of the theory model."""
from __future__ import annotations

from typing import List, Optional

from . import _theory
from .progress import progress

#: units of every column of the per-λ table (times in physical time t = η·steps, step counts in steps)
TSTAR_UNITS = {"λ": "1/(η·steps)", "t*": "η·steps", "steps*": "steps", "c = λt*": "1",
               "test loss at t*": "MSE", "test acc at t*": "fraction", "kernel decay": "η·steps",
               "output decay": "η·steps", "validity": "enum"}

F0_NOTE = {"zero": "f0 = 0: the mean function over random initialisations (--f0 zero)",
           "nngp": "expected test MSE over random initial functions f0 ~ NNGP (the default model: what a seed "
                   "average of finite networks measures)"}


def tstar_rows(model, lams, args) -> List[_theory.TStarRow]:
    """:func:`_theory.t_star` for every λ (progress bar)."""
    return [_theory.t_star(model, lam, args.learning_rate) for lam in progress(lams, args, desc="t* per λ")]


def tstar_table(prob, model, rows, args, accuracy_model=None):
    """The per-λ table: λ, t*, (steps*), c = λt*, test loss at t*, (test acc at t*, f0 = 0), kernel and
    output decay times, validity."""
    from widelimit.tables import Table
    eta: Optional[float] = args.learning_rate
    cols = ["λ", "t*"] + (["steps*"] if eta else []) + ["c = λt*", "test loss at t*"] \
        + (["test acc at t*"] if accuracy_model is not None else []) + ["kernel decay", "output decay", "validity"]
    table = Table(cols, title="Best test time t* per weight decay λ",
                  units={c: TSTAR_UNITS[c] for c in cols},
                  caption=f"{prob.source}; L = {prob.L}" + (f"; η = {eta:g}" if eta else ""),
                  notes=[f"t* = time of the minimum of the infinite-width test MSE over λt ∈ "
                         f"[{_theory.S_RANGE[0]:g}, {_theory.S_RANGE[1]:g}]; {F0_NOTE[args.f0]}; "
                         "c = λ·t* (docs/theory.md §3)",
                         "kernel decay 1/(2(L−1)λ), output decay 1/(Lλ)"
                         + ("; test acc: the mean function (f0 = 0)" if accuracy_model is not None else ""),
                         "validity: " + ", ".join(sorted({r.validity.value for r in rows}))
                         + " (ok: inside the theory's range; see docs/theory.md §3)"],
                  meta={"L": prob.L, "learning_rate": eta, "f0": args.f0, "model": model.label,
                        "source": prob.source})
    for r in rows:
        row = [r.weight_decay, r.t_star] + ([r.t_star / eta] if eta else []) + [r.weight_decay * r.t_star, r.loss]
        if accuracy_model is not None:
            row.append(float(accuracy_model.test_accuracy(r.weight_decay, [r.t_star])[0]))
        table.add_row(row + list(_theory.decay_times(prob.L, r.weight_decay)) + [r.validity])
    return table


def validity_warnings(rows):
    """``(what, validity)`` pairs of the per-λ rows, for :func:`widelimit.cli.writing.warn_validity`."""
    return [(f"λ = {r.weight_decay:g}: t*", r.validity) for r in rows]
