"""The training loop: ``train(config) -> RunResult``.

One run is one jit-compiled program: parameter initialisation, then ``jax.lax.scan`` over the
``eval_every`` steps between two logging points, wrapped in an outer ``scan`` over logging points. The
program is a pure function of ``(key, hyper-parameters, data arrays)`` (:class:`Program`), which is what
lets :mod:`widelimit.train.ensemble` ``vmap`` it over seeds and learning-rate / L2 grids.

Per step ``k`` (``k`` = updates done so far, physical time ``t_k = sum_{j<k} eta_j``): a batch (the whole
training set when ``batch_size is None``; otherwise the ``k``-th batch of a fresh random permutation of the
training set each epoch, incomplete last batch dropped), loss ``l`` (mse or xent, *without* the L2 term)
and its gradient, then the optimiser update of :func:`widelimit.train.optim.make_optimizer`
(``θ ← θ − η(∇ℓ + λθ)`` for GD). With AutoL2 the optimiser is fed the training loss and accuracy: full
batch, those of the current parameters (exact); minibatch, their mean over the batches of the last
``measure_every`` steps (no extra forward passes), except for ``AutoL2(rule="reference")``, which is fed the
current batch's (as the reference code measures one training batch). Instrumentation (per-step angles per
layer and per unit, unit-scale gradient norms, optimiser-state probes, interventions such as a rescaling
kick) is added with :class:`~widelimit.train.hooks.Hooks` (``train(config, hooks=...)``).

Metrics at steps ``0, eval_every, 2 eval_every, ..., steps`` (all evaluated on the *full* train and test
sets; for BatchNorm nets this means full-set batch statistics):

* ``metrics``: ``step``, ``time`` (physical), ``learning_rate``, ``weight_decay`` (λ in effect; AutoL2: before
  that step's measurement), ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc``, ``param_norm``
  (``‖θ‖``), ``l2_penalty`` (``λ/2 ‖θ_S‖²``), and with AutoL2 ``autol2_decays``;
* ``layers`` (keys ``"<quantity>/<layer>"``): ``weight_norm`` ``||W||``, ``grad_norm`` ``||grad_W l||`` (full
  training set), ``angular_update`` (angle between ``W`` before and after the last step into this point),
  ``angular_update_mean`` (mean over the steps since the previous point), and for scale-invariant layers
  (:func:`widelimit.nets.scale_invariant_mask`) ``eff_lr`` ``eta/||W||^2`` and ``grad_norm_unit``
  ``||grad_W l|| ||W||``; angles are NaN at step 0;
* ``probe``: network outputs on the first ``probe_size`` test points at every logging point.

A user's network (:class:`widelimit.models.UserModel`: ``apply(params, x)`` and ``init(key)``) is trained
by the same program: ``Program(config, data, model=..., groups=..., scale_invariant=...)`` with
``config.arch = user_arch(name)`` (:func:`widelimit.train.config.user_arch`). Its parameter groups
(``{name: [leaf paths]}`` as :func:`widelimit.models.structure.leaf_paths` prints them; default one group
per leaf) take the place of the layers' ``W`` in ``layers`` (norm, gradient norm and angles of the group
as one vector), ``scale_invariant`` names the groups that get ``eff_lr`` and ``grad_norm_unit``, and
``weight_decay_mask`` globs match ``"/"``-joined key names (e.g. ``"Dense_0/kernel"``). Seeds vmap over
``model.init`` when it is traceable; without ``init`` every seed starts from ``model.params``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import _x64
from ..data import Dataset, load_dataset
from ..nets import apply, init_params, layer_names, param_count, scale_invariant_mask
from ..models.adapters import UserModel
from ..models.structure import leaf_paths
import optax.tree_utils as otu

from .config import RunConfig
from .hooks import Hooks, StepView
from .metrics import LOSS_FNS, accuracy, angle, params_sq_norm, sq_norm, weight_layers
from .optim import make_optimizer
from .regularizers import _key_name, current_weight_decay, resolve_mask
from .schedules import make_schedule

HARNESS_VERSION = 2

#: XLA compiler options used for every program this module (and ``ensemble``) compiles; ``None`` = XLA's
#: defaults. ``{"xla_backend_optimization_level": 0}`` roughly halves CPU compile time at the cost of slower
#: execution: worth it for short runs (the test suite uses it), not for long ones.
COMPILER_OPTIONS: Optional[Dict[str, Any]] = None


def compile_program(fn, *args):
    """``jax.jit(fn).lower(*args).compile()`` with :data:`COMPILER_OPTIONS`."""
    lowered = fn.lower(*args) if hasattr(fn, "lower") else jax.jit(fn).lower(*args)
    if COMPILER_OPTIONS:
        return lowered.compile(compiler_options=dict(COMPILER_OPTIONS))
    return lowered.compile()


def minibatch(x, y, batch_key, k, batch_size: Optional[int]):
    """The minibatch used at step ``k``: the full set when ``batch_size`` is None, else slice
    ``k mod (N // B)`` of a permutation of the N examples drawn afresh each epoch from
    ``fold_in(batch_key, epoch)`` (a partial last batch is dropped). jit/scan-compatible in ``k``."""
    if batch_size is None:
        return x, y
    n = x.shape[0]
    per_epoch = n // batch_size
    perm = jax.random.permutation(jax.random.fold_in(batch_key, k // per_epoch), n)
    idx = jax.lax.dynamic_slice_in_dim(perm, (k % per_epoch) * batch_size, batch_size)
    return x[idx], y[idx]


def precision(dtype: str):
    """Context for running a program in ``dtype`` ("float64" enables JAX x64 inside the block only)."""
    return _x64.x64() if dtype == "float64" else contextlib.nullcontext()


@dataclass(frozen=True)
class RunResult:
    """Metrics of one run (numpy arrays) plus its canonical config.

    ``config``: the canonical :class:`RunConfig`; ``run_id``: its id; ``metrics``: scalar streams over the
    logging points (module docstring); ``layers``: per-layer streams keyed ``"<quantity>/<layer>"``;
    ``probe``: ``outputs`` ``(n_logs, P, K)``, ``targets`` ``(P, K)``, ``test_index`` ``(P,)``; ``info``:
    timings (s), versions, parameter count, scale-invariant layers; ``params``: final parameters (not
    stored); ``steps``: outputs of the step probes of :class:`~widelimit.train.hooks.Hooks`, leading axis
    ``steps``; ``evals``: outputs of the eval probes, leading axis the logging points.
    """

    config: RunConfig
    run_id: str
    metrics: Dict[str, np.ndarray]
    layers: Dict[str, np.ndarray]
    probe: Dict[str, np.ndarray]
    info: Dict[str, Any] = field(default_factory=dict)
    params: Any = None
    steps: Dict[str, Any] = field(default_factory=dict)
    evals: Dict[str, Any] = field(default_factory=dict)

    def streams(self) -> Dict[str, Dict[str, np.ndarray]]:
        """The metric streams as stored by :class:`widelimit.results.ResultStore` (hook outputs not stored)."""
        return {"metrics": self.metrics, "layers": self.layers, "probe": self.probe}

    def summary(self) -> Dict[str, Any]:
        """Final and best values (best test accuracy / lowest test loss with their step and time)."""
        m = self.metrics
        out = {k: float(m[k][-1]) for k in ("train_loss", "train_acc", "test_loss", "test_acc", "weight_decay")}
        for key, pick in (("test_acc", np.nanargmax), ("test_loss", np.nanargmin)):
            vals = m[key]
            if np.all(np.isnan(vals)):
                continue
            i = int(pick(vals))
            tag = "best_test_acc" if key == "test_acc" else "min_test_loss"
            out[tag] = float(vals[i])
            out[f"{tag}_step"] = int(m["step"][i])
            out[f"{tag}_time"] = float(m["time"][i])
        out.update({k: v for k, v in self.info.items() if isinstance(v, (int, float, str, bool, list))})
        return out

    def save(self, store) -> None:
        """Write this run to a :class:`widelimit.results.ResultStore` (one record per stream)."""
        store.write(self.run_id, self.config.to_dict(), self.streams(), self.summary())

    @classmethod
    def from_stored(cls, stored) -> "RunResult":
        """Rebuild a result (without params) from a :class:`widelimit.results.StoredRun`."""
        cfg = RunConfig.from_dict(stored.config)
        s = stored.streams
        return cls(cfg, stored.run_id, s.get("metrics", {}), s.get("layers", {}), s.get("probe", {}),
                   dict(stored.summary))


class Program:
    """The pure, traceable training program of a configuration (everything but seed, η and λ values).

    ``run(key, hp, arrays) -> (metrics, final_params)``: ``key`` a PRNG key (init, then minibatch order);
    ``hp`` a dict with ``"learning_rate"`` and/or ``"weight_decay"`` scalars overriding the configuration's
    constant values (for AutoL2, ``"weight_decay"`` is the initial coefficient); ``arrays`` from
    :meth:`arrays`. ``hooks``: instrumentation (:class:`~widelimit.train.hooks.Hooks`), part of the program.
    ``model``, ``groups``, ``scale_invariant``: a user's network instead of the config's spec (module
    docstring); ``config.arch`` must then be ``user_arch(...)``.
    """

    def __init__(self, config: RunConfig, data: Dataset, hooks: Optional[Hooks] = None, *,
                 model: Optional[UserModel] = None, groups: Optional[Dict[str, Any]] = None,
                 scale_invariant=()):
        cfg = config.canonical()
        if hooks is not None and not isinstance(hooks, Hooks):
            raise TypeError(f"hooks must be None or a widelimit.train.Hooks, got {type(hooks).__name__}")
        self.hooks = hooks if hooks is not None else Hooks()
        self.config = cfg
        self.model = model
        if (model is not None) != (cfg.arch.get("kind") == "user"):
            raise ValueError("model: a user's model needs RunConfig.arch = user_arch(name), and user_arch needs "
                             "model=" if model is None else "model: given, but RunConfig.arch is a widelimit spec")
        if model is not None:
            if not isinstance(model, UserModel):
                raise TypeError(f"model: expected a widelimit.models.UserModel, got {type(model).__name__}")
            self.spec = spec = None
            model.check_targets(data.x_train, data.y_train)
        else:
            self.spec = spec = cfg.spec
            try:
                spec.check_input(data.x_train, name="data x_train")
            except ValueError as exc:
                raise ValueError(f"RunConfig.arch does not fit dataset {data.name!r}: {exc}") from exc
            if data.out_dim != spec.out_dim:
                raise ValueError(f"RunConfig.arch: out_dim={spec.out_dim} but the dataset has {data.out_dim} "
                                 "target columns")
        if cfg.batch_size is not None and cfg.batch_size > data.n_train:
            raise ValueError(f"RunConfig.batch_size: {cfg.batch_size} exceeds the {data.n_train} training "
                             "examples")
        self.in_shape = data.in_shape
        self.n_train = data.n_train
        self.probe_size = min(cfg.probe_size, data.n_test)
        self.loss_fn = LOSS_FNS[cfg.loss]
        self.autol2 = cfg.autol2
        self.lr = make_schedule(cfg.learning_rate)
        self.weight_decay = None if self.autol2 is not None else make_schedule(cfg.weight_decay)
        shapes = jax.eval_shape(self.init_params, jax.random.PRNGKey(0))
        flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
        if model is None:
            self.layer_names = layer_names(spec)
            self.weight_layers = weight_layers(shapes)
            si = scale_invariant_mask(spec, shapes)
            self.si_layers = [n for n in self.weight_layers if si[n].get("W", False)]
            index = {jax.tree_util.keystr(p): i for i, (p, _) in enumerate(flat)}
            self.groups = {n: (index[jax.tree_util.keystr((jax.tree_util.DictKey(n), jax.tree_util.DictKey("W")))],)
                           for n in self.weight_layers}
        else:
            self.groups = _user_groups(groups, leaf_paths(shapes))
            self.layer_names = self.weight_layers = list(self.groups)
            self.si_layers = list(scale_invariant)
            unknown = [n for n in self.si_layers if n not in self.groups]
            if unknown:
                raise ValueError(f"scale_invariant: {unknown} are not groups; groups are {self.weight_layers}")
        self.weight_decay_mask = resolve_mask(cfg.weight_decay_mask, shapes)
        if cfg.weight_decay_mask is not None and not any(jax.tree_util.tree_leaves(self.weight_decay_mask)):
            paths = ["/".join(_key_name(k) for k in p) for p, _ in flat]
            raise ValueError(f"RunConfig.weight_decay_mask {cfg.weight_decay_mask} match no parameter array; "
                             f"arrays are {paths}")
        self.n_params = int(sum(int(np.prod(a.shape)) for _, a in flat))

    # -- inputs ------------------------------------------------------------------------------------
    def dtype(self):
        return jnp.float64 if self.config.dtype == "float64" else jnp.float32

    def arrays(self, data: Dataset) -> Dict[str, jax.Array]:
        """Device arrays of the dataset in the run's dtype (call inside :func:`precision`)."""
        dt = self.dtype()
        return {k: jnp.asarray(getattr(data, k), dt) for k in ("x_train", "y_train", "x_test", "y_test")}

    def default_hp(self, config: Optional[RunConfig] = None) -> Dict[str, jax.Array]:
        """The overridable hyper-parameters of ``config`` (default: the program's) as scalars."""
        cfg = (config or self.config)
        dt = self.dtype()
        hp = {}
        if not isinstance(cfg.learning_rate, dict):
            hp["learning_rate"] = jnp.asarray(cfg.learning_rate, dt)
        if cfg.autol2 is not None:
            hp["weight_decay"] = jnp.asarray(cfg.autol2.init_weight_decay, dt)
        elif not isinstance(cfg.weight_decay, dict):
            hp["weight_decay"] = jnp.asarray(cfg.weight_decay, dt)
        return hp

    # -- the program -------------------------------------------------------------------------------
    def _optimizer(self, hp):
        cfg = self.config
        lr = hp.get("learning_rate", self.lr)
        if self.autol2 is not None:
            wd = (dataclasses.replace(self.autol2, init_weight_decay=hp["weight_decay"])
                  if "weight_decay" in hp else self.autol2)
        else:
            wd = hp.get("weight_decay", self.weight_decay)
        return make_optimizer(cfg.optimizer, lr, weight_decay=wd, weight_decay_mask=self.weight_decay_mask,
                              **cfg.optimizer_options()), lr

    def init_params(self, key):
        """Initial parameters of the run with PRNG key ``key`` (``jax.random.PRNGKey(seed)``):
        ``init_params(spec, split(key)[0], in_shape, dtype)`` (a user's model: ``model.init(split(key)[0])``,
        or ``model.params`` without ``init``, cast to the run's dtype); ``split(key)[1]`` drives the minibatch
        order."""
        if self.model is None:
            return init_params(self.spec, jax.random.split(key)[0], self.in_shape, self.dtype())
        m = self.model
        p = m.params if m.init is None else m.init(jax.random.split(key)[0])
        return jax.tree_util.tree_map(lambda a: jnp.asarray(a, self.dtype()), p)

    def forward(self, params, x):
        """The network's outputs ``(n, K)`` on ``x``."""
        return apply(self.spec, params, x) if self.model is None else self.model.apply(params, x)

    def group_norms(self, tree) -> Dict[str, jax.Array]:
        """``‖·‖`` of every group of ``tree`` (parameters or gradients), the group seen as one vector."""
        leaves = jax.tree_util.tree_leaves(tree)
        return {n: jnp.sqrt(sum(sq_norm(leaves[i]) for i in idx)) for n, idx in self.groups.items()}

    def group_angles(self, old, new) -> Dict[str, jax.Array]:
        """Angle between every group of ``old`` and ``new`` (radians), the group seen as one vector."""
        a, b = jax.tree_util.tree_leaves(old), jax.tree_util.tree_leaves(new)
        vec = lambda ls, idx: (ls[idx[0]] if len(idx) == 1  # noqa: E731
                               else jnp.concatenate([jnp.ravel(ls[i]) for i in idx]))
        return {n: angle(vec(a, idx), vec(b, idx)) for n, idx in self.groups.items()}

    def run(self, key, hp, arrays):
        cfg, spec = self.config, self.spec
        dt = self.dtype()
        xtr, ytr, xte, yte = arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]
        batch_key = jax.random.split(key)[1]
        params = self.init_params(key)
        opt, lr = self._optimizer(hp)
        lr_fn = lr if callable(lr) else (lambda k: lr)
        opt_state = opt.init(params)
        loss_fn = self.loss_fn

        def objective(p, x, y):
            f = self.forward(p, x)
            return loss_fn(f, y), f

        grad_fn = jax.value_and_grad(objective, has_aux=True)
        B = cfg.batch_size
        m_every = self.autol2.measure_every if self.autol2 is not None else 1
        per_batch = self.autol2 is not None and (B is None or self.autol2.rule == "reference")
        hooks = self.hooks

        def batch(k):
            return minibatch(xtr, ytr, batch_key, k, B)

        def step(carry, _):
            p, s, k, t, run_l, run_a, run_n = carry
            if hooks.before_step is not None:
                p, s = hooks.before_step(p, s, k)
            xb, yb = batch(k)
            (loss, f), g = grad_fn(p, xb, yb)
            acc = accuracy(f, yb)
            extra = {}
            if self.autol2 is not None:
                if per_batch:
                    extra = {"train_loss": loss, "train_accuracy": acc}
                else:
                    run_l, run_a, run_n = run_l + loss, run_a + acc, run_n + 1
                    extra = {"train_loss": run_l / run_n, "train_accuracy": run_a / run_n}
                    reset = (k % m_every) == 0
                    zero = jnp.zeros((), dt)
                    run_l, run_a = jnp.where(reset, zero, run_l), jnp.where(reset, zero, run_a)
                    run_n = jnp.where(reset, zero, run_n)
            updates, s = opt.update(g, s, p, **extra)
            new = optax.apply_updates(p, updates)
            angs = self.group_angles(p, new)
            lr_k = jnp.asarray(lr_fn(k), dt)
            view = StepView(k, p, new, g, loss, s, lr_k)
            rec = {name: fn(view) for name, fn in hooks.step_probes.items()}
            return (new, s, k + 1, t + lr_k, run_l, run_a, run_n), (angs, rec)

        def evaluate(p, s, k, t, ang_last, ang_mean):
            (tr_loss, f_tr), g = grad_fn(p, xtr, ytr)
            f_te = self.forward(p, xte)
            lam = jnp.asarray(current_weight_decay(s), dt)
            lr_k = jnp.asarray(lr_fn(k), dt)
            metrics = {
                "step": k, "time": t, "learning_rate": lr_k, "weight_decay": lam,
                "train_loss": tr_loss, "train_acc": accuracy(f_tr, ytr),
                "test_loss": loss_fn(f_te, yte), "test_acc": accuracy(f_te, yte),
                "param_norm": jnp.sqrt(params_sq_norm(p)),
                "l2_penalty": 0.5 * lam * params_sq_norm(p, self.weight_decay_mask),
            }
            if self.autol2 is not None:
                metrics["autol2_decays"] = otu.tree_get(s, "n_decays")
            norms = self.group_norms(p)
            gnorm = self.group_norms(g)
            layers = {}
            for n in self.weight_layers:
                layers[f"weight_norm/{n}"] = norms[n]
                layers[f"grad_norm/{n}"] = gnorm[n]
                layers[f"angular_update/{n}"] = ang_last[n]
                layers[f"angular_update_mean/{n}"] = ang_mean[n]
            for n in self.si_layers:
                layers[f"eff_lr/{n}"] = lr_k / norms[n] ** 2
                layers[f"grad_norm_unit/{n}"] = gnorm[n] * norms[n]
            evals = {name: fn(p, s) for name, fn in hooks.eval_probes.items()}
            return {"metrics": metrics, "layers": layers, "probe": f_te[:self.probe_size], "evals": evals}

        def chunk(carry, length):
            carry, (angs, rec) = jax.lax.scan(step, carry, None, length=length)
            last = {n: a[-1] for n, a in angs.items()}
            mean = {n: jnp.mean(a) for n, a in angs.items()}
            p, s, k, t = carry[:4]
            return carry, (evaluate(p, s, k, t, last, mean), rec)

        zero = jnp.zeros((), dt)
        nan = {n: jnp.asarray(jnp.nan, dt) for n in self.weight_layers}
        carry = (params, opt_state, jnp.zeros((), jnp.int32), zero, zero, zero, zero)
        logs = [jax.tree_util.tree_map(lambda a: a[None], evaluate(params, opt_state, carry[2], zero, nan, nan))]
        recs = []
        n_full, rem = divmod(cfg.steps, cfg.eval_every)
        if n_full:
            carry, (stacked, rec) = jax.lax.scan(lambda c, _: chunk(c, cfg.eval_every), carry, None, length=n_full)
            logs.append(stacked)
            recs.append(jax.tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[2:]), rec))
        if rem:
            carry, (last, rec) = chunk(carry, rem)
            logs.append(jax.tree_util.tree_map(lambda a: a[None], last))
            recs.append(rec)
        out = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *logs)
        out["steps"] = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *recs)
        return out, carry[0]

    # -- results -----------------------------------------------------------------------------------
    def result(self, config: RunConfig, out, params=None, info=None) -> RunResult:
        """Package one member's program output as a :class:`RunResult` for ``config``."""
        cfg = config.canonical()
        out = jax.tree_util.tree_map(np.asarray, out)
        probe = {"outputs": out["probe"], "test_index": np.arange(self.probe_size)}
        info = dict(info or {})
        info.update({"n_params": self.n_params, "scale_invariant_layers": list(self.si_layers),
                     "weight_layers": list(self.weight_layers), "harness_version": HARNESS_VERSION,
                     "jax_version": jax.__version__, "backend": jax.default_backend()})
        return RunResult(cfg, cfg.run_id, dict(out["metrics"]), dict(out["layers"]), probe, info, params,
                         dict(out.get("steps", {})), dict(out.get("evals", {})))


