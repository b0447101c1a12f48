r"""Update statistics of the normalised optimisers Lion and Muon on a scale-invariant group (docs/theory.md §6).

Both update with a *normalising* map ``N`` of a linear combination of past gradients,
``c_k = sum_j a_j g_{k-j}`` (steady state, bias corrections at 1)::

    lion (optax.lion):         c_k = (1-b1) g_k + b1 m_{k-1},  m_k = b2 m_{k-1} + (1-b2) g_k,
                               a_0 = 1-b1, a_j = b1 (1-b2) b2^(j-1);   N(c) = sign(c)
    muon (optax.contrib.muon): m_k = b m_{k-1} + (1-b) g_k; nesterov c_k = b m_k + (1-b) g_k
                               (a_0 = 1-b^2, a_j = (1-b) b^(j+1)), else c_k = m_k (a_j = (1-b) b^j);
                               N(c) = s * NS(c/||c||_F)   (Newton--Schulz, optax's 5 quintic steps)

with ``sum_j a_j = 1`` and ``S2 = sum_j a_j^2`` (:func:`response_sq`). ``s`` is optax's shape factor
``sqrt(max(1, fan_out/fan_in))`` (``consistent_rms=None``) or ``consistent_rms * sqrt(max(fan_in, fan_out))``;
the group is a ``(fan_in, fan_out)`` matrix (optax's default dimension numbers).

**Norm balance.** With decoupled decay, ``w_{k+1} = (1 - eta lam) w_k - eta u_k``, so
``E||w_{k+1}||^2 = (1-eta lam)^2 x - 2 eta (1-eta lam) E[w_k . u_k] + eta^2 F`` with ``F = ||u||^2``
(deterministic: ``d`` for Lion, ``s^2 F0`` for Muon, :func:`update_norm_sq`). Unrolling
``w_k = (1-eta lam)^j w_{k-j} - eta sum_{i=1..j} (1-eta lam)^(i-1) u_{k-i}`` with noise-dominated gradients
(tangent to ``w``, fresh each step) gives ``E[w_k . u_k] = -eta F sum_{i>=1} (1-eta lam)^(i-1) R_i``, with
``R_i = E[u_k . u_{k-i}]/F`` the update autocorrelation: past updates that moved ``w`` are correlated with
the present one. Hence the exact noise map ``x_{k+1} = (1-eta lam)^2 x_k + eta^2 F D`` with the *coherence*
``D = 1 + 2 sum_{j>=1} (1-eta lam)^j R_j`` (dimensionless, :func:`coherence`), and

    x* = eta F D / (lam (2 - eta lam)),   RMS angle sqrt(eta^2 F / x*) = sqrt(eta lam (2 - eta lam)/D),
    relaxation (e-folding, steps) ~ (1 - beta)/(2 eta lam),  beta = eta lam (2 - eta lam) D'/D.

**Growth.** While ``||w||^2`` changes at the rate ``r = d ln x/dk`` the older gradients are larger by
``exp(r j/2)`` (``||g|| ~ 1/||w||``), which stretches the tail of ``c`` and raises ``D`` by ``D' r``
(:func:`coherence_slope`). The map uses ``D_k + D' r_k`` with the measured-in-the-map ``r_k = ln(x_k/x_{k-1})``;
near equilibrium this speeds up the relaxation (:func:`relaxation_steps`: 429 instead of 500 steps at
eta lam = 1e-3, b2 = 0.99; 404 fitted on optax.lion).

The factor ``(1-eta lam)^j`` matters when ``eta lam`` is not small against ``1 - b2``: at eta lam = 1e-3,
b2 = 0.99 it lowers ``D`` by 9% (measured in simulation of optax.lion: 42.0 vs 41.9 predicted, 45.9 without).

**Input correlation.** For white Gaussian gradients ``rho_j = corr(c_k, c_{k+j})`` is geometric for
``j >= 1`` (:func:`correlation`). The update autocorrelation is ``R_j = R(rho_j)``
(:func:`update_correlation`) with ``R(rho) = alpha^2 rho + (1-alpha^2) h(rho)``,
``h(rho) = (arcsin rho - rho)/(pi/2 - 1)``, where ``alpha = E<N(c), c>/(sqrt(F) E||c||)`` is the cosine
between the update and its input.

* **Lion** (exact for Gaussian ``c``): ``alpha^2 = 2/pi`` and ``R = (2/pi) arcsin(rho)``, the arcsin law of
  ``sign``. Linearising (``R ~ (2/pi) rho``, long memory ``S2 << 1``, ``eta lam -> 0``) gives ``D ~ 2/(pi S2)``
  and the published angle ``sqrt(pi/2) sqrt(2 eta lam) sqrt(S2)``, ``S2 = (1-b1)^2 + b1^2 (1-b2)/(1+b2)``
  (:func:`lion_angle_published`); at b1 = 0.9, b2 = 0.99, eta lam -> 0 the two differ by 0.75% in angle.
* **Muon** (model): ``alpha^2 = (sum_i x_i p(x_i))^2 / sum_i p(x_i)^2`` over the Frobenius-normalised singular
  values ``x_i`` of a Gaussian matrix of the group's shape (Marchenko--Pastur quantiles; ``p`` the
  Newton--Schulz quintic iterated ``ns_steps`` times, ``p = 1`` for exact orthogonalisation, where
  ``F0 = min(fan_in, fan_out)``). The linear part is the linear response; the arcsin shape of the
  nonlinear remainder is borrowed from ``sign`` (no fitted constant). Dropping ``h`` (pure linear response)
  changes the norm by 1-4% at b = 0.95.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Tuple

import numpy as np

__all__ = ["response_coefficients", "response_sq", "lion_coherence", "lion_angle_published",
           "muon_shape_scale", "muon_spectrum_stats", "update_norm_sq", "coherence", "coherence_series", "coherence_transient", "coherence_slope", "relaxation_steps", "correlation",
           "update_correlation", "linear_gain"]


def response_coefficients(opt, n: int = 64) -> np.ndarray:
    """First ``n`` steady-state coefficients ``a_j`` of ``c_k = sum_j a_j g_{k-j}`` (Lion, Muon)."""
    j = np.arange(1, n)
    a = np.empty(n)
    if opt.name == "lion":
        a[0], a[1:] = 1.0 - opt.b1, opt.b1 * (1.0 - opt.b2) * opt.b2 ** (j - 1)
    elif opt.name == "muon":
        b = opt.b1
        if opt.nesterov:
            a[0], a[1:] = 1.0 - b * b, (1.0 - b) * b ** (j + 1)
        else:
            a[0], a[1:] = 1.0 - b, (1.0 - b) * b ** j
    else:
        raise ValueError(f"response_coefficients is for 'lion'/'muon', got {opt.name!r}")
    return a


def response_sq(opt) -> float:
    """``S2 = sum_j a_j^2`` in closed form (derivations/scale_invariant.py checks it)."""
    if opt.name == "lion":
        b1, b2 = opt.b1, opt.b2
        return (1.0 - b1) ** 2 + b1 ** 2 * (1.0 - b2) / (1.0 + b2)
    b = opt.b1
    if opt.nesterov:
        return (1.0 - b * b) ** 2 + (1.0 - b) ** 2 * b ** 4 / (1.0 - b * b)
    return (1.0 - b) / (1.0 + b)


def _geometric(opt):
    """``(a_0, A, q)`` with ``a_j = A q^(j-1)`` for ``j >= 1``."""
    if opt.name == "lion":
        return 1.0 - opt.b1, opt.b1 * (1.0 - opt.b2), opt.b2
    b = opt.b1
    if opt.nesterov:
        return 1.0 - b * b, (1.0 - b) * b * b, b
    return 1.0 - b, (1.0 - b) * b, b


def correlation(opt, lags) -> np.ndarray:
    """``rho_j = corr(c_k, c_{k+j})`` of the pre-normalisation combination for Gaussian white gradients:
    ``rho_j = (a_0 A + A^2 q/(1-q^2)) q^(j-1)/S2`` for ``j >= 1`` (``rho_0 = 1``)."""
    a0, A, q = _geometric(opt)
    S2 = a0 * a0 + A * A / (1.0 - q * q)
    j = np.asarray(lags, dtype=np.float64)
    rho1 = (a0 * A + A * A * q / (1.0 - q * q)) / S2
    return np.where(j == 0, 1.0, rho1 * np.power(q, np.maximum(j - 1.0, 0.0)))


def update_correlation(rho, alpha_sq: float):
    """``R(rho) = alpha^2 rho + (1 - alpha^2) h(rho)``, ``h(rho) = (arcsin rho - rho)/(pi/2 - 1)``: the update
    autocorrelation at input correlation ``rho``. With ``alpha^2 = 2/pi`` this is exactly the arcsin law
    ``(2/pi) arcsin rho`` of ``sign`` on Gaussians (Lion); for Muon the linear part ``alpha^2 rho`` is the
    linear response and the arcsin shape of the rest is a model (measured: norms within 1%)."""
    rho = np.asarray(rho, dtype=np.float64)
    return alpha_sq * rho + (1.0 - alpha_sq) * (np.arcsin(rho) - rho) / (np.pi / 2.0 - 1.0)


def _stretched(opt, growth: float):
    """``(a0, A, q)`` with the tail weighted by ``exp(growth j/2)``: while ``||w||^2`` changes at the rate
    ``growth = d ln||w||^2/dk``, the gradient ``g_{k-j}`` is ``exp(growth j/2)`` times larger than at
    step ``k`` (scale invariance: ``||g|| ~ 1/||w||``)."""
    a0, A, q = _geometric(opt)
    f = math.exp(0.5 * growth)
    if q * f >= 1.0:
        raise ValueError(f"growth={growth} is too fast for the optimiser's memory (q exp(growth/2) >= 1)")
    return a0, A * f, q * f


def coherence(opt, shape=None, decay: float = 0.0, growth: float = 0.0) -> float:
    """``D = 1 + 2 sum_{j>=1} (1 - eta lam)^j R(rho_j)`` with ``decay = eta*lam`` (module docstring) and the
    tail re-weighted for a norm changing at ``growth = d ln||w||^2/dk`` per step (:func:`coherence_slope`)."""
    if opt.name == "lion":
        alpha_sq = 2.0 / math.pi
    elif opt.name == "muon":
        if shape is None:
            raise ValueError("shape=(fan_in, fan_out) of the weight matrix is required for optimizer='muon'")
        alpha_sq = muon_spectrum_stats(opt, shape)[1] ** 2
    else:
        raise ValueError(f"coherence is for 'lion'/'muon', got {opt.name!r}")
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay = learning_rate * weight_decay must lie in [0, 1), got {decay}")
    a0, A, qg = _stretched(opt, growth)
    q = qg * (1.0 - decay)
    n = 1 if q == 0.0 else int(min(2e7, math.ceil(math.log(1e-17) / math.log(q)) + 2))
    j = np.arange(1, n + 1, dtype=np.float64)
    S2 = a0 * a0 + A * A / (1.0 - qg * qg)
    # corr(c_k, c_{k-j}) is the autocorrelation of the stretched coefficients (scale factors cancel)
    rho = (a0 * A + A * A * qg / (1.0 - qg * qg)) / S2 * qg ** (j - 1)
    terms = (1.0 - decay) ** j * update_correlation(np.clip(rho, -1.0, 1.0), alpha_sq)
    return 1.0 + 2.0 * float(np.sum(terms))


def coherence_slope(opt, shape=None, decay: float = 0.0) -> float:
    """``dD/dgrowth`` at ``growth = 0`` (central difference, step ``1e-3 (1-q)``): the coherence rises while
    the norm grows, which shortens the relaxation to ``tau = (1 - beta)/(2 eta lam)`` with
    ``beta = eta lam (2 - eta lam) D'/D`` (docs/theory.md §6)."""
    q = _geometric(opt)[2]
    h = 1e-3 * (1.0 - q) if q > 0 else 1e-3
    return (coherence(opt, shape, decay, h) - coherence(opt, shape, decay, -h)) / (2.0 * h)


