"""Reduced-basis Volterra solver for large N: few full kernels, a residual-enriched basis, k x k solves
(docs/theory.md §5.5).

The separable solver (:mod:`widelimit.dynamics.volterra_separable`) needs ``m^2`` full kernels
``Theta(X, X; s, s')``, an SVD of an ``m^2 x N^2`` matrix and one ``N x N`` solve per node; all three are
replaced here.

1. Kernel interpolation in the scales (discrete empirical interpolation). The kernel is sampled at the
   ``m^2`` Duffy-Chebyshev pairs of the triangle ``s <= s'`` on PROBE entries only (``n_probe`` training
   points with themselves, diagonal included, and test probes x training probes): ``S``, ``m^2 x e``.
   Its SVD, truncated at ``interp_tol`` of the largest singular value, gives ``r`` orthonormal functions
   ``U(s, s')`` of the scales, fitted in the total-degree Chebyshev basis of the triangle exactly as the
   separable fit; a column-pivoted QR of ``U^T`` picks ``r`` pivot pairs ``p`` with ``U[p]`` well
   conditioned, and for ALL entries

       Theta(x, x'; s, s') ~= sum_r U_r(s, s') B_r,      B = U[p]^-1 Theta(x, x'; p),

   so only ``r`` full kernels are evaluated (``r = 1`` for an L-homogeneous net, ~40 at 1e-10 for ReLU or
   erf with biases). ``fit_error`` is measured on the probe entries at 64 check points (not samples).

2. Reduced basis. ``Q`` (``N x k``, orthonormal) starts with ``y`` and the POD (cut at ``basis_tol``) of
   the frozen-kernel snapshots ``exp(-tau Theta(X, X; 1, 1)/a) y``; the Volterra equation is solved by
   Galerkin projection onto ``Q`` (``u = Q c``): the pivot kernels enter only as ``Q^T B_r Q``
   (``k x k``) and ``B_r^test Q`` (``M x k``), and the separable node loop (same grids in ``v``, same
   implicit diagonal, same three-level Romberg and ``error_estimate`` as
   :class:`~widelimit.dynamics.volterra_separable.SeparableCrossScaleFlow`) runs with ``k x k`` solves for
   all weight decays at once. Greedy enrichment (:meth:`ReducedCrossScaleFlow.enrich`, run by
   :meth:`~ReducedCrossScaleFlow.solve_many` for the requested decays and times): on the coarsest grid
   the full-space residual of the Nystrom equation is ``R_i = (I - Q Q^T) sum_r B_r Q z_r(i)`` (Galerkin:
   ``Q^T R_i = 0``; ``z`` the reduced history), and its dominant directions (randomised range finder,
   singular values above ``enrich_tol`` of those of the history) are added, until none is; then rounds on
   all decays at ``1e-3 enrich_tol`` until the residual bound (3.) is small enough. The basis is kept
   orthonormal to rounding (new columns are projected again after normalisation: without that
   ``Q^T Q - I`` reached 3e-9 and the Galerkin error grew ~10x).

3. Stated errors. ``error_estimate``: the Romberg quadrature estimate. ``basis_error``: a bound on the
   basis truncation from the Galerkin residual (docs/theory.md §5.5). With ``Theta(s, s') = J_s J_s'^T``
   the error ``e = u - Q c`` of the train residual obeys ``e_t = R_t + J_t D_t``,
   ``dD/dt = -lam D - J_t^T (R_t + J_t D_t) / a``, so ``d|D|^2/dt <= -2 lam |D|^2 + |R|^2 / (2a)`` and

       |e_t(x)| <= |R_t(x)| + sqrt(Theta(x, x; s_t, s_t)) |D_t|,
       |D_t|^2 <= (1/2a) int_0^t exp(-2 lam (t - tau)) |R_tau|^2 dtau

   (test points: the second term alone). On every grid the integral is the trapezoid sum over the nodes of
   ``|R_i|^2`` estimated from a 64-row Gaussian sketch times 4 (an under-estimate has probability
   ``P(chi2_64 < 16) = 1.3e-10`` per node), ``|R_t(x)|`` is exact at the requested times; the three
   grids' bounds are combined with the absolute Romberg weights ``(64 b_2 + 20 b_1 + b_0) / 45``. Measured
   against the full-space solver (tests/test_volterra_basis_error.py) it was above the error in every case,
   by 3.9x to 270x (most at small ``lam``, where the memory integral is long). The enrichment runs until this
   bound on the coarsest grids is below ``rtol / (2 * 4 * 85/45)`` (the finest grid's residual is up to 4x
   the coarsest's); decays whose final bound exceeds ``rtol`` get enrichment rounds on their finest grids
   and are solved again (twice at most), then FloatingPointError. ``fit_error`` (interpolation in the
   scales) is stated separately. Each decay is solved in the fewest leading columns of ``Q`` whose kept
   enrichment pass (coarsest grids) met the enrichment's target (``columns``; the bound is computed in those
   columns and, above ``rtol``, the decay is solved again in the whole basis first); the enrichment's last,
   checking pass is level 0 of the final solve.

Cost: ``r`` kernels of ``N x N`` and ``M x N``, ``m^2`` probe kernels of ``e`` entries, one ``N x N``
eigendecomposition, ``O(r N^2 k)`` flops for the projections, ``O(n L (k^3 + r k^2 + r p k K))`` for the
node loop (``n`` nodes, ``L`` weight decays, ``p = P + 1``). Memory ``O(r N^2)`` (the pivot kernels are
kept for the enrichment). MSE with ``g = 0`` (the mean over the prior, ``f0="zero"``) only.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import scipy.linalg
from numpy.polynomial import chebyshev

from ..kernels.cross_scale import cross_scale_kernels
from .ntk_l2 import _check_lam
from .volterra import _CALIBRATED_H, _LEVELS, CrossScaleFlow, VolterraOutputs, _check_rtol, _check_times_1d
from .volterra_enrich import _FINE_OVER_COARSE, BasisEnrichment, orth_against
from .volterra_separable import SeparableCrossScaleFlow, basis, triangle_samples

_CHECK_SEED = 12345
_COARSE = 0.75               # default step: 0.75 of the largest the a-priori estimate (h/8)^4 <= rtol allows
_RETRIES = 2
_PAIR_ELEMS = 2 ** 23        # pivot kernels per jit call: at most this many entries (8 pairs at N = 1000)
_SKETCH, _SKETCH_FACTOR, _SKETCH_SEED = 64, 2.0, 7   # |R| <= 2 |Omega R| / 8: fails w.p. P(chi2_64 < 16) = 1.3e-10


def _check_points():
    """64 fixed check pairs on the triangle ``s <= s'`` (inside and on the edges), not sample points."""
    rng = np.random.default_rng(_CHECK_SEED)
    c1 = np.concatenate([rng.uniform(0, 1, 56), [1e-3, 0.3, 0.7, 1.0, 1e-3, 0.5, 0.05, 0.9]])
    c2 = np.concatenate([c1[:56] + (1 - c1[:56]) * rng.uniform(0, 1, 56), [1e-3, 0.3, 0.7, 1.0, 1.0, 1.0,
                                                                            0.06, 0.95]])
    return c1, c2


