r"""Per-unit check on a real network: BatchNorm MLP, minibatch SGD / heavy ball + weight decay, per-unit
angular updates at equilibrium against :func:`widelimit.dynamics.norms_units.per_unit_equilibrium`
(docs/theory.md §6, "Per-unit groups").

Behind BatchNorm every hidden unit's incoming weights ``w_j = W[:, j]`` (``d = fan_in``) are scale-invariant
on their own, so each unit has its own norm dynamics. At equilibrium the RMS angle per step of every unit is
predicted from hyper-parameters alone, whatever the unit's gradient norm ``G_j``:

    SGD ``sqrt(2 eta lam)``,        heavy ball ``sqrt(2 eta lam / (1 + mu))``        (rad/step),

while the equilibrium norm ``||w_j||^2 = sqrt(eta S G_j / (2 lam))`` needs the measured ``G_j`` (those claims
are *driven*). Measurement (:func:`measure_units`): per-step angles of every unit from the training hooks
(:func:`widelimit.train.hooks.weight_probes` with ``per_unit=True``) over a window starting after several
relaxation times; the RMS angle of unit ``j`` is ``sqrt(mean_k theta_jk^2)`` over the window.

Intervals (stated in the report):

* per unit: bootstrap over ``n_blocks`` contiguous time blocks of the window (block means of
  ``theta^2``; each block is longer than the relaxation time, so blocks are nearly independent);
* per layer: the mean over units of the unit RMS angles, bootstrap over seeds.

Weight decay acts on the hidden weights only (``weight_decay_mask=["hidden*/W"]``): the readout is not
scale-invariant and is left undecayed. The network uses the standard parameterisation with a small
``W_std`` (0.3): the hidden norms then start *below* equilibrium and reach it within a few relaxation
times (from the NTK initialisation ``||w_j||^2 = fan_in`` they start far above it and are still shrinking
after 6 relaxation times: measured angles 3x below the prediction at smoke size).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from ..evidence import Claim, ClaimResult, Interval, bootstrap_interval, judge
from ..validity import Verdict

__all__ = ["UNIT_SIZES", "UNIT_TOLERANCES", "UnitRun", "measure_units", "unit_claims", "unit_tables",
           "unit_streams", "unit_from_streams"]

#: relative tolerances on the RMS angle, declared before anything is measured (heavy ball is looser: on
#: real networks curvature correlates the gradient with the momentum buffer, docs/theory.md §6 "Known limits")
UNIT_TOLERANCES = {"sgd": 0.05, "momentum": 0.10, "norm_driven": 0.15}

_RUNS = [dict(optimizer="sgd", learning_rate=0.2, weight_decay=1e-2),
         dict(optimizer="momentum", learning_rate=0.02, momentum=0.9, weight_decay=1e-2)]

#: sizes: dataset, width, steps; window (first, last step) for the measurement; seeds; time blocks.
#: Relaxation time of both runs: 1/(4 eta lam S) = 125 steps.
UNIT_SIZES: Dict[str, Dict[str, Any]] = {
    "smoke": dict(data="digits", data_options=dict(n_train=256, n_test=64, seed=0), width=24, W_std=0.3, batch_size=32,
                  steps=1400, window=(800, 1400), seeds=[0, 1], n_blocks=4, runs=_RUNS),
    "quick": dict(data="digits", data_options=dict(n_train=512, n_test=128, seed=0), width=64, W_std=0.3, batch_size=32,
                  steps=3000, window=(1000, 3000), seeds=list(range(8)), n_blocks=8, runs=_RUNS),
    "medium": dict(data="mnist1d", data_options=dict(n_train=2000, n_test=200, seed=0), width=128, W_std=0.3, batch_size=64,
                   steps=5000, window=(1500, 5000), seeds=list(range(8)), n_blocks=12, runs=_RUNS),
    "full": dict(data="mnist1d", data_options=dict(n_train=4000, n_test=1000, seed=0), width=512, W_std=0.3, batch_size=128,
                 steps=12000, window=(3000, 12000), seeds=list(range(16)), n_blocks=20, runs=_RUNS),
}


@dataclass(frozen=True)
class UnitRun:
    """Per-unit measurement of one optimiser on a BatchNorm MLP (all angles rad/step, norms param²).

    ``rms_angle`` (n_seeds, n_layers, n_units): RMS angle per step over the window; ``block_sq``
    (n_seeds, n_layers, n_units, n_blocks): mean ``theta^2`` per time block; ``norm_sq`` and ``G``
    (n_seeds, n_layers, n_units): window means of ``||w_j||^2`` and ``G_j = ||g_j||^2 ||w_j||^2`` (minibatch);
    ``predicted_angle``: the hyper-parameter-only prediction (rad/step); ``predicted_norm_sq``
    (same shape as ``norm_sq``): the driven per-unit norm from the measured ``G_j``; ``relaxation_steps``:
    the predicted relaxation time; ``layers``, ``shapes``: the weight layers and their ``(fan_in, fan_out)``.
    """

    optimizer: str
    hyper: Dict[str, float]
    layers: Tuple[str, ...]
    shapes: Tuple[Tuple[int, int], ...]
    window: Tuple[int, int]
    rms_angle: np.ndarray
    block_sq: np.ndarray
    norm_sq: np.ndarray
    G: np.ndarray
    predicted_angle: float
    predicted_norm_sq: np.ndarray
    relaxation_steps: float


def _config(p: Dict[str, Any], run: Dict[str, Any]):
    from ..arch import MLP
    from ..train import RunConfig
    spec = MLP(depth=3, width=p["width"], out_dim=10, norm="batch", parameterization="standard",
               W_std=p["W_std"])
    kw = {k: v for k, v in run.items() if k not in ("optimizer", "learning_rate", "weight_decay")}
    return RunConfig(arch=spec, data=p["data"], data_options=p["data_options"], optimizer=run["optimizer"],
                     learning_rate=run["learning_rate"], weight_decay=run["weight_decay"],
                     weight_decay_mask=["hidden*/W"], loss="xent", batch_size=p["batch_size"], steps=p["steps"],
                     eval_every=p["steps"], probe_size=0, **kw)


def measure_units(p: Dict[str, Any], run: Dict[str, Any]) -> UnitRun:
    """Train ``run`` (optimiser + hyper-parameters) at size ``p`` (a :data:`UNIT_SIZES` entry) for every seed,
    vmapped, with per-unit probes, and reduce the window to per-unit RMS angles, norms and ``G_j``."""
    from ..dynamics.norms_units import per_unit_equilibrium
    from ..train import Hooks, train_ensemble
    from ..train.hooks import weight_probes

    first, last = (int(v) for v in p["window"])
    n_blocks = int(p["n_blocks"])
    if not 0 <= first < last <= p["steps"] or (last - first) < 2 * n_blocks or n_blocks < 2:
        raise ValueError(f"window {p['window']!r} must lie in [0, steps={p['steps']}] and hold >= 2 steps for each "
                         f"of n_blocks={n_blocks} (>= 2) blocks")
    cfg = _config(p, run)
    layers = ("hidden0", "hidden1")
    probes = {k: v for k, v in weight_probes(layers, per_unit=True).items() if k.startswith("unit_")}
    ens = train_ensemble(cfg, seeds=p["seeds"], hooks=Hooks(step_probes=probes))
    ang = np.stack([np.asarray(r.steps["unit_angle"], np.float64)[first:last] for r in ens.runs])  # (S, k, L, U)
    nsq = np.stack([np.asarray(r.steps["unit_norm_sq"], np.float64)[first:last] for r in ens.runs])
    G = np.stack([np.asarray(r.steps["unit_G_batch"], np.float64)[first:last] for r in ens.runs])
    if not np.all(np.isfinite(ang)):
        raise ValueError(f"{run['optimizer']}: non-finite angles (diverged run)")
    sq = np.moveaxis(ang ** 2, 1, -1)                                     # (S, L, U, k)
    blocks = np.stack([b.mean(-1) for b in np.array_split(sq, n_blocks, axis=-1)], axis=-1)
    rms = np.sqrt(sq.mean(-1))
    nsq_m, G_m = np.moveaxis(nsq, 1, -1).mean(-1), np.moveaxis(G, 1, -1).mean(-1)
    fan_in0 = int(np.prod(load_in_shape(p)))
    shapes = ((fan_in0, p["width"]), (p["width"], p["width"]))
    mu = float(run.get("momentum", 0.0))
    eta, lam = float(run["learning_rate"]), float(run["weight_decay"])
    pred_norm = np.empty_like(nsq_m)
    ang_pred, tau = None, None
    for li, shp in enumerate(shapes):
        for s in range(nsq_m.shape[0]):
            eq = per_unit_equilibrium(run["optimizer"], shp, learning_rate=eta, weight_decay=lam, group="unit",
                                      grad_norm_sq=G_m[s, li], momentum=mu)
            pred_norm[s, li] = eq.norm_sq
            ang_pred, tau = float(eq.angular_update[0]), float(eq.relaxation_steps[0])
    return UnitRun(run["optimizer"], {"learning_rate": eta, "weight_decay": lam, "momentum": mu}, layers, shapes,
                   (first, last), rms, blocks, nsq_m, G_m, ang_pred, pred_norm, tau)


_ARRAYS = ("rms_angle", "block_sq", "norm_sq", "G", "predicted_norm_sq")


def unit_streams(u: UnitRun):
    """``(streams, summary)`` of a :class:`UnitRun` for :class:`~widelimit.studies.common.PointCache`."""
    summary = {"optimizer": u.optimizer, "hyper": u.hyper, "layers": list(u.layers),
               "shapes": [list(s) for s in u.shapes], "window": list(u.window),
               "predicted_angle": u.predicted_angle, "relaxation_steps": u.relaxation_steps}
    return {"unit": {k: getattr(u, k) for k in _ARRAYS}}, summary


def unit_from_streams(streams, summary) -> UnitRun:
    """Inverse of :func:`unit_streams`."""
    arr = {k: np.asarray(streams["unit"][k], np.float64) for k in _ARRAYS}
    return UnitRun(summary["optimizer"], dict(summary["hyper"]), tuple(summary["layers"]),
                   tuple(tuple(int(v) for v in s) for s in summary["shapes"]),
                   tuple(int(v) for v in summary["window"]), predicted_angle=float(summary["predicted_angle"]),
                   relaxation_steps=float(summary["relaxation_steps"]), **arr)


def load_in_shape(p: Dict[str, Any]) -> Tuple[int, ...]:
    """Per-example input shape of the size's dataset (loads it; cheap for digits / MNIST-1D)."""
    from ..data import load_dataset
    return tuple(load_dataset(p["data"], **p["data_options"]).in_shape)


