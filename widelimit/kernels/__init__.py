"""Infinite-width kernels (NNGP and NTK) and the kernel container :class:`DataKernels`.

Empirical NTKs of finite networks, kernels sampled from finite instances and the homogeneity measurement
live with the finite networks (:mod:`widelimit.nets.empirical`, :mod:`widelimit.nets.homogeneity`).

Conventions: the NTK is unnormalised, ``Theta(x, x') = sum_p df(x)/dtheta_p df(x')/dtheta_p``, and both
kernels are per output (the infinite-width kernels are ``K * I_K`` across the ``K`` outputs). With the
MSE ``l = 1/(2 N K) sum (f - y)^2`` the function-space kernel of gradient flow is ``Theta / (N K)``, as in
``neural_tangents.predict``. Everything is returned as float64 NumPy arrays.

Backends: ``"native"`` (closed forms in NumPy, :mod:`widelimit.kernels.native`; plain MLPs, no JAX or
neural-tangents needed) and ``"nt"`` (neural-tangents, :mod:`widelimit.kernels.nt_backend`; MLPs with
LayerNorm, CNNs, and any user ``stax`` triple or ``kernel_fn``). ``"auto"`` picks native for plain MLPs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..arch import CNN, MLP
from .container import FORMAT_VERSION, DataKernels
from .cross_scale import CrossScaleKernels, cross_scale_kernels

BACKENDS = ("auto", "native", "nt")


@dataclass(frozen=True)
class Kernels:
    """Infinite-width kernels between two sets of inputs, per output (unpacks as ``ntk, nngp = k``).

    Fields:
      ntk: unnormalised NTK Theta(x1, x2), float64 ``(N1, N2)``.
      nngp: NNGP kernel K(x1, x2) (prior covariance of f0), float64 ``(N1, N2)``.
    """

    ntk: np.ndarray
    nngp: np.ndarray

    def __iter__(self):
        return iter((self.ntk, self.nngp))


def _resolve_backend(model, backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    native_ok = isinstance(model, MLP) and model.norm is None
    if backend == "auto":
        return "native" if native_ok else "nt"
    if backend == "native" and not native_ok:
        raise ValueError("backend='native' supports only widelimit.arch.MLP specs with norm=None, got "
                         f"{model!r}; use backend='nt'")
    return backend


def _check_batch_size(batch_size) -> None:
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be None or a positive int, got {batch_size!r}")


def _blocked(compute: Callable, x1: np.ndarray, x2: Optional[np.ndarray], batch_size: Optional[int]) -> Kernels:
    """Evaluate ``compute(a, b) -> (ntk, nngp)`` block by block (each entry depends only on its pair)."""
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    if batch_size is None or (batch_size >= n1 and batch_size >= n2):
        return Kernels(*compute(x1, x2))
    ntk, nngp = np.empty((n1, n2)), np.empty((n1, n2))
    for i in range(0, n1, batch_size):
        for j in range(0, n2, batch_size):
            si, sj = slice(i, i + batch_size), slice(j, j + batch_size)
            b = None if (x2 is None and i == j) else (x1 if x2 is None else x2)[sj]
            ntk[si, sj], nngp[si, sj] = compute(x1[si], b)
    return Kernels(ntk, nngp)


def analytic_kernels(model, x1, x2=None, *, backend: str = "auto", batch_size: Optional[int] = None) -> Kernels:
    """Infinite-width ``Kernels(ntk, nngp)`` of ``model`` between ``x1`` ``(N1, ...)`` and ``x2`` ``(N2, ...)``.

    ``model``: a :class:`widelimit.arch.MLP`/:class:`~widelimit.arch.CNN` spec, a neural-tangents ``stax``
    triple, or a neural-tangents ``kernel_fn`` (the last two need ``backend`` "auto" or "nt").
    ``x2=None`` means ``x2 = x1``. ``batch_size`` evaluates the kernel in ``batch_size x batch_size``
    blocks to bound memory (the result does not depend on it). For the standard parameterisation the
    NTK depends on ``spec.width`` (neural-tangents' convention; see :mod:`widelimit.kernels.native`).
    """
    _check_batch_size(batch_size)
    x1 = np.asarray(x1, dtype=np.float64)
    x2 = None if x2 is None else np.asarray(x2, dtype=np.float64)
    if isinstance(model, (MLP, CNN)):
        model.check_input(x1, "x1")
        if x2 is not None:
            model.check_input(x2, "x2")
    return kernel_fn(model, backend)(x1, x2, batch_size=batch_size)


def kernel_fn(model, backend: str = "auto") -> Callable[..., Kernels]:
    """``k(x1, x2=None, batch_size=None) -> Kernels``: :func:`analytic_kernels` with ``model`` fixed.

    The backend is resolved (and, for neural-tangents, the ``stax`` network built and jit-compiled)
    once, here; reuse ``k`` for repeated evaluations.
    """
    which = _resolve_backend(model, backend)
    if which == "native":
        from .native import mlp_kernels
        pair = lambda a, b: mlp_kernels(model, a, b)  # noqa: E731
    else:
        from .nt_backend import nt_pair_fn
        pair = nt_pair_fn(model)
    spec = model if isinstance(model, (MLP, CNN)) else None

    def k(x1, x2=None, batch_size: Optional[int] = None) -> Kernels:
        _check_batch_size(batch_size)
        x1 = np.asarray(x1, dtype=np.float64)
        x2 = None if x2 is None else np.asarray(x2, dtype=np.float64)
        if spec is not None:
            spec.check_input(x1, "x1")
            if x2 is not None:
                spec.check_input(x2, "x2")
        return _blocked(pair, x1, x2, batch_size)

    return k


__all__ = ["Kernels", "BACKENDS", "analytic_kernels", "kernel_fn", "DataKernels", "FORMAT_VERSION",
           "CrossScaleKernels", "cross_scale_kernels"]
