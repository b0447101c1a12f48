"""Which model a prediction uses, and the validity rules every prediction is checked against.

:func:`predict_model` is the default users get: the test MSE averaged over ``f0 ~ NNGP``
(:class:`~widelimit.dynamics.ExpectedLoss`, what seed averages of finite networks measure), as gradient
flow or as full-batch GD at the run's learning rate. ``f0 = 0`` stays available explicitly
(``predict_model(kernels, f0="zero")`` or :meth:`widelimit.dynamics.FlowLoss.from_kernels`).

Validity (docs/theory.md §3.4), first rule that applies wins:

* UNSTABLE: discrete GD outside its stable range, ``eta * mu_max >= 2`` (the top mode diverges; mu_max the
  top eigenvalue of ``Theta/(N K)``) or ``eta * lam >= 1`` (the decay factor ``1 - eta lam`` is ``<= 0``);
* NO_LEARNING: the best loss is within :data:`NO_LEARNING_RTOL` (1 %) of the zero function's loss;
* GRID_EDGE: the optimum lies on the edge of the searched window, so it is only a bound;
* TOO_FAST: ``t*`` is shorter than :data:`TOO_FAST_STEPS` (5) optimiser steps, where the flow is no
  guide to discrete steps.
"""
from __future__ import annotations

from typing import Optional

from ..dynamics import ExpectedLoss, FlowLoss, L2Flow, L2FlowEnsemble, check_model
from ..validity import Validity

NO_LEARNING_RTOL = 0.01    # best loss >= (1 - 1%) * zero-function loss: nothing learned
TOO_FAST_STEPS = 5.0       # t* below this many steps: outside the flow's range
F0_CHOICES = ("nngp", "zero")
SOLVERS = ("auto", "eigh", "krylov")
#: solver="auto": the Krylov path (docs/theory.md §4) from this many training points for f0 = "nngp" (the
#: default). Its expected loss is a Hutch++ estimate with a stated error (~1e-2 relative at N = 5 000,
#: benchmarks/RESULTS_krylov.md) where the dense path is exact, so the dense path is kept up to where its
#: O(N^3) eigendecomposition gets slow (Krylov 2.6-14x faster at N = 5 000 and 19-28x at 10 000).
KRYLOV_MIN_N = 8000
#: solver="auto" for f0 = "zero" (the mean function, exact to rounding on both paths): measured
#: (benchmarks/RESULTS_scale.md §6, ``bench_scale.py crossover``, one process per N, 50 x 50 table, tables
#: equal to <= 6.6e-15) Krylov 4.0x faster at N = 250, 4.3x at 500, 5.4x at 1 000, 13x at 2 000, 18x at
#: 3 000, 29x at 5 000. Below 1 000 the dense path still takes only seconds and holds at every weight decay
#: and time, including the lambda = 0 long-time queries the Krylov stopping rule does not check
#: (KrylovConvergenceWarning), so it stays the default there.
KRYLOV_MIN_N_ZERO = 1000


