"""Predictions a user can act on: t*, the best weight decay for a budget, curves -- with validity flags.

Every function accepts any :class:`~widelimit.dynamics.LossModel` (and, for convenience, an
:class:`~widelimit.dynamics.L2Flow` / :class:`~widelimit.dynamics.L2FlowEnsemble` with ``y_test``, or a
:class:`widelimit.kernels.DataKernels`). The default model is :func:`predict_model`: the test MSE averaged
over ``f0 ~ NNGP`` (what seed averages of finite networks follow), as flow or as GD at the run's
learning rate; ``predict_model(kernels, f0="zero")`` is the ``f0 = 0`` flow. docs/theory.md §3::

    from widelimit import DataKernels, predict_model, t_star, lambda_opt
    model = predict_model(kernels, learning_rate=0.1)            # E over f0 ~ NNGP, GD at eta = 0.1
    t_star(model, weight_decays=[1e-2, 1e-3]).t_star              # η·steps, with .validity per row
    lambda_opt(model, steps=[1000, 10000]).weight_decay_opt       # the theory's own optimum

Conventions: penalty ``(lambda/2)||theta||^2`` with ``lambda = weight_decay``; physical time ``t = eta * steps``; test loss the MSE
``1/(2 M K) sum (f - y)^2``; accuracy the fraction of test points with ``argmax_k f = argmax_k y``
(``K >= 2``) or matching sign (``K = 1``).
"""
from .models import NO_LEARNING_RTOL, TOO_FAST_STEPS, as_model, predict_model
from .results import Curves, LambdaOpt, LambdaRule, TStar
from .rows import table_rows, to_rows
from .search import METRICS, POINTS_PER_DECADE, lambda_opt, lambda_rule, loss_curves, t_star
from .spread import SeedSpread, lambda_opt_spread, loss_spread, spread_model, t_star_spread

__all__ = ["predict_model", "as_model", "t_star", "lambda_opt", "lambda_rule", "loss_curves", "to_rows",
           "table_rows", "Curves", "TStar", "LambdaOpt", "LambdaRule", "METRICS", "POINTS_PER_DECADE",
           "NO_LEARNING_RTOL", "TOO_FAST_STEPS", "SeedSpread", "spread_model", "loss_spread", "t_star_spread",
           "lambda_opt_spread"]
