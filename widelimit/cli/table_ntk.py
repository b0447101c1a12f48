"""``widelimit table ntk``: t*, c = λ·t*, λ_opt per step budget, kernel/output decay times, validity."""
from __future__ import annotations

from . import _theory
from .argtypes import positive_float, positive_int
from .errors import EXIT_OK, UsageError
from .ntk_common import (F0_NOTE, add_model_options, add_seeds_option, build_model, check_model_options,
                         mean_model, solver_se_note, tstar_rows, tstar_table, validity_warnings)
from .options import add_arch, add_data, add_table_output, check_problem_args
from .problem import check_memory, load_problem
from .progress import add_progress_option
from .writing import check_table_outputs, warn_validity, write_tables

BUDGET_UNITS = {"T": "steps", "ηT": "η·steps", "λ_opt": "1/(η·steps)", "test loss at λ_opt": "MSE",
                "validity": "enum", "rule c/(ηT)": "1/(η·steps)", "test loss (rule)": "MSE"}


def register(tsub, fmt) -> None:
    pn = tsub.add_parser(
        "ntk", formatter_class=fmt, help="t*, c, λ_opt(T), kernel/output decay times of the NTK-regime L2 flow",
        description="Per weight decay λ: best-test time t* (η·steps and, with --learning-rate, steps), c = λ·t*, "
                    "the test loss there,\nthe kernel decay time 1/(2(L−1)λ), the output decay time 1/(Lλ) and a "
                    "validity flag.\nPer budget T (steps, needs --learning-rate): λ_opt, the theory's own "
                    "optimum of the test loss after T steps (a fine, refined λ grid),\nand, in a separate column, "
                    "the rule c/(ηT) with c from the λ rows whose t* is a clear interior optimum.\n"
                    "Every row not 'ok' is also reported as a one-line warning on stderr.",
        epilog="example: widelimit table ntk --data digits --n-train 200 --weight-decay 0.1 0.01 0.001 "
               "--budgets 1000 10000 --learning-rate 0.1")
    add_arch(pn)
    add_data(pn)
    g = pn.add_argument_group("grids")
    g.add_argument("--weight-decay", dest="weight_decay", nargs="+", type=positive_float,
                   default=[0.1, 0.03, 0.01, 0.003, 0.001], metavar="λ",
                   help="weight decay λ of the t* table (default 0.1 0.03 0.01 0.003 0.001)")
    g.add_argument("--budgets", "--steps", dest="budgets", nargs="+", type=positive_int, default=None,
                   metavar="T", help="step budgets T for λ_opt (step counts; needs --learning-rate)")
    g.add_argument("--learning-rate", dest="learning_rate", type=positive_float, default=None, metavar="η",
                   help="learning rate η (steps = t/η); flags η·μ_max ≥ 2 (unstable) and t* below a few steps")
    g.add_argument("--search-weight-decay", dest="search_weight_decay", nargs="+", type=positive_float,
                   default=None, metavar="λ",
                   help="λ grid searched for λ_opt (default: 24 per decade over λ·ηT ∈ [1e-3, 1e2], refined)")
    add_model_options(g)
    add_seeds_option(g)
    add_table_output(pn)
    add_progress_option(pn)
    pn.set_defaults(_parser=pn, func=run)


