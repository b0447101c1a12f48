"""Test helper: one finite network evaluated at scaled parameters ``s * theta_0`` (float64).

Gives outputs ``g(x; s) = f(x; s theta_0)`` and Jacobians ``J(s theta_0)`` with respect to all parameters
(flattened), so that empirical cross-scale kernels ``J(s theta_0)(x) J(s' theta_0)(x')^T`` and the
parameter-space dynamics of the linearised-along-the-path model can be checked against the theory.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from widelimit._x64 import x64
from widelimit.nets import apply, init_params


_COMPILED: dict = {}


class ScaledNet:
    """A finite instance of ``spec`` (``out_dim`` outputs) drawn with ``seed`` for inputs of dimension ``d``."""

    def __init__(self, spec, seed: int, d: int):
        self.spec = spec
        with x64():
            params = init_params(spec, jax.random.PRNGKey(seed), (d,), dtype=jnp.float64)
            self.theta0, unravel = ravel_pytree(params)
            key = (spec, d)
            if key not in _COMPILED:   # one compilation per architecture, shared by all seeds
                _COMPILED[key] = (jax.jit(lambda th, x: apply(spec, unravel(th), x)),
                                  jax.jit(jax.jacrev(lambda th, x: apply(spec, unravel(th), x)[:, 0])))
            self._f, self._jac = _COMPILED[key]
        self.n_params = int(self.theta0.size)
        self._cache = {}

    def outputs(self, s: float, x) -> np.ndarray:
        """``f(x; s theta_0)``, shape (N, out_dim)."""
        with x64():
            return np.asarray(self._f(s * self.theta0, jnp.asarray(x, dtype=jnp.float64)))

    def jacobian(self, s: float, x) -> np.ndarray:
        """Jacobian of output 0 at ``s theta_0``, shape (N, P) (cached per (s, x))."""
        key = (float(s), id(x))
        if key not in self._cache:
            with x64():
                self._cache[key] = np.asarray(self._jac(s * self.theta0, jnp.asarray(x, dtype=jnp.float64)))
        return self._cache[key]

    def kernel_fn(self):
        """``kernel_fn(x1, x2, scale1, scale2) -> (ntk, nngp)`` of this one network (for CrossScaleFlow);
        the "nngp" is the product of the two outputs (a single draw, not an expectation)."""
        def fn(x1, x2, s1, s2):
            x2 = x1 if x2 is None else x2
            ntk = np.stack([self.jacobian(a, x1) @ self.jacobian(b, x2).T for a, b in zip(s1, s2)])
            nngp = np.stack([np.outer(self.outputs(a, x1)[:, 0], self.outputs(b, x2)[:, 0])
                             for a, b in zip(s1, s2)])
            return ntk, nngp
        return fn
