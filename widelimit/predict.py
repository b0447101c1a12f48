"""Theory-side predictions from the NTK-regime L2 flow: test-loss / accuracy curves, t*, lambda_opt.

Everything here evaluates the closed-form infinite-width MSE flow :class:`~widelimit.dynamics.ntk_l2.L2Flow`
(one eigendecomposition of the train-train kernel, reused for every ``lam``) on a test set.

Conventions: penalty ``(lam/2)||theta||^2``; physical time ``t = eta * steps``; a budget of ``T`` steps
at learning rate ``eta`` is the time ``eta * T``. Test loss is the MSE ``1/(2 M K) sum (f - y)^2`` over
the M test points and K outputs (the training loss convention); accuracy is the fraction of test points
whose ``argmax_k f`` equals ``argmax_k y`` (``K >= 2``) or whose sign matches ``y`` (``K = 1``).

* :func:`loss_curves`: test loss (and accuracy, train loss) over a grid of ``lam`` and times;
* :func:`t_star`: the time ``t*`` of the best test loss (or accuracy) for each ``lam``, with
  ``c = lam t*`` (THEORY.md section 3: ``t* ~ c / lam`` with ``c`` independent of ``lam``);
* :func:`lambda_opt`: the best ``lam`` on a grid for each budget (steps, learning rate), with
  ``c = lam_opt * eta * T``;
* :func:`to_rows`: a result as a list of dicts, for tables.

Test losses are quadratic forms in the per-mode coefficients (Gram matrices precomputed once), so a
100 x 100 grid of (lam, budget) costs about ``10^4 N^2`` flops; accuracy needs the outputs themselves
(``M N K`` flops per point).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Optional, Union

import numpy as np
from scipy.optimize import minimize_scalar

from .dynamics.ntk_l2 import L2Flow, _as_float_array, _check_lam
from .dynamics.special import mode_coefficients

METRICS = ("loss", "accuracy")
_GRAM_BYTES = 2 ** 29          # use the Gram quadratic form while its matrices fit in 512 MiB


# ------------------------------------------------------------------------------------------------
# result types
@dataclass(frozen=True)
class Curves:
    """Metrics on a ``(lam, t)`` grid: ``lam`` (P,), ``t`` (P, T) and arrays of shape (P, T)."""

    lam: np.ndarray
    t: np.ndarray
    test_loss: np.ndarray
    test_accuracy: Optional[np.ndarray] = None
    train_loss: Optional[np.ndarray] = None


@dataclass(frozen=True)
class TStar:
    """Best time per ``lam``: ``t_star`` (physical time), ``c = lam * t_star``, ``best`` metric value,
    ``steps = t_star / eta`` (None without ``eta``), ``at_edge`` (the optimum lies on the end of the
    searched time window, so ``t_star`` is only a bound)."""

    lam: np.ndarray
    t_star: np.ndarray
    c: np.ndarray
    best: np.ndarray
    at_edge: np.ndarray
    metric: str
    steps: Optional[np.ndarray] = None


@dataclass(frozen=True)
class LambdaOpt:
    """Best ``lam`` per budget. ``eta``, ``steps``, ``time = eta * steps``, ``lam_opt``, ``best`` and
    ``c = lam_opt * time`` have the broadcast shape of (eta, steps); ``values`` has that shape plus one
    axis over ``lams`` (the metric at every grid point); ``at_edge`` marks optima on the ends of ``lams``."""

    eta: np.ndarray
    steps: np.ndarray
    time: np.ndarray
    lam_opt: np.ndarray
    best: np.ndarray
    c: np.ndarray
    at_edge: np.ndarray
    lams: np.ndarray
    values: np.ndarray
    metric: str


# ------------------------------------------------------------------------------------------------
class FlowMetrics:
    """Test loss / accuracy of the flow ``flow`` (any ``lam``) against targets ``y_test``.

    Precomputes, once, the Gram matrices that make the test MSE a quadratic form in the per-mode
    coefficients ``J/mu`` and ``(e^{-beta t} - P)/mu`` (when they fit in memory; otherwise outputs are
    formed directly, in blocks of times).
    """

    def __init__(self, flow: L2Flow, y_test):
        if not isinstance(flow, L2Flow):
            raise TypeError(f"flow must be an L2Flow, got {type(flow).__name__}")
        if flow.test_projection is None:
            raise ValueError("flow has no test points: build it with k_test_train (or x_test)")
        m = flow.n_test
        yt = _as_float_array("y_test", y_test, (1, 2))
        want = (m,) + flow.y_train.shape[1:]
        if yt.shape != want:
            raise ValueError(f"y_test must have shape {want} (test points x outputs), got {yt.shape}")
        self.flow, self.y_test = flow, yt
        self._yt = yt.reshape(m, -1)
        self._size = self._yt.size
        g = flow.test_projection                            # (M, N)
        ye = flow._y_eig                                    # (N, K)
        f0e, f0x = flow._f0_eig, flow._f0_test
        n = flow.n_train
        n_blocks = 1 if f0e is None else 3
        self._gram = n * n * 8 * n_blocks <= _GRAM_BYTES
        if self._gram:
            gg = g.T @ g
            self._h_yy = gg * (ye @ ye.T)
            gyt = g.T @ self._yt                            # (N, K)
            self._r_y = np.einsum("ik,ik->i", gyt, ye)
            self._c0 = float(np.sum(self._yt ** 2))
            if f0e is not None:
                self._h_ff = gg * (f0e @ f0e.T)
                self._h_yf = gg * (ye @ f0e.T)
                self._r_f = np.einsum("ik,ik->i", gyt, f0e)
            if f0x is not None:
                gfx = g.T @ f0x
                self._x_y = np.einsum("ik,ik->i", gfx, ye)
                self._x_f = None if f0e is None else np.einsum("ik,ik->i", gfx, f0e)
                self._fx2 = float(np.sum(f0x ** 2))
                self._fxyt = float(np.sum(f0x * self._yt))

    def _flow(self, lam: float) -> L2Flow:
        return self.flow.with_lam(lam)

    def test_loss(self, lam: float, t) -> np.ndarray:
        """Test MSE ``1/(2 M K) sum (f_x(t) - y_test)^2`` at times ``t`` (1-D), for coefficient ``lam``."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        if not self._gram:
            return np.array([np.sum((f - self._yt.reshape(f.shape)) ** 2) for f in self._outputs(lam, t)]) \
                / (2 * self._size)
        fl = self.flow
        c = mode_coefficients(fl.eigenvalues[None, :], t[:, None], lam, fl.L)
        jm = c.J_over_mu
        sq = np.einsum("ti,ti->t", jm @ self._h_yy, jm) - 2 * jm @ self._r_y + self._c0
        gm, d = c.gap_over_mu, c.decay[:, 0]
        if fl._f0_eig is not None:       # the initial outputs on the training points
            sq += np.einsum("ti,ti->t", gm @ self._h_ff, gm) - 2 * np.einsum("ti,ti->t", jm @ self._h_yf, gm)
            sq += 2 * gm @ self._r_f
        if fl._f0_test is not None:      # ... and on the test points
            sq += d * d * self._fx2 + 2 * d * (jm @ self._x_y) - 2 * d * self._fxyt
            if fl._f0_eig is not None:
                sq -= 2 * d * (gm @ self._x_f)
        return np.maximum(sq, 0.0) / (2 * self._size)

    def _outputs(self, lam: float, t: np.ndarray, block: int = 64):
        fl = self._flow(lam)
        for i in range(0, t.size, block):
            yield from fl.test(t[i:i + block])

    def test_accuracy(self, lam: float, t) -> np.ndarray:
        """Fraction of test points classified correctly at times ``t`` (1-D)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        yt = self._yt
        out = []
        for f in self._outputs(lam, t):
            f = f.reshape(yt.shape)
            if yt.shape[1] == 1:
                out.append(np.mean(np.sign(f[:, 0]) == np.sign(yt[:, 0])))
            else:
                out.append(np.mean(np.argmax(f, 1) == np.argmax(yt, 1)))
        return np.array(out)

    def train_loss(self, lam: float, t) -> np.ndarray:
        """Training MSE ``1/(2 N K) sum (f_X(t) - y)^2`` (without the L2 term) at times ``t`` (1-D)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        fl = self._flow(lam)
        y = fl.y_train
        axes = tuple(range(1, y.ndim + 1))
        return np.concatenate([np.sum((fl.train(t[i:i + 64]) - y) ** 2, axis=axes)
                               for i in range(0, t.size, 64)]) / (2 * y.size)

    def metric(self, name: str, lam: float, t) -> np.ndarray:
        """``test_loss`` or ``test_accuracy`` by name."""
        return self.test_loss(lam, t) if name == "loss" else self.test_accuracy(lam, t)


