"""Adapters: a user's network as ``apply(params, x) -> outputs`` plus its parameter pytree.

Every adapter returns a :class:`UserModel` whose ``apply`` is a pure function of ``(params, x)`` on a batch
``x`` of shape ``(n, *input_shape)`` returning ``(n, K)``; ``params`` is a pytree of arrays holding the
*trainable* parameters only (Flax ``params`` collection / nnx ``Param`` state, Equinox inexact arrays).
Non-trainable state (BatchNorm running statistics, RNG state) is frozen inside ``apply``: structure
analysis, kernels and predictions need a function of the parameters alone. ``init(key)`` (optional)
draws fresh trainable parameters of the same structure; it is needed for seeds and the Monte-Carlo NNGP.

Frameworks are imported only inside the adapter that needs them.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, Optional

import numpy as np

Params = Any


@dataclasses.dataclass(frozen=True)
class UserModel:
    """A network as theory and training see it.

    Attributes:
      apply: ``apply(params, x) -> (n, K)`` array, pure and jit-able.
      params: pytree of arrays (the trainable parameters at initialisation).
      init: optional ``init(key) -> params`` drawing parameters with the same tree structure.
      framework: ``"jax" | "flax.linen" | "flax.nnx" | "equinox" | "stax"``.
      name: a label for reports.
    """

    apply: Callable[[Params, Any], Any]
    params: Params
    init: Optional[Callable[[Any], Params]] = None
    framework: str = "jax"
    name: str = "model"

    def __post_init__(self) -> None:
        _check_params(self.params)
        if not callable(self.apply):
            raise TypeError(f"apply: must be callable, got {type(self.apply).__name__}")
        if self.init is not None and not callable(self.init):
            raise TypeError(f"init: must be callable or None, got {type(self.init).__name__}")

    def output(self, x, params: Optional[Params] = None):
        """``apply(params, x)`` as a 2-D array ``(n, K)``; ValueError if the network returns another shape."""
        out = self.apply(self.params if params is None else params, x)
        shape = getattr(out, "shape", None)
        if shape is None or len(shape) != 2 or shape[0] != np.shape(x)[0]:
            raise ValueError(f"apply: the model must map a batch of {np.shape(x)[0]} inputs to an "
                             f"(n, K) array, got shape {shape}")
        return out

    def check_targets(self, x, y) -> None:
        """ValueError (before any compute-heavy step) if the outputs on ``x`` do not match targets ``y``."""
        import jax

        out = jax.eval_shape(lambda p, a: self.apply(p, a), self.params, x)
        y_shape = np.shape(y)
        if len(out.shape) != 2 or len(y_shape) != 2 or tuple(out.shape) != tuple(y_shape):
            raise ValueError(f"y: targets of shape {y_shape} do not match the model's output shape "
                             f"{tuple(out.shape)} on x")

    def with_dtype(self, dtype) -> "UserModel":
        """The same model with parameters cast to ``dtype`` (e.g. float64 inside ``widelimit._x64.x64()``)."""
        import jax
        import jax.numpy as jnp

        cast = lambda tree: jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), tree)  # noqa: E731
        init = None if self.init is None else (lambda key, _i=self.init: cast(_i(key)))
        return dataclasses.replace(self, params=cast(self.params), init=init)


def _check_params(params) -> None:
    import jax

    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError("params: the pytree has no array leaves")
    for leaf in leaves:
        if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
            raise TypeError(f"params: every leaf must be an array, got {type(leaf).__name__}")
        if not np.issubdtype(np.dtype(leaf.dtype), np.floating):
            raise TypeError(f"params: every leaf must be a floating-point array, got dtype {leaf.dtype}")


def from_jax(apply: Callable, params: Params, *, init: Optional[Callable] = None, name: str = "model") -> UserModel:
    """A plain-JAX network: ``apply(params, x) -> (n, K)``."""
    return UserModel(apply, params, init, "jax", name)


def from_flax_linen(module, variables, *, init: Optional[Callable] = None, input_shape=None,
                    apply_kwargs: Optional[dict] = None, name: Optional[str] = None) -> UserModel:
    """A ``flax.linen.Module`` with its ``variables`` (``module.init(key, x)``).

    Only ``variables["params"]`` is trainable; other collections (e.g. ``batch_stats``) are held fixed, so
    pass ``apply_kwargs`` that make the module use them (e.g. ``{"use_running_average": True}`` or
    ``{"train": False}``) — or write the BatchNorm in batch-statistics mode, which needs no state.
    ``init``: default ``lambda key: module.init(key, zeros(input_shape))["params"]`` when ``input_shape``
    (without the batch axis) is given.
    """
    import flax.linen as nn
    import jax.numpy as jnp

    if not isinstance(module, nn.Module):
        raise TypeError(f"module: expected a flax.linen.Module, got {type(module).__name__}")
    if not isinstance(variables, dict) and not hasattr(variables, "keys"):
        raise TypeError(f"variables: expected the dict returned by module.init, got {type(variables).__name__}")
    if "params" not in variables:
        raise ValueError("variables: has no 'params' collection")
    rest = {k: v for k, v in variables.items() if k != "params"}
    kw = dict(apply_kwargs or {})

    def apply(params, x):
        return module.apply({"params": params, **rest}, x, **kw)

    if init is None and input_shape is not None:
        shape = (1, *tuple(input_shape))
        init = lambda key: module.init(key, jnp.zeros(shape))["params"]  # noqa: E731
    return UserModel(apply, variables["params"], init, "flax.linen", name or type(module).__name__)


def from_flax_nnx(module, *, init: Optional[Callable] = None, name: Optional[str] = None) -> UserModel:
    """A ``flax.nnx.Module`` (already constructed): its ``nnx.Param`` state is trainable, the rest fixed.

    ``init``: optional ``init(key) -> module`` (a constructor taking a JAX key, e.g.
    ``lambda key: MyNet(rngs=nnx.Rngs(key))``); its Param state is extracted for each key.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    if not isinstance(module, nnx.Module):
        raise TypeError(f"module: expected a flax.nnx.Module, got {type(module).__name__}")
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    def apply(p, x):
        # Fresh copies of the non-trainable state, so layers that update it (BatchNorm in batch-statistics
        # mode) mutate variables of the current trace, never the user's module.
        state = jax.tree_util.tree_map(jnp.asarray, rest)
        return nnx.merge(graphdef, p, state)(x)

    init_params = None
    if init is not None:
        def init_params(key):
            return nnx.split(init(key), nnx.Param, ...)[1]
    return UserModel(apply, params, init_params, "flax.nnx", name or type(module).__name__)


