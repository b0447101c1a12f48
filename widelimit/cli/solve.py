"""``widelimit solve``: closed-form infinite-width L2 dynamics (MSE): trajectories, plot, t* summary."""
from __future__ import annotations

import sys
from pathlib import Path

from . import _theory
from .argtypes import integer, positive_float
from .errors import EXIT_OK, UsageError
from .ntk_common import (F0_NOTE, add_model_options, add_seeds_option, build_model, check_model_options,
                         mean_model, tstar_rows, tstar_table, validity_warnings)
from .options import add_arch, add_data, check_problem_args
from .paths import check_out_dir
from .problem import check_memory, load_problem
from .progress import add_progress_option
from .writing import warn_validity

FILES = ("trajectories.csv", "trajectories.json", "trajectories.png", "summary.md", "summary.json")


def register(sub, fmt) -> None:
    ps = sub.add_parser(
        "solve", formatter_class=fmt, help="closed-form L2 dynamics: trajectories, plot, t* summary",
        description="Closed-form infinite-width gradient flow with L2 (MSE) for an L-homogeneous network:\n"
                    "df/dt = −e^{−2(L−1)λt} Θ̃ (f − y) − Lλ f, Θ̃ = Θ/(NK).\n"
                    "Writes trajectories.csv/json (train/test loss of the model chosen by --f0 per t and λ, "
                    "and the f0 = 0 mean function's test loss/accuracy),\ntrajectories.png and "
                    "summary.md/json (t* = best-test time, c = λ·t*, validity). Times are physical, "
                    "t = η·steps; with --learning-rate, step counts too.",
        epilog="example: widelimit solve --data digits --n-train 200 --depth 3 --weight-decay 0.1 0.01 "
               "--out out/solve")
    add_arch(ps)
    add_data(ps)
    g = ps.add_argument_group("weight decay and time grid")
    g.add_argument("--weight-decay", dest="weight_decay", nargs="+", type=positive_float,
                   default=[0.1, 0.03, 0.01, 0.003], metavar="λ",
                   help="weight decay λ, penalty (λ/2)||θ||² (default 0.1 0.03 0.01 0.003)")
    g.add_argument("--learning-rate", dest="learning_rate", type=positive_float, default=None, metavar="η",
                   help="learning rate η: adds step counts (steps = t/η), flags η·μ_max ≥ 2 and t* below a few "
                        "steps, and allows --steps-min/--steps-max")
    g.add_argument("--t-min", type=positive_float, default=None,
                   help="first time of the log-spaced grid, in η·steps (default 1e-3/max λ)")
    g.add_argument("--t-max", type=positive_float, default=None,
                   help="last time of the grid, in η·steps (default 100/min λ)")
    g.add_argument("--steps-min", type=positive_float, default=None, help="grid start in steps (needs --learning-rate)")
    g.add_argument("--steps-max", type=positive_float, default=None, help="grid end in steps (needs --learning-rate)")
    g.add_argument("--n-times", type=integer(2), default=200, help="grid points (default 200)")
    add_model_options(g)
    add_seeds_option(g)
    o = ps.add_argument_group("output")
    o.add_argument("--out", type=Path, default=Path("widelimit-solve"),
                   help="output directory (default ./widelimit-solve)")
    o.add_argument("--force", action="store_true", help="overwrite the files of an earlier solve in --out")
    o.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    add_progress_option(ps)
    ps.set_defaults(_parser=ps, func=run)


def time_grid(args):
    """Validate the time-grid options; return ``(t_min, t_max)`` in physical time (η·steps)."""
    lam_max, lam_min = max(args.weight_decay), min(args.weight_decay)
    if args.steps_min is not None or args.steps_max is not None:
        if args.learning_rate is None:
            raise UsageError("--steps-min/--steps-max count optimiser steps: give the learning rate with "
                             "--learning-rate")
        if args.t_min is not None or args.t_max is not None:
            raise UsageError("--t-min/--t-max: give the grid either in η·steps (--t-min/--t-max) or in steps "
                             "(--steps-min/--steps-max), not both")
        t_min = None if args.steps_min is None else args.learning_rate * args.steps_min
        t_max = None if args.steps_max is None else args.learning_rate * args.steps_max
        names = ("--steps-min", "--steps-max")
    else:
        t_min, t_max = args.t_min, args.t_max
        names = ("--t-min", "--t-max")
    t_min = 1e-3 / lam_max if t_min is None else t_min
    t_max = 100.0 / lam_min if t_max is None else t_max
    if not t_min < t_max:
        raise UsageError(f"{names[0]} must be smaller than {names[1]} (grid [{t_min:g}, {t_max:g}] in η·steps)")
    return t_min, t_max


