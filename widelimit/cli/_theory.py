"""Bridge from the command line to the library's predictions (the ONLY place the CLI calls theory).

It builds the default loss model (:class:`widelimit.dynamics.loss.ExpectedLoss`, f0 averaged over the
NNGP prior; ``--f0 zero``: :class:`~widelimit.dynamics.loss.FlowLoss` from f0 = 0) and asks it for t*,
λ_opt and their validity.

TODO(cli): the t*/λ_opt searches and validity rules below are a stop-gap mirroring docs/theory.md §3 until
``widelimit.predict.t_star``/``lambda_opt`` accept a LossModel and return Validity flags; then this module
shrinks to calls of those functions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from widelimit.validity import Validity

from .errors import CommandError

#: a best loss within this fraction of the zero function's loss counts as "nothing learned"
NO_LEARNING_MARGIN = 0.01
#: a t* shorter than this many optimiser steps is outside the flow approximation
MIN_STEPS = 5.0
#: λt window searched for t*
S_RANGE = (1e-3, 1e2)


@dataclass(frozen=True)
class TStarRow:
    """Best time of one λ: ``t_star`` (η·steps), ``loss`` there (MSE), ``validity``."""

    weight_decay: float
    t_star: float
    loss: float
    validity: Validity


@dataclass(frozen=True)
class LambdaOptRow:
    """Best λ for one budget of ``steps`` (time ``learning_rate·steps``): ``weight_decay`` and its ``loss``."""

    steps: int
    time: float
    weight_decay: float
    loss: float
    validity: Validity


def loss_model(prob, f0: str):
    """The loss model of ``prob`` for ``f0`` (``"nngp"`` or ``"zero"``); CommandError if the kernels are
    not valid (e.g. a saved kernel that is not symmetric positive semi-definite)."""
    from widelimit.dynamics.loss import ExpectedLoss, FlowLoss
    from widelimit.dynamics.ntk_l2 import L2Flow
    k = prob.kernels
    try:
        if f0 == "nngp":
            return ExpectedLoss(k.ntk_train_train, k.ntk_test_train, k.nngp_train_train, k.nngp_test_train,
                                k.nngp_test_test, k.y_train, k.y_test, k.L)
        flow = L2Flow(k.ntk_train_train, k.y_train, 0.0, k.L, ntk_test_train=k.ntk_test_train)
        return FlowLoss(flow, k.y_test, learning_rate=None)
    except ValueError as e:
        raise CommandError(f"cannot build the L2 flow from {prob.source}: {e}") from e


def _common_validity(model, loss: float, learning_rate: Optional[float]) -> Optional[Validity]:
    if learning_rate is not None and learning_rate * model.mu_max >= 2:
        return Validity.UNSTABLE
    z = model.zero_loss()
    if loss >= z * (1 - NO_LEARNING_MARGIN):
        return Validity.NO_LEARNING
    return None


def t_star(model, weight_decay: float, learning_rate: Optional[float] = None, n_grid: int = 200) -> TStarRow:
    """Minimum over ``t = s/λ``, ``s`` log-spaced in :data:`S_RANGE`, refined by a bounded search in log t."""
    from scipy.optimize import minimize_scalar
    lam = float(weight_decay)
    t = np.geomspace(*S_RANGE, n_grid) / lam
    y = model.test_loss(lam, t)
    j = int(np.argmin(y))
    ts, best = float(t[j]), float(y[j])
    edge = j in (0, t.size - 1)
    if not edge:
        r = minimize_scalar(lambda u: float(model.test_loss(lam, [math.exp(u)])[0]), method="bounded",
                            bounds=(math.log(t[j - 1]), math.log(t[j + 1])), options={"xatol": 1e-8})
        if r.fun <= best:
            ts, best = math.exp(r.x), float(r.fun)
    v = _common_validity(model, best, learning_rate)
    if v is None:
        v = (Validity.GRID_EDGE if edge else
             Validity.TOO_FAST if learning_rate is not None and ts / learning_rate < MIN_STEPS else Validity.OK)
    return TStarRow(lam, ts, best, v)


def lambda_opt(model, steps: Sequence[int], learning_rate: float, lams: Optional[Sequence[float]] = None,
               per_decade: int = 16) -> List[LambdaOptRow]:
    """Per budget: the λ minimising the test loss after ``steps`` (time ``η·steps``), over ``lams`` (default:
    ``per_decade`` per decade across 1e-3 to 1e3 over ``ηT``), refined by a bounded search in log λ."""
    from scipy.optimize import minimize_scalar
    out = []
    for T in steps:
        time = learning_rate * T
        grid = (np.asarray(sorted(lams), dtype=float) if lams is not None else
                np.geomspace(1e-3 / time, 1e3 / time, 6 * per_decade + 1))
        y = np.array([model.test_loss(lam, [time])[0] for lam in grid])
        j = int(np.argmin(y))
        lo, best, edge = float(grid[j]), float(y[j]), j in (0, grid.size - 1)
        if not edge:
            r = minimize_scalar(lambda u: float(model.test_loss(math.exp(u), [time])[0]), method="bounded",
                                bounds=(math.log(grid[j - 1]), math.log(grid[j + 1])), options={"xatol": 1e-8})
            if r.fun <= best:
                lo, best = math.exp(r.x), float(r.fun)
        v = _common_validity(model, best, learning_rate) or (Validity.GRID_EDGE if edge else Validity.OK)
        out.append(LambdaOptRow(int(T), time, lo, best, v))
    return out


def decay_times(L: int, weight_decay: float):
    """Kernel decay time ``1/(2(L−1)λ)`` (∞ for L = 1) and output decay time ``1/(Lλ)`` in η·steps
    (docs/theory.md §2: the NTK shrinks as e^{−2(L−1)λt}, the outputs as e^{−Lλt})."""
    return (1.0 / (2 * (L - 1) * weight_decay) if L > 1 else math.inf), 1.0 / (L * weight_decay)