def coherence_series(opt, shape, decay, fn=None) -> np.ndarray:
    """:func:`coherence` (or ``fn``, e.g. :func:`coherence_slope`) over an array of ``eta*lam`` values
    (log-interpolated on 96 nodes when there are more than 97 distinct values; smooth in ``eta*lam``)."""
    fn = coherence if fn is None else fn
    el = np.asarray(decay, dtype=np.float64)
    uniq, inv = np.unique(el, return_inverse=True)
    if uniq.size <= 97:
        vals = np.array([fn(opt, shape, float(u)) for u in uniq])
    else:
        pos = uniq[uniq > 0]
        nodes = np.geomspace(pos.min(), pos.max(), 96)
        dn = np.array([fn(opt, shape, float(u)) for u in nodes])
        vals = np.interp(np.log(np.maximum(uniq, pos.min())), np.log(nodes), dn)
        if uniq[0] == 0.0:
            vals[0] = fn(opt, shape, 0.0)
    return vals[inv].reshape(el.shape)


def relaxation_steps(opt, shape, decay):
    """e-folding time (steps) of a small deviation from equilibrium under the noise map with the growth
    term: ``d_{k+1} = (1-eta lam)^2 d_k + beta (d_k - d_{k-1})``, ``beta = eta lam (2-eta lam) D'/D``;
    ``-1/ln z1`` with ``z1`` the larger root of ``z^2 - ((1-eta lam)^2 + beta) z + beta = 0``
    (``~ (1 - beta)/(2 eta lam)``)."""
    el = np.asarray(decay, dtype=np.float64)
    D = coherence_series(opt, shape, el)
    Dp = coherence_series(opt, shape, el, coherence_slope)
    beta = el * (2.0 - el) * Dp / D
    p = (1.0 - el) ** 2 + beta
    z1 = 0.5 * (p + np.sqrt(np.maximum(p * p - 4.0 * beta, 0.0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        # beta >= 1/2: the norm changes by O(1) within the buffer's memory and the linear growth term is
        # outside its range; the time without it is returned (it is then shorter than the memory, which
        # assess_validity flags as TOO_FAST)
        plain = -1.0 / (2.0 * np.log1p(-el))
        tau = np.where((beta < 0.5) & (z1 < 1.0), -1.0 / np.log(np.minimum(z1, 1.0 - 1e-300)), plain)
        return np.where(el > 0, tau, np.inf)


def _transient_coefficients(opt, k: np.ndarray):
    """``(a0_k, A_k)`` of ``c_k = a0_k g_k + sum_{j=1..k} A_k q^(j-1) g_{k-j}`` from zero buffers at step 0
    (optax's bias corrections for Muon; Lion has none), for integer steps ``k``; ``q`` as in steady state."""
    k = np.asarray(k, dtype=np.float64)
    a0, A, q = _geometric(opt)
    if opt.name == "lion":
        return np.full(k.shape, a0), np.full(k.shape, A)
    b, t = opt.b1, k + 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        if opt.nesterov:
            return (b * (1 - b) / (1 - b ** (t + 1)) + (1 - b) / (1 - b ** t), b * b * (1 - b) / (1 - b ** (t + 1)))
        return (1 - b) / (1 - b ** t), (1 - b) * b / (1 - b ** t)


def coherence_transient(opt, shape, decay) -> np.ndarray:
    """``D_k`` from zero optimiser buffers at step 0: ``D_k = 1 + 2 sum_{i=1..k} (1-eta lam_k)^i R(rho_{k,i})``
    with the exact non-stationary correlation of ``c_k`` and ``c_{k-i}``
    (``Cov = A_k q^(i-1) [a0_{k-i} + A_{k-i} q (1 - q^(2(k-i)))/(1-q^2)]``,
    ``Var_k = a0_k^2 + A_k^2 (1-q^(2k))/(1-q^2)``). ``decay``: ``eta*lam`` per step (1-D). Evaluated exactly
    while the buffers remember step 0 (``q^k > 1e-5``; the switch to the stationary value is then a
    relative step of order 1e-5), then by :func:`coherence_series`."""
    el = np.asarray(decay, dtype=np.float64)
    if el.ndim != 1:
        raise ValueError("decay must be 1-D (one eta*lam per step)")
    alpha_sq = 2.0 / math.pi if opt.name == "lion" else muon_spectrum_stats(opt, shape)[1] ** 2
    _, _, q = _geometric(opt)
    n = el.size
    K = n if q == 0.0 else min(n, int(math.ceil(math.log(1e-5) / math.log(q))) + 1)
    out = np.empty(n)
    if K < n:
        out[K:] = coherence_series(opt, shape, el[K:])
    kk = np.arange(K, dtype=np.float64)
    a0, A = _transient_coefficients(opt, kk)
    var = a0 ** 2 + A ** 2 * (1.0 - q ** (2 * kk)) / (1.0 - q * q)
    for k in range(K):
        if k == 0:
            out[0] = 1.0
            continue
        i = np.arange(1, k + 1, dtype=np.float64)
        m = k - i.astype(np.int64)
        cov = A[k] * q ** (i - 1) * (a0[m] + A[m] * q * (1.0 - q ** (2 * (k - i))) / (1.0 - q * q))
        rho = np.clip(cov / np.sqrt(var[k] * var[m]), -1.0, 1.0)
        out[k] = 1.0 + 2.0 * float(np.sum((1.0 - el[k]) ** i * update_correlation(rho, alpha_sq)))
    return out


def lion_coherence(b1: float, b2: float, decay: float = 0.0) -> float:
    """Lion's ``D`` (exact arcsin law for Gaussian ``c``); see :func:`coherence`."""
    from .norms_optim import make_optimizer
    return coherence(make_optimizer("lion", b1=b1, b2=b2), decay=decay)


def lion_angle_published(learning_rate, weight_decay, b1: float = 0.9, b2: float = 0.99):
    """Published Lion equilibrium RMS angle ``sqrt(pi/2) sqrt(2 eta lam) sqrt((1-b1)^2 + b1^2 (1-b2)/(1+b2))``
    (radians per step; the small-``rho`` linearisation of :func:`lion_coherence`, ``eta lam << 1``)."""
    S2 = (1.0 - b1) ** 2 + b1 ** 2 * (1.0 - b2) / (1.0 + b2)
    return np.sqrt(np.pi / 2.0) * np.sqrt(2.0 * np.asarray(learning_rate) * np.asarray(weight_decay)) \
        * math.sqrt(S2)


def _check_shape(shape) -> Tuple[int, int]:
    try:
        m, n = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a (fan_in, fan_out) pair of positive ints, got {shape!r}") from None
    if m < 1 or n < 1 or (m, n) != tuple(shape):
        raise ValueError(f"shape must be a (fan_in, fan_out) pair of positive ints, got {shape!r}")
    return m, n


def muon_shape_scale(opt, shape) -> float:
    """optax's ``scale_by_shape`` factor ``s`` for a ``(fan_in, fan_out)`` matrix."""
    m, n = _check_shape(shape)
    if opt.consistent_rms is None:
        return math.sqrt(max(1.0, n / m))
    return opt.consistent_rms * math.sqrt(max(m, n))


def _mp_quantiles(r: int, q: float) -> np.ndarray:
    """Midpoint quantiles of the Marchenko--Pastur law (ratio ``q = r/R <= 1``, unit variance): the ``r``
    squared singular values of an ``R x r`` Gaussian matrix divided by ``R``."""
    lo, hi = (1.0 - math.sqrt(q)) ** 2, (1.0 + math.sqrt(q)) ** 2
    th = np.linspace(0.0, np.pi, 20001)
    lam = lo + (hi - lo) * 0.5 * (1.0 - np.cos(th))        # dense near both edges
    dlam = (hi - lo) * 0.5 * np.sin(th)
    with np.errstate(divide="ignore", invalid="ignore"):
        dens = np.sqrt(np.maximum((hi - lam) * (lam - lo), 0.0)) / (2.0 * np.pi * q * lam)
    f = np.nan_to_num(dens * dlam)
    if q == 1.0:   # integrable 1/sqrt(lam) edge: the substitution makes dens*dlam finite except at th=0
        f[0] = f[1]
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(th))])
    cdf /= cdf[-1]
    return np.interp((np.arange(r) + 0.5) / r, cdf, lam)


