"""Device plan: what each study costs at a size, and how long it should take on one H100/H200-class GPU.

For every study the size table (``SIZES`` / ``_SETTINGS`` of the study module) is turned into
*workloads* (:class:`Workload`): groups of runs that share one compiled program (same architecture,
data, optimiser and step count; seeds / η / λ vmapped). Per run, with ``F`` the forward FLOPs of one
example (MLP of ``depth`` weight layers: ``2 Σ_l d_l d_{l+1}``; CNN: ``2 C_in C_out T`` per convolution, ``T`` the filter taps inside the input summed over positions, ≈
``k^nd P`` for ``P`` positions),
``B`` the batch (``n_train`` for full-batch GD), ``S`` steps and ``E = S / eval_every + 1`` evaluations::

    FLOPs/run   = 3 F B S  +  F (n_train + n_test) E          (forward + backward = 3 forwards)
    bytes/member = 4 [ params (3 + optimiser slots) + activations 3 B A + eval activations (n_train+n_test) A ]

with ``A`` the activations per example (all hidden units over all positions). A group of ``M`` members is
predicted to take on the GPU::

    t = t_compile + M FLOPs/run / (eff(w) · peak) + S · t_step(depth),   eff(w) = e_max · w / (w + w_half)

in chunks of at most ``members_fit`` members (device memory × ``mem_fraction`` / bytes per member).
Assumptions (module constants; stated in every plan): fp32 peak 67 TFLOP/s (H100 SXM / H200, no TF32:
``jax.default_matmul_precision("highest")``), ``e_max`` 0.45, ``w_half`` 512 (achieved fraction of peak
grows with the matrix width ``w``), a step-latency floor ``t_step = 40 µs + 15 µs × depth`` (one
``lax.scan`` iteration of a fused small network) and 4 s of compilation per distinct program.
:func:`calibrate_cpu` times reduced sizes on this CPU, fits the same form ``S τ + FLOPs / R`` to two
widths and checks it on a third (the model's structure; the GPU constants above stay assumptions until a
GPU run measures them — the device script reports achieved FLOP/s).

:func:`plan` computes the table; :func:`main` prints it (``widelimit plan`` should call ``main(argv)``).
Kernel computations (NNGP/NTK recursions: ``O(n²)`` per layer) are negligible beside training except
the sampled CNN kernels, which are included (``ntk_seeds`` Jacobian contractions, ``nngp_samples``
forwards).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

PEAK_FP32 = 67e12        # FLOP/s, H100 SXM / H200 fp32 (no TF32)
E_MAX = 0.45             # best achieved fraction of peak for wide matmuls
W_HALF = 512.0           # width at which half of E_MAX is reached
T_STEP0, T_STEP_LAYER = 40e-6, 15e-6   # s, per training step floor: fixed + per layer
T_COMPILE = 4.0          # s, per distinct compiled program on the GPU
DEVICE_MEMORY = {"H100": 80 * 2 ** 30, "H200": 141 * 2 ** 30}
MEM_FRACTION = 0.6       # of device memory given to one vmapped chunk

_IN_SHAPE = {("digits", "flat"): (64,), ("digits", "image"): (8, 8, 1), ("mnist1d", "flat"): (40,),
             ("mnist1d", "signal"): (40, 1), ("teacher", "flat"): (16,)}
_SLOTS = {"gd": 0, "sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}


@dataclass(frozen=True)
class Workload:
    """Runs sharing one program: ``members`` runs of ``arch`` (dict as in :mod:`widelimit.arch`) on
    inputs of shape ``in_shape`` (one example), ``n_train``/``n_test`` examples, ``batch`` (None: full
    batch), ``steps``, ``eval_every``, ``optimizer``; ``extra_flops``: per-run extra work (sampled kernels)."""

    study: str
    label: str
    arch: Dict[str, Any]
    in_shape: Tuple[int, ...]
    n_train: int
    n_test: int
    batch: Optional[int]
    steps: int
    eval_every: int
    members: int
    optimizer: str = "gd"
    extra_flops: float = 0.0


def _layers(w: Workload) -> Tuple[float, float, float, int]:
    """(forward FLOPs per example, parameters, activations per example, matrix width) of ``w.arch``."""
    a = w.arch
    out = int(a.get("out_dim", 1))
    depth = int(a["depth"])
    if a["kind"] == "MLP":
        dims = [int(math.prod(w.in_shape))] + [int(a["width"])] * (depth - 1) + [out]  # depth weight layers
        macs = sum(d0 * d1 for d0, d1 in zip(dims[:-1], dims[1:]))
        return 2.0 * macs, float(macs), float(sum(dims[1:-1])), int(a["width"])
    ch, k, nd = int(a["channels"]), int(a.get("kernel_size", 3)), int(a.get("ndim", 2))
    pos = int(math.prod(w.in_shape[:-1]))
    # SAME padding, stride 1: filter taps that land inside the input, summed over output positions
    taps = math.prod(k * n - (k // 2) * ((k - 1) // 2 + 1) for n in w.in_shape[:-1])
    c_in = int(w.in_shape[-1])
    macs = params = 0
    for _ in range(depth):
        params += k ** nd * c_in * ch
        macs += taps * c_in * ch
        c_in = ch
    params += ch * out
    macs += ch * out
    return 2.0 * macs, float(params), float(depth * ch * pos), ch * min(pos, 16)


def run_flops(w: Workload) -> float:
    """FLOPs of one run of ``w`` (training steps + evaluations + extra)."""
    f, _, _, _ = _layers(w)
    b = w.batch or w.n_train
    evals = w.steps // w.eval_every + 1
    return 3.0 * f * b * w.steps + f * (w.n_train + w.n_test) * evals + w.extra_flops


def member_bytes(w: Workload) -> float:
    """Device bytes of one vmapped member (float32)."""
    _, p, act, _ = _layers(w)
    b = w.batch or w.n_train
    return 4.0 * (p * (3 + _SLOTS.get(w.optimizer, 2)) + 3 * b * act + (w.n_train + w.n_test) * act)


def efficiency(width: int) -> float:
    """Assumed achieved fraction of the fp32 peak for matrices of width ``width``."""
    return E_MAX * width / (width + W_HALF)


@dataclass(frozen=True)
class PlanRow:
    """One workload's cost: ``flops_per_run``, ``bytes_per_member``, ``members_fit`` (per chunk),
    ``chunks``, ``predicted_s`` (GPU seconds incl. compilation) and ``bound`` ("flops" | "latency")."""

    workload: Workload
    flops_per_run: float
    bytes_per_member: float
    members_fit: int
    chunks: int
    predicted_s: float
    bound: str


@dataclass(frozen=True)
class Plan:
    """Rows per study, ``device``, ``peak`` FLOP/s, totals per study (``study_s``) and overall (``total_s``),
    the ``assumptions`` used."""

    size: str
    device: str
    rows: List[PlanRow]
    study_s: Dict[str, float]
    total_s: float
    assumptions: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {"size": self.size, "device": self.device, "study_s": self.study_s, "total_s": self.total_s,
                "assumptions": self.assumptions,
                "rows": [{**asdict(r.workload), **{k: getattr(r, k) for k in
                          ("flops_per_run", "bytes_per_member", "members_fit", "chunks", "predicted_s",
                           "bound")}} for r in self.rows]}


def cost(w: Workload, device: str = "H200", peak: float = PEAK_FP32) -> PlanRow:
    """The :class:`PlanRow` of ``w`` on ``device``."""
    if device not in DEVICE_MEMORY:
        raise ValueError(f"device must be one of {sorted(DEVICE_MEMORY)}, got {device!r}")
    fl, mb = run_flops(w), member_bytes(w)
    fit = max(1, int(DEVICE_MEMORY[device] * MEM_FRACTION // mb))
    chunks = -(-w.members // fit)
    m = min(fit, w.members)
    width = _layers(w)[3]
    t_flops = chunks * m * fl / (efficiency(width) * peak)
    t_lat = chunks * w.steps * (T_STEP0 + T_STEP_LAYER * (int(w.arch["depth"]) + 1))
    return PlanRow(w, fl, mb, fit, chunks, T_COMPILE + t_flops + t_lat,
                   "flops" if t_flops >= t_lat else "latency")


# -- the studies' workloads ---------------------------------------------------------------------------
def _shape(data: str, opts: Dict[str, Any]) -> Tuple[int, ...]:
    return _IN_SHAPE[(data, opts.get("layout", "flat"))]


def _n(data: str, opts: Dict[str, Any], default_train: int, default_test: int) -> Tuple[int, int]:
    return int(opts.get("n_train", default_train)), int(opts.get("n_test", default_test))


def _w_quick(p):
    mlp = dict(kind="MLP", depth=p["depth"], width=p["width"], out_dim=10)
    s = len(p["seeds"])
    return [Workload("quick", "λ grid", mlp, (64,), p["n_train"], p["n_test"], None, p["steps"],
                     p["eval_every"], len(p["lams"]) * s),
            Workload("quick", "short run", mlp, (64,), p["n_train"], p["n_test"], None, p["short_steps"],
                     p["short_eval"], s)]


def _w_lambda_opt(p):
    opts = p["data_options"]
    n_tr, n_te = _n(p["data"], opts, 1000, 797)
    s = len(p["seeds"])
    shape = _shape(p["data"], opts)
    return [Workload("lambda_opt", "λ grid", p["arch"], shape, n_tr, n_te, None, p["steps"], p["eval_every"],
                     len(p["lams"]) * s),
            Workload("lambda_opt", "short run", p["arch"], shape, n_tr, n_te, None, p["short"]["steps"],
                     p["short"]["eval_every"], s)]


def _w_tstar(variants):
    out = []
    for v in variants:
        opts, s, shape = v["data_options"], len(v["seeds"]), _shape(v["data"], v["data_options"])
        n_tr, n_te = _n(v["data"], opts, 200, 150)
        for k, g in enumerate(v["groups"]):
            out.append(Workload("tstar", f"{v['name']} group {k}", v["arch"], shape, n_tr, n_te, None, g["steps"],
                                g["eval_every"], len(g["lams"]) * s))
        if v.get("eta_sweep"):
            e = v["eta_sweep"]
            out.append(Workload("tstar", f"{v['name']} η sweep", v["arch"], shape, n_tr, n_te, None, e["steps"],
                                e["eval_every"], len(e["etas"]) * s))
        for wd in (v.get("width_check") or {}).get("widths", []):
            c = v["width_check"]
            out.append(Workload("tstar", f"{v['name']} width {wd}", {**v["arch"], "width": wd}, shape, n_tr, n_te,
                                None, c["steps"], c["eval_every"], s))
        if v.get("sampled"):
            sm = v["sampled"]
            f, params, _, _ = _layers(Workload("", "", v["arch"], shape, n_tr, n_te, None, 1, 1, 1))
            n = n_tr + n_te
            ntk = len(sm["ntk_seeds"]) * (3.0 * f * n + 2.0 * n * n * params)  # Jacobians + contraction
            nngp = sm["nngp_samples"] * f * n
            out.append(Workload("tstar", f"{v['name']} sampled kernels", v["arch"], shape, n_tr, n_te, None, 1, 1,
                                1, extra_flops=ntk + nngp))
    return out


def _w_linear_vs_deep(p):
    opts = p["data_options"]
    data = p.get("data", "digits")
    n_tr, n_te = _n(data, opts, 200, 150)
    shape, s = _shape(data, opts), len(p["seeds"])
    out_dim = 10 if opts.get("targets") == "onehot" else 1
    out = [Workload("linear_vs_deep", f"depth {d}", dict(kind="MLP", depth=d, width=p["width"], out_dim=out_dim),
                    shape, n_tr, n_te, None, p["steps"], p["eval_every"], s) for d in p["depths"]]
    c = p["width_check"]
    out += [Workload("linear_vs_deep", f"width {wd}", dict(kind="MLP", depth=c["depth"], width=wd, out_dim=out_dim),
                     shape, n_tr, n_te, None, p["steps"], p["eval_every"], s) for wd in c["widths"]]
    return out


def _w_width(p):
    return [Workload("width", f"width {wd}", dict(kind="MLP", depth=p["depth"], width=wd, out_dim=1), (64,),
                     p["n_train"], p["n_test"], None, p["steps"], p["eval_every"], len(p["seeds"]))
            for wd in p["widths"]]


def _w_autol2(st):
    out = []
    for su in st["setups"]:
        opts = su["data_options"]
        shape = _shape(su["data"], opts)
        n_tr, n_te = _n(su["data"], opts, 4000 if su["data"] == "mnist1d" else 1347,
                        1000 if su["data"] == "mnist1d" else 450)
        arch = (dict(kind="CNN", depth=su["depth"], channels=su["width"], ndim=len(shape) - 1, out_dim=10)
                if "cnn" in su["name"] else dict(kind="MLP", depth=su["depth"], width=su["width"], out_dim=10))
        for label, k in (("fixed λ", len(st["lams"])), ("AutoL2", len(st["auto_init"]))):
            out.append(Workload("autol2", f"{su['name']} {label}", arch, shape, n_tr, n_te, su["batch_size"],
                                su["steps"], su["eval_every"], k * len(st["seeds"]), su["optimizer"]))
    return out


def _w_scale_invariant(st, size):
    from . import scale_invariant as si
    with_l2, no_l2 = si._cases(size)
    groups: Dict[Tuple[str, str, str], int] = {}
    for c in list(with_l2) + list(no_l2):
        key = (getattr(c, "norm", "?"), c.optimizer, getattr(c, "net", "mlp"))
        groups[key] = groups.get(key, 0) + 1
    n_tr, n_te = _n("mnist1d", st["data_options"], 4000, 1000)
    out = []
    for (norm, opt, net), k in sorted(groups.items()):
        if net == "cnn":
            arch, shape = dict(kind="CNN", depth=st["depth"], channels=st["channels"], ndim=1, out_dim=10), (40, 1)
        else:
            arch, shape = dict(kind="MLP", depth=st["depth"], width=st["width"], out_dim=10), (40,)
        out.append(Workload("scale_invariant", f"{net} {norm} {opt}", arch, shape, n_tr, n_te, st["batch_size"],
                            st["steps"], st["eval_every"], k, opt))
    return out


STUDIES = ("quick", "tstar", "lambda_opt", "width", "linear_vs_deep", "autol2", "scale_invariant")


def workloads(study: str, size: str = "full", sizes: Optional[Dict[str, Any]] = None) -> List[Workload]:
    """The workloads of ``study`` at ``size``, from the study's own size table (or from ``sizes``, a
    replacement for that table's entry, e.g. a proposed resizing)."""
    import importlib
    if study not in STUDIES:
        raise ValueError(f"study must be one of {STUDIES}, got {study!r}")
    mod = importlib.import_module(f"widelimit.studies.{study}")
    table = getattr(mod, "SIZES", None) or getattr(mod, "_SETTINGS")
    if sizes is None and size not in table:
        raise ValueError(f"size: study {study!r} has sizes {sorted(table)}, got {size!r}")
    p = sizes if sizes is not None else table[size]
    if study == "scale_invariant":
        return _w_scale_invariant(p, size)
    return {"quick": _w_quick, "tstar": _w_tstar, "lambda_opt": _w_lambda_opt, "width": _w_width,
            "linear_vs_deep": _w_linear_vs_deep, "autol2": _w_autol2}[study](p)


