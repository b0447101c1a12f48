"""Instrumentation hooks of the training loop (:func:`widelimit.train.train`) and the probes studies use.

A :class:`Hooks` value is part of a :class:`~widelimit.train.loop.Program` (static: it changes the compiled
program, not the training). Per step ``k`` (``k`` updates done before it) the loop calls

1. ``before_step(params, opt_state, k) -> (params, opt_state)`` (an intervention, e.g. :func:`kick`);
2. the minibatch gradient and the optimiser update, ``θ_k → θ_{k+1}``;
3. every ``step_probes[name](view)`` on a :class:`StepView`; its outputs are stacked over all steps into
   ``RunResult.steps[name]`` (leading axis ``steps``).

At every logging point ``eval_probes[name](params, opt_state)`` is recorded into ``RunResult.evals[name]``
(leading axis: logging points, the first at step 0). All probes are pure ``jax.numpy`` functions of traced
values (jit/vmap-able). Optimiser-state probes read the state with ``optax.tree_utils`` (``tree_get``,
``tree_get_all_with_path``, ``tree_set``), never by walking it by hand.

Weight groups: a probe takes ``layers`` (names of layers with a weight ``"W"``). *Whole-matrix* quantities
treat ``W`` as one vector (the invariant group of LayerNorm); *per-unit* quantities treat each output unit
``W[..., j]`` (column of a Dense weight ``(fan_in, fan_out)``, filter of output channel j of a conv) as its
own vector (the invariant groups of BatchNorm and WeightNorm). Units: angles in radians per step; ``G`` is
the squared gradient norm at unit scale ``‖∇_W ℓ_B‖²‖W‖²`` on the step's minibatch (for a scale-invariant
``W``: the squared gradient at ``W/‖W‖``); effective learning rate ``η κ/‖W‖²`` (κ = 1 except for Adam-type
optimisers, see :func:`adam_preconditioner`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import optax.tree_utils as otu

from .metrics import angle, sq_norm


@dataclass(frozen=True)
class StepView:
    """What a step probe sees (all traced). ``step``: updates done before this one; ``params``: θ_k (after
    ``before_step``); ``new_params``: θ_{k+1}; ``grads``: minibatch gradient of the loss without L2 at θ_k;
    ``loss``: minibatch loss; ``opt_state``: optimiser state after the update; ``learning_rate``: η_k."""

    step: Any
    params: Any
    new_params: Any
    grads: Any
    loss: Any
    opt_state: Any
    learning_rate: Any


@dataclass(frozen=True)
class Hooks:
    """Instrumentation of one program: ``step_probes`` / ``eval_probes`` (``name -> fn``) and ``before_step``
    (see the module docstring). Names must not clash with each other."""

    step_probes: Dict[str, Callable[[StepView], Any]] = field(default_factory=dict)
    eval_probes: Dict[str, Callable[[Any, Any], Any]] = field(default_factory=dict)
    before_step: Optional[Callable[[Any, Any, Any], Any]] = None

    def __post_init__(self) -> None:
        for name in ("step_probes", "eval_probes"):
            d = getattr(self, name)
            if not isinstance(d, dict) or not all(isinstance(k, str) and callable(v) for k, v in d.items()):
                raise TypeError(f"Hooks.{name} must be a dict name -> callable, got {d!r}")
        if self.before_step is not None and not callable(self.before_step):
            raise TypeError(f"Hooks.before_step must be None or callable, got {self.before_step!r}")

    def __hash__(self) -> int:
        return hash((tuple(self.step_probes.items()), tuple(self.eval_probes.items()), self.before_step))


# ------------------------------------------------------------------------------------------------
# weight-space probes
# ------------------------------------------------------------------------------------------------
def _unit_axes(w) -> tuple:
    return tuple(range(w.ndim - 1))


def unit_sq_norms(w):
    """``‖W[..., j]‖²`` per output unit j (shape ``(fan_out,)``)."""
    return jnp.sum(w * w, axis=_unit_axes(w))


def unit_angles(a, b):
    """Angle between ``a[..., j]`` and ``b[..., j]`` per output unit (radians; the stable ``2 atan2`` form of
    :func:`widelimit.train.metrics.angle`; 0 where either is zero)."""
    ax = _unit_axes(a)
    na, nb = jnp.sqrt(jnp.sum(a * a, axis=ax)), jnp.sqrt(jnp.sum(b * b, axis=ax))
    ua, ub = a / jnp.where(na > 0, na, 1.0), b / jnp.where(nb > 0, nb, 1.0)
    ang = 2.0 * jnp.arctan2(jnp.sqrt(jnp.sum((ua - ub) ** 2, axis=ax)), jnp.sqrt(jnp.sum((ua + ub) ** 2, axis=ax)))
    return jnp.where((na > 0) & (nb > 0), ang, 0.0)


def weight_probes(layers: Sequence[str], *, per_unit: bool = False) -> Dict[str, Callable[[StepView], Any]]:
    """Step probes of the weights ``W`` of ``layers`` (stacked over layers: shape ``(S,)`` per step):
    ``norm_sq`` ``‖W_k‖²`` (before the update), ``G_batch`` ``‖∇_W ℓ_B(W_k)‖² ‖W_k‖²``, ``angle`` between
    ``W_k`` and ``W_{k+1}``, ``loss`` (minibatch loss). With ``per_unit=True`` also ``unit_norm_sq``,
    ``unit_G_batch`` (``‖g_j‖²‖w_j‖²``) and ``unit_angle`` per output unit, shape ``(S, fan_out)`` (all
    layers must have the same fan_out)."""
    layers = tuple(layers)

    def stack(f):
        return lambda v: jnp.stack([f(v, n) for n in layers])

    out = {
        "norm_sq": stack(lambda v, n: sq_norm(v.params[n]["W"])),
        "G_batch": stack(lambda v, n: sq_norm(v.grads[n]["W"]) * sq_norm(v.params[n]["W"])),
        "angle": stack(lambda v, n: angle(v.params[n]["W"], v.new_params[n]["W"])),
        "loss": lambda v: v.loss,
    }
    if per_unit:
        out.update({
            "unit_norm_sq": stack(lambda v, n: unit_sq_norms(v.params[n]["W"])),
            "unit_G_batch": stack(lambda v, n: unit_sq_norms(v.grads[n]["W"]) * unit_sq_norms(v.params[n]["W"])),
            "unit_angle": stack(lambda v, n: unit_angles(v.params[n]["W"], v.new_params[n]["W"])),
        })
    return out


def unit_norms_probe(layers: Sequence[str]) -> Callable[[Any, Any], Any]:
    """Eval probe: ``‖W[..., j]‖`` per output unit, shape ``(S, fan_out)``."""
    layers = tuple(layers)
    return lambda params, opt_state: jnp.stack([jnp.sqrt(unit_sq_norms(params[n]["W"])) for n in layers])


# ------------------------------------------------------------------------------------------------
# optimiser-state probes (optax.tree_utils)
# ------------------------------------------------------------------------------------------------
def adam_preconditioner(layers: Sequence[str], b2: float, eps: float) -> Callable[[StepView], Any]:
    """Step probe for Adam-type states (``ScaleByAdamState``, found with ``tree_get``): per layer
    ``kappa = 1/(sqrt(mean_i v̂_i) + ε)`` (the isotropic preconditioner scale; ``v̂ = ν/(1 − β2^count)``) and
    ``aniso = Σ_i W_i²/(sqrt(v̂_i) + ε) · (sqrt(mean v̂) + ε)/‖W‖²`` (≥ 1 when v̂ is spread out: the factor by
    which coupled L2 decays W faster than the isotropic model says). Returns ``{"kappa", "aniso"}`` of shape
    ``(S,)``; both are 1 for arrays without Adam moments."""
    layers = tuple(layers)

    def probe(v: StepView):
        adam = otu.tree_get(v.opt_state, "ScaleByAdamState")
        kap, ani = [], []
        for n in layers:
            w = v.params[n]["W"]
            nu = None if adam is None else adam.nu[n]["W"]
            if not hasattr(nu, "shape"):  # no Adam moments for this array (e.g. Muon's 2-D weights)
                kap.append(jnp.ones((), w.dtype))
                ani.append(jnp.ones((), w.dtype))
                continue
            corr = 1.0 - jnp.asarray(b2, w.dtype) ** adam.count.astype(w.dtype)
            vh = nu / corr
            rms = jnp.sqrt(jnp.mean(vh))
            kap.append(1.0 / (rms + eps))
            ani.append(jnp.sum(w ** 2 / (jnp.sqrt(vh) + eps)) * (rms + eps) / sq_norm(w))
        return {"kappa": jnp.stack(kap), "aniso": jnp.stack(ani)}
    return probe


#: optimiser-state fields that hold gradient moments, and the power of the gradient each one carries
MOMENT_FIELDS = {"mu": 1, "trace": 1, "nu": 2}


def rescale_moments(opt_state, layers: Sequence[str], c):
    """The optimiser state a run would have had at scale ``c·W`` for the scale-invariant ``W`` of ``layers``
    (gradients scale as ``1/c``): every first-moment field (``mu`` of Adam/Lion/Muon, ``trace`` of
    momentum) times ``1/c``, second moments (``nu``) times ``1/c²``. Fields found with
    ``optax.tree_utils.tree_get_all_with_path`` and replaced with ``tree_set``."""
    layers = set(layers)

    def scaled(tree, power):
        def one(n, a):  # arrays of other groups, and MaskedNode placeholders (Muon's partition), stay
            if n in layers and isinstance(a, dict) and hasattr(a.get("W"), "shape"):
                return {**a, "W": a["W"] * (1.0 / c ** power)}
            return a
        return {n: one(n, a) for n, a in tree.items()}

    for name, power in MOMENT_FIELDS.items():
        for path, value in otu.tree_get_all_with_path(opt_state, name):
            if not isinstance(value, dict):
                continue
            new = scaled(value, power)
            opt_state = otu.tree_set(opt_state, lambda p, _, path=path: p == path, **{name: new})
    return opt_state


def kick(layers: Sequence[str], at_step: int, factor: float) -> Callable[[Any, Any, Any], Any]:
    """``before_step`` hook: just before step ``at_step`` multiply every ``W`` of ``layers`` by ``factor``
    and rescale the optimiser moments to match (:func:`rescale_moments`); for scale-invariant ``W`` the
    network function is unchanged. At other steps the factor is 1 (an exact no-op)."""
    layers = tuple(layers)

    def hook(params, opt_state, k):
        dt = params[layers[0]]["W"].dtype
        c = jnp.where(k == at_step, jnp.asarray(factor, dt), jnp.asarray(1.0, dt))
        params = {n: ({**a, "W": a["W"] * c} if n in layers else a) for n, a in params.items()}
        return params, rescale_moments(opt_state, layers, c)
    return hook


__all__ = ["Hooks", "StepView", "weight_probes", "unit_norms_probe", "unit_sq_norms", "unit_angles",
           "adam_preconditioner", "rescale_moments", "kick", "MOMENT_FIELDS"]
