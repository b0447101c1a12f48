"""Fast Volterra solver: the cross-scale NTK fitted once by a separable polynomial in the two scales, so
that the memory integral becomes ``p`` running moments (docs/theory.md §5.4).

The kernel of the Volterra equation (:mod:`widelimit.dynamics.volterra`) depends on time only through
the scales ``s_t = exp(-lam t)`` and ``s_tau`` with ``tau <= t``, i.e. only on the triangle
``0 < s_t <= s_tau <= 1``. There the infinite-width kernel is smooth (for ReLU with biases the entries of
an input with itself have a ``|s - s'|`` kink ON the diagonal ``s = s'``, so a fit over the full square
converges only like ``1/p``; restricted to the triangle the kink is an edge and the fit converges
spectrally). We fit, by least squares over Duffy-mapped Chebyshev samples of the triangle,

    Theta(x, x'; s, s') ~= sum_{a + b <= P} T_a(2s - 1) T_b(2s' - 1) C_ab(x, x'),      s <= s',

with ``T`` the Chebyshev polynomials and ``P`` the total degree (the total-degree space is far better
conditioned on a triangle than the tensor space; the least-squares problem is solved by QR, which keeps
the fit accurate to ~1e-15 although the design's condition number reaches ~1e15 at P = 20); the
``(P+1)(P+2)/2`` blocks ``C_ab`` (train x train, test x train) are built ONCE for every weight decay and
time from ``m^2`` kernel samples. For an L-homogeneous net ``Theta = (s s')^(L-1) Theta(1, 1)`` is in the
span when ``P >= 2(L - 1)`` and the fit is exact to rounding. The fit error is measured against direct
evaluation at check points on the triangle (``fit_error``, max over entries relative to ``max |Theta|``).

With the trapezoid Nystrom rule of :class:`~widelimit.dynamics.volterra.CrossScaleFlow` (same grids in
``v``, same implicit diagonal, same three-level Romberg and error estimate) the history at node ``i`` is

    sum_{j<i} w_j exp(-lam (t_i - t_j)) Theta(s_i, s_j) q_j = sum_a T_a(s_i) sum_b C_ab M_b(i),
    M_b(i) = exp(-lam (t_i - t_{i-1})) (M_b(i-1) + w_{i-1} T_b(s_{i-1}) q_{i-1}),

(``p = P + 1``; with the rank-``r`` compression below, ``sum_a T_a(s_i) C_ab = sum_r E_r G_rb(i)``) so a
solve costs ``O(n (r N^2 K + r p N K + N^3))`` flops and NO kernel evaluations (against ``O(n^2 N^2)`` kernel
entries for the direct scheme). The quadrature error estimate is that of the Nystrom rule applied to the
fitted kernel; the fit error adds to it (both are stated).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import scipy.linalg
from numpy.polynomial import chebyshev

from .ntk_l2 import _check_lam
from .volterra import _LEVELS, CrossScaleFlow, _check_times_1d, _grid, _newton, _nodes

_ROW_BLOCK_ELEMS = 2 ** 24      # kernel samples are evaluated for blocks of rows with at most this many entries
_SV_CUT = 1e-12                 # singular values of the kernel samples below this (relative) are dropped


def _chebyshev_points(m: int) -> np.ndarray:
    """First-kind Chebyshev points on (0, 1), ascending."""
    return np.sort((1 - np.cos((2 * np.arange(m) + 1) * math.pi / (2 * m))) / 2)


def triangle_samples(m: int):
    """``m^2`` sample pairs ``(s, s')`` with ``0 < s <= s' <= 1``: the Duffy map ``s' = s + (1 - s) u`` of a
    Chebyshev tensor grid in ``(s, u)``."""
    c = _chebyshev_points(m)
    a, u = np.meshgrid(c, c, indexing="ij")
    a = a.ravel()
    return a, a + (1 - a) * u.ravel()


def basis(s1: np.ndarray, s2: np.ndarray, degree: int) -> np.ndarray:
    """Total-degree Chebyshev basis ``T_a(2 s1 - 1) T_b(2 s2 - 1)``, ``a + b <= degree``, at pairs
    ``(s1, s2)``: shape ``(len(s1), (degree + 1)^2)`` with index ``a * (degree + 1) + b`` (zero columns for
    ``a + b > degree``)."""
    A = chebyshev.chebvander(2 * np.asarray(s1, dtype=np.float64) - 1, degree)
    B = chebyshev.chebvander(2 * np.asarray(s2, dtype=np.float64) - 1, degree)
    keep = np.add.outer(np.arange(degree + 1), np.arange(degree + 1)) <= degree
    return (A[:, :, None] * B[:, None, :] * keep).reshape(A.shape[0], (degree + 1) ** 2)


class SeparableCrossScaleFlow(CrossScaleFlow):
    """:class:`~widelimit.dynamics.volterra.CrossScaleFlow` with the history sum through a separable fit of
    the cross-scale NTK on the triangle ``s_t <= s_tau`` (same arguments, same :meth:`solve`).

    Extra args:
      degree: ``P``, total degree of the fit in the two scales (int in [2, 40]; default 20).
      n_samples: ``m``, Duffy-Chebyshev samples per axis of the triangle (default ``P + 2``; ``m > P``),
        i.e. ``m^2`` kernel evaluations on the training (and test x training) points.

    Attributes: ``rank`` (r, terms kept), ``coef`` (r, P+1, P+1): Chebyshev coefficients of the scalar
    functions ``phi_r``; ``blocks_train`` (r, N, N), ``blocks_test`` (r, M, N) or None: the matrices
    ``E_r``, so that ``Theta(s, s') ~= sum_r phi_r(s, s') E_r`` on the triangle; ``fit_error``: max over
    entries and 64 check points on the triangle of ``|fit - Theta| / max|Theta|`` (dimensionless).

    Compression: the ``m^2`` kernel samples (rows: sample pairs; columns: train and test entries) are
    factored by an SVD, truncated at singular values below ``1e-12`` of the largest (their functional rank
    is small: 1 for a homogeneous net, ~50 at 1e-9 for ReLU/erf with biases), and only the ``r`` left
    factors are fitted in the scales.
    """

    def __init__(self, spec, x_train, y_train, *, x_test=None, rtol: float = 1e-6,
                 step: Optional[float] = None, kernel_fn=None, degree: int = 20,
                 n_samples: Optional[int] = None):
        if isinstance(degree, bool) or not isinstance(degree, int) or not 2 <= degree <= 40:
            raise ValueError(f"degree must be an int in [2, 40] (total degree in the two scales), got {degree!r}")
        m = degree + 2 if n_samples is None else n_samples
        if isinstance(m, bool) or not isinstance(m, int) or m <= degree:
            raise ValueError(f"n_samples must be an int > degree={degree}, got {n_samples!r}")
        super().__init__(spec, x_train, y_train, x_test=x_test, rtol=rtol, step=step, kernel_fn=kernel_fn)
        self.degree, self.n_samples = degree, m
        s1, s2 = triangle_samples(m)
        N, M = self.n_train, 0 if self.x_test is None else self.n_test
        samples = self._samples(self.x_train, s1, s2).reshape(len(s1), N * N)
        if M:
            samples = np.concatenate([samples, self._samples(self.x_test, s1, s2).reshape(len(s1), M * N)], 1)
        left, sv, right = scipy.linalg.svd(samples, full_matrices=False)
        keep = sv > _SV_CUT * sv[0]
        left = left[:, keep]                                   # (m^2, r), orthonormal
        blocks = sv[keep, None] * right[keep]                  # (r, N^2 + M N): E_r (singular value included)
        design = basis(s1, s2, degree)
        used = np.flatnonzero(np.any(design != 0, axis=0))
        qm, rm = np.linalg.qr(design[:, used])                 # least squares by QR (R^-1 never formed)
        coef = np.zeros((left.shape[1], (degree + 1) ** 2))
        coef[:, used] = scipy.linalg.solve_triangular(rm, qm.T @ left).T
        self.rank = int(left.shape[1])
        self.coef = coef.reshape(self.rank, degree + 1, degree + 1)
        self.blocks_train = np.ascontiguousarray(blocks[:, :N * N].reshape(self.rank, N, N))
        self.blocks_test = None if not M else np.ascontiguousarray(blocks[:, N * N:].reshape(self.rank, M, N))
        rng = np.random.default_rng(12345)                   # fixed check points, inside and on the edges
        c1 = np.concatenate([rng.uniform(0, 1, 56), [1e-3, 0.3, 0.7, 1.0, 1e-3, 0.5, 0.05, 0.9]])
        c2 = np.concatenate([c1[:56] + (1 - c1[:56]) * rng.uniform(0, 1, 56), [1e-3, 0.3, 0.7, 1.0, 1.0, 1.0,
                                                                                0.06, 0.95]])
        ref = np.asarray(self._kfn(self.x_train, None, c1, c2)[0])
        phi = basis(c1, c2, degree) @ coef.T                    # (64, r)
        fit = np.tensordot(phi, self.blocks_train, axes=(1, 0))
        self.fit_error = float(np.max(np.abs(fit - ref)) / np.max(np.abs(ref)))

    def _samples(self, xa, s1, s2) -> np.ndarray:
        """NTK between ``xa`` and x_train at every sample pair: (m^2, Na, N)."""
        N = self.n_train
        out = np.empty((len(s1), xa.shape[0], N))
        rows = max(1, _ROW_BLOCK_ELEMS // (len(s1) * N))
        for r in range(0, xa.shape[0], rows):
            whole = xa is self.x_train and rows >= xa.shape[0]      # x2=None: an input with itself is exact
            out[:, r:r + rows] = np.asarray(self._kfn(xa[r:r + rows], None if whole else self.x_train, s1, s2)[0])
        return out

    def _contract(self, T: np.ndarray) -> np.ndarray:
        """``sum_a T[i, a] F_rab`` by one matrix product: (n, p) -> (n, r, p)."""
        r, p = self.rank, self.degree + 1
        return (T @ self.coef.transpose(1, 0, 2).reshape(p, r * p)).reshape(T.shape[0], r, p)

    def _solve_grid(self, lam, t, v, w, req, src_train, src_test, grad=None):
        """Trapezoid Nystrom on one grid with the separable history (see the module docstring)."""
        a = self.normalization
        n, N = len(t), self.n_train
        s = np.exp(-lam * t)
        T = chebyshev.chebvander(2 * s - 1, self.degree)              # (n, p)
        G = self._contract(T)                                         # sum_a T_a(s_i) F_rab: (n, r, p)
        diag = np.sum(G * T[:, None, :], axis=-1)                     # phi_r(s_i, s_i)
        u = np.empty_like(src_train)
        q = np.empty_like(src_train)
        mom = np.zeros((self.degree + 1,) + src_train.shape[1:])      # M_b, (p, N, C)
        req_pos = {int(i): r for r, i in enumerate(req)}
        test_out = [] if src_test is not None else None
        eye = np.eye(N)
        r = self.rank
        E = self.blocks_train.transpose(1, 0, 2).reshape(N, r * N)        # [i, (r, j)]: one matrix product
        Et = None if self.blocks_test is None else self.blocks_test.transpose(1, 0, 2).reshape(-1, r * N)
        for i in range(n):
            if i > 0:
                mom = np.exp(-lam * (t[i] - t[i - 1])) * (mom + v[i - 1] * T[i - 1][:, None, None] * q[i - 1])
            z = np.tensordot(G[i], mom, axes=(1, 0))                  # (r, N, C)
            hist = E @ z.reshape(r * N, -1)
            kd = w[i] * (E.reshape(N, r, N).transpose(0, 2, 1) @ diag[i])   # w_i Theta(s_i, s_i)
            if grad is None:
                u[i] = np.linalg.solve(eye + kd / a, src_train[i] - hist)
                q[i] = u[i] / a
            else:
                u[i], q[i] = _newton(src_train[i] - hist, kd, grad)
            if test_out is not None and i in req_pos:
                tot = mom + w[i] * T[i][:, None, None] * q[i]
                zt = np.tensordot(G[i], tot, axes=(1, 0))
                test_out.append(src_test[req_pos[i]] - Et @ zt.reshape(r * N, -1))
        return u[req], None if test_out is None else np.stack(test_out)

    def solve_many(self, weight_decays, t) -> list:
        """:meth:`solve` with ``initial=None`` (g = 0, the mean over the prior) and MSE for every weight
        decay at once (one vectorised loop over the nodes; grids padded to a common length with zero
        weights). Returns a list of :class:`~widelimit.dynamics.volterra.VolterraOutputs`, one per decay,
        equal to ``solve(lam, t)`` up to rounding (same grids, same Romberg combination and estimate)."""
        lams = [_check_lam(v) for v in np.atleast_1d(np.asarray(weight_decays, dtype=np.float64))]
        times = _check_times_1d(t)
        pos = np.unique(times[times > 0])
        y = self.y_train
        if not pos.size:
            return [self.solve(lam, times) for lam in lams]
        per_level = []
        for level in range(_LEVELS):
            grids = []
            for lam in lams:
                edges, counts = _nodes(pos, self.t0, lam, self.step)
                grids.append(_grid(edges, counts, self.t0, lam, 2 ** level, pos))
            per_level.append(self._batched_grid(np.array(lams), grids, y))
        outs = []
        for k, lam in enumerate(lams):
            res = [(lv[0][k], lv[1][k] if lv[1] is not None else None) for lv in per_level]
            comb, err, scale = [], 0.0, 0.0
            for j in range(2):
                if res[0][j] is None:
                    comb.append(None)
                    continue
                r0, r1, r2 = (r[j] for r in res)
                a1, a2 = (4 * r1 - r0) / 3, (4 * r2 - r1) / 3
                best = (16 * a2 - a1) / 15
                comb.append(best)
                err, scale = max(err, float(np.max(np.abs(best - a2)))), max(scale, float(np.max(np.abs(best))))
            scale = max(scale, float(np.max(np.abs(y))))
            rel = err / scale if scale > 0 else err
            if rel > self.rtol:
                raise FloatingPointError(f"quadrature error estimate {rel:.2g} exceeds rtol={self.rtol:g} at "
                                         f"weight_decay={lam:g}; use a smaller step (now {self.step:g})")
            n_nodes = len(grids[k][0])
            outs.append(self._assemble(lam, times, pos, comb[0], comb[1], None, None, None, rel, n_nodes))
        return outs

    def _batched_grid(self, lams, grids, y):
        """The loop of :meth:`_solve_grid` (MSE, g = 0) for all decays at once on their own grids, padded."""
        L, N, K, a = len(lams), self.blocks_train.shape[1], y.shape[1], self.normalization
        n = max(len(g[0]) for g in grids)
        t = np.stack([np.pad(g[0], (0, n - len(g[0])), mode="edge") for g in grids])      # (L, n)
        v = np.stack([np.pad(g[1], (0, n - len(g[1]))) for g in grids])
        w = np.stack([np.pad(g[2], (0, n - len(g[2]))) for g in grids])
        req = np.stack([g[3] for g in grids])                                               # (L, R)
        s = np.exp(-lams[:, None] * t)
        T = chebyshev.chebvander(2 * s - 1, self.degree)                                   # (L, n, p)
        G = self._contract(T.reshape(-1, T.shape[-1])).reshape(L, n, self.rank, -1)
        diag = np.sum(G * T[:, :, None, :], axis=-1)
        r, p = self.rank, self.degree + 1
        E = self.blocks_train.transpose(1, 0, 2).reshape(N, r * N)
        Et = None if self.blocks_test is None else self.blocks_test.transpose(1, 0, 2).reshape(-1, r * N)
        src = np.broadcast_to(-y, (L, N, K))
        mom = np.zeros((L, p, N, K))
        q = np.zeros((L, N, K))
        train = np.empty((L, req.shape[1], N, K))
        test = None if Et is None else np.empty((L, req.shape[1], Et.shape[0], K))
        eye = np.eye(N)
        for i in range(n):
            if i > 0:
                decay = np.exp(-lams * (t[:, i] - t[:, i - 1]))[:, None, None, None]
                mom = decay * (mom + (v[:, i - 1, None] * T[:, i - 1])[:, :, None, None] * q[:, None])
            z = (G[:, i] @ mom.reshape(L, p, N * K)).reshape(L, r * N, K)
            kd = w[:, i, None, None] * np.tensordot(diag[:, i], self.blocks_train, axes=(1, 0))
            u = np.linalg.solve(eye + kd / a, src - E @ z)
            q = u / a
            hit = np.nonzero(req == i)
            if hit[0].size:
                train[hit[0], hit[1]] = u[hit[0]] + y
                if Et is not None:
                    tot = mom[hit[0]] + (w[hit[0], i, None] * T[hit[0], i])[:, :, None, None] * q[hit[0], None]
                    zt = (G[hit[0], i] @ tot.reshape(len(hit[0]), p, N * K)).reshape(len(hit[0]), r * N, K)
                    test[hit[0], hit[1]] = -(Et @ zt)
        return train, test


__all__ = ["SeparableCrossScaleFlow", "triangle_samples", "basis"]
