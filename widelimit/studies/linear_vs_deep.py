"""Study 6: linear (L = 1) against deep (L >= 2) homogeneous networks at long times.

docs/theory.md §2.1: for ``L = 1`` (a linear model, ``MLP(depth=1)``) the kernel is constant and the L2
flow tends to the ridge solution ``f(x) = Theta~_xX (Theta~ + lam I)^{-1} y`` (any initialisation); for
``L >= 2`` the kernel decays like ``e^{-2(L-1) lam t}`` and, once it has, every output decays like
``e^{-L lam t}``: ``f -> 0``.

Theory: :class:`~widelimit.dynamics.ntk_l2.L2Flow` with the analytic NTK and the network's *own* initial
outputs ``f0`` (the flow is linear in ``f0``; no centring), per seed. Measurement: finite networks of
depth 1, 2, 3 (full-batch GD, float32) trained to ``t >> 1/lam``, their outputs on all test points
recorded. Reported: the distance of the final linear model from the ridge solution; for ``L >= 2`` the
output norm at the end and the late-time decay rate (fit of ``log ||f_t||`` against t) against ``L lam``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import numpy as np

from ..evidence import Claim, bootstrap_interval, judge
from ..plots import Panel, Series, plot_panels
from ..tables import Table
from .common import Figure, progress_iter, start_study, write_report
from .ntk_tools import dataset_kernels, initial_state, train_grid

NAME = "linear_vs_deep"

#: Claims, declared before anything is measured. L = 1: the network follows the closed-form flow from its own
#: f0 (deviation at the end, in units of ‖y‖, predicted 0, absolute tolerance) and so ends at the ridge
#: solution. L >= 2: the late decay rate of ‖f_t‖ is L·λ (relative tolerance) — from hyper-parameters only.
TOLERANCES = {"track_linear": 0.02, "decay_rate": 0.20}

SIZES: Dict[str, Dict[str, Any]] = {
    "smoke": dict(data_options=dict(classes=[3, 8], targets="pm1", n_train=30, n_test=30, seed=0), depths=[1, 2],
                  width=32, eta=0.5, lam=0.05, steps=120, eval_every=10, seeds=[0, 1],
                  width_check=dict(depth=2, widths=[64])),
    "quick": dict(data_options=dict(classes=[3, 8], targets="pm1", n_train=200, n_test=150, seed=0),
                  depths=[1, 2, 3], width=256, eta=0.5, lam=0.01, steps=2000, eval_every=20, seeds=list(range(8)),
                  width_check=dict(depth=2, widths=[1024])),
    # about 4x quick: width 512 and the L = 2 width check at 2048
    "medium": dict(data_options=dict(classes=[3, 8], targets="pm1", n_train=300, n_test=56, seed=0),
                   depths=[1, 2, 3], width=512, eta=0.5, lam=0.01, steps=2000, eval_every=20, seeds=list(range(8)),
                   width_check=dict(depth=2, widths=[2048])),
    "full": dict(data_options=dict(n_train=2000, n_test=1000, seed=0, targets="onehot"), data="mnist1d",
                 depths=[1, 2, 3, 4], width=4096, eta=1.0, lam=0.005, steps=4000, eval_every=40,
                 seeds=[0, 1, 2, 3], width_check=dict(depth=2, widths=[16384, 65536])),
}


def _norm(a) -> float:
    return float(np.linalg.norm(a))


def origin_threshold(x_train, y_train, W_std: float, width: int, *, n_samples: int = 20000, iters: int = 300,
                     seed: int = 0) -> tuple:
    """Estimate ``lam_c``: for a bias-free two-layer ReLU network (L = 2) in the NTK parameterisation,
    ``f_k(x) = (W_std/sqrt(n)) sum_j a_jk relu((W_std/sqrt(d)) w_j . x)``, the origin ``theta = 0`` is a stable
    point of ``l + (lam/2)||theta||^2`` (MSE ``1/(2NK) sum (f - y)^2``) iff ``lam > lam_c``, with

        lam_c = W_std^2 G / sqrt(n d),    G = max_{|w|=1} || (1/(N K)) sum_i y_i relu(w . x_i) ||

    (near 0 the objective is ``l(0) - (W_std^2/sqrt(n d)) sum_j a_j . g(w_j) + (lam/2) sum_j (|a_j|^2 + |w_j|^2)``
    and ``a . g(w) <= (|a|^2 + |w|^2) G / 2``). G is maximised by random search over ``n_samples``
    directions and projected gradient ascent from the best 20, so the returned ``(lam_c, G)`` are lower
    bounds. For L >= 3, ``f = O(|theta|^L)`` and the origin is always locally stable.
    """
    x = np.asarray(x_train, np.float64).reshape(len(x_train), -1)
    y = np.asarray(y_train, np.float64).reshape(len(y_train), -1)
    n_pts, d = x.shape
    norm = n_pts * y.shape[1]
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n_samples, d))
    w /= np.linalg.norm(w, axis=1, keepdims=True)

    def gval(w):
        return np.linalg.norm(np.maximum(w @ x.T, 0.0) @ y / norm, axis=1)

    best = w[np.argsort(gval(w))[-20:]]
    for _ in range(iters):
        pre = best @ x.T
        g = np.maximum(pre, 0.0) @ y / norm
        u = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-300)
        grad = ((pre > 0) * (y @ u.T).T) @ x / norm
        best = best + 0.5 * grad
        best /= np.linalg.norm(best, axis=1, keepdims=True)
    G = float(max(gval(best).max(), gval(w).max()))
    return W_std ** 2 * G / np.sqrt(width * d), G


def run(size: str = "quick", out_dir="validation/quick", progress: bool = True, resume: bool = True) -> Path:
    """Run the linear-vs-deep study at ``size``; write ``linear_vs_deep.md``/``.json``/``.png`` into ``out_dir``."""
    st = start_study(NAME, size, out_dir, resume=resume)
    size, out, cache, sw = st.size, st.out, st.cache, st.stopwatch
    p = SIZES[size]
    from ..arch import MLP
    from ..data import load_dataset
    from ..dynamics.ntk_l2 import L2Flow
    from ..train import RunConfig

    data = p.get("data", "digits")
    ds = load_dataset(data, **p["data_options"])
    K = ds.out_dim
    eta, lam = float(p["eta"]), float(p["lam"])
    y_norm = _norm(ds.y_test)
    results, plot_series = [], []
    for di, L in enumerate(progress_iter(p["depths"], "depths", progress)):
        spec = MLP(depth=int(L), width=int(p["width"]), out_dim=K)
        dk = dataset_kernels(spec, ds, cache=cache, key={"spec": spec.replace(width=1).to_dict(), "data": data,
                                                          "options": p["data_options"]})
        cfg = RunConfig(arch=spec, data=data, data_options=p["data_options"], optimizer="gd", learning_rate=eta,
                        weight_decay=lam, steps=p["steps"], eval_every=p["eval_every"], probe_size=ds.n_test, dtype="float32")
        grid = train_grid(cache, cfg, seeds=p["seeds"], weight_decays=[lam], progress=False)
        times = grid.time[0]
        n = dk.n_train
        ridge = (dk.ntk_test_train / (n * K)) @ np.linalg.solve(dk.ntk_train_train / (n * K) + lam * np.eye(n), ds.y_train)
        per_seed = []
        for si, seed in enumerate(p["seeds"]):
            _, f0_tr, f0_te = initial_state(cfg.replace(seed=seed), ds)
            flow = L2Flow(dk.ntk_train_train, ds.y_train, lam, int(L), ntk_test_train=dk.ntk_test_train, f0_train=f0_tr, f0_test=f0_te)
            th = flow.test(times)                                        # (n_logs, M, K)
            me = grid.probe[0, si]
            th_norm = np.array([_norm(a) for a in th]) / y_norm
            me_norm = np.array([_norm(a) for a in me]) / y_norm
            track = np.array([_norm(a - b) for a, b in zip(me, th)]) / y_norm
            late = times >= times[-1] * 0.6
            rate_me = -np.polyfit(times[late], np.log(np.maximum(me_norm[late], 1e-300)), 1)[0]
            rate_th = -np.polyfit(times[late], np.log(np.maximum(th_norm[late], 1e-300)), 1)[0]
            per_seed.append(dict(seed=seed, th_norm=th_norm, me_norm=me_norm, track=track, rate_me=rate_me,
                                 rate_th=rate_th, ridge_err_me=_norm(me[-1] - ridge) / _norm(ridge),
                                 ridge_err_th=_norm(th[-1] - ridge) / _norm(ridge),
                                 ridge_inf=_norm(flow.test(np.array([np.inf]))[0] - ridge) / _norm(ridge),
                                 train_loss_end=float(grid.metrics["train_loss"][0, si, -1]),
                                 test_loss_end=float(grid.metrics["test_loss"][0, si, -1])))
        ridge_test_loss = float(0.5 * np.mean((ridge - ds.y_test) ** 2))
        mean = lambda k: float(np.mean([s[k] for s in per_seed]))  # noqa: E731
        results.append(dict(L=int(L), times=times, per_seed=per_seed, ridge_test_loss=ridge_test_loss,
                            **{k: mean(k) for k in ("rate_me", "rate_th", "ridge_err_me", "ridge_err_th", "ridge_inf",
                                                    "train_loss_end", "test_loss_end")},
                            norm_end_me=float(np.mean([s["me_norm"][-1] for s in per_seed])),
                            norm_end_th=float(np.mean([s["th_norm"][-1] for s in per_seed])),
                            track_max=float(np.max([s["track"][1:].max() for s in per_seed])),
                            track_end=float(np.mean([s["track"][-1] for s in per_seed]))))
        col = f"C{di % 10}"
        plot_series.append(Series(times[1:], np.mean([s["th_norm"] for s in per_seed], 0)[1:], "-", f"L={L} theory", col))
        plot_series.append(Series(times[1:], np.mean([s["me_norm"] for s in per_seed], 0)[1:], "o", f"L={L} measured",
                                  col))

    # -- L = 2 at several widths: is the origin stable (lam > lam_c(width))? -------------------------
    wc = p.get("width_check")
    wrows = []
    if wc:
        d2 = int(wc["depth"])
        base_r = next((r for r in results if r["L"] == d2), None)
        widths = sorted(set(int(w) for w in wc["widths"]) | ({int(p["width"])} if base_r else set()))
        for w in progress_iter(widths, "width check", progress):
            lam_c, G = origin_threshold(ds.x_train, ds.y_train, MLP(depth=2).W_std, w)
            if base_r is not None and w == int(p["width"]):
                wrows.append(dict(width=w, lam_c=lam_c, G=G, norm_end=base_r["norm_end_me"], rate=base_r["rate_me"],
                                  test_loss=base_r["test_loss_end"]))
                continue
            spec = MLP(depth=d2, width=w, out_dim=K)
            cfg = RunConfig(arch=spec, data=data, data_options=p["data_options"], optimizer="gd", learning_rate=eta,
                            weight_decay=lam, steps=p["steps"], eval_every=p["eval_every"], probe_size=ds.n_test,
                            dtype="float32")
            grid = train_grid(cache, cfg, seeds=p["seeds"], weight_decays=[lam], progress=False)
            times = grid.time[0]
            late = times >= times[-1] * 0.6
            norms = np.array([[_norm(a) for a in grid.probe[0, si]] for si in range(len(p["seeds"]))]) / y_norm
            rates = [-np.polyfit(times[late], np.log(np.maximum(nm[late], 1e-300)), 1)[0] for nm in norms]
            wrows.append(dict(width=w, lam_c=lam_c, G=G, norm_end=float(norms[:, -1].mean()),
                              rate=float(np.mean(rates)), test_loss=float(grid.metrics["test_loss"][0, :, -1].mean())))
            plot_series.append(Series(times[1:], norms.mean(0)[1:], "x", f"L={d2} width {w} measured",
                                      f"C{(len(p['depths']) + len(wrows)) % 10}"))
    t3 = None
    if wrows:
        t3 = Table(["width", "λ_c (origin stable for λ > λ_c)", "λ", "‖f_T‖/‖y‖ measured", "late decay rate measured",
                    "2(λ − λ_c)", "L·λ", "test loss at T measured"],
                   title=f"L = {wc['depth']} at several widths (λ = {lam:g}, t = {eta * p['steps']:g})",
                   notes=["λ_c = W_std²·G/√(width·d), G = max over unit w of ‖(1/NK) Σ_i y_i relu(w·x_i)‖ (a lower "
                          "bound, found by search): below λ_c the origin of loss + (λ/2)‖θ‖² is unstable and the "
                          "network can settle at a nonzero stationary point instead of decaying; λ_c → 0 as "
                          "width → ∞, so the infinite-width prediction f → 0 holds for any λ > 0 there.",
                          "Near the origin θ follows the linearised flow dθ/dt = (M − λ)θ, where M (the Hessian of "
                          "−(1/NK)Σ y·f at θ = 0) has top eigenvalue λ_c; f ∝ |θ|² then decays at 2(λ − λ_c), which "
                          "tends to the infinite-width rate L·λ = 2λ as width → ∞ (an upper bound, since λ_c is a lower "
                          "bound)."])
        for r in wrows:
            t3.add_row([r["width"], r["lam_c"], lam, r["norm_end"], r["rate"], max(2 * (lam - r["lam_c"]), 0.0),
                        int(wc["depth"]) * lam, r["test_loss"]])

    T_end = eta * p["steps"]
    t1 = Table(["L", "‖f_T‖/‖y‖ theory", "‖f_T‖/‖y‖ measured", "decay rate theory", "decay rate measured",
                "L·λ", "distance to ridge (measured)", "distance to ridge (theory)", "test loss at T measured"],
               title=f"Outputs on {ds.n_test} test points at t = {T_end:g} = {T_end * lam:g}/λ (λ = {lam:g})",
               units={"decay rate theory": "1/t", "decay rate measured": "1/t"},
               notes=["Decay rate: −slope of log ‖f_t‖ against t over the last 40% of the run (mean over seeds). "
                      "Distance to ridge: ‖f_T − f_ridge‖/‖f_ridge‖ on the test points, f_ridge = Θ̃_xX(Θ̃+λI)⁻¹y "
                      "with the analytic NTK (for L = 1 the NTK is exact at any width).",
                      f"Test MSE of the ridge solution: {results[0]['ridge_test_loss']:.4g} (L = {results[0]['L']} "
                      f"kernel)."])
    for r in results:
        t1.add_row([r["L"], r["norm_end_th"], r["norm_end_me"], r["rate_th"], r["rate_me"], r["L"] * lam,
                    r["ridge_err_me"] if r["L"] == 1 else None, r["ridge_err_th"] if r["L"] == 1 else None,
                    r["test_loss_end"]])
    t2 = Table(["L", "max deviation from own-f0 theory / ‖y‖", "deviation at T / ‖y‖"],
               title="How closely the finite networks follow the theory along the way",
               notes=["‖f_meas(t) − f_theory(t)‖/‖y‖ on the test points, theory from the network's own "
                      "f0; max over logged t > 0 and seeds, and the seed mean at the end."])
    for r in results:
        t2.add_row([r["L"], r["track_max"], r["track_end"]])
    png = plot_panels(out / f"{NAME}.png", [
        Panel(plot_series, "t = η·steps", "‖f_t‖ / ‖y‖ on test points",
              f"outputs: ridge limit (L=1) vs decay (L≥2), λ={lam:g}", logx=False)], ncols=1,
        panel_size=(6.5, 4.2))

    lines = []
    for r in results:
        if r["L"] == 1:
            lines.append(f"L = 1: after t = {T_end:g} the linear network is {r['ridge_err_me']:.2e} (relative) from the "
                         f"ridge solution; the closed-form flow itself is {r['ridge_err_th']:.2e} from it at that time "
                         f"(and {r['ridge_inf']:.1e} at t = ∞). Its outputs stay at ‖f‖/‖y‖ = {r['norm_end_me']:.3g}.")
        else:
            ratio = r["rate_me"] / (r["L"] * lam)
            lines.append(f"L = {r['L']}: ‖f_T‖/‖y‖ = {r['norm_end_me']:.3g} measured vs {r['norm_end_th']:.3g} theory; "
                         f"late decay rate {r['rate_me']:.4g} measured vs {r['rate_th']:.4g} theory (L·λ = "
                         f"{r['L'] * lam:.4g}; measured/Lλ = {ratio:.3f}); largest deviation from the theory along "
                         f"the way {r['track_max']:.3g} (in units of ‖y‖).")
    for r in wrows:
        verdict = ("decays" if r["rate"] > 0.5 * int(wc["depth"]) * lam else "does not decay")
        if lam > r["lam_c"] and r["rate"] > 1.2 * 2 * (lam - r["lam_c"]):
            verdict += (" yet at the near-origin rate: its late decay is faster than 2(λ − λ_c), i.e. it is still "
                        "in the transient (or G is underestimated)")
        lines.append(f"L = {wc['depth']}, width {r['width']}: λ = {lam:g} is "
                     f"{'above' if lam > r['lam_c'] else 'below'} λ_c ≈ {r['lam_c']:.3g}; the network {verdict} "
                     f"(late rate {r['rate']:.3g}; near-origin prediction 2(λ − λ_c) = {max(2 * (lam - r['lam_c']), 0):.3g}; "
                     f"infinite width L·λ = {int(wc['depth']) * lam:.3g}; ‖f_T‖/‖y‖ = {r['norm_end']:.3g}).")
    summary = (f"{data} ({ds.n_train} train / {ds.n_test} test, {K} output(s), MSE), bias-free ReLU MLPs of depth "
               + ", ".join(str(d) for d in p["depths"]) + f" (L = depth), NTK parameterisation, width {p['width']}; "
               f"full-batch GD η = {eta:g}, λ = {lam:g}, {p['steps']} steps (t = {T_end:g}), float32, "
               f"{len(p['seeds'])} seed(s). Theory from each network's own f0.")
    claims = []
    if len(p["seeds"]) >= 2:
        for r in results:
            ps = r["per_seed"]
            if r["L"] == 1:
                claims.append(judge(Claim("L = 1 follows the closed-form flow to the ridge limit",
                                          "‖f_T − f_flow(T)‖/‖y‖ on test points (seed mean)", 0.0,
                                          TOLERANCES["track_linear"], relative=False, study=NAME, size=size,
                                          note=f"t = {T_end:g} = {T_end * lam:g}/λ; flow from each seed's own f0"),
                                    bootstrap_interval([s["track"][-1] for s in ps])))
            else:
                claims.append(judge(Claim(f"L = {r['L']}: late decay rate of ‖f_t‖", "−d log‖f_t‖/dt [1/(η·steps)]",
                                          r["L"] * lam, TOLERANCES["decay_rate"], study=NAME, size=size,
                                          note="theory L·λ; fit over the last 40% of the run"),
                                    bootstrap_interval([s["rate_me"] for s in ps])))
    data_out = {"results": [{k: v for k, v in r.items() if k != "per_seed"} | {"per_seed": [
        {k: v for k, v in s.items()} for s in r["per_seed"]]} for r in results], "width_check": wrows, "params": p}
    return write_report(NAME, out, title="Study 6: linear (L = 1, ridge limit) vs deep (L ≥ 2, decay to zero)",
                        summary=summary, sections=[("Long-time outputs", [t1]), ("Tracking", [t2])] + (
                            [("Finite width and the stability of the origin (L = 2)", [t3])] if t3 else []) + [
                                                   ("Plot", [Figure(png.name, "Test-output norm vs time: theory "
                                                                              "(lines), finite networks (dots).")]),
                                                   ("Reading the numbers", lines)],
                        size=size, data=data_out, elapsed_s=sw.elapsed, cache=cache, claims=claims)


__all__ = ["run", "SIZES", "NAME"]
