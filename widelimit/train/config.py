"""``RunConfig``: everything that defines one training run, validated before any compute.

A run is: architecture (a :mod:`widelimit.arch` spec, stored as its dict), dataset (name + options,
:mod:`widelimit.data`), optimiser (name, learning rate η, ``momentum``/``b1``/``b2``/``eps``), weight decay λ
(a number, a schedule, or AutoL2) on all parameters or on chosen arrays, loss, batch size, number of steps,
logging interval, seed and dtype. Names as in docs/theory.md §1 (optax's).

Conventions: penalty ``(λ/2)‖θ_S‖²`` on the arrays S selected by ``weight_decay_mask`` (glob patterns over
``"layer/array"`` paths, e.g. ``["*/W"]``; ``None`` = all); coupled optimisers add λθ to the gradient
(GD ``θ ← θ − η(∇ℓ + λθ)``), decoupled ones (``adamw``, ``lion``, ``muon``) subtract ηλθ from the update;
physical time ``t = eta * steps``; ``loss="mse"`` is ``1/(2 N K) sum (f - y)^2`` over the N examples of the
batch and K outputs (as in neural-tangents), ``loss="xent"`` is the mean softmax cross-entropy.

``run_id`` is a stable hash of the canonical (defaults-filled) configuration, ``tags`` and the data
location/caching options (``path``, ``cache``) excluded: the same run always gets the same id, on any machine.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

from .. import arch as _arch
from ..data import DATASETS, check_dataset_options
from .autol2 import AutoL2
from .optim import OPTIMIZER_DEFAULTS, OPTIMIZERS
from .schedules import check_schedule

LOSSES = ("mse", "xent")
DTYPES = ("float32", "float64")
OPTIMIZER_OPTIONS = ("momentum", "b1", "b2", "eps")
_AUTOL2_FLOATS = ("init_weight_decay", "factor", "refractory", "min_weight_decay")
_NOT_IDENTITY = ("path", "cache")
# input layouts accepted by each architecture kind
_LAYOUT_FOR = {("MLP", None): "flat", ("CNN", 1): "signal", ("CNN", 2): "image"}
USER_ARCH_KIND = "user"


def user_arch(name: str = "model") -> Dict[str, Any]:
    """``RunConfig.arch`` of a run of a user's network: the network itself (a
    :class:`widelimit.models.UserModel`) is given to :class:`~widelimit.train.loop.Program` / ``train`` /
    ``train_ensemble`` as ``model=``, with the data as a :class:`~widelimit.data.Dataset`; ``data`` is then
    only the data set's name and ``data_options`` are free (not validated)."""
    return {"kind": USER_ARCH_KIND, "name": str(name)}


def is_user_arch(arch) -> bool:
    """Whether ``arch`` is :func:`user_arch`'s."""
    return isinstance(arch, dict) and arch.get("kind") == USER_ARCH_KIND


