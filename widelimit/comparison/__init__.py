"""Bring your own model: the theory's prediction for a user's network next to its training, in one call.

``widelimit.compare(model, data, weight_decays=..., learning_rate=..., steps=...)`` validates everything,
measures the model's structure (which theory applies), predicts from the model's own kernels (L-homogeneous
nets: docs/theory.md §2–§3) or its measured gradient noise (scale-invariant groups: §6), trains it with
widelimit's one loop over seeds × weight decays, and judges predicted vs measured with bootstrap intervals
(§8). Returns a frozen :class:`CompareResult`; with ``out_dir`` writes a Markdown + JSON + plots report.
This is a meeting layer like :mod:`widelimit.studies`: it imports both theory and training.
The package is ``widelimit.comparison`` so that ``widelimit.compare`` is always the function.
"""
from .core import CompareResult, compare, cost_line, prepare
from .inputs import Settings

__all__ = ["compare", "CompareResult", "Settings", "prepare", "cost_line"]
