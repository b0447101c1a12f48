"""Micro-benchmark (issue 11): cost of the NNGP sandwich ``Q^T K Q`` (N x N float64 kernel, r columns), the
second-largest part of the Krylov build at N = 10 000 under Hutch++ (r = 512).

Variants, all on one random symmetric PSD-like matrix, median of 5:

* ``float64``: one BLAS call ``q.T @ (K @ q)`` (KernelMatrix.sandwich before commit 0c43da0);
* ``float32``: ``K`` and ``q`` cast to float32 once (cast timed separately), sgemm, result in float64 --
  its relative deviation from the float64 result is printed (what a stated error would have to absorb);
* ``upper``: ``KernelMatrix.sandwich`` (the solver's path since 0c43da0): the upper block triangle only,
  ``sum_i Q_i^T K_ii Q_i + sum_{i<j} (Q_i^T K_ij Q_j + transpose)``, blocks of ``--block`` rows (about half the flops of ``K @ q`` for ``block >> r``).

    python benchmarks/micro_sandwich.py --n 10000 --r 512
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def f64(a, q):
    return q.T @ (a @ q)


def upper(a, q, block):
    """The solver's own sandwich (``KernelMatrix.sandwich``) at ``block`` rows per block."""
    from widelimit.dynamics.krylov import operator
    saved, operator._SANDWICH_ROWS = operator._SANDWICH_ROWS, block
    try:
        return operator.KernelMatrix("k", a).sandwich(q)
    finally:
        operator._SANDWICH_ROWS = saved


def _median(f, *args, repeats=5):
    ts, res = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = f(*args)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--r", type=int, default=512)
    p.add_argument("--block", type=int, default=2048)
    a = p.parse_args()
    if a.n < 2 or a.r < 1 or a.block < 1:
        raise SystemExit("--n must be >= 2, --r and --block >= 1")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.n, 64))
    k = x @ x.T + np.eye(a.n)                       # symmetric PSD
    q, _ = np.linalg.qr(rng.standard_normal((a.n, a.r)))
    t64, ref = _median(f64, k, q)
    print(f"float64 q^T (K q): {t64:.3f} s")
    t0 = time.perf_counter()
    k32, q32 = k.astype(np.float32), q.astype(np.float32)
    tc = time.perf_counter() - t0
    t32, r32 = _median(f64, k32, q32)
    dev = float(np.abs(r32.astype(np.float64) - ref).max() / np.abs(ref).max())
    print(f"float32: cast {tc:.3f} s + sgemm {t32:.3f} s; max rel. deviation {dev:.1e}")
    tu, ru = _median(upper, k, q, a.block)
    print(f"upper triangle, {a.block}-row blocks: {tu:.3f} s; max rel. diff "
          f"{float(np.abs(ru - ref).max() / np.abs(ref).max()):.1e}")


if __name__ == "__main__":
    main()
