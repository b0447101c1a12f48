"""The neural-tangents backend: the only module of widelimit that imports ``neural_tangents``.

neural-tangents (0.6.5, the last release) works only on a pinned stack (jax 0.4.38; see the README),
so it is imported lazily, inside the functions below, and every kernel is evaluated in float64 inside
:func:`widelimit._x64.x64` (JAX's global flag is left alone).

What it converts:

* :class:`widelimit.arch.MLP` (``norm`` None or ``"layer"``) to
  ``stax.serial([Dense(width) -> (LayerNorm(axis=-1)) -> act] * (depth-1), Dense(out_dim))``;
* :class:`widelimit.arch.CNN` (``norm`` None or ``"layer"``) to
  ``stax.serial([Conv(channels, filter, SAME) -> (LayerNorm(axis=-1)) -> act] * depth, GlobalAvgPool(),
  Dense(out_dim))``, channels-last;
* a user's ``stax`` triple ``(init_fn, apply_fn, kernel_fn)`` or a bare ``kernel_fn``.

``norm="batch"`` (batch statistics couple the examples, no per-pair kernel) and ``norm="weight"``
(no neural-tangents layer) are rejected with a ``ValueError``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

import numpy as np

from ..arch import CNN, MLP

_INSTALL_HINT = ("neural-tangents is not installed. It is optional: install widelimit[nt], which pins the "
                 "only stack where its last release works (jax==0.4.38, jaxlib==0.4.38, "
                 "neural-tangents==0.6.5, tf2jax==0.3.6, tensorflow); see the README. The native backend "
                 "(backend='native') covers plain MLPs without it.")


def import_nt():
    """Import and return ``(neural_tangents, neural_tangents.stax)``, or raise ImportError with a fix."""
    try:
        import neural_tangents as nt
        from neural_tangents import stax
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"{_INSTALL_HINT} (original error: {e})") from e
    return nt, stax


def is_available() -> bool:
    """Whether neural-tangents can be imported here (does not import it)."""
    import importlib.util
    return importlib.util.find_spec("neural_tangents") is not None


def _activation_layer(stax, spec):
    a = spec.activation
    if a == "relu":
        return stax.Relu()
    if a == "leaky_relu":
        return stax.LeakyRelu(spec.slope)
    if a == "abrelu":
        return stax.ABRelu(spec.abrelu_a, spec.abrelu_b)
    if a == "erf":
        return stax.Erf()
    return stax.Identity()


def _check_supported(spec) -> None:
    if not isinstance(spec, (MLP, CNN)):
        raise TypeError(f"spec must be a widelimit.arch.MLP or CNN, got {type(spec).__name__}")
    if spec.norm not in (None, "layer"):
        why = ("batch statistics couple the examples, so there is no per-pair infinite-width kernel"
               if spec.norm == "batch" else "neural-tangents has no weight-normalisation layer")
        raise ValueError(f"spec.norm={spec.norm!r} is not supported by the neural-tangents backend: {why}; "
                         "use norm=None or 'layer'")


def stax_of_spec(spec) -> Tuple[Callable, Callable, Callable]:
    """The neural-tangents ``stax`` triple ``(init_fn, apply_fn, kernel_fn)`` of the same network as ``spec``.

    The finite network it defines equals :func:`widelimit.nets.apply` for the same parameters (convert
    them with :func:`to_nt_params`).
    """
    _check_supported(spec)
    _, stax = import_nt()
    common = dict(W_std=spec.W_std, b_std=spec.b_std, parameterization=spec.parameterization)
    layers: List[Any] = []
    if isinstance(spec, MLP):
        n_hidden = spec.depth - 1
        make = lambda: stax.Dense(spec.width, **common)  # noqa: E731
    else:
        n_hidden = spec.depth
        make = lambda: stax.Conv(spec.channels, spec.filter_shape, padding="SAME", **common)  # noqa: E731
    for _ in range(n_hidden):
        layers.append(make())
        if spec.norm == "layer":
            layers.append(stax.LayerNorm(axis=-1))
        layers.append(_activation_layer(stax, spec))
    if isinstance(spec, CNN):
        layers.append(stax.GlobalAvgPool())
    layers.append(stax.Dense(spec.out_dim, **common))
    return stax.serial(*layers)


def to_nt_params(spec, params: Dict[str, Dict[str, Any]]) -> list:
    """Convert :func:`widelimit.nets.init_params` parameters to the pytree of :func:`stax_of_spec`'s apply_fn."""
    _check_supported(spec)
    hidden = sorted((k for k in params if k.startswith("hidden")), key=lambda k: int(k[len("hidden"):]))
    names = hidden + ["readout"]
    n_spatial = 0 if isinstance(spec, MLP) else spec.ndim
    out: list = []
    for name in names:
        layer = params[name]
        is_readout = name == "readout"
        b = layer.get("b")
        if b is not None:
            b = b.reshape((1,) * (1 + (0 if is_readout else n_spatial)) + (-1,))
        out.append((layer["W"], b))
        if is_readout:
            continue
        if spec.norm == "layer":
            out.append(())
        out.append(())
    if isinstance(spec, CNN):
        out.insert(len(out) - 1, ())
    return out


