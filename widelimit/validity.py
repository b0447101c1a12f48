"""Validity and verdict flags shared by predictions, tables, studies and the CLI (docs/theory.md §3, §8).

These are enums, not strings: compare with ``is``/``==`` against the members; ``.value`` is the short label
printed in tables and stored in JSON.
"""
from __future__ import annotations

import enum


class Validity(str, enum.Enum):
    """Whether a prediction lies inside the range where the theory behind it can be trusted."""

    OK = "ok"
    NO_LEARNING = "no-learning"        # best loss within the stated margin of the zero function's loss
    GRID_EDGE = "grid-edge"            # optimum at the edge of the searched grid (true optimum may lie beyond)
    UNSTABLE = "unstable"              # discrete GD outside its stable range (eta * mu_max >= 2)
    TOO_FAST = "too-fast"              # time scale shorter than a few optimiser steps (flow ≠ discrete steps)
    BELOW_STEP = "below-step"          # relaxation/decay shorter than one step
    NO_INTERIOR_OPTIMUM = "no-interior-optimum"  # monotone curve: the minimum is at t = 0 or t = inf

    def __str__(self) -> str:
        return self.value


class Verdict(str, enum.Enum):
    """Outcome of a claim judged from intervals (docs/theory.md §8)."""

    HOLDS = "holds"                    # the measured interval lies inside the tolerance band of the prediction
    FAILS = "fails"                    # the measured interval lies entirely outside the tolerance band
    INCONCLUSIVE = "inconclusive"      # the interval straddles the band edge: more seeds are needed

    def __str__(self) -> str:
        return self.value
