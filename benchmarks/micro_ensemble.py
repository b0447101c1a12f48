"""Micro-benchmark: where the time of a vmapped ensemble of tiny MLPs goes on XLA:CPU (not the harness).

A minimal full-batch GD loop (depth-3 ReLU MLP, NTK scaling, MSE, L2; no metrics) for ``M`` seeds:

* ``seq``: one compiled single-network program called ``M`` times;
* ``vmap``: ``jax.jit(jax.vmap(run))`` over the seeds;
* ``packed``: parameters with a leading member axis, forward as batched einsums and ``jax.grad`` of the summed
  member losses (members are independent, so each gets its own gradient), with a custom VJP for the
  batched matmul whose weight gradient ``h^T g`` is computed from an explicitly transposed copy of ``h``
  (kept by ``lax.optimization_barrier``) so XLA:CPU gets a plain row-major batched GEMM instead of a dot that
  contracts the non-minor batch-row axis; ``packed+first`` also does the first layer as ONE GEMM
  ``x @ [W_1 ... W_M]`` with the weight gradient ``x^T G`` from a precomputed ``x^T``.
* ``ops``: single operations in a 500-step scan (per-iteration CPU time).

Times are CPU time of this process (``time.process_time``, all threads; min of ``--repeats``) and wall-clock.

Usage: ``PYTHONPATH=. .venvs/jax/bin/python benchmarks/micro_ensemble.py [--members 32 --width 8 --n 32]``
"""
from __future__ import annotations

