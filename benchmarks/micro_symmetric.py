"""Micro-benchmark (issue 11): can a narrow pass over a square float64 kernel read only its upper triangle?

A pass ``K @ x`` with ``b`` columns reads the whole ``N x N`` kernel. For a symmetric ``K`` the same
product can be formed from the upper triangle alone, block row by block row (``B`` rows at a time): the
block ``U = K[i0:i1, i0:]`` gives ``y[i0:] += U^T x[i0:i1]`` and ``y[i0:i1] += U[:, B:] x[i1:]`` -- half the
memory traffic if ``U`` stays in cache between its two products. Compared here with the solver's present
full-matrix product ``(x^T K)^T`` (KernelMatrix.matmat), both on a random symmetric matrix, median of 7.

    python benchmarks/micro_symmetric.py --n 10000 --b 10
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def full(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.matmul(np.ascontiguousarray(x.T), a).T


def upper(a: np.ndarray, x: np.ndarray, rows: int) -> np.ndarray:
    n = a.shape[0]
    xt = np.ascontiguousarray(x.T)
    yt = np.zeros((x.shape[1], n))
    for i0 in range(0, n, rows):
        i1 = min(i0 + rows, n)
        u = a[i0:i1, i0:]
        yt[:, i0:] += xt[:, i0:i1] @ u
        if i1 < n:
            yt[:, i0:i1] += xt[:, i1:] @ u[:, i1 - i0:].T
    return yt.T


def _median_s(f, *args, repeats: int = 7) -> float:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(*args)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--b", type=int, default=10)
    args = p.parse_args()
    if args.n < 2 or args.b < 1:
        raise SystemExit("--n must be >= 2 and --b >= 1")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((args.n, args.n))
    a += a.T
    x = rng.standard_normal((args.n, args.b))
    ref = full(a, x)
    print(f"full (x^T K)^T: {_median_s(full, a, x):.4f} s")
    for rows in (64, 256, 1024):
        err = float(np.abs(upper(a, x, rows) - ref).max() / np.abs(ref).max())
        print(f"upper triangle, {rows}-row blocks: {_median_s(upper, a, x, rows):.4f} s (max rel. diff {err:.1e})")


if __name__ == "__main__":
    main()
