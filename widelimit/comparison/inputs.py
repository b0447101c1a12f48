"""Validation of everything :func:`widelimit.compare` is given, before any compute.

Every check raises ``ValueError`` / ``TypeError`` naming the argument: the model (via
:func:`widelimit.models.as_model`: params must be a pytree of floating-point arrays), the data (arrays,
shapes, targets against the model's output shape by ``jax.eval_shape``), the hyper-parameters (names of
docs/theory.md §1) and the output directory (created empty, or refused).
"""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from ..data import Dataset
from ..train.optim import OPTIMIZERS


@dataclass(frozen=True)
class Settings:
    """The validated hyper-parameters of one comparison (names and units of docs/theory.md §1).

    weight_decays: λ values trained and predicted (> 0, 1/(η·steps)); learning_rate: η; steps: T;
    budgets: step budgets for λ_opt; seeds: number of initialisations per λ; optimizer; weight_decay_mask:
    glob patterns over ``"layer/array"`` paths or None (all); batch_size: None (full batch) or B;
    eval_every: steps between logged points; ntk_seeds: initialisations averaged in the empirical NTK;
    nngp_samples: initialisations in the Monte-Carlo NNGP; dtype: training precision; tolerance: relative
    tolerance of the claims; level: confidence level of measured and predicted intervals; noise_steps:
    steps of the short run from which the unit-scale gradient noise G is estimated.
    """

    weight_decays: Tuple[float, ...]
    learning_rate: float
    steps: int
    budgets: Tuple[int, ...]
    seeds: int
    optimizer: str
    weight_decay_mask: Optional[Tuple[str, ...]]
    batch_size: Optional[int]
    eval_every: int
    ntk_seeds: int
    nngp_samples: int
    dtype: str
    tolerance: float
    level: float
    noise_steps: int


def as_dataset(data) -> Dataset:
    """A :class:`widelimit.data.Dataset`, a dict with ``x_train, y_train, x_test, y_test`` or that 4-tuple."""
    if isinstance(data, Dataset):
        return data
    keys = ("x_train", "y_train", "x_test", "y_test")
    if isinstance(data, dict):
        missing = [k for k in keys if k not in data]
        if missing:
            raise ValueError(f"data: dict is missing {missing}; needs {list(keys)}")
        arrays = [data[k] for k in keys]
    elif isinstance(data, (tuple, list)) and len(data) == 4:
        arrays = list(data)
    else:
        raise TypeError("data: expected a widelimit Dataset, a dict with x_train/y_train/x_test/y_test or the "
                        f"tuple (x_train, y_train, x_test, y_test), got {type(data).__name__}")
    out = []
    for k, a in zip(keys, arrays):
        try:
            arr = np.asarray(a, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"data: {k} is not a numeric array ({exc})") from None
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"data: {k} has non-finite values")
        out.append(arr)
    xtr, ytr, xte, yte = out
    for k, y in (("y_train", ytr), ("y_test", yte)):
        if y.ndim != 2:
            raise ValueError(f"data: {k} must have shape (n, K), got {y.shape}")
    if xtr.ndim < 2 or xte.shape[1:] != xtr.shape[1:]:
        raise ValueError(f"data: x_train and x_test need shapes (n, *input_shape) with the same input shape, "
                         f"got {xtr.shape} and {xte.shape}")
    if xtr.shape[0] != ytr.shape[0] or xte.shape[0] != yte.shape[0]:
        raise ValueError(f"data: x and y disagree on the number of examples: train {xtr.shape[0]} vs "
                         f"{ytr.shape[0]}, test {xte.shape[0]} vs {yte.shape[0]}")
    if ytr.shape[1] != yte.shape[1]:
        raise ValueError(f"data: y_train has {ytr.shape[1]} columns, y_test {yte.shape[1]}")
    return Dataset(xtr.astype(np.float32), ytr.astype(np.float32), xte.astype(np.float32),
                   yte.astype(np.float32), None, "user", {"task": "regression"})


def _positive(name: str, v, *, integer: bool = False, minimum=None) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or (integer and not isinstance(v, numbers.Integral)):
        raise TypeError(f"{name}: must be {'an int' if integer else 'a number'}, got {v!r}")
    if not math.isfinite(v) or v <= 0 or (minimum is not None and v < minimum):
        raise ValueError(f"{name}: must be {'>= ' + str(minimum) if minimum is not None else '> 0'} and "
                         f"finite, got {v!r}")
    return int(v) if integer else float(v)


