"""Scale benchmark of the L2 theory (issue 11): kernels, solvers, memory, neural-tangents, bandwidth.

Problem (as benchmarks/bench_krylov.py): MNIST-1D (widelimit.data_large.load_mnist1d_large, seed 0),
3-layer bias-free ReLU MLP (L = 3), K = 10 one-hot outputs, M = 1000 test points; kernels from
widelimit.kernels.blockwise.large_data_kernels, float32, memory-mapped under $SCALE_DIR/n<N> (default
/tmp/widelimit_scale; resumable). Table: expected test loss over f0 ~ NNGP for 50 weight decays in
[1e-5, 1e-1] x 50 budgets t = eta T (eta = 1, T log-spaced in [1e2, 1e6]), via the public
``predict_model(kernels, solver=...)``.

    python benchmarks/bench_scale.py bandwidth                 # numpy streaming read bandwidth
    python benchmarks/bench_scale.py bandwidth --kernel-dir /tmp/widelimit_bench_krylov/n10000  # operator passes
    python benchmarks/bench_scale.py kernel-speed --n 4096     # old vs new block path, one process
    python benchmarks/bench_scale.py kernels --n 5000          # kernels only (own process)
    python benchmarks/bench_scale.py solve --n 5000 --solver krylov|eigh   # build + 50x50 table
    python benchmarks/bench_scale.py scaling --ns 1000 2000 5000 --dense-max 5000   # one subprocess each
    python benchmarks/bench_scale.py end-to-end --n 50000      # kernels + Krylov table in one process
    python benchmarks/bench_scale.py crossover --n 2000 --f0 zero   # eigh vs krylov, one process (auto threshold)
    .venvs/nt/bin/python benchmarks/bench_scale.py nt --n 5000 # neural-tangents gradient_descent_mse, lambda=0
    python benchmarks/bench_scale.py ours-lambda0 --n 5000     # our Krylov path, same outputs, and compare

Every sub-command prints JSON lines (times in s, memory in bytes; peak = VmHWM of its own process,
which counts the memory-mapped kernel pages it touched as well as its anonymous memory).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(os.environ.get("SCALE_DIR", "/tmp/widelimit_scale"))
LAMS = np.geomspace(1e-5, 1e-1, 50)
BUDGETS = np.geomspace(1e2, 1e6, 50)
M_TEST = 1000


def status() -> dict:
    """VmHWM / VmRSS / RssAnon / RssFile of this process (bytes) and the load average."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key = line.split(":")[0]
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(line.split()[1]) * 1024
    out["loadavg"] = os.getloadavg()[0]
    return out


def emit(**kw) -> None:
    kw.update(status())
    print(json.dumps(kw), flush=True)


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        return "?"