def run(args) -> int:
    """Per-λ time scales and per-budget λ_opt (``widelimit table ntk --help``)."""
    if args.budgets is not None and args.learning_rate is None:
        raise UsageError("--budgets are step counts: give the learning rate with --learning-rate "
                         "(budget time = η·T)")
    if args.search_weight_decay is not None and args.budgets is None:
        raise UsageError("--search-weight-decay is the λ grid searched for λ_opt: it needs --budgets")
    check_model_options(args)
    check_problem_args(args)
    keys = ["tstar"] + (["lambda_opt"] if args.budgets is not None else [])
    check_table_outputs(args, keys)
    check_memory(args)
    from widelimit.tables import Table

    prob = load_problem(args)
    model = build_model(prob, args)
    acc_model = mean_model(prob, args, model) if prob.classification else None
    lams = sorted(set(args.weight_decay), reverse=True)
    rows = tstar_rows(model, lams, args)
    spread = None if args.seeds is None else _theory.t_star_spread(model, lams, args.seeds)
    tables = {"tstar": tstar_table(prob, model, rows, args, accuracy_model=acc_model, spread=spread)}
    warnings = validity_warnings(rows)

    if args.budgets is not None:
        eta = args.learning_rate
        budgets = sorted(set(args.budgets))
        opt = _theory.lambda_opt_rows(_theory.lambda_opt(model, budgets, eta, args.search_weight_decay))
        rule = _theory.lambda_rule(model, lams, budgets, eta)
        ok = [float(x) for x in rule.reference_weight_decay]
        c = rule.c if ok else None
        opt_spread = None if args.seeds is None else _theory.lambda_opt_spread(
            model, budgets, eta, args.seeds, args.search_weight_decay)
        cols = list(BUDGET_UNITS)
        units = dict(BUDGET_UNITS)
        with_se = any(r.solver_se is not None for r in opt)
        if with_se:
            cols.insert(3, "λ_opt solver s.e.")
            units["λ_opt solver s.e."] = "1/(η·steps)"
        if opt_spread is not None:
            extra = [f"λ_opt {opt_spread.level:.0%} low ({args.seeds} seeds)",
                     f"λ_opt {opt_spread.level:.0%} high ({args.seeds} seeds)"]
            cols[3 + with_se:3 + with_se] = extra
            units.update({c: "1/(η·steps)" for c in extra})
        per_budget = Table(cols, title="Weight decay for a step budget T", units={c: units[c] for c in cols},
                           caption=f"{prob.source}; L = {prob.L}; η = {eta:g}",
                           notes=["λ_opt: the λ minimising the theory's test MSE after T steps (time ηT) over "
                                  + ("the --search-weight-decay grid" if args.search_weight_decay else
                                     "24 λ per decade across λ·ηT ∈ [1e-3, 1e2]")
                                  + f", refined; {F0_NOTE[args.f0]}",
                                  (f"rule: c/(ηT) with c = {c:.4g}, the geometric mean of λ·t* over the rows with "
                                   "a clear interior optimum (validity ok): λ = " + ", ".join(f"{x:g}" for x in ok)
                                   if ok else "rule: no λ row has a clear interior optimum (validity ok), so "
                                              "c = λ·t* and the rule column are undefined"),
                                  "validity: of λ_opt (no-learning: loss within 1% of the zero function's; "
                                  "grid-edge: λ_opt only a bound; unstable: η·μ_max ≥ 2)"],
                           meta={"L": prob.L, "learning_rate": eta, "f0": args.f0, "c": c, "model": model.label})
        if with_se:
            per_budget.notes.append(solver_se_note("λ_opt"))
        if opt_spread is not None:
            per_budget.notes.append(f"λ_opt low/high: the predicted central {opt_spread.level:.0%} interval of "
                                    f"λ_opt of a {args.seeds}-seed average test loss ({opt_spread.method}; "
                                    "docs/theory.md §3.5)")
        for i, r in enumerate(opt):
            lam_rule = c / r.time if c is not None else None
            loss_rule = float(model.test_loss(lam_rule, [r.time])[0]) if lam_rule is not None else None
            band = [] if opt_spread is None else [float(opt_spread.low[i]), float(opt_spread.high[i])]
            per_budget.add_row([r.steps, r.time, r.weight_decay] + ([r.solver_se] if with_se else []) + band
                               + [r.loss, r.validity, lam_rule, loss_rule])
            warnings.append((f"T = {r.steps} steps: λ_opt", r.validity))
        tables["lambda_opt"] = per_budget
    write_tables(tables, args)
    warn_validity(warnings, args._parser.prog)
    return EXIT_OK
