"""``compare(model, data, ...)``: a user's network, the theory's prediction for it and its training, side by side.

Order of work (docs/theory.md §2, §3, §6, §8):

1. validate everything (model and params pytree, data, targets against the output shape, hyper-parameters,
   output directory) — no compute before this passes;
2. measure the structure (:func:`widelimit.models.analyse_structure`) → which theory applies;
3. L-homogeneous model (``ntk-l2-flow``), full-batch GD on the MSE: the model's own kernels (empirical
   NTK at init, Monte-Carlo NNGP; a stated, measured input) → prediction at the run's η
   (:mod:`widelimit.comparison.theory`);
4. train ``seeds × weight_decays`` networks with widelimit's one loop (:func:`widelimit.train.train_ensemble`
   with ``model=``, vmapped over seeds), logging test loss, per-group norms, angles, η_eff;
5. scale-invariant groups: equilibrium predictions with the unit-scale gradient noise G measured over the
   first ``noise_steps`` steps (driven);
6. claims and verdicts (:mod:`widelimit.comparison.claims`); report (:mod:`widelimit.comparison.report`).
"""
from __future__ import annotations

import time as _time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..evidence import ClaimResult, verdict_counts
from ..models import Invariance, Structure, TheoryKind, analyse_structure, as_model
from ..train.optim import OPTIMIZER_DEFAULTS
from .claims import norm_claims, ntk_claims
from .inputs import Settings, as_dataset, check_out_dir, check_settings, check_targets, sample_inputs
from .theory import NormPrediction, NTKPrediction, measure_kernels, norm_prediction, ntk_prediction


@dataclass(frozen=True, eq=False)
class CompareResult:
    """Prediction and measurement of one user model (arrays float64; times in η·steps).

    Fields:
      model: the model's name; settings: the validated :class:`~widelimit.comparison.inputs.Settings`;
      structure: the measured :class:`~widelimit.models.Structure` (degrees, invariances, verdict);
      ntk: the :class:`~widelimit.comparison.theory.NTKPrediction` or None; ntk_skipped: why not (empty if made);
      norms: one :class:`~widelimit.comparison.theory.NormPrediction` per scale-invariant group;
      time: logged times (T,); steps: logged step counts (T,);
      test_loss, train_loss: measured MSE, shape (seeds, weight_decays, T);
      layers: per-group streams ``"<quantity>/<group>" -> (seeds, weight_decays, T)`` (weight_norm,
        grad_norm, angular_update, angular_update_mean; eff_lr and grad_norm_unit for scale-invariant groups);
      claims: judged :class:`~widelimit.evidence.ClaimResult` (tuple); report: the report directory or None;
      info: timings (s) and sizes; test_outputs: the networks' outputs on the first ``min(M, 256)`` test
        points at every logged time, (seeds, weight_decays, T, M', K) (function space).
    """

    model: str
    settings: Settings
    structure: Structure
    ntk: Optional[NTKPrediction]
    ntk_skipped: str
    norms: Tuple[NormPrediction, ...]
    time: np.ndarray
    steps: np.ndarray
    test_loss: np.ndarray
    train_loss: np.ndarray
    layers: Dict[str, np.ndarray]
    claims: Tuple[ClaimResult, ...]
    report: Optional[Path] = None
    info: Dict[str, Any] = field(default_factory=dict)
    test_outputs: Optional[np.ndarray] = None

    @property
    def verdicts(self) -> Dict[str, int]:
        """``{verdict: count}`` over the non-driven claims."""
        return verdict_counts(self.claims)


def cost_line(model, data, settings: Settings) -> str:
    """One line: sizes and the work ``compare`` will do (printed by the CLI before any compute)."""
    import jax

    n_params = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(model.params))
    members = settings.seeds * len(settings.weight_decays)
    return (f"{model.name}: {n_params} parameters, N={data.n_train} train / M={data.n_test} test, K={data.out_dim}; "
            f"kernels: {settings.ntk_seeds} empirical NTK(s) + {settings.nngp_samples} NNGP samples; "
            f"training: {members} networks ({settings.seeds} seeds x {len(settings.weight_decays)} weight decays) "
            f"x {settings.steps} steps ({settings.optimizer}, η={settings.learning_rate:g}), "
            f"{settings.steps // settings.eval_every + 1} logs")


