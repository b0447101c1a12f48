"""Datasets at any number of training points for the large-N theory (docs/theory.md §4). Nothing downloads.

* :func:`load_mnist1d_large` -- MNIST-1D with ``n_train + n_test`` signals generated offline by
  ``mnist1d.data.make_dataset`` (the package's default arguments except ``num_samples`` and
  ``train_split``), beyond the default 4000/1000 split of :func:`widelimit.data.load_dataset`. The
  generator draws ``num_samples // 10`` signals per class, so ``n_train + n_test`` is rounded up to a
  multiple of 10 and the surplus dropped from the test side; targets, normalisation (training-split
  statistics) and layout follow ``load_dataset("mnist1d", ...)``.
* the teacher task already works at any N: ``load_dataset("teacher", n_train=50_000, n_test=1000)``;
  :func:`load_teacher_large` is that call with the large-N defaults spelled out.
"""
from __future__ import annotations

import hashlib
import json
import os
import random

import numpy as np

from .data import Dataset, _finish, cache_dir, check_dataset_options, load_dataset


def _check_count(name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
    return int(value)


def _generate(num_samples: int, generator_seed: int, use_cache: bool):
    import mnist1d.data as m1d  # make_dataset generates offline; get_dataset would download

    args = m1d.get_dataset_args()
    args.seed, args.num_samples, args.train_split = generator_seed, num_samples, 1.0
    key = json.dumps({k: v for k, v in vars(args).items() if k != "url"}, sort_keys=True)
    path = cache_dir() / f"mnist1d-large-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if use_cache and path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return z["x"], z["y"]
        except (OSError, ValueError, KeyError):
            pass
    np_state, py_state = np.random.get_state(), random.getstate()
    try:  # make_dataset reseeds the global RNGs: restore them afterwards
        ds = m1d.make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x, y = np.asarray(ds["x"], np.float64), np.asarray(ds["y"]).astype(np.int64)
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                np.savez(fh, x=x, y=y)
            os.replace(tmp, path)
        except OSError:
            pass
    return x, y


def load_mnist1d_large(n_train: int, n_test: int = 1000, *, seed: int = 0, generator_seed: int = 42,
                       normalize="feature", targets: str = "onehot", layout: str = "flat",
                       dtype: str = "float64", cache: bool = True) -> Dataset:
    """MNIST-1D with ``n_train`` training and ``n_test`` test signals (length 40), any sizes.

    ``seed`` shuffles the generated pool before the split; the other options are those of
    ``load_dataset("mnist1d", ...)`` (validated the same way, before anything is generated). Signals
    from one generator call are disjoint between train and test. Generation costs ~0.3 ms per signal
    and is cached under :func:`widelimit.data.cache_dir`.
    """
    n_train = _check_count("n_train", n_train, 1)
    n_test = _check_count("n_test", n_test, 1)
    opts = check_dataset_options("mnist1d", seed=seed, generator_seed=generator_seed, normalize=normalize,
                                 targets=targets, layout=layout, dtype=dtype, cache=cache)
    total = -(-(n_train + n_test) // 10) * 10
    x, labels = _generate(total, opts["generator_seed"], opts["cache"])
    perm = np.random.default_rng(opts["seed"]).permutation(len(x))
    tr, te = perm[:n_train], perm[n_train:n_train + n_test]
    out = _finish("mnist1d", opts, x[tr], labels[tr], x[te], labels[te], list(range(10)),
                  lambda a: a[..., None])
    out.meta["generated"] = total
    return out


def load_teacher_large(n_train: int, n_test: int = 1000, **options) -> Dataset:
    """The teacher regression task at any size (``load_dataset("teacher", ...)``)."""
    return load_dataset("teacher", n_train=_check_count("n_train", n_train, 1),
                        n_test=_check_count("n_test", n_test, 1), **options)


__all__ = ["load_mnist1d_large", "load_teacher_large"]
