"""argparse ``type=`` converters: each rejects bad text with a message argparse prefixes with the option."""
from __future__ import annotations

import argparse
import math
from typing import Callable, List

#: optimiser names, identical to Python (docs/theory.md §1)
OPTIMIZER_NAMES = ("gd", "sgd", "momentum", "nesterov", "adam", "adamw", "lion", "muon")


def _number(kind: str, check: Callable[[float], bool]) -> Callable[[str], float]:
    def conv(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if not math.isfinite(v) or not check(v):
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}")
        return v
    conv.__name__ = kind
    return conv


positive_float = _number("a number > 0", lambda v: v > 0)
nonneg_float = _number("a number >= 0", lambda v: v >= 0)
unit_float = _number("a number in [0, 1)", lambda v: 0 <= v < 1)


def integer(lo: int) -> Callable[[str], int]:
    """Integers ``>= lo``; ``1e4`` is accepted when it is an integer (step counts)."""
    def conv(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}") from None
            if not math.isfinite(f) or f != int(f):
                raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}") from None
            v = int(f)
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}")
        return v
    conv.__name__ = f"integer >= {lo}"
    return conv


positive_int = integer(1)
nonneg_int = integer(0)


def optimizer_name(text: str) -> str:
    """One of :data:`OPTIMIZER_NAMES`, exactly as Python spells it (``adam-l2`` is not a name)."""
    name = text.strip().lower()
    if name not in OPTIMIZER_NAMES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(OPTIMIZER_NAMES)}, got {text!r}")
    return name


def class_list(text: str) -> List[int]:
    """``0,1,7`` -> [0, 1, 7] (at least two distinct ids in 0..9)."""
    try:
        out = [int(p) for p in text.replace(" ", "").split(",") if p != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated class ids like 0,1, got {text!r}") from None
    if len(out) < 2 or len(set(out)) != len(out) or any(c < 0 or c > 9 for c in out):
        raise argparse.ArgumentTypeError(f"expected at least two distinct class ids in 0..9, got {text!r}")
    return out
