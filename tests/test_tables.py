"""Tests for widelimit.tables: number formatting, the four writers and their round trips."""
import csv
import io
import json
import math

import numpy as np
import pytest

from widelimit.tables import Table, format_number, format_for_path, latex_escape


def _table():
    return Table(
        columns=["λ", "t*", "c", "name_x", "steps"],
        rows=[[0.1, 2.8123456789, 0.28123456789, "a_b", 1000],
              {"λ": np.float64(0.01), "t*": 28.1, "c": 0.281, "name_x": "50% & $x#", "steps": np.int64(7)},
              [1e-5, math.inf, math.nan, None, 3]],
        title="t* law", caption="From a_b", units={"t*": "steps"}, notes=["c = λ·t*"])


@pytest.mark.parametrize("x,digits,expected", [
    (0.28123, 4, "0.2812"), (1234.5678, 4, "1235"), (999.96, 4, "1000"), (12345678.9, 4, "1.235e7"),
    (1.23456e-5, 3, "1.23e-5"), (2.0, 4, "2"), (-0.5, 2, "-0.5"), (0.0, 4, "0"), (7, 4, "7"),
    (123456789, 2, "123456789"), (math.nan, 4, "nan"), (-math.inf, 4, "-inf"), (None, 4, ""),
    ("abc", 4, "abc"), (np.float32(0.25), 3, "0.25"),
])
def test_format_number(x, digits, expected):
    assert format_number(x, digits) == expected


def test_format_number_significant_digits_roundtrip():
    rng = np.random.default_rng(0)
    for x in 10.0 ** rng.uniform(-8, 8, 200) * rng.choice([-1, 1], 200):
        s = format_number(float(x), 5)
        assert abs(float(s) - x) <= 5e-5 * abs(x) * 1.0001, (x, s)


def test_csv_round_trip_exact():
    t = _table()
    text = t.to_csv(comments=False)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["λ", "t* [steps]", "c", "name_x", "steps"]  # units in the header
    assert len(rows) == 1 + len(t.rows)
    for parsed, orig in zip(rows[1:], t.rows):
        for p, o in zip(parsed, orig):
            if o is None:
                assert p == ""
            elif isinstance(o, str):
                assert p == o
            elif isinstance(o, float) and math.isnan(o):
                assert math.isnan(float(p))
            else:
                assert float(p) == o  # full precision: exact


def test_csv_metadata_comment_header_round_trip():
    t = _table()
    t.meta["learning_rate"] = 0.1
    text = t.to_csv()
    head = [line for line in text.splitlines() if line.startswith("# ")]
    assert head[0] == "# title: \"t* law\"" and '# units: {"t*": "steps"}' in head
    assert any(line.startswith("# meta:") and "0.1" in line for line in head)
    data = [line for line in text.splitlines() if not line.startswith("#")]
    assert data[0].split(",")[1] == "t* [steps]"
    back = Table.from_csv(text)
    assert back.columns == t.columns and back.units == t.units and back.notes == t.notes
    assert back.title == t.title and back.caption == t.caption and back.meta == {"learning_rate": 0.1}
    for r1, r2 in zip(back.rows, t.rows):
        for a, b in zip(r1, r2):
            if isinstance(b, float) and math.isnan(b):
                assert math.isnan(a)
            else:
                assert a == b and type(a) is type(b)
    with pytest.raises(ValueError, match="header"):
        Table.from_csv("")


def test_enum_cells_are_their_values():
    from widelimit.validity import Validity
    t = Table(["λ", "validity"], [[0.1, Validity.OK], [0.2, Validity.UNSTABLE]], units={"validity": "enum"})
    assert t.column("validity") == ["ok", "unstable"]
    assert type(t.column("validity")[0]) is str  # plain str, not the enum
    assert json.loads(t.to_json())["rows"][1]["validity"] == "unstable"
    assert "| unstable" in t.to_markdown() and "validity [enum]" in t.to_markdown()
    assert t.to_csv(comments=False).splitlines()[2] == "0.2,unstable"


def test_json_round_trip():
    t = _table()
    text = t.to_json()
    d = json.loads(text)  # strict JSON: no bare NaN/Infinity literals
    assert "NaN" not in text and "Infinity" not in text
    assert d["columns"] == t.columns and d["units"] == {"t*": "steps"} and d["title"] == "t* law"
    assert d["meta"] == {}
    assert d["rows"][0]["t*"] == 2.8123456789
    back = Table.from_json(text)
    assert back.columns == t.columns and back.notes == t.notes and back.caption == t.caption
    for r1, r2 in zip(back.rows, t.rows):
        for a, b in zip(r1, r2):
            if isinstance(b, float) and math.isnan(b):
                assert a is None  # NaN is encoded as null
            else:
                assert a == b