def check_settings(*, weight_decays, learning_rate, steps, seeds, optimizer, budgets=None,
                   weight_decay_mask=None, batch_size=None, eval_every=None, ntk_seeds=4, nngp_samples=256,
                   dtype="float32", tolerance=0.1, level=0.9, noise_steps=None, n_train: int) -> Settings:
    """Validate the hyper-parameters (module docstring); returns :class:`Settings`."""
    if isinstance(weight_decays, (str, bytes)) or not hasattr(weight_decays, "__len__") or not len(weight_decays):
        raise ValueError(f"weight_decays: need a non-empty list of weight decays, got {weight_decays!r}")
    lams = tuple(_positive("weight_decays", v) for v in weight_decays)
    if len(set(lams)) != len(lams):
        raise ValueError(f"weight_decays: contain duplicates: {lams}")
    eta = _positive("learning_rate", learning_rate)
    steps = _positive("steps", steps, integer=True)
    seeds = _positive("seeds", seeds, integer=True, minimum=2)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: must be one of {OPTIMIZERS}, got {optimizer!r}")
    if max(lams) * eta >= 1:
        raise ValueError(f"weight_decays: learning_rate * weight_decay must be < 1, got {max(lams) * eta:g}")
    budgets = (steps,) if budgets is None else tuple(_positive("budgets", b, integer=True) for b in budgets)
    if not budgets:
        raise ValueError("budgets: need at least one step budget")
    if weight_decay_mask is not None:
        if isinstance(weight_decay_mask, str) or not all(isinstance(p, str) and p for p in weight_decay_mask):
            raise TypeError(f"weight_decay_mask: must be None or a list of glob patterns, got {weight_decay_mask!r}")
        weight_decay_mask = tuple(weight_decay_mask)
    if batch_size is not None:
        batch_size = _positive("batch_size", batch_size, integer=True)
        if batch_size > n_train:
            raise ValueError(f"batch_size: {batch_size} exceeds the {n_train} training examples")
    eval_every = max(1, steps // 200) if eval_every is None else _positive("eval_every", eval_every, integer=True)
    ntk_seeds = _positive("ntk_seeds", ntk_seeds, integer=True)
    nngp_samples = _positive("nngp_samples", nngp_samples, integer=True, minimum=2)
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype: must be 'float32' or 'float64', got {dtype!r}")
    tolerance = float(tolerance)
    if not (0 <= tolerance < 1):
        raise ValueError(f"tolerance: must lie in [0, 1), got {tolerance}")
    level = float(level)
    if not (0 < level < 1):
        raise ValueError(f"level: must lie in (0, 1), got {level}")
    noise_steps = max(1, min(steps, 200)) if noise_steps is None else _positive("noise_steps", noise_steps,
                                                                                integer=True)
    return Settings(lams, eta, steps, budgets, seeds, optimizer, weight_decay_mask, batch_size, eval_every,
                    ntk_seeds, nngp_samples, dtype, tolerance, level, min(noise_steps, steps))


def check_out_dir(out_dir, overwrite: bool) -> Optional[Path]:
    """Create ``out_dir`` (None: no report). An existing non-empty directory needs ``overwrite=True``;
    a file, or a directory that cannot be written, is refused."""
    if out_dir is None:
        return None
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir: must be a path, got {type(out_dir).__name__}")
    p = Path(out_dir)
    if p.exists() and not p.is_dir():
        raise ValueError(f"out_dir: {p} exists and is not a directory")
    if p.is_dir() and any(p.iterdir()) and not overwrite:
        raise ValueError(f"out_dir: {p} is not empty (pass overwrite=True to replace its report)")
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"out_dir: cannot write to {p} ({exc})") from None
    return p


def check_targets(model, data: Dataset) -> None:
    """The model's output shape on ``x_train`` / ``x_test`` must equal the targets' (ValueError naming y)."""
    model.check_targets(data.x_train, data.y_train)
    model.check_targets(data.x_test, data.y_test)


def sample_inputs(x, n: int = 64) -> np.ndarray:
    return np.asarray(x)[: min(n, len(x))]


__all__ = ["Settings", "as_dataset", "check_settings", "check_out_dir", "check_targets", "OPTIMIZERS"]
