"""The parser of the ``widelimit`` command and its entry point :func:`main`."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from . import compare, derive, solve, table_norms, table_ntk, validate
from .errors import EXIT_FAIL, EXIT_USAGE, CommandError, UsageError


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``<prog>: error: <message> (see --help)`` on stderr, exit 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``widelimit`` command (all subcommands)."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = Parser(
        prog="widelimit", formatter_class=fmt,
        description="Infinite-width (NTK) predictions for wide networks trained with weight decay, and their "
                    "validation against finite networks.",
        epilog="Conventions (docs/theory.md §1): weight decay λ with penalty (λ/2)||θ||², GD θ ← θ − η(∇ℓ + λθ), "
               "physical time t = η·steps,\nMSE 1/(2NK) Σ (f−y)². Run 'widelimit SUBCOMMAND --help' for the "
               "options of each.")
    from widelimit import __version__
    parser.add_argument("--version", action="version", version=f"widelimit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    sub.required = True
    solve.register(sub, fmt)
    pt = sub.add_parser("table", formatter_class=fmt, help="prediction tables over grids (ntk, norms)",
                        description="Prediction tables over grids. 'table ntk': t*, c = λ·t*, λ_opt for step "
                                    "budgets, kernel and output decay times;\n'table norms': scale-invariant "
                                    "groups per optimiser (equilibrium angular update, effective LR, relaxation "
                                    "time).")
    tsub = pt.add_subparsers(dest="table", metavar="TABLE")
    tsub.required = True
    table_ntk.register(tsub, fmt)
    table_norms.register(tsub, fmt)
    validate.register(sub, fmt)
    derive.register(sub, fmt)
    compare.register(sub, fmt)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``widelimit`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit status
    (0 ok, 1 failure while computing, 2 bad arguments -- one line on stderr naming the option)."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as e:  # --help/--version (0) or an argparse error (2, message already printed)
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    prog = args._parser.prog
    try:
        return args.func(args)
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except CommandError as e:
        print(f"{prog}: failed: {e}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