def from_equinox(module, *, init: Optional[Callable] = None, batched: bool = False,
                 name: Optional[str] = None) -> UserModel:
    """An Equinox module. Its inexact arrays are the parameters; everything else is static.

    Equinox layers usually act on one example: ``batched=False`` (default) vmaps the module over the batch
    axis; ``batched=True`` calls it on the whole batch. ``init``: optional ``init(key) -> module``.
    """
    import equinox as eqx
    import jax

    if not isinstance(module, eqx.Module):
        raise TypeError(f"module: expected an equinox.Module, got {type(module).__name__}")
    params, static = eqx.partition(module, eqx.is_inexact_array)

    def apply(p, x):
        net = eqx.combine(p, static)
        return net(x) if batched else jax.vmap(net)(x)

    init_params = None
    if init is not None:
        def init_params(key):
            return eqx.partition(init(key), eqx.is_inexact_array)[0]
    return UserModel(apply, params, init_params, "equinox", name or type(module).__name__)


def from_stax(triple, params, *, input_shape=None, name: str = "stax") -> UserModel:
    """A neural-tangents ``stax`` triple ``(init_fn, apply_fn, kernel_fn)`` with its params.

    Only ``apply_fn`` is used here (no neural-tangents import); ``init(key)`` calls ``init_fn(key, shape)``
    when ``input_shape`` (with the batch axis, as stax expects, e.g. ``(-1, d)``) is given.
    """
    if not (isinstance(triple, tuple) and len(triple) == 3 and all(callable(f) for f in triple)):
        raise TypeError("triple: expected the stax (init_fn, apply_fn, kernel_fn) tuple of callables")
    init_fn, apply_fn, _ = triple
    init = None
    if input_shape is not None:
        init = lambda key: init_fn(key, tuple(input_shape))[1]  # noqa: E731
    return UserModel(lambda p, x: apply_fn(p, x), params, init, "stax", name)


def as_model(obj, params=None, **kwargs) -> UserModel:
    """Dispatch to the right adapter from the object's type.

    ``UserModel`` → itself; ``flax.linen.Module`` + variables; ``flax.nnx.Module``; ``equinox.Module``;
    a stax triple + params; a plain callable + params. Keyword arguments go to the adapter.
    """
    if isinstance(obj, UserModel):
        return obj
    if isinstance(obj, tuple) and len(obj) == 3 and all(callable(f) for f in obj):
        return from_stax(obj, params, **kwargs)
    # A module of a framework can only exist if the framework is imported: look without importing it.
    linen, nnx, eqx = (sys.modules.get(m) for m in ("flax.linen", "flax.nnx", "equinox"))
    if nnx is not None and isinstance(obj, nnx.Module):
        return from_flax_nnx(obj, **kwargs)
    if linen is not None and isinstance(obj, linen.Module):
        return from_flax_linen(obj, params, **kwargs)
    if eqx is not None and isinstance(obj, eqx.Module):
        return from_equinox(obj, **kwargs)
    if callable(obj):
        if params is None:
            raise ValueError("params: a plain apply function needs its params pytree")
        return from_jax(obj, params, **kwargs)
    raise TypeError(f"model: cannot adapt an object of type {type(obj).__name__}; expected a callable "
                    "apply(params, x), a Flax (linen/nnx) or Equinox module, or a stax triple")
