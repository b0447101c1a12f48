"""Theory-side dynamics (NumPy/SciPy float64; nothing here knows about training loops).

* NTK regime with L2 (Lewkowycz & Gur-Ari; docs/theory.md §2): :class:`L2Flow` (outputs, closed form
  for the flow, per-mode recursion for GD at a learning rate), :class:`L2FlowEnsemble` (mean/covariance
  over NNGP initialisations), the test-loss models :class:`ExpectedLoss` (f0 ~ NNGP averaged; the
  default for predictions) and :class:`FlowLoss` (given f0, default 0), both implementing the
  :class:`LossModel` protocol (:mod:`widelimit.dynamics.protocol`); :func:`integrate_flow`
  (numerical function-space ODE, MSE / softmax cross-entropy), :func:`mode_coefficients`,
  :func:`mode_response`, :func:`gd_mode_coefficients`.
* Non-homogeneous MLPs (biases, erf; docs/theory.md §5): :class:`CrossScaleFlow` (Volterra equation,
  Nystrom reference), :class:`SeparableCrossScaleFlow` (kernel fitted once in the scales: fast),
  :class:`VolterraLoss` (a :class:`LossModel`).
* Scale-invariant weights (van Laarhoven and follow-ups): :func:`solve_norm_map`,
  :func:`solve_norm_ode`, :func:`equilibrium`, :func:`norm_sq_trajectory`, schedules.
"""
from .ensemble import L2FlowEnsemble
from .norms import (OPTIMIZERS, Equilibrium, NormDynamics, NormOptimizer, adam_l2_antiderivative,
                    angular_update, constant, cosine_decay, equilibrium, fit_relaxation_time,
                    lambda_drops, make_optimizer, norm_sq_trajectory, solve_norm_map, solve_norm_ode,
                    step_decay, unit_grad_norm_sq, warmup)
from .loss import ExpectedLoss, FlowLoss
from .spread import LossSpread
from .modes import gd_mode_coefficients, mode_response
from .ntk_l2 import FlowOutputs, L2Flow
from .protocol import LossModel, check_model
from .ode import integrate_flow
from .special import ModeCoefficients, mode_coefficients, rates, scaled_upper_gamma
from .volterra import CrossScaleFlow, VolterraOutputs
from .volterra_loss import VolterraLoss
from .volterra_separable import SeparableCrossScaleFlow

__all__ = [
    "L2Flow", "FlowOutputs", "L2FlowEnsemble", "ExpectedLoss", "FlowLoss", "LossSpread", "LossModel", "check_model",
    "mode_response", "gd_mode_coefficients", "integrate_flow", "ModeCoefficients",
    "mode_coefficients", "rates", "scaled_upper_gamma",
    "OPTIMIZERS", "NormOptimizer", "make_optimizer", "NormDynamics", "solve_norm_map", "solve_norm_ode",
    "Equilibrium", "equilibrium", "norm_sq_trajectory", "adam_l2_antiderivative", "constant",
    "step_decay", "cosine_decay", "warmup", "lambda_drops", "angular_update", "unit_grad_norm_sq",
    "fit_relaxation_time",
    "CrossScaleFlow", "SeparableCrossScaleFlow", "VolterraOutputs", "VolterraLoss",
]