def run(args) -> int:
    """Closed-form trajectories of the infinite-width L2 flow (``widelimit solve --help``)."""
    import numpy as np
    t_min, t_max = time_grid(args)
    check_model_options(args)
    check_problem_args(args)
    files = [f for f in FILES if not (args.no_plot and f.endswith(".png"))]
    check_out_dir(args.out, "--out", files=files, force=args.force)
    check_memory(args)
    from widelimit.tables import Table

    prob = load_problem(args)
    from widelimit.predict import loss_curves
    model = build_model(prob, args)
    mean = mean_model(prob, args, model)
    t = np.geomspace(t_min, t_max, args.n_times)
    lams = list(dict.fromkeys(float(x) for x in args.weight_decay))
    eta = args.learning_rate
    curves = loss_curves(model, weight_decays=lams, t=t, train_loss=True)
    test, train = curves.test_loss, curves.train_loss
    mean_curves = loss_curves(mean, weight_decays=lams, t=t, accuracy=prob.classification)
    mean_test = None if mean is model else mean_curves.test_loss
    acc = mean_curves.test_accuracy
    rows = tstar_rows(model, lams, args)

    cols = ["λ", "t"] + (["steps"] if eta else []) + ["train loss", "test loss"] \
        + (["test loss (f0 = 0)"] if mean_test is not None else []) + (["test acc (f0 = 0)"] if acc is not None else [])
    units = {"λ": "1/(η·steps)", "t": "η·steps", "steps": "steps", "train loss": "MSE", "test loss": "MSE",
             "test loss (f0 = 0)": "MSE", "test acc (f0 = 0)": "fraction"}
    traj = Table(cols, title="Infinite-width L2 flow: trajectories", units={c: units[c] for c in cols},
                 caption=f"{prob.source}; L = {prob.L}; MSE 1/(2NK) Σ (f−y)²",
                 notes=[f"train/test loss: {F0_NOTE[args.f0]}"]
                 + (["test loss/acc, f0 = 0: the mean function"] if acc is not None or mean_test is not None else []),
                 meta={"L": prob.L, "learning_rate": eta, "f0": args.f0, "model": model.label})
    for i, lam in enumerate(lams):
        for j, tj in enumerate(t):
            row = [lam, tj] + ([tj / eta] if eta else []) + [train[i, j], test[i, j]]
            row += [mean_test[i, j]] if mean_test is not None else []
            traj.add_row(row + ([acc[i, j]] if acc is not None else []))
    spread = None if args.seeds is None else _theory.t_star_spread(model, lams, args.seeds)
    summary = tstar_table(prob, model, rows, args, accuracy_model=mean if prob.classification else None,
                          spread=spread)

    args.out.mkdir(parents=True, exist_ok=True)
    written = [traj.save(args.out / "trajectories.csv"), traj.save(args.out / "trajectories.json"),
               summary.save(args.out / "summary.md"), summary.save(args.out / "summary.json")]
    if not args.no_plot:
        from widelimit.plots import plot_l2_trajectories
        ok = np.array([r.validity.value in ("ok", "too-fast") for r in rows])
        written.append(plot_l2_trajectories(
            t, np.asarray(lams), test, args.out / "trajectories.png", train_loss=train,
            t_star=np.where(ok, [r.t_star for r in rows], np.nan),
            ylabel="expected test MSE over f0" if args.f0 == "nngp" else "MSE loss",
            title=f"infinite-width L2 flow, L = {prob.L}"))
    sys.stdout.write(summary.to_markdown())
    warn_validity(validity_warnings(rows), args._parser.prog)
    print("wrote " + ", ".join(str(w) for w in written), file=sys.stderr)
    return EXIT_OK
