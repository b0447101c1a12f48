"""widelimit: infinite-width theory of L2 regularisation, checked against finite networks.

Public names are re-exported here and imported lazily on first use, so ``import widelimit`` is cheap.
Importing widelimit never imports neural-tangents or TensorFlow (only ``widelimit.kernels.nt_backend``
does, when an NT kernel is requested) and never changes JAX's global float64 flag (``widelimit._x64``).

Theory::

    from widelimit import MLP, DataKernels, predict_model, t_star, lambda_opt
Finite nets::

    from widelimit import RunConfig, train_ensemble
    from widelimit.train import train       # ``widelimit.train`` is the subpackage, not the function
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "widelimit.arch": ["MLP", "CNN", "Spec"],
    "widelimit.kernels": ["Kernels", "analytic_kernels", "kernel_fn", "DataKernels", "cross_scale_kernels"],
    "widelimit.nets": ["init_params", "apply", "scale_invariant_mask", "empirical_ntk", "empirical_ntk_of_spec",
                       "homogeneity_degree", "measure_homogeneity"],
    "widelimit.dynamics": ["L2Flow", "L2FlowEnsemble", "ExpectedLoss", "FlowLoss", "LossModel",
                           "integrate_flow", "mode_coefficients",
                           "solve_norm_map", "solve_norm_ode", "equilibrium", "norm_sq_trajectory",
                           "NormDynamics", "CrossScaleFlow", "VolterraLoss"],
    "widelimit.predict": ["predict_model", "loss_curves", "t_star", "lambda_opt", "lambda_rule", "to_rows",
                          "table_rows"],
    "widelimit.predict_norms": ["norm_predictions", "norm_prediction_table"],
    "widelimit.data": ["load_dataset", "Dataset"],
    "widelimit.results": ["ResultStore"],
    "widelimit.train": ["RunConfig", "RunResult", "train_ensemble", "run_sweep", "AutoL2", "autol2",
                        "make_optimizer"],
    "widelimit.tables": ["Table"],
    "widelimit.comparison": ["compare", "CompareResult"],
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE) + ["__version__"]


def __getattr__(name: str):
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'widelimit' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
