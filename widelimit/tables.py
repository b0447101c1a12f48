"""Small result tables and their writers: Markdown (default), CSV, JSON and LaTeX.

A :class:`Table` holds named columns, rows of plain values (numbers, strings, ``None``) and optional
metadata (title, caption, per-column units, notes). It renders to

* **Markdown** — a pipe table with padded, aligned columns (numbers right-aligned), units in the
  header (``t* [steps]``), the title as a heading and caption/notes below;
* **CSV** — a header of column names with their units (``t* [steps]``, as in Markdown) and
  full-precision values (``repr`` of floats, so numbers parse back exactly). The metadata (title,
  caption, units per column, notes, ``meta``) comes first as ``# key: JSON`` comment lines, so the file
  is self-describing on stdout too; read it with :meth:`Table.from_csv` or ``pandas.read_csv(path,
  comment="#")``. ``to_csv(comments=False)`` leaves them out;
* **JSON** — ``{"title", "caption", "columns", "units", "notes", "meta", "rows": [{column: value}, ...]}`` with
  full-precision numbers; NaN is written as ``null`` and infinities as the strings ``"inf"``/``"-inf"``
  (JSON has no literal for them); :meth:`Table.from_json` reverses this;
* **LaTeX** — a booktabs ``tabular`` (``\\toprule``/``\\midrule``/``\\bottomrule``), wrapped in a
  ``table`` float with ``\\caption`` when a title or caption is set; special characters are escaped and
  common Greek letters are typeset in math mode.

Human formats (Markdown, LaTeX) show floats with ``digits`` significant digits (default 4); ``formats``
may override one column with a format spec (``".2e"``) or a callable. Enum cells (e.g.
:class:`widelimit.validity.Validity`) are stored as their ``.value``. No pandas.
"""
from __future__ import annotations

import csv
import enum
import io
import json
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

FORMATS = ("md", "csv", "json", "latex")
_EXTENSIONS = {".md": "md", ".markdown": "md", ".txt": "md", ".csv": "csv", ".json": "json",
               ".tex": "latex", ".latex": "latex"}

Value = Union[int, float, str, bool, None]


# -- number formatting ----------------------------------------------------------------------------
def _as_plain(v: Any) -> Value:
    """Convert numpy scalars (and 0-d arrays) to Python scalars; leave strings/None alone."""
    if isinstance(v, enum.Enum):
        v = v.value
    if v is None or isinstance(v, (str, bool)):
        return str(v) if isinstance(v, str) else v
    if hasattr(v, "item") and getattr(v, "shape", None) == ():
        v = v.item()
    if isinstance(v, bool):
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        return float(v)
    raise TypeError(f"table cells must be numbers, strings, bools or None, got {type(v).__name__} ({v!r})")


def format_number(x: Value, digits: int = 4) -> str:
    """Format one cell for humans.

    Integers print exactly; floats with ``digits`` significant digits, in fixed notation when
    ``1e-3 <= |x| < 1e6`` and as ``1.234e-5`` otherwise, trailing zeros removed; NaN as ``nan``,
    infinities as ``inf``/``-inf``; ``None`` as an empty string.
    """
    if isinstance(digits, bool) or not isinstance(digits, int) or digits < 1:
        raise ValueError(f"digits must be an int >= 1, got {digits!r}")
    x = _as_plain(x)
    if x is None:
        return ""
    if isinstance(x, (str, bool)):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    ax = abs(x)
    # round to the requested significant digits first: 999.96 -> 1000 then decide the notation
    exp = math.floor(math.log10(ax))
    rounded = float(f"{x:.{digits - 1}e}")
    if rounded != 0:
        exp = math.floor(math.log10(abs(rounded)))
    if 1e-3 <= abs(rounded) < 1e6:
        decimals = max(digits - 1 - exp, 0)
        s = f"{rounded:.{decimals}f}"
        if "." in s:
            s = s.rstrip("0").rstrip(".")
        return s
    mant, e = f"{x:.{digits - 1}e}".split("e")
    if "." in mant:
        mant = mant.rstrip("0").rstrip(".")
    return f"{mant}e{int(e)}"