#: test points whose outputs are logged at every logged time
PROBE_MAX = 256


def _ntk_applies(structure: Structure, settings: Settings, has_init: bool) -> str:
    """Empty string when the NTK prediction applies, else the reason."""
    if TheoryKind.NTK_L2_FLOW not in structure.theories:
        return "structure: " + structure.reason
    if settings.optimizer != "gd" or settings.batch_size is not None:
        return (f"the NTK prediction is for full-batch GD on the MSE (docs/theory.md §2.4); this run uses "
                f"optimizer={settings.optimizer!r}, batch_size={settings.batch_size}")
    if not has_init:
        return "model.init is needed for the Monte-Carlo NNGP (give init= to the adapter)"
    return ""


def prepare(model, data, *, params=None, groups=None, out_dir=None, overwrite: bool = False, **options):
    """Validate everything (no compute): ``(UserModel, Dataset, Settings, out_dir Path or None)``."""
    m = as_model(model, params)
    ds = as_dataset(data)
    check_targets(m, ds)
    settings = check_settings(n_train=ds.n_train, **options)
    if m.init is None:
        raise ValueError("model: seeds need fresh initialisations: give the adapter init= (init(key) -> params)")
    if groups is not None and not isinstance(groups, Mapping):
        raise TypeError("groups: expected a mapping from group name to leaf paths")
    if settings.weight_decay_mask is not None:
        import jax

        from ..train.regularizers import mask_from_patterns

        if not any(jax.tree_util.tree_leaves(mask_from_patterns(list(settings.weight_decay_mask))(m.params))):
            paths = ["/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in p)
                     for p, _ in jax.tree_util.tree_flatten_with_path(m.params)[0]]
            raise ValueError(f"weight_decay_mask: {list(settings.weight_decay_mask)} match no parameter array; "
                             f"arrays are {paths}")
    out = check_out_dir(out_dir, overwrite)
    return m, ds, settings, out


def compare(model, data, *, weight_decays: Sequence[float], learning_rate: float, steps: int, seeds: int = 8,
            optimizer: str = "gd", params=None, groups: Optional[Mapping[str, Sequence[str]]] = None,
            weight_decay_mask: Optional[Sequence[str]] = None, budgets: Optional[Sequence[int]] = None,
            batch_size: Optional[int] = None, eval_every: Optional[int] = None, ntk_seeds: int = 4,
            nngp_samples: int = 256, dtype: str = "float32", tolerance: float = 0.1, level: float = 0.9,
            noise_steps: Optional[int] = None, out_dir=None, overwrite: bool = False,
            progress: bool = False) -> CompareResult:
    """Predict and measure a user's model (module docstring); returns a frozen :class:`CompareResult`.

    ``model``: a :class:`widelimit.models.UserModel` or anything :func:`widelimit.models.as_model` accepts
    (with ``params``); it needs ``init(key)`` for seeds. ``data``: a :class:`widelimit.data.Dataset`, a dict
    or the tuple ``(x_train, y_train, x_test, y_test)``, targets ``(n, K)``. ``weight_decays`` λ (> 0),
    ``learning_rate`` η, ``steps`` T, ``seeds``, ``optimizer`` (one of ``widelimit.train.OPTIMIZERS``),
    ``weight_decay_mask`` (glob patterns over ``"layer/array"`` paths, None = all), ``budgets`` (step budgets
    for λ_opt; default ``(steps,)``), ``groups`` (``{name: [leaf paths]}`` for structure and per-group
    logs; default one group per leaf). ``out_dir``: where the report goes (checked before any compute).
    """
    t0 = _time.perf_counter()
    m, ds, s, out = prepare(model, data, params=params, groups=groups, out_dir=out_dir, overwrite=overwrite,
                            weight_decays=weight_decays, learning_rate=learning_rate, steps=steps, seeds=seeds,
                            optimizer=optimizer, budgets=budgets, weight_decay_mask=weight_decay_mask,
                            batch_size=batch_size, eval_every=eval_every, ntk_seeds=ntk_seeds,
                            nngp_samples=nngp_samples, dtype=dtype, tolerance=tolerance, level=level,
                            noise_steps=noise_steps)
    info: Dict[str, Any] = {"cost": cost_line(m, ds, s)}
    bar = _Phases(progress)
    bar.start("structure")
    structure = analyse_structure(m, sample_inputs(ds.x_train), groups=groups)
    info["structure_s"] = _time.perf_counter() - t0
    skipped = _ntk_applies(structure, s, m.init is not None)
    kernels = None
    if not skipped:
        bar.start("kernels (empirical NTK, Monte-Carlo NNGP)")
        t1 = _time.perf_counter()
        kernels = measure_kernels(m, ds, s, progress=progress)
        info["kernels_s"] = _time.perf_counter() - t1
    bar.start(f"training {s.seeds * len(s.weight_decays)} networks")
    t1 = _time.perf_counter()
    run = train_model(m, ds, s, structure)
    info["train_s"] = _time.perf_counter() - t1
    bar.start("predictions and claims")
    time_, steps_, test_loss, train_loss, layers, outputs = run
    claims = []
    ntk = None
    if kernels is not None:
        t1 = _time.perf_counter()
        ntk = ntk_prediction(kernels, ds, structure.degree, s, time_, name=m.name)
        claims += ntk_claims(ntk, test_loss, time_, s, name=m.name)
        info["predict_s"] = _time.perf_counter() - t1
    norms = []
    early = steps_ <= s.noise_steps
    for g in structure.scale_invariant_groups:
        key = f"grad_norm_unit/{g.name}"
        if key not in layers:
            continue
        G = np.mean(layers[key][:, :, early] ** 2, axis=(0, 2))            # (P,)
        size = int(sum(int(np.prod(sh)) for sh in g.shapes))
        norms.append(norm_prediction(g.name, size, g.shapes[0], G, s, OPTIMIZER_DEFAULTS[s.optimizer]))
    claims += norm_claims(norms, layers, s, name=m.name)
    info["total_s"] = _time.perf_counter() - t0
    bar.close()
    result = CompareResult(m.name, s, structure, ntk, skipped, tuple(norms), time_, steps_, test_loss, train_loss,
                           layers, tuple(claims), out, info, outputs)
    if out is not None:
        from .report import write_report

        write_report(result, out)
    return result


