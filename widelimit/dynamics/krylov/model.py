"""Matrix-free test-loss model of the infinite-width L2 dynamics at large N: :class:`KrylovLoss`.

Implements :class:`~widelimit.dynamics.protocol.LossModel` like :class:`~widelimit.dynamics.loss.FlowLoss`
and :class:`~widelimit.dynamics.loss.ExpectedLoss`, but replaces the eigendecomposition of the normalised
NTK ``A = Theta/(N K)`` by block Krylov bases ``Q`` (docs/theory.md §4), each reused for every
``weight_decay``, ``t``, ``L`` and learning rate. With Ritz pairs ``T = Q^T A Q = W diag(theta) W^T`` the
per-mode closed form (:func:`~widelimit.dynamics.modes.mode_response`, flow or GD) is evaluated at the Ritz
values, and with ``G = Theta~_xX Q W`` and ``S_v = W^T Q^T v`` for each start vector ``v``:

    f_x(t) = d f0_x - G diag(g(theta)) S_f0 + G diag(j(theta)) S_y,       d = decay, g = gap/mu, j = J/mu.

Basis 1 starts from ``[y, f0_X]`` (targets and given initial outputs; tolerance ``tol``) and gives the
outputs and the mean-function loss. For the expected loss over ``f0 ~ NNGP`` basis 2 starts from probe
vectors ``u_i = Theta~_Xx z_i`` (tolerance ``variance_tol``): Hutch++ test-space probes ``z_i`` -- the top
``variance_sketch`` directions of ``Theta~_xX Theta~_Xx`` traced exactly plus ``variance_probes``
Rademacher vectors for the rest (or ``Z = I_M``, exact, with ``variance_probes="exact"``).
The test variance averaged over test points is

    mean_x Var f_x = d^2 mean(K_xx) + (1/M) E_z[-2 d w^T g(A) u + (g(A) u)^T K_XX (g(A) u)],   w = K_Xx z,

(the trace of docs/theory.md §2's expression), estimated from the probes with one standard error from
the spread of the random ones (:meth:`KrylovLoss.variance_error`); ``K_XX`` enters only as
``W^T Q^T K_XX Q W`` on basis 2 (one pass over the NNGP kernel). Details: docs/theory.md §4.
"""
from __future__ import annotations

import functools
import warnings
from typing import Optional, Tuple

import numpy as np

from ..modes import check_learning_rate, mode_response
from ..ntk_l2 import _as_float_array, _check_degree, _check_lam
from .lanczos import BlockLanczos, KrylovBasis, blas_threads, lockstep
from .operator import KernelMatrix, as_kernel, available_memory_bytes


def _serial(method):
    """Evaluate on one BLAS thread: the table's algebra is small (r x r at most; threaded BLAS only loses,
    measured 2x on the loaded 2-core machine, benchmarks/RESULTS_krylov.md)."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with blas_threads(1):
            return method(*args, **kwargs)
    return wrapper


def _rows(k: KernelMatrix, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of the (unnormalised) kernel block as float64."""
    return np.asarray(k.matrix[rows], dtype=np.float64)


VARIANCE_METHODS = ("auto", "exact", "hutch++")
EXACT_BLOCKS = 8            # variance="auto": the exact trace's basis is estimated as EXACT_BLOCKS * M vectors
HUTCHPP_VARIANCE_TOL = 1e-5  # basis-2 tolerance under Hutch++ (its ~1e-3 standard error dominates)
_ROUNDING_RTOL = 1e-11      # rounding floor of the stated error (sums over N modes in float64)
EXACT_MAX_DIM = 2560        # ... and used only up to this size (its reorthogonalisation costs N r^2)


class KrylovConvergenceWarning(RuntimeWarning):
    """The Krylov basis reached ``max_dim`` before its error estimate fell below ``tol``."""


def _times(t) -> np.ndarray:
    t = np.atleast_1d(np.asarray(t, dtype=np.float64)).reshape(-1)
    if np.any(np.isnan(t)) or np.any(t < 0):
        raise ValueError("t must be times >= 0 (physical time eta * steps)")
    return t