def plan(size: str = "full", device: str = "H200", studies: Sequence[str] = STUDIES,
         overrides: Optional[Dict[str, Any]] = None) -> Plan:
    """The device plan of ``studies`` at ``size`` on one ``device`` ("H100" | "H200"); ``overrides`` maps a
    study name to a replacement size entry (to evaluate a resizing before adopting it)."""
    rows = []
    for st in studies:
        rows += [cost(w, device) for w in workloads(st, size, (overrides or {}).get(st))]
    study_s: Dict[str, float] = {}
    for r in rows:
        study_s[r.workload.study] = study_s.get(r.workload.study, 0.0) + r.predicted_s
    assumptions = {"peak_flops": PEAK_FP32, "e_max": E_MAX, "w_half": W_HALF, "t_step_s": [T_STEP0, T_STEP_LAYER],
                   "t_compile_s": T_COMPILE, "mem_fraction": MEM_FRACTION, "precision": "float32, highest"}
    return Plan(size, device, rows, study_s, sum(study_s.values()), assumptions)


def proposed_full() -> Dict[str, Any]:
    """Resized ``full`` entries (per study, built from the current tables) that fit about 9 minutes of one
    H200 together (:func:`plan` with ``overrides=proposed_full()``): 8 seeds everywhere the study takes
    seeds, 1000–4000 training examples, MLPs of width 1024–2048 (up to 8192 in the width and linear-vs-deep checks), CNNs of 128
    channels, fewer steps than the unplanned ``full`` (which predicts ~10 h). Proposed to the studies'
    owners; the studies' own tables are not changed here."""
    import copy

    import numpy as np

    from . import autol2, lambda_opt, linear_vs_deep, quick, scale_invariant, tstar, width
    s8 = list(range(8))
    q = dict(quick.SIZES["full"])
    q.update(n_train=1000, width=1024, steps=1500, eval_every=10, seeds=s8, lams=list(np.geomspace(1e-4, 2e-2, 11)),
             budgets=[150, 500, 1500], short_steps=200, short_eval=2)
    t = copy.deepcopy(tstar.SIZES["full"])
    t[0].update(data_options=dict(n_train=1000, n_test=1000, seed=0),
                arch=dict(kind="MLP", depth=3, width=1024, out_dim=10), seeds=s8,
                groups=[dict(lams=[0.02, 0.01, 0.005], steps=400, eval_every=2),
                        dict(lams=[0.002, 0.001, 5e-4, 2e-4], steps=2500, eval_every=10)],
                eta_sweep=dict(lam=0.005, etas=[0.5, 1.0, 2.0, 4.0], steps=600, eval_every=4),
                width_check=dict(lam=0.001, widths=[256, 2048], steps=1500, eval_every=10))
    for v in t[1:]:
        v.update(seeds=s8, arch={**v["arch"], "channels": 128},
                 groups=[dict(lams=[0.1, 0.05, 0.02, 0.01], steps=320, eval_every=4),
                         dict(lams=[0.005, 0.002, 0.001], steps=1000, eval_every=10)])
        if v.get("sampled"):
            v["sampled"] = dict(v["sampled"], ntk_seeds=[0, 1, 2, 3], nngp_samples=256)
        v["eta_sweep"] = None
    lo = dict(lambda_opt.SIZES["full"])
    lo.update(data_options=dict(n_train=2000, n_test=1000, seed=0), arch=dict(kind="MLP", depth=3, width=1024, out_dim=10),
              seeds=s8, lams=list(np.geomspace(1e-4, 2e-2, 13)), budgets=[100, 300, 600, 1200], steps=1200,
              eval_every=20)
    wi = dict(width.SIZES["full"])
    wi.update(widths=[256, 512, 1024, 2048, 4096, 8192], seeds=s8, n_train=256, n_test=101, steps=200)
    ld = copy.deepcopy(linear_vs_deep.SIZES["full"])
    ld.update(data_options=dict(n_train=1000, n_test=1000, seed=0, targets="onehot"), width=2048, steps=2000,
              eval_every=20, seeds=s8, width_check=dict(depth=2, widths=[8192]))
    au = copy.deepcopy(autol2._SETTINGS["full"])
    au["seeds"] = tuple(s8)
    for su in au["setups"]:
        su["steps"] = 4000
    si = dict(scale_invariant._SETTINGS["full"])
    si.update(steps=3000, kick=2000)
    return {"quick": q, "tstar": t, "lambda_opt": lo, "width": wi, "linear_vs_deep": ld, "autol2": au,
            "scale_invariant": si}


