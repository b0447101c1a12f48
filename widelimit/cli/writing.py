"""Writing tables and one-line validity warnings (stdout/stderr and files)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .errors import UsageError
from .paths import check_out_files


def table_format(args) -> str:
    """``--format``, else the ``--out`` extension, else Markdown (UsageError for an unknown extension)."""
    from widelimit.tables import format_for_path
    if args.format is not None:
        return args.format
    if args.out is None:
        return "md"
    try:
        return format_for_path(args.out)
    except ValueError as e:
        raise UsageError(f"--out: {e}") from None


def planned_outputs(args, keys: Sequence[str]) -> List[Optional[Path]]:
    """The files ``write_tables`` will write for tables ``keys`` (``[None]``: stdout). Several tables go into
    one Markdown/LaTeX/JSON file, or, as CSV, into one file per table ``<stem>_<key>.csv``."""
    fmt = table_format(args)
    if args.out is None:
        return [None]
    if fmt == "csv" and len(keys) > 1:
        return [args.out.with_name(f"{args.out.stem}_{k}{args.out.suffix}") for k in keys]
    return [args.out]


def check_table_outputs(args, keys: Sequence[str]) -> None:
    """Check, before any computation, that the table files can be written (``--force`` to overwrite)."""
    paths = [p for p in planned_outputs(args, keys) if p is not None]
    check_out_files(paths, "--out", force=getattr(args, "force", False))


def write_tables(tables: Dict[str, "object"], args) -> None:
    """Print or save ``{key: Table}`` in the requested format (see :func:`planned_outputs`)."""
    fmt = table_format(args)
    for t in tables.values():
        t.digits = args.digits
    paths = planned_outputs(args, list(tables))
    if fmt == "json" and len(tables) > 1:
        texts = [json.dumps({"tables": {k: t.to_dict() for k, t in tables.items()}}, indent=2,
                            ensure_ascii=False, allow_nan=False) + "\n"]
    elif fmt == "csv" and len(tables) > 1 and args.out is not None:
        texts = [t.to_csv() for t in tables.values()]
    else:
        texts = ["\n".join(t.render(fmt) for t in tables.values())]
    for path, text in zip(paths, texts):
        if path is None:
            sys.stdout.write(text)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}", file=sys.stderr)


def warn_validity(rows: Sequence[Tuple[str, object]], prog: str) -> int:
    """One ``warning:`` line on stderr per row whose validity is not ``ok``: ``rows`` are ``(what, validity)``
    pairs; returns how many were printed."""
    from widelimit.validity import Validity
    n = 0
    for what, v in rows:
        if v is not Validity.OK:
            print(f"{prog}: warning: {what}: {v.value} ({EXPLAIN[v]})", file=sys.stderr)
            n += 1
    return n


def _explain():
    from widelimit.validity import Validity as V
    try:
        from widelimit.predict.models import NO_LEARNING_RTOL, TOO_FAST_STEPS
    except ImportError:
        NO_LEARNING_RTOL, TOO_FAST_STEPS = 0.01, 5
    return {V.OK: "inside the theory's range",
            V.NO_LEARNING: f"the best loss is within {NO_LEARNING_RTOL:.0%} of the zero function's: nothing is "
                           "learned in this budget",
            V.GRID_EDGE: "the optimum is on the edge of the searched grid: the value is only a bound",
            V.UNSTABLE: "η·μ_max ≥ 2 or η·λ ≥ 1: gradient descent at this learning rate diverges; the flow "
                        "does not apply",
            V.TOO_FAST: f"shorter than {TOO_FAST_STEPS:g} optimiser steps: discrete steps differ from the flow",
            V.BELOW_STEP: "the relaxation is shorter than one step: the continuous-time theory does not apply",
            V.NO_INTERIOR_OPTIMUM: "the curve is monotone: no interior optimum"}


class _Lazy(dict):
    def __missing__(self, key):
        self.update(_explain())
        return dict.__getitem__(self, key)


EXPLAIN = _Lazy()
