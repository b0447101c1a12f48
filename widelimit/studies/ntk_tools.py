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


class ExpectedLoss:
    """Test MSE of the infinite-width L2 flow averaged over ``f0 ~ NNGP`` (see the module docstring).

    Build once per dataset/spec (one eigendecomposition); evaluate for any ``lam`` and times ``t``
    (physical time). ``loss_of_mean`` is the test loss of the ensemble-mean function (the ``f0 = 0``
    flow), ``variance`` the mean over test points of ``Var f_t(x)`` (per output), and
    ``__call__`` = ``loss_of_mean + variance / 2``.
    """

    def __init__(self, dk: DataKernels, L: Optional[int] = None):
        from ..predict import FlowMetrics
        self.dk = dk
        self.L = dk.L if L is None else int(L)
        self.flow = L2Flow(dk.ntk_tt, dk.y_train, 0.0, self.L, k_test_train=dk.ntk_xt)
        self.metrics = FlowMetrics(self.flow, dk.y_test)
        v = self.flow.eigenvectors
        g = self.flow.test_projection                      # (M, N) = Theta~_xX V
        m = g.shape[0]
        c_eig = v.T @ dk.nngp_tt @ v                        # V^T K_XX V
        d = dk.nngp_xt @ v                                  # K_xX V
        self._h = c_eig * (g.T @ g) / m
        self._r = np.einsum("ij,ij->j", d, g) / m
        self._kxx = float(np.mean(dk.nngp_xx_diag))

    def with_degree(self, L: int) -> "ExpectedLoss":
        """The same kernels with another homogeneity degree (e.g. the L = 1 comparison)."""
        return ExpectedLoss(self.dk, L)

    def _coeffs(self, lam: float, t: np.ndarray):
        return mode_coefficients(self.flow.eigenvalues[None, :], t[:, None], float(lam), self.L)

    def loss_of_mean(self, lam: float, t) -> np.ndarray:
        """Test MSE of the mean function (``f0 = 0`` flow) at times ``t`` (1-D)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        return self.metrics.test_loss(float(lam), t)

    def variance(self, lam: float, t) -> np.ndarray:
        """Mean over test points of ``Var_{f0} f_t(x)`` (per output) at times ``t`` (1-D)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        c = self._coeffs(lam, t)
        gm, dec = c.gap_over_mu, c.decay[:, 0]
        quad = np.einsum("ti,ti->t", gm @ self._h, gm)
        return np.maximum(dec * dec * self._kxx - 2 * dec * (gm @ self._r) + quad, 0.0)

    def __call__(self, lam: float, t) -> np.ndarray:
        return self.loss_of_mean(lam, t) + 0.5 * self.variance(lam, t)

    def zero_loss(self) -> float:
        """Test MSE of the zero function, ``1/(2MK) sum y^2`` (where every L >= 2 flow ends)."""
        return float(0.5 * np.mean(self.dk.y_test ** 2))

    def t_star(self, lam: float, *, s_range: Tuple[float, float] = (1e-3, 1e2), n_grid: int = 400,
               expected: bool = True) -> Tuple[float, float, str]:
        """``(t*, loss(t*), where)``: the time of the minimum of the expected test loss (``expected``) or
        of the mean function's loss, searched on ``t = s/lam``, ``s`` log-spaced in ``s_range``, refined
        by a parabola in ``log t``. ``where`` is as in :func:`refine_extremum`."""
        t = np.geomspace(s_range[0], s_range[1], n_grid) / lam
        y = self(lam, t) if expected else self.loss_of_mean(lam, t)
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
               ensemble_size: int = 64) -> Grid:
    """Train ``base`` (a :class:`widelimit.train.RunConfig`) for every seed and every L2 value (or every
    learning rate), vmapped, resumable (runs stored under ``<cache.root>/train``)."""
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
    run_sweep(flat, store, progress=progress, ensemble=True, ensemble_size=ensemble_size)
    elapsed = _time.perf_counter() - t0
    runs = [[RunResult.from_stored(store.load(c.run_id)) for c in row] for row in grid]
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


def initial_outputs(config, ds) -> Tuple[np.ndarray, np.ndarray]:
    """Outputs ``(f0_train, f0_test)`` (float64) of the network that ``train(config)`` starts from:
    parameters from :meth:`widelimit.train.Program.init_params` with ``PRNGKey(config.seed)``, in the
    run's dtype."""
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
    return f_tr, f_te


def seed_mean_tstar(time: np.ndarray, loss: np.ndarray) -> Tuple[float, float, str]:
    """``(t*, loss*, where)`` of the seed-averaged loss curve ``loss`` (n_seeds, n_logs) on ``time`` (n_logs,),
    ignoring ``t = 0``; parabola refinement in ``log t``."""
    m = np.mean(np.asarray(loss, np.float64), axis=0)
    keep = np.asarray(time) > 0
    return refine_extremum(np.asarray(time)[keep], m[keep], log_x=True, kind="min")


def fmt_where(value: float, where: str, horizon: Optional[float] = None) -> str:
    """Human string for an extremum location: ``"> 1500"`` when it lies at the end of the window, etc."""
    if where == "none" or not math.isfinite(value):
        return "n/a"
    if where == "last":
        return f">= {value:.4g}"
    if where == "first":
        return f"<= {value:.4g}"
    return f"{value:.4g}"


__all__ = ["DataKernels", "dataset_kernels", "ExpectedLoss", "Grid", "train_grid", "initial_outputs",
           "seed_mean_tstar", "fmt_where"]