def calibrate_cpu(widths: Sequence[int] = (128, 512, 256), steps: int = 40, members: int = 2) -> Dict[str, Any]:
    """Time reduced MLP ensembles on this CPU (execution only, compilation timed separately) and fit the
    cost model ``t = S τ + FLOPs / R`` (per-step latency ``τ``, achieved FLOP/s ``R``) to the first two
    widths; the third is predicted and compared (``check_rel_error``). Returns the points, ``tau_s``,
    ``flops_per_s`` and the error: the test that the FLOP model (plus a step floor) predicts costs."""
    from ..arch import MLP
    from ..train import RunConfig
    from ..train.ensemble import train_members

    if len(widths) != 3:
        raise ValueError(f"widths must be three widths (two to fit, one to check), got {widths!r}")
    pts = []
    for wd in widths:
        cfg = RunConfig(arch=MLP(depth=3, width=int(wd), out_dim=1), data="teacher",
                        data_options=dict(n_train=256, n_test=64, in_dim=16), learning_rate=0.05, steps=steps,
                        eval_every=steps, probe_size=0)
        res = train_members([cfg.replace(seed=s) for s in range(members)])
        w = Workload("calibration", f"width {wd}", cfg.arch, (16,), 256, 64, None, steps, steps, members)
        fl = run_flops(w) * members
        pts.append({"width": int(wd), "flops": fl, "run_s": res.info["run_s"], "compile_s": res.info["compile_s"],
                    "achieved_flops": fl / max(res.info["run_s"], 1e-9)})
    a, b = pts[0], pts[1]
    inv_r = (b["run_s"] - a["run_s"]) / (b["flops"] - a["flops"])
    tau = (a["run_s"] - a["flops"] * inv_r) / steps
    c = pts[2]
    pred = steps * tau + c["flops"] * inv_r
    return {"points": pts, "tau_s": tau, "flops_per_s": 1.0 / inv_r if inv_r > 0 else float("inf"),
            "check_width": c["width"], "check_pred_s": pred, "check_rel_error": pred / c["run_s"] - 1.0}