# -------------------------------------------------------------------------------------------------
def cmd_bandwidth(gib: float = 4.0) -> None:
    """Read bandwidth: ``np.add.reduce`` over a float32 array of ``gib`` GiB (>> the 32 MiB L3), best of 3;
    also the float32 -> float64 chunked product the Krylov operator does, per byte of float32 read."""
    n = int(gib * 2 ** 30 // 4)
    a = np.ones(n, np.float32)
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        a.sum()
        best = min(best, time.perf_counter() - t0)
    rows, cols = 4096, 8192
    k = a[: (n // cols) * cols].reshape(-1, cols)[: 16 * rows]        # 2 GiB of float32 rows
    res = {}
    from threadpoolctl import threadpool_limits
    for threads in (None, 1):
        for b in (1, 10, 40):
            x = np.ones((cols, b))
            with threadpool_limits(limits=threads, user_api="blas"):
                t0 = time.perf_counter()
                for i in range(0, k.shape[0], rows):
                    np.asarray(k[i:i + rows], np.float64) @ x
                t_op = time.perf_counter() - t0
            tag = f"b{b}_{'default' if threads is None else threads}thr"
            res[f"matmat_{tag}_GBps"] = k.nbytes / t_op / 1e9
            res[f"matmat_{tag}_GFLOPs"] = 2 * k.size * b / t_op / 1e9
    t0 = time.perf_counter()
    for i in range(0, k.shape[0], rows):
        np.asarray(k[i:i + rows], np.float64)
    res["f32_to_f64_convert_GBps"] = k.nbytes / (time.perf_counter() - t0) / 1e9
    emit(cmd="bandwidth", bytes=a.nbytes, read_GBps=a.nbytes / best / 1e9, **res, commit=_commit())


def _kernel_file(d: Path) -> Path:
    """The float32 train-train NTK under ``d`` (``train_train/`` of bench_scale, ``tt/`` of bench_krylov)."""
    for sub in ("train_train", "tt"):
        if (d / sub / "ntk.npy").exists():
            return d / sub / "ntk.npy"
    raise SystemExit(f"no train_train/ntk.npy or tt/ntk.npy under {d}")


def _old_matmat(mm, x, rows):
    """The operator's float32 pass before commit of this section (a fresh float64 array per chunk)."""
    out = np.empty((mm.shape[0], x.shape[1]))
    for i in range(0, mm.shape[0], rows):
        blk = np.asarray(mm[i:i + rows], dtype=np.float64)
        out[i:i + blk.shape[0]] = blk @ x
    return out


def cmd_bandwidth_split(d: Path, chunks_mib, b: int = 10, reps: int = 3) -> None:
    """Where a float32 pass goes, one thread, one process: the float32 -> float64 cast of every row chunk
    into one reused buffer alone, the (rows, N) @ (N, b) product on that buffer alone, and the two in
    sequence (what :class:`KernelMatrix` does), per chunk size; GB/s of float32 read, best of ``reps``."""
    from threadpoolctl import threadpool_limits
    mm = np.load(_kernel_file(d), mmap_mode="r")
    n, p = mm.shape[1], mm.shape[0]
    x = np.random.default_rng(0).standard_normal((n, b))
    for i in range(0, p, 4096):
        mm[i:i + 4096].sum()
    res = {}
    with threadpool_limits(limits=1, user_api="blas"):
        for c in chunks_mib:
            rows = max(1, int(c * 2 ** 20) // (8 * n))
            buf, out = np.empty((rows, n)), np.empty((p, b))

            def cast():
                for i in range(0, p, rows):
                    src = mm[i:i + rows]
                    np.copyto(buf[:src.shape[0]], src)

            def product():
                for i in range(0, p, rows):
                    m = min(rows, p - i)
                    np.matmul(buf[:m], x, out=out[i:i + m])

            def both():
                for i in range(0, p, rows):
                    src = mm[i:i + rows]
                    blk = buf[:src.shape[0]]
                    np.copyto(blk, src)
                    np.matmul(blk, x, out=out[i:i + blk.shape[0]])

            for name, fn in (("cast", cast), ("product", product), ("both", both)):
                best = np.inf
                for _ in range(reps):
                    t0 = time.perf_counter()
                    fn()
                    best = min(best, time.perf_counter() - t0)
                res[f"{name}_{c:g}MiB_GBps"] = mm.nbytes / best / 1e9
    emit(cmd="bandwidth-split", shape=list(mm.shape), b=b, **res, commit=_commit())


def cmd_bandwidth_kernels(d: Path, chunks_mib, widths, reps: int = 5) -> None:
    """Pass bandwidth of :class:`KernelMatrix` over an on-disk float32 kernel (opened read-only), one
    process, variants interleaved, best of ``reps``: the old pass (fresh float64 array per 128 MiB chunk,
    BLAS default threads; and the old ``--tune``: 16 MiB, 1 thread) against the reused buffer at every
    chunk size in ``chunks_mib`` with BLAS 1 thread and default threads; ``matmat`` for each block width
    in ``widths``, ``rmatmat``/``sandwich`` at the first width. GB/s = float32 bytes read / pass time."""
    from threadpoolctl import threadpool_limits

    from widelimit.dynamics.krylov import KernelMatrix
    f = _kernel_file(d)
    mm = np.load(f, mmap_mode="r")
    n = mm.shape[1]
    for i in range(0, mm.shape[0], 4096):          # page cache warm-up, and the file's own read bound
        mm[i:i + 4096].sum()
    t0 = time.perf_counter()
    for i in range(0, mm.shape[0], 4096):
        np.add.reduce(mm[i:i + 4096], axis=None)
    read = mm.nbytes / (time.perf_counter() - t0) / 1e9
    rng = np.random.default_rng(0)
    xs = {b: rng.standard_normal((n, b)) for b in widths}
    b0 = widths[0]
    ref = _old_matmat(mm, xs[b0], max(1, (1 << 27) // (8 * n))) / 7.0
    variants = [("old_128MiB_default_thr", "old", 1 << 27, None), ("old_16MiB_1thr", "old", 1 << 24, 1)]
    for c in chunks_mib:
        for thr in (1, None):
            variants.append((f"new_{c:g}MiB_{'1thr' if thr else 'default_thr'}", "new", int(c * 2 ** 20), thr))
    best: dict = {}
    for _ in range(reps):
        for name, kind, cb, thr in variants:
            for b in widths:
                if kind == "old":
                    rows = max(1, cb // (8 * n))
                    with (threadpool_limits(limits=thr, user_api="blas") if thr else _null()):
                        t0 = time.perf_counter()
                        _old_matmat(mm, xs[b], rows)
                        dt = time.perf_counter() - t0
                else:
                    op = KernelMatrix("ntk", mm, 7.0, chunk_bytes=cb, blas_threads=thr)
                    op.matmat(xs[b][:, :1])                      # first pass: buffer + finite check
                    t0 = time.perf_counter()
                    y = op.matmat(xs[b])
                    dt = time.perf_counter() - t0
                    if b == b0:
                        assert np.allclose(y, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max()), name
                key = f"matmat_b{b}_{name}"
                best[key] = min(best.get(key, np.inf), dt)
            if kind == "new" and thr == 1:
                for meth, arg in (("rmatmat", xs[b0]), ("sandwich", xs[b0])):
                    t0 = time.perf_counter()
                    getattr(op, meth)(arg)
                    key = f"{meth}_b{b0}_{name}"
                    best[key] = min(best.get(key, np.inf), time.perf_counter() - t0)
    gbps = {k: mm.nbytes / v / 1e9 for k, v in best.items()}
    emit(cmd="bandwidth-kernels", file=str(f), shape=list(mm.shape), bytes=int(mm.nbytes),
         file_read_GBps=read, **{f"{k}_GBps": v for k, v in gbps.items()},
         speedup_best_new_vs_old_default=max(v for k, v in gbps.items() if k.startswith(f"matmat_b{b0}_new"))
         / gbps[f"matmat_b{b0}_old_128MiB_default_thr"], commit=_commit())


def _null():
    import contextlib
    return contextlib.nullcontext()


def cmd_kernel_speed(n: int, block: int) -> None:
    """Old vs new NumPy block path on the same (n, n) upper triangle, in one process: entries/s.

    old: ``mlp_kernels`` per block (full-size temporaries) with BLAS at its default threads, stored as
    float32 (what blockwise did before 5ef4608); new: ``blockwise_kernels`` (cache-resident chunks, BLAS
    1 thread); also new at other block sizes and new with BLAS at default threads."""
    from widelimit.arch import MLP
    from widelimit.data_large import load_mnist1d_large
    from widelimit.kernels import blockwise
    from widelimit.kernels.native import mlp_kernels
    x = load_mnist1d_large(n, 10, seed=0).x_train
    spec = MLP(depth=3, activation="relu")
    entries = sum(min(block, n - i) * min(block, n - j) for i in range(0, n, block) for j in range(i, n, block))

    def old():
        out = {g: np.empty((n, n), np.float32) for g in ("ntk", "nngp")}
        for i in range(0, n, block):
            for j in range(i, n, block):
                a, b = x[i:i + block], x[j:j + block]
                for g, v in zip(("ntk", "nngp"), mlp_kernels(spec, a, None if i == j else b)):
                    out[g][i:i + block, j:j + block] = v
                    if i != j:
                        out[g][j:j + block, i:i + block] = v.T
        return out

    def new(blk=block):
        return blockwise.blockwise_kernels(spec, x, block=blk, progress=False, verbose=False)

    res = {}
    ref = None
    for name, fn in (("old", old), ("new", new), ("old", old), ("new", new)):   # interleaved, best of 2
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        res[name] = min(res.get(name, np.inf), dt)
        if ref is None:
            ref = out
        else:
            assert np.array_equal(np.triu(out["ntk"]), np.triu(ref["ntk"])) or \
                np.allclose(out["ntk"], ref["ntk"], rtol=1e-6), "old and new paths disagree"
    for blk in (1024, 4096):
        e = sum(min(blk, n - i) * min(blk, n - j) for i in range(0, n, blk) for j in range(i, n, blk))
        t0 = time.perf_counter()
        new(blk)
        res[f"new_block{blk}"] = (time.perf_counter() - t0) * entries / e
    orig = blockwise._blas_threads
    blockwise._blas_threads = lambda k: __import__("contextlib").nullcontext()
    try:
        t0 = time.perf_counter()
        new()
        res["new_blas_default_threads"] = time.perf_counter() - t0
    finally:
        blockwise._blas_threads = orig
    emit(cmd="kernel-speed", n=n, block=block, upper_entries=entries,
         **{f"{k}_Mentries_per_s": entries / v / 1e6 for k, v in res.items()},
         speedup=res["old"] / res["new"], commit=_commit())


# -------------------------------------------------------------------------------------------------
def kernels_for(n: int, progress: bool = False):
    from widelimit.arch import MLP
    from widelimit.data_large import load_mnist1d_large
    from widelimit.kernels.blockwise import large_data_kernels
    ds = load_mnist1d_large(n, M_TEST, seed=0)
    return large_data_kernels(MLP(depth=3, activation="relu"), ds.x_train, ds.y_train, ds.x_test, ds.y_test,
                              path=ROOT / f"n{n}", dtype="float32", progress=progress, verbose=progress,
                              source=f"mnist1d {n}/{M_TEST}; MLP depth 3 relu")


def cmd_kernels(n: int) -> None:
    t0 = time.perf_counter()
    k = kernels_for(n)
    emit(cmd="kernels", n=n, kernel_s=time.perf_counter() - t0, kernel_bytes=k.nbytes,
         train_train_bytes=k.ntk_train_train.nbytes + k.nngp_train_train.nbytes, commit=_commit())


def table(model) -> np.ndarray:
    return np.stack([model.test_loss(lam, BUDGETS) for lam in LAMS])


TUNED_CHUNK_BYTES = 1 << 24


def tuned(k):
    """The same kernels as :class:`widelimit.dynamics.krylov.KernelMatrix` operators with 16 MiB float64
    row chunks (instead of the default 128 MiB, which glibc maps and unmaps at every chunk) and the same
    normalisations the solver applies (N K for the NTK blocks, 1 for the NNGP blocks)."""
    import dataclasses

    from widelimit.dynamics.krylov import KernelMatrix
    norm = float(k.y_train.size)
    wrap = {f: KernelMatrix(f, getattr(k, f), norm if f.startswith("ntk") else 1.0, TUNED_CHUNK_BYTES)
            for f in ("ntk_train_train", "ntk_test_train", "nngp_train_train", "nngp_test_train")
            if getattr(k, f) is not None}
    return dataclasses.replace(k, **wrap)


def solve(k, solver: str, progress: bool = False, tune: bool = False) -> dict:
    """Build ``predict_model(k, solver=solver)`` and the 50 x 50 table. ``tune``: BLAS limited to 1 thread
    (threadpoolctl) and :func:`tuned` operators -- same numbers, measured separately."""
    import contextlib
    if tune:
        from threadpoolctl import threadpool_limits
        ctx = threadpool_limits(limits=1, user_api="blas")
        k = tuned(k) if solver == "krylov" else k
    else:
        ctx = contextlib.nullcontext()
    with ctx:
        return _solve(k, solver, progress)


def _solve(k, solver: str, progress: bool):
    from widelimit.predict import predict_model
    t0 = time.perf_counter()
    model = predict_model(k, solver=solver)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    if progress:
        from tqdm.auto import tqdm
        tab = np.stack([model.test_loss(lam, BUDGETS) for lam in tqdm(LAMS, desc="table rows")])
    else:
        tab = table(model)
    t_table = time.perf_counter() - t0
    out = dict(solver=solver, build_s=t_build, table_s=t_table, solver_s=t_build + t_table, label=model.label)
    if solver == "krylov":
        b = model.basis
        out.update(dim=b.dim, error_estimate=float(b.error_estimate), converged=bool(b.converged),
                   passes=int(model.passes), lanczos_s=float(b.seconds),
                   variance_dim=None if model.variance_basis is None else model.variance_basis.dim,
                   variance_s=None if model.variance_basis is None else float(model.variance_basis.seconds))
        # bytes the kernel passes read: every pass reads the train-train NTK (upper bound: test passes
        # read the smaller M x N block) -- against the basis-building time
        out["pass_bytes"] = int(model.passes) * int(k.ntk_train_train.nbytes)
        out["tuned"] = not isinstance(k.ntk_train_train, np.ndarray)
        out["pass_GBps"] = out["pass_bytes"] / t_build / 1e9
    return out, tab


def cmd_solve(n: int, solver: str, tune: bool = False) -> None:
    k = kernels_for(n)
    res, tab = solve(k, solver, tune=tune)
    np.save(ROOT / f"n{n}" / f"table_{solver}{'_tuned' if tune else ''}.npy", tab)
    other = ROOT / f"n{n}" / (f"table_{solver}.npy" if tune else
                              f"table_{'eigh' if solver == 'krylov' else 'krylov'}.npy")
    if other.exists():
        res[f"max_rel_diff_vs_{other.stem}"] = float(np.max(np.abs(tab / np.load(other) - 1)))
    emit(cmd="solve", n=n, kernel_bytes=k.nbytes, **res, commit=_commit())


def cmd_crossover(n: int, f0: str, reps: int = 1) -> None:
    """``predict_model(k, f0=f0, solver="eigh")`` against ``solver="krylov"`` on the same kernels in ONE
    process (build + 50 x 50 test-loss table each, interleaved, best of ``reps``); the Krylov side as the
    library now runs it (KernelMatrix defaults: 16 MiB buffer, 1-thread passes) with BLAS limited to one
    thread during its build, as the CLI does. For the ``solver="auto"`` threshold ``KRYLOV_MIN_N``."""
    from threadpoolctl import threadpool_limits

    from widelimit.predict import predict_model
    k = kernels_for(n)
    times = {"eigh": np.inf, "krylov": np.inf}
    tabs = {}
    for _ in range(reps):
        for solver in ("eigh", "krylov"):
            ctx = threadpool_limits(limits=1, user_api="blas") if solver == "krylov" else _null()
            t0 = time.perf_counter()
            with ctx:
                model = predict_model(k, f0=f0, solver=solver)
            tabs[solver] = table(model)
            times[solver] = min(times[solver], time.perf_counter() - t0)
    rel = float(np.max(np.abs(tabs["krylov"] / tabs["eigh"] - 1)))
    emit(cmd="crossover", n=n, f0=f0, eigh_s=times["eigh"], krylov_s=times["krylov"],
         eigh_over_krylov=times["eigh"] / times["krylov"], max_rel_table_diff=rel, commit=_commit())


def cmd_scaling(ns, dense_max: int) -> None:
    """Each point in its own subprocess (kernels, krylov, eigh where N <= dense_max), so peaks don't mix."""
    me = [sys.executable, __file__]
    for n in ns:
        jobs = [["kernels", "--n", str(n)], ["solve", "--n", str(n), "--solver", "krylov"]]
        if n <= dense_max:
            jobs.append(["solve", "--n", str(n), "--solver", "eigh"])
        for job in jobs:
            r = subprocess.run(me + job, capture_output=True, text=True)
            line = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
            print(line[-1] if line else json.dumps({"cmd": job, "failed": r.returncode,
                                                    "stderr": r.stderr[-400:]}), flush=True)


def cmd_end_to_end(n: int, tune: bool = False) -> None:
    """Kernels (resumed from their memmaps if interrupted) and the 50 x 50 Krylov table in one process."""
    from widelimit.kernels.blockwise import kernel_bytes
    t_start = time.perf_counter()
    emit(cmd="end-to-end", stage="start", n=n, kernel_bytes=kernel_bytes(n, M_TEST), commit=_commit())
    k = kernels_for(n, progress=True)
    t_kernel = time.perf_counter() - t_start
    emit(cmd="end-to-end", stage="kernels done", n=n, kernel_s=t_kernel, kernel_bytes=k.nbytes)
    res, tab = solve(k, "krylov", progress=True, tune=tune)
    np.save(ROOT / f"n{n}" / f"table_krylov{'_tuned' if tune else ''}.npy", tab)
    st = status()
    emit(cmd="end-to-end", stage="done", n=n, kernel_s=t_kernel, total_s=time.perf_counter() - t_start,
         kernel_bytes=k.nbytes, peak_over_kernel_bytes=st["VmHWM"] / k.nbytes, **res)


# -------------------------------------------------------------------------------------------------
def cmd_nt(n: int) -> None:
    """neural-tangents ``nt.predict.gradient_descent_mse`` at lambda = 0 (no weight decay), f0 = 0: test
    outputs at the 50 budgets, from the same (float32-stored) kernels upcast to float64."""
    import jax
    jax.config.update("jax_enable_x64", True)
    import neural_tangents as nt
    d = ROOT / f"n{n}"
    ktt = np.asarray(np.load(d / "train_train" / "ntk.npy", mmap_mode="r"), np.float64)
    kxt = np.asarray(np.load(d / "test_train" / "ntk.npy", mmap_mode="r"), np.float64)
    from widelimit.data_large import load_mnist1d_large
    ds = load_mnist1d_large(n, M_TEST, seed=0)
    t0 = time.perf_counter()
    fn = nt.predict.gradient_descent_mse(ktt, ds.y_train, learning_rate=1.0, diag_reg=0.0)
    out = np.asarray(fn(BUDGETS, 0.0, 0.0, kxt)[1])          # (fx_train, fx_test) at every t
    dt = time.perf_counter() - t0
    np.save(d / "nt_outputs.npy", out)
    emit(cmd="nt", n=n, nt_s=dt, kernel_f64_bytes=ktt.nbytes + kxt.nbytes, nt_version=nt.__version__,
         jax_version=jax.__version__, commit=_commit())


def cmd_ours_lambda0(n: int, extended: bool = False) -> None:
    """Our Krylov path (f0 = 0 mean function, float32 memmaps) at lambda = 0 for the same outputs, compared
    with the neural-tangents outputs saved by ``nt``: with the default stopping rule (checked for weight
    decays in [1e-5, 1e-1], t <= 10/lambda, so lambda = 0 at t > 1e6 is outside it) and with the rule
    extended to lambda >= 1e-7 (t <= 1e8, covering every budget at lambda = 0). One process per variant."""
    from widelimit.dynamics.krylov import KrylovLoss
    k = kernels_for(n)
    ref = ROOT / f"n{n}" / "nt_outputs.npy"
    for lo in ((1e-5,) if not extended else (1e-7,)):
        t0 = time.perf_counter()
        model = KrylovLoss.from_kernels(k, f0="zero", weight_decay_range=(lo, 1e-1))
        out = model.test_outputs(0.0, BUDGETS)
        dt = time.perf_counter() - t0
        res = dict(cmd="ours-lambda0", n=n, weight_decay_range_lo=lo, ours_s=dt,
                   kernel_bytes=k.ntk_train_train.nbytes + k.ntk_test_train.nbytes, dim=model.basis.dim,
                   commit=_commit())
        if ref.exists():
            nt_out = np.load(ref)
            rel = np.linalg.norm((out - nt_out).reshape(len(BUDGETS), -1), axis=1) / \
                np.linalg.norm(nt_out.reshape(len(BUDGETS), -1), axis=1)
            res.update(max_rel_diff_vs_nt=float(rel.max()),
                       rel_diff_by_T={f"{T:.0e}": float(r) for T, r in zip(BUDGETS[::7], rel[::7])})
        emit(**res)
        if not extended:   # the second variant in a fresh process, so its peak memory is its own
            r = subprocess.run([sys.executable, __file__, "ours-lambda0-ext", "--n", str(n)], capture_output=True,
                               text=True)
            print("\n".join(ln for ln in r.stdout.splitlines() if ln.startswith("{")), flush=True)
            return


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cmd", choices=("bandwidth", "kernel-speed", "kernels", "solve", "scaling", "end-to-end", "nt",
                                   "crossover",
                                   "ours-lambda0", "ours-lambda0-ext"))
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--ns", type=int, nargs="+", default=[1000, 2000, 5000, 10000])
    p.add_argument("--dense-max", type=int, default=5000)
    p.add_argument("--block", type=int, default=2048)
    p.add_argument("--solver", choices=("krylov", "eigh"), default="krylov")
    p.add_argument("--gib", type=float, default=4.0)
    p.add_argument("--f0", choices=("zero", "nngp"), default="zero", help="crossover: the model compared")
    p.add_argument("--kernel-dir", type=Path, default=None,
                   help="bandwidth: also time KernelMatrix passes over DIR/train_train/ntk.npy (or DIR/tt/ntk.npy), "
                        "read-only")
    p.add_argument("--chunks-mib", type=float, nargs="+", default=[2, 4, 8, 16, 32, 128])
    p.add_argument("--widths", type=int, nargs="+", default=[10, 40])
    p.add_argument("--reps", type=int, default=5, help="bandwidth --kernel-dir: best of this many passes")
    p.add_argument("--split", action="store_true",
                   help="bandwidth --kernel-dir: time the cast and the product of a pass separately")
    p.add_argument("--tune", action="store_true", help="solve/end-to-end: BLAS 1 thread, 16 MiB operator chunks")
    a = p.parse_args(argv)
    ROOT.mkdir(parents=True, exist_ok=True)
    if a.cmd == "bandwidth" and a.kernel_dir is not None and a.split:
        cmd_bandwidth_split(a.kernel_dir, a.chunks_mib, a.widths[0], a.reps)
    elif a.cmd == "bandwidth" and a.kernel_dir is not None:
        cmd_bandwidth_kernels(a.kernel_dir, a.chunks_mib, a.widths, a.reps)
    elif a.cmd == "bandwidth":
        cmd_bandwidth(a.gib)
    elif a.cmd == "kernel-speed":
        cmd_kernel_speed(a.n, a.block)
    elif a.cmd == "kernels":
        cmd_kernels(a.n)
    elif a.cmd == "solve":
        cmd_solve(a.n, a.solver, a.tune)
    elif a.cmd == "crossover":
        cmd_crossover(a.n, a.f0, a.reps)
    elif a.cmd == "scaling":
        cmd_scaling(a.ns, a.dense_max)
    elif a.cmd == "end-to-end":
        cmd_end_to_end(a.n, a.tune)
    elif a.cmd == "nt":
        cmd_nt(a.n)
    else:
        cmd_ours_lambda0(a.n, extended=a.cmd == "ours-lambda0-ext")


if __name__ == "__main__":
    sys.exit(main())
