"""The on-disk store of :func:`widelimit.kernels.blockwise.blockwise_kernels`: memory-mapped ``<kernel>.npy``
files and ``progress.json``, the record of the finished blocks of each kernel (docs/theory.md §4).

Rules: finished kernel files are reused read-only (a request for a subset of an earlier, richer run
leaves them untouched); unfinished ones are resumed in place; files of another computation, or without
a record, raise ValueError and are never overwritten.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _read_record(root: Path, key: str, legacy, kernels) -> dict:
    """``{kernel: set of finished blocks}`` recorded under ``root`` (empty for a new directory).

    ``kernels``: the names a directory may hold (``<name>.npy``). The record (``progress.json``) holds
    the key of the computation and the finished blocks of each kernel file; a record of the earlier format (one key that included the kernels requested, one list of
    blocks) is read when its key matches the kernel files present. Kernel files without a record, or a
    record of another computation (spec, inputs, dtype or block), raise ValueError: they are never
    overwritten."""
    rec = root / "progress.json"
    files = [g for g in kernels if (root / f"{g}.npy").exists()]
    if not rec.exists():
        if files:
            raise ValueError(f"path {str(root)!r} holds kernel files ({', '.join(f + '.npy' for f in files)}) but "
                             "no progress.json record: refusing to overwrite them; use another directory or "
                             "delete those files")
        return {}
    try:
        state = json.loads(rec.read_text())
    except ValueError as e:
        raise ValueError(f"path {str(root)!r}: unreadable progress.json ({e}); use another directory or delete "
                         "it") from None
    if "kernels" in state:
        stored = {g: {tuple(b) for b in v} for g, v in state["kernels"].items()} \
            if state.get("key") == key else None
    else:   # earlier format
        stored = {g: {tuple(b) for b in state.get("done", [])} for g in files} \
            if files and state.get("key") == legacy(tuple(files)) else None
    if stored is None:
        raise ValueError(f"path {str(root)!r} holds the kernels of another computation (different spec, inputs, "
                         "dtype or block): refusing to overwrite them; use another directory or delete it")
    return stored


def open_store(root: Path, key: str, legacy, get, kernels, dtype, shape, blocks):
    """Memory-mapped kernel files of ``get`` (names out of ``kernels``) under ``root``, and the finished
    blocks of every recorded kernel (``{name: set of (i, j)}``).

    A kernel whose blocks are all finished is opened read-only and left untouched (a request for a subset
    of a richer earlier run reuses it); an unfinished one is resumed in place (``r+``); a kernel not yet
    stored gets a new file. The other stored kernels stay in the record as they are."""
    root.mkdir(parents=True, exist_ok=True)
    stored = _read_record(root, key, legacy, kernels)
    for g in get:
        f = root / f"{g}.npy"
        if g not in stored and f.exists():
            raise ValueError(f"path {str(root)!r}: {g}.npy is not in its progress.json record: refusing to "
                             "overwrite it; use another directory or delete it")
        if g in stored and not f.exists() and stored[g]:
            raise ValueError(f"path {str(root)!r}: {g}.npy is missing but recorded as partly computed; use "
                             "another directory or delete progress.json")
    want = set(blocks)
    if any(g not in stored for g in get):
        for g in get:
            stored.setdefault(g, set())
        write_record(root, key, stored)      # recorded before any new file exists
    out = {}
    for g in get:
        f = root / f"{g}.npy"
        if f.exists():
            mode = "r" if want <= stored[g] else "r+"
            mm = np.load(f, mmap_mode=mode)
            if mm.shape != tuple(shape) or mm.dtype != np.dtype(dtype):
                raise ValueError(f"path {str(root)!r}: {g}.npy has shape {mm.shape} and dtype {mm.dtype}, the "
                                 f"record expects {tuple(shape)} {dtype}; use another directory or delete it")
            out[g] = mm
        else:
            out[g] = np.lib.format.open_memmap(f, mode="w+", dtype=dtype, shape=tuple(shape))
    return out, stored


def write_record(root: Path, key: str, done: dict) -> None:
    """Write ``{"key": key, "kernels": {name: sorted finished blocks}}`` atomically (via a rename)."""
    tmp = root / "progress.json.tmp"
    tmp.write_text(json.dumps({"key": key, "kernels": {g: sorted(v) for g, v in done.items()}}))
    tmp.replace(root / "progress.json")


__all__ = ["open_store", "write_record"]
