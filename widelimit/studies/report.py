"""Assemble ``validation/REPORT.md`` from the individual study reports.

Each study writes ``<root>/<size>/<name>.md`` (and ``.json``, PNGs). This module concatenates them, in
the order of :data:`widelimit.studies.STUDIES`, for every size directory present (``quick``, then
``full``), with an overview table at the top (study, size, first summary line, wall time, machine).
Headings are demoted by one level and relative links/images are rewritten to stay valid from ``<root>``.

Usage::

    python -m widelimit.studies.report [--root validation]
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import List, Optional, Sequence

from . import STUDIES

SIZE_DIRS = ("quick", "full")
_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")


def _rewrite_links(text: str, prefix: str) -> str:
    def fix(m: re.Match) -> str:
        target = m.group(2)
        if re.match(r"^[a-z]+://", target) or target.startswith(("/", "#")):
            return m.group(0)
        return f"{m.group(1)}{prefix}/{target}{m.group(3)}"
    return _LINK.sub(fix, text)


def _demote(text: str) -> str:
    out = []
    fence = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        if not fence and line.startswith("#"):
            line = "#" + line
        out.append(line)
    return "\n".join(out)


def _summary_line(md: str) -> str:
    """First paragraph after the title that is not a quote (the study's summary), shortened."""
    paras = [p.strip() for p in md.split("\n\n")]
    for p in paras[1:]:
        if p and not p.startswith(("#", ">", "|", "!")):
            s = " ".join(p.split())
            return s if len(s) <= 400 else s[:397] + "..."
    return ""


def collect(root: Path, sizes: Sequence[str] = SIZE_DIRS) -> List[dict]:
    """The study reports found under ``root``: dicts with name, size, path, markdown and JSON metadata."""
    found = []
    for size in sizes:
        d = root / size
        if not d.is_dir():
            continue
        names = list(STUDIES) + sorted(p.stem for p in d.glob("*.md") if p.stem not in STUDIES)
        for name in names:
            md = d / f"{name}.md"
            if not md.is_file():
                continue
            meta = {}
            js = d / f"{name}.json"
            if js.is_file():
                try:
                    meta = json.loads(js.read_text())
                except (ValueError, OSError):
                    meta = {}
            found.append({"name": name, "size": size, "path": md, "markdown": md.read_text(), "meta": meta})
    return found


def build_report(root="validation", out: Optional[Path] = None) -> Path:
    """Write ``<root>/REPORT.md`` (or ``out``) from the study reports under ``root``; return its path."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"root must be an existing directory of study reports, got {str(root)!r}")
    items = collect(root)
    out = Path(out) if out is not None else root / "REPORT.md"
    lines = ["# widelimit validation report", "",
             "Theory (infinite-width NTK regime with L2, THEORY.md §2–4) next to finite networks. Every section "
             "below is a study report generated from a real run; each ends with the exact command and the "
             "machine it ran on. Regenerate a study with `python -m widelimit.cli validate NAME --size SIZE` and "
             "this file with `python -m widelimit.studies.report` (see validation/README.md).", ""]
    if not items:
        lines += ["No study reports found.", ""]
    else:
        lines += ["| study | size | summary | wall time | machine |", "| --- | --- | --- | --: | --- |"]
        for it in items:
            m = it["meta"]
            mach = m.get("machine") or {}
            devs = mach.get("jax_devices") or []
            machine = f"{mach.get('cpus_available', '?')} cores, {devs[0] if devs else mach.get('jax_backend', '?')}"
            el = m.get("elapsed_s")
            rel = it["path"].relative_to(root).as_posix()
            summ = _summary_line(it["markdown"]).replace("|", "\\|")
            lines.append(f"| [{it['name']}]({rel}) | {m.get('size', it['size'])} | {summ} | "
                         f"{'' if el is None else f'{el:.0f} s'} | {machine} |")
        lines.append("")
        for it in items:
            lines += [f"<a id=\"{it['size']}-{it['name']}\"></a>", "",
                      _demote(_rewrite_links(it["markdown"], it["size"])).rstrip(), "", "---", ""]
    lines.append(f"*Assembled {time.strftime('%Y-%m-%d %H:%M:%S %Z')} from {len(items)} study report(s).*")
    out.write_text("\n".join(lines) + "\n")
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m widelimit.studies.report",
                                 description="Assemble validation/REPORT.md from the study reports.")
    ap.add_argument("--root", type=Path, default=Path("validation"),
                    help="directory holding quick/ and full/ study reports (default: validation)")
    args = ap.parse_args(argv)
    print(build_report(args.root))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
