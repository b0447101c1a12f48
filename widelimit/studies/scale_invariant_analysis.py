r"""Study 4, the analysis of one run: predictions of :mod:`widelimit.dynamics.norms` next to the measurements.

Per run (with a ×2 kick of the scale-invariant weights at step ``kick``): over the equilibrium window
``[kick − kick//3, kick)`` the RMS angular update ``√(mean θ_k²)`` (the quantity the closed forms predict:
SGD ``√(2ηλ)``, heavy ball ``√(2ηλ/(1+μ))``, AdamW ``√(2ηλ(1−β1)/(1+β1))``, docs/theory.md §6), the mean
norm and the mean effective learning rate ``η κ_k/‖W_k‖²`` (one definition,
:mod:`widelimit.studies.scale_invariant_runs`); the relaxation time fitted to the return after the kick;
and, *driven by the measured gradient noise G*, the norm map / ODE trajectories, the closed-form norms and
η_eff at the window-mean G, the quasi-static lag correction and Adam's anisotropy correction. Units: steps,
radians per step.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np

from .scale_invariant_runs import TOL, Case

def _rel(pred, meas):
    pred, meas = np.asarray(pred, float), np.asarray(meas, float)
    return (pred - meas) / np.abs(meas)


def _fit_tau(steps, z) -> float:
    from ..dynamics.norms import fit_relaxation_time

    try:
        return fit_relaxation_time(steps, z)[0]
    except (RuntimeError, ValueError):
        return float("nan")


def _settle_step(norm: np.ndarray, target: np.ndarray, tol: float = TOL) -> np.ndarray:
    """Per group: first step after which ``|norm/target - 1| <= tol`` holds at every later step."""
    bad = np.abs(norm / target - 1.0) > tol
    out = []
    for j in range(norm.shape[1]):
        idx = np.nonzero(bad[:, j])[0]
        out.append(0.0 if idx.size == 0 else float(idx[-1] + 1))
    return np.asarray(out)


def _solver_kwargs(case: Case, cfg, d) -> Dict[str, Any]:
    opt = cfg.optimizer_options()
    return dict(learning_rate=case.lr, weight_decay=case.lam, d=np.asarray(d), momentum=case.momentum,
                b1=opt.get("b1", 0.9), b2=opt.get("b2", 0.999), eps=opt.get("eps", 1e-8))


def analyse(case: Case, rec: Dict[str, np.ndarray], layers: Sequence[str], d: Sequence[int], cfg,
            kick: int) -> Dict[str, Any]:
    """Predictions for one run (with a kick at step ``kick``) next to its measurements (NumPy float64).

    Before the kick: trajectory errors of the norm map and the ODE driven by the measured minibatch
    ``G_k`` (and of the map driven by the harness's full-batch ``G``), equilibrium quantities over
    ``[kick - kick//3, kick)`` against the closed forms, and the time to equilibrium from initialisation.
    After the kick: the fitted relaxation time of the measured norm, of the ODE restarted from the measured
    post-kick norm, and the closed form. Returns JSON-able lists per layer plus downsampled trajectories.
    """
    from ..dynamics.norms import equilibrium, norm_sq_trajectory, solve_norm_map, solve_norm_ode

    K, S = rec["norm_sq"].shape
    ev = rec["eval_steps"].astype(int)
    E = int(ev[1] - ev[0])
    if kick % E:
        raise ValueError(f"kick={kick} must be a multiple of the logging interval {E}")
    kw = _solver_kwargs(case, cfg, d)
    x_meas = np.vstack([rec["norm_sq"], rec["norm_sq_final"][None]])          # (K+1, S)
    G = rec["G_batch"]
    pm = solve_norm_map(case.dyn_name, n_steps=kick, grad_norm_sq=G[:kick], norm_sq0=x_meas[0], **kw)
    po = solve_norm_ode(case.dyn_name, n_steps=kick, grad_norm_sq=G[:kick], norm_sq0=x_meas[0], **kw)
    G_full = np.repeat(rec["G_full"][:-1], E, axis=0)[:kick]
    pf = solve_norm_map(case.dyn_name, n_steps=kick, grad_norm_sq=G_full, norm_sq0=x_meas[0], **kw)
    chunk = lambda a: a.reshape(a.shape[0] // E, E, -1).mean(axis=1)  # noqa: E731
    crms = lambda a: np.sqrt(chunk(a ** 2))  # noqa: E731  (angles: RMS over each logging interval)
    evA = ev[(ev > 0) & (ev < kick)]
    ang_meas, eff_step = crms(rec["angle"][:kick]), case.lr * rec["kappa"] / rec["norm_sq"]
    eff_meas = chunk(eff_step[:kick])
    out: Dict[str, Any] = {"layers": list(layers), "d": [int(v) for v in d], "kick": kick}

    def traj_err(p):
        e_norm = _rel(np.sqrt(p.norm_sq[evA]), np.sqrt(x_meas[evA]))
        e_ang = _rel(crms(p.angular_update), ang_meas)
        e_eff = _rel(chunk(p.effective_lr), eff_meas)
        return {"norm_med": np.median(np.abs(e_norm), axis=0), "norm_end": e_norm[-1],
                "angle_med": np.median(np.abs(e_ang), axis=0), "eff_med": np.median(np.abs(e_eff), axis=0)}

    for tag, p in (("map", pm), ("ode", po), ("map_fullG", pf)):
        for k, v in traj_err(p).items():
            out[f"{tag}_{k}"] = np.asarray(v).tolist()
    # equilibrium over the last third before the kick
    w = slice(kick - kick // 3, kick)
    G_eq = G[w].mean(axis=0)
    eq = equilibrium(case.dyn_name, case.lr, case.lam, grad_norm_sq=G_eq, d=np.asarray(d),
                     momentum=case.momentum, b1=kw["b1"], b2=kw["b2"])
    norm_eq = np.sqrt(x_meas[w]).mean(axis=0)
    kw_ = np.arange(w.start, w.stop, dtype=float)
    drift = np.asarray([np.polyfit(kw_, np.log(G[w, j]), 1)[0] for j in range(S)])  # d ln G / dk
    i_eq = int(np.searchsorted(ev, kick))  # logging point at the kick step: evaluated before the kick
    in_w = (ev >= w.start) & (ev <= kick)
    G_full_eq = rec["G_full"][in_w].mean(axis=0) if in_w.any() else rec["G_full"][i_eq]
    units = rec["unit_norms"][i_eq]              # (S, width)
    out.update({
        "G_eq": G_eq.tolist(), "G_full_eq": G_full_eq.tolist(),
        "angle_eq_meas": np.sqrt((rec["angle"][w] ** 2).mean(axis=0)).tolist(),   # RMS, as the closed forms
        "norm_eq_meas": norm_eq.tolist(), "eff_eq_meas": eff_step[w].mean(axis=0).tolist(),
        "angle_eq_closed": np.asarray(eq.angular_update).tolist(),
        "norm_eq_closed": np.sqrt(np.asarray(eq.norm_sq)).tolist(),
        "eff_eq_closed": np.asarray(eq.effective_lr).tolist(),
        "tau_closed": np.asarray(eq.relaxation_steps).tolist(), "window": [w.start, w.stop],
        "G_drift_per_tau": (drift * np.asarray(eq.relaxation_steps)).tolist(),
        "angle_eq_lag": ([float(a * np.sqrt(max(1.0 + g, 0.0))) for a, g in
                          zip(np.asarray(eq.angular_update), drift * np.asarray(eq.relaxation_steps))]
                         if case.dyn_name in ("sgd", "momentum") else [None] * S),
        "aniso_eq": rec["aniso"][w].mean(axis=0).tolist(),
        "unit_cv": (units.std(axis=1) / units.mean(axis=1)).tolist(),
        "unit_min_over_median": (units.min(axis=1) / np.median(units, axis=1)).tolist(),
    })
    if case.dyn_name == "adam":  # isotropic model with the measured spread of v: lam -> aniso * lam
        eqc = equilibrium("adam", case.lr, case.lam * np.asarray(out["aniso_eq"]), grad_norm_sq=G_eq,
                          d=np.asarray(d), b1=kw["b1"], b2=kw["b2"])
        out["norm_eq_closed_aniso"] = np.sqrt(np.asarray(eqc.norm_sq)).tolist()
        out["angle_eq_closed_aniso"] = np.asarray(eqc.angular_update).tolist()
    # time to equilibrium from initialisation (||w|| within TOL of its equilibrium value from then on)
    cf = norm_sq_trajectory(case.dyn_name, np.arange(kick + 1)[:, None], learning_rate=case.lr, weight_decay=case.lam,
                            norm_sq0=x_meas[0], grad_norm_sq=G_eq, d=np.asarray(d), momentum=case.momentum,
                            b1=kw["b1"])
    out["settle_meas"] = _settle_step(np.sqrt(x_meas[:kick]), norm_eq).tolist()
    out["settle_map"] = _settle_step(np.sqrt(pm.norm_sq[:kick]), np.sqrt(pm.norm_sq[w]).mean(axis=0)).tolist()
    out["settle_closed"] = _settle_step(np.sqrt(cf[:kick]), np.sqrt(np.asarray(eq.norm_sq))).tolist()
    # relaxation after the kick: z = ||w||^4 (SGD family) or ||w||^2 (Adam), fitted z_inf + A exp(-k/tau)
    power = 1.0 if case.dyn_name in ("adam", "adamw") else 2.0
    post = solve_norm_ode(case.dyn_name, n_steps=K - kick, grad_norm_sq=G[kick:], norm_sq0=x_meas[kick], **kw)
    taus_m, taus_p = [], []
    for j in range(S):
        tau_c = out["tau_closed"][j]
        n_fit = int(min(K - kick + 1, max(8 * tau_c, 20))) if np.isfinite(tau_c) else K - kick + 1
        kk = np.arange(n_fit, dtype=float)
        taus_m.append(_fit_tau(kk, x_meas[kick:kick + n_fit, j] ** power))
        taus_p.append(_fit_tau(kk, post.norm_sq[:n_fit, j] ** power))
    out["tau_meas"], out["tau_ode"] = taus_m, taus_p
    # downsampled trajectories for the plots: predictions are the map before the kick, the ODE after
    pred_norm = np.where((ev < kick)[:, None], np.sqrt(pm.norm_sq[np.minimum(ev, kick)]),
                         np.sqrt(post.norm_sq[np.maximum(ev - kick, 0)]))
    post_ang = crms(post.angular_update) if (K - kick) % E == 0 else None
    out["traj"] = {"eval_steps": ev.tolist(), "chunk_mid_steps": (np.arange(K // E) * E + E / 2).tolist(),
                   "norm_meas": np.sqrt(x_meas[ev]).T.tolist(), "norm_pred": pred_norm.T.tolist(),
                   "angle_meas": crms(rec["angle"]).T.tolist(),
                   "angle_pred": (np.vstack([crms(pm.angular_update), post_ang]) if post_ang is not None
                                  else crms(pm.angular_update)).T.tolist(),
                   "G_batch": chunk(G).T.tolist(), "G_full": rec["G_full"].T.tolist(),
                   "test_acc": rec["test_acc"].tolist(), "train_loss": rec["train_loss"].tolist()}
    out["test_acc_final"] = float(rec["test_acc"][-1])
    out["train_acc_final"] = float(rec["train_acc"][-1])
    out["G_first_tenth"] = G[:max(1, kick // 10)].mean(axis=0).tolist()
    out["readout_norm_first_eq"] = [float(rec["readout_norm"][0]), float(rec["readout_norm"][i_eq])]
    return out


def analyse_no_l2(case: Case, rec: Dict[str, np.ndarray], layers: Sequence[str], d: Sequence[int],
                  cfg) -> Dict[str, Any]:
    """Without L2: measured norm growth and effective-LR decay next to the map driven by measured ``G_k``.

    The decay exponent ``p`` of ``eta_eff ~ k^p`` is fitted over the second half of the run (theory for
    constant ``G``: ``||w||^4`` (SGD) or ``||w||^2`` (Adam) grows linearly, so ``p -> -1/2`` once the
    growth dominates the initial norm; a decreasing ``G`` makes the decay faster).
    """
    from ..dynamics.norms import solve_norm_map

    K = rec["norm_sq"].shape[0]
    x_meas = np.vstack([rec["norm_sq"], rec["norm_sq_final"][None]])
    pm = solve_norm_map(case.dyn_name, n_steps=K, grad_norm_sq=rec["G_batch"], norm_sq0=x_meas[0],
                        **_solver_kwargs(case, cfg, d))
    eff_meas = case.lr * rec["kappa"] / rec["norm_sq"]
    k = np.arange(K // 2, K, dtype=float)
    slope = lambda y: float(np.polyfit(np.log(k + 1), np.log(y[K // 2:]), 1)[0])  # noqa: E731
    ev = rec["eval_steps"].astype(int)
    evk = np.minimum(ev, K - 1)
    return {"layers": list(layers), "d": [int(v) for v in d],
            "norm0": np.sqrt(x_meas[0]).tolist(), "norm_final_meas": np.sqrt(x_meas[-1]).tolist(),
            "norm_final_map": np.sqrt(pm.norm_sq[-1]).tolist(),
            "norm_final_err": _rel(np.sqrt(pm.norm_sq[-1]), np.sqrt(x_meas[-1])).tolist(),
            "eff0_meas": eff_meas[0].tolist(), "eff_final_meas": eff_meas[-1].tolist(),
            "eff_final_map": pm.effective_lr[-1].tolist(),
            "eff_slope_meas": [slope(eff_meas[:, j]) for j in range(len(layers))],
            "eff_slope_map": [slope(pm.effective_lr[:, j]) for j in range(len(layers))],
            "G_first_last": [chunk_mean(rec["G_batch"], j) for j in range(len(layers))],
            "readout_norm_first_last": [float(rec["readout_norm"][0]), float(rec["readout_norm"][-1])],
            "traj": {"eval_steps": ev.tolist(), "norm_meas": np.sqrt(x_meas[ev]).T.tolist(),
                     "norm_map": np.sqrt(pm.norm_sq[ev]).T.tolist(),
                     "eff_meas": eff_meas[evk].T.tolist(), "eff_map": pm.effective_lr[evk].T.tolist()},
            "test_acc_final": float(rec["test_acc"][-1])}


def chunk_mean(G: np.ndarray, j: int) -> List[float]:
    """Mean of ``G[:, j]`` over the first and the last tenth of the run."""
    n = max(1, G.shape[0] // 10)
    return [float(G[:n, j].mean()), float(G[-n:, j].mean())]



__all__ = ["analyse", "analyse_no_l2", "chunk_mean"]