# ------------------------------------------------------------------------------------------------
def _metrics(flow_or_metrics, y_test) -> FlowMetrics:
    if isinstance(flow_or_metrics, FlowMetrics):
        if y_test is not None:
            raise ValueError("y_test must be None when a FlowMetrics object is passed")
        return flow_or_metrics
    if y_test is None:
        raise ValueError("y_test is required with an L2Flow")
    return FlowMetrics(flow_or_metrics, y_test)


def _check_lams(lams, positive: bool) -> np.ndarray:
    arr = _as_float_array("lams", lams, (0, 1)).reshape(-1)
    if arr.size == 0:
        raise ValueError("lams must not be empty")
    if np.any(arr < 0) or (positive and np.any(arr <= 0)):
        raise ValueError(f"lams must be {'> 0' if positive else '>= 0'}, got min {arr.min()}")
    return arr


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    return metric


def loss_curves(flow: Union[L2Flow, FlowMetrics], y_test=None, *, lams, t, accuracy: bool = False,
                train_loss: bool = False) -> Curves:
    """Test loss (and optionally accuracy and train loss) for every ``lam`` in ``lams`` at times ``t``.

    ``t`` is (T,) shared by all ``lam`` or (P, T) per ``lam`` (e.g. ``s[None, :] / lams[:, None]`` for
    a grid of ``s = lam t``). Returns :class:`Curves` with (P, T) arrays.
    """
    m = _metrics(flow, y_test)
    lams = _check_lams(lams, positive=False)
    ts = _as_float_array("t", t, (1, 2))
    if np.any(ts < 0):
        raise ValueError("t must be >= 0")
    ts = np.broadcast_to(ts, (lams.size, ts.shape[-1])) if ts.ndim == 1 else ts
    if ts.shape[0] != lams.size:
        raise ValueError(f"t must have shape (T,) or ({lams.size}, T), got {ts.shape}")
    loss = np.stack([m.test_loss(lam, tt) for lam, tt in zip(lams, ts)])
    acc = np.stack([m.test_accuracy(lam, tt) for lam, tt in zip(lams, ts)]) if accuracy else None
    tr = np.stack([m.train_loss(lam, tt) for lam, tt in zip(lams, ts)]) if train_loss else None
    return Curves(lams, np.array(ts), loss, acc, tr)