def _is_number(v: Value) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# -- LaTeX helpers --------------------------------------------------------------------------------
_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}",
}
_LATEX_UNICODE = {
    "α": r"\alpha", "β": r"\beta", "γ": r"\gamma", "δ": r"\delta", "ε": r"\epsilon", "η": r"\eta",
    "θ": r"\theta", "κ": r"\kappa", "λ": r"\lambda", "μ": r"\mu", "ν": r"\nu", "π": r"\pi",
    "ρ": r"\rho", "σ": r"\sigma", "τ": r"\tau", "φ": r"\phi", "ω": r"\omega", "Γ": r"\Gamma",
    "Θ": r"\Theta", "Λ": r"\Lambda", "Σ": r"\Sigma", "Ω": r"\Omega", "·": r"\cdot", "×": r"\times",
    "≈": r"\approx", "‖": r"\|", "≤": r"\leq", "≥": r"\geq", "±": r"\pm", "∞": r"\infty", "√": r"\surd",
    "²": r"^{2}", "³": r"^{3}", "⁴": r"^{4}", "−": "-",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters (``\\ & % $ # _ { } ~ ^ < >``) in plain text and typeset
    common Greek letters/maths symbols (λ, η, ·, ≈, ², ...) in math mode."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    out = []
    for ch in text:
        if ch in _LATEX_SPECIAL:
            out.append(_LATEX_SPECIAL[ch])
        elif ch in _LATEX_UNICODE:
            out.append(r"\ensuremath{" + _LATEX_UNICODE[ch] + "}")
        else:
            out.append(ch)
    return "".join(out)


def _latex_number(x: Value, digits: int) -> str:
    s = format_number(x, digits)
    if not _is_number(_as_plain(x)):
        return latex_escape(s)
    if s in ("inf", "-inf"):
        return "$" + ("-" if s.startswith("-") else "") + r"\infty$"
    if s == "nan":
        return "nan"
    if "e" in s:
        mant, e = s.split("e")
        return f"${mant}\\times 10^{{{int(e)}}}$"
    return s


# -- the table ------------------------------------------------------------------------------------
@dataclass
class Table:
    """A table of results: ``columns`` (names) and ``rows`` (one value per column).

    Rows may be given as sequences (in column order) or as mappings ``{column: value}`` (missing
    columns become ``None``). ``units`` maps column names to unit strings shown in human formats and
    kept in JSON; ``notes`` are free-text lines printed under the table.
    """

    columns: Sequence[str]
    rows: List[Sequence[Value]] = field(default_factory=list)
    title: Optional[str] = None
    caption: Optional[str] = None
    units: Dict[str, str] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    digits: int = 4
    formats: Dict[str, Union[str, Callable[[Value], str]]] = field(default_factory=dict)
    meta: Dict[str, Value] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cols = list(self.columns)
        if not cols:
            raise ValueError("columns must be a non-empty sequence of column names")
        for c in cols:
            if not isinstance(c, str) or not c:
                raise TypeError(f"columns must be non-empty strings, got {c!r}")
        if len(set(cols)) != len(cols):
            raise ValueError(f"columns must be unique, got {cols}")
        self.columns = cols
        if isinstance(self.digits, bool) or not isinstance(self.digits, int) or self.digits < 1:
            raise ValueError(f"digits must be an int >= 1, got {self.digits!r}")
        for name in ("units", "formats"):
            d = getattr(self, name)
            unknown = [k for k in (d or {}) if k not in cols]
            if unknown:
                raise ValueError(f"{name} names unknown columns {unknown}; columns are {cols}")
        self.units = dict(self.units or {})
        self.formats = dict(self.formats or {})
        if isinstance(self.notes, str):
            self.notes = [self.notes]
        self.notes = [str(n) for n in (self.notes or [])]
        if not isinstance(self.meta or {}, Mapping):
            raise TypeError(f"meta must be a mapping, got {type(self.meta).__name__}")
        self.meta = {str(k): _as_plain(v) for k, v in (self.meta or {}).items()}
        rows, self.rows = list(self.rows), []
        for r in rows:
            self.add_row(r)

    # -- building ---------------------------------------------------------------------------------
    def add_row(self, row: Union[Sequence[Value], Mapping[str, Value]]) -> None:
        """Append one row, given in column order or as a mapping ``{column: value}``."""
        if isinstance(row, Mapping):
            unknown = [k for k in row if k not in self.columns]
            if unknown:
                raise ValueError(f"row has unknown columns {unknown}; columns are {self.columns}")
            values = [row.get(c) for c in self.columns]
        elif isinstance(row, (str, bytes)) or not isinstance(row, Iterable):
            raise TypeError(f"row must be a sequence or a mapping, got {type(row).__name__}")
        else:
            values = list(row)
            if len(values) != len(self.columns):
                raise ValueError(f"row has {len(values)} values but the table has "
                                 f"{len(self.columns)} columns {self.columns}")
        self.rows.append([_as_plain(v) for v in values])

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Value]], columns: Optional[Sequence[str]] = None,
                     **meta: Any) -> "Table":
        """Build a table from dicts; ``columns`` defaults to the keys in first-seen order."""
        records = list(records)
        if columns is None:
            columns = []
            for r in records:
                for k in r:
                    if k not in columns:
                        columns.append(k)
        t = cls(columns=list(columns), **meta)
        for r in records:
            t.add_row(r)
        return t

    def column(self, name: str) -> List[Value]:
        """The values of one column."""
        if name not in self.columns:
            raise KeyError(f"no column {name!r}; columns are {self.columns}")
        i = self.columns.index(name)
        return [r[i] for r in self.rows]

    def records(self) -> List[Dict[str, Value]]:
        """Rows as ``{column: value}`` dicts."""
        return [dict(zip(self.columns, r)) for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    # -- human formatting ---------------------------------------------------------------------------
    def _cell(self, col: str, v: Value) -> str:
        f = self.formats.get(col)
        if f is None or v is None:
            return format_number(v, self.digits)
        if callable(f):
            return str(f(v))
        try:
            return format(v, f)
        except (ValueError, TypeError):
            return format_number(v, self.digits)

    def _header(self, col: str) -> str:
        u = self.units.get(col)
        return f"{col} [{u}]" if u else col

    def _numeric_columns(self) -> List[bool]:
        out = []
        for i, _ in enumerate(self.columns):
            vals = [r[i] for r in self.rows if r[i] is not None]
            out.append(bool(vals) and all(_is_number(v) for v in vals))
        return out

    def to_markdown(self) -> str:
        """GitHub pipe table, columns padded to equal width; numeric columns right-aligned."""
        heads = [self._header(c).replace("|", r"\|") for c in self.columns]
        body = [[self._cell(c, v).replace("|", r"\|") for c, v in zip(self.columns, r)] for r in self.rows]
        numeric = self._numeric_columns()
        widths = [max([len(h), 3] + [len(b[i]) for b in body]) for i, h in enumerate(heads)]

        def line(cells):
            parts = [(c.rjust(w) if num else c.ljust(w)) for c, w, num in zip(cells, widths, numeric)]
            return "| " + " | ".join(parts) + " |"

        sep = "| " + " | ".join(("-" * (w - 1) + ":") if num else ("-" * w)
                                for w, num in zip(widths, numeric)) + " |"
        out = []
        if self.title:
            out += [f"### {self.title}", ""]
        out += [line(heads), sep] + [line(b) for b in body]
        if self.caption:
            out += ["", self.caption]
        if self.notes:
            out += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def to_latex(self) -> str:
        """booktabs ``tabular``; in a ``table`` float with ``\\caption`` when title/caption is set."""
        numeric = self._numeric_columns()
        spec = "".join("r" if n else "l" for n in numeric)
        heads = [latex_escape(c) + (f" [{latex_escape(self.units[c])}]" if self.units.get(c) else "")
                 for c in self.columns]
        lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(heads) + r" \\", r"\midrule"]
        for r in self.rows:
            cells = []
            for c, v in zip(self.columns, r):
                if c in self.formats and v is not None:
                    cells.append(latex_escape(self._cell(c, v)))
                else:
                    cells.append(_latex_number(v, self.digits))
            lines.append(" & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        cap = ". ".join(x.rstrip(".") for x in (self.title, self.caption) if x)
        if cap:
            lines = [r"\begin{table}[ht]", r"\centering"] + lines + [rf"\caption{{{latex_escape(cap)}}}",
                                                                  r"\end{table}"]
        if self.notes:
            lines += ["% " + n.replace("\n", " ") for n in self.notes]
        return "\n".join(lines) + "\n"

    # -- machine formats ----------------------------------------------------------------------------
    def to_csv(self, comments: bool = True) -> str:
        """Optional ``# key: JSON`` metadata lines, a header ``name [unit]`` and rows with full-precision
        numbers (``repr``); ``None`` is an empty field."""
        buf = io.StringIO()
        if comments:
            for key in ("title", "caption", "units", "notes", "meta"):
                val = getattr(self, key)
                if val:
                    buf.write(f"# {key}: {json.dumps(val, ensure_ascii=False, allow_nan=False)}\n")
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([self._header(c) for c in self.columns])
        for r in self.rows:
            w.writerow(["" if v is None else (repr(v) if isinstance(v, float) else v) for v in r])
        return buf.getvalue()

    @classmethod
    def from_csv(cls, text: str) -> "Table":
        """Inverse of :meth:`to_csv`: metadata from the comment lines, units stripped from the header,
        numbers parsed back (``int`` where the text is an integer, else ``float``; ``True``/``False``;
        an empty field is ``None``; anything else stays a string)."""
        lines = text.splitlines()
        meta: Dict[str, Any] = {}
        while lines and lines[0].startswith("# "):
            key, _, val = lines.pop(0)[2:].partition(": ")
            meta[key] = json.loads(val)
        reader = csv.reader(lines)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError("text must hold a CSV header (as written by Table.to_csv)") from None
        units = meta.get("units") or {}
        names = []
        for h in header:
            base = next((c for c, u in units.items() if h == f"{c} [{u}]"), h)
            names.append(base)

        def parse(v: str) -> Value:
            if v == "":
                return None
            if v in ("True", "False"):
                return v == "True"
            for conv in (int, float):
                try:
                    return conv(v)
                except ValueError:
                    pass
            return v
        rows = [[parse(v) for v in r] for r in reader]
        return cls(names, rows, title=meta.get("title"), caption=meta.get("caption"), units=units,
                   notes=meta.get("notes") or [], meta=meta.get("meta") or {})

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict (see the module docstring for the encoding of NaN/inf)."""
        def enc(v):
            if isinstance(v, float) and not math.isfinite(v):
                return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
            return v
        return {"title": self.title, "caption": self.caption, "columns": list(self.columns),
                "units": dict(self.units), "notes": list(self.notes), "meta": dict(self.meta),
                "rows": [{c: enc(v) for c, v in zip(self.columns, r)} for r in self.rows]}

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Table":
        """Inverse of :meth:`to_json` (``"inf"``/``"-inf"`` strings become floats again)."""
        d = json.loads(text)
        if not isinstance(d, dict) or "columns" not in d or "rows" not in d:
            raise ValueError("text must be a JSON object with 'columns' and 'rows' (as written by Table.to_json)")

        def dec(v):
            if v == "inf":
                return math.inf
            if v == "-inf":
                return -math.inf
            return v
        rows = [{k: dec(v) for k, v in r.items()} for r in d["rows"]]
        return cls.from_records(rows, columns=d["columns"], title=d.get("title"), caption=d.get("caption"),
                                units=d.get("units") or {}, notes=d.get("notes") or [],
                                meta=d.get("meta") or {})

    # -- output -------------------------------------------------------------------------------------
    def render(self, fmt: str = "md") -> str:
        """The table as text in ``fmt``, one of ``md``, ``csv``, ``json``, ``latex``."""
        if fmt == "markdown":
            fmt = "md"
        if fmt == "tex":
            fmt = "latex"
        if fmt not in FORMATS:
            raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
        return {"md": self.to_markdown, "csv": self.to_csv, "json": self.to_json,
                "latex": self.to_latex}[fmt]()

    def save(self, path: Union[str, os.PathLike], fmt: Optional[str] = None) -> Path:
        """Write the table to ``path``; the format is ``fmt`` or follows the extension
        (``.md/.markdown/.txt``, ``.csv``, ``.json``, ``.tex/.latex``). Parent folders are created."""
        path = Path(path)
        if fmt is None:
            fmt = format_for_path(path)
        text = self.render(fmt)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def __str__(self) -> str:
        return self.to_markdown()


def format_for_path(path: Union[str, os.PathLike]) -> str:
    """Table format implied by a file extension; ``ValueError`` for unknown extensions."""
    ext = Path(path).suffix.lower()
    if ext not in _EXTENSIONS:
        raise ValueError(f"cannot infer the table format from the extension of {str(path)!r}; "
                         f"use one of {sorted(_EXTENSIONS)} or pass fmt= one of {FORMATS}")
    return _EXTENSIONS[ext]


__all__ = ["Table", "FORMATS", "format_number", "latex_escape", "format_for_path"]
