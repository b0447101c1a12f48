"""Optimiser descriptions for the scale-invariant norm dynamics (docs/theory.md §1, §6).

Names follow docs/theory.md §1: ``gd``/``sgd``, ``momentum``, ``nesterov``, ``adam`` (Adam with *coupled*
L2: ``weight_decay * w`` added to the gradient before the moments), ``adamw``, ``lion``, ``muon`` (decoupled:
``learning_rate * weight_decay * w`` subtracted after the scaling, as ``optax.add_decayed_weights`` placed
after the scaling does).

The *linear* optimisers are one form acting on the raw gradient ``h = g + lam_c * w`` (``g`` the loss
gradient, ``lam_c`` the coupled L2 coefficient)::

    M_{k+1} = a M_k + b h_k                      (momentum buffer, M_0 = 0)
    w_{k+1} = w_k - eta_k * kappa_k * (c1 h_k + c2_k M_{k+1}) - eta_k * lam_d * w_k

=============  ====  ======  ===  ==================  =======  =======  ==========================
name           a     b       c1   c2                  lam_c    lam_d    optax equivalent
=============  ====  ======  ===  ==================  =======  =======  ==========================
``gd``/``sgd`` 0     1       0    1                   lam      0        ``chain(add_decayed_weights(lam), sgd(lr))``
``momentum``   mu    1       0    1                   lam      0        ``chain(add_decayed_weights(lam), sgd(lr, mu))``
``nesterov``   mu    1       1    mu                  lam      0        ``... sgd(lr, mu, nesterov=True)``
``adam``       b1    1-b1    0    1/(1-b1^(k+1))      lam      0        ``chain(add_decayed_weights(lam), adam(lr, b1, b2, eps))``
``adamw``      b1    1-b1    0    1/(1-b1^(k+1))      0        lam      ``adamw(lr, b1, b2, eps, weight_decay=lam)``
=============  ====  ======  ===  ==================  =======  =======  ==========================

``lion`` (``optax.lion``) and ``muon`` (``optax.contrib.muon``, ``adaptive=False``) apply a *normalising*
map to a linear combination ``c_k = sum_j a_j g_{k-j}`` of past gradients (``sign`` per coordinate; the
Newton--Schulz orthogonalisation of the matrix), so their update norm does not depend on the gradient scale.
Their statistics are in :mod:`widelimit.dynamics.norms_update`.

The *impulse response* of the linear update to one gradient is ``c_0 = c1 + b c2``, ``c_j = b c2 a^j``
(j >= 1, steady state); ``S = sum_j c_j`` sets the long-run step, ``S2 = sum_j c_j^2`` the step of a
random walk (dimensionless):

* sgd: S = 1, S2 = 1;  momentum: S = 1/(1-mu), S2 = 1/(1-mu^2);
* nesterov: S = 1/(1-mu), S2 = (1+mu)^2 + mu^4/(1-mu^2);  adam/adamw: S = 1, S2 = (1-b1)/(1+b1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

OPTIMIZERS = ("gd", "sgd", "momentum", "nesterov", "adam", "adamw", "lion", "muon")
_ALIASES: dict = {}
DECOUPLED = ("adamw", "lion", "muon")
NORMALISED = ("lion", "muon")        # update norm independent of the gradient scale
MUON_NS_COEFFS = (3.4445, -4.7750, 2.0315)   # optax.contrib.muon default ('standard')

__all__ = ["OPTIMIZERS", "DECOUPLED", "NORMALISED", "MUON_NS_COEFFS", "NormOptimizer", "make_optimizer"]


def _unit_interval(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) and not hasattr(v, "__float__"):
        raise TypeError(f"{name} must be a number, got {type(v).__name__} ({v!r})")
    v = float(v)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {v}")
    return v


@dataclass(frozen=True)
class NormOptimizer:
    """A validated optimiser (use :func:`make_optimizer`); constants are dimensionless.

    ``momentum``: heavy-ball/Nesterov coefficient; ``b1``, ``b2``: Adam/Lion moment coefficients
    (for ``muon``, ``b1`` is optax's ``beta``); ``eps``: Adam's denominator offset; ``nesterov``,
    ``consistent_rms``, ``ns_coeffs``, ``ns_steps``, ``exact_orthogonalisation``: Muon's options
    (``exact_orthogonalisation=True`` models the exact polar factor ``U V^T`` instead of optax's
    Newton--Schulz iteration).
    """

    name: str
    momentum: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    nesterov: bool = True
    consistent_rms: Optional[float] = None
    ns_coeffs: Tuple[float, float, float] = MUON_NS_COEFFS
    ns_steps: int = 5
    exact_orthogonalisation: bool = False

    @property
    def is_adam(self) -> bool:
        return self.name in ("adam", "adamw")

    @property
    def normalised(self) -> bool:
        """Lion/Muon: the update norm is fixed by the optimiser, not by the gradient."""
        return self.name in NORMALISED

    @property
    def decoupled(self) -> bool:
        """Whether ``weight_decay`` acts outside the gradient (AdamW, Lion, Muon) rather than as coupled L2."""
        return self.name in DECOUPLED

    @property
    def a(self) -> float:
        return self.b1 if self.is_adam else self.momentum

    @property
    def b(self) -> float:
        return 1.0 - self.b1 if self.is_adam else 1.0

    @property
    def c1(self) -> float:
        return 1.0 if self.name == "nesterov" else 0.0

    def c2(self, k):
        """Coefficient of the buffer at step ``k`` (0-based); Adam's bias correction ``1/(1-b1^(k+1))``."""
        if self.is_adam:
            return 1.0 / (1.0 - self.b1 ** (k + 1))
        return self.momentum if self.name == "nesterov" else 1.0

    @property
    def response_sum(self) -> float:
        """``S = sum_j c_j``: total displacement per unit gradient (steady state; 1 for Lion/Muon's ``c``)."""
        if self.is_adam or self.normalised:
            return 1.0
        return 1.0 / (1.0 - self.momentum)

    @property
    def response_sq(self) -> float:
        """``S2 = sum_j c_j^2``: squared displacement per unit of uncorrelated gradient noise (for
        Lion/Muon: of the pre-normalisation combination ``c``, see :mod:`~widelimit.dynamics.norms_update`)."""
        mu = self.momentum
        if self.normalised:
            from .norms_update import response_sq
            return response_sq(self)
        if self.is_adam:
            return (1.0 - self.b1) / (1.0 + self.b1)
        if self.name == "nesterov":
            return (1.0 + mu) ** 2 + mu ** 4 / (1.0 - mu ** 2)
        return 1.0 / (1.0 - mu ** 2)

    @property
    def memory_steps(self) -> float:
        """Longest memory of the optimiser state, in steps (``1/(1-coefficient)``; 1 for sgd)."""
        if self.is_adam:
            return 1.0 / (1.0 - max(self.b1, self.b2))
        if self.name == "lion":
            return 1.0 / (1.0 - max(self.b1, self.b2))
        if self.name == "muon":
            return 1.0 / (1.0 - self.b1)
        return 1.0 / (1.0 - self.momentum)


def make_optimizer(optimizer, momentum: float = 0.0, b1: Optional[float] = None,
                   b2: Optional[float] = None, eps: float = 1e-8, *, nesterov: bool = True,
                   consistent_rms: Optional[float] = None, ns_coeffs=MUON_NS_COEFFS, ns_steps: int = 5,
                   exact_orthogonalisation: bool = False) -> NormOptimizer:
    """Validate and build a :class:`NormOptimizer`.

    ``optimizer``: one of ``OPTIMIZERS`` (docs/theory.md §1; ``'gd'`` is ``'sgd'`` with full-batch
    gradients) or a NormOptimizer (returned as is).
    ``momentum`` in [0, 1) (must be 0 for 'gd'/'sgd'); ``b1``, ``b2`` in [0, 1) with optax's defaults when
    ``None`` (adam/adamw 0.9, 0.999; lion 0.9, 0.99; muon ``b1`` = optax ``beta`` = 0.95); ``eps >= 0``.
    """
    if isinstance(optimizer, NormOptimizer):
        return optimizer
    if not isinstance(optimizer, str):
        raise TypeError(f"optimizer must be a string, one of {OPTIMIZERS}, got {type(optimizer).__name__}")
    name = _ALIASES.get(optimizer.lower(), optimizer.lower())
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    defaults = {"lion": (0.9, 0.99), "muon": (0.95, 0.999)}.get(name, (0.9, 0.999))
    mu = _unit_interval("momentum", momentum)
    b1 = _unit_interval("b1", defaults[0] if b1 is None else b1)
    b2 = _unit_interval("b2", defaults[1] if b2 is None else b2)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if name in ("gd", "sgd") and mu != 0.0:
        raise ValueError(f"momentum must be 0 for optimizer={name!r} (got {mu}); use optimizer='momentum' "
                         f"or 'nesterov'")
    if not isinstance(nesterov, bool):
        raise TypeError(f"nesterov must be a bool, got {type(nesterov).__name__}")
    if consistent_rms is not None:
        if isinstance(consistent_rms, bool) or not isinstance(consistent_rms, (int, float)) \
                or not consistent_rms > 0 or not math.isfinite(consistent_rms):
            raise ValueError(f"consistent_rms must be None or a finite number > 0, got {consistent_rms!r}")
        consistent_rms = float(consistent_rms)
    coeffs = tuple(float(c) for c in ns_coeffs)
    if len(coeffs) != 3 or not all(math.isfinite(c) for c in coeffs):
        raise ValueError(f"ns_coeffs must be three finite numbers (a, b, c), got {ns_coeffs!r}")
    if isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or ns_steps < 1:
        raise ValueError(f"ns_steps must be a positive int, got {ns_steps!r}")
    return NormOptimizer("sgd" if name == "gd" else name, mu, b1, b2, float(eps), nesterov, consistent_rms,
                         coeffs, ns_steps, bool(exact_orthogonalisation))
