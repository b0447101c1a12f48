"""Declarative architecture specs shared by the theory and the finite networks.

One spec, three views:

1. the analytic infinite-width kernels (NTK and NNGP), ``widelimit.kernels``;
2. the homogeneity degree ``L`` of the network in its parameters, :attr:`MLP.homogeneity_degree`;
3. finite-width instances (init/apply in plain JAX), ``widelimit.nets``, and their empirical NTK.

Conventions (see ``README.md``):

* ``depth`` counts *weight layers on every path*, readout included. An ``MLP(depth=1)`` is a linear
  model; ``MLP(depth=3)`` has two hidden layers. A ``CNN(depth=d)`` has ``d`` convolutions followed by
  global average pooling and a dense readout, i.e. ``d + 1`` weight layers.
* NTK parameterisation: ``W_ij ~ N(0, 1)``, layer output ``(W_std / sqrt(fan_in)) W x + b_std * b``.
  Standard parameterisation: ``W_ij ~ N(0, W_std^2 / fan_in)``, output ``W x + b`` with ``b ~ N(0, b_std^2)``.
  Both match neural-tangents' ``stax.Dense``/``stax.Conv`` for the same stds.
* Activations: ``relu``; ``leaky_relu`` (``x`` for ``x > 0`` else ``slope * x``); ``abrelu``
  (``a * min(x, 0) + b * max(x, 0)``); ``erf``; ``identity``.
* A network is L-homogeneous in its parameters, ``f(alpha * theta) = alpha**L f(theta)`` for alpha > 0,
  when it has no biases and a positively 1-homogeneous activation (then ``L = number of weight
  layers``), when it is a single affine layer (L = 1), or when LayerNorm/BatchNorm makes every hidden
  layer scale-invariant (L = 1). Otherwise the degree is ``None`` (see ``homogeneity_degree``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Optional, Tuple, Union

ACTIVATIONS = ("relu", "leaky_relu", "abrelu", "erf", "identity")
HOMOGENEOUS_ACTIVATIONS = ("relu", "leaky_relu", "abrelu", "identity")
PARAMETERIZATIONS = ("ntk", "standard")
NORMS = (None, "layer", "batch", "weight")


def _check_int(name: str, value, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")


def _check_float(name: str, value, *, positive: bool = False, allow_none: bool = False) -> None:
    if value is None:
        if allow_none:
            return
        raise TypeError(f"{name} must be a number, got None")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value}")


@dataclass(frozen=True)
class _Spec:
    """Fields shared by every architecture."""

    depth: int
    out_dim: int = 1
    activation: str = "relu"
    W_std: float = math.sqrt(2.0)
    b_std: Optional[float] = None
    parameterization: str = "ntk"
    slope: float = 0.01
    abrelu_a: float = 0.0
    abrelu_b: float = 1.0
    norm: Optional[str] = None

    def __post_init__(self) -> None:
        _check_int("depth", self.depth, 1)
        _check_int("out_dim", self.out_dim, 1)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        _check_float("W_std", self.W_std, positive=True)
        _check_float("b_std", self.b_std, allow_none=True)
        if self.parameterization not in PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization must be one of {PARAMETERIZATIONS}, got {self.parameterization!r}")
        for name in ("slope", "abrelu_a", "abrelu_b"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")

    # -- derived quantities -------------------------------------------------------------------
    @property
    def n_weight_layers(self) -> int:
        raise NotImplementedError

    @property
    def has_bias(self) -> bool:
        return self.b_std is not None

    @property
    def homogeneity_degree(self) -> Optional[int]:
        """Degree L with ``f(alpha*theta) = alpha**L f(theta)`` for all alpha > 0 (all parameters scaled
        together), or None if the network is not homogeneous.

        * LayerNorm/BatchNorm after every hidden layer: everything before the readout is scale-invariant
          and the readout ``W h + b`` scales linearly, so L = 1 whatever the activation and biases;
        * a single weight layer (``MLP(depth=1)``, affine ``W x + b``): L = 1, with or without bias;
        * otherwise (no norm, or WeightNorm whose gains carry the scale): L = number of weight layers when
          there are no biases and the activation is positively 1-homogeneous, else None.
        ``widelimit.kernels.measure_homogeneity`` checks this on random finite instances.
        """
        if self.norm in ("layer", "batch"):
            return 1
        if self.n_weight_layers == 1:
            return 1
        if self.has_bias or self.activation not in HOMOGENEOUS_ACTIVATIONS:
            return None
        return self.n_weight_layers

    def kernel_decay_rate(self, lam: float) -> float:
        """Infinite-width kernel decay rate ``kappa = 2 (L - 1) lam`` (requires a homogeneous spec)."""
        L = self.homogeneity_degree
        if L is None:
            raise ValueError(f"{self!r} is not homogeneous in its parameters (biases, norm or erf)")
        return 2.0 * (L - 1) * lam

    def replace(self, **changes) -> "_Spec":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["kind"] = type(self).__name__
        return d

    def check_input(self, x, name: str = "x") -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class MLP(_Spec):
    """Fully-connected network: ``depth - 1`` hidden layers of ``width`` units and a dense readout.

    ``width`` matters only for finite instances (and for the standard-parameterisation NTK, whose
    infinite-width limit is taken with the hidden widths scaled together; see ``widelimit.kernels``).
    Inputs have shape ``(N, d)``; ``in_dim`` may be left ``None`` to accept any ``d``.
    """

    width: int = 512
    in_dim: Optional[int] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("width", self.width, 1)
        if self.in_dim is not None:
            _check_int("in_dim", self.in_dim, 1)

    @property
    def n_weight_layers(self) -> int:
        return self.depth

    def check_input(self, x, name: str = "x") -> None:
        shape = getattr(x, "shape", None)
        if shape is None or len(shape) != 2:
            raise ValueError(f"{name} must have shape (N, d) for an MLP, got shape {shape}")
        if self.in_dim is not None and shape[1] != self.in_dim:
            raise ValueError(f"{name} has {shape[1]} features but the spec has in_dim={self.in_dim}")


@dataclass(frozen=True)
class CNN(_Spec):
    """Convolutional network: ``depth`` convolutions (``channels`` each, stride 1, SAME padding),
    the activation after each, global average pooling over space, then a dense readout.

    ``ndim`` is the number of spatial dimensions (1 for signals, 2 for images). Inputs are
    channels-last: ``(N, length, C)`` for ``ndim=1`` and ``(N, height, width, C)`` for ``ndim=2``.
    L = ``depth + 1`` weight layers when homogeneous.
    """

    channels: int = 64
    kernel_size: int = 3
    ndim: int = 2
    in_channels: Optional[int] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("channels", self.channels, 1)
        _check_int("kernel_size", self.kernel_size, 1)
        if self.ndim not in (1, 2):
            raise ValueError(f"ndim must be 1 or 2, got {self.ndim!r}")
        if self.in_channels is not None:
            _check_int("in_channels", self.in_channels, 1)

    @property
    def n_weight_layers(self) -> int:
        return self.depth + 1

    @property
    def filter_shape(self) -> Tuple[int, ...]:
        return (self.kernel_size,) * self.ndim

    def check_input(self, x, name: str = "x") -> None:
        shape = getattr(x, "shape", None)
        want = self.ndim + 2
        if shape is None or len(shape) != want:
            layout = "(N, length, C)" if self.ndim == 1 else "(N, height, width, C)"
            raise ValueError(f"{name} must have shape {layout} for a {self.ndim}-D CNN, got shape {shape}")
        if self.in_channels is not None and shape[-1] != self.in_channels:
            raise ValueError(f"{name} has {shape[-1]} channels but the spec has in_channels={self.in_channels}")


Spec = Union[MLP, CNN]


def activation_fn(spec: _Spec):
    """The elementwise activation of ``spec`` as a ``jax.numpy`` function."""
    import jax.numpy as jnp
    from jax.scipy.special import erf

    a = spec.activation
    if a == "relu":
        return lambda x: jnp.maximum(x, 0.0)
    if a == "leaky_relu":
        s = spec.slope
        return lambda x: jnp.where(x > 0, x, s * x)
    if a == "abrelu":
        lo, hi = spec.abrelu_a, spec.abrelu_b
        return lambda x: lo * jnp.minimum(x, 0.0) + hi * jnp.maximum(x, 0.0)
    if a == "erf":
        return erf
    return lambda x: x


def from_dict(d: dict) -> Spec:
    """Inverse of ``spec.to_dict()``."""
    d = dict(d)
    kind = d.pop("kind", None)
    cls = {"MLP": MLP, "CNN": CNN}.get(kind)
    if cls is None:
        raise ValueError(f"kind must be 'MLP' or 'CNN', got {kind!r}")
    return cls(**d)
