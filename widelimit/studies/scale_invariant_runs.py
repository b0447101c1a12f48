r"""Study 4, the runs: cases, their training configurations and the instrumented (vmapped) training.

A :class:`Case` is one normalisation × optimiser × hyper-parameter setting; it is trained for every seed of
its size in one vmapped program (:func:`widelimit.train.ensemble.train_members` with the instrumentation
hooks of :mod:`widelimit.train.hooks`). Per step and per scale-invariant layer the record holds
``x_k = ‖W_k‖²``, the minibatch ``G_k = ‖∇_W ℓ_B(W_k)‖² x_k`` (squared gradient norm at unit scale), the angle
between ``W_k`` and ``W_{k+1}`` (radians) and the preconditioner factor ``κ_k`` of the one effective learning
rate of the project (docs/theory.md §6)

    η_eff,k = η κ_k / x_k,   κ_k = Σ_i g_i² P_i / Σ_i g_i²,   P_i = 1/(√v̂_i + ε)   (κ = 1 without Adam),

the gradient-weighted Adam preconditioner (the definition the optax simulations of ``tests/test_norms_sim.py``
measure as well). Units: steps; physical time ``t = η·steps``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

NAME = "scale_invariant"

# harness optimiser name (widelimit.train) -> norm-dynamics optimiser name (widelimit.dynamics.norms)
_DYN_NAME = {"sgd": "sgd", "gd": "sgd", "momentum": "momentum", "adam": "adam", "adamw": "adamw"}
_SHORT = {"sgd": "SGD", "momentum": "momentum", "adam": "Adam+L2", "adamw": "AdamW"}
_OPTS = ("sgd", "momentum", "adam", "adamw")
KICK_FACTOR = 2.0  # the scale-invariant weights are doubled at the kick (the function does not change)
TOL = 0.1          # "at equilibrium": ||w|| within 10% of its equilibrium value from then on


@dataclass(frozen=True)
class Case:
    """One training setting of the study (trained for every seed of the size).

    ``optimizer`` is the harness name (``sgd``, ``momentum``, ``adam`` = Adam + coupled L2, ``adamw``);
    ``lr`` the learning rate η; ``lam`` the L2 / weight-decay coefficient λ (project convention, penalty
    ``(λ/2)‖w‖²``); ``W_std`` sets the initial norm of the scale-invariant weights (standard parameterisation:
    ``‖W‖² ~ W_std² · fan_out``); ``seed`` the run's seed.
    """

    norm: str
    optimizer: str
    lr: float
    lam: float
    momentum: float = 0.0
    W_std: float = math.sqrt(2.0)
    net: str = "mlp"
    seed: int = 0

    @property
    def dyn_name(self) -> str:
        return _DYN_NAME[self.optimizer]

    def options(self) -> Dict[str, Any]:
        """The optimiser options of the case as :class:`~widelimit.train.RunConfig` fields."""
        return {"momentum": self.momentum} if self.optimizer == "momentum" else {}

    def group(self) -> "Case":
        """The case with seed 0: the key of its seed group."""
        return Case(self.norm, self.optimizer, self.lr, self.lam, self.momentum, self.W_std, self.net, 0)


#: per-optimiser (eta, lam[, momentum]) chosen so that the norm relaxes in ~30-125 steps
_HP = {"sgd": dict(lr=0.1, lam=0.05), "momentum": dict(lr=0.01, lam=0.05, momentum=0.9),
       "adam": dict(lr=4e-3, lam=0.05), "adamw": dict(lr=4e-3, lam=1.0)}
_SMALL_INIT = 0.1  # W_std for BatchNorm/LayerNorm nets: start below the equilibrium norm

#: sizes. MNIST-1D (4000 train / 1000 test signals of length 40): hard enough that the loss, and so G, does
#: not collapse to zero within the run. ``norms``: normalisations run with every optimiser; ``seeds``: per
#: case (vmapped). smoke: a fast-relaxing SGD case only (τ = 1/(4ηλ) = 12.5 steps).
_SETTINGS = {
    "smoke": dict(data_options={"n_train": 256, "n_test": 64}, width=16, depth=2, channels=8, steps=120,
                  kick=80, eval_every=20, batch_size=32, seeds=4, norms=()),
    "quick": dict(data_options={}, width=64, depth=3, channels=32, steps=1000, kick=600, eval_every=50,
                  batch_size=64, seeds=8, norms=("batch",)),
    "medium": dict(data_options={}, width=128, depth=3, channels=32, steps=1200, kick=800, eval_every=50,
                   batch_size=64, seeds=8, norms=("batch", "weight")),
    "full": dict(data_options={}, width=512, depth=4, channels=64, steps=3000, kick=2000, eval_every=100,
                 batch_size=128, seeds=8, norms=("batch", "layer", "weight")),
}


def _cases(size: str) -> Tuple[List[Case], List[Case]]:
    """(cases with L2, cases without L2) for ``size``, one :class:`Case` per seed."""
    st = _SETTINGS[size]
    seeds = range(st["seeds"])
    init = {"batch": _SMALL_INIT, "layer": _SMALL_INIT, "weight": math.sqrt(2.0)}
    if size == "smoke":
        return ([Case("batch", "sgd", lr=0.2, lam=0.1, W_std=0.3, seed=s) for s in seeds],
                [Case("batch", "sgd", lr=0.2, lam=0.0, W_std=0.3, seed=s) for s in seeds[:2]])
    with_l2 = [Case(n, o, W_std=init[n], seed=s, **_HP[o]) for n in st["norms"] for o in _OPTS for s in seeds]
    with_l2 += [Case("batch", "sgd", lr=0.1, lam=0.02, W_std=_SMALL_INIT, seed=s) for s in seeds]
    if size == "full":
        with_l2 += [Case("batch", "sgd", lr=0.1, lam=0.005, W_std=_SMALL_INIT, seed=s) for s in seeds]
        with_l2 += [Case("batch", "adamw", lr=4e-3, lam=0.2, W_std=_SMALL_INIT, seed=s) for s in seeds]
        with_l2 += [Case("batch", o, W_std=_SMALL_INIT, net="cnn", seed=s, **_HP[o]) for o in _OPTS for s in seeds]
    n0 = min(st["seeds"], 4)
    no_l2 = [Case("batch", o, lr=lr, lam=0.0, W_std=_SMALL_INIT, seed=s)
             for o, lr in (("sgd", 0.1), ("adamw", 4e-3)) for s in range(n0)]
    return with_l2, no_l2


def run_config(case: Case, size: str):
    """The :class:`~widelimit.train.RunConfig` of ``case`` at ``size`` (MNIST-1D, cross-entropy, minibatch,
    standard parameterisation, no biases, L2 on every weight matrix ``*/W``)."""
    from ..arch import CNN, MLP
    from ..train import RunConfig

    st = _SETTINGS[size]
    if case.net == "mlp":
        spec = MLP(depth=st["depth"], width=st["width"], out_dim=10, norm=case.norm, W_std=case.W_std,
                   parameterization="standard")
        layout = "flat"
    else:
        spec = CNN(depth=st["depth"] - 1, channels=st["channels"], kernel_size=5, ndim=1, out_dim=10,
                   norm=case.norm, W_std=case.W_std, parameterization="standard")
        layout = "signal"
    return RunConfig(arch=spec, data="mnist1d", data_options={**st["data_options"], "layout": layout},
                     optimizer=case.optimizer, learning_rate=case.lr, weight_decay=case.lam,
                     weight_decay_mask=["*/W"], loss="xent", **case.options(),
                     batch_size=st["batch_size"], steps=st["steps"], eval_every=st["eval_every"],
                     seed=case.seed, dtype="float32")


def adam_kappa_probe(layers: Sequence[str], b2: float, eps: float):
    """Step probe: per layer the gradient-weighted Adam preconditioner ``κ = Σ g_i² P_i / Σ g_i²``,
    ``P_i = 1/(√v̂_i + ε)`` (v̂ after the step's update), shape ``(S,)``; 1 for arrays without Adam moments."""
    import jax.numpy as jnp
    import optax.tree_utils as otu

    layers = tuple(layers)

    def probe(v):
        adam = otu.tree_get(v.opt_state, "ScaleByAdamState")
        out = []
        for n in layers:
            g = v.grads[n]["W"]
            nu = None if adam is None else adam.nu[n]["W"]
            if not hasattr(nu, "shape"):
                out.append(jnp.ones((), g.dtype))
                continue
            vh = nu / (1.0 - jnp.asarray(b2, g.dtype) ** adam.count.astype(g.dtype))
            out.append(jnp.sum(g * g / (jnp.sqrt(vh) + eps)) / jnp.maximum(jnp.sum(g * g), 1e-30))
        return jnp.stack(out)
    return probe


def _hooks(cfg, layers, kick_step, kick_factor):
    from ..train import Hooks
    from ..train.hooks import adam_preconditioner, kick, unit_norms_probe, weight_probes

    adam = cfg.optimizer in ("adam", "adamw")
    extra = {"adam": adam_preconditioner(layers, cfg.b2, cfg.eps),
             "kappa_g": adam_kappa_probe(layers, cfg.b2, cfg.eps)} if adam else {}
    return Hooks(step_probes={**weight_probes(layers, per_unit=True), **extra},
                 eval_probes={"unit_norms": unit_norms_probe(layers)},
                 before_step=kick(layers, -1 if kick_step is None else kick_step, kick_factor))


def _check(cfg, E, kick_step, kick_factor):
    if isinstance(cfg.learning_rate, dict) or isinstance(cfg.weight_decay, dict):
        raise ValueError("config: instrumented_run needs a constant learning_rate and a constant weight_decay "
                         f"(got learning_rate={cfg.learning_rate!r}, weight_decay={cfg.weight_decay!r})")
    if isinstance(E, bool) or not isinstance(E, int) or E < 1 or cfg.steps % E:
        raise ValueError(f"eval_every must be a positive int dividing steps={cfg.steps}, got {E!r}")
    if kick_step is not None and (isinstance(kick_step, bool) or not isinstance(kick_step, int)
                                  or not 0 < kick_step < cfg.steps):
        raise ValueError(f"kick_step must be None or an int in (0, steps={cfg.steps}), got {kick_step!r}")
    if isinstance(kick_factor, bool) or not isinstance(kick_factor, (int, float)) or not kick_factor > 0:
        raise ValueError(f"kick_factor must be a number > 0, got {kick_factor!r}")


def instrumented_runs(configs: Sequence[Any], data=None, *, eval_every: Optional[int] = None,
                      kick_step: Optional[int] = None, kick_factor: float = 2.0) -> List[Dict[str, np.ndarray]]:
    """Train ``configs`` (:class:`~widelimit.train.RunConfig` differing only in seed / constant η / λ) in one
    vmapped program with the instrumentation hooks; one record per config (see :func:`instrumented_run`)."""
    import jax

    from ..nets import init_params, scale_invariant_mask
    from ..train import RunConfig
    from ..train.ensemble import train_members

    configs = list(configs)
    if not configs or not all(isinstance(c, RunConfig) for c in configs):
        raise TypeError("config must be a RunConfig (configs: a non-empty list of RunConfig)")
    cfgs = [c.canonical() for c in configs]
    E = cfgs[0].eval_every if eval_every is None else eval_every
    for c in cfgs:
        _check(c, E, kick_step, kick_factor)
    cfgs = [c.replace(eval_every=E) for c in cfgs]
    cfg = cfgs[0]
    if data is None:
        from ..data import load_dataset
        from ..train.loop import precision
        with precision(cfg.dtype):
            data = load_dataset(cfg.data, **cfg.data_options)
    shapes = jax.eval_shape(lambda k: init_params(cfg.spec, k, data.in_shape), jax.random.PRNGKey(0))
    si = scale_invariant_mask(cfg.spec, shapes)
    layers = [n for n in shapes if si[n].get("W", False)]
    if not layers:
        raise ValueError(f"config.arch has no scale-invariant layer (norm={cfg.spec.norm!r}); use "
                         "norm='batch', 'weight', or 'layer' without biases")
    d = [int(np.prod(shapes[n]["W"].shape)) for n in layers]
    ens = train_members(cfgs, data, hooks=_hooks(cfg, layers, kick_step, kick_factor))
    info = ens.info
    return [_record(r, layers, d, cfg.optimizer in ("adam", "adamw"), E, info, len(cfgs)) for r in ens.runs]


def instrumented_run(config, data=None, *, eval_every: Optional[int] = None, kick_step: Optional[int] = None,
                     kick_factor: float = 2.0) -> Dict[str, np.ndarray]:
    """Train ``config`` with the instrumentation hooks and return per-step norm statistics (NumPy).

    ``config``: a :class:`widelimit.train.RunConfig` with a constant learning rate and weight decay;
    ``eval_every`` (must divide ``steps``) replaces the config's logging interval; ``kick_step``: just before
    that step every scale-invariant ``W`` is multiplied by ``kick_factor`` (the function is unchanged) and the
    optimiser moments rescaled to match (:func:`widelimit.train.hooks.kick`). ``S`` scale-invariant layers:

    * per step ``(steps, S)``: ``norm_sq`` ‖W_k‖² (after a kick), ``G_batch`` ‖∇_W ℓ_B(W_k)‖²‖W_k‖², ``angle``
      between W_k and W_{k+1} (rad), ``kappa`` (the η_eff factor of the module docstring) and ``aniso``
      (:func:`widelimit.train.hooks.adam_preconditioner`; 1 without Adam); ``loss`` (steps,); per unit
      ``(steps, S, width)``: ``unit_norm_sq``, ``unit_G_batch``, ``unit_angle``;
    * ``norm_sq_final`` (S,); at ``eval_steps`` = 0, E, …, steps: ``G_full`` (full training set),
      ``unit_norms``, ``readout_norm``, ``train_acc``, ``test_acc``, ``train_loss``, ``test_loss``;
    * ``compile_s``, ``run_s`` (seconds), ``layers``, ``d`` (sizes).
    """
    from ..train import RunConfig

    if not isinstance(config, RunConfig):
        raise TypeError(f"config must be a RunConfig, got {type(config).__name__}")
    return instrumented_runs([config], data, eval_every=eval_every, kick_step=kick_step,
                             kick_factor=kick_factor)[0]


def _record(r, layers, d, adam, E, info, n_members) -> Dict[str, np.ndarray]:
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    out = {k: f64(r.steps[k]) for k in ("norm_sq", "G_batch", "angle", "loss", "unit_norm_sq", "unit_G_batch",
                                         "unit_angle")}
    ones = np.ones_like(out["norm_sq"])
    out["kappa"] = f64(r.steps["kappa_g"]) if adam else ones
    out["aniso"] = f64(r.steps["adam"]["aniso"]) if adam else ones
    out["G_full"] = np.stack([f64(r.layers[f"grad_norm_unit/{n}"]) ** 2 for n in layers], axis=1)
    out["unit_norms"] = f64(r.evals["unit_norms"])
    out["readout_norm"] = f64(r.layers["weight_norm/readout"])
    for k in ("train_loss", "train_acc", "test_loss", "test_acc"):
        out[k] = f64(r.metrics[k])
    out["norm_sq_final"] = np.asarray([f64(r.layers[f"weight_norm/{n}"])[-1] ** 2 for n in layers])
    out["compile_s"] = np.asarray(info["compile_s"] / n_members)
    out["run_s"] = np.asarray(info["run_s"] / n_members)
    out["eval_steps"] = np.arange(0, r.config.steps + 1, E)
    out["layers"] = np.asarray(layers)
    out["d"] = np.asarray(d, np.int64)
    return out


__all__ = ["Case", "run_config", "instrumented_run", "instrumented_runs", "adam_kappa_probe", "NAME",
           "KICK_FACTOR", "TOL"]
