"""``widelimit table norms``: equilibrium of scale-invariant weight groups per optimiser (docs/theory.md §6)."""
from __future__ import annotations

from .argtypes import OPTIMIZER_NAMES, optimizer_name, positive_float, positive_int, unit_float
from .errors import EXIT_OK, UsageError, require
from .writing import check_table_outputs, warn_validity, write_tables

COLUMNS = [  # (column, row key, unit)
    ("optimizer", "optimizer", None), ("η", "learning_rate", "1"), ("λ", "weight_decay", "1/(η·steps)"),
    ("ηλ", "learning_rate_times_weight_decay", "1"), ("μ", "momentum", "1"), ("β1", "b1", "1"),
    ("angular update", "angular_update", "rad/step"), ("effective LR", "effective_lr", "1"),
    ("‖w‖² eq.", "norm_sq", "param²"), ("relaxation", "relaxation_steps", "steps"),
    ("relaxation epochs", "relaxation_epochs", "epochs"), ("relaxation time", "relaxation_time", "η·steps"),
    ("validity", "validity", "enum"),
]
NEEDS_GROUP_SIZE = ("adam", "adamw", "lion")
NEEDS_SHAPE = ("muon",)


def register(tsub, fmt) -> None:
    pm = tsub.add_parser(
        "norms", formatter_class=fmt, help="scale-invariant groups: angular update, effective LR, relaxation",
        description="Equilibrium of a scale-invariant weight group (BatchNorm/LayerNorm/WeightNorm) under "
                    "weight decay, per optimiser and (η, λ):\nangular update per step, effective learning "
                    "rate η·κ/||w||², relaxation time to equilibrium in steps (and epochs, η·steps), validity.",
        epilog="example: widelimit table norms --learning-rate 0.1 0.01 --weight-decay 5e-4 5e-3 "
               "--optimizers sgd momentum adamw --group-size 4096")
    g = pm.add_argument_group("grids")
    g.add_argument("--optimizers", nargs="+", type=optimizer_name, default=None, metavar="OPT",
                   help=f"any of {' '.join(OPTIMIZER_NAMES)} (default: all but gd, which is sgd's map here; "
                        f"{', '.join(NEEDS_GROUP_SIZE)} only with --group-size, muon only with --shape)")
    g.add_argument("--learning-rate", dest="learning_rate", nargs="+", type=positive_float, default=[0.1],
                   metavar="η", help="learning rates η (default 0.1)")
    g.add_argument("--weight-decay", dest="weight_decay", nargs="+", type=positive_float, default=[5e-4],
                   metavar="λ", help="weight decay λ (default 5e-4)")
    g.add_argument("--momentum", type=unit_float, default=0.9, help="momentum μ (default 0.9)")
    g.add_argument("--b1", type=unit_float, default=None, help="Adam/AdamW/Lion β1 (default: optax's)")
    g.add_argument("--b2", type=unit_float, default=None, help="Adam/AdamW/Lion β2 (default: optax's)")
    g.add_argument("--grad-norm-sq", type=positive_float, default=1.0, metavar="G",
                   help="G = ||∇ℓ(ŵ)||² at unit norm (default 1; sets the SGD-family norm and effective "
                        "LR and everything for adam)")
    g.add_argument("--group-size", type=positive_int, default=None, metavar="D",
                   help=f"parameters in the group (needed by {', '.join(NEEDS_GROUP_SIZE)})")
    g.add_argument("--shape", nargs=2, type=positive_int, default=None, metavar=("FAN_IN", "FAN_OUT"),
                   help="the weight matrix of the group (needed by muon)")
    g.add_argument("--steps-per-epoch", type=positive_float, default=None,
                   help="steps per epoch, to express relaxation times in epochs")
    from .options import add_table_output
    add_table_output(pm)
    from .progress import add_progress_option
    add_progress_option(pm)
    pm.set_defaults(_parser=pm, func=run)


