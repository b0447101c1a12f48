r"""Study 4: norms, angular updates and effective learning rates of normalised networks vs the norm theory.

Scale-invariant weight groups ``w`` (hidden weights feeding BatchNorm/LayerNorm, WeightNorm directions)
satisfy ``w·g = 0`` and ``‖g‖² = G/‖w‖²`` with ``G`` the squared gradient norm at unit scale. With L2
(penalty ``(λ/2)‖w‖²``) the norm settles where the noisy gradient steps balance the decay
(docs/theory.md §6, :mod:`widelimit.dynamics.norms`).

Claims (:mod:`widelimit.evidence`; intervals over seeds, verdicts from the intervals):

* headline, from hyper-parameters alone: the equilibrium **RMS** angular update ``√(mean θ²)`` against
  ``√(2ηλ)`` (SGD), ``√(2ηλ/(1+μ))`` (heavy ball), ``√(2ηλ(1−β1)/(1+β1))`` (AdamW); the relaxation time of
  the return after a ×2 kick of the weights against ``1/(4ηλS)`` (SGD family, ``S = 1/(1−μ)``) and
  ``1/(2ηλ)`` (AdamW);
* *driven* (the prediction uses the measured G; reported apart, never in headline numbers): Adam + L2's
  angle and relaxation time, the closed-form equilibrium norm and effective learning rate ``η κ/‖w‖²``
  at the window-mean G, and the norm map driven by the measured G_k (with and without L2).

The pieces: :mod:`~widelimit.studies.scale_invariant_runs` (cases, sizes, vmapped instrumented training,
the one η_eff), :mod:`~widelimit.studies.scale_invariant_analysis` (one run),
:mod:`~widelimit.studies.scale_invariant_report` (tables, plots, prose).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from ..evidence import Claim, bootstrap_interval, judge
from .scale_invariant_analysis import analyse, analyse_no_l2
from .scale_invariant_report import _case_name, _findings, _plots, _setup_text, _tables
from .scale_invariant_runs import (_SETTINGS, _SHORT, KICK_FACTOR, NAME, TOL, Case, _cases, instrumented_run,
                                   instrumented_runs, run_config)

#: claim tolerances (relative): RMS angle, relaxation time; driven: norm / η_eff closed forms, map ‖w‖
TOLERANCES = {"angle": 0.10, "tau": 0.25, "norm_closed": 0.10, "eff_closed": 0.10, "map_norm": 0.05}
SIZES = _SETTINGS
_STEP_KEYS = ("norm_sq", "G_batch", "angle", "kappa", "aniso", "loss")
_EVAL_KEYS = ("eval_steps", "G_full", "unit_norms", "readout_norm", "train_acc", "test_acc", "train_loss",
              "test_loss")


def _groups(cases: List[Case]) -> Dict[Case, List[Case]]:
    out: Dict[Case, List[Case]] = {}
    for c in cases:
        out.setdefault(c.group(), []).append(c)
    return out


def _measure(cases: List[Case], size: str, cache, data_cache: Dict[str, Any]):
    """Records of the seeds of one case group (cached as one point; trained now in one vmapped program if
    missing): list of ``(rec, layers, d, config)``."""
    from ..data import load_dataset
    from ..train.loop import precision

    cfgs = [run_config(c, size).canonical() for c in cases]
    kick = _SETTINGS[size]["kick"] if cases[0].lam > 0 else None
    key = {"study": NAME, "size": size, "instrumented": 5, "kick_step": kick, "kick_factor": KICK_FACTOR,
           "runs": [c.to_dict() for c in cfgs]}

    def compute():
        dkey = repr(sorted(cfgs[0].data_options.items()))
        if dkey not in data_cache:
            with precision(cfgs[0].dtype):
                data_cache[dkey] = load_dataset(cfgs[0].data, **cfgs[0].data_options)
        recs = instrumented_runs(cfgs, data_cache[dkey], kick_step=kick, kick_factor=KICK_FACTOR)
        streams = {}
        for i, r in enumerate(recs):
            streams[f"steps{i}"] = {k: r[k] for k in _STEP_KEYS}
            streams[f"evals{i}"] = {**{k: r[k] for k in _EVAL_KEYS}, "norm_sq_final": r["norm_sq_final"]}
        summary = {"layers": [str(s) for s in recs[0]["layers"]], "d": [int(v) for v in recs[0]["d"]],
                   "compile_s": float(sum(r["compile_s"] for r in recs)),
                   "run_s": float(sum(r["run_s"] for r in recs)), "run_ids": [c.run_id for c in cfgs]}
        return streams, summary

    pt = cache.get_or_compute(key, compute)
    if not pt.loaded:
        cache.runs_trained += len(cfgs)
        cache.train_seconds += pt.summary["compile_s"] + pt.summary["run_s"]
    else:
        cache.runs_reused += len(cfgs)
    recs = [{**pt.streams[f"steps{i}"], **pt.streams[f"evals{i}"]} for i in range(len(cfgs))]
    return [(r, pt.summary["layers"], pt.summary["d"], c) for r, c in zip(recs, cfgs)], pt.summary


def run(size: str = "quick", out_dir="validation", progress: bool = True, resume: bool = True) -> Path:
    """Run study 4 at ``size`` ("smoke" for tests, "quick": ~10 CPU minutes, "medium", "full": GPU-sized)
    and write ``<out_dir>/scale_invariant.md`` / ``.json`` and its PNG plots; returns the Markdown path.

    Every case is trained for all seeds of the size in one vmapped, instrumented program
    (:func:`~widelimit.studies.scale_invariant_runs.instrumented_runs`), cached per case in
    ``<out_dir>/.cache/scale_invariant-<size>`` (``resume=False`` recomputes).
    """
    from .common import PointCache, Stopwatch, check_out_dir, check_provenance, check_size, progress_iter, \
        write_report

    size = check_size(size)
    out = check_out_dir(out_dir)
    if not isinstance(progress, bool) or not isinstance(resume, bool):
        raise TypeError("progress and resume must be bools")
    check_provenance(out)
    sw = Stopwatch()
    cache = PointCache.for_study(NAME, size, out, resume=resume)
    with_l2, no_l2 = _cases(size)
    kick = _SETTINGS[size]["kick"]
    data_cache: Dict[str, Any] = {}
    per_group: List[Dict[str, Any]] = []
    results, results0, timings = [], [], []
    for grp, cs in progress_iter(list(_groups(with_l2 + no_l2).items()), "scale_invariant cases", progress):
        runs, summ = _measure(cs, size, cache, data_cache)
        timings.append(summ["compile_s"] + summ["run_s"])
        an = [(analyse(c, rec, lay, d, cfg, kick) if c.lam > 0 else analyse_no_l2(c, rec, lay, d, cfg))
              for c, (rec, lay, d, cfg) in zip(cs, runs)]
        (results if grp.lam > 0 else results0).append((cs[0], an[0]))   # tables and plots: seed 0
        per_group.append(_compact(grp, cs, an, runs[0][3]))
    data = {"groups": per_group, "cases": [{"case": c.__dict__, "name": _case_name(c), **r} for c, r in results],
            "no_l2": [{"case": c.__dict__, "name": _case_name(c), **r} for c, r in results0],
            "train_seconds_per_case": timings, "kick_step": kick, "kick_factor": KICK_FACTOR, "tol": TOL,
            "tolerances": TOLERANCES}
    claims = claims_from_data(json.loads(json.dumps(_jsonable(data))), size)
    cfg0 = run_config(with_l2[0], size).canonical()
    figs = _plots(results, results0, out)
    tables = _tables(results, results0)
    n_seeds = _SETTINGS[size]["seeds"]
    train_txt = (f"- Training cost: {len(timings)} vmapped programs ({len(with_l2) + len(no_l2)} runs), "
                 f"{sum(timings):.0f} s of training (compile + run) recorded when they were trained.")
    sections = [("Setup", [_setup_text(size, cfg0, with_l2, no_l2) + "\n" + train_txt]),
                ("Findings (seed 0)", [_findings(results, results0)]),
                ("Equilibrium angular update, norm and effective learning rate vs the closed forms",
                 [tables["eq"], figs["eq"]]),
                ("Trajectories vs the norm map / ODE driven by the measured G (driven)",
                 [tables["traj"]] + figs["traj"]),
                ("Time to equilibrium and relaxation time", [tables["tau"]])]
    if "adam" in tables:
        sections.append(("Adam + L2: where the isotropic model fails (driven)", [tables["adam"]]))
    sections.append(("Without L2: the norm grows and the effective learning rate decays",
                     [tables["nol2"], figs["nol2"]]))
    return write_report(NAME, out, title="Study 4: scale-invariant networks vs the weight-norm theory",
                        size=size, sections=sections, data=data, elapsed_s=sw.elapsed, cache=cache, claims=claims,
                        summary=f"Normalised MLPs on MNIST-1D trained with minibatch SGD, heavy-ball momentum, "
                                f"Adam + L2 and AdamW, {n_seeds} seeds per case (vmapped). Headline claims use "
                                "hyper-parameters alone: the equilibrium RMS angular update against √(2ηλ), "
                                "√(2ηλ/(1+μ)), √(2ηλ(1−β1)/(1+β1)), and the relaxation time after doubling the "
                                f"weights at step {kick} (the function is unchanged) against 1/(4ηλS), 1/(2ηλ). "
                                "Everything that needs the measured gradient noise G (norms, η_eff = ηκ/‖w‖², "
                                "trajectories, the lag and Adam corrections) is a driven claim, apart from the "
                                "headline.")


def _compact(grp: Case, cs: List[Case], an: List[Dict[str, Any]], cfg) -> Dict[str, Any]:
    """What the claims are judged from: per seed and layer (arrays ``(n_seeds, S)``)."""
    opt = cfg.optimizer_options()
    out = {"case": grp.__dict__, "name": _case_name(grp), "seeds": [c.seed for c in cs], "layers": an[0]["layers"],
           "d": an[0]["d"], "b1": opt.get("b1", 0.9), "b2": opt.get("b2", 0.999)}
    if grp.lam > 0:
        for k in ("angle_eq_meas", "tau_meas", "norm_eq_meas", "norm_eq_closed", "eff_eq_meas", "eff_eq_closed",
                  "angle_eq_closed", "tau_closed", "map_norm_end"):
            out[k] = [a[k] for a in an]
    else:
        out["norm_final_ratio"] = [[m / x for m, x in zip(a["norm_final_map"], a["norm_final_meas"])] for a in an]
    return out


def _jsonable(data):
    from ..results import to_jsonable
    from .common import _finite
    return _finite(to_jsonable(data))


def _hp_closed(g: Dict[str, Any]):
    """(angle, τ, ‖w‖²) per layer from hyper-parameters alone (``equilibrium`` without G); NaN where G is
    needed (everything of Adam + L2; the norm of the SGD family)."""
    from ..dynamics.norms import equilibrium

    c = g["case"]
    name = Case(**c).dyn_name
    out = []
    for d in g["d"]:
        try:
            eq = equilibrium(name, c["lr"], c["lam"], d=d, momentum=c["momentum"], b1=g["b1"], b2=g["b2"])
            vals = [float(np.asarray(v)) for v in (eq.angular_update, eq.relaxation_steps, eq.norm_sq)]
        except (TypeError, ValueError):
            vals = [float("nan")] * 3
        out.append(tuple(v if np.isfinite(v) else float("nan") for v in vals))
    return out


def _iv(values):
    v = np.asarray([np.nan if x is None else x for x in values], float)
    v = v[np.isfinite(v)]
    return bootstrap_interval(v) if v.size >= 2 else None


def claims_from_data(data: Dict[str, Any], size: str) -> list:
    """The study's claims (tolerances :data:`TOLERANCES`) judged from its stored ``data`` alone
    (``data["groups"]``: per case group, per seed and layer), so a committed report's claims can be rebuilt
    and checked. Bootstrap intervals (90%, BCa) of the seed mean."""
    out = []
    for g in data["groups"]:
        c, name = g["case"], g["name"]
        if c["lam"] == 0:
            iv = _iv([float(np.mean(r)) for r in g["norm_final_ratio"]])
            if iv is not None:
                out.append(judge(Claim(f"{name}: final ‖w‖, map driven by the measured G", "map ‖w‖ / measured ‖w‖",
                                       1.0, TOLERANCES["map_norm"], driven=True, study=NAME, size=size), iv))
            continue
        hp = _hp_closed(g)
        for j, layer in enumerate(g["layers"]):
            col = lambda k: [row[j] for row in g[k]]  # noqa: E731
            a_hp, t_hp, _ = hp[j]
            driven_a = not np.isfinite(a_hp)
            a_pred = float(np.nanmean(np.asarray(col("angle_eq_closed"), float))) if driven_a else a_hp
            iv = _iv(col("angle_eq_meas"))
            if iv is not None:
                out.append(judge(Claim(f"{name} {layer}: RMS angular update", "√(mean θ²) at equilibrium [rad/step]",
                                       a_pred, TOLERANCES["angle"], driven=driven_a, study=NAME, size=size,
                                       note="closed form at the measured G" if driven_a else "from η, λ, μ, β1"), iv))
            driven_t = not np.isfinite(t_hp)
            t_pred = float(np.nanmean(np.asarray(col("tau_closed"), float))) if driven_t else t_hp
            iv = _iv(col("tau_meas"))
            if iv is not None and np.isfinite(t_pred):
                out.append(judge(Claim(f"{name} {layer}: relaxation time", f"e-folding steps after the ×{KICK_FACTOR:g} kick",
                                       t_pred, TOLERANCES["tau"], driven=driven_t, study=NAME, size=size,
                                       note="closed form at the measured G" if driven_t else "from η, λ, μ"), iv))
        # closed-form norm (from η, λ, d alone for AdamW, else at the measured G) and η_eff (needs κ, so the
        # measured G), and the norm map at the kick: layers pooled per seed
        norm_hp = all(np.isfinite(h[2]) for h in hp)
        for key, meas, tol, q, drv in (
                ("norm_eq_closed", "norm_eq_meas", "norm_closed", "closed-form ‖w‖ / measured", not norm_hp),
                ("eff_eq_closed", "eff_eq_meas", "eff_closed", "closed-form η_eff / measured", True)):
            ratio = [float(np.mean(np.asarray(p, float) / np.asarray(m, float))) for p, m in zip(g[key], g[meas])]
            iv = _iv(ratio)
            if iv is not None:
                out.append(judge(Claim(f"{name}: {q.split(' /')[0]}" + (" at the window-mean G" if drv else ""),
                                       q + " (layers averaged)", 1.0, TOLERANCES[tol], driven=drv, study=NAME,
                                       size=size, note="closed form at the measured G" if drv else "from η, λ, d"),
                                 iv))
        iv = _iv([1.0 + float(np.mean(e)) for e in g["map_norm_end"]])
        if iv is not None:
            out.append(judge(Claim(f"{name}: ‖w‖ before the kick, map driven by the measured G", "map ‖w‖ / measured ‖w‖",
                                   1.0, TOLERANCES["map_norm"], driven=True, study=NAME, size=size), iv))
    return out


__all__ = ["run", "claims_from_data", "Case", "run_config", "instrumented_run", "instrumented_runs", "analyse",
           "analyse_no_l2", "TOLERANCES", "SIZES", "NAME"]
