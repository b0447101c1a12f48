"""Test-loss models of the infinite-width L2 dynamics: :class:`ExpectedLoss` and :class:`FlowLoss`.

Both implement :class:`~widelimit.dynamics.protocol.LossModel` with ONE algebra (docs/theory.md §2.3):
the test outputs after time ``t`` are, per eigenmode of ``Theta~ = V diag(mu) V^T`` (one eigendecomposition,
:class:`~widelimit.dynamics.ntk_l2.L2Flow`), with ``G = Theta~_xX V`` and the coefficients of
:func:`~widelimit.dynamics.modes.mode_response` (flow or GD at ``learning_rate``),

    f_x(t) = d f0_x - G diag(g) V^T f0_X + G diag(j) V^T y,      d = decay, g = gap/mu, j = J/mu,

so the test MSE ``1/(2 M K) sum (f_x - y_x)^2`` is a quadratic form in ``(g, j)`` whose Gram matrices are
computed once; each evaluation costs O(N^2) per time.

* :class:`FlowLoss`: a given ``f0`` (default ``f0 = 0``, the ensemble-mean function);
* :class:`ExpectedLoss`: the MSE averaged over ``f0 ~ NNGP`` (what a seed average of finite networks
  measures): ``E loss = loss(mean f) + (1/2) mean_x Var f_x`` with
  ``mean_x Var = d^2 mean(K_xx) - (2/M) d r.g + (1/M) g^T H g``, ``H = (V^T K_XX V) * (G^T G)``,
  ``r_j = sum_x (K_xX V)_xj G_xj``.

The loss is a sum of squares, so it is ``>= 0``; round-off in the quadratic form can make it slightly
negative, which is clipped to 0 only when it is below ``1e-9`` of the terms' size -- a larger negative
value (cancellation, e.g. divergent GD) raises FloatingPointError instead of being hidden.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .modes import check_learning_rate, gd_mode_coefficients, mode_response, steps_of
from .ntk_l2 import L2Flow, _as_float_array, _check_degree, _check_lam, _check_square_symmetric

_GRAM_BYTES = 2 ** 29          # use the Gram quadratic form while its matrices fit in 512 MiB
_CLIP_RTOL = 1e-9


def _times(t) -> np.ndarray:
    t = np.atleast_1d(np.asarray(t, dtype=np.float64)).reshape(-1)
    if np.any(np.isnan(t)) or np.any(t < 0):
        raise ValueError("t must be times >= 0 (physical time eta * steps)")
    return t


def _quad(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``x_t^T h x_t`` for every row ``x_t`` of ``x`` (T, N)."""
    return np.einsum("ti,ti->t", x @ h, x)


def _clip(sq: np.ndarray, scale: np.ndarray, what: str) -> np.ndarray:
    """``max(sq, 0)`` after checking that negatives are round-off (see the module docstring)."""
    if not np.all(np.isfinite(sq)):
        raise FloatingPointError(f"{what} is not finite (overflow: GD outside its stable range?)")
    if np.any(sq < -_CLIP_RTOL * scale):
        i = int(np.argmin(sq / np.maximum(scale, 1e-300)))
        raise FloatingPointError(f"{what} came out negative ({sq[i]:.3g} vs terms of size {scale[i]:.3g}): "
                                 "cancellation, the model is outside its numerical range")
    return np.maximum(sq, 0.0)


