"""Kernels and measurement helpers shared by the NTK-regime studies (quick, width, tstar, lambda_opt,
linear_vs_deep).

Conventions (docs/theory.md §1): ``weight_decay`` lambda with penalty ``(lambda/2)||theta||^2``;
``learning_rate`` eta, GD ``theta <- theta - eta (grad l + lambda theta)``; physical time
``t = eta * steps``; unnormalised NTK; MSE ``1/(2 N K) sum (f - y)^2``.

Kernels
-------
:func:`dataset_kernels` evaluates the analytic infinite-width NTK and NNGP of a spec on a dataset (cached
in a :class:`~widelimit.studies.common.PointCache`) as a :class:`widelimit.kernels.DataKernels`;
:func:`study_kernels` falls back to kernels sampled from finite instances
(:func:`widelimit.nets.sampled_kernels`). The theory itself lives in :mod:`widelimit.dynamics`
(:class:`~widelimit.dynamics.ExpectedLoss`, :class:`~widelimit.dynamics.L2Flow`); :class:`TheoryCurves` only
locates its extrema the way the studies locate the measured ones (a parabola in ``log x`` through the
grid minimum, :func:`~widelimit.studies.common.refine_extremum`), so both sides are treated alike.

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

from ..dynamics import ExpectedLoss
from ..kernels import DataKernels
from .common import PointCache, Where, refine_extremum

_CACHE_FIELDS = {"ntk_tt": "ntk_train_train", "ntk_xt": "ntk_test_train", "nngp_tt": "nngp_train_train",
                 "nngp_xt": "nngp_test_train", "nngp_xx_diag": "nngp_test_test"}   # stored name -> field


def _from_cache(arrs, ds, L: int, source: str) -> DataKernels:
    return DataKernels(y_train=np.asarray(ds.y_train, np.float64), y_test=np.asarray(ds.y_test, np.float64),
                       L=int(L), source=source,
                       **{f: np.asarray(arrs[k], np.float64) for k, f in _CACHE_FIELDS.items()})


def dataset_kernels(spec, ds, *, cache: Optional[PointCache] = None, key: Optional[Dict[str, Any]] = None,
                    backend: str = "auto", batch_size: Optional[int] = None) -> DataKernels:
    """Analytic NTK/NNGP of ``spec`` on dataset ``ds`` (a :class:`widelimit.data.Dataset`).

    With ``cache`` and a JSON-able ``key`` (which must identify spec and data), the kernels are stored and
    reloaded. ``L`` is ``spec.homogeneity_degree`` (ValueError if the spec is not homogeneous).
    ``nngp_test_test`` holds only the diagonal (M,).
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
    return _from_cache(arrs, ds, L, f"analytic kernels of {spec!r}, {ds.n_train} train / {ds.n_test} test")


def study_kernels(spec, ds, *, cache: Optional[PointCache], key: Dict[str, Any], kernels: str = "auto",
                  **sampled_options) -> Tuple[DataKernels, str]:
    """Kernels for a study: ``kernels="analytic"`` (:func:`dataset_kernels`), ``"sampled"``
    (:func:`widelimit.nets.sampled_kernels`) or ``"auto"`` (analytic when available -- MLPs always, CNNs
    where neural-tangents imports -- else sampled). Cached in ``cache`` under ``key``. Returns the kernels
    and the method used."""
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
        from ..nets import sampled_kernels
        dk = sampled_kernels(spec, ds, **sampled_options)
        return ({"k": {k: getattr(dk, f) for k, f in _CACHE_FIELDS.items()}}, {"L": int(spec.homogeneity_degree)})
    full_key = {"what": "sampled_kernels", "spec": spec.to_dict(), **key,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in sampled_options.items()}}
    arrs = (cache.get_or_compute(full_key, compute).streams["k"] if cache is not None else compute()[0]["k"])
    return _from_cache(arrs, ds, spec.homogeneity_degree,
                       f"kernels sampled from finite instances of {spec!r}"), "sampled"