@lru_cache(maxsize=256)
def _muon_stats(m: int, n: int, coeffs: Tuple[float, float, float], steps: int, exact: bool):
    r, R = min(m, n), max(m, n)
    sv = np.sqrt(R * _mp_quantiles(r, r / R))
    x = sv / math.sqrt(np.sum(sv * sv))
    if exact:
        p = np.ones_like(x)
    else:
        a, b, c = coeffs
        p = x.copy()
        for _ in range(steps):
            p = a * p + b * p ** 3 + c * p ** 5
    F = float(np.sum(p * p))
    alpha = float(np.sum(x * p) / math.sqrt(F))
    return F, alpha


def muon_spectrum_stats(opt, shape) -> Tuple[float, float]:
    """``(F0, alpha)`` for Muon on a ``(fan_in, fan_out)`` group before the shape factor:
    ``F0 = ||NS(c/||c||)||_F^2`` and ``alpha`` (module docstring), for Gaussian ``c``.
    Exact orthogonalisation gives ``F0 = min(fan_in, fan_out)``."""
    m, n = _check_shape(shape)
    return _muon_stats(m, n, tuple(opt.ns_coeffs), opt.ns_steps, opt.exact_orthogonalisation)


def update_norm_sq(opt, d=None, shape=None) -> float:
    """``F = ||u||^2`` per step (Lion: ``d``; Muon: ``s^2 F0``); dimensionless."""
    if opt.name == "lion":
        if d is None:
            raise ValueError("d (parameters in the group) is required for optimizer='lion'")
        return np.asarray(d, dtype=np.float64) if np.ndim(d) else float(d)
    if shape is None:
        raise ValueError("shape=(fan_in, fan_out) of the weight matrix is required for optimizer='muon'")
    return muon_shape_scale(opt, shape) ** 2 * muon_spectrum_stats(opt, shape)[0]


def linear_gain(opt, d=None, shape=None) -> float:
    """``alpha sqrt(F / S2)``: the update's linear response is ``kappa g`` with ``kappa = gain/||g||``
    (so the effective learning rate is ``eta gain / sqrt(G x)``; Lion ``alpha = sqrt(2/pi)``, ``F = d``)."""
    F = update_norm_sq(opt, d, shape)
    alpha = math.sqrt(2.0 / math.pi) if opt.name == "lion" else muon_spectrum_stats(opt, shape)[1]
    return alpha * np.sqrt(F / response_sq(opt))