class ReducedCrossScaleFlow(BasisEnrichment, SeparableCrossScaleFlow):
    """Volterra model for large ``N`` (see the module docstring); :meth:`solve_many` and :meth:`solve`
    (``initial=None``, MSE) as for :class:`~widelimit.dynamics.volterra_separable.SeparableCrossScaleFlow`.

    Args (besides those of :class:`~widelimit.dynamics.volterra.CrossScaleFlow`):
      step: base step in ``v``; default ``min(2, 0.75 * 8 rtol^(1/4))``, the coarsest the a-priori check allows
        (a-priori estimate ``0.32 rtol``; :func:`~widelimit.dynamics.volterra.default_step` aims at
        ``rtol / 10``): the a-posteriori quadrature estimate is checked against ``rtol`` in any case.
      degree: total degree ``P`` of the fit in the two scales (int in [2, 40], default 20).
      n_samples: ``m``, Duffy-Chebyshev samples per axis (default ``P + 2``), on the probe entries only.
      n_probe: training points used as probes (default 48; all if fewer), test probes ``n_probe // 3``.
      interp_tol: singular values of the probe samples kept down to this fraction of the largest
        (default 1e-10): sets ``r``.
      basis_tol: POD cut of the initial snapshots (default 1e-9).
      max_basis: largest ``k`` (default ``min(N, 400)``).
      enrich_tol: enrichment threshold, relative to the history's largest singular value (default
        ``rtol / 10``; ``rtol / 100`` made k ~25% larger at N = 500 ... 1000 without
        lowering the stated basis error). max_rounds: enrichment rounds above it (default 8).
      kernel_backend: ``"jax"`` (default: the r full pivot kernels by the jit-compiled recursion of
        :func:`~widelimit.kernels.cross_scale.cross_scale_kernels`) or ``"numpy"``.

    Attributes: ``rank`` (r, pivot kernels), ``pivots`` ((r, 2) scale pairs), ``coef`` (r, P+1, P+1),
    ``basis`` (Q, N x k; grows with :meth:`enrich`), ``blocks_train`` (r, k, k) = ``Q^T B_r Q``,
    ``blocks_test`` (r, M, k) or None, ``fit_error`` (max over probe entries and 64 check points of
    ``|fit - Theta| / max|Theta|``), ``columns`` (int array, one per decay of the last :meth:`solve_many`:
    the leading basis columns it was solved in; None before).
    """

    def __init__(self, spec, x_train, y_train, *, x_test=None, rtol: float = 1e-6,
                 step: Optional[float] = None, kernel_fn=None, degree: int = 20,
                 n_samples: Optional[int] = None, n_probe: int = 48, interp_tol: float = 1e-10,
                 basis_tol: float = 1e-9, max_basis: Optional[int] = None, enrich_tol: Optional[float] = None,
                 max_rounds: int = 8, kernel_backend: str = "jax"):
        if isinstance(degree, bool) or not isinstance(degree, int) or not 2 <= degree <= 40:
            raise ValueError(f"degree must be an int in [2, 40] (total degree in the two scales), got {degree!r}")
        m = degree + 2 if n_samples is None else n_samples
        if isinstance(m, bool) or not isinstance(m, int) or m <= degree:
            raise ValueError(f"n_samples must be an int > degree={degree}, got {n_samples!r}")
        if isinstance(n_probe, bool) or not isinstance(n_probe, int) or n_probe < 2:
            raise ValueError(f"n_probe must be an int >= 2, got {n_probe!r}")
        if isinstance(interp_tol, bool) or not isinstance(interp_tol, float) or not 0 < interp_tol < 1e-3:
            raise ValueError(f"interp_tol must be a float in (0, 1e-3), got {interp_tol!r}")
        for name, val, hi in (("basis_tol", basis_tol, 1e-3), ("enrich_tol", enrich_tol, 1e-2)):
            if val is not None and (isinstance(val, bool) or not isinstance(val, float) or not 0 < val < hi):
                raise ValueError(f"{name} must be a float in (0, {hi:g}), got {val!r}")
        if max_basis is not None and (isinstance(max_basis, bool) or not isinstance(max_basis, int)
                                      or max_basis < 2):
            raise ValueError(f"max_basis must be an int >= 2 or None, got {max_basis!r}")
        if kernel_backend not in ("numpy", "jax"):
            raise ValueError(f"kernel_backend must be 'numpy' or 'jax', got {kernel_backend!r}")
        if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or not 0 <= max_rounds <= 50:
            raise ValueError(f"max_rounds must be an int in [0, 50], got {max_rounds!r}")
        if step is None:      # the coarsest base step the a-priori check allows (estimate 0.32 rtol)
            step = min(2.0, _COARSE * _CALIBRATED_H * _check_rtol(rtol) ** 0.25)
        # CrossScaleFlow's constructor (validation, mu_max); not the separable fit
        super(SeparableCrossScaleFlow, self).__init__(spec, x_train, y_train, x_test=x_test, rtol=rtol,
                                                      step=step, kernel_fn=kernel_fn)
        self.degree, self.n_samples = degree, m
        self.kernel_backend = kernel_backend
        N, M = self.n_train, 0 if self.x_test is None else self.n_test
        rng = np.random.default_rng(0)
        ptr = np.sort(rng.choice(N, min(N, n_probe), replace=False))
        pte = None if not M else np.sort(rng.choice(M, min(M, max(1, n_probe // 3)), replace=False))
        self._probe = (ptr, pte)
        s1, s2 = triangle_samples(m)
        S = self._probe_values(s1, s2)                                     # (m^2, e)
        rs = scipy.linalg.qr(S.T, mode="r")[0][:S.shape[0]]                 # S = R^T Q^T: SVD of the small R^T
        left, sv, _ = scipy.linalg.svd(rs.T, full_matrices=False)
        r = max(1, int(np.sum(sv > interp_tol * sv[0])))
        left = left[:, :r]                                                  # (m^2, r), orthonormal
        piv = scipy.linalg.qr(left.T, mode="r", pivoting=True)[1][:r]      # DEIM pivots: well-conditioned
        design = basis(s1, s2, degree)
        used = np.flatnonzero(np.any(design != 0, axis=0))
        qm, rm = np.linalg.qr(design[:, used])
        coef = np.zeros((r, (degree + 1) ** 2))
        coef[:, used] = scipy.linalg.solve_triangular(rm, qm.T @ left).T     # U(s, s') in the Chebyshev basis
        # Theta(s, s') ~= sum_r U_r(s, s') B_r with B = U[piv]^-1 Theta(piv) (the mixing matrix is applied to
        # the kernels, never to the ill-conditioned Chebyshev coefficients)
        mix = np.linalg.inv(left[piv])
        self.rank, self.pivots = r, np.stack([s1[piv], s2[piv]], axis=1)
        self.coef = coef.reshape(r, degree + 1, degree + 1)
        c1, c2 = _check_points()
        ref = self._probe_values(c1, c2)
        fit = (basis(c1, c2, degree) @ coef.T) @ (mix @ S[piv])
        self.fit_error = float(np.max(np.abs(fit - ref)) / np.max(np.abs(ref)))
        # the r full pivot kernels (kept for enrichment), their test rows; the initial basis
        self._mix = mix
        self._piv_train = self._full_many(self.x_train, None)                        # (r, N, N)
        self._piv_test = None if not M else self._full_many(self.x_test, self.x_train)   # (r, M, N)
        self.max_basis = min(N, 400) if max_basis is None else min(N, max_basis)
        self.enrich_tol = self.rtol / 10 if enrich_tol is None else float(enrich_tol)
        self.max_rounds = max_rounds
        self._cols, self.columns = {}, None
        self.basis = np.zeros((N, 0))
        self._pq = np.zeros((r, N, 0))
        self._set_basis(self._snapshot_basis(self._ntk_11[None], basis_tol))

    # -- construction ---------------------------------------------------------------------------------
    def _full_many(self, xa, xb) -> np.ndarray:
        """The full NTKs at every pivot pair, (r, Na, Nb): by the jit-compiled recursion when ``spec`` was
        given and ``kernel_backend="jax"``, several pairs per call (at most ``_PAIR_ELEMS`` entries), so
        the scale-free first layer of a ReLU-family net is computed once per call; else pair by pair."""
        if self.spec is None or self.kernel_backend != "jax":
            return np.stack([self._full(xa, xb, a, b) for a, b in self.pivots])
        na, nb = xa.shape[0], (xa if xb is None else xb).shape[0]
        r = self.rank
        chunks = -(-r // max(1, _PAIR_ELEMS // (na * nb)))
        step = -(-r // chunks)                 # equal chunks (one compiled shape), the last padded
        piv = np.concatenate([self.pivots, np.repeat(self.pivots[-1:], chunks * step - r, axis=0)])
        out = np.empty((chunks * step, na, nb))
        for j in range(0, chunks * step, step):
            p = piv[j:j + step]
            out[j:j + step] = cross_scale_kernels(self.spec, xa, xb, scale1=p[:, 0].copy(),
                                                  scale2=p[:, 1].copy(), backend="jax").ntk
        return out[:r]

    def _full(self, xa, xb, a: float, b: float) -> np.ndarray:
        """One full NTK at the scale pair ``(a, b)``: by the jit-compiled recursion when ``spec`` was
        given and ``kernel_backend="jax"``, else by the kernel function."""
        if self.spec is not None and self.kernel_backend == "jax":
            return cross_scale_kernels(self.spec, xa, xb, scale1=np.array([a]), scale2=np.array([b]),
                                       backend="jax").ntk[0]
        return self._k(xa, xb, a, b)[0]

    def _probe_values(self, s1, s2) -> np.ndarray:
        """Kernel on the probe entries at every pair ``(s1, s2)``: (len(s1), e)."""
        ptr, pte = self._probe
        xp = self.x_train[ptr]
        parts = [np.asarray(self._kfn(xp, None, s1, s2)[0]).reshape(len(s1), -1)]
        if pte is not None:
            parts.append(np.asarray(self._kfn(self.x_test[pte], xp, s1, s2)[0]).reshape(len(s1), -1))
        return np.concatenate(parts, axis=1)

    def _snapshot_basis(self, ops: np.ndarray, tol: float) -> np.ndarray:
        """Orthonormal basis: ``y`` first, then the POD (SVD, cut at ``tol`` of the largest singular value)
        of the frozen-kernel snapshots ``exp(-tau A / a) y`` for every ``A`` in ``ops`` and ``tau mu_max``
        log-spaced in [1e-2, 1e4] (8 per decade)."""
        y = self.y_train
        Q0 = orth_against(np.zeros((self.n_train, 0)), y, 1e-14)
        taus = self.t0 * np.geomspace(1e-2, 1e4, 49)
        snaps = []
        for A in ops:
            mu, V = scipy.linalg.eigh(A / self.normalization)
            e = np.exp(-np.maximum(mu, 0)[None, :] * taus[:, None])          # (T, N)
            snaps.append(np.einsum("ij,tj,jk->itk", V, e, V.T @ y).reshape(self.n_train, -1))
        W = np.concatenate(snaps, axis=1)
        for _ in range(2):
            W = W - Q0 @ (Q0.T @ W)
        U, sv, _ = scipy.linalg.svd(W, full_matrices=False)
        n_keep = max(min(int(np.sum(sv > tol * sv[0])), self.max_basis - Q0.shape[1]), 0)
        new = U[:, :n_keep]
        if n_keep:          # the small singular vectors carry the rounding left in span(y): project again
            new = np.linalg.qr(new - Q0 @ (Q0.T @ new))[0]
        return np.concatenate([Q0, new], axis=1)

    def _set_basis(self, Q: np.ndarray) -> None:
        """Install the basis ``Q`` (whose leading columns are the current basis): projections of the pivot
        kernels for the new columns only, then the reduced blocks ``B_r`` (mixing applied here)."""
        old = self.basis.shape[1]
        new = Q[:, old:]
        self._pq = np.concatenate([self._pq, np.einsum("rij,jb->rib", self._piv_train, new, optimize=True)], 2)
        self.basis = Q
        mix = self._mix
        self._bq = np.tensordot(mix, self._pq, axes=(1, 0))                          # B_r Q: (r, N, k)
        self.blocks_train = np.ascontiguousarray(np.einsum("ia,rib->rab", Q, self._bq, optimize=True))
        if self._piv_test is not None:
            self.blocks_test = np.ascontiguousarray(
                np.tensordot(mix, np.einsum("rmj,jb->rmb", self._piv_test, Q, optimize=True), axes=(1, 0)))
        else:
            self.blocks_test = None

    # -- solving --------------------------------------------------------------------------------------
    def _loop(self, lams, grids, cols: Optional[int] = None, capture: int = 0, bound: bool = False):
        """The separable node loop (MSE, g = 0) in the first ``cols`` basis columns, all decays at once.
        Returns full-space train (L, R, N, K), test (L, R, M, K), and, if ``capture``, the reduced full
        histories ``z_r + w_i phi_r(s_i, s_i) q_i`` at every ``capture``-th node, stacked as columns
        (r k, n_columns): ``sum_r B_r Q z_r`` is the Nystrom history in the full space. With ``bound``,
        the third output is instead the residual bound (L, R) of :meth:`_residual_bound` (absolute)."""
        Q = self.basis if cols is None else self.basis[:, :cols]
        kk = Q.shape[1]
        Bt = self.blocks_train[:, :kk, :kk]
        Bs = None if self.blocks_test is None else self.blocks_test[:, :, :kk]
        y = self.y_train
        yr = Q.T @ y
        Lm, K, a = len(lams), y.shape[1], self.normalization
        n = max(len(g[0]) for g in grids)
        t = np.stack([np.pad(g[0], (0, n - len(g[0])), mode="edge") for g in grids])
        v = np.stack([np.pad(g[1], (0, n - len(g[1]))) for g in grids])
        w = np.stack([np.pad(g[2], (0, n - len(g[2]))) for g in grids])
        req = np.stack([g[3] for g in grids])
        s = np.exp(-lams[:, None] * t)
        T = chebyshev.chebvander(2 * s - 1, self.degree)                                   # (L, n, p)
        r, p = self.rank, self.degree + 1
        G = self._contract(T.reshape(-1, p)).reshape(Lm, n, r, p)
        diag = np.sum(G * T[:, :, None, :], axis=-1)                                       # (L, n, r)
        E = Bt.transpose(1, 0, 2).reshape(kk, r * kk)
        Et = None if Bs is None else Bs.transpose(1, 0, 2).reshape(-1, r * kk)
        mom = np.zeros((Lm, p, kk, K))
        q = np.zeros((Lm, kk, K))
        train = np.empty((Lm, req.shape[1], kk, K))
        test = None if Et is None else np.empty((Lm, req.shape[1], Et.shape[0], K))
        Bflat = Bt.reshape(r, kk * kk)
        snaps = []
        if bound:        # sketch of the residual operator (I - Q Q^T) [B_1 Q, ..., B_r Q]: (s, r k)
            om = np.random.default_rng(_SKETCH_SEED).standard_normal((_SKETCH, self.n_train))
            BQ = self._bq[:, :, :kk].transpose(1, 0, 2).reshape(self.n_train, r * kk)
            PF = BQ - Q @ E                                                            # (N, r k), exact
            P = (_SKETCH_FACTOR / math.sqrt(_SKETCH)) * (om @ PF)
            dtr, dte = self._diagonals()
            racc = np.zeros((Lm, K))
            bnd = np.zeros((Lm, req.shape[1]))
            nr2 = np.zeros((Lm, K))
        for i in range(n):
            if i > 0:
                decay = np.exp(-lams * (t[:, i] - t[:, i - 1]))[:, None, None, None]
                mom = decay * (mom + (v[:, i - 1, None] * T[:, i - 1])[:, :, None, None] * q[:, None])
            if bound and i > 0:
                racc = np.exp(-2 * lams * (t[:, i] - t[:, i - 1]))[:, None] * (racc + v[:, i - 1, None] * nr2)
            z = (G[:, i] @ mom.reshape(Lm, p, kk * K)).reshape(Lm, r, kk, K)
            mat = ((w[:, i, None] / a) * diag[:, i]) @ Bflat                 # (w_i/a) Q^T Theta(s_i, s_i) Q
            mat[:, ::kk + 1] += 1.0                                           # + I, in place
            hist = (E @ z.transpose(1, 2, 0, 3).reshape(r * kk, Lm * K)).reshape(kk, Lm, K).transpose(1, 0, 2)
            u = np.linalg.solve(mat.reshape(Lm, kk, kk), -yr - hist)        # one GEMM for all decays
            q = u / a
            if (capture > 0 and i % capture == capture - 1) or (capture < 0 and np.any(req == i)):
                zf = z + (w[:, i, None] * diag[:, i])[:, :, None, None] * q[:, None]
                snaps.append(zf.transpose(1, 2, 0, 3).reshape(r * kk, -1))
            if bound:
                zf = z + (w[:, i, None] * diag[:, i])[:, :, None, None] * q[:, None]
                res = P @ zf.transpose(1, 2, 0, 3).reshape(r * kk, Lm * K)             # (s, L K)
                nr2 = np.sum(res ** 2, axis=0).reshape(Lm, K)
            hit = np.nonzero(req == i)
            if bound and hit[0].size:
                li = hit[0]
                S = (racc[li] + w[li, i, None] * nr2[li]) / (2 * a)                    # bound on |D|^2, (l, K)
                rex = PF @ zf[li].transpose(1, 2, 0, 3).reshape(r * kk, -1)              # exact R: (N, l K)
                rex = np.abs(rex).reshape(self.n_train, len(li), K).transpose(1, 0, 2)  # (l, N, K)
                th = np.sqrt(np.maximum(diag[li, i] @ dtr, 0))                           # (l, N)
                b_tr = np.max(rex + th[:, :, None] * np.sqrt(S)[:, None, :], axis=(1, 2))
                if dte is not None:
                    th_te = np.sqrt(np.maximum(np.max(diag[li, i] @ dte, axis=1), 0))
                    b_tr = np.maximum(b_tr, th_te * np.sqrt(np.max(S, axis=1)))
                bnd[li, hit[1]] = b_tr
            if hit[0].size:
                train[hit[0], hit[1]] = u[hit[0]] + yr
                if Et is not None:
                    tot = mom[hit[0]] + (w[hit[0], i, None] * T[hit[0], i])[:, :, None, None] * q[hit[0], None]
                    zt = (G[hit[0], i] @ tot.reshape(len(hit[0]), p, kk * K)).reshape(len(hit[0]), r * kk, K)
                    test[hit[0], hit[1]] = -(Et @ zt)
        train = y + np.einsum("ia,lrak->lrik", Q, train - yr)
        return train, test, (np.concatenate(snaps, axis=1) if snaps else None), (bnd if bound else None)

    def _diagonals(self):
        """Diagonals of the interpolation matrices ``B_r`` on the training points (r, N) and on the test
        points (r, M) or None: ``Theta(x, x; s, s) ~= sum_r U_r(s, s) diag(B_r)(x)``."""
        if getattr(self, "_diag_cache", None) is None:
            dtr = self._mix @ np.stack([np.diag(k) for k in self._piv_train])
            dte = None
            if self.x_test is not None:
                dte = self._mix @ np.stack([np.diag(self._full(self.x_test, None, a, b)) for a, b in self.pivots])
            self._diag_cache = (dtr, dte)
        return self._diag_cache

    def _batched_grid(self, lams, grids, y):
        """One grid level for all decays, each in its own leading ``_cols`` basis columns (groups of equal
        ``cols`` in one vectorised loop; passes kept from the enrichment are reused)."""
        k = self.basis.shape[1]
        cols = np.array([min(self._cols.get(float(lam), k), k) for lam in lams])
        tr = te = bnd = None
        for c in np.unique(cols):
            idx = np.flatnonzero(cols == c)
            sub, sg = lams[idx], [grids[i] for i in idx]
            kept = self.cached_pass(sub, sg, int(c))
            part = kept if kept is not None else _no_snaps(self._loop(sub, sg, cols=int(c), bound=True))
            if tr is None:
                tr = np.empty((len(lams),) + part[0].shape[1:])
                te = None if part[1] is None else np.empty((len(lams),) + part[1].shape[1:])
                bnd = np.empty((len(lams),) + part[2].shape[1:])
            tr[idx], bnd[idx] = part[0], part[2]
            if te is not None:
                te[idx] = part[1]
        self._bounds.append(bnd)
        return tr, te

    def solve_many(self, weight_decays, t) -> list:
        """All weight decays in one vectorised pass (MSE, ``g = 0``); each output carries the quadrature
        ``error_estimate`` and the ``basis_error`` (the residual bound, see the module docstring). Decays
        whose bound exceeds ``rtol`` are solved again: in the whole basis if they were solved in a prefix of it
        (``columns``, see :meth:`prefix_columns`), else after enrichment rounds on their finest grids (at
        most ``_RETRIES`` times); then FloatingPointError."""
        lams = [_check_lam(v) for v in np.atleast_1d(np.asarray(weight_decays, dtype=np.float64))]
        times = _check_times_1d(t)
        pos = np.unique(times[times > 0])
        if not pos.size:
            return [CrossScaleFlow.solve(self, lam, times) for lam in lams]
        self.enrich(lams, pos)
        # each decay in the fewest leading columns whose coarse-grid bound met the enrichment's target
        cols = self.prefix_columns(lams, self._grids(lams, pos, 1),
                                   self.rtol / 2 / (_FINE_OVER_COARSE * 85 / 45))
        self._cols = {float(lam): int(c) for lam, c in zip(lams, cols)}
        self.columns = cols             # basis columns each decay is solved in (the last solve_many)
        res = [None] * len(lams)
        todo = list(range(len(lams)))
        rng = np.random.default_rng(2)
        retries = 0
        while True:
            self._bounds = []
            outs = super().solve_many([lams[j] for j in todo], times)
            b0, b1, b2 = self._bounds               # per grid: (L, R) bounds on |u_k - u| (absolute)
            bounds = (64 * b2 + 20 * b1 + b0) / 45  # |R_k - R| <= this for R = (64 r2 - 20 r1 + r0) / 45
            failed, k = [], self.basis.shape[1]
            for j, o, bnd in zip(todo, outs, bounds):
                scale = max(float(np.max(np.abs(o.train))), float(np.max(np.abs(self.y_train))))
                if o.test is not None:
                    scale = max(scale, float(np.max(np.abs(o.test))))
                rel = 0.0 if int(self.columns[j]) == self.n_train else float(np.max(bnd)) / scale
                res[j] = VolterraOutputs(*_fields(o), basis_error=rel)
                if rel > self.rtol:
                    failed.append(j)
            if not failed:
                return res
            whole = [j for j in failed if self.columns[j] >= k]    # the others used a prefix: first retry them
            if whole:                                             # in the whole basis, without enrichment
                room = self.max_basis - k
                if retries == _RETRIES or room <= 0:
                    j = whole[0]
                    raise FloatingPointError(f"reduced-basis error bound {res[j].basis_error:.2g} exceeds rtol="
                                             f"{self.rtol:g} at weight_decay={lams[j]:g}; use a larger max_basis "
                                             f"(now {self.max_basis}; k = {k}) or a smaller enrich_tol")
                retries += 1
                fl = np.array([lams[j] for j in whole])
                grids = self._grids(fl, pos, 2 ** (_LEVELS - 1))
                for _ in range(self.max_rounds):      # finest grids: the residual there is what is bounded
                    if not self._enrich_round(fl, grids, 2 ** (_LEVELS - 1), 1e-3, rng,
                                              self.rtol / 2 / (85 / 45))[0]:
                        break
            todo = failed
            for j in failed:                          # solved again in the whole (enriched) basis
                self._cols[float(lams[j])] = self.columns[j] = self.basis.shape[1]

    def solve(self, weight_decay: float, t, *, initial=None, loss: str = "mse") -> VolterraOutputs:
        """:meth:`solve_many` for one weight decay (``initial=None`` and ``loss="mse"`` only)."""
        if initial is not None or loss != "mse":
            raise ValueError("the reduced-basis solver covers MSE with g = 0 (initial=None) only; use "
                             "SeparableCrossScaleFlow for a given initial function, the prior or cross-entropy")
        return self.solve_many([weight_decay], t)[0]


def _no_snaps(out):
    return out[0], out[1], out[3]


def _fields(o: VolterraOutputs):
    return (o.t, o.train, o.test, o.train_var, o.test_var, o.error_estimate, o.n_nodes, o.weight_decay)


__all__ = ["ReducedCrossScaleFlow"]