def run(args) -> int:
    """Equilibrium predictions for scale-invariant groups (:mod:`widelimit.predict_norms`)."""
    import numpy as np
    if args.optimizers is None:
        optimizers = [o for o in OPTIMIZER_NAMES if o != "gd"
                      and (args.group_size is not None or o not in NEEDS_GROUP_SIZE)
                      and (args.shape is not None or o not in NEEDS_SHAPE)]
    else:
        optimizers = list(dict.fromkeys(args.optimizers))
        need = [o for o in optimizers if o in NEEDS_GROUP_SIZE]
        if need and args.group_size is None:
            raise UsageError(f"--group-size D (parameters in the group) is required for {', '.join(need)}")
        if "muon" in optimizers and args.shape is None:
            raise UsageError("--shape FAN_IN FAN_OUT (the group's weight matrix) is required for muon")
    bad = [(lr, lam) for lr in args.learning_rate for lam in args.weight_decay if lr * lam >= 1]
    if bad:
        raise UsageError(f"--learning-rate/--weight-decay: every η·λ must be < 1 (the weight decays by a "
                         f"factor 1 − ηλ per step); got η={bad[0][0]:g}, λ={bad[0][1]:g}")
    check_table_outputs(args, ["norms"])
    table_fn = require("widelimit.predict_norms", "norm_prediction_table")
    lr = np.asarray(args.learning_rate, dtype=float)[:, None]
    lam = np.asarray(args.weight_decay, dtype=float)[None, :]
    try:
        rows = table_fn(optimizers, lr, lam, grad_norm_sq=args.grad_norm_sq, d=args.group_size,
                        shape=None if args.shape is None else tuple(args.shape), momentum=args.momentum,
                        b1=args.b1, b2=args.b2, steps_per_epoch=args.steps_per_epoch)
    except (TypeError, ValueError) as e:
        raise UsageError(f"--optimizers/--learning-rate/--weight-decay: {e}") from None
    from widelimit.tables import Table
    cols = [c for c in COLUMNS if not (c[1] == "relaxation_epochs" and args.steps_per_epoch is None)]
    if not any(o in ("momentum", "nesterov") for o in optimizers):
        cols = [c for c in cols if c[1] != "momentum"]
    if not any(o in NEEDS_GROUP_SIZE for o in optimizers):
        cols = [c for c in cols if c[1] != "b1"]
    table = Table([c[0] for c in cols], [[r.get(key) for _, key, _ in cols] for r in rows],
                  units={c: u for c, _, u in cols if u},
                  title="Scale-invariant groups: equilibrium under weight decay",
                  notes=[f"G = ||∇ℓ(ŵ)||² at unit norm = {args.grad_norm_sq:g}"
                         + (f"; group size d = {args.group_size}" if args.group_size else "")
                         + (f"; β2 = {args.b2:g}" if args.b2 is not None else ""),
                         "leading order in ηλ, uncorrelated gradients (docs/theory.md §6). Angular update per "
                         "step: SGD √(2ηλ), heavy ball √(2ηλ/(1+μ)), AdamW √(2ηλ(1−β1)/(1+β1)); effective LR = "
                         "η·κ/||w||²; relaxation = e-folding time of a deviation from equilibrium",
                         "validity below-step: the relaxation is shorter than one step, outside the "
                         "continuous-time theory"]
                  + ([] if args.group_size or args.optimizers else
                     [f"{', '.join(NEEDS_GROUP_SIZE)} rows need --group-size D, muon rows --shape FAN_IN FAN_OUT"]),
                  meta={"grad_norm_sq": args.grad_norm_sq, "group_size": args.group_size, "b2": args.b2})
    write_tables({"norms": table}, args)
    warn_validity([(f"{r['optimizer']} at η = {r['learning_rate']:g}, λ = {r['weight_decay']:g} (relaxation "
                    f"{r['relaxation_steps']:.3g} steps)", r["validity"]) for r in rows], args._parser.prog)
    return EXIT_OK
