"""Theory-side dynamics (NumPy/SciPy float64; nothing here knows about training loops).

* NTK regime with L2 (Lewkowycz & Gur-Ari): :class:`L2Flow` (closed form, MSE),
  :class:`L2FlowEnsemble` (mean/covariance over NNGP initialisations), :func:`integrate_flow`
  (numerical function-space ODE, MSE / softmax cross-entropy), :func:`mode_coefficients`.
* Scale-invariant weights (van Laarhoven and follow-ups): :func:`solve_norm_map`,
  :func:`solve_norm_ode`, :func:`equilibrium`, :func:`norm_sq_trajectory`, schedules.
"""
from .ensemble import L2FlowEnsemble
from .norms import (OPTIMIZERS, Equilibrium, NormDynamics, NormOptimizer, adam_l2_antiderivative,
                    angular_update, constant, cosine_decay, equilibrium, fit_relaxation_time,
                    lambda_drops, make_optimizer, norm_sq_trajectory, solve_norm_map, solve_norm_ode,
                    step_decay, unit_grad_norm_sq, warmup)
from .ntk_l2 import FlowOutputs, L2Flow
from .ode import integrate_flow
from .special import ModeCoefficients, mode_coefficients, rates, scaled_upper_gamma

__all__ = [
    "L2Flow", "FlowOutputs", "L2FlowEnsemble", "integrate_flow", "ModeCoefficients",
    "mode_coefficients", "rates", "scaled_upper_gamma",
    "OPTIMIZERS", "NormOptimizer", "make_optimizer", "NormDynamics", "solve_norm_map", "solve_norm_ode",
    "Equilibrium", "equilibrium", "norm_sq_trajectory", "adam_l2_antiderivative", "constant",
    "step_decay", "cosine_decay", "warmup", "lambda_drops", "angular_update", "unit_grad_norm_sq",
    "fit_relaxation_time",
]