class _Phases:
    """A tqdm bar over the phases of :func:`compare` (on stderr; nothing when disabled)."""

    def __init__(self, enabled: bool):
        self.bar = None
        if enabled:
            import sys

            from tqdm.auto import tqdm
            self.bar = tqdm(total=4, file=sys.stderr, desc="compare", leave=False)
        self.n = 0

    def start(self, what: str) -> None:
        if self.bar is not None:
            if self.n:
                self.bar.update(1)
            self.bar.set_description(f"compare: {what}")
        self.n += 1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train_model(model, data, settings: Settings, structure: Structure):
    """Train ``seeds × weight_decays`` networks with widelimit's loop; arrays shaped (seeds, P, T)."""
    from ..train import RunConfig, train_ensemble
    from ..train.config import user_arch

    groups = {g.name: list(g.paths) for g in structure.groups}
    si = [g.name for g in structure.groups if g.invariance is not Invariance.NONE]
    cfg = RunConfig(arch=user_arch(model.name), data=data.name, optimizer=settings.optimizer,
                    learning_rate=settings.learning_rate, weight_decay=0.0,
                    weight_decay_mask=None if settings.weight_decay_mask is None else list(settings.weight_decay_mask),
                    batch_size=settings.batch_size, steps=settings.steps, eval_every=settings.eval_every,
                    dtype=settings.dtype, probe_size=min(data.n_test, PROBE_MAX))
    S, P = settings.seeds, len(settings.weight_decays)
    ens = train_ensemble(cfg, seeds=list(range(S)), weight_decays=list(settings.weight_decays), data=data,
                         model=model, groups=groups, scale_invariant=si)
    met, lay = ens.stacked("metrics"), ens.stacked("layers")
    shape = lambda a: np.asarray(a, np.float64).reshape(S, P, -1)  # noqa: E731  (members are seed-major)
    probe = np.stack([r.probe["outputs"] for r in ens.runs]).astype(np.float64)       # (S*P, T, M', K)
    return (np.asarray(met["time"][0], np.float64), np.asarray(met["step"][0]), shape(met["test_loss"]),
            shape(met["train_loss"]), {k: shape(v) for k, v in lay.items()},
            probe.reshape((S, P) + probe.shape[1:]))


__all__ = ["compare", "CompareResult", "prepare", "cost_line", "train_model"]
