"""Prediction results as table rows (one dict per row; validity as its short label; units alongside)."""
from __future__ import annotations

from typing import Mapping, Tuple, Union

import numpy as np

from .results import Curves, LambdaOpt, LambdaRule, TStar


def _cell(v):
    return v.value if hasattr(v, "value") else (v.item() if hasattr(v, "item") else v)


def to_rows(result: Union[TStar, LambdaOpt, LambdaRule, Curves]) -> list[dict]:
    """Flatten a result into rows: one dict per weight decay (TStar), per budget (LambdaOpt, LambdaRule) or
    per grid point (Curves). Column units are ``result.units`` (see :func:`table_rows`)."""
    if isinstance(result, LambdaOpt):
        cols = ("learning_rate", "steps", "time", "weight_decay_opt", "c", "best") + (
            ("weight_decay_opt_low", "weight_decay_opt_high") if result.seeds is not None else ()) + (
            ("weight_decay_opt_solver_se",) if result.weight_decay_opt_solver_se is not None else ())
        flat = {k: np.asarray(getattr(result, k)).reshape(-1) for k in cols}
        return [{"metric": result.metric, **{k: flat[k][i].item() for k in cols},
                 "validity": result.validity[i].value} for i in range(flat["time"].size)]
    if isinstance(result, TStar):
        cols = ["weight_decay", "t_star"] + (["steps_star"] if result.steps_star is not None else []) \
            + (["t_star_low", "t_star_high"] if result.seeds is not None else []) \
            + (["t_star_solver_se"] if result.t_star_solver_se is not None else []) + ["c", "best"]
        return [{"metric": result.metric, **{k: np.asarray(getattr(result, k))[i].item() for k in cols},
                 "validity": result.validity[i].value} for i in range(result.weight_decay.size)]
    if isinstance(result, LambdaRule):
        cols = ("learning_rate", "steps", "time", "weight_decay_rule")
        flat = {k: np.asarray(getattr(result, k)).reshape(-1) for k in cols}
        return [{**{k: flat[k][i].item() for k in cols}, "c": result.c, "validity": result.validity.value}
                for i in range(flat["time"].size)]
    if isinstance(result, Curves):
        rows = []
        for i, lam in enumerate(result.weight_decay):
            for j, t in enumerate(result.t[i]):
                row = {"weight_decay": float(lam), "t": float(t), "test_loss": float(result.test_loss[i, j])}
                if result.test_accuracy is not None:
                    row["test_accuracy"] = float(result.test_accuracy[i, j])
                if result.train_loss is not None:
                    row["train_loss"] = float(result.train_loss[i, j])
                rows.append(row)
        return rows
    raise TypeError(f"result must be a Curves, TStar, LambdaOpt or LambdaRule, got {type(result).__name__}")


def table_rows(result) -> Tuple[list[dict], Mapping[str, str]]:
    """``(rows, units)``: :func:`to_rows` and the units of the columns that appear (for headers/metadata)."""
    rows = to_rows(result)
    names = rows[0].keys() if rows else ()
    return rows, {k: result.units[k] for k in names if k in result.units and result.units[k]}


__all__ = ["to_rows", "table_rows"]
