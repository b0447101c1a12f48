"""Scoped float64 for JAX, on every supported JAX version.

widelimit never flips JAX's global ``jax_enable_x64`` flag: code next to ours keeps its float32
defaults. Theory code (``widelimit.dynamics``, ``widelimit.predict``, native kernels) computes in
NumPy/SciPy float64, which needs no flag. JAX code that must run in float64 (empirical NTKs for
kernel cross-checks, the neural-tangents backend) enters :func:`x64` for the duration of the call.
"""
from __future__ import annotations


import jax


def x64(enabled: bool = True):
    """Context manager that enables (or disables) 64-bit JAX types inside its block only."""
    state = getattr(jax, "enable_x64", None)  # jax >= 0.5: a config State usable as a context
    if state is not None and callable(state):
        return state(enabled)
    from jax.experimental import enable_x64, disable_x64  # jax 0.4.x
    return enable_x64() if enabled else disable_x64()


def x64_enabled() -> bool:
    """Whether 64-bit types are currently enabled in JAX (globally or by :func:`x64`)."""
    return bool(jax.config.read("jax_enable_x64")) if hasattr(jax.config, "read") else \
        bool(jax.config.jax_enable_x64)


__all__ = ["x64", "x64_enabled"]
