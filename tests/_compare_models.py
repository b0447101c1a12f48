"""Users' models for tests/test_compare.py (also the factories the CLI tests load by 'module:factory').

* :class:`NTKMLP`: bias-free Flax linen ReLU MLP in the NTK parameterisation, every layer (readout too)
  ``h ← sqrt(2 / fan_in) · h W`` with ``W ~ N(0, 1)``: its infinite-width kernels are
  ``widelimit.analytic_kernels(MLP(depth, W_std=√2))``.
* :func:`layernorm_model`: plain JAX, ``f = sqrt(1/H) relu(LN(x W1)) W2`` without gains: ``W1`` is
  scale-invariant as a whole (LayerNorm normalises each example over the hidden units).
"""
import numpy as np

import jax
import jax.numpy as jnp
from flax import linen

from widelimit.data import load_dataset
from widelimit.models import from_flax_linen, from_jax


class NTKMLP(linen.Module):
    width: int = 512
    depth: int = 3
    out: int = 1

    @linen.compact
    def __call__(self, x):
        h = x
        for i in range(self.depth):
            fan_in = h.shape[-1]
            n_out = self.width if i < self.depth - 1 else self.out
            w = self.param(f"W{i}", linen.initializers.normal(1.0), (fan_in, n_out))
            h = jnp.sqrt(2.0 / fan_in) * (h @ w)
            if i < self.depth - 1:
                h = linen.relu(h)
        return h


def ntk_mlp(d: int, width: int = 512, depth: int = 3, out: int = 1):
    net = NTKMLP(width=width, depth=depth, out=out)
    variables = net.init(jax.random.PRNGKey(0), jnp.zeros((1, d)))
    return from_flax_linen(net, variables, input_shape=(d,), name=f"flax-ntk-mlp-{width}")


def digits_38(n: int = 64, seed: int = 0):
    return load_dataset("digits", classes=[3, 8], targets="pm1", n_train=n, n_test=n, seed=seed)


def layernorm_model(d: int, width: int = 32):
    def apply(p, x):
        h = x @ p["W1"]
        h = (h - h.mean(1, keepdims=True)) / jnp.sqrt(h.var(1, keepdims=True) + 1e-12)
        return jax.nn.relu(h) @ p["W2"] / jnp.sqrt(width)

    def init(key):
        k1, k2 = jax.random.split(key)
        return {"W1": jax.random.normal(k1, (d, width)) / np.sqrt(d), "W2": jax.random.normal(k2, (width, 1))}

    return from_jax(apply, init(jax.random.PRNGKey(0)), init=init, name="layernorm-mlp")


# -- factories for the CLI --------------------------------------------------------------------------
def tiny():
    """(model, data): a width-32 NTK MLP on 16 digits 3-vs-8."""
    ds = digits_38(16)
    return ntk_mlp(ds.x_train.shape[1], width=32), ds


def not_a_model():
    return 42


def wrong_targets():
    """A 2-output model on 1-column targets."""
    ds = digits_38(16)
    return {"model": ntk_mlp(ds.x_train.shape[1], width=8, out=2), "data": ds}


def broken():
    raise RuntimeError("this factory fails")
