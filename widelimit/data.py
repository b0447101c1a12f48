"""Datasets for the finite-width experiments. Nothing here downloads anything.

``load_dataset(name, **options) -> Dataset``; ``check_dataset_options(name, **options)`` validates and
resolves the options without loading (it is what :meth:`widelimit.train.RunConfig.validate` calls).

Datasets (``DATASETS``):

* ``"teacher"``  synthetic regression: Gaussian inputs ``x ~ N(0, I_d)`` (or rescaled onto the sphere
  ``||x||^2 = d``), targets from a random teacher plus optional Gaussian noise:
  ``"relu"`` teacher ``y_k = sqrt(2/m) sum_j a_jk relu(w_j . x / sqrt(d))`` (random features, m = teacher_width,
  ``w_j ~ N(0, I)``, ``a ~ N(0, 1)``) or ``"linear"`` teacher ``y_k = beta_k . x / sqrt(d)``.
* ``"digits"``   scikit-learn's 8x8 digits (1797 examples, shipped inside scikit-learn); no official split,
  so a seeded random split of the (class-filtered) pool.
* ``"mnist1d"``  MNIST-1D generated offline by ``mnist1d.data.make_dataset`` with the package's default
  arguments (4000 train / 1000 test signals of length 40); optional cache of the generated arrays.
* ``"cifar10"``  CIFAR-10 read from a local directory in the standard python-pickle format
  (``data_batch_1`` .. ``data_batch_5``, ``test_batch``); a clear error when it is missing. Pixels are
  scaled to [0, 1] (then normalised, per channel by default); images are ``(N, 32, 32, 3)`` channels-last.

Common classification options: ``classes`` (subset of class ids, e.g. ``[0, 1]``; the order defines the
target columns), ``n_train``/``n_test`` (subsample sizes, ``None`` = all available), ``seed`` (split and
subsampling), ``normalize``, ``targets`` (``"onehot"``; ``"onehot_centered"`` = one-hot minus ``1/C``;
``"pm1"`` = a single column, ``-1`` for ``classes[0]`` and ``+1`` for ``classes[1]``, two classes only),
``layout`` and ``dtype``.

Normalisation (statistics from the training split only, then applied to both splits):
``"feature"`` per input coordinate (zero mean, unit variance; constant coordinates become 0),
``"channel"`` per channel over all positions (images/signals), ``"global"`` one mean and std for all,
``"l2"`` each example rescaled to ``||x||^2 = d`` (d = number of input numbers; no centring), ``None``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

DATASETS = ("teacher", "digits", "mnist1d", "cifar10")
NORMALIZATIONS = ("feature", "channel", "global", "l2", None)
TARGETS = ("onehot", "onehot_centered", "pm1")
DTYPES = ("float32", "float64")
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


class DatasetNotFoundError(FileNotFoundError, ValueError):
    """A local dataset (CIFAR-10) is not where the options say; widelimit never downloads data."""


@dataclass(frozen=True)
class Dataset:
    """A train/test split ready for training.

    ``x_*`` have shape ``(N, *in_shape)``; ``y_*`` are float targets of shape ``(N, K)``.
    ``labels`` lists the original class ids in target-column order (``None`` for regression);
    ``c_train``/``c_test`` are integer class indices into ``labels`` (``None`` for regression).
    ``meta`` holds the resolved options, the normalisation statistics and ``task``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels: Optional[Tuple[int, ...]]
    name: str
    meta: Dict[str, Any] = field(default_factory=dict)
    c_train: Optional[np.ndarray] = None
    c_test: Optional[np.ndarray] = None

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def in_shape(self) -> Tuple[int, ...]:
        """Per-example input shape."""
        return tuple(int(s) for s in self.x_train.shape[1:])

    @property
    def out_dim(self) -> int:
        """Number of target columns K."""
        return int(self.y_train.shape[1])

    @property
    def task(self) -> str:
        return "regression" if self.labels is None else "classification"


# ------------------------------------------------------------------------------------------------
# option validation
# ------------------------------------------------------------------------------------------------
def _v_int(lo: int, allow_none: bool = False) -> Callable:
    def check(name, v):
        if v is None and allow_none:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int{' or None' if allow_none else ''}, got {v!r}")
        if v < lo:
            raise ValueError(f"{name} must be >= {lo}, got {v}")
        return int(v)
    return check


