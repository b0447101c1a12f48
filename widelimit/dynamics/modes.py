"""Per-mode coefficients of the L2 dynamics, for the flow and for discrete GD (docs/theory.md §2).

Every model of :mod:`widelimit.dynamics` writes its outputs through the per-mode coefficients of
:class:`~widelimit.dynamics.special.ModeCoefficients` (``P``, ``J``, ``decay``, ``J/mu``,
``(decay - P)/mu``) of the normalised NTK ``Theta~ = V diag(mu) V^T``:

    f_X(t) = V (P * V^T f0_X + J * V^T y),
    f_x(t) = decay f0_x - G diag(gap/mu) V^T f0_X + G diag(J/mu) V^T y,       G = Theta~_xX V.

:func:`mode_response` returns them for gradient flow (``learning_rate=None``, closed form of
:func:`~widelimit.dynamics.special.mode_coefficients`) or for full-batch GD at learning rate ``eta``
(:func:`gd_mode_coefficients`, the one per-mode GD recursion in widelimit).
"""
from __future__ import annotations

import numbers
from typing import Optional

import numpy as np

from .special import ModeCoefficients, mode_coefficients


def check_learning_rate(learning_rate) -> Optional[float]:
    """``None`` (gradient flow) or a finite real ``> 0``."""
    if learning_rate is None:
        return None
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real):
        raise TypeError(f"learning_rate must be None or a positive number, got {learning_rate!r}")
    lr = float(learning_rate)
    if not np.isfinite(lr) or lr <= 0:
        raise ValueError(f"learning_rate must be finite and > 0, got {learning_rate}")
    return lr


def steps_of(t, learning_rate: float) -> np.ndarray:
    """Step counts ``round(t / eta)`` of physical times ``t`` (int64, same shape)."""
    t = np.asarray(t, dtype=np.float64)
    if np.any(~np.isfinite(t)):
        raise ValueError("discrete GD needs finite times t (t = inf has no step count)")
    return np.rint(t / learning_rate).astype(np.int64)


def gd_mode_coefficients(mu, steps, weight_decay: float, L: int, learning_rate: float) -> ModeCoefficients:
    """Per-mode coefficients after ``steps`` full-batch GD steps with L2, at infinite width.

    One step ``theta' = c theta - eta grad l`` with ``c = 1 - eta lam`` is ``c (theta - (eta/c) grad l)``;
    by L-homogeneity and linearisation (exact at infinite width), per eigenmode ``mu`` of ``Theta~_0``:

        a_{k+1} = c^L a_k - s_k mu (a_k - y),      s_k = eta c^{L-1} c^{2(L-1)k},

    so ``a_k = P_k a_0 + J_k y`` with ``P_{k+1} = (c^L - s_k mu) P_k``, ``J_{k+1} = (c^L - s_k mu) J_k +
    s_k mu``; the test coefficients ``J/mu`` and ``(c^{Lk} - P)/mu`` follow their own recursions
    (``B_{k+1} = c^L B_k - s_k (J_k - 1)``, ``A_{k+1} = c^L A_k + s_k P_k``), finite at ``mu = 0``.
    As ``eta -> 0`` at fixed ``eta k`` this tends to :func:`mode_coefficients` at ``t = eta k``.

    Args:
      mu: eigenvalues (N,) of the normalised NTK (negative round-off treated as 0).
      steps: step counts ``>= 0``, any shape S.
      weight_decay: ``lam >= 0`` with ``eta lam < 1`` (else the factor ``c`` is ``<= 0``); a scalar, or a
        1-D array (P,) of them evaluated in the same pass.
      L: homogeneity degree ``>= 1``.
      learning_rate: ``eta > 0``.

    Returns: :class:`ModeCoefficients` with arrays of shape ``S + (N,)`` (``S + (P, N)`` for an array of
    weight decays). Cost O(max(steps) P N).
    """
    mu = np.maximum(np.asarray(mu, dtype=np.float64).reshape(-1), 0.0)
    steps = np.asarray(steps)
    if steps.size and (not np.issubdtype(steps.dtype, np.integer) or np.any(steps < 0)):
        raise ValueError("steps must be integer step counts >= 0")
    eta, lam = float(learning_rate), np.asarray(weight_decay, dtype=np.float64)
    if lam.ndim > 1:
        raise ValueError(f"weight_decay must be a number or a 1-D array, got shape {lam.shape}")
    if not (eta > 0 and np.all(lam >= 0) and np.all(eta * lam < 1)):
        raise ValueError(f"discrete GD needs learning_rate > 0, weight_decay >= 0 and "
                         f"learning_rate*weight_decay < 1, got {eta} and {weight_decay}")
    flat = steps.reshape(-1).astype(np.int64)
    c = (1.0 - eta * lam)[..., None]                                  # () + (1,) or (P, 1)
    cL, cL1, ck = c ** L, c ** (L - 1), c ** (2 * (L - 1))
    n = mu.size
    state = lam.shape + (n,)
    out = [np.empty((flat.size,) + state) for _ in range(5)]
    P, J = np.ones(state), np.zeros(state)
    A, B = np.zeros(state), np.zeros(state)
    order = np.argsort(flat, kind="stable")
    kern, dec, j = np.ones_like(c), np.ones_like(c), 0
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(int(flat.max()) + 1 if flat.size else 0):
            while j < order.size and flat[order[j]] == k:
                i = order[j]
                out[0][i], out[1][i], out[2][i], out[3][i], out[4][i] = P, J, dec, B, A
                j += 1
            s = eta * cL1 * kern
            A, B = cL * A + s * P, cL * B - s * (J - 1.0)
            P, J = (cL - s * mu) * P, (cL - s * mu) * J + s * mu
            kern *= ck
            dec *= cL
    return ModeCoefficients(*(o.reshape(steps.shape + state) for o in out))


def mode_response(mu, t, weight_decay: float, L: int, learning_rate: Optional[float] = None
                  ) -> ModeCoefficients:
    """Coefficients at physical times ``t`` (1-D, ``eta * steps``) for every mode ``mu`` (N,): shape (T, N).

    ``learning_rate=None``: gradient flow (closed form). Otherwise discrete GD at ``round(t / eta)`` steps.
    """
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    mu = np.asarray(mu, dtype=np.float64).reshape(-1)
    if learning_rate is None:
        return mode_coefficients(mu[None, :], t[:, None], float(weight_decay), L)
    return gd_mode_coefficients(mu, steps_of(t, learning_rate), weight_decay, L, learning_rate)


__all__ = ["mode_response", "gd_mode_coefficients", "check_learning_rate", "steps_of"]