class _QuadraticLoss:
    """Shared algebra of the test-loss models (one decomposition, one set of Gram matrices)."""

    label = ""

    def _setup(self, flow: L2Flow, y_test, learning_rate, force_gram: bool = False) -> None:
        if flow.test_projection is None:
            raise ValueError("the flow has no test points: build it with ntk_test_train")
        m = flow.n_test
        yt = _as_float_array("y_test", y_test, (1, 2))
        want = (m,) + flow.y_train.shape[1:]
        if yt.shape != want:
            raise ValueError(f"y_test must have shape {want} (test points x outputs), got {yt.shape}")
        self.flow, self.y_test = flow, yt
        self.L = flow.L
        self.learning_rate = check_learning_rate(learning_rate)
        self._yt = yt.reshape(m, -1)
        g, ye = flow.test_projection, flow._y_eig
        self._gram = force_gram or flow.n_train ** 2 * 8 * 4 <= _GRAM_BYTES
        if self._gram:
            self._gg = g.T @ g
            self._h_yy = self._gg * (ye @ ye.T)
            self._gyt = g.T @ self._yt
            self._r_y = np.einsum("ik,ik->i", self._gyt, ye)
        self._c0 = float(np.sum(self._yt ** 2))

    # -- protocol -------------------------------------------------------------------------------
    @property
    def n_train(self) -> int:
        return self.flow.n_train

    @property
    def n_test(self) -> int:
        return self.flow.n_test

    @property
    def mu_max(self) -> float:
        return self.flow.mu_max

    def zero_loss(self) -> float:
        """Test MSE of the zero function, ``1/(2 M K) sum y^2`` (where every L >= 2 flow ends)."""
        return self._c0 / (2 * self._yt.size)

    def coefficients(self, weight_decay: float, t):
        """:func:`~widelimit.dynamics.modes.mode_response` of this model at times ``t`` (1-D)."""
        return mode_response(self.flow.eigenvalues, _times(t), _check_lam(weight_decay), self.L,
                             self.learning_rate)

    def test_loss_grid(self, weight_decays, t) -> np.ndarray:
        """:meth:`test_loss` for every weight decay (P,) at times ``t`` (T,): shape (P, T). For GD all
        weight decays share one pass of the recursion (optional extension of the LossModel protocol)."""
        lams = np.asarray(weight_decays, dtype=np.float64).reshape(-1)
        for lam in lams:
            _check_lam(float(lam))
        t = _times(t)
        if self.learning_rate is None or not self._gram:
            return np.stack([self.test_loss(lam, t) for lam in lams]) if lams.size else np.empty((0, t.size))
        c = gd_mode_coefficients(self.flow.eigenvalues, steps_of(t, self.learning_rate), lams, self.L,
                                 self.learning_rate)                     # (T, P, N)
        n = self.n_train
        flat = type(c)(*(x.reshape(-1, n) for x in c))
        return self._loss(flat).reshape(t.size, lams.size).T

    def _mean_sq(self, c):
        """``||G diag(j) V^T y - y_test||^2`` per time and the size of its terms."""
        jm = c.J_over_mu
        a, b = _quad(jm, self._h_yy), 2 * jm @ self._r_y
        return a - b + self._c0, np.abs(a) + np.abs(b) + self._c0

    def loss_of_mean(self, weight_decay: float, t) -> np.ndarray:
        """Test MSE of the f0 = 0 (ensemble-mean) function at times ``t`` (1-D)."""
        sq, scale = self._mean_sq(self.coefficients(weight_decay, t))
        return _clip(sq, scale, "test MSE of the mean function") / (2 * self._yt.size)

    def _train_sq(self, c, f0_eig: Optional[np.ndarray]) -> np.ndarray:
        """``||f_X(t) - y||^2`` from the modes: ``f - y = V (P a0 + (J - 1) V^T y)``."""
        r = (c.J - 1.0)[:, :, None] * self.flow._y_eig[None]
        if f0_eig is not None:
            r = r + c.P[:, :, None] * f0_eig[None]
        return np.sum(r ** 2, axis=(1, 2))

    def _derived(self, **changes):
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    def with_learning_rate(self, learning_rate: Optional[float]):
        """The same model as gradient flow (``None``) or GD at ``learning_rate`` (nothing recomputed)."""
        return self._derived(learning_rate=check_learning_rate(learning_rate))

    def with_degree(self, L: int):
        """The same kernels with another homogeneity degree (e.g. the ``L = 1`` comparison)."""
        return self._derived(L=_check_degree(L))

    def _kind(self) -> str:
        return "flow" if self.learning_rate is None else f"GD at η={self.learning_rate:g}"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(N={self.n_train}, M={self.n_test}, L={self.L}, "
                f"learning_rate={self.learning_rate})")


