"""Optimiser descriptions for the scale-invariant norm dynamics (validation and impulse responses).

Every optimiser is written in one linear form acting on the raw gradient ``h = g + lam_c * w``
(``g`` the loss gradient, ``lam_c`` the *coupled* L2 coefficient; penalty ``(lam/2)||w||^2``)::

    M_{k+1} = a M_k + b h_k                      (momentum buffer, M_0 = 0)
    w_{k+1} = w_k - lr_k * kappa_k * (c1 h_k + c2_k M_{k+1}) - lr_k * lam_d * w_k

with ``lam_d`` the *decoupled* weight decay and ``kappa`` Adam's preconditioner scale (1 for SGD):

=============  ====  ======  ===  ==================  =======  =======  ==========================
name           a     b       c1   c2                  lam_c    lam_d    optax equivalent
=============  ====  ======  ===  ==================  =======  =======  ==========================
``sgd``        0     1       0    1                   lam      0        ``chain(add_decayed_weights(lam), sgd(lr))``
``momentum``   mu    1       0    1                   lam      0        ``chain(add_decayed_weights(lam), sgd(lr, mu))``
``nesterov``   mu    1       1    mu                  lam      0        ``... sgd(lr, mu, nesterov=True)``
``adam_l2``    b1    1-b1    0    1/(1-b1^(k+1))      lam      0        ``chain(add_decayed_weights(lam), adam(lr, b1, b2, eps))``
``adamw``      b1    1-b1    0    1/(1-b1^(k+1))      0        lam      ``adamw(lr, b1, b2, eps, weight_decay=lam)``
=============  ====  ======  ===  ==================  =======  =======  ==========================

For plain SGD coupled and decoupled decay are the same map. The *impulse response* of the update to one
gradient is ``c_0 = c1 + b c2``, ``c_j = b c2 a^j`` (j >= 1, steady state); its sum ``S = sum_j c_j``
sets the long-run step and its sum of squares ``S2 = sum_j c_j^2`` the step of a random walk:

* sgd: S = 1, S2 = 1;  momentum: S = 1/(1-mu), S2 = 1/(1-mu^2);
* nesterov: S = 1/(1-mu), S2 = (1+mu)^2 + mu^4/(1-mu^2);  Adam: S = 1, S2 = (1-b1)/(1+b1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam_l2", "adamw")
_ALIASES = {"heavy_ball": "momentum", "sgd_momentum": "momentum", "adam+l2": "adam_l2",
            "adam_coupled": "adam_l2"}

__all__ = ["OPTIMIZERS", "NormOptimizer", "make_optimizer"]


def _unit_interval(name: str, v, closed_low: bool = True) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) and not hasattr(v, "__float__"):
        raise TypeError(f"{name} must be a number, got {type(v).__name__} ({v!r})")
    v = float(v)
    ok = (0.0 <= v < 1.0) if closed_low else (0.0 < v < 1.0)
    if not ok:
        raise ValueError(f"{name} must lie in {'[0, 1)' if closed_low else '(0, 1)'}, got {v}")
    return v


@dataclass(frozen=True)
class NormOptimizer:
    """A validated optimiser in the linear form of the module docstring (use :func:`make_optimizer`)."""

    name: str
    momentum: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    @property
    def is_adam(self) -> bool:
        return self.name in ("adam_l2", "adamw")

    @property
    def decoupled(self) -> bool:
        """Whether ``lam`` acts outside the gradient (AdamW) rather than as coupled L2."""
        return self.name == "adamw"

    @property
    def a(self) -> float:
        return self.beta1 if self.is_adam else self.momentum

    @property
    def b(self) -> float:
        return 1.0 - self.beta1 if self.is_adam else 1.0

    @property
    def c1(self) -> float:
        return 1.0 if self.name == "nesterov" else 0.0

    def c2(self, k):
        """Coefficient of the buffer at step ``k`` (0-based); Adam's bias correction ``1/(1-b1^(k+1))``."""
        if self.is_adam:
            return 1.0 / (1.0 - self.beta1 ** (k + 1))
        return self.momentum if self.name == "nesterov" else 1.0

    @property
    def response_sum(self) -> float:
        """``S = sum_j c_j``: total displacement per unit gradient (steady state)."""
        if self.is_adam:
            return 1.0
        return 1.0 / (1.0 - self.momentum)

    @property
    def response_sq(self) -> float:
        """``S2 = sum_j c_j^2``: squared displacement per unit of uncorrelated gradient noise."""
        mu = self.momentum
        if self.is_adam:
            return (1.0 - self.beta1) / (1.0 + self.beta1)
        if self.name == "nesterov":
            return (1.0 + mu) ** 2 + mu ** 4 / (1.0 - mu ** 2)
        return 1.0 / (1.0 - mu ** 2)


def make_optimizer(optimizer, momentum: float = 0.0, beta1: float = 0.9, beta2: float = 0.999,
                   eps: float = 1e-8) -> NormOptimizer:
    """Validate and build a :class:`NormOptimizer`.

    ``optimizer``: one of ``OPTIMIZERS`` ('sgd', 'momentum' (heavy ball; alias 'heavy_ball'),
    'nesterov', 'adam_l2' (Adam on the gradient of loss + (lam/2)||w||^2), 'adamw') or a NormOptimizer.
    ``momentum`` in [0, 1) (must be 0 for 'sgd', used by 'momentum'/'nesterov');
    ``beta1``, ``beta2`` in [0, 1), ``eps >= 0`` (Adam family).
    """
    if isinstance(optimizer, NormOptimizer):
        return optimizer
    if not isinstance(optimizer, str):
        raise TypeError(f"optimizer must be a string, one of {OPTIMIZERS}, got {type(optimizer).__name__}")
    name = _ALIASES.get(optimizer.lower(), optimizer.lower())
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS} (or alias {tuple(_ALIASES)}), "
                         f"got {optimizer!r}")
    mu = _unit_interval("momentum", momentum)
    b1 = _unit_interval("beta1", beta1)
    b2 = _unit_interval("beta2", beta2)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if name == "sgd" and mu != 0.0:
        raise ValueError(f"momentum must be 0 for optimizer='sgd' (got {mu}); use optimizer='momentum' "
                         f"or 'nesterov'")
    return NormOptimizer(name, mu, b1, b2, float(eps))