class TheoryCurves:
    """The expected test loss of :class:`widelimit.dynamics.ExpectedLoss` with the studies' extremum search.

    ``theory(weight_decay, t, learning_rate=None)`` is the test MSE averaged over ``f0 ~ NNGP`` (gradient
    flow, or discrete GD at ``learning_rate``); ``loss_of_mean`` the f0 = 0 function's; ``t_star``/``lambda_opt`` return
    ``(location, value, where)`` from :func:`~widelimit.studies.common.refine_extremum`, exactly as the
    measured curves are reduced. For predictions with validity flags use :mod:`widelimit.predict`.
    """

    def __init__(self, dk: DataKernels, L: Optional[int] = None):
        self.dk = dk
        self.model = ExpectedLoss.from_kernels(dk, L=L)
        self.L = self.model.L
        self.flow = self.model.flow

    def _at(self, learning_rate: Optional[float]) -> ExpectedLoss:
        return self.model if learning_rate is None else self.model.with_learning_rate(float(learning_rate))

    def with_degree(self, L: int) -> "TheoryCurves":
        """The same kernels with another homogeneity degree (e.g. the L = 1 comparison)."""
        return TheoryCurves(self.dk, L)

    def loss_of_mean(self, weight_decay: float, t, learning_rate: Optional[float] = None) -> np.ndarray:
        """Test MSE of the mean function (``f0 = 0``) at times ``t`` (1-D, η·steps); ``learning_rate``:
        discrete GD at that step size."""
        return self._at(learning_rate).loss_of_mean(weight_decay, t)

    def variance(self, weight_decay: float, t, learning_rate: Optional[float] = None) -> np.ndarray:
        """Mean over test points of ``Var_{f0} f_t(x)`` (per output) at times ``t`` (1-D)."""
        return self._at(learning_rate).variance(weight_decay, t)

    def __call__(self, weight_decay: float, t, learning_rate: Optional[float] = None) -> np.ndarray:
        """Expected test MSE over ``f0 ~ NNGP`` at times ``t`` (1-D, η·steps)."""
        return self._at(learning_rate).test_loss(weight_decay, t)

    def zero_loss(self) -> float:
        """Test MSE of the zero function, ``1/(2MK) sum y^2`` (where every L >= 2 flow ends)."""
        return self.model.zero_loss()

    def t_star(self, weight_decay: float, *, s_range: Tuple[float, float] = (1e-3, 1e2), n_grid: int = 400,
               expected: bool = True, learning_rate: Optional[float] = None) -> Tuple[float, float, Where]:
        """``(t*, loss(t*), where)``: the time of the minimum of the expected test loss (``expected``) or
        of the mean function's loss, searched on ``t = s/lambda``, ``s`` log-spaced in ``s_range``, refined
        by a parabola in ``log t``. With ``learning_rate`` eta (discrete GD) the grid is the distinct step counts
        ``>= 1`` and ``s`` is capped at 30; GD outside its stable range (``eta mu_max >= 2`` or
        ``eta lambda >= 1``, Validity.UNSTABLE of docs/theory.md §3.4) gives ``(nan, nan, "none")`` (no
        prediction; tables print n/a). ``where`` is as in :func:`refine_extremum`; the loss returned is the
        model's value at ``t*`` (never the parabola's vertex value)."""
        lam, eta = weight_decay, learning_rate
        if eta is not None and (eta * self.model.mu_max >= 2 or eta * lam >= 1):
            return float("nan"), float("nan"), Where.NONE
        t = np.geomspace(s_range[0], s_range[1], n_grid) / lam
        if eta is not None:
            t = np.unique(np.maximum(np.rint(t[t <= 30.0 / lam] / eta), 1.0)) * eta
        f = self if expected else self.loss_of_mean
        t_best, _, where = refine_extremum(t, f(lam, t, eta), log_x=True, kind="min")
        return t_best, (float(f(lam, [t_best], eta)[0]) if math.isfinite(t_best) else float("nan")), where

    def loss_matrix(self, weight_decays: Sequence[float], times: Sequence[float], expected: bool = True
                    ) -> np.ndarray:
        """Expected (or mean-function) test loss on the grid ``weight_decays x times``: shape
        (len(weight_decays), len(times))."""
        times = np.asarray(times, dtype=np.float64)
        f = self if expected else self.loss_of_mean
        return np.stack([f(lam, times) for lam in weight_decays])

    def lambda_opt(self, weight_decays: Sequence[float], times: Sequence[float], expected: bool = True
                   ) -> List[Tuple[float, float, Where]]:
        """For each budget time ``t = eta T``: ``(weight_decay_opt, loss, where)`` over the grid
        ``weight_decays`` (refined by a parabola in ``log lambda``; the loss is the model's value there)."""
        lams = np.asarray(weight_decays, dtype=np.float64)
        mat = self.loss_matrix(lams, times, expected)
        f = self if expected else self.loss_of_mean
        out = []
        for j, t in enumerate(np.asarray(times, dtype=np.float64)):
            lo, _, where = refine_extremum(lams, mat[:, j], log_x=True, kind="min")
            out.append((lo, float(f(lo, [t])[0]) if math.isfinite(lo) else float("nan"), where))
        return out