class FlowLoss(_QuadraticLoss):
    """Test MSE of the infinite-width network started from a *given* initial function (default f0 = 0).

    Args:
      flow: an :class:`L2Flow` with test points (its ``f0_train``/``f0_test`` are the initial outputs; its
        ``weight_decay`` is ignored: every method takes one).
      y_test: test targets (M,) or (M, K).
      learning_rate: ``"flow"`` (default: the flow's own ``learning_rate``), ``None`` or ``eta``.
    """

    def __init__(self, flow: L2Flow, y_test, *, learning_rate="flow"):
        if not isinstance(flow, L2Flow):
            raise TypeError(f"flow must be an L2Flow, got {type(flow).__name__}")
        lr = flow.learning_rate if (isinstance(learning_rate, str) and learning_rate == "flow") else learning_rate
        self._setup(flow, y_test, lr)
        f0e, f0x = flow._f0_eig, flow._f0_test
        if self._gram:
            g, ye = flow.test_projection, flow._y_eig
            if f0e is not None:
                self._h_ff = self._gg * (f0e @ f0e.T)
                self._h_yf = self._gg * (ye @ f0e.T)
                self._r_f = np.einsum("ik,ik->i", self._gyt, f0e)
            if f0x is not None:
                gfx = g.T @ f0x
                self._x_y = np.einsum("ik,ik->i", gfx, ye)
                self._x_f = None if f0e is None else np.einsum("ik,ik->i", gfx, f0e)
                self._fx2 = float(np.sum(f0x ** 2))
                self._fxyt = float(np.sum(f0x * self._yt))

    @classmethod
    def from_kernels(cls, kernels, *, f0_train=None, f0_test=None, learning_rate: Optional[float] = None,
                     L: Optional[int] = None) -> "FlowLoss":
        """From a :class:`widelimit.kernels.DataKernels` (NNGP blocks unused); f0 = 0 unless given."""
        flow = L2Flow(kernels.ntk_train_train, kernels.y_train, 0.0, kernels.L if L is None else L,
                      ntk_test_train=kernels.ntk_test_train, f0_train=f0_train, f0_test=f0_test)
        return cls(flow, kernels.y_test, learning_rate=learning_rate)

    @property
    def label(self) -> str:
        f0 = "f0 given" if (self.flow._f0_eig is not None or self.flow._f0_test is not None) else "f0 = 0"
        return f"{f0}, {self._kind()}"

    def test_loss(self, weight_decay: float, t) -> np.ndarray:
        """Test MSE ``1/(2 M K) sum (f_x(t) - y_test)^2`` at times ``t`` (1-D), shape (T,)."""
        if not self._gram:
            return np.array([np.sum((f - self._yt.reshape(f.shape)) ** 2)
                             for f in self._outputs(weight_decay, _times(t))]) / (2 * self._yt.size)
        return self._loss(self.coefficients(weight_decay, t))

    def _loss(self, c) -> np.ndarray:
        fl = self.flow
        sq, scale = self._mean_sq(c)
        jm, gm, d = c.J_over_mu, c.gap_over_mu, c.decay[:, 0]
        if fl._f0_eig is not None:       # the initial outputs on the training points
            terms = (_quad(gm, self._h_ff), -2 * np.einsum("ti,ti->t", jm @ self._h_yf, gm), 2 * gm @ self._r_f)
            sq, scale = sq + sum(terms), scale + sum(np.abs(x) for x in terms)
        if fl._f0_test is not None:      # ... and on the test points
            terms = [d * d * self._fx2, 2 * d * (jm @ self._x_y), -2 * d * self._fxyt]
            if fl._f0_eig is not None:
                terms.append(-2 * d * (gm @ self._x_f))
            sq, scale = sq + sum(terms), scale + sum(np.abs(x) for x in terms)
        return _clip(sq, scale, "test MSE") / (2 * self._yt.size)

    def _flow_at(self, weight_decay: float) -> L2Flow:
        return self.flow.with_weight_decay(weight_decay, self.L, learning_rate=self.learning_rate)

    def _outputs(self, weight_decay: float, t: np.ndarray, block: int = 64):
        fl = self._flow_at(weight_decay)
        for i in range(0, t.size, block):
            yield from fl.test(t[i:i + block])

    def test_accuracy(self, weight_decay: float, t) -> np.ndarray:
        """Fraction of test points classified correctly at times ``t`` (argmax for K >= 2, sign for K = 1)."""
        yt = self._yt
        out = []
        for f in self._outputs(weight_decay, _times(t)):
            f = f.reshape(yt.shape)
            if yt.shape[1] == 1:
                out.append(np.mean(np.sign(f[:, 0]) == np.sign(yt[:, 0])))
            else:
                out.append(np.mean(np.argmax(f, 1) == np.argmax(yt, 1)))
        return np.array(out)

    def train_loss(self, weight_decay: float, t) -> np.ndarray:
        """Training MSE ``1/(2 N K) sum (f_X(t) - y)^2`` (without the L2 term) at times ``t`` (1-D)."""
        sq = self._train_sq(self.coefficients(weight_decay, t), self.flow._f0_eig)
        return sq / (2 * self.flow.y_train.size)