class KrylovLoss:
    """Test loss (mean function, given ``f0`` or expected over ``f0 ~ NNGP``) from one block Krylov basis.

    Args:
      ntk_train_train: unnormalised NTK (N, N); ndarray or ``np.memmap``, float32 or float64.
      y_train: targets (N,) or (N, K).
      L: homogeneity degree ``>= 1``.
      ntk_test_train: unnormalised NTK (M, N) (needed for any test quantity).
      y_test: test targets (M,) or (M, K).
      f0_train, f0_test: given initial outputs (default 0); not with the NNGP kernels.
      nngp_train_train (N, N), nngp_test_train (M, N), nngp_test_test_diag (M,): NNGP blocks; when given,
        ``test_loss`` is the expected loss over ``f0 ~ NNGP``.
      learning_rate: ``None`` (gradient flow) or ``eta`` (GD at ``round(t/eta)`` steps).
      weight_decay_range, horizon: the stopping rule checks test outputs at ``weight_decay`` in
        ``weight_decay_range`` and ``t`` up to ``horizon / weight_decay``.
      tol: relative tolerance of the a-posteriori error estimate (:class:`KrylovBasis`).
      max_dim: largest basis size (default ``min(N, 3000)``); its memory is checked before starting.
      variance: how the variance trace is computed: ``"exact"`` (probes ``Z = I_M``: every test point, error
        = the Krylov estimate only), ``"hutch++"`` (sketch + Rademacher probes, with a stated standard error)
        or ``"auto"`` (default): exact when its basis is affordable, ``EXACT_BLOCKS * M <= min(N / 4,
        max_dim, EXACT_MAX_DIM)`` (block Krylov from M start vectors needs ~``EXACT_BLOCKS`` blocks), else
        Hutch++. The choice made is :attr:`variance_method`.
      variance_tol: tolerance of basis 2 (default ``tol`` for the exact trace, 1e-5 for Hutch++, whose
        stochastic error dominates).
      variance_sketch: Hutch++ sketch rank (directions traced exactly).
      variance_probes: number of Rademacher probes for the rest, or ``"exact"`` (same as ``variance="exact"``).
      on_failure: ``"warn"`` (:class:`KrylovConvergenceWarning`) or ``"raise"`` when not converged.
      normalization: kernel divisor, default ``N K``.
      threads: BLAS threads for the kernel passes while building (``None``: the BLAS default). The small
        dense algebra of the iteration always runs on one thread (:class:`~.lanczos.blas_threads`). On a
        loaded 2-core machine one thread for the passes too was measured faster (benchmarks/RESULTS_krylov.md).
      progress: ``None`` or ``progress(passes, dims)``, called after every pass over the NTK with the number
        of passes so far and the current basis sizes (the CLI's progress bar); the number of passes is set
        by the stopping rule, not known in advance.
    """

    def __init__(self, ntk_train_train, y_train, L: int, *, ntk_test_train=None, y_test=None,
                 f0_train=None, f0_test=None, nngp_train_train=None, nngp_test_train=None,
                 nngp_test_test_diag=None, learning_rate: Optional[float] = None,
                 weight_decay_range: Tuple[float, float] = (1e-5, 1e-1), horizon: float = 10.0,
                 tol: float = 1e-10, variance_tol: Optional[float] = None, max_dim: Optional[int] = None,
                 variance_sketch: int = 48,
                 variance_probes=16, seed: int = 0, variance: str = "auto",
                 on_failure: str = "warn", normalization: Optional[float] = None,
                 threads: Optional[int] = None, progress=None):
        if not isinstance(ntk_train_train, (np.ndarray, KernelMatrix)):
            ntk_train_train = _as_float_array("ntk_train_train", ntk_train_train, (2,))
        n = ntk_train_train.shape[0]
        y = _as_float_array("y_train", y_train, (1, 2))
        if y.shape[0] != n:
            raise ValueError(f"y_train must have {n} rows (one per training point), got shape {y.shape}")
        self.L = _check_degree(L)
        self.learning_rate = check_learning_rate(learning_rate)
        self._threads = blas_threads(threads)      # validates threads
        if progress is not None and not callable(progress):
            raise TypeError(f"progress must be None or a callable (passes, basis dims), got {type(progress).__name__}")
        if on_failure not in ("warn", "raise"):
            raise ValueError(f"on_failure must be 'warn' or 'raise', got {on_failure!r}")
        lo, hi = (float(v) for v in weight_decay_range)
        if not (0 < lo <= hi < np.inf):
            raise ValueError(f"weight_decay_range must be (lo, hi) with 0 < lo <= hi, got {weight_decay_range}")
        if not (np.isfinite(horizon) and horizon > 0):
            raise ValueError(f"horizon must be finite and > 0, got {horizon}")
        if variance not in VARIANCE_METHODS:
            raise ValueError(f"variance must be one of {VARIANCE_METHODS}, got {variance!r}")
        for name, v in (("tol", tol), ("variance_tol", tol if variance_tol is None else variance_tol)):
            if not (0 < v < 1):
                raise ValueError(f"{name} must be in (0, 1), got {v}")
        norm = float(y.size) if normalization is None else float(normalization)
        a = as_kernel("ntk_train_train", ntk_train_train, norm, (n, n))
        a.check_square()
        self.y_train = y
        y2 = y.reshape(n, -1)
        k_out = y2.shape[1]
        test = None
        if ntk_test_train is not None:
            test = as_kernel("ntk_test_train", ntk_test_train, norm, (None, n))
            if y_test is None:
                raise ValueError("y_test is required with ntk_test_train")
        m = None if test is None else test.shape[0]
        self._yt = None
        if y_test is not None:
            if test is None:
                raise ValueError("y_test was given without ntk_test_train")
            yt = _as_float_array("y_test", y_test, (1, 2))
            if yt.shape != (m,) + y.shape[1:]:
                raise ValueError(f"y_test must have shape {(m,) + y.shape[1:]}, got {yt.shape}")
            self._yt = yt.reshape(m, -1)
        f0 = None if f0_train is None else np.broadcast_to(
            _as_float_array("f0_train", f0_train), y.shape).reshape(n, -1).astype(np.float64)
        self._f0x = None
        if f0_test is not None:
            if test is None:
                raise ValueError("f0_test was given without ntk_test_train")
            self._f0x = np.broadcast_to(_as_float_array("f0_test", f0_test), (m, k_out)).astype(np.float64)
        averaged = any(v is not None for v in (nngp_train_train, nngp_test_train, nngp_test_test_diag))
        if averaged:
            if nngp_train_train is None or nngp_test_train is None or nngp_test_test_diag is None or test is None:
                raise ValueError("the expected loss over f0 ~ NNGP needs ntk_test_train, nngp_train_train, "
                                 "nngp_test_train and nngp_test_test_diag together")
            if f0 is not None or self._f0x is not None:
                raise ValueError("give either f0_train/f0_test or the NNGP kernels (f0 averaged), not both")
            kxx = _as_float_array("nngp_test_test_diag", nngp_test_test_diag, (1,))
            if kxx.shape != (m,) or np.any(kxx < 0):
                raise ValueError(f"nngp_test_test_diag must be {m} variances >= 0, got shape {kxx.shape}")
            nngp = as_kernel("nngp_train_train", nngp_train_train, 1.0, (n, n))
            nngp.check_square()
            nngp_xt = as_kernel("nngp_test_train", nngp_test_train, 1.0, (m, n))
            if isinstance(variance_probes, str) and variance_probes != "exact":
                raise ValueError(f"variance_probes must be an int >= 2 or 'exact', got {variance_probes!r}")
            if variance == "auto" and not isinstance(variance_probes, str):
                cap = min(n // 4, EXACT_MAX_DIM, n if max_dim is None else int(max_dim))
                variance = "exact" if EXACT_BLOCKS * m <= cap else "hutch++"
            if isinstance(variance_probes, str) or variance == "exact":
                z, weights, n_rem = np.eye(m), np.ones(m), 0
                variance = "exact"
                if EXACT_BLOCKS * m > n // 2:
                    warnings.warn(f"variance='exact' with M={m} test points and N={n}: its basis (~{EXACT_BLOCKS} "
                                  f"x M vectors, at most N) is most of R^N, which costs more than the dense path "
                                  "(measured 3.9x slower at N=5000, M=1000); use solver='eigh' or "
                                  "variance='hutch++'", RuntimeWarning, stacklevel=2)
            else:
                if isinstance(variance_probes, bool) or not isinstance(variance_probes, (int, np.integer)) \
                        or variance_probes < 2:
                    raise ValueError(f"variance_probes must be an int >= 2 or 'exact', got {variance_probes!r}")
                if isinstance(variance_sketch, bool) or not isinstance(variance_sketch, (int, np.integer)) \
                        or variance_sketch < 0:
                    raise ValueError(f"variance_sketch must be an int >= 0, got {variance_sketch!r}")
                z, weights, n_rem = self._probes(test, m, int(variance_sketch), int(variance_probes), seed)
            self.variance_exact = variance == "exact"
            if variance_tol is None:
                variance_tol = tol if self.variance_exact else HUTCHPP_VARIANCE_TOL
        self.variance_method = variance if averaged else None
        groups = [("y", y2)] + ([("f0", f0)] if f0 is not None and np.any(f0) else [])
        b = sum(g.shape[1] for _, g in groups) + (z.shape[1] if averaged else 0)
        max_dim = int(min(n, 3000) if max_dim is None else max_dim)
        if max_dim < 1:
            raise ValueError(f"max_dim must be >= 1, got {max_dim}")
        need = 8 * max_dim * (n + (m or 0)) * (2 if averaged else 1) + 16 * n * b
        avail = available_memory_bytes()
        if need > 0.8 * avail:
            raise MemoryError(f"the Krylov basis (max_dim={max_dim}, N={n}) needs {need / 2**30:.2f} GiB but "
                              f"only {avail / 2**30:.2f} GiB are available: lower max_dim")
        self._n, self._ysize, self._m = n, y.size, m
        self.weight_decay_range, self.horizon = (lo, hi), float(horizon)
        self._warned_outside = False
        self._sentinels = (np.geomspace(lo, hi, 4) if hi > lo else np.array([lo]),
                           np.array([0.03, 0.3, 3.0, horizon]))
        self._test_monitor = None if test is None else np.sort(
            np.random.default_rng(seed).choice(m, size=min(m, 256), replace=False))
        # basis 1: targets (and given f0) -> outputs, mean-function and training losses; basis 2 (expected
        # loss): probes u = Theta~_Xx z (w = K_Xx z enters only through Q^T w) -> variance. Both are grown
        # in lockstep: each pass over the kernel multiplies both bases' blocks (one read instead of two).
        start = np.concatenate([g for _, g in groups], axis=1)
        kinds = np.concatenate([np.full(g.shape[1], name == "y") for name, g in groups])
        mon_rows = None if test is None else _rows(test, self._test_monitor) / test.normalization
        runs = [self._iteration(a, test, mon_rows, start, kinds, tol, max_dim, "mean")]
        if averaged:
            u, w_probe = test.rmatmat(z), nngp_xt.rmatmat(z)
            runs.append(self._iteration(a, test, mon_rows, u, np.zeros(u.shape[1], bool), variance_tol, max_dim,
                                        "variance", need_test=False))
        with self._threads:
            bases = lockstep(a.matmat, [it for it, _ in runs], progress=progress)
        self.basis, self._g, proj = runs[0][1](bases[0], on_failure)
        self.eigenvalues = np.maximum(self.basis.ritz_values, 0.0)   # Ritz values (the protocol's modes)
        self._s_y = proj[:, kinds]
        self._s_f = proj[:, ~kinds] if (~kinds).any() else None
        self.averaged = averaged
        if self._g is not None and self._yt is not None:
            gg = self._g.T @ self._g
            self._h_yy = gg * (self._s_y @ self._s_y.T)
            self._r_y = np.einsum("ik,ik->i", self._g.T @ self._yt, self._s_y)
            self._c0 = float(np.sum(self._yt ** 2))
        self.variance_basis = None
        if averaged:
            vb, _, s_u = runs[1][1](bases[1], on_failure)
            self.variance_basis = vb
            self._var_eigenvalues = np.maximum(vb.ritz_values, 0.0)
            q, w = vb.q, vb.ritz_vectors
            s_w = w.T @ (q.T @ w_probe)
            with self._threads:
                kq = w.T @ nngp.sandwich(q) @ w                          # W^T Q^T K_XX Q W
            self._s_u, self._s_w, self._kq = s_u, s_w, kq
            self._weights, self._n_rem = weights, n_rem
            self._h = kq * ((s_u * weights) @ s_u.T) / m
            self._rv = np.einsum("is,is->i", s_w * weights, s_u) / m
            self._kxx = float(np.mean(kxx))
        self.passes = a.passes + (0 if test is None else test.passes)

    def _iteration(self, a: KernelMatrix, test: Optional[KernelMatrix], mon_rows: Optional[np.ndarray],
                   start: np.ndarray, kinds: np.ndarray, tol: float, max_dim: int, what: str,
                   need_test: bool = True):
        """One block Krylov iteration from ``start`` (:class:`~.lanczos.BlockLanczos`, run by
        :func:`~.lanczos.lockstep`) and its ``finish(basis, on_failure) -> (basis, G = Theta~_xX Q W or None,
        W^T Q^T start)``.

        The stopping rule monitors, at the sentinel ``(lam, t)``, the test outputs (on <= 256 monitored test
        points, ``mon_rows``; the training outputs without a test kernel) of every start column: ``J/mu``
        for target columns (``kinds``), ``gap/mu`` for the others. The full ``G`` is one pass over the test
        kernel after convergence, not one per block."""
        mon = self._test_monitor
        use_test = test is not None
        gq = np.empty((mon.size, max_dim)) if use_test else None
        filled = [0]
        lams, s_grid = self._sentinels

        def on_block(block):
            if use_test:
                k = block.shape[1]
                if filled[0] == 0 and need_test:   # one full pass first: a non-finite test kernel raises early
                    val = test.matmat(block)[mon]
                else:
                    val = mon_rows @ block        # (<= 256, N) x (N, b): on the passes' threads
                gq[:, filled[0]:filled[0] + k] = val
            filled[0] += block.shape[1]

        def solution(q, theta, w):
            s_all = w.T @ (q.T @ start)                 # (r, b)
            r = q.shape[1]
            if use_test:
                base = gq[:, :r] @ w
            else:
                base = q @ w
            coef = []
            for lam in lams:
                c = mode_response(theta, s_grid / lam, lam, self.L, self.learning_rate)
                phi = np.where(kinds[None, None, :], c.J_over_mu[:, :, None], c.gap_over_mu[:, :, None])
                coef.append(phi * s_all[None])          # (S, r, b)
            out = base @ np.concatenate(coef)           # (lam * S, P, b)
            groups = [out[..., kinds], out[..., ~kinds]]
            return [g for g in groups if g.size]

        def finish(basis, on_failure):
            if not basis.converged:
                msg = (f"Krylov basis ({what}) not converged: error estimate {basis.error_estimate:.3g} > tol "
                       f"{tol:g} at max_dim={max_dim} ({basis.n_blocks} blocks); results carry that relative "
                       "error")
                if on_failure == "raise":
                    raise RuntimeError(msg)
                warnings.warn(msg, KrylovConvergenceWarning, stacklevel=3)
            w = basis.ritz_vectors
            g = None
            if use_test and need_test:
                with self._threads:
                    g = test.matmat(basis.q) @ w
            return basis, g, w.T @ (basis.q.T @ start)

        it = BlockLanczos(start, solution=solution, tol=tol, max_dim=max_dim, name="ntk_train_train",
                          on_block=on_block)
        return it, finish

    @classmethod
    def from_kernels(cls, kernels, *, learning_rate: Optional[float] = None, f0: str = "nngp",
                     L: Optional[int] = None, **options) -> "KrylovLoss":
        """From a :class:`widelimit.kernels.DataKernels`: ``f0="nngp"`` (expected loss; needs the NNGP
        blocks) or ``"zero"`` (the f0 = 0 function); ``options`` go to the constructor."""
        if f0 not in ("nngp", "zero"):
            raise ValueError(f"f0 must be 'nngp' or 'zero', got {f0!r}")
        kw = dict(ntk_test_train=kernels.ntk_test_train, y_test=kernels.y_test, learning_rate=learning_rate)
        if f0 == "nngp":
            missing = [f for f in ("nngp_train_train", "nngp_test_train", "nngp_test_test")
                       if getattr(kernels, f, None) is None]
            if missing:
                raise ValueError(f"the expected loss over f0 ~ NNGP needs the NNGP kernels; missing {missing}")
            kxx = np.asarray(kernels.nngp_test_test)
            kw.update(nngp_train_train=kernels.nngp_train_train, nngp_test_train=kernels.nngp_test_train,
                      nngp_test_test_diag=np.diag(kxx) if kxx.ndim == 2 else kxx)
        return cls(kernels.ntk_train_train, kernels.y_train, kernels.L if L is None else L, **kw, **options)

    @staticmethod
    def _probes(test: KernelMatrix, m: int, sketch: int, n_probes: int, seed: int):
        """Test-space probes ``Z`` (M, s) and weights ``c`` with ``tr B ~ sum_j c_j z_j^T B z_j`` (Hutch++).

        ``B`` (the variance terms) lies in the range of ``X^T X`` (``X = Theta~_Xx``): its top ``sketch``
        directions ``Q_s`` (randomised range finder on ``X^T X``, two passes over the test kernel) are
        traced exactly (weight 1) and the rest by ``n_probes`` Rademacher vectors projected off ``Q_s``
        (weight ``1/n_probes``). Returns ``(Z, c, n_probes)``; the last ``n_probes`` columns are random."""
        rng = np.random.default_rng(seed)
        cols = []
        if sketch > 0:
            omega = rng.standard_normal((m, min(m, sketch + 8)))
            qs, _ = np.linalg.qr(test.matmat(test.rmatmat(omega)))
            qs = qs[:, :min(sketch, m)]
            cols.append(qs)
        rad = rng.choice([-1.0, 1.0], size=(m, n_probes))
        if sketch > 0:
            rad = rad - qs @ (qs.T @ rad)
        cols.append(rad)
        weights = np.concatenate([np.ones(cols[0].shape[1]) if sketch > 0 else np.zeros(0),
                                  np.full(n_probes, 1.0 / n_probes)])
        return np.concatenate(cols, axis=1), weights, n_probes

    # -- protocol ---------------------------------------------------------------------------------
    @property
    def n_train(self) -> int:
        return self._n

    @property
    def n_test(self) -> Optional[int]:
        return self._m

    @property
    def mu_max(self) -> float:
        return float(self.eigenvalues[-1])

    @property
    def label(self) -> str:
        f0 = "E over f0 ~ NNGP" if self.averaged else ("f0 given" if self._s_f is not None or
                                                       self._f0x is not None else "f0 = 0")
        kind = "flow" if self.learning_rate is None else f"GD at η={self.learning_rate:g}"
        var = f", variance {self.variance_method}" if self.averaged else ""
        return f"{f0}, {kind}, Krylov r={self.basis.dim}{var}"

    def zero_loss(self) -> float:
        """Test MSE of the zero function, ``1/(2 M K) sum y_test^2``."""
        self._need_test()
        return self._c0 / (2 * self._yt.size)

    def _check_region(self, lam: float, t: np.ndarray) -> None:
        """Warn (once per model) when ``(weight_decay, t)`` is less damped than anything the stopping rule
        checked: ``weight_decay`` below ``weight_decay_range[0] = lo`` at ``t > 1/lo`` (where the checked
        ``lo`` already damps by ``exp(-L)``). There the stated error does not apply: at ``weight_decay = 0``
        and long times more of the spectrum is learned than the basis resolved (measured: 2.3e-2 relative
        against neural-tangents at N = 10 000 with the default range, 3.4e-12 with
        ``weight_decay_range=(1e-7, 1e-1)``; benchmarks/RESULTS_scale.md). Larger weight decays and times
        beyond ``horizon / weight_decay`` only damp more (outputs decay like ``exp(-L lam t)``) and pass."""
        lo, hi = self.weight_decay_range
        inside = lam >= lo or t.size == 0 or float(np.max(t)) * lo <= 1.0
        if not inside and not self._warned_outside:
            self._warned_outside = True
            warnings.warn(f"weight_decay={lam:g} with t up to {float(np.max(t)) if t.size else 0:g} is outside "
                          f"the region the Krylov stopping rule checked (weight_decay >= {lo:g}, or t <= "
                          f"1/{lo:g}): its stated error does not cover this query; rebuild with "
                          f"weight_decay_range=({min(lam, lo / 100) if lam > 0 else lo / 100:g}, {hi:g}) or lower",
                          KrylovConvergenceWarning,
                          stacklevel=3)

    def coefficients(self, weight_decay: float, t):
        """Per-mode coefficients at the Ritz values, times ``t`` (1-D): arrays (T, r)."""
        return self._both_coefficients(weight_decay, t)[0]

    def _var_coefficients(self, weight_decay: float, t):
        return self._both_coefficients(weight_decay, t)[1]

    def _both_coefficients(self, weight_decay: float, t):
        """The coefficients of basis 1 and (averaged models) basis 2, from ONE elementwise evaluation on
        their joined Ritz values; the last query is kept (the loss, the variance and their errors ask for
        the same ``(weight_decay, t)`` in turn)."""
        lam, times = _check_lam(weight_decay), _times(t)
        key = (lam, times.tobytes(), self.learning_rate, self.L, self.averaged)
        cached = self.__dict__.get("_coef_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        self._check_region(lam, times)
        r = self.eigenvalues.size
        ev = np.concatenate([self.eigenvalues, self._var_eigenvalues]) if self.averaged else self.eigenvalues
        c = mode_response(ev, times, lam, self.L, self.learning_rate)
        both = (type(c)(*(a[:, :r] for a in c)), type(c)(*(a[:, r:] for a in c)) if self.averaged else None)
        self._coef_cache = (key, both)          # assigned, never mutated: copies of the model keep their own
        return both

    def _need_test(self):
        if self._g is None or self._yt is None:
            raise ValueError("no test points: build the model with ntk_test_train and y_test")

    # -- outputs ----------------------------------------------------------------------------------
    @_serial
    def test_outputs(self, weight_decay: float, t) -> np.ndarray:
        """Test outputs ``f_x(t)`` of the given-f0 (default 0, the mean) function: (T, M, K)."""
        if self._g is None:
            raise ValueError("no test points: build the model with ntk_test_train")
        c = self.coefficients(weight_decay, t)
        coef = c.J_over_mu[:, :, None] * self._s_y[None]
        if self._s_f is not None:
            coef = coef - c.gap_over_mu[:, :, None] * self._s_f[None]
        out = np.einsum("mr,trk->tmk", self._g, coef)
        if self._f0x is not None:
            out += c.decay[:, 0, None, None] * self._f0x[None]
        return out

    @_serial
    def train_outputs(self, weight_decay: float, t) -> np.ndarray:
        """Training outputs ``f_X(t)``: (T, N, K)."""
        c = self.coefficients(weight_decay, t)
        coef = c.J[:, :, None] * self._s_y[None]
        if self._s_f is not None:
            coef = coef + c.P[:, :, None] * self._s_f[None]
        u = self.basis.q @ self.basis.ritz_vectors
        return np.einsum("nr,trk->tnk", u, coef)

    # -- losses -----------------------------------------------------------------------------------
    @_serial
    def loss_of_mean(self, weight_decay: float, t) -> np.ndarray:
        """Test MSE of the f0 = 0 function (or of the given-f0 function) at times ``t`` (1-D)."""
        self._need_test()
        if self._s_f is not None or self._f0x is not None:
            f = self.test_outputs(weight_decay, t)
            return np.sum((f - self._yt[None]) ** 2, axis=(1, 2)) / (2 * self._yt.size)
        jm = self.coefficients(weight_decay, t).J_over_mu
        sq = np.einsum("ti,ti->t", jm @ self._h_yy, jm) - 2 * jm @ self._r_y + self._c0
        return np.maximum(sq, 0.0) / (2 * self._yt.size)

    def _mean_error(self, weight_decay: float, t) -> np.ndarray:
        e = self.basis.error_estimate
        if self._s_f is not None or self._f0x is not None:
            f = self.test_outputs(weight_decay, t)
            f2, sq = np.sum(f ** 2, axis=(1, 2)), np.sum((f - self._yt[None]) ** 2, axis=(1, 2))
        else:
            self._need_test()
            jm = self.coefficients(weight_decay, t).J_over_mu
            f2 = np.maximum(np.einsum("ti,ti->t", jm @ self._h_yy, jm), 0.0)
            sq = np.maximum(f2 - 2 * jm @ self._r_y + self._c0, 0.0)
        return (2 * e * np.sqrt(f2 * sq) + e * e * f2) / (2 * self._yt.size)

    @_serial
    def variance(self, weight_decay: float, t) -> np.ndarray:
        """Probe estimate of ``mean_x Var_{f0} f_x(t)`` (per output) at times ``t`` (1-D)."""
        if not self.averaged:
            raise ValueError("no NNGP kernels: build the model with nngp_* to average over f0")
        c = self._var_coefficients(weight_decay, t)
        gm, d = c.gap_over_mu, c.decay[:, 0]
        quad = np.einsum("ti,ti->t", gm @ self._h, gm)
        return np.maximum(d * d * self._kxx - 2 * d * (gm @ self._rv) + quad, 0.0)

    @_serial
    def variance_error(self, weight_decay: float, t) -> np.ndarray:
        """Stated error of :meth:`variance`: one standard error over the random Hutch++ probes (none for the
        exact trace) plus the Krylov error of basis 2 propagated to the probe terms (``2 e (|cross| + quad)``
        with ``e`` its a-posteriori estimate: they are bilinear / quadratic in ``g(A) u``)."""
        if not self.averaged:
            raise ValueError("no NNGP kernels: build the model with nngp_* to average over f0")
        c = self._var_coefficients(weight_decay, t)
        gm, d = c.gap_over_mu, c.decay[:, 0]
        krylov = 2 * self.variance_basis.error_estimate * (np.abs(2 * d * (gm @ self._rv))
                                                           + np.einsum("ti,ti->t", gm @ self._h, gm))
        if self.variance_exact:
            return krylov
        s_u, s_w = self._s_u[:, -self._n_rem:], self._s_w[:, -self._n_rem:]
        x = gm[:, :, None] * s_u[None]                                    # (T, r, s)
        per = (-2 * d[:, None] * np.einsum("trs,rs->ts", x, s_w)
               + np.einsum("trs,rq,tqs->ts", x, self._kq, x)) / self._m    # (T, s): remainder probes
        return per.std(axis=1, ddof=1) / np.sqrt(per.shape[1]) + krylov

    @_serial
    def test_loss(self, weight_decay: float, t) -> np.ndarray:
        """Test MSE at times ``t`` (1-D): expected over ``f0 ~ NNGP`` when built with the NNGP kernels."""
        out = self.loss_of_mean(weight_decay, t)
        return out + 0.5 * self.variance(weight_decay, t) if self.averaged else out

    @_serial
    def test_loss_error(self, weight_decay: float, t) -> np.ndarray:
        """Stated error of :meth:`test_loss`: ``variance_error / 2`` (Hutch++ standard error, if any, plus
        Krylov error) plus the mean-function basis' estimate ``e`` propagated to its loss: outputs off by
        ``e ||f||`` change ``||f - y||^2`` by at most ``2 e ||f|| ||f - y|| + e^2 ||f||^2``; plus a rounding
        floor of ``_ROUNDING_RTOL`` (1e-11) of each term (float64 sums over N modes, in either path)."""
        mean = self._mean_error(weight_decay, t) + _ROUNDING_RTOL * self.loss_of_mean(weight_decay, t)
        if not self.averaged:
            return mean
        return mean + 0.5 * (self.variance_error(weight_decay, t) + _ROUNDING_RTOL * self.variance(weight_decay, t))

    @_serial
    def test_accuracy(self, weight_decay: float, t) -> np.ndarray:
        """Fraction of test points classified correctly by the mean function (argmax; sign for K = 1)."""
        self._need_test()
        f = self.test_outputs(weight_decay, t)
        if self._yt.shape[1] == 1:
            return np.mean(np.sign(f[..., 0]) == np.sign(self._yt[None, :, 0]), axis=1)
        return np.mean(np.argmax(f, 2) == np.argmax(self._yt, 1)[None], axis=1)

    @_serial
    def train_loss(self, weight_decay: float, t) -> np.ndarray:
        """Training MSE of the mean (or given-f0) function; exact in the basis since ``y`` lies in it.
        The f0-variance part of the expected training loss is not included."""
        c = self.coefficients(weight_decay, t)
        res = (c.J - 1.0)[:, :, None] * self._s_y[None]
        if self._s_f is not None:
            res = res + c.P[:, :, None] * self._s_f[None]
        return np.sum(res ** 2, axis=(1, 2)) / (2 * self._ysize)

    def __call__(self, weight_decay: float, t) -> np.ndarray:
        return self.test_loss(weight_decay, t)

    # -- stochastic error of derived predictions (Hutch++) ------------------------------------------
    @property
    def random_probes(self) -> int:
        """Number of random Hutch++ probes (the jackknife's replicates); 0 for an exact model."""
        return 0 if not self.averaged or self.variance_exact else int(self._n_rem)

    def probe_replicates(self) -> list:
        """Delete-one jackknife replicates of a Hutch++ model: ``p`` models (``p = variance_probes``), the
        i-th the same estimator built without random probe ``i`` (its remaining ``p - 1`` probes weighted
        ``1/(p - 1)``; sketch, bases and mean function shared, nothing recomputed but r x r products).
        Raises ValueError for a model without random probes (exact trace, or no NNGP kernels)."""
        if not self.averaged or self.variance_exact or self._n_rem < 3:
            raise ValueError("probe replicates need a Hutch++ model (variance='hutch++', variance_probes >= 3)")
        p, s_total = self._n_rem, self._s_u.shape[1]
        out = []
        for i in range(p):
            keep = np.r_[np.arange(s_total - p), s_total - p + np.delete(np.arange(p), i)]
            new = object.__new__(type(self))
            new.__dict__.update(self.__dict__)
            w = self._weights[keep].copy()
            w[-(p - 1):] = 1.0 / (p - 1)
            new._s_u, new._s_w, new._weights, new._n_rem = self._s_u[:, keep], self._s_w[:, keep], w, p - 1
            new._h = self._kq * ((new._s_u * w) @ new._s_u.T) / self._m
            new._rv = np.einsum("is,is->i", new._s_w * w, new._s_u) / self._m
            out.append(new)
        return out

    def jackknife_error(self, statistic) -> np.ndarray:
        """Jackknife standard error, over the Hutch++ random probes, of any prediction derived from this
        model: ``statistic(model) -> array`` (e.g. ``lambda m: t_star(m, weight_decays=lams).t_star``).

        ``se = sqrt((p - 1)/p * sum_i (S_i - mean S)^2)`` over the :meth:`probe_replicates` ``S_i``; for a
        statistic linear in the probes (the variance itself) it equals the sample standard error that
        :meth:`variance_error` states. It covers the probe noise only, not the Krylov truncation (whose
        estimate is far smaller under Hutch++, ``HUTCHPP_VARIANCE_TOL``)."""
        vals = np.array([np.asarray(statistic(r), dtype=np.float64) for r in self.probe_replicates()])
        p = vals.shape[0]
        return np.sqrt((p - 1) / p * np.sum((vals - vals.mean(axis=0)) ** 2, axis=0))

    def mean_model(self) -> "KrylovLoss":
        """The f0 = 0 (mean-function) model on the same basis 1: what ``KrylovLoss`` without the NNGP kernels
        builds from the same targets and tolerance (its basis does not depend on basis 2), nothing
        recomputed. The model itself for a model that is not averaged over f0."""
        if not self.averaged:
            return self
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.averaged, new.variance_method, new.variance_basis = False, None, None
        return new

    def with_learning_rate(self, learning_rate: Optional[float]) -> "KrylovLoss":
        """The same basis as gradient flow (``None``) or GD at ``learning_rate`` (nothing recomputed)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.learning_rate = check_learning_rate(learning_rate)
        return new

    def with_degree(self, L: int) -> "KrylovLoss":
        """The same basis with another homogeneity degree (its error estimate was made for ``self.L``)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.L = _check_degree(L)
        return new

    def __repr__(self) -> str:
        return (f"KrylovLoss(N={self._n}, M={self._m}, L={self.L}, r={self.basis.dim}, "
                f"error_estimate={self.basis.error_estimate:.2g}, learning_rate={self.learning_rate})")


__all__ = ["KrylovLoss", "KrylovConvergenceWarning"]
