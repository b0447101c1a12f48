"""Infinite-width gradient flow with L2 of a NON-homogeneous MLP (biases, erf): the Volterra equation
(docs/theory.md §5).

Gradient flow on ``loss + (lam/2)||theta||^2`` from ``theta_0``, with ``s_t = exp(-lam t)``, has at
infinite width

    f_t(x) = g(x; s_t) - int_0^t exp(-lam (t - tau)) Theta(x, X; s_t, s_tau) grad_f loss(f_tau(X)) dtau,

with ``g(x; s) = f(x; s theta_0)`` and the cross-scale NTK ``Theta`` of
:mod:`widelimit.kernels.cross_scale`. For MSE (``grad = (f - y)/(N K)``) this is a linear Volterra
equation of the second kind in ``f_tau(X)``; for an L-homogeneous net it reduces to :class:`L2Flow`.

Quadrature. Time is mapped to ``v = log(1 + t/t0) + lam t``, ``t0 = 1/mu_max`` (``mu_max`` the top
eigenvalue of ``Theta(X, X; 1, 1)/(N K)``), in which every mode ``exp(-mu t)``, the kernel's drift through
``s = exp(-lam t)`` and the memory factor ``exp(-lam (t - tau))`` have bounded derivatives. The integral is
the trapezoidal rule in ``v`` (composite over the segments between requested times, so every requested
time is a node; the diagonal term is implicit: one linear solve per node; history with
``exp(-lam (t - tau)) < 1e-20`` is dropped). The trapezoidal Nystrom method has an error expansion in even
powers of the step when the kernel is smooth on ``tau <= t`` (true for the infinite-width kernels of every
native activation: the only non-smooth point, ``s = s'`` for an input with itself, is the endpoint
``tau = t``; NOT true for the empirical kernels of finite ReLU nets, whose units switch as ``s`` changes),
so the solver runs on three nested grids (steps ``h, h/2, h/4``) and returns the Romberg value ``R``
(order ``h^6``); the stated ``error_estimate`` is ``max|R - R_1| / scale`` with ``R_1`` the
once-extrapolated fine value (an over-estimate of the error of ``R`` where the expansion holds) and
``scale = max(|f|, |y|)``. A step too coarse for ``rtol`` by the a-priori estimate ``(h / 8)^4`` (see
:func:`default_step`) is refused before any kernel is evaluated; an a-posteriori estimate above ``rtol``
raises FloatingPointError.

Cost per solve: ``~ 10 n^2`` cross-scale kernel evaluations of size ``N x N`` for ``n`` base nodes and
``~ 21 n (N^3/3 + n N^2 K)`` flops; memory ``O(n N^2)`` (rows of the kernel are computed in blocks).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np
import scipy.linalg
from scipy.special import softmax

from ..kernels.cross_scale import check_spec, cross_scale_kernels
from .ntk_l2 import _as_float_array, _check_lam, _check_targets

_BLOCK_ELEMS = 2 ** 22        # kernel rows are evaluated in blocks of at most this many entries
_CALIBRATED_H = 8.0           # a-priori error estimate ~ (h / 8)^4 (relative; see default_step)
_LEVELS = 3
_MEMORY = 46.0                # history older than exp(-lam (t - tau)) < 1e-20 is dropped


@dataclass(frozen=True)
class VolterraOutputs:
    """Outputs of the Volterra solver at the requested times.

    t: requested physical times (eta * steps), shape (T,).
    train: outputs on the training points, (T, N, K). test: on the test points, (T, M, K), or None.
    train_var, test_var: per-point variance of the outputs over ``f0 ~ NNGP`` (the same for every output
      unit), (T, N) and (T, M); None unless computed with ``initial="prior"``.
    error_estimate: estimated max relative quadrature error of ``train``/``test`` (see the module docs).
    n_nodes: nodes of the finest time grid. weight_decay: lam (1/time).
    basis_error: for the reduced-basis solver (:mod:`widelimit.dynamics.volterra_reduced`), the stated
      bound on the error of the basis truncation (relative, same scale as ``error_estimate``; checked
      against ``rtol``): the Galerkin residual through the energy estimate of docs/theory.md §5.5, above
      the measured error in every test; None for the full-space solvers.
    """

    t: np.ndarray
    train: np.ndarray
    test: Optional[np.ndarray]
    train_var: Optional[np.ndarray]
    test_var: Optional[np.ndarray]
    error_estimate: float
    n_nodes: int
    weight_decay: float
    basis_error: Optional[float] = None


def _check_rtol(rtol) -> float:
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not (0 < rtol < 1):
        raise ValueError(f"rtol must be a number in (0, 1), got {rtol!r}")
    return float(rtol)


def _check_step(step) -> float:
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not (0 < step <= 2):
        raise ValueError(f"step must be a number in (0, 2] (base step in v = log(1 + t/t0) + lam t), got {step!r}")
    return float(step)


def default_step(rtol: float) -> float:
    """Base step ``h`` in ``v`` whose a-priori error estimate ``(h / 8)^4`` is ``rtol / 10``.

    The estimate stated by the solver, ``|R - R_1|``, falls like ``h^4``; ``h_c = 8`` is the smallest
    ``h / estimate^(1/4)`` measured over the problems of ``tests/test_volterra.py`` (ReLU with and
    without biases, erf; ``lam t`` up to 10, ``mu_max t`` up to 1e3), rounded down."""
    return _CALIBRATED_H * (_check_rtol(rtol) / 10) ** (1 / 4)


def _v_of_t(t: np.ndarray, t0: float, lam: float) -> np.ndarray:
    """Grid variable ``v = log(1 + t/t0) + lam t`` (resolves both the modes and the memory exp(-lam(t-tau)))."""
    return np.log1p(t / t0) + lam * t


def _t_of_v(v: np.ndarray, t0: float, lam: float) -> np.ndarray:
    """Inverse of :func:`_v_of_t` by Newton's method from below (v(t) is concave: monotone convergence)."""
    if lam == 0:
        return t0 * np.expm1(v)
    t = np.zeros_like(v)
    for _ in range(100):
        step = (v - _v_of_t(t, t0, lam)) / (1 / (t + t0) + lam)
        t = t + step
        if np.all(np.abs(step) <= 1e-15 * (t + t0)):
            break
    return t