class ExpectedLoss(_QuadraticLoss):
    """Test MSE averaged over the random initial function ``f0 ~ NNGP`` (the default prediction model).

    Args:
      ntk_train_train (N, N), ntk_test_train (M, N): unnormalised NTK blocks.
      nngp_train_train (N, N), nngp_test_train (M, N): NNGP blocks (prior covariance of f0).
      nngp_test_test: (M, M) or its diagonal (M,) -- only the diagonal is used.
      y_train (N,) / (N, K), y_test (M,) / (M, K): targets.
      L: homogeneity degree ``>= 1``.
      learning_rate: ``None`` (gradient flow) or ``eta`` (full-batch GD at ``round(t / eta)`` steps).
      normalization: kernel divisor, default ``N K`` (as :class:`L2Flow`).
    """

    def __init__(self, ntk_train_train, ntk_test_train, nngp_train_train, nngp_test_train, nngp_test_test,
                 y_train, y_test, L: int, *, learning_rate: Optional[float] = None,
                 normalization: Optional[float] = None):
        flow = L2Flow(ntk_train_train, y_train, 0.0, L, ntk_test_train=ntk_test_train,
                      normalization=normalization)
        self._init(flow, nngp_train_train, nngp_test_train, nngp_test_test, y_test, learning_rate)

    def _init(self, flow, nngp_tt, nngp_xt, nngp_xx, y_test, learning_rate) -> None:
        self._setup(flow, y_test, learning_rate, force_gram=True)
        n, m = flow.n_train, flow.n_test
        k = _check_square_symmetric("nngp_train_train", nngp_tt)
        if k.shape != (n, n):
            raise ValueError(f"nngp_train_train must have shape ({n}, {n}), got {k.shape}")
        kxt = _as_float_array("nngp_test_train", nngp_xt, (2,))
        if kxt.shape != (m, n):
            raise ValueError(f"nngp_test_train must have shape ({m}, {n}), got {kxt.shape}")
        kxx = _as_float_array("nngp_test_test", nngp_xx, (1, 2))
        diag = np.diag(kxx) if kxx.ndim == 2 else kxx
        if kxx.shape not in ((m, m), (m,)):
            raise ValueError(f"nngp_test_test must have shape ({m}, {m}) or ({m},), got {kxx.shape}")
        if np.any(diag < 0):
            raise ValueError("nngp_test_test has a negative diagonal entry (variances must be >= 0)")
        v, g = flow.eigenvectors, flow.test_projection
        c_eig = v.T @ k @ v                                    # V^T K_XX V
        self._c_diag = np.diag(c_eig).copy()
        if np.any(self._c_diag < -1e-5 * np.abs(c_eig).max()):
            raise ValueError("nngp_train_train is not positive semi-definite")
        self._h = c_eig * (g.T @ g) / m
        self._r = np.einsum("ij,ij->j", kxt @ v, g) / m
        self._kxx = float(np.mean(diag))

    @classmethod
    def from_kernels(cls, kernels, *, learning_rate: Optional[float] = None,
                     L: Optional[int] = None) -> "ExpectedLoss":
        """From a :class:`widelimit.kernels.DataKernels` (which must hold the NNGP blocks)."""
        missing = [f for f in ("nngp_train_train", "nngp_test_train", "nngp_test_test")
                   if getattr(kernels, f, None) is None]
        if missing:
            raise ValueError(f"the expected loss over f0 ~ NNGP needs the NNGP kernels; missing {missing} "
                             "(use FlowLoss.from_kernels for the f0 = 0 model)")
        return cls(kernels.ntk_train_train, kernels.ntk_test_train, kernels.nngp_train_train,
                   kernels.nngp_test_train, kernels.nngp_test_test, kernels.y_train, kernels.y_test,
                   kernels.L if L is None else L, learning_rate=learning_rate)

    @classmethod
    def from_ensemble(cls, ensemble, y_test) -> "ExpectedLoss":
        """From an :class:`~widelimit.dynamics.ensemble.L2FlowEnsemble` with test NNGP kernels (its
        decomposition is reused; its ``weight_decay`` is ignored)."""
        if ensemble.nngp_test_train is None:
            raise ValueError("the ensemble has no test NNGP kernels: build it with ntk_test_train, "
                             "nngp_test_train and nngp_test_test")
        new = object.__new__(cls)
        new._init(ensemble.flow, ensemble.nngp_train_train, ensemble.nngp_test_train,
                  ensemble.nngp_test_test, y_test, ensemble.learning_rate)
        return new

    @property
    def label(self) -> str:
        return f"E over f0 ~ NNGP, {self._kind()}"

    def mean_model(self) -> "FlowLoss":
        """The f0 = 0 (mean-function) :class:`FlowLoss` on the same eigendecomposition (nothing
        re-decomposed): ``FlowLoss.from_kernels`` of the same kernels."""
        return FlowLoss(self.flow, self.y_test, learning_rate=self.learning_rate)

    def variance(self, weight_decay: float, t) -> np.ndarray:
        """Mean over test points of ``Var_{f0} f_x(t)`` (per output) at times ``t`` (1-D)."""
        c = self.coefficients(weight_decay, t)
        return self._variance(c)

    def _variance(self, c) -> np.ndarray:
        gm, d = c.gap_over_mu, c.decay[:, 0]
        a, b, q = d * d * self._kxx, 2 * d * (gm @ self._r), _quad(gm, self._h)
        return _clip(a - b + q, np.abs(a) + np.abs(b) + np.abs(q), "test variance over f0")

    def test_loss(self, weight_decay: float, t) -> np.ndarray:
        """Expected test MSE ``E_{f0} 1/(2 M K) sum (f_x(t) - y)^2`` at times ``t`` (1-D), shape (T,)."""
        return self._loss(self.coefficients(weight_decay, t))

    def _loss(self, c) -> np.ndarray:
        sq, scale = self._mean_sq(c)
        return _clip(sq, scale, "test MSE of the mean function") / (2 * self._yt.size) + 0.5 * self._variance(c)

    def __call__(self, weight_decay: float, t) -> np.ndarray:
        return self.test_loss(weight_decay, t)

    def train_loss(self, weight_decay: float, t) -> np.ndarray:
        """Expected training MSE: mean function's plus ``(1/2N) sum_i P_i^2 (V^T K_XX V)_ii``."""
        c = self.coefficients(weight_decay, t)
        y = self.flow.y_train
        mean = self._train_sq(c, None) / (2 * y.size)
        return mean + 0.5 * (c.P ** 2 @ self._c_diag) / self.n_train


__all__ = ["ExpectedLoss", "FlowLoss"]