def _unit_interval(block_sq: np.ndarray) -> Interval:
    """Interval of one unit's RMS angle: bootstrap over time blocks of the block means of theta²."""
    return bootstrap_interval(block_sq, lambda b: float(np.sqrt(np.mean(b))), n_resamples=1000)


def unit_claims(u: UnitRun, size: str, study: str = "bridge") -> Tuple[List[ClaimResult], Dict[str, Any]]:
    """Claims for one :class:`UnitRun`: per layer, the unit-mean RMS angle against the prediction (interval
    over seeds; hyper-parameters only) and the unit-mean of measured/driven norm (driven); and per-unit
    verdicts (interval over time blocks, seed 0) as counts, with the spread across units."""
    tol = UNIT_TOLERANCES["momentum" if u.hyper["momentum"] > 0 else "sgd"]
    name = u.optimizer if u.hyper["momentum"] == 0 else f"{u.optimizer} μ={u.hyper['momentum']:g}"
    results: List[ClaimResult] = []
    per_unit: Dict[str, Any] = {}
    for li, layer in enumerate(u.layers):
        per_seed = u.rms_angle[:, li].mean(axis=1)
        claim = Claim(f"{name} {layer}: RMS angle per unit (mean over units)", "RMS angle [rad/step]",
                      u.predicted_angle, tol, study=study, size=size,
                      note=f"η={u.hyper['learning_rate']:g}, λ={u.hyper['weight_decay']:g}; window steps "
                           f"{u.window[0]}–{u.window[1]}; interval over seeds")
        results.append(judge(claim, bootstrap_interval(per_seed)))
        ratio = (u.norm_sq[:, li] / u.predicted_norm_sq[:, li]).mean(axis=1)
        dclaim = Claim(f"{name} {layer}: ‖w_j‖² measured/predicted from measured G_j (mean over units)",
                       "ratio", 1.0, UNIT_TOLERANCES["norm_driven"], driven=True, study=study, size=size,
                       note="prediction √(ηSG_j/(2λ)) uses each unit's measured minibatch G_j")
        results.append(judge(dclaim, bootstrap_interval(ratio)))
        unit_res = [judge(Claim(f"unit {j}", "RMS angle [rad/step]", u.predicted_angle, tol),
                          _unit_interval(u.block_sq[0, li, j])) for j in range(u.block_sq.shape[2])]
        counts = {v.value: sum(r.verdict is v for r in unit_res) for v in Verdict}
        rms = u.rms_angle[:, li]
        per_unit[layer] = dict(
            counts=counts, n_units=len(unit_res),
            angle_spread=dict(mean=float(rms.mean()), std=float(rms.std()), min=float(rms.min()),
                              max=float(rms.max())),
            G_spread=dict(cv=float(u.G[:, li].std() / u.G[:, li].mean()), min=float(u.G[:, li].min()),
                          max=float(u.G[:, li].max())),
            norm_cv=float(u.norm_sq[:, li].std() / u.norm_sq[:, li].mean()),
            unit_intervals=[(r.measured.low, r.measured.high) for r in unit_res],
            unit_verdicts=[r.verdict.value for r in unit_res])
    return results, per_unit


