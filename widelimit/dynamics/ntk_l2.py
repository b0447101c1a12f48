"""Closed-form NTK-regime gradient flow with L2 for MSE: :class:`L2Flow`.

Conventions (as in ``neural_tangents.predict``; docs/theory.md §1-2):

* penalty ``(lam/2) ||theta||^2``; gradient descent ``theta <- theta - eta (grad loss + lam theta)``;
  physical time ``t = eta * steps``; the flow is the ``eta -> 0`` limit at fixed ``t``;
* NTK ``Theta(x, x') = sum_p df(x)/dtheta_p df(x')/dtheta_p`` (unnormalised), the same for every output;
* MSE ``loss = 1/(2 N K) sum (f - y)^2`` over N training points and K outputs, so the function-space
  kernel is ``Theta / (N K)``. :class:`L2Flow` takes the *unnormalised* kernel and divides it by
  ``normalization`` (default ``N K``) -- the one place where widelimit normalises a kernel. Pass
  ``normalization=1.0`` to give a kernel that is already normalised.

For an L-homogeneous network (``f(c theta) = c^L f(theta)``) at infinite width the outputs obey

    df_X/dt = -exp(-kappa t) Theta~ (f_X - y) - beta f_X,          kappa = 2 (L-1) lam, beta = L lam,
    df_x/dt = -exp(-kappa t) Theta~_{xX} (f_X - y) - beta f_x,     Theta~ = Theta_0 / (N K),

solved per eigenmode of ``Theta~`` (see :mod:`widelimit.dynamics.special`) and, at test points, by

    f_x(t) = e^{-beta t} f_x(0) + Theta~_{xX} V diag(1/mu) (f_eig(t) - e^{-beta t} f_eig(0)),

where the division by ``mu`` is done analytically (finite as ``mu -> 0``).

Differences from ``nt.predict.gradient_descent_mse`` (which ``lam = 0`` reproduces to ~1e-13):
``t`` is physical time (NT's ``learning_rate * t``); kernels are per output (NT's default
``trace_axes=(-1,)``), no ``(N, K, N, K)`` kernels; no ``diag_reg`` (ridge is ``L = 1, lam > 0``);
``t = inf`` is evaluated in the eigenbasis, and at ``lam = 0`` modes with ``mu = 0`` are treated as
unlearnable (pseudo-inverse) instead of dividing by zero; both train and test outputs are returned;
everything runs in NumPy/SciPy float64 without JAX.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import scipy.linalg

from .modes import check_learning_rate, mode_response
from .special import ModeCoefficients, rates

_SYMMETRY_RTOL = 1e-5   # |K - K^T| <= rtol * max|K|: tolerates float32 kernels
_PSD_RTOL = 1e-5        # min eigenvalue >= -rtol * max eigenvalue: "clearly non-PSD" otherwise


def _as_float_array(name: str, value, ndim: Optional[tuple] = None) -> np.ndarray:
    """``value`` as a finite float64 array with ``ndim`` in ``ndim`` (any if None)."""
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a real numeric array, got {type(value).__name__}") from e
    if ndim is not None and arr.ndim not in ndim:
        raise ValueError(f"{name} must have {' or '.join(str(d) for d in ndim)} dimensions, "
                         f"got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _check_square_symmetric(name: str, value) -> np.ndarray:
    """A finite, square, (nearly) symmetric float64 matrix (not copied when already float64).

    Symmetry is checked block by block (no N x N temporary); the solvers read only the lower triangle.
    """
    k = _as_float_array(name, value, (2,))
    if k.shape[0] != k.shape[1] or k.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square (N, N) matrix, got shape {k.shape}")
    scale = max(float(k.max()), -float(k.min()))
    asym = 0.0
    for i in range(0, k.shape[0], 1024):
        asym = max(asym, float(np.max(np.abs(k[i:i + 1024] - k[:, i:i + 1024].T))))
    if asym > _SYMMETRY_RTOL * scale:
        raise ValueError(f"{name} is not symmetric: max|K - K^T| = {asym:.3g} vs max|K| = {scale:.3g}")
    if np.any(np.diag(k) < -_SYMMETRY_RTOL * scale):
        raise ValueError(f"{name} is not positive semi-definite: it has a negative diagonal entry")
    return k


def _check_psd_eigenvalues(name: str, evals: np.ndarray) -> None:
    """Raise if the eigenvalues of a kernel show it is clearly not positive semi-definite."""
    top = float(np.max(np.abs(evals))) if evals.size else 0.0
    low = float(np.min(evals)) if evals.size else 0.0
    if low < -_PSD_RTOL * top:
        raise ValueError(f"{name} is not positive semi-definite: smallest eigenvalue {low:.3g} "
                         f"vs largest {top:.3g}")


def _check_targets(name: str, value, n: int) -> np.ndarray:
    """Targets of shape (N,) or (N, K) matching ``n`` rows."""
    y = _as_float_array(name, value, (1, 2))
    if y.shape[0] != n:
        raise ValueError(f"{name} must have {n} rows (one per training point), got shape {y.shape}")
    return y


def _check_lam(weight_decay) -> float:
    """The ``weight_decay`` argument (L2 coefficient lambda): a finite real >= 0."""
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, numbers.Real):
        raise TypeError(f"weight_decay must be a real number, got {type(weight_decay).__name__} "
                        f"({weight_decay!r})")
    lam = float(weight_decay)
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"weight_decay must be finite and >= 0, got {lam}")
    return lam


def _check_degree(L) -> int:
    """Homogeneity degree: an int >= 1."""
    if isinstance(L, bool) or not isinstance(L, numbers.Integral):
        raise TypeError(f"L must be an int (homogeneity degree), got {type(L).__name__} ({L!r})")
    if L < 1:
        raise ValueError(f"L must be >= 1, got {L}")
    return int(L)


def _check_times(t) -> np.ndarray:
    """Times ``t >= 0`` (``np.inf`` allowed), as a float64 array of any shape."""
    try:
        arr = np.asarray(t, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"t must be a number or an array of numbers, got {type(t).__name__}") from e
    if np.any(np.isnan(arr)):
        raise ValueError("t contains NaN")
    if np.any(arr < 0):
        raise ValueError(f"t must be >= 0 (physical time eta * steps), got min {arr.min()}")
    return arr


def _check_normalization(normalization, default: float) -> float:
    """Divisor of the kernel: ``None`` -> ``default`` (N K); else a finite number > 0."""
    if normalization is None:
        return float(default)
    if isinstance(normalization, bool) or not isinstance(normalization, numbers.Real):
        raise TypeError(f"normalization must be None or a positive number, got {normalization!r}")
    if not np.isfinite(normalization) or normalization <= 0:
        raise ValueError(f"normalization must be finite and > 0, got {normalization}")
    return float(normalization)


def _check_initial(name: str, value, shape: tuple) -> np.ndarray:
    """Initial outputs broadcastable to ``shape`` (None -> zeros)."""
    if value is None:
        return np.zeros(shape)
    f0 = _as_float_array(name, value)
    try:
        return np.broadcast_to(f0, shape).astype(np.float64, copy=True)
    except ValueError:
        raise ValueError(f"{name} must have shape {shape} (or broadcast to it), got {f0.shape}") from None


@dataclass(frozen=True)
class FlowOutputs:
    """Outputs on the training points and (if a test kernel was given) the test points.

    Fields:
      train: outputs at the training points, shape ``t.shape + y_train.shape``.
      test: outputs at the test points, shape ``t.shape + (M,) + y_train.shape[1:]``, or None.

    Unpacks as ``f_train, f_test = outputs``.
    """

    train: np.ndarray
    test: Optional[np.ndarray]

    def __iter__(self):
        return iter((self.train, self.test))


def _kernels_from_fn(kernel_fn: Callable, x1, x2, get: tuple = ("ntk", "nngp")) -> tuple:
    """Call a neural-tangents-style ``kernel_fn(x1, x2, get)`` in float64; return float64 arrays."""
    if not callable(kernel_fn):
        raise TypeError(f"kernel_fn must be callable as kernel_fn(x1, x2, get), got {type(kernel_fn).__name__}")
    from widelimit._x64 import x64
    with x64():
        out = kernel_fn(np.asarray(x1, dtype=np.float64),
                        None if x2 is None else np.asarray(x2, dtype=np.float64), get)
    if isinstance(get, str):
        return (np.asarray(out, dtype=np.float64),)
    if all(hasattr(out, g) for g in get):
        return tuple(np.asarray(getattr(out, g), dtype=np.float64) for g in get)
    return tuple(np.asarray(o, dtype=np.float64) for o in out)


def _homogeneity_degree(spec) -> int:
    L = getattr(spec, "homogeneity_degree", None)
    if L is None:
        raise ValueError(f"spec must be homogeneous in its parameters (no bias, no normalisation, "
                         f"ReLU-like or identity activation) for the L2 flow; got {spec!r}")
    return int(L)


def _flatten_times(t) -> tuple[np.ndarray, tuple]:
    arr = _check_times(t)
    return arr.reshape(-1), arr.shape


class L2Flow:
    """Infinite-width MSE training with L2 of an L-homogeneous network, solved per eigenmode.

    Build once (one eigendecomposition of the train-train kernel), then evaluate at any times::

        sol = L2Flow(ntk_train_train, y_train, weight_decay=1e-2, L=3, ntk_test_train=ntk_test_train)
        f_train, f_test = sol(np.array([0.0, 10.0, np.inf]))   # shapes (3, N, K), (3, M, K)

    Args:
      ntk_train_train: unnormalised NTK ``Theta_0`` on the training points, (N, N).
      y_train: targets, (N,) or (N, K).
      weight_decay: L2 coefficient ``lam >= 0`` (penalty ``(lam/2)||theta||^2``; units 1/time).
      L: homogeneity degree of the network in its parameters (number of weight layers), ``>= 1``.
        ``L = 1`` is the linear model (ridge flow); ``lam = 0`` is the plain NTK flow of
        ``nt.predict.gradient_descent_mse``.
      ntk_test_train: unnormalised NTK between test and training points, (M, N).
      f0_train, f0_test: outputs at ``t = 0`` (default 0), shapes like ``y_train`` (test: M rows).
      normalization: divisor turning ``Theta`` into the function-space kernel; default ``N K``
        (MSE ``1/(2 N K) sum (f - y)^2``); ``1.0`` if the kernel is already normalised.
      learning_rate: ``None`` (default): gradient flow, ``t`` any time ``>= 0``. A number ``eta``:
        full-batch GD at that learning rate, evaluated at ``round(t / eta)`` steps
        (:func:`~widelimit.dynamics.modes.gd_mode_coefficients`; docs/theory.md §2.4).

    Memory: O(N^2 + N M) for the decomposition plus O(T (N + M) K) per evaluation.
    """

    def __init__(self, ntk_train_train, y_train, weight_decay: float, L: int, *, ntk_test_train=None,
                 f0_train=None, f0_test=None, normalization: Optional[float] = None,
                 learning_rate: Optional[float] = None):
        k = _check_square_symmetric("ntk_train_train", ntk_train_train)
        n = k.shape[0]
        y = _check_targets("y_train", y_train, n)
        self.weight_decay = _check_lam(weight_decay)
        self.L = _check_degree(L)
        self.learning_rate = check_learning_rate(learning_rate)
        kt = None
        if ntk_test_train is not None:
            kt = _as_float_array("ntk_test_train", ntk_test_train, (2,))
            if kt.shape[1] != n:
                raise ValueError(f"ntk_test_train must have shape (M, {n}) to match ntk_train_train, "
                                 f"got {kt.shape}")
        elif f0_test is not None:
            raise ValueError("f0_test was given without ntk_test_train: test outputs need the test kernel")
        self.f0_train = _check_initial("f0_train", f0_train, y.shape)
        self.f0_test = None if kt is None else _check_initial(
            "f0_test", f0_test, (kt.shape[0],) + y.shape[1:])
        self.normalization = _check_normalization(normalization, y.size)
        self.ntk_train_train, self.ntk_test_train, self.y_train = k, kt, y

        mu, v = scipy.linalg.eigh(k, lower=True, check_finite=False)
        mu /= self.normalization
        _check_psd_eigenvalues("ntk_train_train", mu)
        self._set_decomposition(np.maximum(mu, 0.0), v,
                                None if kt is None else (kt @ v) / self.normalization)

    def _set_decomposition(self, mu: np.ndarray, v: np.ndarray, test_proj: Optional[np.ndarray]) -> None:
        self.eigenvalues = mu
        self.eigenvectors = v
        self.test_projection = test_proj
        y2 = self.y_train.reshape(self.n_train, -1)
        self._y_eig = v.T @ y2
        f0 = self.f0_train.reshape(self.n_train, -1)
        self._f0_eig = v.T @ f0 if np.any(f0) else None
        self._f0_test = None
        if self.f0_test is not None and np.any(self.f0_test):
            self._f0_test = self.f0_test.reshape(self.f0_test.shape[0], -1)

    # ---------------------------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec, x_train, y_train, weight_decay: float, *, x_test=None, f0_train=None,
                  f0_test=None, learning_rate: Optional[float] = None) -> "L2Flow":
        """Build from a :mod:`widelimit.arch` spec and inputs using its analytic infinite-width NTK.

        ``L`` is ``spec.homogeneity_degree`` (the spec must be homogeneous).
        """
        L = _homogeneity_degree(spec)
        from widelimit.kernels import analytic_kernels
        ktt = analytic_kernels(spec, x_train).ntk
        kxt = None if x_test is None else analytic_kernels(spec, x_test, x_train).ntk
        return cls(ktt, y_train, weight_decay, L, ntk_test_train=kxt, f0_train=f0_train, f0_test=f0_test,
                   learning_rate=learning_rate)

    @classmethod
    def from_kernel_fn(cls, kernel_fn: Callable, x_train, y_train, weight_decay: float, L: int, *,
                       x_test=None, f0_train=None, f0_test=None,
                       learning_rate: Optional[float] = None) -> "L2Flow":
        """Build from a neural-tangents ``kernel_fn(x1, x2, get)`` (evaluated in float64)."""
        L = _check_degree(L)
        (ktt,) = _kernels_from_fn(kernel_fn, x_train, None, "ntk")
        kxt = None if x_test is None else _kernels_from_fn(kernel_fn, x_test, x_train, "ntk")[0]
        return cls(ktt, y_train, weight_decay, L, ntk_test_train=kxt, f0_train=f0_train, f0_test=f0_test,
                   learning_rate=learning_rate)

    def with_weight_decay(self, weight_decay: float, L: Optional[int] = None, *,
                          learning_rate="same") -> "L2Flow":
        """The same problem with another ``weight_decay`` (and optionally ``L`` / ``learning_rate``),
        reusing the eigendecomposition."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.weight_decay = _check_lam(weight_decay)
        new.L = self.L if L is None else _check_degree(L)
        if not (isinstance(learning_rate, str) and learning_rate == "same"):
            new.learning_rate = check_learning_rate(learning_rate)
        return new

    @property
    def mu_max(self) -> float:
        """Top eigenvalue of the normalised NTK ``Theta~`` (1/time); GD is stable for ``eta mu_max < 2``."""
        return float(self.eigenvalues[-1]) if self.eigenvalues.size else 0.0

    # ---------------------------------------------------------------------------------------------
    @property
    def n_train(self) -> int:
        return self.ntk_train_train.shape[0]

    @property
    def n_test(self) -> Optional[int]:
        return None if self.ntk_test_train is None else self.ntk_test_train.shape[0]

    @property
    def kappa(self) -> float:
        """Kernel decay rate ``2 (L-1) lam`` (1/time)."""
        return rates(self.weight_decay, self.L)[0]

    @property
    def beta(self) -> float:
        """Output decay rate ``L lam`` (1/time)."""
        return rates(self.weight_decay, self.L)[1]

    def _modes(self, tf: np.ndarray) -> ModeCoefficients:
        return mode_response(self.eigenvalues, tf, self.weight_decay, self.L, self.learning_rate)

    def coefficients(self, t) -> ModeCoefficients:
        """Per-mode coefficients at times ``t``: arrays of shape ``t.shape + (N,)``."""
        tf, shape = _flatten_times(t)
        c = self._modes(tf)
        return ModeCoefficients(*(x.reshape(shape + (self.n_train,)) for x in c))

    def train(self, t) -> np.ndarray:
        """Outputs on the training points at times ``t``: shape ``t.shape + y_train.shape``."""
        tf, shape = _flatten_times(t)
        c = self._modes(tf)
        eig = c.J[:, :, None] * self._y_eig[None]
        if self._f0_eig is not None:
            eig += c.P[:, :, None] * self._f0_eig[None]
        return self._to_points(self.eigenvectors, eig, shape, self.y_train.shape)

    def test(self, t) -> np.ndarray:
        """Outputs on the test points at times ``t``: shape ``t.shape + (M,) + y_train.shape[1:]``."""
        if self.test_projection is None:
            raise ValueError("no test points: build the flow with ntk_test_train to get test outputs")
        tf, shape = _flatten_times(t)
        c = self._modes(tf)
        eig = c.J_over_mu[:, :, None] * self._y_eig[None]
        if self._f0_eig is not None:
            eig -= c.gap_over_mu[:, :, None] * self._f0_eig[None]
        out_shape = (self.n_test,) + self.y_train.shape[1:]
        out = self._to_points(self.test_projection, eig, shape, out_shape)
        if self._f0_test is not None:
            out += c.decay[:, 0].reshape(shape + (1,) * len(out_shape)) * self.f0_test
        return out

    def __call__(self, t) -> FlowOutputs:
        """``FlowOutputs(train, test)`` at times ``t`` (``test`` is None without a test kernel)."""
        return FlowOutputs(self.train(t), None if self.test_projection is None else self.test(t))

    @staticmethod
    def _to_points(basis: np.ndarray, eig: np.ndarray, t_shape: tuple, out_shape: tuple) -> np.ndarray:
        """``basis @ eig[t]`` for every time, as one matrix product: (T, N, K) -> t_shape + out_shape."""
        T, n, k = eig.shape
        flat = basis @ np.moveaxis(eig, 0, 1).reshape(n, T * k)      # (P, T*K)
        return np.moveaxis(flat.reshape(basis.shape[0], T, k), 1, 0).reshape(t_shape + out_shape)

    def __repr__(self) -> str:
        return (f"L2Flow(N={self.n_train}, M={self.n_test}, K={self._y_eig.shape[1]}, "
                f"weight_decay={self.weight_decay}, L={self.L}, learning_rate={self.learning_rate}, "
                f"normalization={self.normalization})")


__all__ = ["L2Flow", "FlowOutputs"]