def _user_groups(groups, paths) -> Dict[str, tuple]:
    """``name -> leaf indices`` of a user's model (default: one group per leaf, named by its path)."""
    if groups is None:
        return {p: (i,) for i, p in enumerate(paths)}
    index = {p: i for i, p in enumerate(paths)}
    out = {}
    for name, members in dict(groups).items():
        members = [members] if isinstance(members, str) else list(members)
        bad = [m for m in members if m not in index]
        if not members or bad:
            raise ValueError(f"groups: group {name!r} names no leaf or unknown leaves {bad}; leaves are {list(paths)}")
        out[str(name)] = tuple(index[m] for m in members)
    return out


def _probe_targets(result: RunResult, data: Dataset) -> None:
    result.probe["targets"] = np.asarray(data.y_test[:len(result.probe["test_index"])])


def train(config: RunConfig, data: Optional[Dataset] = None, *, keep_params: bool = False,
          program: Optional[Program] = None, hooks: Optional[Hooks] = None, model: Optional[UserModel] = None,
          groups: Optional[Dict[str, Any]] = None, scale_invariant=()) -> RunResult:
    """Train one network as described by ``config`` and return its metrics.

    The configuration is validated before anything else (``ValueError``/``TypeError`` naming the field).
    ``data`` may be passed to reuse an already loaded dataset (it must be the config's). ``program``
    reuses a compiled :class:`Program` of a structurally identical configuration (same everything but
    seed and constant learning-rate / weight-decay values); sweeps use this to compile once. ``hooks``:
    instrumentation (:mod:`widelimit.train.hooks`; outputs in ``RunResult.steps`` / ``.evals``), not allowed
    together with ``program`` (a program carries its own). Deterministic for a given seed on a backend.
    ``model``/``groups``/``scale_invariant``: a user's network (module docstring; ``data`` is then required).
    """
    if not isinstance(config, RunConfig):
        raise TypeError(f"config must be a RunConfig, got {type(config).__name__}")
    cfg = config.canonical()
    with precision(cfg.dtype):
        if data is None:
            if model is not None:
                raise ValueError("data: a user's model is trained on a Dataset given as data=")
            data = load_dataset(cfg.data, **cfg.data_options)
        if program is not None and program.config.structure_key() != cfg.structure_key():
            raise ValueError("program was built for a configuration that differs from config in more than "
                             "seed / constant learning_rate / constant weight_decay")
        if program is not None and hooks is not None:
            raise ValueError("hooks: pass them to Program(config, data, hooks) when reusing a program")
        prog = program if program is not None else Program(cfg, data, hooks, model=model, groups=groups,
                                                           scale_invariant=scale_invariant)
        arrays = prog.arrays(data)
        key = jax.random.PRNGKey(cfg.seed)
        hp = prog.default_hp(cfg)
        t0 = time.perf_counter()
        compiled = _compile(prog, key, hp, arrays)
        t1 = time.perf_counter()
        out, params = compiled(key, hp, arrays)
        jax.block_until_ready(out)
        t2 = time.perf_counter()
        result = prog.result(cfg, out, jax.tree_util.tree_map(np.asarray, params) if keep_params else None,
                             {"compile_s": t1 - t0, "run_s": t2 - t1})
    _probe_targets(result, data)
    return result


def _compile(prog: Program, key, hp, arrays):
    """Compile ``prog.run`` for these argument shapes once per program (cached on the program)."""
    sig = (tuple(sorted((k, v.shape, str(v.dtype)) for k, v in hp.items())),
           tuple(sorted((k, v.shape, str(v.dtype)) for k, v in arrays.items())))
    cache = prog.__dict__.setdefault("_compiled", {})
    if sig not in cache:
        cache[sig] = compile_program(prog.run, key, hp, arrays)
    return cache[sig]


__all__ = ["train", "RunResult", "Program", "precision", "compile_program", "HARNESS_VERSION",
           "COMPILER_OPTIONS"]
