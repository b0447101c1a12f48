"""``widelimit compare --model package.module:factory``: a user's network, predicted and trained, side by side.

The factory is called without arguments and returns the model — a :class:`widelimit.models.UserModel` or
anything :func:`widelimit.models.as_model` accepts — or ``(model, data)``, or a dict with ``model`` and
optional ``params`` and ``data`` (a :class:`widelimit.data.Dataset`, a dict or the tuple
``(x_train, y_train, x_test, y_test)``). Without data from the factory, ``--data`` is loaded. Everything is
validated (factory, model, targets, hyper-parameters, output directory) before any compute; then one cost
line and progress bars on stderr, and the report of :func:`widelimit.compare` in ``--out``.
"""
from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

from .argtypes import class_list, integer, nonneg_int, optimizer_name, positive_float, positive_int
from .errors import EXIT_OK, CommandError, UsageError
from .progress import add_progress_option

_FACTORY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def register(sub, fmt) -> None:
    p = sub.add_parser(
        "compare", formatter_class=fmt, help="a user's JAX/Flax/Equinox model: theory vs training, one report",
        description="Measure a user's network (homogeneity, scale-invariant groups), predict from its own "
                    "kernels (empirical NTK at init, Monte-Carlo NNGP) or its measured gradient noise, train it\n"
                    "over seeds x weight decays with widelimit's loop, and judge predicted vs measured with "
                    "bootstrap intervals. Writes compare.md, compare.json and plots to --out.",
        epilog="example: widelimit compare --model mypkg.nets:make_model --data digits --classes 3,8 "
               "--targets pm1 --n-train 64 --n-test 64 --weight-decay 0.05 --learning-rate 0.2 --steps 100 "
               "--out out/compare")
    p.add_argument("--model", required=True, metavar="MODULE:FACTORY",
                   help="importable factory (package.module:function) returning the model, (model, data) or "
                        "{'model', 'params', 'data'}")
    g = p.add_argument_group("data (when the factory gives none)")
    g.add_argument("--data", choices=("digits", "mnist1d", "teacher"), default="digits", help="dataset (default digits)")
    g.add_argument("--classes", type=class_list, default=None, help="class subset, e.g. 3,8")
    g.add_argument("--targets", choices=("onehot", "onehot_centered", "pm1"), default=None, help="target encoding")
    g.add_argument("--n-train", type=positive_int, default=64, help="training points (default 64)")
    g.add_argument("--n-test", type=positive_int, default=64, help="test points (default 64)")
    g.add_argument("--data-seed", type=nonneg_int, default=0, help="data subsample seed (default 0)")
    t = p.add_argument_group("training and prediction (docs/theory.md §1 names)")
    t.add_argument("--weight-decay", dest="weight_decay", nargs="+", type=positive_float, required=True,
                   metavar="λ", help="weight decays λ, penalty (λ/2)||θ||²")
    t.add_argument("--learning-rate", dest="learning_rate", type=positive_float, required=True, metavar="η")
    t.add_argument("--steps", type=integer(1), required=True, help="optimiser steps T")
    t.add_argument("--seeds", type=integer(2), default=8, help="initialisations per weight decay (default 8)")
    t.add_argument("--optimizer", type=optimizer_name, default="gd", help="optimizer (default gd)")
    t.add_argument("--weight-decay-mask", nargs="+", default=None, metavar="GLOB",
                   help="arrays that get weight decay, globs over 'layer/array' paths (default all)")
    t.add_argument("--batch-size", type=positive_int, default=None, help="minibatch size (default full batch)")
    t.add_argument("--eval-every", type=positive_int, default=None, help="steps between logs (default T/200)")
    t.add_argument("--budgets", nargs="+", type=integer(1), default=None, help="step budgets for λ_opt (default T)")
    t.add_argument("--ntk-seeds", type=positive_int, default=4, help="initialisations in the empirical NTK (4)")
    t.add_argument("--nngp-samples", type=integer(2), default=256, help="initialisations in the MC NNGP (256)")
    t.add_argument("--tolerance", type=float, default=0.1, help="relative tolerance of the claims (0.1)")
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, default=Path("widelimit-compare"), help="report directory")
    o.add_argument("--force", action="store_true", help="replace the report in a non-empty --out")
    add_progress_option(p)
    p.set_defaults(_parser=p, func=run)


def load_factory(spec: str):
    """Import ``package.module:factory`` and call it; UsageError (one line, ``--model``) on any failure."""
    if not isinstance(spec, str) or not _FACTORY.match(spec):
        raise UsageError(f"--model: expected package.module:factory, got {spec!r}")
    mod_name, attr = spec.split(":", 1)
    try:
        obj = importlib.import_module(mod_name)
    except Exception as exc:  # noqa: BLE001  (any import failure of the user's module is a usage error)
        raise UsageError(f"--model: cannot import {mod_name!r} ({type(exc).__name__}: {exc})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"--model: {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"--model: {spec} is not callable (a factory function returning the model)")
    try:
        return obj()
    except Exception as exc:  # noqa: BLE001
        raise UsageError(f"--model: {spec}() raised {type(exc).__name__}: {exc}") from None


def unpack(spec: str, value):
    """``(UserModel, data or None)`` from the factory's return value; UsageError if it is not a model."""
    from widelimit.models import as_model

    params = data = None
    if isinstance(value, dict) and "model" in value:
        model, params, data = value["model"], value.get("params"), value.get("data")
    elif isinstance(value, tuple) and len(value) == 2 and not all(callable(v) for v in value):
        model, data = value
    else:
        model = value
    try:
        return as_model(model, params), data
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--model: {spec}() did not return a model: {exc}") from None


def _dataset(args):
    from widelimit.data import load_dataset

    opts = {"n_train": args.n_train, "n_test": args.n_test, "seed": args.data_seed}
    if args.data != "teacher":
        opts["classes"] = args.classes
        if args.targets is not None:
            opts["targets"] = args.targets
    try:
        return load_dataset(args.data, **opts)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--data: {exc}") from None


def run(args) -> int:
    from widelimit.comparison import compare, cost_line, prepare

    model, data = unpack(args.model, load_factory(args.model))
    if data is None:
        data = _dataset(args)
    options = dict(weight_decays=args.weight_decay, learning_rate=args.learning_rate, steps=args.steps,
                   seeds=args.seeds, optimizer=args.optimizer, weight_decay_mask=args.weight_decay_mask,
                   batch_size=args.batch_size, eval_every=args.eval_every, budgets=args.budgets,
                   ntk_seeds=args.ntk_seeds, nngp_samples=args.nngp_samples, tolerance=args.tolerance)
    try:
        m, ds, settings, _ = prepare(model, data, out_dir=args.out, overwrite=args.force, **options)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    show = not args.no_progress
    if show:
        print(f"cost: {cost_line(m, ds, settings)}", file=sys.stderr)
    try:
        result = compare(m, ds, out_dir=args.out, overwrite=True, progress=show, **options)
    except (ValueError, RuntimeError, FloatingPointError) as exc:
        raise CommandError(str(exc)) from exc
    counts = result.verdicts
    print(f"{result.model}: {', '.join(t.value for t in result.structure.theories)}; claims "
          f"{counts['holds']} hold, {counts['inconclusive']} inconclusive, {counts['fails']} fail; "
          f"report {Path(args.out) / 'compare.md'}")
    return EXIT_OK
