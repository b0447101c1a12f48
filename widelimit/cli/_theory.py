"""Bridge from the command line to the library's predictions (the one place the CLI calls theory).

Everything here is a call of :mod:`widelimit.predict` -- the same functions, defaults and validity rules as
in Python (docs/theory.md §3): the default model :func:`~widelimit.predict.predict_model` (test MSE averaged
over f0 ~ NNGP; ``--f0 zero`` the flow from f0 = 0), :func:`~widelimit.predict.t_star`,
:func:`~widelimit.predict.lambda_opt` (the theory's own refined optimum) and
:func:`~widelimit.predict.lambda_rule` (c/(ηT) with c from rows with a clear interior minimum only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from .errors import CommandError, UsageError


def loss_model(prob, f0: str, learning_rate: Optional[float] = None, solver: str = "auto",
               show_progress: bool = False):
    """:func:`widelimit.predict.predict_model` of the problem's kernels (gradient flow, or full-batch GD at
    ``learning_rate``; ``solver`` "auto", "eigh" or "krylov" as there); ``show_progress``: a tqdm bar on
    stderr over the Krylov path's kernel passes (their number is set by its stopping rule)."""
    import sys

    from widelimit.predict import predict_model
    from widelimit.predict.models import resolve_solver
    n = prob.kernels.ntk_train_train.shape[0]
    bar = None
    if show_progress and resolve_solver(solver, n, f0) == "krylov":
        from tqdm.auto import tqdm
        bar = tqdm(desc=f"Krylov passes ({f0})", unit="pass", file=sys.stderr, leave=False)

    def on_pass(passes, dims):
        bar.update(passes - bar.n)
        bar.set_postfix_str("basis " + " + ".join(str(d) for d in dims), refresh=False)
    try:
        with solver_threads(solver, n, f0):
            return predict_model(prob.kernels, f0=f0, learning_rate=learning_rate, solver=solver,
                                 progress=None if bar is None else on_pass)
    except ValueError as e:
        raise CommandError(f"cannot build the {f0} model from {prob.source}: {e}") from e
    finally:
        if bar is not None:
            bar.close()


def solver_threads(solver: str, n_train: int, f0: str = "nngp"):
    """BLAS limited to one thread while the Krylov path builds its bases (what ``bench_scale.py --tune``
    measured, benchmarks/RESULTS_scale.md: the thin float64 products of the kernel passes and the small
    dense algebra of the recurrence ran faster on one thread of the shared machine); no limit for eigh,
    whose O(N^3) eigendecomposition uses every core."""
    from widelimit.kernels.blockwise import blas_threads
    from widelimit.predict.models import resolve_solver
    return blas_threads(1 if resolve_solver(solver, n_train, f0) == "krylov" else None)


def spread_model(prob, learning_rate: Optional[float] = None):
    """:func:`widelimit.predict.spread.spread_model` of the problem's kernels (``--seeds``): the expected loss
    over f0 ~ NNGP and its distribution; needs the full test-test NNGP block."""
    from widelimit.predict.spread import spread_model as _spread_model
    try:
        return _spread_model(prob.kernels, learning_rate=learning_rate)
    except ValueError as e:
        raise UsageError(f"--seeds: {' '.join(str(e).split())} (with --kernels: save nngp_test_test as the "
                         "full (M, M) block)") from None


def t_star_spread(model, weight_decays: Sequence[float], seeds: int):
    """:func:`widelimit.predict.spread.t_star_spread` (central 80% interval of t* for ``seeds`` seeds)."""
    from widelimit.predict.spread import t_star_spread as _t_star_spread
    return _t_star_spread(model, list(weight_decays), seeds=seeds)


def lambda_opt_spread(model, steps: Sequence[int], learning_rate: float, seeds: int, weight_decays=None):
    """:func:`widelimit.predict.spread.lambda_opt_spread` (central 80% interval of λ_opt for ``seeds`` seeds)."""
    from widelimit.predict.spread import lambda_opt_spread as _lambda_opt_spread
    try:
        return _lambda_opt_spread(model, steps=list(steps), learning_rate=learning_rate, seeds=seeds,
                                  weight_decays=weight_decays)
    except ValueError as e:
        raise UsageError(f"--search-weight-decay: {e}") from None