def _nodes(times: np.ndarray, t0: float, lam: float, h: float) -> Tuple[np.ndarray, np.ndarray]:
    """Base-grid segments in ``v``: edges (0 and every requested time) and steps per segment."""
    edges = np.concatenate([[0.0], _v_of_t(times, t0, lam)])
    counts = np.maximum(1, np.ceil(np.diff(edges) / h - 1e-9)).astype(int)
    return edges, counts


def _grid(edges: np.ndarray, counts: np.ndarray, t0: float, lam: float, refine: int, times: np.ndarray):
    """Nodes ``t``, trapezoid weights ``v`` (full, for j < i), diagonal weights ``w`` and requested indices
    (the requested times themselves are set exactly at their nodes)."""
    vs, dv, req = [0.0], [0.0], []
    for a, b, m in zip(edges[:-1], edges[1:], counts * refine):
        vs.extend(a + (b - a) * np.arange(1, m + 1) / m)
        dv.extend([(b - a) / m] * m)
        req.append(len(vs) - 1)
    v, dv = np.array(vs), np.array(dv)
    t = _t_of_v(v, t0, lam)
    req = np.array(req)
    t[req] = times
    t[0] = 0.0
    tprime = 1 / (1 / (t + t0) + lam)           # dt/dv
    nxt = np.append(dv[1:], 0.0)
    return t, (dv + nxt) / 2 * tprime, dv / 2 * tprime, req