import argparse
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", type=int, default=32)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--n", type=int, default=32, help="training examples (inputs: 64 features, 10 outputs)")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-ops", action="store_true", help="skip the single-operation timings")
    a = ap.parse_args(argv)
    M, w, N, d, K, S = a.members, a.width, a.n, 64, 10, a.steps
    lr, lam = 1.0, 1e-3
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((N, d)), jnp.float32)
    y = jnp.asarray(np.eye(K)[rng.integers(0, K, N)], jnp.float32)
    s0, s1 = math.sqrt(2 / d), math.sqrt(2 / w)
    bar = jax.lax.optimization_barrier

    def init(key):
        k = jax.random.split(key, 3)
        return {"W0": jax.random.normal(k[0], (d, w)), "W1": jax.random.normal(k[1], (w, w)),
                "W2": jax.random.normal(k[2], (w, K))}

    def gd(p, g):
        return jax.tree_util.tree_map(lambda a_, b: a_ - lr * (b + lam * a_), p, g)

    def run(key, x, y):
        def loss(p):
            h = jax.nn.relu(s0 * (x @ p["W0"]))
            h = jax.nn.relu(s1 * (h @ p["W1"]))
            return 0.5 * jnp.mean((s1 * (h @ p["W2"]) - y) ** 2)
        return jax.lax.scan(lambda p, _: (gd(p, jax.grad(loss)(p)), None), init(key), None, length=S)[0]

    @jax.custom_vjp
    def bmm(h, W):  # (M, N, w) x (M, w, v) -> (M, N, v)
        return jnp.einsum("mnw,mwv->mnv", h, W)

    def bmm_bwd(res, g):
        h, W = res
        return jnp.einsum("mnv,mwv->mnw", g, W), jnp.einsum("mwn,mnv->mwv", bar(jnp.swapaxes(h, 1, 2)), g)
    bmm.defvjp(lambda h, W: (bmm(h, W), (h, W)), bmm_bwd)

    @jax.custom_vjp
    def first(x, xT, W0):  # x (N, d), W0 (M, d, w) -> (M, N, w), one (N, d) x (d, M w) GEMM
        z = x @ jnp.transpose(W0, (1, 0, 2)).reshape(d, -1)
        return jnp.transpose(z.reshape(x.shape[0], W0.shape[0], w), (1, 0, 2))

    def first_bwd(res, g):
        x, xT, Mm = res
        G = jnp.transpose(g, (1, 0, 2)).reshape(x.shape[0], Mm * w)
        dW = (bar(xT) @ G).reshape(d, Mm, w)
        return jnp.zeros_like(x), jnp.zeros_like(xT), jnp.transpose(dW, (1, 0, 2))
    first.defvjp(lambda x, xT, W0: (first(x, xT, W0), (x, xT, W0.shape[0])), first_bwd)

    def run_packed(keys, x, y, fast_first):
        xT = x.T

        def loss(P):
            z0 = first(x, xT, P["W0"]) if fast_first else jnp.einsum("nd,mdw->mnw", x, P["W0"])
            h = jax.nn.relu(s1 * bmm(jax.nn.relu(s0 * z0), P["W1"]))
            return 0.5 * jnp.sum((s1 * bmm(h, P["W2"]) - y[None]) ** 2) / (N * K)
        P = jax.vmap(init)(keys)
        return jax.lax.scan(lambda P, _: (gd(P, jax.grad(loss)(P)), None), P, None, length=S)[0]

    def timed(fn):
        jax.block_until_ready(fn())
        c_best = w_best = float("inf")
        for _ in range(a.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(fn())
            w_best, c_best = min(w_best, time.perf_counter() - t0), min(c_best, time.process_time() - c0)
        return c_best, w_best

    keys = jnp.stack([jax.random.PRNGKey(i) for i in range(M)])
    single = jax.jit(run).lower(keys[0], x, y).compile()
    progs = {"seq": lambda: [single(k, x, y) for k in keys]}
    vm = jax.jit(jax.vmap(run, in_axes=(0, None, None))).lower(keys, x, y).compile()
    progs["vmap"] = lambda: vm(keys, x, y)
    pk = jax.jit(lambda k, x, y: run_packed(k, x, y, False)).lower(keys, x, y).compile()
    progs["packed"] = lambda: pk(keys, x, y)
    pf = jax.jit(lambda k, x, y: run_packed(k, x, y, True)).lower(keys, x, y).compile()
    progs["packed+first"] = lambda: pf(keys, x, y)
    ref = vm(keys, x, y)
    flops = 2 * N * (d * w + w * w + w * K) * 2 + 2 * N * (w * w + w * K)  # fwd + weight grads + input grads
    print(f"jax {jax.__version__}, M={M} width={w} N={N} d={d} K={K} steps={S}, XLA_FLAGS="
          f"{os.environ.get('XLA_FLAGS', '')!r}, load {os.getloadavg()[0]:.1f} at start")
    print("| program | CPU time | wall | speed-up vs seq (CPU) | GFLOP/s (CPU) | max rel. diff of W vs vmap |")
    print("|---|---|---|---|---|---|")
    base = None
    for name, fn in progs.items():
        c, wl = timed(fn)
        base = base or c
        out = fn() if name != "seq" else jax.tree_util.tree_map(lambda *v: jnp.stack(v), *fn())
        err = max(float(jnp.max(jnp.abs(out[k] - ref[k])) / jnp.max(jnp.abs(ref[k]))) for k in ref)
        print(f"| {name} | {c * 1e3:.1f} ms | {wl * 1e3:.1f} ms | {base / c:.2f}x | {M * S * flops / c / 1e9:.1f} "
              f"| {err:.1e} |")

    if not a.no_ops:
        r = np.random.default_rng(1)

        def A(*s):
            return jnp.asarray(r.standard_normal(s), jnp.float32)
        H, D, HT, DT, W1 = A(M, N, w), A(M, N, w), A(M, w, N), A(M, w, N), A(M, w, w)
        W0 = A(d, M * w)
        one = jnp.ones((M, w, w))
        ops = {
            f"x @ W0 then x^T @ (.) ({N}x{d})@({d}x{M * w})": (lambda W: W + 1e-3 * (x.T @ (x @ W)), W0),
            "batched fwd mnw,mwv->mnv": (lambda h: jnp.einsum("mnw,mwv->mnv", h, W1) * 0.3, H),
            "batched fwd nmw,mwv->nmv (member axis 2nd)": (lambda h: jnp.einsum("nmw,mwv->nmv", h, W1) * 0.3,
                                                           jnp.swapaxes(H, 0, 1)),
            "weight grad mnw,mnv->mwv (as jax.grad emits it)":
                (lambda c: c + 1e-3 * jnp.einsum("mnw,mnv->mwv", H * c[0, 0, 0], D), one),
            "weight grad from barrier(transpose(h))":
                (lambda c: c + 1e-3 * jnp.einsum("mwn,mnv->mwv", bar(jnp.swapaxes(H * c[0, 0, 0], 1, 2)), D), one),
            "weight grad, both operands N-minor mwn,mvn":
                (lambda c: c + 1e-3 * jnp.einsum("mwn,mvn->mwv", HT * c[0, 0, 0], DT), one),
            "elementwise relu on (M,N,w)": (lambda h: jax.nn.relu(h) * 0.99 - 0.01, H),
        }
        print("\n| single operation (in a scan) | CPU time per iteration |\n|---|---|")
        for name, (body, c0) in ops.items():
            f = jax.jit(lambda c: jax.lax.scan(lambda c, _: (body(c), None), c, None, length=S)[0])
            f = f.lower(c0).compile()
            c, _ = timed(lambda: f(c0))
            print(f"| {name} | {c / S * 1e6:.2f} us |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