def t_star(flow: Union[L2Flow, FlowMetrics], y_test=None, *, lams, metric: str = "loss",
           eta: Optional[float] = None, s_range: tuple = (1e-3, 1e2), n_grid: int = 200,
           refine: bool = True) -> TStar:
    """Time ``t*`` of the best test loss (min) or accuracy (max, earliest time attaining it) per ``lam``.

    Searches ``t = s / lam`` on a log grid of ``n_grid`` points of ``s`` in ``s_range`` (``lam > 0``),
    then (loss only, if ``refine``) refines the minimum by a bounded scalar search in ``log t``
    between the neighbouring grid points. ``c = lam * t*``; ``steps = t*/eta`` if ``eta`` is given.
    """
    m = _metrics(flow, y_test)
    metric = _check_metric(metric)
    lams = _check_lams(lams, positive=True)
    lo, hi = s_range
    if not (0 < lo < hi < np.inf):
        raise ValueError(f"s_range must be (lo, hi) with 0 < lo < hi < inf, got {s_range}")
    if int(n_grid) < 3:
        raise ValueError(f"n_grid must be >= 3, got {n_grid}")
    if eta is not None:
        eta = _check_lam(eta)
        if eta == 0:
            raise ValueError("eta must be > 0")
    s = np.geomspace(lo, hi, int(n_grid))
    ts, best, edge = np.empty(lams.size), np.empty(lams.size), np.zeros(lams.size, bool)
    for i, lam in enumerate(lams):
        t = s / lam
        vals = m.metric(metric, lam, t)
        j = int(np.argmin(vals)) if metric == "loss" else int(np.argmax(vals))
        edge[i] = j in (0, s.size - 1)
        ts[i], best[i] = t[j], vals[j]
        if metric == "loss" and refine and not edge[i]:
            res = minimize_scalar(lambda u: float(m.test_loss(lam, np.exp(u))[0]), method="bounded",
                                  bounds=(math.log(t[j - 1]), math.log(t[j + 1])),
                                  options={"xatol": 1e-8})
            if res.fun <= best[i]:
                ts[i], best[i] = math.exp(res.x), res.fun
    return TStar(lams, ts, lams * ts, best, edge, metric, None if eta is None else ts / eta)


