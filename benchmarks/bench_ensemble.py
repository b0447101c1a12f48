"""Benchmark: M small networks trained together (one vmapped, jit-compiled program) vs M sequential runs.

Fairness: the sequential runs use ONE compiled program (``Program`` + cached executable) reused for all
members, so the sequential side pays compilation once, like the ensemble. Reported separately:

* execution only: the compiled calls (``block_until_ready``), best of ``--repeats``;
* end to end: the public API calls (``train_ensemble(...)`` vs ``[train(m, data, program=prog) ...]``), which
  include the single compilation and result packaging, measured once;
* with ``--naive``, a second, clearly separate peer: ``M`` plain ``train(m, data)`` calls, *each compiling its
  own program* (what a user gets without program reuse), measured once.

Execution is timed both as wall-clock and as CPU time of this process (``time.process_time``, all threads):
on a shared, overloaded machine the wall-clock includes time spent waiting for a core, the CPU time does not.

Usage::

    PYTHONPATH=. .venvs/jax/bin/python benchmarks/bench_ensemble.py [--members 32] [--steps 500] \
        [--width 64] [--repeats 3] [--write benchmarks/RESULTS_ensemble.md]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", type=int, default=32)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--n-train", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--naive", action="store_true",
                    help="also time M plain train(m) calls, each compiling its own program")
    ap.add_argument("--write", default=None, help="append a Markdown report to this file")
    args = ap.parse_args(argv)

    from widelimit.arch import MLP
    from widelimit.data import load_dataset
    from widelimit.train import Program, RunConfig, member_configs, train, train_ensemble
    from widelimit.train.loop import _compile

    cfg = RunConfig(arch=MLP(depth=3, width=args.width, out_dim=10), data="digits",
                    data_options=dict(n_train=args.n_train, n_test=256), learning_rate=1.0, weight_decay=1e-3,
                    steps=args.steps, eval_every=max(1, args.steps // 5))
    members = member_configs(cfg, seeds=list(range(args.members)))
    data = load_dataset(cfg.data, **cfg.canonical().data_options)
    M = len(members)

    # ---- execution only ----------------------------------------------------------------------------
    prog = Program(cfg, data)
    arrays = prog.arrays(data)
    keys = [jax.random.PRNGKey(m.seed) for m in members]
    hps = [prog.default_hp(m) for m in members]
    t0 = time.perf_counter()
    single = _compile(prog, keys[0], hps[0], arrays)
    seq_compile = time.perf_counter() - t0
    vm = jax.jit(jax.vmap(prog.run, in_axes=(0, 0, None)))
    kstack = jnp.stack(keys)
    hstack = {k: jnp.stack([h[k] for h in hps]) for k in hps[0]}
    t0 = time.perf_counter()
    ens = vm.lower(kstack, hstack, arrays).compile()
    ens_compile = time.perf_counter() - t0

    seq_times, ens_times, seq_cpu, ens_cpu = [], [], [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for k, h in zip(keys, hps):
            jax.block_until_ready(single(k, h, arrays))
        seq_times.append(time.perf_counter() - t0)
        seq_cpu.append(time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(ens(kstack, hstack, arrays))
        ens_times.append(time.perf_counter() - t0)
        ens_cpu.append(time.process_time() - c0)
    seq_exec, ens_exec = min(seq_times), min(ens_times)
    seq_c, ens_c = min(seq_cpu), min(ens_cpu)

    # agreement of the two (same seeds): final train loss of every member
    out_e, _ = ens(kstack, hstack, arrays)
    out_s = [single(k, h, arrays)[0] for k, h in zip(keys, hps)]
    loss_e = np.asarray(out_e["metrics"]["train_loss"][:, -1])
    loss_s = np.asarray([o["metrics"]["train_loss"][-1] for o in out_s])
    max_rel = float(np.max(np.abs(loss_e - loss_s) / np.abs(loss_s)))

    # ---- end to end (public API, compile included, measured once) ---------------------------------
    t0 = time.perf_counter()
    train_ensemble(cfg, seeds=list(range(args.members)), data=data)
    e2e_ens = time.perf_counter() - t0
    t0 = time.perf_counter()
    prog2 = Program(cfg, data)
    for m in members:
        train(m, data, program=prog2)
    e2e_seq = time.perf_counter() - t0
    e2e_naive = None
    if args.naive:
        t0 = time.perf_counter()
        for m in members:
            train(m, data)  # a fresh Program each time: one compilation per run
        e2e_naive = time.perf_counter() - t0

    n_params = prog.n_params
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    lines = [
        f"## bench_ensemble: {M} MLPs (depth 3, width {args.width}, {n_params} params each), digits "
        f"n_train={args.n_train}, full-batch GD, {args.steps} steps, metrics every {cfg.eval_every}",
        "",
        f"Command: `PYTHONPATH=. {os.path.relpath(sys.executable)} benchmarks/bench_ensemble.py "
        f"{' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load[0]:.1f}/{load[1]:.1f}/"
        f"{load[2]:.1f} at the end (shared machine); jax {jax.__version__} ({jax.default_backend()}).",
        "",
        "| | sequential (1 program reused) | ensemble (vmap) | speed-up |",
        "|---|---|---|---|",
        f"| compile (once) | {seq_compile:.2f} s | {ens_compile:.2f} s | |",
        f"| execution, best of {args.repeats} (wall) | {seq_exec:.3f} s | {ens_exec:.3f} s | "
        f"**{seq_exec / ens_exec:.1f}x** |",
        f"| execution, best of {args.repeats} (CPU time) | {seq_c:.3f} s | {ens_c:.3f} s | "
        f"**{seq_c / ens_c:.1f}x** |",
        f"| compile + execution | {seq_compile + seq_exec:.2f} s | {ens_compile + ens_exec:.2f} s | "
        f"{(seq_compile + seq_exec) / (ens_compile + ens_exec):.1f}x |",
        f"| end to end via train()/train_ensemble() | {e2e_seq:.2f} s | {e2e_ens:.2f} s | "
        f"{e2e_seq / e2e_ens:.1f}x |",
    ]
    if e2e_naive is not None:
        lines.append(f"| end to end, {M} plain train(m) calls, each compiling (peer 2) | {e2e_naive:.2f} s | "
                     f"{e2e_ens:.2f} s | {e2e_naive / e2e_ens:.1f}x |")
    lines += [
        "",
        f"Execution times of all repeats: sequential {', '.join(f'{t:.3f}' for t in seq_times)} s; "
        f"ensemble {', '.join(f'{t:.3f}' for t in ens_times)} s (CPU times: sequential "
        f"{', '.join(f'{t:.3f}' for t in seq_cpu)} s; ensemble {', '.join(f'{t:.3f}' for t in ens_cpu)} s). "
        f"Throughput (execution): sequential "
        f"{M * args.steps / seq_exec:,.0f}, ensemble {M * args.steps / ens_exec:,.0f} network-steps/s. "
        f"Max relative difference of the final train loss, ensemble vs sequential: {max_rel:.1e}.",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if args.write:
        with open(args.write, "a") as fh:
            fh.write(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