# ------------------------------------------------------------------------------------------------
# measurement
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """Finite-network runs on a grid of ``values`` (of ``axis`` ``"weight_decay"`` or ``"learning_rate"``) x ``seeds``.

    ``step`` (n_logs,); ``time`` (n_values, n_logs) = physical time; ``metrics[name]`` arrays of shape
    (n_values, n_seeds, n_logs) for ``train_loss``, ``test_loss``, ``train_acc``, ``test_acc``,
    ``param_norm``; ``probe`` (n_values, n_seeds, n_logs, P, K) when ``probe_size > 0``; ``configs`` the
    run configurations (``RunConfig.to_dict()``, n_values x n_seeds); ``run_seconds`` the wall time of the
    sweep (s).
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


def train_grid(cache: PointCache, base, *, seeds: Sequence[int], weight_decays: Optional[Sequence[float]] = None,
               learning_rates: Optional[Sequence[float]] = None, progress: bool = True,
               ensemble_size: int = 64, matmul_precision: Optional[str] = None) -> Grid:
    """Train ``base`` (a :class:`widelimit.train.RunConfig`) for every seed and every weight decay (or every
    learning rate), vmapped, resumable (runs stored under ``<cache.root>/train``).

    ``matmul_precision`` (e.g. ``"highest"``) is passed to ``jax.default_matmul_precision`` while training:
    on GPUs float32 matrix products otherwise use reduced-precision (TF32) arithmetic."""
    from ..results import ResultStore
    from ..train import RunConfig, run_sweep
    from ..train.loop import RunResult

    if not isinstance(base, RunConfig):
        raise TypeError(f"base must be a RunConfig, got {type(base).__name__}")
    if (weight_decays is None) == (learning_rates is None):
        raise ValueError("give exactly one of weight_decays and learning_rates")
    axis, values = (("weight_decay", list(weight_decays)) if weight_decays is not None
                    else ("learning_rate", list(learning_rates)))
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


def seed_mean_tstar(time: np.ndarray, loss: np.ndarray) -> Tuple[float, float, Where]:
    """``(t*, loss*, where)`` of the seed-averaged loss curve ``loss`` (n_seeds, n_logs) on ``time`` (n_logs,),
    ignoring ``t = 0``; parabola refinement in ``log t``."""
    m = np.mean(np.asarray(loss, np.float64), axis=0)
    keep = np.asarray(time) > 0
    return refine_extremum(np.asarray(time)[keep], m[keep], log_x=True, kind="min")


def grid_lambda_opt(grid: Grid, budgets: Sequence[int]) -> List[Tuple[float, float, Where]]:
    """Measured best lam for each budget of ``T`` steps: minimum over ``grid.values`` (an L2 grid) of the
    seed-averaged test loss logged at step ``T`` (which must be a logging step), refined by a parabola in
    ``log lam``. Returns ``(lam_opt, loss, where)`` per budget."""
    if grid.axis != "weight_decay":
        raise ValueError(f"grid must be over weight_decay values, got axis {grid.axis!r}")
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
    if where == Where.NONE or not math.isfinite(value):
        return "n/a"
    if where == Where.LAST:
        return f">= {value:.4g}"
    if where == Where.FIRST:
        return f"<= {value:.4g}"
    return f"{value:.4g}"


__all__ = ["dataset_kernels", "study_kernels", "TheoryCurves", "Grid", "train_grid", "initial_state",
           "seed_mean_tstar", "fmt_where", "grid_lambda_opt", "loss_at_lambda"]