def predict_model(kernels, *, learning_rate: Optional[float] = None, f0: str = "nngp", solver: str = "auto",
                  progress=None):
    """The default prediction model for a :class:`widelimit.kernels.DataKernels`.

    ``f0="nngp"`` (default): :class:`ExpectedLoss` (needs the NNGP blocks); ``"zero"``: :class:`FlowLoss`
    started from ``f0 = 0``. ``learning_rate``: ``None`` for gradient flow, else full-batch GD at eta.
    ``solver``: ``"eigh"`` (dense eigendecomposition), ``"krylov"``
    (:class:`~widelimit.dynamics.krylov.KrylovLoss`, matrix-free) or ``"auto"`` (Krylov from
    :data:`KRYLOV_MIN_N` training points, :data:`KRYLOV_MIN_N_ZERO` with ``f0="zero"``). ``progress``:
    the Krylov path's ``progress(passes, dims)`` callback (:class:`~widelimit.dynamics.krylov.KrylovLoss`);
    the dense path has none (one eigendecomposition).
    """
    if f0 not in F0_CHOICES:
        raise ValueError(f"f0 must be one of {F0_CHOICES}, got {f0!r}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    for name in ("ntk_train_train", "ntk_test_train", "y_test", "L"):
        if not hasattr(kernels, name):
            raise TypeError(f"kernels must be a widelimit.kernels.DataKernels, got {type(kernels).__name__}")
    if resolve_solver(solver, kernels.ntk_train_train.shape[0], f0) == "krylov":
        from ..dynamics.krylov import KrylovLoss
        return KrylovLoss.from_kernels(kernels, learning_rate=learning_rate, f0=f0, progress=progress)
    if f0 == "zero":
        return FlowLoss.from_kernels(kernels, learning_rate=learning_rate)
    return ExpectedLoss.from_kernels(kernels, learning_rate=learning_rate)


def resolve_solver(solver: str, n_train: int, f0: str = "nngp") -> str:
    """``"eigh"`` or ``"krylov"``: ``solver`` itself, or for ``"auto"`` Krylov from :data:`KRYLOV_MIN_N`
    training points on (:data:`KRYLOV_MIN_N_ZERO` for ``f0="zero"``)."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if f0 not in F0_CHOICES:
        raise ValueError(f"f0 must be one of {F0_CHOICES}, got {f0!r}")
    if solver != "auto":
        return solver
    return "krylov" if n_train >= (KRYLOV_MIN_N_ZERO if f0 == "zero" else KRYLOV_MIN_N) else "eigh"


def as_model(model, y_test=None):
    """Any accepted input as a :class:`~widelimit.dynamics.LossModel`.

    * a LossModel (``y_test`` must be None);
    * an :class:`L2Flow` with test points -> :class:`FlowLoss` (its own f0) with ``y_test``;
    * an :class:`L2FlowEnsemble` with test NNGP kernels -> :class:`ExpectedLoss` with ``y_test``;
    * a :class:`widelimit.kernels.DataKernels` -> :func:`predict_model` (``y_test`` must be None).
    """
    if isinstance(model, (L2Flow, L2FlowEnsemble)):
        if y_test is None:
            raise ValueError(f"y_test is required with an {type(model).__name__}")
        return FlowLoss(model, y_test) if isinstance(model, L2Flow) else ExpectedLoss.from_ensemble(model, y_test)
    if y_test is not None:
        raise ValueError("y_test must be None unless model is an L2Flow or L2FlowEnsemble")
    if hasattr(model, "ntk_train_train") and hasattr(model, "y_test") and not hasattr(model, "test_loss"):
        return predict_model(model)
    return check_model(model)


def unstable(model, learning_rate: Optional[float], weight_decay: float) -> bool:
    """Whether GD at ``learning_rate`` is outside its stable range for ``weight_decay`` (rules above)."""
    if learning_rate is None:
        return False
    return learning_rate * model.mu_max >= 2.0 or learning_rate * weight_decay >= 1.0


def no_learning(best: float, zero: float) -> bool:
    """Whether ``best`` is within :data:`NO_LEARNING_RTOL` of the zero function's loss ``zero``."""
    return best >= (1.0 - NO_LEARNING_RTOL) * zero


def verdict(*, is_unstable: bool, is_no_learning: bool, at_edge: bool, steps: Optional[float] = None
            ) -> Validity:
    """The first applicable :class:`Validity` in the order of the module docstring."""
    if is_unstable:
        return Validity.UNSTABLE
    if is_no_learning:
        return Validity.NO_LEARNING
    if at_edge:
        return Validity.GRID_EDGE
    if steps is not None and steps < TOO_FAST_STEPS:
        return Validity.TOO_FAST
    return Validity.OK


__all__ = ["predict_model", "resolve_solver", "as_model", "unstable", "no_learning", "verdict", "KRYLOV_MIN_N",
           "KRYLOV_MIN_N_ZERO", "NO_LEARNING_RTOL", "TOO_FAST_STEPS"]