def format_plan(p: Plan) -> str:
    """The plan as a Markdown table plus per-study and total predicted seconds."""
    lines = [f"Device plan, size `{p.size}`, one {p.device} (fp32 peak {p.assumptions['peak_flops'] / 1e12:.0f} "
             f"TFLOP/s, achieved ≤ {E_MAX:.0%} of it)", "",
             "| study | workload | runs | GFLOP/run | MiB/member | fit/chunk | chunks | predicted s | bound |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in p.rows:
        w = r.workload
        lines.append(f"| {w.study} | {w.label} | {w.members} | {r.flops_per_run / 1e9:.3g} | "
                     f"{r.bytes_per_member / 2 ** 20:.3g} | {r.members_fit} | {r.chunks} | {r.predicted_s:.1f} | "
                     f"{r.bound} |")
    lines += ["", "| study | predicted s |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in p.study_s.items()]
    lines += [f"| **total** | **{p.total_s:.0f}** |"]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``widelimit plan [--size full] [--device H200] [--study NAME ...] [--json PATH] [--calibrate]``."""
    ap = argparse.ArgumentParser(prog="widelimit plan", description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="full")
    ap.add_argument("--device", default="H200", choices=sorted(DEVICE_MEMORY))
    ap.add_argument("--study", nargs="*", default=list(STUDIES), choices=STUDIES)
    ap.add_argument("--json", default=None, help="also write the plan as JSON here")
    ap.add_argument("--calibrate", action="store_true", help="time reduced sizes on this CPU first")
    ap.add_argument("--proposed", action="store_true", help="plan the proposed resized full sizes")
    a = ap.parse_args(argv)
    try:
        p = plan(a.size, a.device, a.study, overrides=proposed_full() if a.proposed else None)
    except ValueError as exc:
        ap.error(str(exc))
    print(format_plan(p))
    data = p.to_dict()
    if a.calibrate:
        t0 = time.perf_counter()
        cal = calibrate_cpu()
        data["cpu_calibration"] = cal
        print(f"\nCPU calibration ({time.perf_counter() - t0:.0f} s): " + ", ".join(
            f"width {c['width']}: {c['run_s']:.3f} s run, {c['compile_s']:.1f} s compile, "
            f"{c['achieved_flops'] / 1e9:.2f} GFLOP/s" for c in cal["points"])
            + f"; fit τ = {cal['tau_s'] * 1e3:.3f} ms/step, R = {cal['flops_per_s'] / 1e9:.1f} GFLOP/s; "
            f"width {cal['check_width']} predicted within {cal['check_rel_error']:+.0%}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(data, fh, indent=1, default=str)
    return 0


__all__ = ["Workload", "PlanRow", "Plan", "workloads", "run_flops", "member_bytes", "efficiency", "cost", "plan",
           "calibrate_cpu", "proposed_full", "format_plan", "main", "STUDIES"]
