"""Numerical integration of the infinite-width function-space flow with L2, for any loss.

For an L-homogeneous network at infinite width (NTK parameterisation), gradient flow on
``loss(f_X) + (lam/2)||theta||^2`` moves the outputs as

    df_X/dt = -exp(-kappa t) Theta_0(X, X) grad_f loss(f_X) - beta f_X,
    df_x/dt = -exp(-kappa t) Theta_0(x, X) grad_f loss(f_X) - beta f_x,
    kappa = 2 (L - 1) lam,   beta = L lam,

with the *unnormalised* NTK ``Theta_0`` and physical time ``t = eta * steps``. Losses:

* ``"mse"``: ``loss = 1/(2 N K) sum (f - y)^2``, ``grad = (f - y) / (N K)`` (closed form:
  :class:`~widelimit.dynamics.ntk_l2.L2Flow`);
* ``"xent"``: softmax cross-entropy ``loss = -(1/N) sum_i sum_k y_ik log softmax(f_i)_k`` with one-hot
  (or probability) targets ``y`` of shape (N, K), ``grad = (softmax(f) - y) / N``;
* a callable ``grad(f_train, y_train) -> grad_f loss`` (NumPy arrays of shape (N, K)).

Integrated with :func:`scipy.integrate.solve_ivp`; for MSE the (linear) Jacobian is supplied to the
implicit methods (``"Radau"``, ``"BDF"``), which suit stiff problems (large ``mu t``).
"""
from __future__ import annotations

from typing import Callable, Union

import numpy as np
from scipy.integrate import solve_ivp
from scipy.special import softmax

from .ntk_l2 import (FlowOutputs, _as_float_array, _check_degree, _check_initial, _check_lam,
                     _check_square_symmetric, _check_targets, _check_times)
from .special import rates

LOSSES = ("mse", "xent")


def mse_grad(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gradient of ``1/(2 N K) sum (f - y)^2`` with respect to ``f`` (shape (N, K))."""
    return (f - y) / y.size


def xent_grad(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gradient of ``-(1/N) sum_i sum_k y_ik log softmax(f_i)_k`` with respect to ``f`` (shape (N, K))."""
    return (softmax(f, axis=-1) * y.sum(-1, keepdims=True) - y) / y.shape[0]


def integrate_flow(ntk_train_train, y_train, weight_decay: float, L: int, t, *, ntk_test_train=None,
                   f0_train=None, f0_test=None, loss: Union[str, Callable] = "mse",
                   method: str = "DOP853", rtol: float = 1e-10, atol: float = 1e-12,
                   max_step: float = np.inf, return_result: bool = False):
    """Integrate the infinite-width flow with a decaying kernel and return outputs at times ``t``.

    Args:
      ntk_train_train, ntk_test_train: unnormalised NTK, (N, N) and (M, N).
      y_train: targets (N,) or (N, K) (one-hot / probabilities for ``"xent"``).
      weight_decay, L: L2 coefficient ``lam >= 0`` (penalty ``(lam/2)||theta||^2``) and homogeneity degree
        ``>= 1``.
      t: finite times ``>= 0`` (physical time ``eta * steps``), any shape.
      f0_train, f0_test: outputs at ``t = 0`` (default 0).
      loss: ``"mse"``, ``"xent"`` or ``grad(f_train, y_train)``.
      method, rtol, atol, max_step: passed to :func:`scipy.integrate.solve_ivp`.

    Returns:
      ``FlowOutputs(train t.shape + y.shape, test t.shape + (M,) + y.shape[1:] or None)``; with
      ``return_result=True`` also the ``solve_ivp`` result (``nfev``, ``status``, ...; None if all t = 0).
    """
    k = _check_square_symmetric("ntk_train_train", ntk_train_train)
    n = k.shape[0]
    y = _check_targets("y_train", y_train, n)
    lam, L = _check_lam(weight_decay), _check_degree(L)
    ts = _check_times(t)
    if not np.all(np.isfinite(ts)):
        raise ValueError("t must be finite for numerical integration (use L2Flow for t = inf)")
    kt = None
    if ntk_test_train is not None:
        kt = _as_float_array("ntk_test_train", ntk_test_train, (2,))
        if kt.shape[1] != n:
            raise ValueError(f"ntk_test_train must have shape (M, {n}), got {kt.shape}")
    elif f0_test is not None:
        raise ValueError("f0_test was given without ntk_test_train")
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES} or a callable grad(f, y), got {loss!r}")
        if loss == "xent" and (y.ndim != 2 or y.shape[1] < 2):
            raise ValueError(f"y_train must have shape (N, K) with K >= 2 classes for 'xent', got {y.shape}")
        grad = mse_grad if loss == "mse" else xent_grad
    elif callable(loss):
        grad = loss
    else:
        raise TypeError(f"loss must be a string or a callable, got {type(loss).__name__}")
    y2 = y.reshape(n, -1)
    kdim = y2.shape[1]
    f0 = _check_initial("f0_train", f0_train, y.shape).reshape(n, kdim)
    m = 0 if kt is None else kt.shape[0]
    f0x = np.zeros((0, kdim)) if kt is None else \
        _check_initial("f0_test", f0_test, (m,) + y.shape[1:]).reshape(m, kdim)
    kappa, beta = rates(lam, L)
    kall = k if kt is None else np.vstack([k, kt])               # (N + M, N)

    def rhs(s, z):
        f = z.reshape(n + m, kdim)
        g = grad(f[:n], y2)
        return (-np.exp(-kappa * s) * (kall @ g) - beta * f).ravel()

    jac = None
    if grad is mse_grad and method in ("Radau", "BDF", "LSODA"):
        def jac(s, z):
            a = np.zeros((n + m, n + m))
            a[:, :n] = -np.exp(-kappa * s) * kall / y2.size
            a -= beta * np.eye(n + m)
            return np.kron(a, np.eye(kdim))

    flat = ts.reshape(-1)
    t_unique, inverse = np.unique(flat, return_inverse=True)     # sorted, as solve_ivp needs
    z0 = np.concatenate([f0, f0x]).ravel()
    res = None
    if t_unique[-1] == 0:
        zu = z0[:, None]
    else:
        extra = {} if jac is None else {"jac": jac}
        res = solve_ivp(rhs, (0.0, float(t_unique[-1])), z0, method=method, t_eval=t_unique,
                        rtol=rtol, atol=atol, max_step=max_step, **extra)
        if not res.success:
            raise RuntimeError(f"solve_ivp failed: {res.message}")
        zu = res.y
    zs = zu[:, inverse.reshape(-1)]
    out = zs.T.reshape((flat.size, n + m, kdim))
    train = out[:, :n].reshape(ts.shape + y.shape)
    test = None if kt is None else out[:, n:].reshape(ts.shape + (m,) + y.shape[1:])
    return (FlowOutputs(train, test), res) if return_result else FlowOutputs(train, test)


__all__ = ["integrate_flow", "mse_grad", "xent_grad", "LOSSES"]
