"""Greedy enrichment of the reduced Volterra basis by the Galerkin residual (docs/theory.md §5.5); used by
:class:`~widelimit.dynamics.volterra_reduced.ReducedCrossScaleFlow`, whose node loop ``_loop`` (with the
residual bound) and ``_set_basis`` it calls."""
from __future__ import annotations

import numpy as np
import scipy.linalg

from .ntk_l2 import _check_lam
from .volterra import _check_times_1d, _grid, _nodes

_FINE_OVER_COARSE = 4.0      # finest-grid residual bound / coarsest-grid one (measured 1.3-4)


def orth_against(Q: np.ndarray, W: np.ndarray, drop: float) -> np.ndarray:
    """Columns of ``W`` orthogonalised against ``Q`` (two passes) and among themselves; columns whose
    norm after projection is below ``drop`` of their norm before are dropped (rank-revealing QR); the kept
    ones are projected once more after normalisation (``Q^T q`` at rounding level)."""
    norm0 = max(float(np.max(np.linalg.norm(W, axis=0))), 1e-300)
    for _ in range(2):
        if Q.shape[1]:
            W = W - Q @ (Q.T @ W)
    q, r, piv = scipy.linalg.qr(W, mode="economic", pivoting=True)
    keep = np.abs(np.diag(r)) > drop * norm0
    q = q[:, keep]
    if Q.shape[1] and q.shape[1]:     # normalising small projections amplifies what is left in span(Q)
        q = q - Q @ (Q.T @ q)
        q = np.linalg.qr(q)[0]
    return q