def _v_float(lo: float = 0.0) -> Callable:
    def check(name, v):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
            raise TypeError(f"{name} must be a number, got {v!r}")
        if not math.isfinite(v) or v < lo:
            raise ValueError(f"{name} must be a finite number >= {lo}, got {v}")
        return float(v)
    return check


def _v_choice(choices) -> Callable:
    def check(name, v):
        if v not in choices:
            raise ValueError(f"{name} must be one of {choices}, got {v!r}")
        return v
    return check


def _v_bool(name, v):
    if not isinstance(v, bool):
        raise TypeError(f"{name} must be True or False, got {v!r}")
    return v


def _v_path(name, v):
    if v is None:
        return None
    if not isinstance(v, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str) or None, got {v!r}")
    return str(v)


def _v_classes(n_classes: int) -> Callable:
    def check(name, v):
        if v is None:
            return None
        if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
            raise TypeError(f"{name} must be a list of class ids or None, got {v!r}")
        out = []
        for c in v:
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < n_classes:
                raise ValueError(f"{name} must contain class ids in 0..{n_classes - 1}, got {c!r}")
            out.append(int(c))
        if len(out) < 2 or len(set(out)) != len(out):
            raise ValueError(f"{name} must list at least two distinct classes, got {list(v)!r}")
        return out
    return check


_COMMON_CLS = {
    "n_train": (None, _v_int(1, allow_none=True)),
    "n_test": (None, _v_int(1, allow_none=True)),
    "seed": (0, _v_int(0)),
    "targets": ("onehot", _v_choice(TARGETS)),
    "dtype": ("float64", _v_choice(DTYPES)),
}

_SCHEMAS: Dict[str, Dict[str, Tuple[Any, Callable]]] = {
    "teacher": {
        "n_train": (256, _v_int(1)),
        "n_test": (256, _v_int(1)),
        "in_dim": (16, _v_int(1)),
        "out_dim": (1, _v_int(1)),
        "teacher": ("relu", _v_choice(("relu", "linear"))),
        "teacher_width": (256, _v_int(1)),
        "noise": (0.0, _v_float(0.0)),
        "input_dist": ("gaussian", _v_choice(("gaussian", "sphere"))),
        "seed": (0, _v_int(0)),
        "normalize": (None, _v_choice(NORMALIZATIONS)),
        "layout": ("flat", _v_choice(("flat", "signal"))),
        "dtype": ("float64", _v_choice(DTYPES)),
    },
    "digits": {
        **_COMMON_CLS,
        "classes": (None, _v_classes(10)),
        "normalize": ("feature", _v_choice(NORMALIZATIONS)),
        "layout": ("flat", _v_choice(("flat", "image"))),
    },
    "mnist1d": {
        **_COMMON_CLS,
        "classes": (None, _v_classes(10)),
        "normalize": ("feature", _v_choice(NORMALIZATIONS)),
        "layout": ("flat", _v_choice(("flat", "signal"))),
        "generator_seed": (42, _v_int(0)),
        "cache": (True, _v_bool),
    },
    "cifar10": {
        **_COMMON_CLS,
        "classes": (None, _v_classes(10)),
        "normalize": ("channel", _v_choice(NORMALIZATIONS)),
        "layout": ("image", _v_choice(("image", "flat"))),
        "dtype": ("float32", _v_choice(DTYPES)),
        "path": (None, _v_path),
    },
}


def dataset_options(name: str) -> Dict[str, Any]:
    """The options accepted by dataset ``name`` with their defaults."""
    _check_name(name)
    return {k: d for k, (d, _) in _SCHEMAS[name].items()}


def _check_name(name) -> None:
    if name not in DATASETS:
        raise ValueError(f"dataset name must be one of {DATASETS}, got {name!r}")


