"""Benchmark: a weight_decay x budget table of test losses from the Volterra solver vs the homogeneous
closed form (docs/theory.md §5).

For each N: random inputs (d = 16, K = 2 outputs), an n_lam x n_budget table of test MSE (f0 = 0) at
``t = learning_rate * steps`` for log-spaced ``weight_decay`` and ``steps``. Timed:

* closed form: ``FlowLoss`` (homogeneous ReLU net, L = 3), kernels included;
* Volterra: ``VolterraLoss`` (``--method separable``, the default: kernel fitted once in the two scales;
  ``reduced``: few full kernels and a reduced basis, for large N; or ``nystrom``, the slow reference) on
  the same homogeneous net (its largest relative deviation from the closed form is reported) and on the
  same net with biases (b_std = 0.5), kernels and fit included;

with the stated quadrature error estimate (max over the table), the kernel-fit error (separable,
reduced) and, for ``reduced``, the stated basis error (max over the table; since commit abedd5d the
residual bound of docs/theory.md §5.5, before it the 3k/4-column estimate), the basis size k (with the
range of leading columns the decays were solved in, where some used fewer) and the number r of full pivot
kernels. ``--skip-homogeneous`` skips the Volterra run on the bias-free net;
``--step`` sets the base step in v (default ``default_step(rtol)``; at most ``8 rtol^(1/4)``).
Single-threaded BLAS by default (the
machine is shared). Usage::

    python benchmarks/bench_volterra.py --n 25 50 100 --n-lam 20 --n-budget 20 --rtol 1e-6 --method separable
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from widelimit.arch import MLP  # noqa: E402
from widelimit.dynamics.loss import FlowLoss  # noqa: E402
from widelimit.dynamics.ntk_l2 import L2Flow  # noqa: E402
from widelimit.dynamics.volterra_loss import VolterraLoss  # noqa: E402
from widelimit.kernels.native import mlp_kernels  # noqa: E402


def table(model, lams, times):
    return np.stack([model.test_loss(lam, times) for lam in lams])


def run(n: int, n_lam: int, n_budget: int, rtol: float, seed: int = 0, method: str = "separable",
        homogeneous: bool = True, step=None) -> dict:
    rng = np.random.default_rng(seed)
    d, m, k = 16, max(10, n // 4), 2
    x, xt = rng.normal(size=(n, d)), rng.normal(size=(m, d))
    y, yt = rng.normal(size=(n, k)), rng.normal(size=(m, k))
    lams = np.geomspace(1e-4, 1e-2, n_lam)                # weight_decay * t <= 10
    times = np.geomspace(1.0, 1e3, n_budget)              # learning_rate = 1: t = steps
    spec = MLP(depth=3)
    t0 = time.perf_counter()
    ktt, kxt = mlp_kernels(spec, x)[0], mlp_kernels(spec, xt, x)[0]
    closed = FlowLoss(L2Flow(ktt, y, 0.0, 3, ntk_test_train=kxt), yt)
    ref = table(closed, lams, times)
    t_closed = time.perf_counter() - t0
    out = {"N": n, "M": m, "closed_s": t_closed}
    nets = (("homogeneous", spec),) if homogeneous else ()
    for name, sp in nets + (("bias", spec.replace(b_std=0.5)),):
        t0 = time.perf_counter()
        vl = VolterraLoss(sp, x, y, xt, yt, f0="zero", rtol=rtol, method=method, step=step)
        vl.precompute(lams, times)          # separable: all weight decays in one vectorised pass
        tab = table(vl, lams, times)
        out[f"{name}_s"] = time.perf_counter() - t0
        out[f"{name}_err_est"] = max(vl.outputs(lam, times).error_estimate for lam in lams)
        out[f"{name}_fit_err"] = getattr(vl.flow, "fit_error", 0.0)
        out[f"{name}_basis_err"] = max(vl.outputs(lam, times).basis_error or 0.0 for lam in lams)
        out[f"{name}_k"] = vl.flow.basis.shape[1] if hasattr(vl.flow, "basis") else n
        cols = getattr(vl.flow, "columns", None)          # reduced: columns each decay was solved in
        if cols is not None and np.min(cols) < out[f"{name}_k"]:
            kk = out[f"{name}_k"]
            out[f"{name}_k"] = f"{kk} ({np.min(cols)}-{np.max(cols)}; {np.sum(cols < kk)} decays fewer)"
        out[f"{name}_r"] = getattr(vl.flow, "rank", 0)
        if name == "homogeneous":
            out["homogeneous_dev"] = float(np.max(np.abs(tab - ref) / ref))
        out["nodes"] = vl.outputs(lams[-1], times).n_nodes
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[25, 50, 100])
    p.add_argument("--n-lam", type=int, default=20)
    p.add_argument("--n-budget", type=int, default=20)
    p.add_argument("--rtol", type=float, default=1e-6)
    p.add_argument("--method", choices=("separable", "nystrom", "reduced"), default="separable")
    p.add_argument("--skip-homogeneous", action="store_true")
    p.add_argument("--step", type=float, default=None,
                   help="base step in v (default: default_step(rtol), a-priori estimate rtol/10)")
    a = p.parse_args()
    print(f"{a.n_lam} weight_decay x {a.n_budget} budget table, rtol={a.rtol:g}, method={a.method}, "
          f"step={a.step}")
    print("| N | closed form (s) | Volterra, homogeneous (s) | max rel. deviation | Volterra, biases (s) "
          "| ratio biases/closed | stated quadrature error (max) | stated basis error (max) | kernel-fit error "
          "| k / r | finest-grid nodes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in a.n:
        r = run(n, a.n_lam, a.n_budget, a.rtol, method=a.method, homogeneous=not a.skip_homogeneous,
                step=a.step)
        hom = (f"{r['homogeneous_s']:.2f} | {r['homogeneous_dev']:.1e}" if "homogeneous_s" in r else "- | -")
        print(f"| {r['N']} | {r['closed_s']:.3f} | {hom} | "
              f"{r['bias_s']:.2f} | {r['bias_s'] / r['closed_s']:.0f} | {r['bias_err_est']:.1e} | "
              f"{r['bias_basis_err']:.1e} | {r['bias_fit_err']:.1e} | {r['bias_k']} / {r['bias_r']} | "
              f"{r['nodes']} |", flush=True)


if __name__ == "__main__":
    main()
