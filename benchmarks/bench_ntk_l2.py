"""Benchmarks of the closed-form NTK-regime L2 flow (``widelimit.dynamics.ntk_l2.L2Flow``).

Parts (``--part``, comma-separated):

* ``ivp``: N = 2000 train, 1000 test, 10 outputs, 200 times in [0, 10/lam], lam = 1e-3, L = 3:
  closed form (eigendecomposition + evaluation) vs ``scipy.integrate.solve_ivp`` (RK45, rtol 1e-8,
  atol 1e-10) on the same train+test ODE, in the same process; accuracy of both (the closed form is also
  checked against DOP853 at rtol 1e-12 on an N = 100 sub-problem).
* ``horizon``: the same comparison at N = 500 for time horizons 1e3 ... 1e5 (and lam = 0).
* ``nt``: lam = 0 path vs ``neural_tangents.predict.gradient_descent_mse`` (float64), same problem; needs
  the pinned ``nt`` environment.
* ``scaling``: build + evaluation time and peak traced memory for N in ``--sizes`` (M = N/2, K = 10, T = 200).

Kernels: analytic NTK of a bias-free 3-layer ReLU MLP (``widelimit.kernels.analytic_kernels``, native
backend) on Gaussian inputs (d = 32, norm sqrt(d)); targets one-hot of a random linear teacher; ``f0``
Gaussian with std 0.5. Prints Markdown (and writes it to ``--out`` if given). Timings on a shared machine
are noisy: every timing is the minimum over repetitions (closed form 3, solve_ivp 2, NT 3 interleaved with
ours; the scaling part 1), and the load average is printed with every part.

    python benchmarks/bench_ntk_l2.py --part ivp,horizon,scaling --sizes 1000,2000,5000,10000
    .venvs/nt/bin/python benchmarks/bench_ntk_l2.py --part nt

BLAS threads: ``OPENBLAS_NUM_THREADS`` (and OMP/MKL) default to 1 here unless set: on the shared 2-core
development machine two OpenBLAS threads made ``eigh`` 5-10x slower and its timing vary 10x between
identical calls (thread spinning under oversubscription). Both methods compared use the same BLAS.
"""
from __future__ import annotations

import argparse
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")   # before NumPy is imported; see the module docstring
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from widelimit.arch import MLP  # noqa: E402
from widelimit.dynamics.ntk_l2 import L2Flow  # noqa: E402
from widelimit.dynamics.ode import integrate_flow  # noqa: E402
from widelimit.kernels import analytic_kernels  # noqa: E402

K_OUT, DIM, L_DEG = 10, 32, 3


def problem(n: int, m: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + m, DIM))
    x *= np.sqrt(DIM) / np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.argmax(x @ rng.normal(size=(DIM, K_OUT)), axis=1)
    y = np.eye(K_OUT)[labels[:n]]
    spec = MLP(depth=L_DEG, out_dim=K_OUT)
    ktt = analytic_kernels(spec, x[:n], batch_size=2500).ntk
    kxt = analytic_kernels(spec, x[n:], x[:n], batch_size=2500).ntk
    f0 = 0.5 * rng.normal(size=(n, K_OUT))
    f0x = 0.5 * rng.normal(size=(m, K_OUT))
    return ktt, kxt, y, f0, f0x


def _load() -> str:
    return "load average %.1f %.1f %.1f" % os.getloadavg()


def _closed(ktt, kxt, y, f0, f0x, lam, ts, reps: int = 1):
    """Build + evaluate; times are the minimum over ``reps`` repetitions (shared, noisy machine)."""
    t_build = t_eval = np.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        sol = L2Flow(ktt, y, lam, L_DEG, ntk_test_train=kxt, f0_train=f0, f0_test=f0x)
        t1 = time.perf_counter()
        tr, te = sol(ts)
        t2 = time.perf_counter()
        t_build, t_eval = min(t_build, t1 - t0), min(t_eval, t2 - t1)
    return tr, te, t_build, t_eval, sol


def _ivp(ktt, kxt, y, f0, f0x, lam, ts, reps: int = 1):
    """solve_ivp RK45 (rtol 1e-8, atol 1e-10); minimum time over ``reps`` repetitions."""
    best = np.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        num, info = integrate_flow(ktt, y, lam, L_DEG, ts, ntk_test_train=kxt, f0_train=f0, f0_test=f0x,
                                   method="RK45", rtol=1e-8, atol=1e-10, return_result=True)
        best = min(best, time.perf_counter() - t0)
    return num, info, best


def part_ivp(lines: list, n: int, m: int) -> None:
    T, lam = 200, 1e-3
    ktt, kxt, y, f0, f0x = problem(n, m)
    ts = np.concatenate([[0.0], np.geomspace(1e-1, 10 / lam, T - 1)])
    tr, te, t_build, t_eval, sol = _closed(ktt, kxt, y, f0, f0x, lam, ts, reps=3)
    t_closed = t_build + t_eval
    num, info, t_ivp = _ivp(ktt, kxt, y, f0, f0x, lam, ts, reps=2)
    t_relam = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        sol.with_weight_decay(3 * lam)(ts)   # another weight decay: the eigendecomposition is reused
        t_relam = min(t_relam, time.perf_counter() - t0)
    err_ivp = max(np.abs(num.train - tr).max(), np.abs(num.test - te).max())
    # accuracy of the closed form itself: against a much tighter integration on a sub-problem
    ns, ms = 100, 50
    sub = (ktt[:ns, :ns], kxt[:ms, :ns], y[:ns], f0[:ns], f0x[:ms])
    cs = L2Flow(sub[0], sub[2], lam, L_DEG, ntk_test_train=sub[1], f0_train=sub[3], f0_test=sub[4])(ts)
    ref = integrate_flow(sub[0], sub[2], lam, L_DEG, ts, ntk_test_train=sub[1], f0_train=sub[3],
                         f0_test=sub[4], method="DOP853", rtol=1e-12, atol=1e-14)
    err_sub = max(np.abs(cs.train - ref.train).max(), np.abs(cs.test - ref.test).max())
    lines += [
        "## Closed form vs scipy solve_ivp", "",
        f"N = {n} train, M = {m} test, K = {K_OUT} outputs, T = {T} times in [0, {10 / lam:g}], "
        f"lam = {lam:g}, L = {L_DEG}; mu_max = {sol.eigenvalues.max():.3g} (normalised kernel); {_load()}.", "",
        "| method | time (s) | max abs deviation |", "|---|---|---|",
        f"| closed form (eigh {t_build:.2f} s + evaluation {t_eval:.2f} s) | {t_closed:.2f} | "
        f"{err_sub:.1e} vs DOP853 rtol 1e-12 (N = {ns} sub-problem) |",
        f"| solve_ivp RK45 rtol 1e-8, atol 1e-10 ({info.nfev} right-hand sides) | {t_ivp:.2f} | "
        f"{err_ivp:.1e} vs closed form |", "",
        f"Speed-up: **{t_ivp / t_closed:.1f}x** for one problem (same process). Each further lam on the same "
        f"kernel (``with_weight_decay``, eigendecomposition reused) costs the closed form {t_relam:.2f} s: "
        f"**{t_ivp / t_relam:.0f}x** less than another solve_ivp run.", ""]


def part_horizon(lines: list, n: int = 500, m: int = 250) -> None:
    """How the speed-up grows with the time horizon: an explicit solver needs about mu_max * t_max / 3
    steps while the kernel has not decayed (t < 1/kappa); lam = 0 has no decay at all."""
    ktt, kxt, y, f0, f0x = problem(n, m)
    lines += ["## Speed-up vs time horizon", "",
              f"N = {n}, M = {m}, K = {K_OUT}, 200 times in [0, t_max], L = {L_DEG}; {_load()}.", "",
              "| lam | t_max | closed form (s) | solve_ivp RK45 rtol 1e-8 (s) | right-hand sides | speed-up | "
              "max abs dev. |", "|---|---|---|---|---|---|---|"]
    for lam, t_max in ((1e-3, 1e3), (1e-3, 1e4), (1e-3, 1e5), (0.0, 1e3), (0.0, 1e4)):
        ts = np.concatenate([[0.0], np.geomspace(1e-1, t_max, 199)])
        tr, te, t_build, t_eval, _ = _closed(ktt, kxt, y, f0, f0x, lam, ts, reps=3)
        num, info, t_ivp = _ivp(ktt, kxt, y, f0, f0x, lam, ts, reps=2)
        dev = max(np.abs(num.train - tr).max(), np.abs(num.test - te).max())
        lines.append(f"| {lam:g} | {t_max:g} | {t_build + t_eval:.2f} | {t_ivp:.2f} | {info.nfev} | "
                     f"{t_ivp / (t_build + t_eval):.1f}x | {dev:.1e} |")
    lines.append("")


def _warmup() -> None:
    """Load LAPACK/BLAS and start their thread pools before anything is timed."""
    a = np.random.default_rng(0).normal(size=(64, 64))
    L2Flow(a @ a.T, np.ones((64, 2)), 0.1, 2, ntk_test_train=a[:8] @ a.T)(np.array([1.0, np.inf]))


def part_nt(lines: list, n: int, m: int) -> None:
    import neural_tangents as nt
    from widelimit._x64 import x64
    T = 200
    ktt, kxt, y, f0, f0x = problem(n, m)
    ts = np.concatenate([[0.0], np.geomspace(1e-1, 1e4, T - 1)])
    t_nt, t_ours = [], []
    for rep in range(3):                 # interleaved repetitions; the machine is shared
        t0 = time.perf_counter()
        with x64():
            predict = nt.predict.gradient_descent_mse(ktt, y)
            a, b = predict(ts, f0, f0x, kxt)
            a, b = np.asarray(a), np.asarray(b)
        t_nt.append(time.perf_counter() - t0)
        tr, te, t_build, t_eval, _ = _closed(ktt, kxt, y, f0, f0x, 0.0, ts)
        t_ours.append(t_build + t_eval)
    dev = max(np.abs(a - tr).max(), np.abs(b - te).max())
    lines += [
        "## lam = 0 path vs neural-tangents", "",
        f"N = {n}, M = {m}, K = {K_OUT}, T = {T}, float64 (NT under x64), build + evaluate train and test; "
        f"{_load()}.", "",
        "| | nt.predict.gradient_descent_mse (s) | L2Flow lam = 0 (s) | ratio ours/NT |", "|---|---|---|---|",
        *[f"| run {r + 1}{' (NT compiles)' if r == 0 else ''} | {t_nt[r]:.2f} | {t_ours[r]:.2f} | "
          f"{t_ours[r] / t_nt[r]:.2f} |" for r in range(3)],
        f"| **min over runs** | {min(t_nt):.2f} | {min(t_ours):.2f} | **{min(t_ours) / min(t_nt):.2f}** |", "",
        f"Max abs difference of the outputs: {dev:.1e}.", ""]


def part_scaling(lines: list, sizes) -> None:
    lines += ["## Scaling with N", "",
              f"M = N/2 test points, K = {K_OUT}, T = 200 times, lam = 1e-3, L = {L_DEG}. Peak memory: "
              "min over 3 runs for N <= 2000, one run above; "
              "tracemalloc peak of the solver (kernels excluded; NumPy/SciPy buffers incl. LAPACK work arrays), "
              "and the kernels' own size for reference.", "",
              "| N | build (eigh) s | evaluate 200 times s | peak solver memory MiB | kernels MiB | load |",
              "|---|---|---|---|---|---|"]
    for n in sizes:
        m = n // 2
        ktt, kxt, y, f0, f0x = problem(n, m)
        ts = np.concatenate([[0.0], np.geomspace(1e-1, 1e4, 199)])
        tracemalloc.start()
        _, _, t_build, t_eval, sol = _closed(ktt, kxt, y, f0, f0x, 1e-3, ts, reps=3 if n <= 2000 else 1)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del sol
        kmem = (ktt.nbytes + kxt.nbytes) / 2 ** 20
        lines.append(f"| {n} | {t_build:.2f} | {t_eval:.2f} | {peak / 2 ** 20:.0f} | {kmem:.0f} | "
                     f"{os.getloadavg()[0]:.1f} |")
    lines += ["", f"Process max RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10:.0f} MiB.", ""]


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default="ivp,scaling")
    ap.add_argument("--sizes", default="1000,2000,5000,10000")
    ap.add_argument("--n", type=int, default=2000, help="training points for the ivp and nt parts")
    ap.add_argument("--m", type=int, default=1000, help="test points for the ivp and nt parts")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    lines = [f"<!-- {platform.node()} python {platform.python_version()} numpy {np.__version__}, "
             f"{os.cpu_count()} CPUs, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')} -->", ""]
    _warmup()
    for part in args.part.split(","):
        t0, start = time.perf_counter(), len(lines)
        if part == "ivp":
            part_ivp(lines, args.n, args.m)
        elif part == "horizon":
            part_horizon(lines)
        elif part == "nt":
            part_nt(lines, args.n, args.m)
        elif part == "scaling":
            part_scaling(lines, [int(s) for s in args.sizes.split(",")])
        else:
            raise SystemExit(f"unknown part {part!r}; expected ivp, horizon, nt or scaling")
        lines.append(f"_(part `{part}` took {time.perf_counter() - t0:.0f} s)_\n")
        print("\n".join(lines[start:]), flush=True)
    text = "\n".join(lines)
    if args.out:
        Path(args.out).write_text(text)
    return text


if __name__ == "__main__":
    main()