def _err(field_name: str, msg: str, exc=ValueError):
    return exc(f"RunConfig.{field_name}: {msg}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class RunConfig:
    """One training run. See the module docstring for conventions; :meth:`validate` checks everything.

    ``arch``: spec dict (``MLP(...).to_dict()``) or a spec; ``data``/``data_options``: dataset;
    ``optimizer``: one of ``OPTIMIZERS``; ``learning_rate``: η, number or schedule dict
    (:mod:`widelimit.train.schedules`); ``weight_decay``: λ, number, schedule dict, or
    ``{"kind": "autol2", ...AutoL2 fields}``; ``weight_decay_mask``: glob patterns or ``None`` (all arrays);
    ``momentum`` (momentum, nesterov, muon), ``b1``/``b2`` (adam, adamw, lion, muon's Adam part), ``eps``
    (adam, adamw, muon): ``None`` = the optimiser's default (:data:`~widelimit.train.optim.OPTIMIZER_DEFAULTS`),
    an option the optimiser does not take is an error; ``loss``: "mse" | "xent"; ``batch_size``: ``None`` = full
    batch; ``steps``: number of updates; ``eval_every``: metrics every this many steps (and at the last
    step); ``seed``: initialisation and minibatch order; ``dtype``: "float32" | "float64";
    ``probe_size``: test points whose outputs are recorded; ``tags``: free-form, not part of the run id.
    """

    arch: Any
    data: str = "digits"
    data_options: Dict[str, Any] = field(default_factory=dict)
    optimizer: str = "gd"
    learning_rate: Union[float, Dict[str, Any]] = 0.1
    weight_decay: Union[float, Dict[str, Any]] = 0.0
    weight_decay_mask: Optional[List[str]] = None
    momentum: Optional[float] = None
    b1: Optional[float] = None
    b2: Optional[float] = None
    eps: Optional[float] = None
    loss: str = "mse"
    batch_size: Optional[int] = None
    steps: int = 1000
    eval_every: int = 100
    seed: int = 0
    dtype: str = "float32"
    probe_size: int = 8
    tags: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.arch, (_arch.MLP, _arch.CNN)):
            object.__setattr__(self, "arch", self.arch.to_dict())

    # -- conversions ---------------------------------------------------------------------------
    @property
    def spec(self) -> _arch.Spec:
        """The architecture spec object (a user's model has none: ValueError)."""
        if is_user_arch(self.arch):
            raise _err("arch", "a user's model (user_arch) has no widelimit spec; pass model= to the loop")
        return _arch.from_dict(self.arch)

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RunConfig":
        if not isinstance(d, dict):
            raise TypeError(f"RunConfig.from_dict expects a dict, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"RunConfig: unknown field(s) {unknown}; fields are {sorted(names)}")
        if "arch" not in d:
            raise ValueError("RunConfig.arch: missing (an MLP/CNN spec dict)")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> "RunConfig":
        return cls.from_dict(json.loads(s))

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    # -- validation ----------------------------------------------------------------------------
    def canonical(self) -> "RunConfig":
        """Validated copy with every default filled in (arch, data and optimiser options, AutoL2)."""
        # arch
        if not isinstance(self.arch, dict):
            raise _err("arch", f"must be an MLP/CNN spec or its dict, got {type(self.arch).__name__}", TypeError)
        user = is_user_arch(self.arch)
        if user:
            if set(self.arch) != {"kind", "name"} or not isinstance(self.arch["name"], str):
                raise _err("arch", f"a user model's arch is user_arch(name), got {self.arch!r}")
        else:
            try:
                spec = _arch.from_dict(self.arch)
            except (TypeError, ValueError) as exc:
                raise _err("arch", str(exc), type(exc)) from exc
        # data
        if not isinstance(self.data_options, dict):
            raise _err("data_options", f"must be a dict, got {type(self.data_options).__name__}", TypeError)
        if user:   # the data come as a Dataset with the model; shapes are checked by the Program
            if not isinstance(self.data, str) or not self.data:
                raise _err("data", f"must be the data set's name, got {self.data!r}", TypeError)
            data_opts, task, targets = dict(self.data_options), "user", None
        else:
            if self.data not in DATASETS:
                raise _err("data", f"must be one of {DATASETS}, got {self.data!r}")
            try:
                data_opts = check_dataset_options(self.data, **self.data_options)
            except (TypeError, ValueError) as exc:
                raise _err("data_options", str(exc), type(exc)) from exc
            kind = type(spec).__name__
            want = _LAYOUT_FOR[(kind, getattr(spec, "ndim", None))]
            if data_opts["layout"] != want:
                raise _err("data_options", f"layout={data_opts['layout']!r} does not fit the {kind} "
                           f"(needs layout={want!r})")
            if self.data == "teacher":
                k_out, task, targets = data_opts["out_dim"], "regression", None
            else:
                targets = data_opts["targets"]
                n_cls = len(data_opts["classes"]) if data_opts["classes"] is not None else 10
                k_out, task = (1 if targets == "pm1" else n_cls), "classification"
            if spec.out_dim != k_out:
                raise _err("arch", f"out_dim={spec.out_dim} but dataset {self.data!r} with these options has "
                           f"{k_out} target column(s)")
        # optimiser
        if self.optimizer not in OPTIMIZERS:
            raise _err("optimizer", f"must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        lr = check_schedule(self.learning_rate, "RunConfig.learning_rate", positive=True)
        allowed = OPTIMIZER_DEFAULTS[self.optimizer]
        opt_opts = {}
        for k in OPTIMIZER_OPTIONS:
            v = getattr(self, k)
            if v is None:
                opt_opts[k] = allowed.get(k)
                continue
            if k not in allowed:
                raise _err(k, f"not accepted by optimizer {self.optimizer!r} (it takes {sorted(allowed)})")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise _err(k, f"must be a finite number, got {v!r}", TypeError)
            if k in ("momentum", "b1", "b2") and not 0 <= v < 1:
                raise _err(k, f"must be in [0, 1), got {v!r}")
            if k == "eps" and v <= 0:
                raise _err(k, f"must be > 0, got {v!r}")
            opt_opts[k] = float(v)
        # weight decay
        wd = self.weight_decay
        if isinstance(wd, dict) and wd.get("kind") == "autol2":
            fields_ = {k: v for k, v in wd.items() if k != "kind"}
            try:
                wd = AutoL2(**fields_).to_dict()
            except TypeError as exc:
                raise _err("weight_decay", f"unknown AutoL2 field ({exc}); fields are "
                           f"{sorted(AutoL2.__dataclass_fields__)}") from exc
            except ValueError as exc:
                raise _err("weight_decay", str(exc)) from exc
            wd = {k: (float(v) if isinstance(v, int) and k in _AUTOL2_FLOATS else v) for k, v in wd.items()}
        else:
            wd = check_schedule(wd, "RunConfig.weight_decay")
        m = self.weight_decay_mask
        if m is not None:
            if isinstance(m, str) or not isinstance(m, (list, tuple)) or not all(isinstance(p, str) and p for p in m):
                raise _err("weight_decay_mask", f"must be None or a list of glob patterns like '*/W', got {m!r}",
                           TypeError)
        # loss
        if self.loss not in LOSSES:
            raise _err("loss", f"must be one of {LOSSES}, got {self.loss!r}")
        if self.loss == "xent" and not user and (task != "classification" or targets != "onehot"):
            raise _err("loss", "'xent' needs a classification dataset with targets='onehot' "
                       f"(got data={self.data!r}, targets={targets!r})")
        # loop
        if self.batch_size is not None:
            if not _is_int(self.batch_size) or self.batch_size < 1:
                raise _err("batch_size", f"must be None (full batch) or an int >= 1, got {self.batch_size!r}")
            n_train = data_opts.get("n_train")
            if n_train is not None and self.batch_size > n_train:
                raise _err("batch_size", f"{self.batch_size} exceeds n_train={n_train}")
        for name, lo in (("steps", 1), ("eval_every", 1), ("seed", 0), ("probe_size", 0)):
            v = getattr(self, name)
            if not _is_int(v) or v < lo:
                raise _err(name, f"must be an int >= {lo}, got {v!r}")
        if self.dtype not in DTYPES:
            raise _err("dtype", f"must be one of {DTYPES}, got {self.dtype!r}")
        if not isinstance(self.tags, dict):
            raise _err("tags", f"must be a dict, got {type(self.tags).__name__}", TypeError)
        try:
            json.dumps(self.tags)
        except TypeError as exc:
            raise _err("tags", f"must be JSON-serialisable ({exc})", TypeError) from exc
        return dataclasses.replace(
            self, arch=dict(self.arch) if user else spec.to_dict(), data_options=data_opts, learning_rate=lr, weight_decay=wd,
            weight_decay_mask=list(m) if m is not None else None, **opt_opts)

    def validate(self) -> "RunConfig":
        """Raise ``ValueError``/``TypeError`` naming the first bad field; return ``self`` when valid."""
        self.canonical()
        return self

    @property
    def run_id(self) -> str:
        """Stable 16-hex-digit id: sha256 of the canonical configuration without ``tags``."""
        d = self.canonical().to_dict()
        d.pop("tags")
        for key in _NOT_IDENTITY:  # where the data live / whether they are cached: not what the run is
            d["data_options"].pop(key, None)
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def structure_key(self) -> str:
        """Everything but the seed and the *constant* learning-rate / weight-decay values (AutoL2: its initial value),
        as a string: configurations with equal keys share one compiled program and can be vmapped together."""
        d = self.canonical().to_dict()
        d.pop("seed")
        d.pop("tags")
        if not isinstance(d["learning_rate"], dict):
            d["learning_rate"] = None
        if isinstance(d["weight_decay"], dict) and d["weight_decay"].get("kind") == "autol2":
            d["weight_decay"] = {**d["weight_decay"], "init_weight_decay": None}
        elif not isinstance(d["weight_decay"], dict):
            d["weight_decay"] = None
        return json.dumps(d, sort_keys=True)

    def optimizer_options(self) -> Dict[str, float]:
        """The optimiser options in effect (defaults filled in), e.g. ``{"momentum": 0.9}``."""
        c = self.canonical()
        return {k: getattr(c, k) for k in OPTIMIZER_DEFAULTS[c.optimizer]}

    @property
    def autol2(self) -> Optional[AutoL2]:
        """The AutoL2 hyper-parameters when ``weight_decay`` is AutoL2, else ``None``."""
        if isinstance(self.weight_decay, dict) and self.weight_decay.get("kind") == "autol2":
            return AutoL2(**{k: v for k, v in self.weight_decay.items() if k != "kind"})
        return None


def _plain(v):
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


__all__ = ["RunConfig", "LOSSES", "DTYPES", "OPTIMIZER_OPTIONS", "user_arch", "is_user_arch"]
