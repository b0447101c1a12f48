"""``widelimit derive``: run the sympy derivations in ``derivations/`` and write their Markdown/LaTeX."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List

from .errors import EXIT_FAIL, EXIT_OK, CommandError, UsageError
from .paths import check_out_dir
from .progress import add_progress_option, progress

DERIVATIONS = {
    "ntk_l2": "homogeneous networks with L2 in the NTK regime: kernel/output decay, per-mode closed form",
    "scale_invariant": "scale-invariant groups: equilibrium norms, angular updates, relaxation times",
}


def register(sub, fmt) -> None:
    pd = sub.add_parser("derive", formatter_class=fmt, help="run the sympy derivations, write Markdown/LaTeX",
                        description="Run the sympy derivations in the repository's derivations/ folder and "
                                    "write their Markdown/LaTeX.",
                        epilog="derivations:\n" + "\n".join(f"  {k:<16} {v}" for k, v in DERIVATIONS.items()))
    pd.add_argument("names", nargs="*", metavar="NAME", default=None,
                    help=f"which derivations (default all: {' '.join(DERIVATIONS)})")
    pd.add_argument("--out", type=Path, default=Path("derivations-out"),
                    help="output directory (default ./derivations-out)")
    pd.add_argument("--force", action="store_true", help="overwrite earlier outputs in --out")
    add_progress_option(pd)
    pd.set_defaults(_parser=pd, func=run)


def derivations_dir() -> Path:
    """The repository's ``derivations/`` folder (next to the ``widelimit`` package)."""
    import widelimit
    return Path(widelimit.__file__).resolve().parent.parent / "derivations"


def run(args) -> int:
    import importlib.util
    names = args.names or list(DERIVATIONS)
    bad = [n for n in names if n not in DERIVATIONS]
    if bad:
        raise UsageError(f"argument NAME: unknown derivation(s) {bad}; choose from {', '.join(DERIVATIONS)}")
    check_out_dir(args.out, "--out", files=[f"{n}.md" for n in names], force=args.force)
    root = derivations_dir()
    if not root.is_dir():
        raise CommandError(f"derivations folder not found at {root}: 'widelimit derive' runs from a source "
                           "checkout of widelimit (the derivations/ folder beside the widelimit package)")
    files = {n: root / f"{n}.py" for n in names}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise CommandError(f"derivation script(s) not found: {missing}")
    args.out.mkdir(parents=True, exist_ok=True)
    failed: List[str] = []
    for n, path in progress(files.items(), args, desc="derivations", total=len(files)):
        spec = importlib.util.spec_from_file_location(f"widelimit_derivation_{n}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        if not callable(getattr(mod, "main", None)):
            raise CommandError(f"{path} has no main(out_path) function")
        out_path = args.out / f"{n}.md"
        result = mod.main(out_path)
        line = f"{n}: wrote {out_path}"
        if isinstance(result, dict):  # {check name: passed}
            bad = [k for k, ok in result.items() if not ok]
            line += f" ({len(result) - len(bad)}/{len(result)} checks passed)"
            failed += [f"{n}: {k}" for k in bad]
        print(line)
    if failed:
        print("FAILED checks: " + "; ".join(failed), file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK
