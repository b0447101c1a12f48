"""What the theory predicts for a user's model, from its own measured kernels or its measured noise.

* :func:`ntk_prediction` (L-homogeneous models, docs/theory.md §2–§3): the empirical NTK at
  initialisation and the Monte-Carlo NNGP of the model (:func:`widelimit.models.kernels.model_kernels`,
  in float64) become a :class:`widelimit.kernels.DataKernels` with the measured degree L; the prediction
  is :func:`widelimit.predict.predict_model` (E over f0 ~ NNGP, full-batch GD at the run's η), its t* per
  weight decay, λ_opt per budget, the expected test-loss curves at the logged times and the predicted
  spread of an n-seed average (:mod:`widelimit.predict.spread`). The kernels are a *measured input*
  (``inputs`` says so); they are not fitted to the training runs.
* :func:`norm_prediction` (scale-invariant groups, docs/theory.md §6): equilibrium ‖w‖², angular update
  per step, effective learning rate and relaxation time from
  :func:`widelimit.dynamics.equilibrium`, with the unit-scale gradient noise ``G = ‖∇_w ℓ‖² ‖w‖²``
  measured over a short stretch of training (driven: the prediction uses a measured input).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from ..kernels import DataKernels
from ..models.kernels import SampledKernels, model_kernels
from ..predict import lambda_opt, loss_curves, predict_model, t_star
from ..predict.results import Curves, LambdaOpt, TStar
from ..predict.spread import SeedSpread, loss_spread, spread_model, t_star_spread


def curve_indices(n_logs: int, k: int = 4) -> Tuple[int, ...]:
    """``k`` logged indices spread geometrically over ``1 .. n_logs - 1`` (step 0 is the prior, not a claim)."""
    if n_logs < 2:
        return ()
    return tuple(int(i) for i in np.unique(np.rint(np.geomspace(1, n_logs - 1, k)).astype(int)))


@dataclass(frozen=True, eq=False)
class NTKPrediction:
    """The NTK-regime prediction for one model and data set (times in η·steps, MSE losses).

    Fields: ``kernels`` (:class:`~widelimit.models.kernels.SampledKernels`, the measured input);
    ``data_kernels`` (the :class:`~widelimit.kernels.DataKernels` built from them, with L); ``t_star``
    (:class:`~widelimit.predict.results.TStar` per weight decay, GD at η); ``lambda_opt``
    (:class:`~widelimit.predict.results.LambdaOpt` per budget); ``curves`` (expected test loss at the
    logged times); ``t_star_spread`` (predicted interval of the ``seeds``-seed t*); ``loss_spread``
    (one :class:`~widelimit.predict.spread.SeedSpread` of the n-seed test loss per weight decay, at the
    logged times ``times[spread_index]``, :func:`curve_indices`); ``inputs``: how the kernels were obtained, in words.
    """

    kernels: SampledKernels
    data_kernels: DataKernels
    t_star: TStar
    lambda_opt: LambdaOpt
    curves: Curves
    t_star_spread: SeedSpread
    loss_spread: Tuple[SeedSpread, ...]
    spread_index: Tuple[int, ...]
    inputs: str


def measure_kernels(model, data, settings, *, progress: bool = False) -> SampledKernels:
    """Empirical NTK (mean over ``settings.ntk_seeds`` initialisations) and Monte-Carlo NNGP (full test
    block), float64."""
    import jax.numpy as jnp

    from .._x64 import x64

    with x64():
        m64 = model.with_dtype(jnp.float64)
        seeds = list(range(settings.ntk_seeds)) if model.init is not None else None
        return model_kernels(m64, data.x_train, data.x_test, ntk_seeds=seeds,
                             nngp_samples=settings.nngp_samples, progress=progress, full_test=True)


def ntk_prediction(kernels: SampledKernels, data, L: int, settings, times: np.ndarray, *,
                   name: str = "model") -> NTKPrediction:
    """The prediction of the module docstring at the logged ``times`` (η·steps, shape (T,))."""
    inputs = (f"kernels of {name} measured at initialisation: empirical NTK, mean over {len(kernels.ntk_seeds) or 1} "
              f"initialisation(s) (relative MC error {kernels.ntk_rel_error:.2g}), Monte-Carlo NNGP over "
              f"{kernels.nngp_samples} initialisations (relative MC error {kernels.nngp_rel_error:.2g}); "
              f"degree L = {L} measured")
    dk = DataKernels(kernels.ntk_train_train, kernels.ntk_test_train, np.asarray(data.y_train, np.float64),
                     np.asarray(data.y_test, np.float64), int(L), kernels.nngp_train_train,
                     kernels.nngp_test_train, kernels.nngp_test_test, source=inputs)
    eta = settings.learning_rate
    pm = predict_model(dk, learning_rate=eta)
    lams = list(settings.weight_decays)
    ts = t_star(pm, weight_decays=lams, learning_rate=eta)
    lo = lambda_opt(pm, steps=list(settings.budgets), learning_rate=eta)
    curves = loss_curves(pm, weight_decays=lams, t=np.asarray(times, np.float64))
    sm = spread_model(dk, learning_rate=eta)
    tss = t_star_spread(sm, lams, seeds=settings.seeds, level=settings.level)
    idx = tuple(curve_indices(len(times)))
    spreads = tuple(loss_spread(sm, lam, np.asarray(times, np.float64)[list(idx)], seeds=settings.seeds,
                                level=settings.level, samples=4000) for lam in lams)
    return NTKPrediction(kernels, dk, ts, lo, curves, tss, spreads, idx, inputs)


@dataclass(frozen=True, eq=False)
class NormPrediction:
    """Equilibrium of one scale-invariant group per weight decay (docs/theory.md §6).

    Fields (arrays (P,) over ``weight_decays``): ``group``; ``grad_norm_sq`` (G, the measured unit-scale
    gradient noise, mean over seeds over the first ``noise_steps`` steps); ``norm_sq`` (‖w‖²);
    ``angular_update`` (radians per step); ``effective_lr`` (η/‖w‖², 1/(norm²)); ``relaxation_steps``
    (steps); ``validity`` (:class:`~widelimit.validity.Validity` per weight decay); ``inputs`` (in words).
    """

    group: str
    weight_decays: np.ndarray
    grad_norm_sq: np.ndarray
    norm_sq: np.ndarray
    angular_update: np.ndarray
    effective_lr: np.ndarray
    relaxation_steps: np.ndarray
    validity: tuple
    inputs: str


def norm_prediction(group: str, size: int, shape, G: np.ndarray, settings,
                    optimizer_options: Optional[Dict[str, float]] = None) -> NormPrediction:
    """Equilibrium quantities of a scale-invariant group of ``size`` parameters for every weight decay,
    with the measured unit-scale gradient noise ``G`` (one value per weight decay)."""
    from ..dynamics import equilibrium

    opts = {k: v for k, v in (optimizer_options or {}).items() if k in ("momentum", "b1", "b2") and v is not None}
    lams = np.asarray(settings.weight_decays, np.float64)
    kw = {"shape": tuple(shape)} if settings.optimizer == "muon" and len(shape) == 2 else {}
    eq = equilibrium(settings.optimizer, settings.learning_rate, lams, grad_norm_sq=np.asarray(G, np.float64),
                     d=int(size), **kw, **opts)
    inputs = (f"G = ||grad_w loss||^2 ||w||^2 of {group} measured over the first {settings.noise_steps} steps "
              "of the same runs (driven)")
    return NormPrediction(group, lams, np.asarray(G, np.float64), np.broadcast_to(eq.norm_sq, lams.shape).copy(),
                          np.broadcast_to(eq.angular_update, lams.shape).copy(),
                          np.broadcast_to(eq.effective_lr, lams.shape).copy(),
                          np.broadcast_to(eq.relaxation_steps, lams.shape).copy(),
                          tuple(np.broadcast_to(eq.validity, lams.shape).tolist()), inputs)


__all__ = ["NTKPrediction", "NormPrediction", "measure_kernels", "ntk_prediction", "norm_prediction",
           "curve_indices"]