def t_star(model, weight_decays: Sequence[float], learning_rate: Optional[float], solver_error=None):
    """:func:`widelimit.predict.t_star` (a :class:`~widelimit.predict.TStar`, one validity per row)."""
    from widelimit.predict import t_star as _t_star
    return _t_star(model, weight_decays=list(weight_decays),
                   learning_rate=None if getattr(model, "learning_rate", None) is not None else learning_rate,
                   solver_error=solver_error)


def lambda_opt(model, steps: Sequence[int], learning_rate: float, weight_decays=None):
    """:func:`widelimit.predict.lambda_opt` for the budgets ``steps`` at ``learning_rate``."""
    from widelimit.predict import lambda_opt as _lambda_opt
    try:
        return _lambda_opt(model, steps=list(steps), learning_rate=learning_rate, weight_decays=weight_decays)
    except ValueError as e:
        raise UsageError(f"--search-weight-decay: {e}") from None


def lambda_rule(model, reference_weight_decays, steps, learning_rate: float):
    """:func:`widelimit.predict.lambda_rule`: c/(ηT) with c from the OK rows of the reference λ."""
    from widelimit.predict import lambda_rule as _lambda_rule
    return _lambda_rule(model, reference_weight_decays=list(reference_weight_decays), steps=list(steps),
                        learning_rate=learning_rate)


def decay_times(L: int, weight_decay: float):
    """Kernel decay time ``1/(2(L−1)λ)`` (∞ for L = 1) and output decay time ``1/(Lλ)`` in η·steps
    (docs/theory.md §2: the NTK shrinks as e^{−2(L−1)λt}, the outputs as e^{−Lλt})."""
    import math
    return (1.0 / (2 * (L - 1) * weight_decay) if L > 1 else math.inf), 1.0 / (L * weight_decay)


@dataclass(frozen=True)
class Row:
    """One row of a prediction as the tables print it.

    Fields: ``weight_decay`` λ (float, 1/(η·steps)); ``t_star`` (η·steps; None for budget rows); ``loss``
    (test MSE at the optimum); ``validity`` (:class:`widelimit.validity.Validity`); for budgets also
    ``steps`` (T) and ``time`` (η·T, in η·steps); ``solver_se``: the standard error of the row's optimum
    (t* in η·steps, λ_opt in 1/(η·steps)) from a stochastic solver (Hutch++ probes of the Krylov model,
    jackknife, docs/theory.md §4.3), None for an exact model."""

    weight_decay: float
    t_star: Optional[float]
    loss: float
    validity: object
    steps: Optional[int] = None
    time: Optional[float] = None
    solver_se: Optional[float] = None

    def __post_init__(self):
        object.__setattr__(self, "weight_decay", float(self.weight_decay))


def t_star_rows(result):
    """The rows of a :class:`~widelimit.predict.TStar`."""
    se = result.t_star_solver_se
    se = [None] * len(result.t_star) if se is None else [float(x) for x in se]
    return [Row(lam, float(t), float(b), v, solver_se=e) for lam, t, b, v, e in
            zip(result.weight_decay, result.t_star, result.best, result.validity, se)]


def lambda_opt_rows(result):
    """The rows of a :class:`~widelimit.predict.LambdaOpt` over a 1-D list of budgets."""
    import numpy as np
    se = result.weight_decay_opt_solver_se
    se = [None] * result.best.size if se is None else [float(x) for x in np.asarray(se).reshape(-1)]
    return [Row(lam, None, float(b), v, int(T), float(t), e) for lam, b, v, T, t, e in
            zip(result.weight_decay_opt.reshape(-1), result.best.reshape(-1), result.validity,
                result.steps.reshape(-1), result.time.reshape(-1), se)]
