"""Kernels of a user's model measured from finite instances: empirical NTK at init, Monte-Carlo NNGP.

* NTK: the empirical NTK ``Θ(x, x') = Σ_p ∂f(x)/∂θ_p ∂f(x')/∂θ_p`` of the model's own parameters (and,
  with ``ntk_seeds``, the mean over fresh initialisations), per output and averaged over the K outputs'
  diagonal blocks (the isotropic kernel the theory uses; docs/theory.md §1). Blockwise Jacobian
  contraction (:func:`widelimit.nets.empirical.empirical_ntk`): memory ``~ 2 · batch_size · K · P`` numbers.
* NNGP: the covariance of the initial outputs over ``nngp_samples`` random initialisations,
  ``K(x, x') = mean_{i,k} f0_ik(x) f0_ik(x')`` (the prior has mean zero for symmetric initialisations;
  the sample mean is reported so a non-zero mean is visible), computed in chunks of vmapped inits.

Monte-Carlo errors are estimated and returned: for the NNGP the standard error of the mean over
samples of the trace-normalised kernel; for the NTK, over ``ntk_seeds`` when more than one is given.
These kernels are *measured inputs* of the theory for a user's model (docs/theory.md §8): predictions
built on them are labelled as such by :func:`widelimit.compare`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

from .adapters import UserModel

__all__ = ["SampledKernels", "model_kernels"]


@dataclasses.dataclass(frozen=True)
class SampledKernels:
    """Measured kernels of a model on a train/test split (float64 arrays).

    Attributes:
      ntk_train_train (N, N), ntk_test_train (M, N): empirical NTK (mean over ``ntk_seeds``).
      nngp_train_train (N, N), nngp_test_train (M, N), nngp_test_test (M,) or (M, M): Monte-Carlo NNGP
        (the test block's diagonal, or the full block with ``full_test=True``: the n-seed spread needs it).
      ntk_rel_error: relative standard error of the NTK over seeds (NaN with one seed).
      nngp_rel_error: relative standard error of the NNGP trace over samples.
      f0_mean_rms: RMS over points of the sample mean of f0 (≈ 0 for a centred prior).
      ntk_seeds, nngp_samples: what was used.
    """

    ntk_train_train: np.ndarray
    ntk_test_train: np.ndarray
    nngp_train_train: np.ndarray
    nngp_test_train: np.ndarray
    nngp_test_test: np.ndarray
    ntk_rel_error: float
    nngp_rel_error: float
    f0_mean_rms: float
    ntk_seeds: tuple
    nngp_samples: int


def model_kernels(model: UserModel, x_train, x_test, *, ntk_seeds: Optional[Sequence[int]] = None,
                  nngp_samples: int = 256, seed0: int = 10_000, chunk: int = 32, batch_size: int = 32,
                  max_bytes: int = 2 ** 28, progress: bool = False, full_test: bool = False) -> SampledKernels:
    """Empirical NTK and Monte-Carlo NNGP of ``model`` (see the module docstring).

    ``ntk_seeds=None``: the NTK of ``model.params`` itself; a list of seeds: mean over ``model.init(key)``.
    The NNGP needs ``model.init``. Inputs are used in the parameters' dtype. ``full_test``: return the
    full (M, M) test-test NNGP block instead of its diagonal.
    """
    import jax
    import jax.numpy as jnp

    from ..nets.empirical import empirical_ntk

    if not isinstance(model, UserModel):
        raise TypeError(f"model: expected a UserModel, got {type(model).__name__}")
    if not (isinstance(nngp_samples, int) and nngp_samples >= 2):
        raise ValueError(f"nngp_samples: need an int >= 2, got {nngp_samples!r}")
    if model.init is None:
        raise ValueError("model: the Monte-Carlo NNGP needs model.init(key) (give init= to the adapter)")
    xtr, xte = np.asarray(x_train), np.asarray(x_test)
    if xtr.ndim < 2 or xte.ndim < 2 or xtr.shape[1:] != xte.shape[1:]:
        raise ValueError(f"x_train, x_test: need batches with the same input shape, got {xtr.shape}, {xte.shape}")
    dtype = jax.tree_util.tree_leaves(model.params)[0].dtype
    a_tr, a_te = jnp.asarray(xtr, dtype), jnp.asarray(xte, dtype)
    seeds = tuple(int(s) for s in ntk_seeds) if ntk_seeds is not None else ()
    param_sets = [model.init(jax.random.PRNGKey(s)) for s in seeds] if seeds else [model.params]
    ktts, kxts = [], []
    for p in _progress(param_sets, progress, "empirical NTK"):
        ktts.append(np.asarray(empirical_ntk(model.apply, p, a_tr, batch_size=batch_size, max_bytes=max_bytes),
                               np.float64))
        kxts.append(np.asarray(empirical_ntk(model.apply, p, a_te, a_tr, batch_size=batch_size,
                                             max_bytes=max_bytes), np.float64))
    ktt, kxt = np.mean(ktts, 0), np.mean(kxts, 0)
    ntk_err = math.nan
    if len(ktts) > 1:
        tr = np.array([np.trace(k) for k in ktts])
        ntk_err = float(np.std(tr, ddof=1) / math.sqrt(len(tr)) / abs(np.mean(tr)))
    both = jnp.concatenate([a_tr, a_te])

    def outputs(key):
        return model.apply(model.init(key), both)

    batched = jax.jit(jax.vmap(outputs))
    n, m = xtr.shape[0], xte.shape[0]
    s_tt, s_xt, s_xx = np.zeros((n, n)), np.zeros((m, n)), np.zeros((m, m) if full_test else m)
    s_mean, traces, done = np.zeros(n + m), [], 0
    keys = jax.random.split(jax.random.PRNGKey(seed0), nngp_samples)
    for lo in _progress(range(0, nngp_samples, chunk), progress, "Monte-Carlo NNGP"):
        f = np.asarray(batched(keys[lo:lo + chunk]), np.float64)          # (c, n+m, K)
        f_tr, f_te = f[:, :n], f[:, n:]
        s_tt += np.einsum("cik,cjk->ij", f_tr, f_tr)
        s_xt += np.einsum("cik,cjk->ij", f_te, f_tr)
        s_xx += np.einsum("cik,cjk->ij" if full_test else "cik,cik->i", f_te, f_te)
        s_mean += f.mean(-1).sum(0)
        traces.extend(np.einsum("cik,cik->c", f_tr, f_tr) / (n * f.shape[-1]))
        done += f.shape[0]
    k_out = f.shape[-1]
    scale = 1.0 / (done * k_out)
    tr = np.asarray(traces)
    return SampledKernels(ktt, kxt, s_tt * scale, s_xt * scale, s_xx * scale, ntk_err,
                          float(np.std(tr, ddof=1) / math.sqrt(tr.size) / abs(np.mean(tr))),
                          float(np.sqrt(np.mean((s_mean / done) ** 2))), seeds, int(done))


def _progress(it, enabled: bool, desc: str):
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, leave=False)