def as_kernel_fn(model) -> Callable:
    """A neural-tangents ``kernel_fn`` from a spec, a ``stax`` triple/4-tuple, or a ``kernel_fn`` itself."""
    if isinstance(model, (MLP, CNN)):
        return stax_of_spec(model)[2]
    if isinstance(model, tuple) and len(model) in (3, 4) and all(callable(m) for m in model):
        return model[2]
    if callable(model):
        return model
    raise TypeError("model must be a widelimit.arch spec, a neural-tangents stax triple "
                    f"(init_fn, apply_fn, kernel_fn) or a kernel_fn, got {type(model).__name__}")


def nt_pair_fn(model) -> Callable[..., Tuple[np.ndarray, np.ndarray]]:
    """``k(x1, x2=None) -> (ntk, nngp)``, float64 NumPy ``(N1, N2)``, from neural-tangents, in float64.

    ``model`` is anything :func:`as_kernel_fn` accepts; the network is built once, here. The
    ``kernel_fn`` runs eagerly, not under ``jax.jit``: compiled, XLA reorders the input covariance sums
    so that an input's variance and its self-covariance differ by rounding, and the ReLU-family kernels
    amplify that to ~1e-8 relative error on the diagonal (``sqrt`` of a rounding error); eagerly they
    agree exactly.
    """
    spec = model if isinstance(model, (MLP, CNN)) else None
    kfn = as_kernel_fn(model)
    import_nt()
    import jax.numpy as jnp

    from .._x64 import x64

    both = ("ntk", "nngp")

    def k(x1, x2=None) -> Tuple[np.ndarray, np.ndarray]:
        if spec is not None:
            spec.check_input(x1, "x1")
            if x2 is not None:
                spec.check_input(x2, "x2")
        with x64():
            a = jnp.asarray(np.asarray(x1, dtype=np.float64))
            b = None if x2 is None else jnp.asarray(np.asarray(x2, dtype=np.float64))
            ntk, nngp = kfn(a, b, both)
            ntk, nngp = np.asarray(ntk, dtype=np.float64), np.asarray(nngp, dtype=np.float64)
        if ntk.ndim != 2 or nngp.ndim != 2:
            raise ValueError(f"kernel_fn returned kernels of shape {ntk.shape}, expected (N1, N2): the "
                             "network must end in a Dense readout after any spatial pooling or flattening")
        return ntk, nngp

    return k


def nt_kernels(model, x1, x2=None) -> Tuple[np.ndarray, np.ndarray]:
    """``(ntk, nngp)`` as float64 NumPy arrays ``(N1, N2)`` from neural-tangents, evaluated in float64.

    ``model`` is anything :func:`as_kernel_fn` accepts. Inputs are cast to float64.
    """
    return nt_pair_fn(model)(x1, x2)


__all__ = ["import_nt", "is_available", "stax_of_spec", "to_nt_params", "as_kernel_fn", "nt_pair_fn", "nt_kernels"]
