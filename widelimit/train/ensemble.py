"""Train many networks in one jit-compiled program: ``vmap`` over seeds and learning-rate / L2 grids.

All members share the architecture, data, optimiser, loss and schedule *shape*; they differ in
``seed`` (initialisation and minibatch order), constant ``learning_rate`` and constant ``weight_decay`` (for
AutoL2: the initial coefficient). Member ``i`` of an ensemble computes exactly what ``train(member_config(i))``
computes (same program, batched by ``jax.vmap``), up to floating-point reassociation in batched kernels.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..data import Dataset, load_dataset
from .config import RunConfig
from .hooks import Hooks
from . import sharding
from .loop import Program, RunResult, _probe_targets, compile_program, precision


@dataclass(frozen=True)
class EnsembleResult:
    """Results of an ensemble. ``base``: the first member's canonical config; ``members``: every member's;
    ``runs``: one :class:`RunResult` per member; ``info``: ``compile_s``/``run_s`` (seconds, whole ensemble),
    ``members``, ``chunk_size``."""

    base: RunConfig
    members: List[RunConfig]
    runs: List[RunResult]
    info: Dict[str, Any] = field(default_factory=dict)

    def stacked(self, stream: str = "metrics") -> Dict[str, np.ndarray]:
        """A stream with a leading member axis, e.g. ``stacked()["test_loss"]`` of shape ``(M, n_logs)``."""
        keys = getattr(self.runs[0], stream).keys()
        return {k: np.stack([getattr(r, stream)[k] for r in self.runs]) for k in keys}


def member_configs(config: RunConfig, *, seeds: Optional[Sequence[int]] = None,
                   learning_rates: Optional[Sequence[float]] = None,
                   weight_decays: Optional[Sequence[float]] = None, product: bool = True) -> List[RunConfig]:
    """The member configurations: the Cartesian product (``product=True``) or the element-wise zip of the
    given seed / learning-rate / weight-decay lists (an omitted list keeps the configuration's value).

    ``learning_rates`` needs a constant ``config.learning_rate``; ``weight_decays`` a constant
    ``config.weight_decay`` or AutoL2 (then they are initial coefficients).
    """
    cfg = config.canonical()
    if learning_rates is not None and isinstance(cfg.learning_rate, dict):
        raise ValueError("learning_rates: the ensemble grid needs a constant RunConfig.learning_rate, got "
                         f"schedule {cfg.learning_rate}")
    auto = cfg.autol2 is not None
    if weight_decays is not None and isinstance(cfg.weight_decay, dict) and not auto:
        raise ValueError("weight_decays: the ensemble grid needs a constant RunConfig.weight_decay or AutoL2, "
                         f"got {cfg.weight_decay}")
    axes = []
    for name, vals in (("seeds", seeds), ("learning_rates", learning_rates), ("weight_decays", weight_decays)):
        if vals is None:
            axes.append([None])
            continue
        if isinstance(vals, (str, bytes)) or not hasattr(vals, "__len__") or len(vals) == 0:
            raise ValueError(f"{name} must be a non-empty list, got {vals!r}")
        axes.append(list(vals))
    if product:
        combos = list(itertools.product(*axes))
    else:
        n = max(len(a) for a in axes)
        for name, a in zip(("seeds", "learning_rates", "weight_decays"), axes):
            if len(a) not in (1, n):
                raise ValueError(f"{name}: with product=False all lists must have the same length ({n}) "
                                 f"or length 1, got {len(a)}")
        combos = [tuple(a[i] if len(a) > 1 else a[0] for a in axes) for i in range(n)]
    out = []
    for seed, lr, wd in combos:
        changes: Dict[str, Any] = {}
        if seed is not None:
            changes["seed"] = seed
        if lr is not None:
            changes["learning_rate"] = lr
        if wd is not None:
            changes["weight_decay"] = {**cfg.weight_decay, "init_weight_decay": wd} if auto else wd
        out.append(cfg.replace(**changes).canonical())
    return out


def train_members(members: Sequence[RunConfig], data: Optional[Dataset] = None, *,
                  chunk_size: Optional[int] = None, keep_params: bool = False,
                  hooks: Optional[Hooks] = None, model=None, groups=None, scale_invariant=()) -> EnsembleResult:
    """Train the given member configurations together (they must differ only in seed / constant η / λ).

    ``chunk_size`` bounds how many members are vmapped at once (memory); all chunks share one compiled
    program (the last chunk is padded by repeating its last member). ``hooks``: instrumentation of every
    member (:mod:`widelimit.train.hooks`). ``model``/``groups``/``scale_invariant``: a user's network
    (:class:`widelimit.models.UserModel`, see :mod:`widelimit.train.loop`; ``data`` required), its seeds
    vmapped over ``model.init``.
    """
    members = [m.canonical() for m in members]
    if not members:
        raise ValueError("members must be a non-empty list of RunConfig")
    key0 = members[0].structure_key()
    for i, m in enumerate(members[1:], 1):
        if m.structure_key() != key0:
            raise ValueError(f"members[{i}] differs from members[0] in more than seed / learning_rate / "
                             "weight_decay values; train it separately")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise ValueError(f"chunk_size must be None or an int >= 1, got {chunk_size!r}")
    base = members[0]
    M = len(members)
    size = sharding.chunk_for_devices(M if chunk_size is None else min(chunk_size, M))  # all local devices
    with precision(base.dtype):
        if data is None:
            if model is not None:
                raise ValueError("data: a user's model is trained on a Dataset given as data=")
            data = load_dataset(base.data, **base.data_options)
        prog = Program(base, data, hooks, model=model, groups=groups, scale_invariant=scale_invariant)
        arrays = sharding.replicate(prog.arrays(data))
        keys = jnp.stack([jax.random.PRNGKey(m.seed) for m in members])
        hps = [prog.default_hp(m) for m in members]
        hp = {k: jnp.stack([h[k] for h in hps]) for k in hps[0]}
        fn = jax.jit(jax.vmap(prog.run, in_axes=(0, 0, None)))
        compile_s, run_s, outs, params = 0.0, 0.0, [], []
        compiled = None
        for start in range(0, M, size):
            idx = np.arange(start, start + size)
            idx = np.minimum(idx, M - 1)  # pad the last chunk
            k_c, hp_c = sharding.shard_members((keys[idx], {k: v[idx] for k, v in hp.items()}))
            if compiled is None:
                t0 = time.perf_counter()
                compiled = compile_program(fn, k_c, hp_c, arrays)
                compile_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            out, p = compiled(k_c, hp_c, arrays)
            jax.block_until_ready(out)
            run_s += time.perf_counter() - t0
            n_real = min(size, M - start)
            outs.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[:n_real], out))
            if keep_params:
                params.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[:n_real], p))
        out = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *outs)
        if keep_params:
            params = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *params)
        info = {"compile_s": compile_s, "run_s": run_s, "members": M, "chunk_size": size,
                "devices": len(sharding.member_devices())}
        runs = []
        for i, m in enumerate(members):
            member_out = jax.tree_util.tree_map(lambda a: a[i], out)
            member_params = jax.tree_util.tree_map(lambda a: a[i], params) if keep_params else None
            r = prog.result(m, member_out, member_params,
                            {"compile_s": compile_s / M, "run_s": run_s / M, "ensemble_size": M})
            _probe_targets(r, data)
            runs.append(r)
    return EnsembleResult(base, members, runs, info)


def train_ensemble(config: RunConfig, *, seeds: Optional[Sequence[int]] = None,
                   learning_rates: Optional[Sequence[float]] = None,
                   weight_decays: Optional[Sequence[float]] = None, product: bool = True,
                   data: Optional[Dataset] = None, chunk_size: Optional[int] = None, keep_params: bool = False,
                   hooks: Optional[Hooks] = None, model=None, groups=None, scale_invariant=()) -> EnsembleResult:
    """Train the grid of :func:`member_configs` (seeds × learning rates × weight decays) in one program.

    Timings in ``info``: ``compile_s`` (once) and ``run_s`` (all members); per-member results carry their
    share. Example: ``train_ensemble(cfg, seeds=range(8), weight_decays=[1e-3, 1e-2])`` trains 16 networks.
    """
    members = member_configs(config, seeds=seeds, learning_rates=learning_rates, weight_decays=weight_decays,
                             product=product)
    return train_members(members, data, chunk_size=chunk_size, keep_params=keep_params, hooks=hooks, model=model,
                         groups=groups, scale_invariant=scale_invariant)


__all__ = ["EnsembleResult", "train_ensemble", "train_members", "member_configs"]