def check_dataset_options(name: str, **options) -> Dict[str, Any]:
    """Validate ``options`` for dataset ``name`` (cheap, loads nothing) and return them with defaults filled.

    Raises ``ValueError``/``TypeError`` naming the offending option; for ``cifar10`` also checks that the
    directory holds the expected files (:class:`DatasetNotFoundError`, a ``ValueError``).
    """
    _check_name(name)
    schema = _SCHEMAS[name]
    unknown = sorted(set(options) - set(schema))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for dataset {name!r}; accepted: {sorted(schema)}")
    out = {}
    for key, (default, check) in schema.items():
        out[key] = check(f"{name} option {key!r}", options.get(key, default))
    if out.get("targets") == "pm1":
        n_cls = len(out["classes"]) if out.get("classes") is not None else 10
        if n_cls != 2:
            raise ValueError(f"{name} option 'targets'='pm1' needs exactly two classes "
                             f"(e.g. classes=[0, 1]), got {n_cls}")
    if name == "cifar10":
        _cifar10_dir(out["path"])
    return out


# ------------------------------------------------------------------------------------------------
# helpers shared by the loaders
# ------------------------------------------------------------------------------------------------
def _normalize(x_tr: np.ndarray, x_te: np.ndarray, how: Optional[str], name: str):
    """Apply normalisation ``how`` with statistics from ``x_tr``; returns (x_tr, x_te, stats)."""
    if how is None:
        return x_tr, x_te, {}
    if how == "l2":
        d = float(np.prod(x_tr.shape[1:]))

        def scale(x):
            n = np.sqrt(np.sum(x.reshape(len(x), -1) ** 2, axis=1))
            n = np.where(n > 0, n, 1.0)
            return x * (math.sqrt(d) / n).reshape((-1,) + (1,) * (x.ndim - 1))
        return scale(x_tr), scale(x_te), {"normalize": "l2"}
    if how == "feature":
        axes = (0,)
    elif how == "channel":
        axes = tuple(range(x_tr.ndim - 1))
    else:  # global
        axes = tuple(range(x_tr.ndim))
    mean = x_tr.mean(axis=axes, keepdims=True)
    std = x_tr.std(axis=axes, keepdims=True)
    std = np.where(std > 0, std, 1.0)
    return (x_tr - mean) / std, (x_te - mean) / std, {"mean": mean.squeeze(), "std": std.squeeze()}


def _encode_targets(c: np.ndarray, n_classes: int, kind: str) -> np.ndarray:
    """Targets from class indices ``c`` in ``0..n_classes-1``."""
    if kind == "pm1":
        return (2.0 * c - 1.0)[:, None]
    y = np.eye(n_classes)[c]
    if kind == "onehot_centered":
        y = y - 1.0 / n_classes
    return y


def _select_classes(x, labels, classes):
    """Keep examples whose label is in ``classes``; return (x, class index into ``classes``)."""
    lut = -np.ones(int(labels.max()) + 1 if labels.size else 1, dtype=np.int64)
    for i, c in enumerate(classes):
        if c < len(lut):
            lut[c] = i
    idx = lut[labels]
    keep = idx >= 0
    return x[keep], idx[keep]


def _subsample(n_avail: int, n: Optional[int], rng: np.random.Generator, what: str, name: str):
    if n is None:
        return rng.permutation(n_avail)
    if n > n_avail:
        raise ValueError(f"{name} option {what}={n} exceeds the {n_avail} examples available")
    return rng.permutation(n_avail)[:n]


def _finish(name, opts, x_tr, c_tr, x_te, c_te, classes, structure, scale=1.0) -> Dataset:
    """``structure`` maps raw rows to the structured (signal/image, channels-last) form, in which the
    normalisation is computed; ``layout="flat"`` flattens afterwards."""
    n_cls = len(classes)
    work = np.dtype(opts["dtype"])  # float32 data (CIFAR) is normalised in float32 to save memory
    x_tr = structure(x_tr).astype(work) * work.type(scale)
    x_te = structure(x_te).astype(work) * work.type(scale)
    x_tr, x_te, stats = _normalize(x_tr, x_te, opts["normalize"], name)
    if opts["layout"] == "flat":
        x_tr, x_te = x_tr.reshape(len(x_tr), -1), x_te.reshape(len(x_te), -1)
    dt = np.dtype(opts["dtype"])
    y_tr = _encode_targets(c_tr, n_cls, opts["targets"])
    y_te = _encode_targets(c_te, n_cls, opts["targets"])
    meta = {"options": dict(opts), "task": "classification", "normalization": stats}
    return Dataset(x_tr.astype(dt), y_tr.astype(dt), x_te.astype(dt), y_te.astype(dt), tuple(classes), name,
                   meta, c_tr.astype(np.int64), c_te.astype(np.int64))