def test_latex_escaping_and_booktabs():
    assert latex_escape("a_b 50% & $x# {y} ~ ^") == \
        r"a\_b 50\% \& \$x\# \{y\} \textasciitilde{} \textasciicircum{}"
    assert latex_escape("λ_opt") == r"\ensuremath{\lambda}\_opt"
    tex = _table().to_latex()
    lines = tex.splitlines()
    assert r"\toprule" in lines and r"\midrule" in lines and r"\bottomrule" in lines
    assert lines.index(r"\toprule") < lines.index(r"\midrule") < lines.index(r"\bottomrule")
    assert r"\begin{tabular}{rrrlr}" in tex
    assert r"50\% \& \$x\#" in tex and r"a\_b" in tex
    assert r"\caption{t* law. From a\_b}" in tex
    assert r"$1\times 10^{-5}$" in tex and r"$\infty$" in tex
    body = lines[lines.index(r"\midrule") + 1:lines.index(r"\bottomrule")]
    assert len(body) == 3
    for row in body:  # every row has the right number of cells and no unescaped specials
        assert row.endswith(r"\\")
        cells = row[:-2].replace(r"\&", "").split("&")
        assert len(cells) == 5
    plain = Table(["a"], [[1]]).to_latex()
    assert r"\begin{table}" not in plain and plain.startswith(r"\begin{tabular}{r}")


def test_markdown_alignment():
    md = _table().to_markdown()
    lines = md.splitlines()
    assert lines[0] == "### t* law"
    tab = [l for l in lines if l.startswith("|")]
    assert len(tab) == 2 + 3
    assert len({len(l) for l in tab}) == 1  # padded: every line the same width
    pipes = [[i for i, ch in enumerate(l) if ch == "|"] for l in tab]
    assert all(p == pipes[0] for p in pipes)  # column separators line up
    header = [c.strip() for c in tab[0].strip("|").split("|")]
    assert header == ["λ", "t* [steps]", "c", "name_x", "steps"]
    seps = [c.strip() for c in tab[1].strip("|").split("|")]
    assert seps[0].endswith(":") and seps[1].endswith(":") and not seps[3].endswith(":")
    row0 = [c.strip() for c in tab[2].strip("|").split("|")]
    assert row0 == ["0.1", "2.812", "0.2812", "a_b", "1000"]
    cells = tab[2].split("|")
    assert cells[1] == "  0.1 "  # numeric column right-aligned (width of "1e-5")
    assert cells[4].startswith(" a_b ") and cells[4].strip() == "a_b"  # text column left-aligned
    assert "- c = λ·t*" in lines and "From a_b" in lines


def test_formats_override_and_pipe_escape():
    t = Table(["x", "s"], [[0.000123, "a|b"]], formats={"x": ".2e"})
    md = t.to_markdown()
    assert "1.23e-04" in md and r"a\|b" in md


def test_save_by_extension(tmp_path):
    t = _table()
    for ext, fmt in [(".md", "md"), (".csv", "csv"), (".json", "json"), (".tex", "latex")]:
        p = t.save(tmp_path / "sub" / f"t{ext}")
        assert p.read_text(encoding="utf-8") == t.render(fmt)
    p = t.save(tmp_path / "x.dat", fmt="csv")
    assert p.read_text() == t.to_csv()
    with pytest.raises(ValueError, match="extension"):
        t.save(tmp_path / "x.dat")
    assert format_for_path("a/b.LATEX") == "latex"


def test_bad_input():
    with pytest.raises(ValueError, match="columns"):
        Table([])
    with pytest.raises(ValueError, match="unique"):
        Table(["a", "a"])
    with pytest.raises(ValueError, match="2 columns"):
        Table(["a", "b"], [[1, 2, 3]])
    with pytest.raises(ValueError, match="unknown columns"):
        Table(["a"], [{"b": 1}])
    with pytest.raises(ValueError, match="units"):
        Table(["a"], units={"b": "s"})
    with pytest.raises(TypeError, match="cells"):
        Table(["a"], [[[1, 2]]])
    with pytest.raises(ValueError, match="fmt"):
        Table(["a"]).render("html")
    with pytest.raises(ValueError, match="digits"):
        format_number(1.0, 0)
    with pytest.raises(TypeError, match="meta"):
        Table(["a"], meta=[1])


def test_from_records_and_columns():
    t = Table.from_records([{"a": 1, "b": 2.5}, {"b": 3.5, "c": "x"}], title="T")
    assert t.columns == ["a", "b", "c"]
    assert t.column("b") == [2.5, 3.5] and t.column("a") == [1, None]
    assert t.records()[1] == {"a": None, "b": 3.5, "c": "x"}
    assert len(t) == 2