class CrossScaleFlow:
    """The Volterra model of one data set for a plain MLP ``spec`` (any activation, biases, both
    parameterisations); built once, solved for any ``weight_decay`` and times.

    Args:
      spec: :class:`widelimit.arch.MLP` (``norm=None``), or None when ``kernel_fn`` is given.
      x_train (N, d), y_train (N,) or (N, K); x_test (M, d) optional.
      rtol: target relative quadrature error (default 1e-6). step: base step in ``v`` (default from rtol).
      kernel_fn: instead of ``spec``, any ``kernel_fn(x1, x2, scale1, scale2) -> (ntk, nngp)`` with the
        signature of :func:`widelimit.kernels.cross_scale.cross_scale_kernels` (``x2=None``: ``x2 = x1``;
        scales 1-D arrays of ``P`` pairs; arrays ``(P, N1, N2)``), e.g. the empirical cross-scale
        kernels of one finite network.
    """

    def __init__(self, spec, x_train, y_train, *, x_test=None, rtol: float = 1e-6,
                 step: Optional[float] = None, kernel_fn: Optional[Callable] = None):
        if kernel_fn is None:
            self.spec = check_spec(spec)
            self._kfn = lambda a, b, s1, s2: cross_scale_kernels(spec, a, b, scale1=s1, scale2=s2)
        else:
            if spec is not None or not callable(kernel_fn):
                raise TypeError("give either spec or a callable kernel_fn, not both")
            self.spec, self._kfn = None, kernel_fn
        self.x_train = _as_float_array("x_train", x_train, (2,))
        y = _check_targets("y_train", y_train, self.x_train.shape[0])
        self.y_train = y.reshape(y.shape[0], -1)
        self._y_shape = y.shape
        self.x_test = None if x_test is None else _as_float_array("x_test", x_test, (2,))
        if self.spec is not None:
            self.spec.check_input(self.x_train, "x_train")
            if self.x_test is not None:
                self.spec.check_input(self.x_test, "x_test")
        self.rtol = _check_rtol(rtol)
        self.step = default_step(self.rtol) if step is None else _check_step(step)
        predicted = (self.step / _CALIBRATED_H) ** 4
        if predicted > self.rtol:
            raise ValueError(f"step={self.step:g} is too coarse for rtol={self.rtol:g}: the a-priori error "
                             f"estimate is {predicted:.2g}; use step <= {default_step(self.rtol):.3g}")
        self.normalization = float(self.y_train.size)
        k11 = self._k(self.x_train, None, 1.0, 1.0)[0]
        self._ntk_11 = k11                                          # Theta(X, X; 1, 1), kept for subclasses
        self.mu_max = float(scipy.linalg.eigvalsh(k11, subset_by_index=[len(k11) - 1, len(k11) - 1])[0]
                            / self.normalization)
        if not self.mu_max > 0:
            raise ValueError("the NTK on the training points is zero: nothing is learned")
        self.t0 = 1.0 / self.mu_max

    @property
    def n_train(self) -> int:
        return self.x_train.shape[0]

    @property
    def n_test(self) -> Optional[int]:
        return None if self.x_test is None else self.x_test.shape[0]

    # -- kernels ------------------------------------------------------------------------------------
    def _k(self, x1, x2, s1: float, s2: float):
        """(ntk, nngp) at one pair of scales, (N1, N2) each."""
        k = self._kfn(x1, x2, np.array([s1]), np.array([s2]))
        return np.asarray(k[0])[0], np.asarray(k[1])[0]

    def _rows(self, xa, si: float, s: np.ndarray, what: str) -> np.ndarray:
        """``what`` kernel between ``xa`` at scale ``si`` and x_train at every scale in ``s``: (len(s), Na, N)."""
        out = np.empty((len(s), xa.shape[0], self.n_train))
        blk = max(1, _BLOCK_ELEMS // (xa.shape[0] * self.n_train))
        for j in range(0, len(s), blk):
            k = self._kfn(xa, None if xa is self.x_train else self.x_train, np.full(len(s[j:j + blk]), si),
                          s[j:j + blk])
            out[j:j + blk] = k[0] if what == "ntk" else k[1]
        return out

    # -- one grid -----------------------------------------------------------------------------------
    def _solve_grid(self, lam, t, v, w, req, src_train, src_test, grad=None):
        """Nystrom trapezoid on one grid. ``src_train`` (n, N, C): ``g - y`` (MSE) or ``g`` (grad given);
        ``src_test`` (R, M, C) at the requested nodes. Returns train (R, N, C), test (R, M, C)."""
        a = self.normalization
        n, N = len(t), self.n_train
        s = np.exp(-lam * t)
        u = np.empty_like(src_train)
        q = np.empty_like(src_train)          # q_j = grad loss at node j (MSE: u_j / a)
        test_out = [] if src_test is not None else None
        req_pos = {int(i): r for r, i in enumerate(req)}
        for i in range(n):
            lo = int(np.searchsorted(t, t[i] - _MEMORY / lam)) if lam > 0 else 0   # exp(-lam dt) < 1e-20
            rows = self._rows(self.x_train, s[i], s[lo:i + 1], "ntk")
            coef = v[lo:i] * np.exp(-lam * (t[i] - t[lo:i]))
            hist = np.einsum("j,jab,jbc->ac", coef, rows[:-1], q[lo:i]) if i > lo else 0.0
            kd = w[i] * rows[-1]
            if grad is None:
                u[i] = np.linalg.solve(np.eye(N) + kd / a, src_train[i] - hist)
                q[i] = u[i] / a
            else:
                u[i], q[i] = _newton(src_train[i] - hist, kd, grad)
            if test_out is not None and i in req_pos:
                tr = self._rows(self.x_test, s[i], s[lo:i + 1], "ntk")
                ht = np.einsum("j,jab,jbc->ac", np.append(coef, w[i]), tr, q[lo:i + 1])
                test_out.append(src_test[req_pos[i]] - ht)
        return u[req], None if test_out is None else np.stack(test_out)

    def _sources(self, lam, t, req, initial, y, n_col):
        s = np.exp(-lam * t)
        gtr = np.zeros((len(t), self.n_train, n_col))
        gte = None if self.x_test is None else np.zeros((len(req), self.n_test, n_col))
        if initial is not None:
            g_train, g_test = initial(s)
            gtr += np.asarray(g_train, dtype=np.float64).reshape(gtr.shape)
            if gte is not None:
                if g_test is None:
                    raise ValueError("initial(s) returned no test outputs but the flow has x_test")
                gte += np.asarray(g_test, dtype=np.float64)[req].reshape(gte.shape)
        return gtr, gte

    def _romberg(self, lam, times, build):
        """Run ``build(t, v, w, req) -> tuple of arrays`` on three nested grids; Romberg-combine."""
        edges, counts = _nodes(times, self.t0, lam, self.step)
        results, n_nodes = [], 0
        for level in range(_LEVELS):
            t, v, w, req = _grid(edges, counts, self.t0, lam, 2 ** level, times)
            results.append(build(t, v, w, req))
            n_nodes = len(t)
        combined, err, scale = [], 0.0, 0.0
        for r0, r1, r2 in zip(*results):
            if r0 is None:
                combined.append(None)
                continue
            a1, a2 = (4 * r1 - r0) / 3, (4 * r2 - r1) / 3
            best = (16 * a2 - a1) / 15
            combined.append(best)
            err = max(err, float(np.max(np.abs(best - a2))))
            scale = max(scale, float(np.max(np.abs(best))))
        return combined, err, scale, n_nodes

    # -- public -------------------------------------------------------------------------------------
    def solve(self, weight_decay: float, t, *, initial: Optional[Callable] = None, loss: str = "mse"
              ) -> VolterraOutputs:
        """Outputs at times ``t`` (1-D, >= 0, finite) for weight decay ``lam``.

        ``initial``: None (``g = 0``: the mean over ``f0 ~ NNGP``), ``"prior"`` (mean and variances over
        the prior, MSE only), or a callable ``initial(scales) -> (g_train (P, N, K), g_test (P, M, K))``
        giving ``g(x; s) = f(x; s theta_0)`` of one initialisation (e.g. a finite network) at an array
        of scales. ``loss``: ``"mse"`` or ``"xent"`` (softmax cross-entropy, one-hot ``y_train``).
        """
        lam = _check_lam(weight_decay)
        times = _check_times_1d(t)
        if loss not in ("mse", "xent"):
            raise ValueError(f"loss must be 'mse' or 'xent', got {loss!r}")
        prior = isinstance(initial, str)
        if prior and (initial != "prior" or loss != "mse"):
            raise ValueError(f"initial must be None, 'prior' (MSE only) or a callable, got {initial!r}")
        if initial is not None and not prior and not callable(initial):
            raise TypeError(f"initial must be None, 'prior' or a callable, got {type(initial).__name__}")
        pos = np.unique(times[times > 0])
        y, K = self.y_train, self.y_train.shape[1]
        grad = None if loss == "mse" else (lambda f: (softmax(f, axis=-1) - y) / y.shape[0])

        def build(tn, v, w, req):
            gtr, gte = self._sources(lam, tn, req, None if prior else initial, y, K)
            src = gtr - y[None] if grad is None else gtr
            tr, te = self._solve_grid(lam, tn, v, w, req, src, gte, grad)
            tr = tr + y[None] if grad is None else tr
            if not prior:
                return tr, te, None, None
            vtr, vte = self._prior_variance(lam, tn, v, w, req)
            return tr, te, vtr, vte

        if pos.size:
            (tr, te, vtr, vte), err, scale, n_nodes = self._romberg(lam, pos, build)
        else:
            tr = te = vtr = vte = None
            err, scale, n_nodes = 0.0, 1.0, 1
        scale = max(scale, float(np.max(np.abs(y))))
        rel = err / scale if scale > 0 else err
        if rel > self.rtol:
            raise FloatingPointError(f"quadrature error estimate {rel:.2g} exceeds rtol={self.rtol:g}; "
                                     f"use a smaller step (now {self.step:g})")
        return self._assemble(lam, times, pos, tr, te, vtr, vte, initial, rel, n_nodes)

    def _assemble(self, lam, times, pos, tr, te, vtr, vte, initial, rel, n_nodes) -> VolterraOutputs:
        """Outputs at the requested times (t = 0 from the initial function), in the caller's order."""
        K = self.y_train.shape[1]
        prior = isinstance(initial, str)
        g0tr = np.zeros((1, self.n_train, K))
        g0te = None if self.x_test is None else np.zeros((1, self.n_test, K))
        if callable(initial):
            a, b = initial(np.ones(1))
            g0tr = np.asarray(a, dtype=np.float64).reshape(g0tr.shape)
            if g0te is not None:
                g0te = np.asarray(b, dtype=np.float64).reshape(g0te.shape)
        idx = np.searchsorted(pos, times)
        zero = times == 0

        def pick(arr, at0):
            if arr is None and at0 is None:
                return None
            full = at0 if arr is None else np.concatenate([at0, arr])
            return full[np.where(zero, 0, idx + (0 if arr is None else 1))]

        train = pick(tr, g0tr).reshape((len(times),) + self._y_shape)
        test = pick(te, g0te)
        tv = tev = None
        if prior:
            k0 = self._k(self.x_train, None, 1.0, 1.0)[1]
            tv = pick(vtr, np.diag(k0)[None])
            if self.x_test is not None:
                k0t = self._k(self.x_test, None, 1.0, 1.0)[1]
                tev = pick(vte, np.diag(k0t)[None])
        return VolterraOutputs(times, train, test, tv, tev, rel, n_nodes, lam)

    def _prior_variance(self, lam, t, v, w, req):
        """Variances over ``g ~ GP(0, K(.,.; s, s'))`` of the train/test outputs at the requested nodes:
        the joint covariance of ``g`` over all nodes is factored (eigh, truncated at 1e-14 of the top) and
        every factor column is pushed through the (linear) solver."""
        s = np.exp(-lam * t)
        n, N = len(t), self.n_train
        M = 0 if self.x_test is None else self.n_test
        size = n * N + len(req) * M
        if size > 6000:
            raise ValueError(f"initial='prior' needs a joint covariance of size {size} > 6000 (nodes x points);"
                             " use fewer training/test points or a larger step")
        xs = self.x_train if M == 0 else np.concatenate([self.x_train, self.x_test])
        big = np.empty((size, size))
        sc = np.concatenate([np.repeat(s, N), np.repeat(s[req], M)])
        pt = np.concatenate([np.tile(np.arange(N), n), np.tile(np.arange(N, N + M), len(req))])
        uniq = np.unique(s)
        for si in uniq:     # kernel between all points at scale si and all points at every scale
            k = self._kfn(xs, None, np.full(len(uniq), si), uniq)[1]
            rows = np.where(sc == si)[0]
            cols = np.searchsorted(uniq, sc)
            big[np.ix_(rows, np.arange(size))] = k[cols[None, :], pt[rows][:, None], pt[None, :]]
        ev, vec = scipy.linalg.eigh(big)
        keep = ev > 1e-14 * ev[-1]
        B = vec[:, keep] * np.sqrt(ev[keep])
        gtr = B[:n * N].reshape(n, N, -1)
        gte = None if M == 0 else B[n * N:].reshape(len(req), M, -1)
        tr, te = self._solve_grid(lam, t, v, w, req, gtr, gte)
        return np.sum(tr ** 2, axis=-1), None if te is None else np.sum(te ** 2, axis=-1)


def _newton(c: np.ndarray, kd: np.ndarray, grad: Callable, tol: float = 1e-14, max_iter: int = 50):
    """Solve ``f = c - kd grad(f)`` for softmax cross-entropy (grad = (softmax(f) - y)/N) by Newton."""
    N, K = c.shape
    f = c.copy()
    for _ in range(max_iter):
        gr = grad(f)
        res = f - c + kd @ gr
        p = softmax(f, axis=-1)
        hess = (np.einsum("ik,kl->ikl", p, np.eye(K)) - p[:, :, None] * p[:, None, :]) / N   # (N, K, K)
        jac = np.eye(N * K) + np.einsum("ab,bkl->akbl", kd, hess).reshape(N * K, N * K)
        step = np.linalg.solve(jac, res.reshape(-1)).reshape(N, K)
        f -= step
        if np.max(np.abs(step)) <= tol * max(1.0, float(np.max(np.abs(f)))):
            break
    return f, grad(f)


def _check_times_1d(t) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(t, dtype=np.float64))
    if arr.ndim != 1:
        raise ValueError(f"t must be a 1-D array of times, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError("t must be finite times >= 0 (physical time eta * steps)")
    return arr


def homogeneous_initial(f0_train, f0_test=None, L: int = 1) -> Callable:
    """``initial(s)`` of an L-homogeneous net with outputs ``f0`` at ``s = 1``: ``g(x; s) = s^L f0(x)``."""
    a = np.asarray(f0_train, dtype=np.float64)
    b = None if f0_test is None else np.asarray(f0_test, dtype=np.float64)

    def initial(s):
        p = np.asarray(s, dtype=np.float64) ** L
        return (p[:, None, None] * a.reshape(a.shape[0], -1)[None],
                None if b is None else p[:, None, None] * b.reshape(b.shape[0], -1)[None])

    return initial


__all__ = ["CrossScaleFlow", "VolterraOutputs", "default_step", "homogeneous_initial"]