def _split_pool(name, opts, x, labels, structure) -> Dataset:
    """Class filter + seeded disjoint train/test split of one pool (datasets without an official split)."""
    classes = opts["classes"] if opts["classes"] is not None else list(range(10))
    x, c = _select_classes(x, labels, classes)
    n = len(x)
    n_test = opts["n_test"] if opts["n_test"] is not None else int(round(0.2 * n))
    n_train = opts["n_train"] if opts["n_train"] is not None else n - n_test
    if n_train + n_test > n:
        raise ValueError(f"{name}: n_train + n_test = {n_train + n_test} exceeds the {n} examples of "
                         f"classes {classes}")
    perm = np.random.default_rng(opts["seed"]).permutation(n)
    te, tr = perm[:n_test], perm[n_test:n_test + n_train]
    return _finish(name, opts, x[tr], c[tr], x[te], c[te], classes, structure)


def _official_split(name, opts, x_tr, l_tr, x_te, l_te, structure, scale=1.0) -> Dataset:
    """Class filter + seeded subsampling of each side of an official train/test split."""
    classes = opts["classes"] if opts["classes"] is not None else list(range(10))
    x_tr, c_tr = _select_classes(x_tr, l_tr, classes)
    x_te, c_te = _select_classes(x_te, l_te, classes)
    rng = np.random.default_rng(opts["seed"])
    i_tr = _subsample(len(x_tr), opts["n_train"], rng, "n_train", name)
    i_te = _subsample(len(x_te), opts["n_test"], rng, "n_test", name)
    return _finish(name, opts, x_tr[i_tr], c_tr[i_tr], x_te[i_te], c_te[i_te], classes, structure, scale)


# ------------------------------------------------------------------------------------------------
# loaders
# ------------------------------------------------------------------------------------------------
def _load_teacher(opts) -> Dataset:
    rng = np.random.default_rng(opts["seed"])
    d, k, n = opts["in_dim"], opts["out_dim"], opts["n_train"] + opts["n_test"]
    x = rng.standard_normal((n, d))
    if opts["input_dist"] == "sphere":
        x *= math.sqrt(d) / np.linalg.norm(x, axis=1, keepdims=True)
    if opts["teacher"] == "relu":
        m = opts["teacher_width"]
        w = rng.standard_normal((d, m))
        a = rng.standard_normal((m, k))
        f = math.sqrt(2.0 / m) * np.maximum(x @ w / math.sqrt(d), 0.0) @ a
    else:
        beta = rng.standard_normal((d, k))
        f = x @ beta / math.sqrt(d)
    y = f + opts["noise"] * rng.standard_normal(f.shape)
    n_tr = opts["n_train"]
    x_tr, x_te, stats = _normalize(x[:n_tr, :, None], x[n_tr:, :, None], opts["normalize"], "teacher")
    if opts["layout"] == "flat":
        x_tr, x_te = x_tr[..., 0], x_te[..., 0]
    dt = np.dtype(opts["dtype"])
    meta = {"options": dict(opts), "task": "regression", "normalization": stats,
            "noiseless_train": f[:n_tr].astype(dt), "noiseless_test": f[n_tr:].astype(dt)}
    return Dataset(x_tr.astype(dt), y[:n_tr].astype(dt), x_te.astype(dt), y[n_tr:].astype(dt), None,
                   "teacher", meta)


def _load_digits(opts) -> Dataset:
    from sklearn.datasets import load_digits  # the data ship inside scikit-learn

    bunch = load_digits()
    return _split_pool("digits", opts, bunch.data, bunch.target.astype(np.int64),
                       lambda a: a.reshape(len(a), 8, 8, 1))


def cache_dir() -> Path:
    """Where generated arrays are cached: ``$WIDELIMIT_CACHE_DIR`` or ``~/.cache/widelimit``."""
    return Path(os.environ.get("WIDELIMIT_CACHE_DIR") or Path.home() / ".cache" / "widelimit")


