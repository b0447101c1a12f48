"""The report of :func:`widelimit.compare`: ``compare.md``, ``compare.json`` and plots in one directory.

* ``compare.md``: the structure verdict, what was measured as an input (kernels at init, G), predicted
  t* and λ_opt with their validity, the claims table (:func:`widelimit.evidence.claims_markdown`) and links
  to the plots;
* ``compare.json``: settings, structure rows, predictions, measured curves (seed means), claims
  (``ClaimResult.to_dict``) — everything in the Markdown, as numbers;
* ``test_loss.png``: measured seed-mean test loss per weight decay (points, with the seed range) against the
  predicted expected curve and its n-seed band (:func:`widelimit.plots.plot_panels`); ``norms.png`` for
  scale-invariant groups: ‖w‖ over steps with the predicted equilibrium.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import List

import numpy as np

from ..evidence import claims_markdown


def _num(v) -> str:
    return "nan" if v is None or not np.isfinite(v) else f"{float(v):.4g}"


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, (np.floating, float)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, (np.integer,)):
        return int(v)
    if hasattr(v, "value") and isinstance(getattr(v, "value"), str):
        return v.value
    return v


def to_dict(result) -> dict:
    s = result.settings
    d = {"model": result.model, "settings": dataclasses.asdict(s),
         "structure": {"degree": result.structure.degree, "theories": [t.value for t in result.structure.theories],
                       "reason": result.structure.reason, "groups": result.structure.to_rows()},
         "ntk_skipped": result.ntk_skipped, "time": result.time, "steps": result.steps,
         "measured": {"test_loss_mean": result.test_loss.mean(0), "train_loss_mean": result.train_loss.mean(0)},
         "claims": [c.to_dict() for c in result.claims], "verdicts": result.verdicts, "info": result.info}
    if result.ntk is not None:
        n = result.ntk
        d["ntk"] = {"inputs": n.inputs, "L": n.data_kernels.L,
                    "t_star": n.t_star.t_star, "steps_star": n.t_star.steps_star,
                    "t_star_validity": [v.value for v in n.t_star.validity],
                    "t_star_interval": [n.t_star_spread.low, n.t_star_spread.high],
                    "lambda_opt": {"steps": n.lambda_opt.steps, "weight_decay_opt": n.lambda_opt.weight_decay_opt,
                                   "validity": [v.value for v in n.lambda_opt.validity]},
                    "test_loss_expected": n.curves.test_loss,
                    "ntk_rel_error": n.kernels.ntk_rel_error, "nngp_rel_error": n.kernels.nngp_rel_error}
    d["norms"] = [{"group": p.group, "inputs": p.inputs, "grad_norm_sq": p.grad_norm_sq, "norm_sq": p.norm_sq,
                   "angular_update": p.angular_update, "effective_lr": p.effective_lr,
                   "relaxation_steps": p.relaxation_steps, "validity": list(p.validity)} for p in result.norms]
    return _jsonable(d)


def markdown(result, plots: List[str]) -> str:
    s, st = result.settings, result.structure
    lines = [f"# compare: {result.model}", "",
             f"{result.info.get('cost', '')}", "",
             "## Structure (measured)", "",
             f"Theories that apply: {', '.join(t.value for t in st.theories)}. {st.reason}", "",
             "| group | shape | degree | invariance | unit axis |", "|---|---|---|---|---|"]
    lines += [f"| {r['group']} | {r['shape']} | {r['degree']} | {r['invariance']} | {r['unit_axis']} |"
              for r in st.to_rows()]
    lines += ["", "## NTK-regime prediction (docs/theory.md §2–§3)", ""]
    if result.ntk is None:
        lines.append(f"Not made: {result.ntk_skipped}")
    else:
        n = result.ntk
        lines += [f"Input (measured): {n.inputs}.", "",
                  "| λ | t* [η·steps] | steps* | predicted n-seed interval | validity |", "|---|---|---|---|---|"]
        for i, lam in enumerate(s.weight_decays):
            lines.append(f"| {lam:g} | {_num(n.t_star.t_star[i])} | {_num(n.t_star.steps_star[i])} | "
                         f"[{_num(n.t_star_spread.low[i])}, {_num(n.t_star_spread.high[i])}] | "
                         f"{n.t_star.validity[i].value} |")
        lines += ["", "| budget [steps] | λ_opt [1/(η·steps)] | validity |", "|---|---|---|"]
        for b, lo, v in zip(np.ravel(n.lambda_opt.steps), np.ravel(n.lambda_opt.weight_decay_opt),
                            n.lambda_opt.validity):
            lines.append(f"| {int(b)} | {_num(lo)} | {v.value} |")
    if result.norms:
        lines += ["", "## Scale-invariant groups (docs/theory.md §6)", ""]
        for p in result.norms:
            lines += [f"{p.group}: {p.inputs}.", "",
                      "| λ | G | ‖w‖² | angular update [rad/step] | η_eff | relaxation [steps] |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {lam:g} | {_num(p.grad_norm_sq[i])} | {_num(p.norm_sq[i])} | {_num(p.angular_update[i])} | "
                      f"{_num(p.effective_lr[i])} | {_num(p.relaxation_steps[i])} |"
                      for i, lam in enumerate(s.weight_decays)]
    lines += ["", "## Predicted vs measured", "", claims_markdown(list(result.claims), with_study=False), ""]
    lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _plots(result, out: Path) -> List[str]:
    from ..plots import Panel, Series, plot_panels

    names = []
    panels = []
    for p, lam in enumerate(result.settings.weight_decays):
        t, tl = result.time, result.test_loss[:, p, :]
        ok = t > 0
        mean = tl.mean(0)
        series = [Series(t[ok], mean[ok], "o", "measured (seed mean)", "C0",
                         np.stack([mean[ok] - tl.min(0)[ok], tl.max(0)[ok] - mean[ok]]))]
        if result.ntk is not None:
            sp = result.ntk.loss_spread[p]
            ts = t[list(result.ntk.spread_index)]
            mid = 0.5 * (sp.low + sp.high)
            series += [Series(t[ok], result.ntk.curves.test_loss[p][ok], "-", "predicted E loss", "C1"),
                       Series(ts, mid, "s", f"predicted {result.settings.seeds}-seed interval", "C1",
                              np.stack([mid - sp.low, sp.high - mid]))]
        panels.append(Panel(series, "t = η·steps", "test MSE", f"λ = {lam:g}"))
    plot_panels(out / "test_loss.png", panels, ncols=min(3, len(panels)))
    names.append("test_loss.png")
    if result.norms:
        panels = []
        for pred in result.norms:
            w = result.layers.get(f"weight_norm/{pred.group}")
            if w is None:
                continue
            series = []
            for p, lam in enumerate(result.settings.weight_decays):
                series.append(Series(result.steps, (w[:, p, :] ** 2).mean(0), "-", f"λ={lam:g}", f"C{p % 10}"))
                series.append(Series(result.steps[[0, -1]], [pred.norm_sq[p]] * 2, "--", None, f"C{p % 10}"))
            panels.append(Panel(series, "steps", "‖w‖²", pred.group[:40], logx=False))
        if panels:
            plot_panels(out / "norms.png", panels, ncols=min(3, len(panels)))
            names.append("norms.png")
    return names


def write_report(result, out: Path) -> Path:
    """Write the report files into ``out`` (already checked by ``compare``); returns ``out / "compare.md"``."""
    out = Path(out)
    plots = _plots(result, out)
    (out / "compare.json").write_text(json.dumps(to_dict(result), indent=1, allow_nan=False))
    md = out / "compare.md"
    md.write_text(markdown(result, plots))
    return md


__all__ = ["write_report", "markdown", "to_dict"]