def unit_tables(units: Sequence[UnitRun], per_unit: Sequence[Dict[str, Any]]):
    """The report table: per optimiser and layer, prediction, per-unit verdict counts and spreads."""
    from ..tables import Table
    t = Table(["optimizer", "layer", "d", "predicted angle", "unit RMS angle mean", "std across units",
               "min", "max", "units holds/inconclusive/fails", "CV of G_j across units", "CV of ‖w_j‖²"],
              title="Per-unit RMS angle at equilibrium (BatchNorm MLP, all seeds' units)",
              units={"predicted angle": "rad/step", "unit RMS angle mean": "rad/step"},
              notes=["per-unit verdicts: seed 0's units, interval over time blocks of the window; "
                     "the angle prediction uses η, λ, μ only; G_j and ‖w_j‖² spread across units while the "
                     "angles should not"])
    for u, pu in zip(units, per_unit):
        for li, layer in enumerate(u.layers):
            q = pu[layer]
            c = q["counts"]
            t.add_row([u.optimizer, layer, u.shapes[li][0], u.predicted_angle, q["angle_spread"]["mean"],
                       q["angle_spread"]["std"], q["angle_spread"]["min"], q["angle_spread"]["max"],
                       f"{c['holds']}/{c['inconclusive']}/{c['fails']} of {q['n_units']}", q["G_spread"]["cv"],
                       q["norm_cv"]])
    return t