def _mnist1d_arrays(generator_seed: int, use_cache: bool):
    """Generate (or read from the cache) MNIST-1D with the package's default arguments."""
    import mnist1d.data as m1d  # make_dataset generates offline; get_dataset would download

    args = m1d.get_dataset_args()
    args.seed = generator_seed
    key = json.dumps({k: v for k, v in vars(args).items() if k != "url"}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = cache_dir() / f"mnist1d-{digest}.npz"
    if use_cache and path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return z["x"], z["y"], z["x_test"], z["y_test"]
        except (OSError, ValueError, KeyError):
            pass  # corrupt cache entry: regenerate below
    np_state, py_state = np.random.get_state(), random.getstate()
    try:  # make_dataset reseeds the global RNGs: restore them afterwards
        ds = m1d.make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    arrays = (np.asarray(ds["x"]), np.asarray(ds["y"]).astype(np.int64),
              np.asarray(ds["x_test"]), np.asarray(ds["y_test"]).astype(np.int64))
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                np.savez(fh, x=arrays[0], y=arrays[1], x_test=arrays[2], y_test=arrays[3])
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache directory only costs regeneration time
    return arrays


def _load_mnist1d(opts) -> Dataset:
    x, y, x_te, y_te = _mnist1d_arrays(opts["generator_seed"], opts["cache"])
    return _official_split("mnist1d", opts, x, y, x_te, y_te, lambda a: a[..., None])


def _cifar10_dir(path: Optional[str]) -> Path:
    """Resolve the CIFAR-10 directory or raise :class:`DatasetNotFoundError` saying what is expected."""
    given = path if path is not None else os.environ.get("WIDELIMIT_CIFAR10_DIR")
    root = Path(given) if given else cache_dir() / "cifar-10-batches-py"
    candidates = [root, root / "cifar-10-batches-py"]
    for c in candidates:
        if all((c / f).is_file() for f in CIFAR10_FILES):
            return c
    missing = [f for f in CIFAR10_FILES if not (root / f).is_file()]
    raise DatasetNotFoundError(
        f"cifar10 option 'path': no CIFAR-10 (python version) at {str(root)!r} (missing {missing}). "
        "widelimit never downloads data: get cifar-10-python.tar.gz from "
        "https://www.cs.toronto.edu/~kriz/cifar.html, extract it, and pass path='.../cifar-10-batches-py' "
        "(or set WIDELIMIT_CIFAR10_DIR).")


def _read_cifar_batch(path: Path):
    with open(path, "rb") as fh:
        d = pickle.load(fh, encoding="bytes")  # the official files are Python-2 pickles
    if not isinstance(d, dict):
        raise ValueError(f"{path} is not a CIFAR-10 batch (expected a dict, got {type(d).__name__})")
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    if "data" not in d or "labels" not in d:
        raise ValueError(f"{path} is not a CIFAR-10 batch: keys {sorted(d)} lack 'data'/'labels'")
    data = np.asarray(d["data"], dtype=np.uint8)
    labels = np.asarray(d["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise ValueError(f"{path}: expected data of shape (N, 3072) and N labels, got {data.shape} "
                         f"and {labels.shape}")
    return data, labels


def _load_cifar10(opts) -> Dataset:
    root = _cifar10_dir(opts["path"])
    parts = [_read_cifar_batch(root / f) for f in CIFAR10_FILES[:5]]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    x_te, y_te = _read_cifar_batch(root / "test_batch")

    def structure(a):  # rows are 1024 R, 1024 G, 1024 B values, each a row-major 32x32 plane; -> NHWC
        return a.reshape(len(a), 3, 32, 32).transpose(0, 2, 3, 1)
    return _official_split("cifar10", opts, x, y, x_te, y_te, structure, scale=1.0 / 255.0)


_LOADERS = {"teacher": _load_teacher, "digits": _load_digits, "mnist1d": _load_mnist1d,
            "cifar10": _load_cifar10}


def load_dataset(name: str, **options) -> Dataset:
    """Load dataset ``name`` (one of ``DATASETS``) with ``options`` (see :func:`dataset_options`).

    Options are validated before anything is read or generated. Inputs are returned in the requested
    ``layout`` (``"flat"`` ``(N, d)`` for MLPs; ``"image"`` ``(N, H, W, C)`` or ``"signal"`` ``(N, L, 1)``
    for CNNs) and ``dtype``; targets are ``(N, K)`` floats. Nothing is downloaded.
    """
    opts = check_dataset_options(name, **options)
    return _LOADERS[name](opts)


__all__ = ["Dataset", "DATASETS", "DatasetNotFoundError", "load_dataset", "check_dataset_options",
           "dataset_options", "cache_dir"]
