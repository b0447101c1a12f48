"""``widelimit validate``: run validation studies (theory next to finite networks) and write their reports.

Safe by default: finished runs stored in ``<out>/.cache/<study>-<size>`` are reused (resume); ``--fresh``
moves that store aside (``.old-<timestamp>``, announced on stderr) and never deletes it. The default output
is ``out/validate/<size>``, outside the committed ``validation/``; the committed reports are regenerated with

    widelimit validate all --size quick --out validation/quick --report
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List

from .errors import EXIT_OK, CommandError, UsageError
from .paths import check_out_dir, move_aside
from .progress import add_progress_option, announce

DEFAULT_ROOT = Path("out") / "validate"
REGENERATE = "widelimit validate all --size quick --out validation/quick --report"


def _registry():
    try:
        from widelimit import studies
    except ImportError as e:
        raise CommandError(f"the validation studies are not available (widelimit.studies: {e})") from e
    return studies


def _studies_help() -> str:
    try:
        from widelimit.studies import STUDIES
    except ImportError as e:
        return f"(the study registry widelimit.studies is not available: {e})"
    return ("available studies ('all' runs them one after the other):\n"
            + "\n".join(f"  {k:<16} {v[1]}" for k, v in STUDIES.items())
            + f"\n\nregenerate the committed validation/ reports with:\n  {REGENERATE}")


def _sizes():
    try:
        from widelimit.studies import SIZES
        return tuple(SIZES)
    except ImportError:
        return ("quick", "full")


def register(sub, fmt) -> None:
    pv = sub.add_parser("validate", formatter_class=fmt, help="run validation studies and write their reports",
                        description="Run a validation study (or 'all'): theory next to finite-network "
                                    "measurements; writes a Markdown report with tables,\nplots and the raw "
                                    "numbers. Finished runs are reused (resume) unless --fresh.",
                        epilog=_studies_help())
    pv.add_argument("studies", nargs="+", metavar="STUDY", help="study name(s) or 'all'; see below")
    pv.add_argument("--size", choices=_sizes(), default="quick",
                    help="quick: minutes on 2 CPU cores; medium: about an hour; full: GPU-sized (default quick)")
    pv.add_argument("--out", type=Path, default=None,
                    help=f"output directory (default {DEFAULT_ROOT}/<size>; the committed reports live in "
                         "validation/<size>)")
    pv.add_argument("--fresh", action="store_true",
                    help="recompute everything: the old run store is moved aside (timestamped), not deleted")
    pv.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)   # the default; kept for old scripts
    pv.add_argument("--report", action="store_true",
                    help="afterwards assemble REPORT.md in the parent of --out from all study reports there")
    pv.add_argument("--allow-dirty", action="store_true",
                    help="write into the committed validation/ from a tree with uncommitted code changes (the "
                         "reports then say so); by default that is refused")
    pv.add_argument("--quiet", action="store_true", help="print only the reports' paths, not the reports")
    add_progress_option(pv)
    pv.set_defaults(_parser=pv, func=run)


def store_dir(out: Path, name: str, size: str) -> Path:
    """Where study ``name`` at ``size`` keeps its finished runs under ``out``."""
    from widelimit.studies.common import CACHE_DIRNAME
    return out / CACHE_DIRNAME / f"{name}-{size}"


def last_elapsed_s(name: str, size: str) -> float:
    """Wall time of the committed report of ``name`` at ``size`` (``validation/<size>/<name>.json`` of the
    source checkout), 0 when there is none: the cost estimate announced before a study starts."""
    import json
    import widelimit
    js = Path(widelimit.__file__).resolve().parent.parent / "validation" / size / f"{name}.json"
    try:
        return float(json.loads(js.read_text()).get("elapsed_s") or 0.0)
    except (OSError, ValueError, TypeError, AttributeError):
        return 0.0


def _check_provenance(out: Path) -> None:
    """The studies' own refusal to write committed reports from a dirty tree, before any compute."""
    try:
        from widelimit.studies.common import check_provenance
    except ImportError:
        return
    try:
        check_provenance(out)
    except RuntimeError as e:
        raise UsageError(f"--out: {e} (or pass --allow-dirty)") from None


def run(args) -> int:
    studies = _registry()
    names: List[str] = []
    for n in args.studies:
        if n == "all":
            names += list(studies.STUDIES)
        elif n not in studies.STUDIES:
            raise UsageError(f"argument STUDY: unknown study {n!r}; choose from all, {', '.join(studies.STUDIES)}")
        else:
            names.append(n)
    names = list(dict.fromkeys(names))
    if args.resume and args.fresh:
        raise UsageError("--resume/--fresh: finished runs are reused by default; --fresh recomputes them")
    out = args.out if args.out is not None else DEFAULT_ROOT / args.size
    check_out_dir(out, "--out")
    if args.report:
        check_out_dir(out.parent, "--out")
    if args.allow_dirty:
        import os
        os.environ["WIDELIMIT_ALLOW_DIRTY"] = "1"
    _check_provenance(out)
    runs = []
    for n in names:
        try:
            runs.append((n, studies.get_study(n)))
        except ImportError as e:
            raise CommandError(f"study {n!r} is registered but its module cannot be imported: {e}") from e
    out.mkdir(parents=True, exist_ok=True)
    announce(args, f"{', '.join(names)} at size {args.size} (from the committed reports' wall times; less "
                   "when stored runs are reused)", sum(last_elapsed_s(n, args.size) for n in names))
    for n, study in runs:
        if args.fresh:
            old = store_dir(out, n, args.size)
            if old.exists():
                moved = move_aside(old)
                print(f"--fresh: moved the stored runs of {n} ({old}) aside to {moved}", file=sys.stderr)
        try:
            report = study(args.size, out, progress=not args.no_progress, resume=True)
        except RuntimeError as e:
            raise CommandError(f"study {n}: {e}") from e
        if not args.quiet:
            print(Path(report).read_text().rstrip() + "\n")
        print(f"report: {report}")
    if args.report:
        from widelimit.studies.report import build_report
        print(f"assembled: {build_report(out.parent)}")
    return EXIT_OK
