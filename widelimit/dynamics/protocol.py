"""The interface every test-loss model implements, so that :mod:`widelimit.predict` accepts any of them.

A *loss model* answers "what is the test MSE after training for time ``t`` with weight decay ``lam``?"
for one data set (kernels and targets fixed at construction). widelimit's own models are
:class:`~widelimit.dynamics.loss.ExpectedLoss` (f0 averaged over the NNGP prior: what seed averages of
finite networks measure; the default) and :class:`~widelimit.dynamics.loss.FlowLoss` (a given f0,
default 0), each either gradient flow (``learning_rate=None``) or full-batch GD at ``learning_rate``.
A solver for large N (e.g. Krylov) plugs in by implementing the same attributes and methods; nothing in
:mod:`widelimit.predict` looks at the concrete class.

Units: ``t`` is physical time ``eta * steps`` ("η·steps"); ``weight_decay`` is ``lam`` with penalty
``(lam/2)||theta||^2`` (1/time); losses are the MSE ``1/(2 M K) sum (f - y)^2`` (docs/theory.md §1).
"""
from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class LossModel(Protocol):
    """Protocol of a test-loss model (structural: no base class needed).

    Attributes:
      L: homogeneity degree of the network (int >= 1), or None for a non-homogeneous one (e.g.
        :class:`~widelimit.dynamics.volterra_loss.VolterraLoss` with biases or erf).
      learning_rate: ``None`` for gradient flow, else ``eta`` of full-batch GD (then ``t`` is rounded to
        ``round(t / eta)`` steps and stability needs ``eta * mu_max < 2`` and ``eta * lam < 1``).
      n_train, n_test: numbers of training and test points.
      mu_max: top eigenvalue of the normalised NTK ``Theta/(N K)`` (1/time).
      label: short human description for tables ("E over f0 ~ NNGP, flow", ...).
    """

    L: Optional[int]
    learning_rate: Optional[float]

    @property
    def n_train(self) -> int: ...

    @property
    def n_test(self) -> int: ...

    @property
    def mu_max(self) -> float: ...

    @property
    def label(self) -> str: ...

    def test_loss(self, weight_decay: float, t) -> np.ndarray:
        """Test MSE at physical times ``t`` (1-D array, ``>= 0``): shape ``(T,)``, every entry ``>= 0``."""
        ...

    def train_loss(self, weight_decay: float, t) -> np.ndarray:
        """Training MSE (without the L2 term) at times ``t``: shape ``(T,)``."""
        ...

    def zero_loss(self) -> float:
        """Test MSE of the zero function ``f = 0``, ``1/(2 M K) sum y_test^2``: the NO_LEARNING reference."""
        ...


def check_model(model) -> LossModel:
    """``model`` if it implements :class:`LossModel`, else TypeError naming what is missing."""
    missing = [n for n in ("L", "learning_rate", "n_train", "n_test", "mu_max", "label", "test_loss",
                           "train_loss", "zero_loss") if not hasattr(model, n)]
    if missing:
        raise TypeError(f"model must implement widelimit.dynamics.LossModel; {type(model).__name__} lacks "
                        f"{', '.join(missing)}")
    return model


__all__ = ["LossModel", "check_model"]
