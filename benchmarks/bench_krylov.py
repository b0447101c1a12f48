"""Benchmark of the Krylov L2 solver against the dense eigendecomposition path (issue 11).

Problem: MNIST-1D (widelimit.data_large.load_mnist1d_large), 3-layer bias-free ReLU MLP (L = 3), K = 10
one-hot outputs, M test points; kernels from widelimit.kernels.blockwise (stored on disk, reused).
Table: test loss expected over f0 ~ NNGP for 50 weight decays in [1e-5, 1e-1] x 50 budgets
t = eta T (eta = 1, T log-spaced in [1e2, 1e6]).

    python benchmarks/bench_krylov.py kernels --n 5000          # kernels to $BENCH_DIR/n5000 (disk)
    python benchmarks/bench_krylov.py solve --n 5000 --solver dense|krylov   # one path, own process
    python benchmarks/bench_krylov.py accuracy --n 5000         # Krylov vs dense: outputs, loss, t*, lambda_opt
    python benchmarks/bench_krylov.py compare --n 5000          # both paths in ONE process: speed + accuracy
    python benchmarks/bench_krylov.py calibrate --n 2000 --m 400 --seeds 8   # Hutch++ stated errors vs truth

Every sub-command prints one JSON line (times in s, peak RSS of its process in bytes).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(os.environ.get("BENCH_DIR", "/tmp/widelimit_bench_krylov"))
LAMS = np.geomspace(1e-5, 1e-1, 50)
BUDGETS = np.geomspace(1e2, 1e6, 50)


def _commit() -> str:
    """Commit of the checkout (``widelimit.provenance.git_state``), ``-dirty`` if tracked files differ."""
    from widelimit.provenance import git_state
    sha, dirty = git_state()
    return "unknown" if sha is None else sha[:7] + ("-dirty" if dirty else "")


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cmd_kernels(n: int, m: int, dtype: str) -> dict:
    from widelimit.arch import MLP
    from widelimit.data_large import load_mnist1d_large
    from widelimit.kernels.blockwise import blockwise_kernels
    from widelimit.kernels.native import mlp_kernels
    d = ROOT / f"n{n}"
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ds = load_mnist1d_large(n, m, seed=0)
    t_data = time.perf_counter() - t0
    spec = MLP(depth=3, activation="relu")
    t0 = time.perf_counter()
    blockwise_kernels(spec, ds.x_train, path=d / "tt", dtype=dtype, block=2048, progress=False)
    t_tt = time.perf_counter() - t0
    t0 = time.perf_counter()
    blockwise_kernels(spec, ds.x_test, ds.x_train, path=d / "xt", dtype=dtype, block=2048, progress=False)
    kxx = np.array([mlp_kernels(spec, ds.x_test[i:i + 1])[1][0, 0] for i in range(ds.n_test)])
    t_xt = time.perf_counter() - t0
    np.savez(d / "data.npz", y=ds.y_train, yt=ds.y_test, kxx=kxx)
    return dict(cmd="kernels", n=n, m=m, dtype=dtype, data_s=t_data, train_train_s=t_tt, test_train_s=t_xt,
                kernel_bytes=int(2 * n * n * np.dtype(dtype).itemsize), peak_rss=_peak())


_IN_MEMORY = {}   # n -> kernels read into RAM once (compare --in-memory): no page-cache refaults per pass


_M_USE = [None]   # --m-use: the first M test points only (both paths; the dense path's cost hardly depends on M)


def _load(n: int):
    d = ROOT / f"n{n}"
    z = np.load(d / "data.npz")
    if n in _IN_MEMORY:
        k = _IN_MEMORY[n]
    else:
        k = {f"{a}_{b}": np.load(d / a / f"{b}.npy", mmap_mode="r") for a in ("tt", "xt") for b in ("ntk", "nngp")}
    m = _M_USE[0]
    if m is None:
        return k, z["y"], z["yt"], z["kxx"]
    k = dict(k, xt_ntk=k["xt_ntk"][:m], xt_nngp=k["xt_nngp"][:m])
    return k, z["y"], z["yt"][:m], z["kxx"][:m]


def build(solver: str, n: int, **kw):
    k, y, yt, kxx = _load(n)
    if solver == "dense":
        from widelimit.dynamics import ExpectedLoss
        return ExpectedLoss(np.asarray(k["tt_ntk"], np.float64), np.asarray(k["xt_ntk"], np.float64),
                            np.asarray(k["tt_nngp"], np.float64), np.asarray(k["xt_nngp"], np.float64), kxx,
                            y, yt, 3)
    from widelimit.dynamics.krylov import KrylovLoss
    return KrylovLoss(k["tt_ntk"], y, 3, ntk_test_train=k["xt_ntk"], y_test=yt, nngp_train_train=k["tt_nngp"],
                      nngp_test_train=k["xt_nngp"], nngp_test_test_diag=kxx, **kw)


def cmd_solve(n: int, solver: str, tol: float) -> dict:
    kw = {} if solver == "dense" else {"tol": tol}
    t0 = time.perf_counter()
    model = build(solver, n, **kw)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    table = np.stack([model.test_loss(lam, BUDGETS) for lam in LAMS])
    t_table = time.perf_counter() - t0
    np.save(ROOT / f"n{n}" / f"table_{solver}.npy", table)
    out = dict(cmd="solve", n=n, solver=solver, build_s=t_build, table_s=t_table, total_s=t_build + t_table,
               peak_rss=_peak(), kernel_bytes=int(sum(np.load(ROOT / f"n{n}" / "tt" / f"{g}.npy",
                                                              mmap_mode="r").nbytes for g in ("ntk", "nngp"))))
    if solver == "krylov":
        b = model.basis
        out.update(dim=b.dim, blocks=b.n_blocks, error_estimate=b.error_estimate, converged=b.converged,
                   lanczos_s=b.seconds)
    return out


def cmd_accuracy(n: int, tol: float, **kw) -> dict:
    dense = build("dense", n)
    kry = build("krylov", n, tol=tol, **kw)
    return dict(cmd="accuracy", n=n, **_accuracy(dense, kry), dim=kry.basis.dim,
                error_estimate=kry.basis.error_estimate)


def _accuracy(dense, kry) -> dict:
    """Krylov vs dense on the same problem: outputs, losses, t*, lambda_opt (see cmd_accuracy)."""
    from widelimit.predict import lambda_opt, t_star
    lams = np.geomspace(1e-5, 1e-1, 9)
    s = np.array([0.01, 0.1, 0.3, 1.0, 3.0, 10.0])
    out_err, loss_err, z_err, mean_err, bound_ok = 0.0, 0.0, 0.0, 0.0, True
    for lam in lams:
        t = s / lam
        fd = dense.flow.with_weight_decay(lam).test(t)
        fk = kry.test_outputs(lam, t)
        out_err = max(out_err, float(np.max(np.linalg.norm((fd - fk).reshape(len(t), -1), axis=1)
                                            / np.linalg.norm(fd.reshape(len(t), -1), axis=1))))
        ld, lk, se = dense.test_loss(lam, t), kry.test_loss(lam, t), kry.test_loss_error(lam, t)
        loss_err = max(loss_err, float(np.max(np.abs(lk - ld) / ld)))
        z_err = max(z_err, float(np.max(np.abs(lk - ld) / np.maximum(se, 1e-300))))
        mean_err = max(mean_err, float(np.max(np.abs(kry.loss_of_mean(lam, t) / dense.loss_of_mean(lam, t) - 1))))
    ts_d, ts_k = t_star(dense, weight_decays=lams), t_star(kry, weight_decays=lams)
    lo_d = lambda_opt(dense, steps=BUDGETS[::7], learning_rate=1.0)
    lo_k = lambda_opt(kry, steps=BUDGETS[::7], learning_rate=1.0)
    lod, lok = np.asarray(lo_d.weight_decay_opt), np.asarray(lo_k.weight_decay_opt)
    jk = {}
    if getattr(kry, "variance_method", None) == "hutch++":   # stochastic: the differences in jackknife s.e.
        se_t, se_l = ts_k.t_star_solver_se, np.asarray(lo_k.weight_decay_opt_solver_se)
        jk = dict(t_star_jackknife_se_rel=float(np.nanmax(se_t / ts_k.t_star)),
                  t_star_over_jackknife_se=float(np.nanmax(np.abs(ts_k.t_star - ts_d.t_star) / se_t)),
                  lambda_opt_jackknife_se_rel=float(np.nanmax(se_l / lok)),
                  lambda_opt_over_jackknife_se=float(np.nanmax(np.abs(lok - lod) / se_l)))
    return dict(**jk, test_outputs_rel=out_err, mean_loss_rel=mean_err, expected_loss_rel=loss_err,
                expected_loss_over_stated_error=z_err, t_star_dense=ts_d.t_star.tolist(),
                t_star_krylov=ts_k.t_star.tolist(), t_star_rel=float(np.nanmax(np.abs(ts_k.t_star / ts_d.t_star - 1))),
                lambda_opt_dense=lod.tolist(), lambda_opt_krylov=lok.tolist(),
                lambda_opt_rel=float(np.nanmax(np.abs(lok / lod - 1))),
                # the budgets whose lambda_opt lies in the weight_decay_range the Krylov model checked (the
                # issue's lambda range); beyond it KrylovConvergenceWarning says the stated error lapses
                lambda_opt_rel_in_range=float(np.nanmax(np.where(lod >= kry.weight_decay_range[0],
                                                                 np.abs(lok / lod - 1), np.nan))),
                variance_method=getattr(kry, "variance_method", None))


def cmd_compare(n: int, tol: float, accuracy: bool, **kw) -> dict:
    """Dense and Krylov in ONE process on the same problem: build + 50 x 50 table each, then accuracy."""
    res = dict(cmd="compare", n=n, m=_M_USE[0] or "all", options={k: v for k, v in kw.items()},
               load_before=os.getloadavg(), in_memory=n in _IN_MEMORY, commit=_commit())
    for solver in ("dense", "krylov"):
        t0 = time.perf_counter()
        model = build(solver, n, **({} if solver == "dense" else dict(tol=tol, **kw)))
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        table = np.stack([model.test_loss(lam, BUDGETS) for lam in LAMS])
        t_table = time.perf_counter() - t0
        res[solver] = dict(build_s=t_build, table_s=t_table, total_s=t_build + t_table, load=os.getloadavg())
        if solver == "krylov":
            b = model.basis
            res[solver].update(dim=b.dim, blocks=b.n_blocks, error_estimate=b.error_estimate,
                               variance_method=getattr(model, "variance_method", None),
                               variance_dim=None if model.variance_basis is None else model.variance_basis.dim)
            kry, tk = model, table
        else:
            dense, td = model, table
        print(json.dumps({solver: res[solver]}), flush=True)
    res["speedup"] = res["dense"]["total_s"] / res["krylov"]["total_s"]
    res["table_rel"] = float(np.max(np.abs(tk / td - 1)))
    res["table_over_stated_error"] = float(np.max(np.abs(tk - td) / np.maximum(
        np.stack([kry.test_loss_error(lam, BUDGETS) for lam in LAMS]), 1e-300)))
    if accuracy:
        res.update(_accuracy(dense, kry))
    res["peak_rss"] = _peak()
    return res


def cmd_calibrate(store: int, n: int, m: int, seeds: int) -> dict:
    """Calibration of the Hutch++ stated errors over probe seeds: the first ``n`` training and ``m`` test
    points of the ``store`` kernels; reference = the exact trace on the full basis (``max_dim = n``).

    For every seed: the expected-loss error over a 9 lambda x 6 (lambda t) grid in units of the stated
    ``test_loss_error``, and t* (9 lambdas) and lambda_opt (8 budgets) errors in units of their jackknife
    standard errors. Well-calibrated one-s.e. errors cover ~68 % (|z| < 1) and ~95 % (|z| < 2)."""
    from widelimit.dynamics.krylov import KrylovLoss
    from widelimit.predict import lambda_opt, t_star
    k, y, yt, kxx = _load(store)
    tt = {g: np.array(k[f"tt_{g}"][:n, :n], np.float64) for g in ("ntk", "nngp")}
    xt = {g: np.array(k[f"xt_{g}"][:m, :n], np.float64) for g in ("ntk", "nngp")}

    def make(**kw):
        return KrylovLoss(tt["ntk"], y[:n], 3, ntk_test_train=xt["ntk"], y_test=yt[:m], nngp_train_train=tt["nngp"],
                          nngp_test_train=xt["nngp"], nngp_test_test_diag=kxx[:m], **kw)

    lams, grid, steps = np.geomspace(1e-5, 1e-1, 9), np.array([0.01, 0.1, 0.3, 1.0, 3.0, 10.0]), BUDGETS[::7]
    ts = lambda mod: t_star(mod, weight_decays=lams)                                # noqa: E731
    lo = lambda mod: lambda_opt(mod, steps=steps, learning_rate=1.0)                 # noqa: E731
    ref = make(variance="exact", max_dim=n)
    ref_loss = [ref.test_loss(lam, grid / lam) for lam in lams]
    ref_ts, ref_lo = ts(ref).t_star, np.asarray(lo(ref).weight_decay_opt)
    z = {"loss": [], "t_star": [], "lambda_opt": []}
    rel = {"loss": [], "t_star": [], "lambda_opt": []}
    for seed in range(seeds):
        mod = make(variance="hutch++", seed=seed)
        for lam, r in zip(lams, ref_loss):
            e = mod.test_loss(lam, grid / lam) - r
            z["loss"].append(e / mod.test_loss_error(lam, grid / lam))
            rel["loss"].append(e / r)
        a_t, a_l = ts(mod), lo(mod)      # a stochastic model states its jackknife errors (*_solver_se)
        for key, got, se, r in (("t_star", a_t.t_star, a_t.t_star_solver_se, ref_ts),
                                ("lambda_opt", np.asarray(a_l.weight_decay_opt),
                                 np.asarray(a_l.weight_decay_opt_solver_se), ref_lo)):
            ok = se > 0
            z[key].append(((got - r) / np.where(ok, se, np.nan))[ok])
            rel[key].append(got / r - 1)
        print(json.dumps({"seed": seed, "load": os.getloadavg()}), file=sys.stderr, flush=True)
    out = dict(cmd="calibrate", store=store, n=n, m=m, seeds=seeds, commit=_commit(),
               variance_dim=int(mod.variance_basis.dim))
    for key in z:
        zz, rr = np.abs(np.concatenate(z[key])), np.abs(np.concatenate(rel[key]))
        out[key] = dict(points=int(zz.size), max_rel=float(rr.max()), rms_rel=float(np.sqrt(np.mean(rr ** 2))),
                        within_1se=float(np.mean(zz < 1)), within_2se=float(np.mean(zz < 2)),
                        within_3se=float(np.mean(zz < 3)), max_z=float(zz.max()))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cmd", choices=("kernels", "solve", "accuracy", "compare", "calibrate"))
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--m", type=int, default=1000)
    p.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    p.add_argument("--solver", default="krylov", choices=("dense", "krylov"))
    p.add_argument("--tol", type=float, default=1e-10)
    p.add_argument("--variance", default=None, choices=("auto", "exact", "hutch++"))
    p.add_argument("--variance-tol", type=float, default=None,
                   help="Krylov variance_tol (tolerance of the variance basis; default: tol for the exact trace)")
    p.add_argument("--no-accuracy", action="store_true", help="compare: timings and table only")
    p.add_argument("--max-dim", type=int, default=None, help="Krylov max_dim (the exact trace may need N)")
    p.add_argument("--store", type=int, default=5000, help="calibrate: kernel store to take the subset from")
    p.add_argument("--seeds", type=int, default=8, help="calibrate: Hutch++ probe seeds")
    p.add_argument("--m-use", type=int, default=None, help="use only the first M test points (both paths)")
    p.add_argument("--threads", type=int, default=None,
                   help="Krylov: BLAS threads for its kernel passes (KrylovLoss threads=; default BLAS's)")
    p.add_argument("--in-memory", action="store_true",
                   help="read the kernels into RAM before timing (both paths; else memory-mapped)")
    a = p.parse_args(argv)
    _M_USE[0] = a.m_use
    if a.in_memory:
        d = ROOT / f"n{a.n}"
        _IN_MEMORY[a.n] = {f"{x}_{y}": np.load(d / x / f"{y}.npy") for x in ("tt", "xt") for y in ("ntk", "nngp")}
    if a.cmd == "kernels":
        res = cmd_kernels(a.n, a.m, a.dtype)
    elif a.cmd == "solve":
        res = cmd_solve(a.n, a.solver, a.tol)
    elif a.cmd == "calibrate":
        res = cmd_calibrate(a.store, a.n, a.m, a.seeds)
    elif a.cmd == "compare":
        kw = {} if a.variance is None else {"variance": a.variance}
        if a.max_dim is not None:
            kw["max_dim"] = a.max_dim
        if a.threads is not None:
            kw["threads"] = a.threads
        if a.variance_tol is not None:
            kw["variance_tol"] = a.variance_tol
        res = cmd_compare(a.n, a.tol, not a.no_accuracy, **kw)
    else:
        res = cmd_accuracy(a.n, a.tol, **({} if a.variance is None else {"variance": a.variance}))
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    sys.exit(main())