def lambda_opt(flow: Union[L2Flow, FlowMetrics], y_test=None, *, lams, steps, eta=1.0,
               metric: str = "loss") -> LambdaOpt:
    """Best ``lam`` among ``lams`` for training budgets of ``steps`` at learning rates ``eta``.

    The budget is the physical time ``eta * steps`` (gradient flow); ``eta`` and ``steps`` broadcast
    against each other (e.g. ``eta[:, None]``, ``steps[None, :]`` for a grid). The metric at the end of
    training is minimised (loss) or maximised (accuracy) over ``lams``. Returns :class:`LambdaOpt`.
    """
    m = _metrics(flow, y_test)
    metric = _check_metric(metric)
    lams = _check_lams(lams, positive=False)
    eta_a = _as_float_array("eta", eta)
    steps_a = _as_float_array("steps", steps)
    if np.any(eta_a <= 0):
        raise ValueError("eta must be > 0")
    if np.any(steps_a < 0):
        raise ValueError("steps must be >= 0")
    eta_b, steps_b = np.broadcast_arrays(eta_a, steps_a)
    time = eta_b * steps_b
    t_unique, inverse = np.unique(time.reshape(-1), return_inverse=True)
    table = np.stack([m.metric(metric, lam, t_unique) for lam in lams], axis=-1)   # (T_unique, P)
    values = table[inverse.reshape(-1)].reshape(time.shape + (lams.size,))
    j = np.argmin(values, -1) if metric == "loss" else np.argmax(values, -1)
    lam_opt = lams[j]
    best = np.take_along_axis(values, j[..., None], -1)[..., 0]
    order = np.argsort(lams)
    at_edge = (j == order[0]) | (j == order[-1])
    return LambdaOpt(np.array(eta_b), np.array(steps_b), time, lam_opt, best, lam_opt * time, at_edge,
                     lams, values, metric)


def to_rows(result: Union[TStar, LambdaOpt, Curves]) -> list[dict]:
    """Flatten a result into table rows (one dict per grid point; arrays over the grid become columns)."""
    if isinstance(result, LambdaOpt):
        cols = ("eta", "steps", "time", "lam_opt", "c", "best", "at_edge")
        flat = {k: np.asarray(getattr(result, k)).reshape(-1) for k in cols}
        return [{"metric": result.metric, **{k: flat[k][i].item() for k in cols}}
                for i in range(flat["time"].size)]
    if isinstance(result, TStar):
        cols = [f.name for f in fields(result) if f.name != "metric" and getattr(result, f.name) is not None]
        return [{"metric": result.metric, **{k: np.asarray(getattr(result, k))[i].item() for k in cols}}
                for i in range(result.lam.size)]
    if isinstance(result, Curves):
        rows = []
        for i, lam in enumerate(result.lam):
            for j, t in enumerate(result.t[i]):
                row = {"lam": float(lam), "t": float(t), "test_loss": float(result.test_loss[i, j])}
                if result.test_accuracy is not None:
                    row["test_accuracy"] = float(result.test_accuracy[i, j])
                if result.train_loss is not None:
                    row["train_loss"] = float(result.train_loss[i, j])
                rows.append(row)
        return rows
    raise TypeError(f"result must be a Curves, TStar or LambdaOpt, got {type(result).__name__}")


__all__ = ["Curves", "TStar", "LambdaOpt", "FlowMetrics", "loss_curves", "t_star", "lambda_opt", "to_rows",
           "METRICS"]
