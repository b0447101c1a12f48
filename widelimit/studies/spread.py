"""Study 7: the predicted spread over seeds against many cheap seeds of wide finite networks
(docs/theory.md §3.5).

Setup: sklearn digits 3 vs 8 (±1 targets, one output, MSE), bias-free ReLU MLP (L = depth, NTK
parameterisation), float32. Theory: :class:`~widelimit.dynamics.spread.LossSpread` from the analytic NTK and
the NNGP (full test-test block), GD at the run's learning rate; predictions from hyper-parameters and kernels
alone (:mod:`widelimit.predict.spread`).

* Part A (initialisation, as in issue 16): the per-seed test MSE at t = 0 of ``seeds_init`` networks of
  width ``width_init`` (initialised exactly as ``widelimit.train`` does, vmapped over seeds; no training).
* Part B (along training): ``seeds`` networks of width ``width`` trained by full-batch GD with L2 at each
  weight decay (:func:`~widelimit.studies.ntk_tools.train_grid`, vmapped), per-seed test MSE at every log.

Claims (declared before measuring): the per-seed standard deviation and median of the test MSE at t = 0,
and the standard deviation at the end of training per weight decay (relative tolerances in
:data:`TOLERANCES`, bootstrap over seeds); and the **calibration**: over all configurations (t = 0, and
every logged t > 0 at every weight decay), disjoint groups of n seeds give n-seed mean test MSEs, and the
fraction of them inside the predicted central 80% interval for n seeds must be 0.8 (absolute tolerance).
Its interval is a bootstrap over the groups (a group's values at different times and weight decays share
its seeds, so they are resampled together); the Clopper-Pearson interval that would hold if every value
were independent is given in the note.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import numpy as np

from ..evidence import Claim, Interval, bootstrap_interval, bootstrap_seeds, judge
from ..plots import Panel, Series, plot_panels
from ..tables import Table
from .common import Figure, PointCache, Stopwatch, check_out_dir, check_provenance, check_size, write_report
from .ntk_tools import dataset_kernels, train_grid

NAME = "spread"
LEVEL = 0.8
#: relative tolerances of the spread claims (finite width changes the spread at O(1/sqrt(width)) through
#: the random initial kernel; the NNGP itself is exact only at infinite width) and the absolute tolerance of
#: the calibration fraction. The mean test MSE at t = 0 of a bias-free ReLU net is exact at any width
#: (E f(x)^2 = K(x, x) layer by layer), so its tolerance is 0 beyond the predicted n-seed interval.
TOLERANCES = {"std_init": 0.15, "median_init": 0.10, "std_end": 0.25, "calibration": 0.10, "mean_init": 0.0,
              "mean_end": 0.05}
CLASSES = [3, 8]

SIZES: Dict[str, Dict[str, Any]] = {
    "smoke": dict(n_train=12, n_test=16, depth=3, width_init=256, seeds_init=24, width=128, seeds=16,
                  weight_decays=[0.02, 0.1], eta=0.2, steps=10, eval_every=5, n_init=4, n_train_groups=4),
    # part A is issue 16's measurement (200 train / 150 test split, width 1024, 64 seeds)
    "quick": dict(n_train=48, n_train_init=200, n_test=150, depth=3, width_init=1024, seeds_init=64,
                  width=512, seeds=48, weight_decays=[0.01, 0.05], eta=0.2, steps=100, eval_every=20,
                  n_init=8, n_train_groups=4),
    "medium": dict(n_train=100, n_train_init=200, n_test=150, depth=3, width_init=2048, seeds_init=256,
                   width=1024, seeds=128, weight_decays=[0.003, 0.01, 0.05], eta=0.2, steps=300,
                   eval_every=30, n_init=8, n_train_groups=8),
    "full": dict(n_train=200, n_train_init=200, n_test=150, depth=3, width_init=4096, seeds_init=1024,
                 width=4096, seeds=512, weight_decays=[0.001, 0.003, 0.01, 0.05], eta=0.2, steps=1000,
                 eval_every=50, n_init=8, n_train_groups=8),
}


def _initial_test_losses(cfg, ds, seeds) -> np.ndarray:
    """Per-seed test MSE at t = 0 of the networks ``widelimit.train`` starts from (vmapped over seeds)."""
    import jax
    import jax.numpy as jnp

    from ..nets import apply
    from ..train.loop import Program, precision

    c = cfg.canonical()
    with precision(c.dtype):
        prog = Program(c, ds)
        arr = prog.arrays(ds)
        keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
        f = jax.jit(jax.vmap(lambda k: apply(prog.spec, prog.init_params(k), arr["x_test"])))(keys)
        f = np.asarray(f, np.float64)                                   # (S, M, K)
    y = np.asarray(ds.y_test, np.float64).reshape(1, f.shape[1], -1)
    return 0.5 * np.mean((f - y) ** 2, axis=(1, 2))


def _groups(values: np.ndarray, n: int) -> np.ndarray:
    """Means of disjoint groups of ``n`` consecutive seeds along axis 0 (trailing seeds dropped)."""
    g = values.shape[0] // n
    return values[:g * n].reshape((g, n) + values.shape[1:]).mean(axis=1)


def run(size: str = "quick", out_dir="validation/quick", progress: bool = True, resume: bool = True) -> Path:
    """Run the spread study at ``size``; write ``spread.md``/``.json``/``.png`` into ``out_dir``."""
    size = check_size(size)
    out = check_out_dir(out_dir)
    check_provenance(out)
    sw = Stopwatch()
    p = SIZES[size]
    from ..arch import MLP
    from ..data import load_dataset
    from ..dynamics.spread import LossSpread
    from ..kernels import kernel_fn
    from ..predict.spread import loss_spread
    from ..train import RunConfig

    cache = PointCache.for_study(NAME, size, out, resume=resume)
    eta, L = float(p["eta"]), int(p["depth"])
    spec0 = MLP(depth=L, width=p["width"], out_dim=1)

    def problem(n_train):
        options = dict(classes=CLASSES, targets="pm1", n_train=int(n_train), n_test=p["n_test"], seed=0)
        d = load_dataset("digits", **options)
        key = {"spec": spec0.replace(width=1).to_dict(), "data": options}
        dk = dataset_kernels(spec0, d, cache=cache, key=key)
        kxx = cache.get_or_compute({"what": "nngp_test_test", **key}, lambda: (
            {"k": {"kxx": np.asarray(kernel_fn(spec0)(d.x_test, None).nngp, np.float64)}}, {})).streams["k"]["kxx"]
        return options, d, LossSpread.from_kernels(dk, nngp_test_test=kxx, learning_rate=eta)

    data_options, ds, model = problem(p["n_train"])
    lams = [float(x) for x in p["weight_decays"]]

    # -- part A: initialisation (its own split: n_train_init training points, as in issue 16) ----------
    opts_a, ds_a, model_a = problem(p.get("n_train_init", p["n_train"]))
    cfg_a = RunConfig(arch=spec0.replace(width=int(p["width_init"])), data="digits", data_options=opts_a,
                      optimizer="gd", learning_rate=eta, weight_decay=lams[0], steps=1, eval_every=1,
                      dtype="float32")
    seeds_a = list(range(int(p["seeds_init"])))
    init = cache.get_or_compute({"what": "initial_test_mse", "config": cfg_a.to_dict(), "seeds": seeds_a},
                                lambda: ({"x": {"mse": _initial_test_losses(cfg_a, ds_a, seeds_a)}}, {})
                                ).streams["x"]["mse"]
    one = loss_spread(model_a, lams[0], [0.0], seeds=1, level=LEVEL)
    n_a = int(p["n_init"])
    grp = loss_spread(model_a, lams[0], [0.0], seeds=n_a, level=LEVEL)
    pred_std0 = float(np.sqrt(model_a.test_loss_variance(lams[0], [0.0])[0]))
    kxx_eig = np.linalg.eigvalsh(model_a._rx @ model_a._rx.T)            # test-test NNGP spectrum
    top_share = float(kxx_eig[-1] / kxx_eig.sum())

    # -- part B: along training ----------------------------------------------------------------------
    cfg_b = RunConfig(arch=spec0, data="digits", data_options=data_options, optimizer="gd", learning_rate=eta,
                      weight_decay=lams[0], steps=int(p["steps"]), eval_every=int(p["eval_every"]),
                      probe_size=0, dtype="float32")
    grid = train_grid(cache, cfg_b, seeds=list(range(int(p["seeds"]))), weight_decays=lams, progress=progress,
                      matmul_precision="highest")
    times = eta * grid.step.astype(np.float64)
    meas = grid.metrics["test_loss"]                                  # (P, S, T)
    n_b = int(p["n_train_groups"])
    pred_std = np.stack([np.sqrt(model.test_loss_variance(lam, times)) for lam in lams])
    pred_mean = np.stack([model.test_loss(lam, times) for lam in lams])
    spreads = [loss_spread(model, lam, times, seeds=n_b, level=LEVEL) for lam in lams]

    # -- calibration: one unit per disjoint group of seeds; its values at every configuration -----------
    units_in, units_n = [], []
    for g in _groups(init[:, None], n_a)[:, 0]:
        units_in.append(float(grp.low[0] <= g <= grp.high[0]))
        units_n.append(1.0)
    gb = _groups(np.moveaxis(meas, 1, 0), n_b)                         # (G, P, T)
    keep = times > 0
    for g in gb:
        ins = [(s.low[keep] <= g[i][keep]) & (g[i][keep] <= s.high[keep]) for i, s in enumerate(spreads)]
        units_in.append(float(np.sum(ins)))
        units_n.append(float(np.size(ins)))
    units_in, units_n = np.array(units_in), np.array(units_n)
    frac = float(units_in.sum() / units_n.sum())
    from scipy.stats import binomtest
    cp = binomtest(int(round(units_in.sum())), int(units_n.sum()), LEVEL).proportion_ci(0.9)

    claims = [
        judge(Claim("t = 0: per-seed std of the test MSE", "std over seeds [MSE]", pred_std0,
                    TOLERANCES["std_init"], study=NAME, size=size,
                    note=f"width {p['width_init']}, {len(seeds_a)} seeds"), bootstrap_interval(init, np.std)),
        judge(Claim("t = 0: median per-seed test MSE", "median over seeds [MSE]", float(one.median[0]),
                    TOLERANCES["median_init"], study=NAME, size=size,
                    note=f"width {p['width_init']}, {len(seeds_a)} seeds"), bootstrap_interval(init, np.median)),
    ]
    # the measured all-seed mean against the predicted distribution of a mean over that many seeds (a point
    # against the predicted 90% interval: the seed noise is on the theory's side here, not counted twice)
    every = [(f"t = 0: {len(seeds_a)}-seed mean test MSE", model_a, lams[0], 0.0, init, TOLERANCES["mean_init"],
              f"width {p['width_init']}")]
    every += [(f"end of training, λ = {lam:g}: {meas.shape[1]}-seed mean test MSE", model, lam, float(times[-1]),
               meas[i, :, -1], TOLERANCES["mean_end"], f"width {p['width']}, t = {times[-1]:g}")
              for i, lam in enumerate(lams)]
    for name, mdl, lam, t_c, vals, tol, note in every:
        band = loss_spread(mdl, lam, [t_c], seeds=int(vals.size), level=0.9)
        est = float(np.mean(vals))
        claims.append(judge(Claim(name, "mean over seeds [MSE]", float(band.mean[0]), tol, study=NAME, size=size,
                                  predicted_interval=band.interval(0),
                                  note=note + f"; predicted: 90% interval of a {vals.size}-seed mean"),
                            Interval(est, est, est, 0.9, int(vals.size), "the measured mean (a point)")))
    for i, lam in enumerate(lams):
        claims.append(judge(Claim(f"end of training, λ = {lam:g}: per-seed std of the test MSE",
                                  "std over seeds [MSE]", float(pred_std[i, -1]), TOLERANCES["std_end"],
                                  study=NAME, size=size, note=f"width {p['width']}, t = {times[-1]:g}"),
                            bootstrap_interval(meas[i, :, -1], np.std)))
    if units_in.size >= 2:
        civ = bootstrap_seeds((units_in, units_n), lambda ab: ab[0].sum() / ab[1].sum())
        claims.append(judge(Claim(f"calibration: n-seed means inside the predicted {LEVEL:.0%} interval",
                                  "fraction", LEVEL, TOLERANCES["calibration"], relative=False, study=NAME,
                                  size=size, note=f"{int(units_n.sum())} values in {units_n.size} seed groups; "
                                  f"Clopper-Pearson 90% if independent [{cp.low:.3f}, {cp.high:.3f}]"), civ))

    # -- tables and plot -------------------------------------------------------------------------------
    q = np.quantile(init, [0.1, 0.5, 0.9])
    ga = _groups(init[:, None], n_a)[:, 0]
    init_tab = Table(["quantity", "measured", "predicted"],
                     title=f"Test MSE at initialisation, {ds_a.n_test} test points, width {p['width_init']}, "
                           f"{len(seeds_a)} seeds",
                     notes=["predicted: the distribution over f0 ~ NNGP (exact mean and std; quantiles of its "
                            "generalised chi-square)", f"{n_a}-seed means: disjoint groups of the measured seeds",
                            f"the top eigenvalue of the test-test NNGP holds {top_share:.0%} of its trace: the "
                            "per-seed loss is a skewed generalised chi-square"])
    init_tab.add_row(["mean", float(init.mean()), float(one.mean[0])])
    init_tab.add_row(["std", float(init.std()), pred_std0])
    init_tab.add_row(["10% / 50% / 90%", " / ".join(f"{v:.3g}" for v in q),
                      f"{one.low[0]:.3g} / {one.median[0]:.3g} / {one.high[0]:.3g}"])
    init_tab.add_row(["min – max", f"{init.min():.3g} – {init.max():.3g}", ""])
    init_tab.add_row([f"{n_a}-seed mean, 10% – 90%", f"{np.quantile(ga, 0.1):.3g} – {np.quantile(ga, 0.9):.3g}"
                      if ga.size >= 2 else "n/a", f"{grp.low[0]:.3g} – {grp.high[0]:.3g}"])
    train_tab = Table(["λ", "t", "mean measured", "mean predicted", "std measured", "std predicted",
                       f"{n_b}-seed 80% interval", f"{n_b}-seed means inside"],
                      title=f"Test MSE along training (width {p['width']}, {len(grid.seeds)} seeds, GD η = {eta:g})",
                      units={"λ": "1/(η·steps)", "t": "η·steps"})
    for i, lam in enumerate(lams):
        for j, t in enumerate(times):
            inside = np.mean((spreads[i].low[j] <= gb[:, i, j]) & (gb[:, i, j] <= spreads[i].high[j]))
            train_tab.add_row([lam, t, float(meas[i, :, j].mean()), float(pred_mean[i, j]),
                               float(meas[i, :, j].std()), float(pred_std[i, j]),
                               f"[{spreads[i].low[j]:.3g}, {spreads[i].high[j]:.3g}]", float(inside)])
    srt = np.sort(init)
    pan0 = Panel([Series(srt, (np.arange(srt.size) + 0.5) / srt.size, "o", "measured (per seed)", "C0"),
                  Series(_chi_cdf_x(model_a, lams[0]), np.linspace(0.005, 0.995, 199), "-", "predicted", "k")],
                 "test MSE at t = 0", "CDF", "initialisation: per-seed test MSE", logx=True, logy=False)
    ser = []
    for i, lam in enumerate(lams):
        ser.append(Series(times[keep], meas[i][:, keep].std(0), "o", f"measured, λ = {lam:g}", f"C{i}"))
        ser.append(Series(times[keep], pred_std[i][keep], "-", None, f"C{i}"))
    pan1 = Panel(ser, "t = η·steps", "std over seeds of test MSE", "along training (lines: predicted)")
    png = plot_panels(out / f"{NAME}.png", [pan0, pan1], ncols=2)
    summary = (f"Bias-free ReLU MLP (L = {L}) on digits 3 vs 8 ({ds.n_test} test points, ±1 targets). At "
               f"initialisation (width {p['width_init']}, {len(seeds_a)} seeds, split of {ds_a.n_train} train / "
               f"{ds_a.n_test} test) the per-seed test MSE has mean "
               f"{init.mean():.3g} (predicted {one.mean[0]:.3g}), std {init.std():.3g} (predicted {pred_std0:.3g}), "
               f"median {np.median(init):.3g} (predicted {one.median[0]:.3g}). Fraction of n-seed means inside "
               f"the predicted 80% interval: {frac:.3f} over {int(units_n.sum())} values.")
    data = {"init_mse": init, "times": times, "test_loss": meas, "pred_std": pred_std, "pred_mean": pred_mean,
            "pred_low": np.stack([s.low for s in spreads]), "pred_high": np.stack([s.high for s in spreads]),
            "calibration": {"fraction": frac, "inside": units_in, "count": units_n},
            "top_eigenvalue_share": top_share,
            "params": {k: (list(v) if isinstance(v, list) else v) for k, v in p.items()}}
    return write_report(NAME, out, title="Study 7: predicted spread over seeds vs many finite networks",
                        summary=summary, sections=[("Initialisation", [init_tab]), ("Along training", [train_tab]),
                                                   ("Plot", [Figure(png.name, "Left: CDF of the per-seed test MSE "
                                                                "at t = 0. Right: std over seeds along training.")])],
                        size=size, data=data, elapsed_s=sw.elapsed, cache=cache, claims=claims)


def _chi_cdf_x(model, lam: float) -> np.ndarray:
    """Quantiles (0.005 ... 0.995) of the predicted per-seed test MSE at t = 0 (for the CDF plot)."""
    w, nc, rest = model.chi_square_terms(lam, 0.0, "test")
    rng = np.random.default_rng(0)
    k = model.y_test.reshape(model.n_test, -1).shape[1]
    x = np.full(20000, rest)
    for wi, ci in zip(w, nc):
        x += wi * rng.noncentral_chisquare(k, ci, x.size)
    return np.quantile(x / (2 * model.n_test * k), np.linspace(0.005, 0.995, 199))


__all__ = ["run", "SIZES", "TOLERANCES", "NAME"]
