"""Kernels measured on finite networks: the empirical NTK (Jacobian contraction in plain JAX, or layer by
layer for bias-free MLPs) and NTK/NNGP estimates sampled from finite instances (:func:`sampled_kernels`).

``Theta_kl(x, x') = sum_p d f_k(x)/d theta_p * d f_l(x')/d theta_p`` (unnormalised), computed block by
block: the Jacobian of a block of at most ``batch_size`` examples is formed with ``jax.jacrev``, so the
peak memory is about ``2 * batch_size * K * P`` numbers (``K`` outputs, ``P`` parameters); the block is
shrunk further so that one Jacobian stays under ``max_bytes``. All blocks have the same shape (the last
one is padded by repeating a row, the padding discarded), and the compiled block functions are cached per
``apply_fn``, so repeated calls with the same function do not recompile. Runs in float64 (inside
:func:`widelimit._x64.x64`) when the parameters are float64; inputs are cast to the parameters' dtype.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np


def _blocks(n: int, size: int):
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _contract(apply_fn, params, xa, xb, full: bool, same: bool):
    import jax
    import jax.numpy as jnp

    def jac(x):
        return jax.jacrev(lambda p: apply_fn(p, x))(params)  # leaves (B, K, *shape)

    ja = jac(xa)
    jb = ja if same else jac(xb)
    total = 0.0
    for la, lb in zip(jax.tree_util.tree_leaves(ja), jax.tree_util.tree_leaves(jb)):
        la = la.reshape(la.shape[0], la.shape[1], -1)
        lb = lb.reshape(lb.shape[0], lb.shape[1], -1)
        if full:
            total = total + jnp.einsum("ikp,jlp->ijkl", la, lb)
        else:
            total = total + jnp.einsum("ikp,jkp->ij", la, lb) / la.shape[1]
    return total


def _compiled(apply_fn: Callable, full: bool, same: bool):
    """Jitted block contraction, cached per (hashable) ``apply_fn`` so repeated calls reuse compilations."""
    try:
        hash(apply_fn)
    except TypeError:
        return _jit_contract(apply_fn, full, same)
    return _cached_jit_contract(apply_fn, full, same)


def _jit_contract(apply_fn: Callable, full: bool, same: bool):
    import jax
    if same:
        return jax.jit(lambda p, a: _contract(apply_fn, p, a, a, full, True))
    return jax.jit(lambda p, a, b: _contract(apply_fn, p, a, b, full, False))


_cached_jit_contract = functools.lru_cache(maxsize=32)(_jit_contract)


@functools.lru_cache(maxsize=32)
def _spec_apply(spec) -> Callable:
    from .network import apply
    return functools.partial(apply, spec)


def empirical_ntk(apply_fn: Callable, params, x1, x2: Optional[np.ndarray] = None, *,
                  batch_size: int = 64, output: str = "mean", max_bytes: int = 2 ** 28) -> np.ndarray:
    """Empirical NTK of ``apply_fn(params, x) -> (N, K)`` between ``x1`` ``(N1, ...)`` and ``x2`` ``(N2, ...)``.

    ``output="mean"``: ``(N1, N2)``, the average over outputs ``k`` of ``Theta_kk`` (the infinite-width
    NTK is ``Theta * I_K``, so this is the estimate to compare with it). ``output="full"``:
    ``(N1, N2, K, K)``. ``x2=None`` means ``x2 = x1`` (only blocks on or above the diagonal are computed).
    Returns a NumPy array in the parameters' dtype (float64 when they are float64).

    ``apply_fn`` must treat examples independently (no batch statistics): a batch-normalised network's
    NTK is only defined for one fixed batch, obtained here with ``batch_size >= N1`` and ``x2=None``.
    """
    import jax

    from .._x64 import x64

    if output not in ("mean", "full"):
        raise ValueError(f"output must be 'mean' or 'full', got {output!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be callable as apply_fn(params, x), got {type(apply_fn).__name__}")
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError("params has no arrays")
    dtype = np.result_type(*[np.dtype(leaf.dtype) for leaf in leaves])
    x1 = np.asarray(x1)
    same = x2 is None
    x2 = x1 if same else np.asarray(x2)
    if x1.ndim < 2 or x2.shape[1:] != x1.shape[1:]:
        raise ValueError(f"x1 and x2 must be batches (N, ...) of the same per-example shape, "
                         f"got {x1.shape} and {x2.shape}")
    n_params = sum(int(np.prod(leaf.shape)) for leaf in leaves)
    ctx = x64() if dtype == np.float64 else contextlib.nullcontext()
    with ctx:
        import jax.numpy as jnp

        k_out = int(jax.eval_shape(lambda p, x: apply_fn(p, x), params,
                                   jax.ShapeDtypeStruct((1,) + x1.shape[1:], dtype)).shape[-1])
        per_example = k_out * n_params * dtype.itemsize
        n_max = max(x1.shape[0], x2.shape[0])
        size = max(1, min(batch_size, n_max, max_bytes // max(per_example, 1)))
        full = output == "full"
        fn, fn_same = _compiled(apply_fn, full, False), _compiled(apply_fn, full, True)
        shape = (x1.shape[0], x2.shape[0]) + ((k_out, k_out) if full else ())
        out = np.zeros(shape, dtype=dtype)
        xa_all, xb_all = jnp.asarray(x1, dtype), jnp.asarray(x2, dtype)
        b1 = _blocks(x1.shape[0], size)
        b2 = b1 if same else _blocks(x2.shape[0], size)

        def padded(x, sl):  # every block gets the same shape (one compilation); pad by repeating a row
            blk = x[sl]
            short = size - blk.shape[0]
            return blk if short == 0 else jnp.concatenate([blk, jnp.repeat(blk[-1:], short, axis=0)])

        for i, si in enumerate(b1):
            ni = si.stop - si.start
            for j, sj in enumerate(b2):
                if same and j < i:
                    continue
                nj = sj.stop - sj.start
                if same and i == j:
                    out[si, sj] = np.asarray(fn_same(params, padded(xa_all, si)))[:ni, :ni]
                    continue
                block = np.asarray(fn(params, padded(xa_all, si), padded(xb_all, sj)))[:ni, :nj]
                out[si, sj] = block
                if same:
                    out[sj, si] = np.swapaxes(block, 0, 1) if not full else block.transpose(1, 0, 3, 2)
    return out


def empirical_ntk_of_spec(spec, key, x1, x2: Optional[np.ndarray] = None, *, dtype=None,
                          batch_size: int = 64, output: str = "mean", max_bytes: int = 2 ** 28) -> np.ndarray:
    """Empirical NTK of a random finite instance of ``spec`` (:func:`widelimit.nets.init_params` with ``key``).

    ``dtype`` defaults to float64 (parameters drawn inside :func:`widelimit._x64.x64`). For
    ``norm="batch"`` the whole ``x1`` is one batch (``x2`` must be None).
    """
    import jax.numpy as jnp

    from .._x64 import x64
    from .network import init_params

    x1 = np.asarray(x1)
    spec.check_input(x1, "x1")
    if x2 is not None:
        spec.check_input(x2, "x2")
    if spec.norm == "batch":
        if x2 is not None:
            raise ValueError("x2 must be None for norm='batch': the NTK of a batch-normalised network is "
                             "defined for one batch, x1")
        batch_size, max_bytes = max(batch_size, x1.shape[0]), 2 ** 62  # one block: the whole batch
    dtype = jnp.float64 if dtype is None else dtype
    ctx = x64() if np.dtype(dtype) == np.float64 else contextlib.nullcontext()
    with ctx:
        params = init_params(spec, key, x1.shape[1:], dtype=dtype)
    return empirical_ntk(_spec_apply(spec), params, x1, x2, batch_size=batch_size,
                         output=output, max_bytes=max_bytes)


def mlp_empirical_ntk(spec, params, x1, x2=None) -> np.ndarray:
    """Empirical NTK of a finite bias-free MLP (NTK parameterisation, no normalisation), float64 NumPy,
    averaged over the outputs' diagonal blocks: ``mean_k Theta_kk(x1, x2)``, shape (N1, N2).

    Uses the layer structure instead of Jacobians: with ``z_l = (W_std/sqrt(n_{l-1})) h_{l-1} W_l`` and
    ``delta_l = df_k/dz_l``, ``Theta_kk(x, x') = sum_l (W_std^2/n_{l-1}) <h_{l-1}(x), h_{l-1}(x')>
    <delta_l(x), delta_l(x')>``: memory O(N width), so it works at widths where a Jacobian would not fit.
    """
    from ..arch import MLP
    from .network import layer_names
    if not isinstance(spec, MLP) or spec.has_bias or spec.norm is not None or \
            spec.parameterization != "ntk" or spec.activation not in ("relu", "leaky_relu", "abrelu", "identity"):
        raise ValueError(f"mlp_empirical_ntk needs a bias-free, unnormalised MLP in the NTK parameterisation "
                         f"with a piecewise-linear activation, got {spec!r}")
    names = layer_names(spec)
    ws = [np.asarray(params[nm]["W"], np.float64) for nm in names]
    if spec.activation == "relu":
        lo, hi = 0.0, 1.0
    elif spec.activation == "leaky_relu":
        lo, hi = float(spec.slope), 1.0
    elif spec.activation == "abrelu":
        lo, hi = float(spec.abrelu_a), float(spec.abrelu_b)
    else:
        lo, hi = 1.0, 1.0
    s = float(spec.W_std)

    def forward(x):
        hs, ds = [np.asarray(x, np.float64)], []
        for w in ws[:-1]:
            z = (s / np.sqrt(w.shape[0])) * (hs[-1] @ w)
            ds.append(np.where(z > 0, hi, lo))
            hs.append(z * ds[-1])
        return hs, ds

    h1, d1 = forward(x1)
    same = x2 is None
    h2, d2 = (h1, d1) if same else forward(x2)
    n_out = ws[-1].shape[1]
    gram_h = [(s * s / w.shape[0]) * (a @ b.T) for w, a, b in zip(ws, h1, h2)]
    total = np.zeros((h1[0].shape[0], h2[0].shape[0]))
    for k in range(n_out):
        total += gram_h[-1]                                  # readout: delta = 1
        if len(ws) == 1:
            continue
        e1 = np.broadcast_to((s / np.sqrt(ws[-1].shape[0])) * ws[-1][:, k], h1[-1].shape) * d1[-1]
        e2 = e1 if same else np.broadcast_to((s / np.sqrt(ws[-1].shape[0])) * ws[-1][:, k],
                                             h2[-1].shape) * d2[-1]
        for li in range(len(ws) - 2, -1, -1):              # hidden layer li: input h[li], delta e (wrt z_li)
            total += gram_h[li] * (e1 @ e2.T)
            if li == 0:
                break
            back = s / np.sqrt(ws[li].shape[0])
            e1 = back * (e1 @ ws[li].T) * d1[li - 1]
            e2 = e1 if same else back * (e2 @ ws[li].T) * d2[li - 1]
    return total / n_out


@dataclass(frozen=True)
class KernelEstimates:
    """NTK and NNGP blocks estimated from finite instances (:func:`sampled_kernels`), float64, named as
    :class:`widelimit.kernels.DataKernels`' fields (this layer does not import the theory's container).

    Fields:
      ntk_train_train: mean empirical NTK on the training points, (N, N), symmetrised.
      ntk_test_train: mean empirical NTK test-train, (M, N).
      nngp_train_train, nngp_test_train: covariance of the initial outputs, (N, N) and (M, N).
      nngp_test_test: its test-test diagonal, (M,).
      ntk_seeds: number of networks averaged for the NTK; nngp_draws: initial-output draws x outputs
        pooled for the NNGP.
    """

    ntk_train_train: np.ndarray
    ntk_test_train: np.ndarray
    nngp_train_train: np.ndarray
    nngp_test_train: np.ndarray
    nngp_test_test: np.ndarray
    ntk_seeds: int
    nngp_draws: int


def sampled_kernels(spec, ds, *, ntk_seeds: Sequence[int] = (0, 1, 2, 3), nngp_samples: int = 256,
                    seed0: int = 100_000, batch_size: int = 32, chunk: int = 32,
                    max_bytes: int = 2 ** 28) -> KernelEstimates:
    """Kernels of ``spec`` on ``ds`` estimated from finite instances, without neural-tangents (any spec,
    CNNs included; for machines where the analytic CNN kernels are unavailable).

    * NTK: mean over ``ntk_seeds`` of the empirical NTK (:func:`empirical_ntk`, mean of
      the outputs' diagonal blocks) of networks initialised with ``PRNGKey(seed)``, float32;
    * NNGP: the covariance over ``nngp_samples`` random initialisations (keys ``seed0 + i``) of the initial
      outputs, pooled over the K outputs: ``K(x, x') = mean_{i,k} f0_ik(x) f0_ik(x')``.

    Returns :class:`KernelEstimates` (float64 arrays named as :class:`widelimit.kernels.DataKernels`'
    fields; ``nngp_test_test`` is the diagonal (M,)).

    At the spec's finite width these differ from the infinite-width kernels by ``O(width^{-1/2})`` random
    and ``O(1/width)`` systematic terms; the Monte-Carlo error of the NNGP is ``~ (nngp_samples K)^{-1/2}``.
    """
    import jax
    import jax.numpy as jnp

    from .network import apply, init_params

    if spec.homogeneity_degree is None:
        raise ValueError(f"spec must be homogeneous in its parameters for the L2 theory, got {spec!r}")
    in_shape = tuple(ds.x_train.shape[1:])
    xtr = jnp.asarray(ds.x_train, jnp.float32)
    xte = jnp.asarray(ds.x_test, jnp.float32)
    fn = lambda p, x: apply(spec, p, x)  # noqa: E731
    ntk_tt = np.zeros((ds.n_train, ds.n_train))
    ntk_xt = np.zeros((ds.n_test, ds.n_train))
    for s in ntk_seeds:
        params = init_params(spec, jax.random.PRNGKey(int(s)), in_shape, jnp.float32)
        ntk_tt += np.asarray(empirical_ntk(fn, params, xtr, batch_size=batch_size, max_bytes=max_bytes), np.float64)
        ntk_xt += np.asarray(empirical_ntk(fn, params, xte, xtr, batch_size=batch_size, max_bytes=max_bytes),
                             np.float64)
    ntk_tt /= len(ntk_seeds)
    ntk_xt /= len(ntk_seeds)

    @jax.jit
    def f0(keys):
        return jax.vmap(lambda k: jnp.concatenate([fn(init_params(spec, k, in_shape, jnp.float32), xtr),
                                                   fn(init_params(spec, k, in_shape, jnp.float32), xte)]))(keys)

    n = ds.n_train
    nngp_tt = np.zeros((n, n))
    nngp_xt = np.zeros((ds.n_test, n))
    diag = np.zeros(ds.n_test)
    count = 0
    for start in range(0, int(nngp_samples), chunk):
        keys = jnp.stack([jax.random.PRNGKey(seed0 + i) for i in range(start, min(start + chunk, nngp_samples))])
        f = np.asarray(f0(keys), np.float64)                   # (S, N + M, K)
        ft, fx = f[:, :n], f[:, n:]
        nngp_tt += np.einsum("snk,smk->nm", ft, ft)
        nngp_xt += np.einsum("snk,smk->nm", fx, ft)
        diag += np.einsum("snk,snk->n", fx, fx)
        count += f.shape[0] * f.shape[2]
    return KernelEstimates(0.5 * (ntk_tt + ntk_tt.T), ntk_xt, nngp_tt / count, nngp_xt / count, diag / count,
                           len(ntk_seeds), count)


__all__ = ["empirical_ntk", "empirical_ntk_of_spec", "mlp_empirical_ntk", "sampled_kernels", "KernelEstimates"]
