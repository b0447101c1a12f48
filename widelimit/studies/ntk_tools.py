"""Theory and measurement helpers shared by the NTK-regime studies (quick, width, tstar, lambda_opt,
linear_vs_deep).

Conventions (THEORY.md section 1): penalty ``(lam/2)||theta||^2``; GD ``theta <- theta - eta (grad l +
lam theta)``; physical time ``t = eta * steps``; unnormalised NTK; MSE ``1/(2 N K) sum (f - y)^2``.

Theory side
-----------
:func:`dataset_kernels` evaluates the analytic infinite-width NTK and NNGP of a spec on a dataset (cached
in a :class:`~widelimit.studies.common.PointCache`). :class:`ExpectedLoss` gives the test MSE of the
infinite-width L2 flow *averaged over the random initial function* ``f0 ~ NNGP`` (what the average over
seeds of finite networks estimates)::

    E loss(t) = loss(mean f_t) + (1 / 2M) sum_x Var f_t(x),
    Var f_t(x) = e^{-2 beta t} K_xx - 2 e^{-beta t} (K_xX C_t^T)_xx + (C_t K_XX C_t^T)_xx,
    C_t = G diag(g_t) V^T,   G = Theta~_xX V,   g_t = (e^{-beta t} - P_t) / mu,

(``Theta~ = V diag(mu) V^T``, ``P_t`` the per-mode propagator, see :mod:`widelimit.dynamics.special`;
``K`` is the NNGP kernel). Only the *mean over test points* of the variance is needed, and it is a
quadratic form in ``g_t``: ``mean_x Var = e^{-2bt} mean(K_xx) - (2/M) e^{-bt} r.g_t + (1/M) g_t^T H g_t``
with ``r_j = sum_x (K_xX V)_xj G_xj`` and ``H = (V^T K_XX V) * (G^T G)`` (elementwise), precomputed once:
``O(N^2)`` per time. The mean function is the flow with ``f0 = 0``
(:class:`~widelimit.dynamics.ntk_l2.L2Flow`), its loss :class:`widelimit.predict.FlowMetrics`.

Measurement side
----------------
:func:`train_grid` trains a grid of finite networks (seeds x L2 values or seeds x learning rates) with
:func:`widelimit.train.run_sweep` (vmapped ensembles, resumable: every finished run is stored) and
returns the metric streams stacked as ``(n_values, n_seeds, n_logs)`` arrays.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..dynamics.ntk_l2 import L2Flow
from ..dynamics.special import mode_coefficients
from .common import PointCache, refine_extremum

# ------------------------------------------------------------------------------------------------
# theory
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataKernels:
    """Analytic kernels of a spec on a train/test split (float64), with targets and the degree ``L``.

    ``ntk_tt`` (N, N), ``ntk_xt`` (M, N), ``nngp_tt`` (N, N), ``nngp_xt`` (M, N), ``nngp_xx_diag`` (M,).
    """

    ntk_tt: np.ndarray
    ntk_xt: np.ndarray
    nngp_tt: np.ndarray
    nngp_xt: np.ndarray
    nngp_xx_diag: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    L: int

    @property
    def n_train(self) -> int:
        return self.ntk_tt.shape[0]

    @property
    def n_test(self) -> int:
        return self.ntk_xt.shape[0]


def dataset_kernels(spec, ds, *, cache: Optional[PointCache] = None, key: Optional[Dict[str, Any]] = None,
                    backend: str = "auto", batch_size: Optional[int] = None) -> DataKernels:
    """Analytic NTK/NNGP of ``spec`` on dataset ``ds`` (a :class:`widelimit.data.Dataset`).

    With ``cache`` and a JSON-able ``key`` (which must identify spec and data), the kernels are stored and
    reloaded. ``L`` is ``spec.homogeneity_degree`` (ValueError if the spec is not homogeneous).
    """
    L = spec.homogeneity_degree
    if L is None:
        raise ValueError(f"spec must be homogeneous in its parameters for the L2 theory, got {spec!r}")

    def compute():
        from ..kernels import kernel_fn
        k = kernel_fn(spec, backend)
        tt = k(ds.x_train, None, batch_size=batch_size)
        xt = k(ds.x_test, ds.x_train, batch_size=batch_size)
        # diagonal of the test-test NNGP, one point at a time in blocks (only the diagonal is needed)
        diag = np.empty(ds.n_test)
        step = 256
        for i in range(0, ds.n_test, step):
            blk = k(ds.x_test[i:i + step], None, batch_size=batch_size).nngp
            diag[i:i + step] = np.diag(blk)
        return ({"k": {"ntk_tt": tt.ntk, "ntk_xt": xt.ntk, "nngp_tt": tt.nngp, "nngp_xt": xt.nngp,
                       "nngp_xx_diag": diag}}, {"n_train": ds.n_train, "n_test": ds.n_test})

    if cache is not None:
        if key is None:
            raise ValueError("key is required with cache (a JSON-able dict identifying spec and data)")
        arrs = cache.get_or_compute({"what": "kernels", **key}, compute).streams["k"]
    else:
        arrs = compute()[0]["k"]
    return DataKernels(np.asarray(arrs["ntk_tt"], np.float64), np.asarray(arrs["ntk_xt"], np.float64),
                       np.asarray(arrs["nngp_tt"], np.float64), np.asarray(arrs["nngp_xt"], np.float64),
                       np.asarray(arrs["nngp_xx_diag"], np.float64), np.asarray(ds.y_train, np.float64),
                       np.asarray(ds.y_test, np.float64), int(L))


def sampled_kernels(spec, ds, *, ntk_seeds: Sequence[int] = (0, 1, 2, 3), nngp_samples: int = 256,
                    seed0: int = 100_000, batch_size: int = 32, chunk: int = 32,
                    max_bytes: int = 2 ** 28) -> DataKernels:
    """Kernels of ``spec`` on ``ds`` estimated from finite instances, without neural-tangents (any spec,
    CNNs included; for machines where the analytic CNN kernels are unavailable).

    * NTK: mean over ``ntk_seeds`` of the empirical NTK (:func:`widelimit.kernels.empirical_ntk`, mean of
      the outputs' diagonal blocks) of networks initialised with ``PRNGKey(seed)``, float32;
    * NNGP: the covariance over ``nngp_samples`` random initialisations (keys ``seed0 + i``) of the initial
      outputs, pooled over the K outputs: ``K(x, x') = mean_{i,k} f0_ik(x) f0_ik(x')``.

    At the spec's finite width these differ from the infinite-width kernels by ``O(width^{-1/2})`` random
    and ``O(1/width)`` systematic terms; the Monte-Carlo error of the NNGP is ``~ (nngp_samples K)^{-1/2}``.
    """
    import jax
    import jax.numpy as jnp

    from ..kernels import empirical_ntk
    from ..nets import apply, init_params

    L = spec.homogeneity_degree
    if L is None:
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
    return DataKernels(0.5 * (ntk_tt + ntk_tt.T), ntk_xt, nngp_tt / count, nngp_xt / count, diag / count,
                       np.asarray(ds.y_train, np.float64), np.asarray(ds.y_test, np.float64), int(L))


def study_kernels(spec, ds, *, cache: Optional[PointCache], key: Dict[str, Any], kernels: str = "auto",
                  **sampled_options) -> Tuple[DataKernels, str]:
    """Kernels for a study: ``kernels="analytic"`` (:func:`dataset_kernels`), ``"sampled"``
    (:func:`sampled_kernels`) or ``"auto"`` (analytic when available -- MLPs always, CNNs where
    neural-tangents imports -- else sampled). Cached in ``cache`` under ``key``. Returns the kernels and
    the method used."""
    if kernels not in ("auto", "analytic", "sampled"):
        raise ValueError(f"kernels must be 'auto', 'analytic' or 'sampled', got {kernels!r}")
    if kernels == "auto":
        from ..arch import MLP
        kernels = "analytic"
        if not isinstance(spec, MLP):
            from ..kernels.nt_backend import import_nt  # the one module that imports neural-tangents
            try:
                import_nt()
            except Exception:  # not installed, or broken on this JAX version
                kernels = "sampled"
    if kernels == "analytic":
        return dataset_kernels(spec, ds, cache=cache, key={"spec": spec.to_dict(), **key}), "analytic"

    def compute():
        dk = sampled_kernels(spec, ds, **sampled_options)
        return ({"k": {f: getattr(dk, f) for f in ("ntk_tt", "ntk_xt", "nngp_tt", "nngp_xt", "nngp_xx_diag")}},
                {"L": dk.L})
    full_key = {"what": "sampled_kernels", "spec": spec.to_dict(), **key,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in sampled_options.items()}}
    arrs = (cache.get_or_compute(full_key, compute).streams["k"] if cache is not None else compute()[0]["k"])
    return DataKernels(*(np.asarray(arrs[f], np.float64) for f in ("ntk_tt", "ntk_xt", "nngp_tt", "nngp_xt",
                                                                    "nngp_xx_diag")),
                       np.asarray(ds.y_train, np.float64), np.asarray(ds.y_test, np.float64),
                       int(spec.homogeneity_degree)), "sampled"


class ExpectedLoss:
    """Test MSE of the infinite-width L2 dynamics averaged over ``f0 ~ NNGP`` (see the module docstring).

    Build once per dataset/spec (one eigendecomposition); evaluate for any ``lam`` at physical times ``t``.
    ``eta=None`` (default) is the gradient flow (closed form, :mod:`widelimit.dynamics.special`); a number
    ``eta`` is discrete GD with that learning rate at steps ``round(t / eta)`` (the recursion of
    :func:`linear_gd`, per mode). Both give the test outputs as

        f(x) = decay * f0(x) - G diag(gm) V^T f0(X) + G diag(jm) V^T y,

    so ``loss_of_mean`` (the ``f0 = 0`` mean function) and ``variance`` (mean over test points of
    ``Var f(x)``, per output) are quadratic forms in ``(gm, jm)`` with Gram matrices computed once;
    ``__call__`` = ``loss_of_mean + variance / 2``.
    """

    def __init__(self, dk: DataKernels, L: Optional[int] = None):
        self.dk = dk
        self.L = dk.L if L is None else int(L)
        self.flow = L2Flow(dk.ntk_tt, dk.y_train, 0.0, self.L, k_test_train=dk.ntk_xt)
        v = self.flow.eigenvectors
        g = self.flow.test_projection                      # (M, N) = Theta~_xX V
        m = g.shape[0]
        gg = g.T @ g
        c_eig = v.T @ dk.nngp_tt @ v                        # V^T K_XX V
        d = dk.nngp_xt @ v                                  # K_xX V
        self._h = c_eig * gg / m
        self._r = np.einsum("ij,ij->j", d, g) / m
        self._kxx = float(np.mean(dk.nngp_xx_diag))
        yt = dk.y_test.reshape(m, -1)
        ye = self.flow._y_eig                               # V^T y, (N, K)
        self._size = yt.size
        self._h_yy = gg * (ye @ ye.T)
        self._r_y = np.einsum("ik,ik->i", g.T @ yt, ye)
        self._c0 = float(np.sum(yt ** 2))

    def with_degree(self, L: int) -> "ExpectedLoss":
        """The same kernels with another homogeneity degree (e.g. the L = 1 comparison)."""
        return ExpectedLoss(self.dk, L)

    def _coeffs(self, lam: float, t: np.ndarray, eta: Optional[float]):
        """``(decay (T,), gm (T, N), jm (T, N))`` for the flow (``eta=None``) or discrete GD."""
        mu = self.flow.eigenvalues
        if eta is None:
            c = mode_coefficients(mu[None, :], t[:, None], float(lam), self.L)
            return c.decay[:, 0], c.gap_over_mu, c.J_over_mu
        eta = float(eta)
        if not (eta > 0 and 0 <= lam and eta * lam < 1):
            raise ValueError(f"need eta > 0 and 0 <= eta*lam < 1, got eta={eta}, lam={lam}")
        steps = np.rint(t / eta).astype(np.int64)
        c = 1.0 - eta * lam
        cL, cL1, ck = c ** self.L, c ** (self.L - 1), c ** (2 * (self.L - 1))
        P, J = np.ones_like(mu), np.zeros_like(mu)          # train modes: a_k = P a_0 + J y
        A, B = np.zeros_like(mu), np.zeros_like(mu)         # test: f_k = c^{Lk} f0 + G (A a_0 + B y)
        order = np.argsort(steps)
        dec, gm, jm = np.empty(t.size), np.empty((t.size, mu.size)), np.empty((t.size, mu.size))
        kern, j = 1.0, 0
        for k in range(int(steps.max()) + 1 if steps.size else 0):
            while j < order.size and steps[order[j]] == k:
                dec[order[j]], gm[order[j]], jm[order[j]] = cL ** k, -A, B
                j += 1
            step = eta * cL1 * kern
            A, B = cL * A - step * P, cL * B - step * (J - 1.0)
            P, J = (cL - step * mu) * P, (cL - step * mu) * J + step * mu
            kern *= ck
        return dec, gm, jm

    def loss_of_mean(self, lam: float, t, eta: Optional[float] = None) -> np.ndarray:
        """Test MSE of the mean function (``f0 = 0``) at times ``t`` (1-D); ``eta``: discrete GD."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        _, _, jm = self._coeffs(lam, t, eta)
        sq = np.einsum("ti,ti->t", jm @ self._h_yy, jm) - 2 * jm @ self._r_y + self._c0
        return np.maximum(sq, 0.0) / (2 * self._size)

    def variance(self, lam: float, t, eta: Optional[float] = None) -> np.ndarray:
        """Mean over test points of ``Var_{f0} f_t(x)`` (per output) at times ``t`` (1-D)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        dec, gm, _ = self._coeffs(lam, t, eta)
        quad = np.einsum("ti,ti->t", gm @ self._h, gm)
        return np.maximum(dec * dec * self._kxx - 2 * dec * (gm @ self._r) + quad, 0.0)

    def __call__(self, lam: float, t, eta: Optional[float] = None) -> np.ndarray:
        return self.loss_of_mean(lam, t, eta) + 0.5 * self.variance(lam, t, eta)

    def zero_loss(self) -> float:
        """Test MSE of the zero function, ``1/(2MK) sum y^2`` (where every L >= 2 flow ends)."""
        return float(0.5 * np.mean(self.dk.y_test ** 2))

    def t_star(self, lam: float, *, s_range: Tuple[float, float] = (1e-3, 1e2), n_grid: int = 400,
               expected: bool = True, eta: Optional[float] = None) -> Tuple[float, float, str]:
        """``(t*, loss(t*), where)``: the time of the minimum of the expected test loss (``expected``) or
        of the mean function's loss, searched on ``t = s/lam``, ``s`` log-spaced in ``s_range``, refined
        by a parabola in ``log t``. With ``eta`` (discrete GD) the grid is the distinct step counts
        ``>= 1`` and ``s`` is capped at 30. ``where`` is as in :func:`refine_extremum`."""
        t = np.geomspace(s_range[0], s_range[1], n_grid) / lam
        if eta is not None:
            t = np.unique(np.maximum(np.rint(t[t <= 30.0 / lam] / eta), 1.0)) * eta
        y = self(lam, t, eta) if expected else self.loss_of_mean(lam, t, eta)
        return refine_extremum(t, y, log_x=True, kind="min")

    def loss_matrix(self, lams: Sequence[float], times: Sequence[float], expected: bool = True) -> np.ndarray:
        """Expected (or mean-function) test loss on the grid ``lams x times``: shape (len(lams), len(times))."""
        times = np.asarray(times, dtype=np.float64)
        f = self if expected else self.loss_of_mean
        return np.stack([f(lam, times) for lam in lams])

    def lambda_opt(self, lams: Sequence[float], times: Sequence[float], expected: bool = True
                   ) -> List[Tuple[float, float, str]]:
        """For each budget time ``t = eta T``: ``(lam_opt, loss, where)`` over the grid ``lams`` (refined by a
        parabola in ``log lam``)."""
        lams = np.asarray(lams, dtype=np.float64)
        mat = self.loss_matrix(lams, times, expected)
        return [refine_extremum(lams, mat[:, j], log_x=True, kind="min") for j in range(mat.shape[1])]


def linear_gd(k_train_train, k_test_train, y_train, lam: float, L: int, eta: float, steps: Sequence[int], *,
              f0_train=None, f0_test=None, normalization: Optional[float] = None
              ) -> Tuple[np.ndarray, np.ndarray]:
    """Outputs of the infinite-width network trained by *discrete* full-batch GD with L2 (the finite-``eta``
    counterpart of :class:`~widelimit.dynamics.ntk_l2.L2Flow`), at the step counts ``steps``.

    One GD step ``theta' = c theta - eta grad l`` with ``c = 1 - eta lam`` equals
    ``theta' = c (theta - (eta/c) grad l)``; by L-homogeneity and linearisation (exact at infinite width)

        f_{k+1} = c^L f_k - eta c^{L-1} Theta~_k (f_k - y),     Theta~_k = c^{2(L-1) k} Theta~_0,

    and at test points ``f_{k+1}(x) = c^L f_k(x) - eta c^{L-1} Theta~_k(x, X) (f_k - y)``; ``Theta~ = Theta /
    normalization`` (default ``N K``). Returns ``(f_train, f_test)`` of shapes (S, N, K), (S, M, K) for the
    S requested steps (sorted, ``>= 0``). As ``eta -> 0`` at fixed ``eta k`` this tends to the flow.
    """
    ktt = np.asarray(k_train_train, np.float64)
    kxt = np.asarray(k_test_train, np.float64)
    y = np.asarray(y_train, np.float64)
    y = y.reshape(y.shape[0], -1)
    n, m = ktt.shape[0], kxt.shape[0]
    if ktt.shape != (n, n) or kxt.shape[1] != n or y.shape[0] != n:
        raise ValueError(f"shapes do not match: k_train_train {ktt.shape}, k_test_train {kxt.shape}, "
                         f"y_train {y.shape}")
    if not (eta > 0 and lam >= 0 and eta * lam < 1):
        raise ValueError(f"need eta > 0, lam >= 0 and eta*lam < 1, got eta={eta}, lam={lam}")
    steps = np.asarray(steps, np.int64)
    if steps.ndim != 1 or np.any(steps < 0) or np.any(np.diff(steps) < 0):
        raise ValueError("steps must be a sorted 1-D array of step counts >= 0")
    norm = float(y.size) if normalization is None else float(normalization)
    mu, v = np.linalg.eigh(0.5 * (ktt + ktt.T) / norm)
    mu = np.maximum(mu, 0.0)
    g = (kxt / norm) @ v
    ye = v.T @ y
    a = v.T @ (np.zeros_like(y) if f0_train is None else np.asarray(f0_train, np.float64).reshape(y.shape))
    fx = np.zeros((m, y.shape[1])) if f0_test is None else np.asarray(f0_test, np.float64).reshape(m, -1)
    c = 1.0 - eta * lam
    cL, cL1, ck = c ** L, c ** (L - 1), c ** (2 * (L - 1))
    out_tr, out_te = [], []
    decay = 1.0
    j = 0
    for k in range(int(steps[-1]) + 1 if steps.size else 0):
        while j < steps.size and steps[j] == k:
            out_tr.append(v @ a)
            out_te.append(fx.copy())
            j += 1
        resid = a - ye
        fx = cL * fx - eta * cL1 * decay * (g @ resid)
        a = cL * a - eta * cL1 * decay * (mu[:, None] * resid)
        decay *= ck
    shape_tail = np.asarray(y_train).shape[1:]
    f_tr = np.stack(out_tr).reshape((steps.size, n) + shape_tail)
    f_te = np.stack(out_te).reshape((steps.size, m) + shape_tail)
    return f_tr, f_te


def mlp_empirical_ntk(spec, params, x1, x2=None) -> np.ndarray:
    """Empirical NTK of a finite bias-free MLP (NTK parameterisation, no normalisation), float64 NumPy,
    averaged over the outputs' diagonal blocks: ``mean_k Theta_kk(x1, x2)``, shape (N1, N2).

    Uses the layer structure instead of Jacobians: with ``z_l = (W_std/sqrt(n_{l-1})) h_{l-1} W_l`` and
    ``delta_l = df_k/dz_l``, ``Theta_kk(x, x') = sum_l (W_std^2/n_{l-1}) <h_{l-1}(x), h_{l-1}(x')>
    <delta_l(x), delta_l(x')>``: memory O(N width), so it works at widths where a Jacobian would not fit.
    """
    from ..arch import MLP
    from ..nets import layer_names
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


# ------------------------------------------------------------------------------------------------
# measurement
# ------------------------------------------------------------------------------------------------


@dataclass
class Grid:
    """Finite-network runs on a grid of ``values`` (of ``axis`` ``"l2"`` or ``"learning_rate"``) x ``seeds``.

    ``step`` (n_logs,); ``time`` (n_values, n_logs) = physical time; ``metrics[name]`` arrays of shape
    (n_values, n_seeds, n_logs) for ``train_loss``, ``test_loss``, ``train_acc``, ``test_acc``,
    ``param_norm``; ``probe`` (n_values, n_seeds, n_logs, P, K) when ``probe_size > 0``.
    """

    axis: str
    values: np.ndarray
    seeds: List[int]
    step: np.ndarray
    time: np.ndarray
    metrics: Dict[str, np.ndarray]
    probe: Optional[np.ndarray]
    configs: List[List[Any]]
    run_seconds: float


def train_grid(cache: PointCache, base, *, seeds: Sequence[int], l2s: Optional[Sequence[float]] = None,
               learning_rates: Optional[Sequence[float]] = None, progress: bool = True,
               ensemble_size: int = 64, matmul_precision: Optional[str] = None) -> Grid:
    """Train ``base`` (a :class:`widelimit.train.RunConfig`) for every seed and every L2 value (or every
    learning rate), vmapped, resumable (runs stored under ``<cache.root>/train``).

    ``matmul_precision`` (e.g. ``"highest"``) is passed to ``jax.default_matmul_precision`` while training:
    on GPUs float32 matrix products otherwise use reduced-precision (TF32) arithmetic."""
    from ..results import ResultStore
    from ..train import RunConfig, run_sweep
    from ..train.loop import RunResult

    if not isinstance(base, RunConfig):
        raise TypeError(f"base must be a RunConfig, got {type(base).__name__}")
    if (l2s is None) == (learning_rates is None):
        raise ValueError("give exactly one of l2s and learning_rates")
    axis, values = ("l2", list(l2s)) if l2s is not None else ("learning_rate", list(learning_rates))
    if not values or not list(seeds):
        raise ValueError("the grid needs at least one value and one seed")
    seeds = [int(s) for s in seeds]
    grid = [[base.replace(seed=s, **{axis: float(v)}).canonical() for s in seeds] for v in values]
    store = ResultStore(Path(cache.root) / "train")
    flat = [c for row in grid for c in row]
    import time as _time
    t0 = _time.perf_counter()
    import contextlib

    import jax
    ctx = jax.default_matmul_precision(matmul_precision) if matmul_precision else contextlib.nullcontext()
    with ctx:
        rep = run_sweep(flat, store, progress=progress, ensemble=True, ensemble_size=ensemble_size)
    elapsed = _time.perf_counter() - t0
    runs = [[RunResult.from_stored(store.load(c.run_id)) for c in row] for row in grid]
    cache.runs_trained += len(rep.trained)
    cache.runs_reused += len(rep.skipped)
    cache.train_seconds += sum(float(r.info.get("compile_s", 0.0)) + float(r.info.get("run_s", 0.0))
                               for row in runs for r in row)
    names = ("train_loss", "test_loss", "train_acc", "test_acc", "param_norm")
    metrics = {n: np.stack([np.stack([np.asarray(r.metrics[n], np.float64) for r in row]) for row in runs])
               for n in names}
    step = np.asarray(runs[0][0].metrics["step"])
    time = np.stack([np.asarray(row[0].metrics["time"], np.float64) for row in runs])
    probe = None
    if base.probe_size > 0:
        probe = np.stack([np.stack([np.asarray(r.probe["outputs"], np.float64) for r in row]) for row in runs])
    return Grid(axis, np.asarray(values, np.float64), seeds, step, time, metrics, probe,
                [[c.to_dict() for c in row] for row in grid], elapsed)


def initial_state(config, ds):
    """``(params, f0_train, f0_test)`` of the network that ``train(config)`` starts from: parameters from
    :meth:`widelimit.train.Program.init_params` with ``PRNGKey(config.seed)`` (as NumPy arrays in the run's
    dtype) and their outputs on the training and test inputs (float64)."""
    import jax

    from ..nets import apply
    from ..train.loop import Program, precision

    cfg = config.canonical()
    with precision(cfg.dtype):
        prog = Program(cfg, ds)
        params = prog.init_params(jax.random.PRNGKey(cfg.seed))
        arr = prog.arrays(ds)
        f_tr = np.asarray(apply(prog.spec, params, arr["x_train"]), np.float64)
        f_te = np.asarray(apply(prog.spec, params, arr["x_test"]), np.float64)
    return jax.tree_util.tree_map(np.asarray, params), f_tr, f_te


def seed_mean_tstar(time: np.ndarray, loss: np.ndarray) -> Tuple[float, float, str]:
    """``(t*, loss*, where)`` of the seed-averaged loss curve ``loss`` (n_seeds, n_logs) on ``time`` (n_logs,),
    ignoring ``t = 0``; parabola refinement in ``log t``."""
    m = np.mean(np.asarray(loss, np.float64), axis=0)
    keep = np.asarray(time) > 0
    return refine_extremum(np.asarray(time)[keep], m[keep], log_x=True, kind="min")


def grid_lambda_opt(grid: Grid, budgets: Sequence[int]) -> List[Tuple[float, float, str]]:
    """Measured best lam for each budget of ``T`` steps: minimum over ``grid.values`` (an L2 grid) of the
    seed-averaged test loss logged at step ``T`` (which must be a logging step), refined by a parabola in
    ``log lam``. Returns ``(lam_opt, loss, where)`` per budget."""
    if grid.axis != "l2":
        raise ValueError(f"grid must be over l2 values, got axis {grid.axis!r}")
    mean = grid.metrics["test_loss"].mean(axis=1)           # (n_lam, n_logs)
    out = []
    for T in budgets:
        hit = np.nonzero(grid.step == int(T))[0]
        if hit.size == 0:
            raise ValueError(f"budget {T} is not a logging step; logged steps are {grid.step[:5]}...")
        out.append(refine_extremum(grid.values, mean[:, hit[0]], log_x=True, kind="min"))
    return out


def loss_at_lambda(grid: Grid, T: int, lam: float) -> float:
    """Seed-averaged test loss at step ``T`` interpolated (linearly in ``log lam``) at ``lam``; NaN outside
    the grid."""
    j = np.nonzero(grid.step == int(T))[0]
    if j.size == 0 or not np.isfinite(lam) or lam <= 0:
        return float("nan")
    x = np.log(grid.values)
    order = np.argsort(x)
    u = math.log(lam)
    if u < x[order[0]] or u > x[order[-1]]:
        return float("nan")
    return float(np.interp(u, x[order], grid.metrics["test_loss"].mean(axis=1)[order, j[0]]))


def fmt_where(value: float, where: str, horizon: Optional[float] = None) -> str:
    """Human string for an extremum location: ``"> 1500"`` when it lies at the end of the window, etc."""
    if where == "none" or not math.isfinite(value):
        return "n/a"
    if where == "last":
        return f">= {value:.4g}"
    if where == "first":
        return f"<= {value:.4g}"
    return f"{value:.4g}"


__all__ = ["DataKernels", "dataset_kernels", "sampled_kernels", "study_kernels", "ExpectedLoss", "Grid", "train_grid", "initial_state", "linear_gd", "mlp_empirical_ntk",
           "seed_mean_tstar", "fmt_where", "grid_lambda_opt", "loss_at_lambda"]
