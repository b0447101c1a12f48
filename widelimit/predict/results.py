"""Result types of :mod:`widelimit.predict` (frozen dataclasses; units in :attr:`units`, docs/theory.md §3).

Times: ``t`` and ``t_star`` are physical time ``eta * steps`` ("η·steps"); ``steps_star`` and ``steps`` are
optimiser steps. ``weight_decay`` is ``lam`` (penalty ``(lam/2)||theta||^2``, units 1/(η·steps));
``c = lam * t`` is dimensionless. Losses are the test MSE ``1/(2 M K) sum (f - y)^2``.
Every row of a prediction carries a :class:`widelimit.validity.Validity`.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, Mapping, Optional, Tuple

import numpy as np

from ..validity import Validity

_UNITS = {"weight_decay": "1/(η·steps)", "weight_decay_opt": "1/(η·steps)", "weight_decay_rule": "1/(η·steps)",
          "reference_weight_decay": "1/(η·steps)", "t": "η·steps", "t_star": "η·steps", "time": "η·steps",
          "steps_star": "steps", "steps": "steps", "learning_rate": "", "c": "", "best": "MSE (metric loss) or fraction (accuracy)", "reference_c": "",
          "zero_loss": "MSE", "test_loss": "MSE", "train_loss": "MSE", "test_accuracy": "fraction",
          "best_accuracy": "fraction", "validity": "", "seeds": "", "level": "", "t_star_low": "η·steps",
          "t_star_high": "η·steps", "weight_decay_opt_low": "1/(η·steps)", "weight_decay_opt_high": "1/(η·steps)",
          "t_star_solver_se": "η·steps", "weight_decay_opt_solver_se": "1/(η·steps)"}


def _units(*names) -> Mapping[str, str]:
    return MappingProxyType({n: _UNITS[n] for n in names})


@dataclass(frozen=True, eq=False)
class Curves:
    """Metrics on a ``(weight_decay, t)`` grid.

    Fields: ``weight_decay`` (P,); ``t`` (P, T) in η·steps; ``test_loss`` (P, T) MSE; ``test_accuracy`` and
    ``train_loss`` (P, T) or None; ``model``: the model's label.
    """

    weight_decay: np.ndarray
    t: np.ndarray
    test_loss: np.ndarray
    test_accuracy: Optional[np.ndarray] = None
    train_loss: Optional[np.ndarray] = None
    model: str = ""
    units: ClassVar[Mapping[str, str]] = _units("weight_decay", "t", "test_loss", "test_accuracy", "train_loss")


@dataclass(frozen=True, eq=False)
class TStar:
    """Time of the best test metric for each weight decay.

    Fields (arrays of shape (P,) over ``weight_decay``):
      weight_decay: lam (1/(η·steps)).
      t_star: time of the best test loss (min) / accuracy (max), in η·steps; NaN where UNSTABLE.
      steps_star: ``t_star / eta`` in steps (None when no learning rate is known).
      c: ``lam * t_star`` (dimensionless; the t* ~ c/lam law).
      best: the metric at ``t_star`` (MSE for loss, fraction for accuracy).
      validity: one :class:`Validity` per row (tuple).
      zero_loss: test MSE of the zero function (the NO_LEARNING reference), scalar.
      metric: "loss" or "accuracy"; learning_rate: eta used for steps/validity (None for pure flow);
      model: the model's label.
      seeds, level, t_star_low, t_star_high: with ``t_star(..., seeds=n)``, the predicted central ``level``
        interval of t* of an n-seed average (docs/theory.md §3.5; η·steps); None otherwise.
      t_star_solver_se: standard error of ``t_star`` from the solver's own stochastic estimate (jackknife
        over the Hutch++ probes of a Krylov model, docs/theory.md §4.3; η·steps); None for exact models.
    """

    weight_decay: np.ndarray
    t_star: np.ndarray
    steps_star: Optional[np.ndarray]
    c: np.ndarray
    best: np.ndarray
    validity: Tuple[Validity, ...]
    zero_loss: float
    metric: str
    learning_rate: Optional[float]
    model: str = ""
    seeds: Optional[int] = None
    level: Optional[float] = None
    t_star_low: Optional[np.ndarray] = None
    t_star_high: Optional[np.ndarray] = None
    t_star_solver_se: Optional[np.ndarray] = None
    units: ClassVar[Mapping[str, str]] = _units("weight_decay", "t_star", "steps_star", "c", "best",
                                                "zero_loss", "validity", "seeds", "level", "t_star_low",
                                                "t_star_high", "t_star_solver_se")

    @property
    def at_edge(self) -> np.ndarray:
        """Older name: rows flagged GRID_EDGE."""
        return np.array([v is Validity.GRID_EDGE for v in self.validity])


@dataclass(frozen=True, eq=False)
class LambdaOpt:
    """The theory's own best weight decay per budget (fine log grid refined by bounded 1-D minimisation).

    Fields (broadcast shape S of (learning_rate, steps)):
      learning_rate: eta; steps: budget T in steps; time: ``eta * T`` in η·steps.
      weight_decay_opt: the minimiser of the test loss after the budget (1/(η·steps)); NaN where UNSTABLE.
      best: the test metric there (MSE / fraction).
      c: ``weight_decay_opt * time`` (dimensionless).
      validity: :class:`Validity` per budget (tuple over the flattened S).
      zero_loss: test MSE of the zero function (scalar).
      grid: the searched weight decays (G,); values: the metric on the grid, shape S + (G,).
      metric, model: as in :class:`TStar`.
      seeds, level, weight_decay_opt_low, weight_decay_opt_high: with ``lambda_opt(..., seeds=n)``, the
        predicted central ``level`` interval of lambda_opt of an n-seed average (docs/theory.md §3.5), shape S;
        None otherwise.
      weight_decay_opt_solver_se: standard error of ``weight_decay_opt`` from the solver's stochastic
        estimate (jackknife over Hutch++ probes, docs/theory.md §4.3), shape S; None for exact models.
    """

    learning_rate: np.ndarray
    steps: np.ndarray
    time: np.ndarray
    weight_decay_opt: np.ndarray
    best: np.ndarray
    c: np.ndarray
    validity: Tuple[Validity, ...]
    zero_loss: float
    grid: np.ndarray
    values: np.ndarray
    metric: str
    model: str = ""
    seeds: Optional[int] = None
    level: Optional[float] = None
    weight_decay_opt_low: Optional[np.ndarray] = None
    weight_decay_opt_high: Optional[np.ndarray] = None
    weight_decay_opt_solver_se: Optional[np.ndarray] = None
    units: ClassVar[Mapping[str, str]] = _units("learning_rate", "steps", "time", "weight_decay_opt",
                                                "best", "c", "zero_loss", "validity", "seeds", "level",
                                                "weight_decay_opt_low", "weight_decay_opt_high",
                                                "weight_decay_opt_solver_se")

    @property
    def lam_opt(self) -> np.ndarray:
        """Older name of :attr:`weight_decay_opt`."""
        return self.weight_decay_opt

    @property
    def at_edge(self) -> np.ndarray:
        """Older name: budgets flagged GRID_EDGE."""
        return np.array([v is Validity.GRID_EDGE for v in self.validity]).reshape(self.time.shape)


@dataclass(frozen=True, eq=False)
class LambdaRule:
    """The rule ``lam = c / (eta T)`` with ``c`` taken from reference rows of :func:`t_star` that have a
    clear interior minimum (validity OK) only -- a separate, labelled output, not the theory's optimum.

    Fields:
      c: geometric mean of ``lam * t*`` over the OK reference rows (NaN if none).
      reference_weight_decay: the weight decays whose ``c`` was used (K,).
      reference_c: their ``c`` values (K,).
      learning_rate, steps, time: the budgets (broadcast shape S); time in η·steps.
      weight_decay_rule: ``c / time`` (1/(η·steps)).
      validity: OK, or NO_INTERIOR_OPTIMUM when no reference row had a clear interior minimum.
    """

    c: float
    reference_weight_decay: np.ndarray
    reference_c: np.ndarray
    learning_rate: np.ndarray
    steps: np.ndarray
    time: np.ndarray
    weight_decay_rule: np.ndarray
    validity: Validity
    units: ClassVar[Mapping[str, str]] = _units("c", "reference_weight_decay", "reference_c", "learning_rate", "steps", "time",
                                                "weight_decay_rule", "validity")


__all__ = ["Curves", "TStar", "LambdaOpt", "LambdaRule"]