class BasisEnrichment:
    """Mixin: :meth:`enrich` and its rounds (needs ``basis``, ``max_basis``, ``max_rounds``, ``enrich_tol``,
    ``rtol``, ``t0``, ``step``, ``_bq``, ``_loop``, ``_set_basis`` and ``_basis_version`` of the reduced
    flow). Every round keeps its pass (outputs and residual bound, on its grids, in the basis of that
    round: the leading columns of every later basis, which only grows) in ``_passes``, keyed by the
    number of columns; :meth:`cached_pass` hands it back instead of repeating it -- the last round of
    :meth:`enrich` is the coarsest level of the final solve, and an earlier round's pass is that level in a
    prefix of the basis (:meth:`prefix_columns`)."""

    _passes = None

    def _keep_pass(self, lams, grids, out, rel) -> None:
        if self._passes is None:
            self._passes = {}
        self._passes[self.basis.shape[1]] = (np.asarray(lams, dtype=np.float64).copy(), list(grids), out,
                                             np.asarray(rel))

    def cached_pass(self, lams, grids, cols: int):
        """The kept pass ``(train, test, bound)`` in the first ``cols`` basis columns for these decays on
        exactly these grids (rows in the order of ``lams``), else None."""
        c = (self._passes or {}).get(cols)
        if c is None:
            return None
        idx = []
        for lam, g in zip(np.asarray(lams, dtype=np.float64), grids):
            hit = np.flatnonzero(c[0] == lam)
            if not hit.size:
                return None
            g0 = c[1][hit[0]]
            if len(g0) != len(g) or not all(np.array_equal(a, b) for a, b in zip(g0, g)):
                return None
            idx.append(hit[0])
        tr, te, bnd = c[2]
        return tr[idx], None if te is None else te[idx], bnd[idx]

    def prefix_columns(self, lams, grids, target: float) -> np.ndarray:
        """Per decay, the fewest leading basis columns (among the kept passes on these grids) whose relative
        residual bound was ``<= target``; the whole basis where none was."""
        cols = np.full(len(lams), self.basis.shape[1])
        for k in sorted(self._passes or {}, reverse=True):
            c = self._passes[k]
            for j, (lam, g) in enumerate(zip(np.asarray(lams, dtype=np.float64), grids)):
                hit = np.flatnonzero(c[0] == lam)
                if not hit.size or c[3][hit[0]] > target:
                    continue
                g0 = c[1][hit[0]]
                if len(g0) == len(g) and all(np.array_equal(a, b) for a, b in zip(g0, g)):
                    cols[j] = min(cols[j], k)
        return cols

    def enrich(self, weight_decays, t) -> int:
        """Greedy enrichment of the basis for this table: solve on the coarsest grids, form the full-space
        residual of the Nystrom equation, ``(I - Q Q^T) sum_r B_r Q z_r`` at every node (Galerkin:
        that is all of it), and add its dominant directions (randomised range finder). Phase 1 (a spread
        subset of 6 decays): directions above ``enrich_tol`` of the history, until none is. Phase 2 (all
        decays): directions above ``1e-3 enrich_tol`` until the coarse-grid residual bound, times
        ``_FINE_OVER_COARSE * 85/45``, is below ``rtol / 2``. Both end at ``max_rounds`` or ``max_basis``.
        Returns the number of columns added."""
        lams = np.array([_check_lam(v) for v in np.atleast_1d(np.asarray(weight_decays, dtype=np.float64))])
        pos = np.unique(_check_times_1d(t))
        pos = pos[pos > 0]
        if not pos.size:
            return 0
        rng = np.random.default_rng(1)
        self._passes = {}            # passes of an earlier table are dropped (memory)
        sub = lams
        if len(lams) > 6:
            sub = lams[np.unique(np.linspace(0, len(lams) - 1, 6).round().astype(int))]
        added = 0
        grids = self._grids(sub, pos, 1)
        for _ in range(self.max_rounds):
            n_new, _ = self._enrich_round(sub, grids, 1, 1.0, rng, 0.0)
            added += n_new
            if not n_new:
                break
        grids = self._grids(lams, pos, 1)
        target = self.rtol / 2 / (_FINE_OVER_COARSE * 85 / 45)
        for _ in range(self.max_rounds):
            n_new, _ = self._enrich_round(lams, grids, 1, 1e-3, rng, target)
            added += n_new
            if not n_new:
                break
        return added

    def _grids(self, lams, pos, refine):
        grids = []
        for lam in lams:
            edges, counts = _nodes(pos, self.t0, lam, self.step)
            grids.append(_grid(edges, counts, self.t0, lam, refine, pos))
        return grids

    def _enrich_round(self, lams, grids, capture, factor, rng, target):
        """One enrichment round: the history at every ``capture``-th node of ``grids``, its residual
        sketch, and its directions above ``factor * enrich_tol`` of the history added -- unless the
        relative residual bound of the current basis on these grids is already ``<= target``. Returns
        (columns added, that bound per decay)."""
        room = self.max_basis - self.basis.shape[1]
        tr, te, Z, bnd = self._loop(lams, grids, capture=capture, bound=True)
        scale = np.maximum(np.max(np.abs(tr), axis=(1, 2, 3)), float(np.max(np.abs(self.y_train))))
        if te is not None:
            scale = np.maximum(scale, np.max(np.abs(te), axis=(1, 2, 3)))
        rel = np.max(bnd, axis=1) / scale
        self._keep_pass(lams, grids, (tr, te, bnd), rel)
        if room <= 0 or np.max(rel) <= target:
            return 0, rel
        sketch = min(Z.shape[1], 2 * min(room, 96))
        BQ = self._bq.transpose(1, 0, 2).reshape(self.n_train, -1)              # (N, r k)
        H = BQ @ (Z @ rng.standard_normal((Z.shape[1], sketch)))                  # sketch of the history
        R = H - self.basis @ (self.basis.T @ H)
        R = R - self.basis @ (self.basis.T @ R)
        U, sv, _ = scipy.linalg.svd(R, full_matrices=False)
        top = scipy.linalg.svd(H, compute_uv=False)[0]
        cut = factor * self.enrich_tol * top
        n_new = min(int(np.sum(sv > max(cut, 1e-13 * top))), room, sketch // 2)
        new = orth_against(self.basis, U[:, :n_new], 1e-10) if n_new else U[:, :0]
        if new.shape[1]:
            self._set_basis(np.concatenate([self.basis, new], axis=1))
        return new.shape[1], rel
