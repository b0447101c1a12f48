"""Study ``biases``: finite MLPs WITH biases (ReLU, several ``b_std``) and erf MLPs trained by full-batch GD
with L2 against the infinite-width Volterra prediction (docs/theory.md §5), and how biases move t* and
λ_opt compared with the bias-free (homogeneous) network.

A. Width convergence. For each net, width and seed: real GD (float64, step η, ``t = η·steps``) on
   ``loss + (λ/2)||θ||²`` from θ0, and the prediction
   :class:`~widelimit.dynamics.volterra_separable.SeparableCrossScaleFlow` started from the SAME net's
   ``g(x; s) = f(x; s θ0)`` (so the random initial function is not part of the error). Error of the learned
   change ``e = ||Δf_measured − Δf_predicted|| / ||Δf_measured||`` over train and test points; the rate is
   the slope of log(seed-mean e) against log(width), with a bootstrap interval over seeds. Claim: slope
   −1/2 (finite-width kernel fluctuations are O(width^-1/2)), absolute tolerance :data:`TOLERANCES`.
B. t* and λ_opt. At one width, test-MSE curves over a λ grid (η·steps), seed means; predicted by the
   Volterra flow per seed (each seed's g), measured from training; claims on t* per λ and λ_opt at a
   budget; the table shows the bias-free net next to the nets with biases (predicted and measured).

Data: Gaussian inputs (d = 4), targets ``tanh(2 x·w/√d)``; NTK parameterisation, one hidden layer.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from ..evidence import Claim, bootstrap_seeds, fit_power_law
from ..tables import Table
from .claims import judge_all, lambda_opt_interval, tstar_interval, tstar_of_mean
from .common import Stopwatch, check_out_dir, check_provenance, check_size, write_report

NAME = "biases"
TOLERANCES = {"rate": 0.25, "t_star": 0.15, "lambda_opt": 0.30, "paired": 0.05, "shift": 0.05}

_NETS = {"relu_b0.5": ("relu", 0.5, 1.4), "relu_b1.0": ("relu", 1.0, 1.4), "erf_b0.5": ("erf", 0.5, 1.0),
         "relu_nobias": ("relu", None, 1.4)}

SIZES: Dict[str, Dict[str, Any]] = {
    "smoke": dict(n_train=8, n_test=8, widths=[256, 1024], seeds=list(range(4)), nets_a=["relu_b0.5"],
                  lam_a=0.3, eta=0.02, t_a=2.0, width_b=512, nets_b=["relu_nobias", "relu_b1.0"],
                  lams_b=[0.15], t_b=10.0, n_log=20, budget=5.0),
    "quick": dict(n_train=12, n_test=16, widths=[256, 512, 1024, 2048], seeds=list(range(8)),
                  nets_a=["relu_b0.5", "relu_b1.0", "erf_b0.5"], lam_a=0.3, eta=0.01, t_a=3.0, width_b=1024,
                  nets_b=["relu_nobias", "relu_b0.5", "relu_b1.0"], lams_b=list(np.geomspace(0.03, 0.3, 5)),
                  t_b=60.0, n_log=40, budget=8.0),
    "medium": dict(n_train=16, n_test=32, widths=[256, 512, 1024, 2048, 4096], seeds=list(range(8)),
                   nets_a=["relu_b0.5", "relu_b1.0", "erf_b0.5"], lam_a=0.3, eta=0.005, t_a=3.0, width_b=2048,
                   nets_b=["relu_nobias", "relu_b0.5", "relu_b1.0"], lams_b=list(np.geomspace(0.03, 0.3, 7)),
                   t_b=60.0, n_log=60, budget=8.0),
}
SIZES["full"] = dict(SIZES["medium"], seeds=list(range(16)), widths=[256, 512, 1024, 2048, 4096, 8192])


def _data(p):
    rng = np.random.default_rng(0)
    d = 4
    x, xt = rng.normal(size=(p["n_train"], d)), rng.normal(size=(p["n_test"], d))
    w = rng.normal(size=d)
    return x, np.tanh(2 * x @ w / np.sqrt(d))[:, None], xt, np.tanh(2 * xt @ w / np.sqrt(d))[:, None]


def _spec(net: str, width: int):
    from ..arch import MLP
    act, b, W = _NETS[net]
    return MLP(depth=2, width=width, activation=act, b_std=b, W_std=W)


def _train(spec, seeds, lams, x, y, xt, eta, t_end, n_log):
    """GD with L2 (float64), vmapped over (λ, seed). Returns theta0 per seed (callable g), outputs at the
    logged times: train (n_lam, n_seed, n_log, N), test (n_lam, n_seed, n_log, M), and the log times."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    from .._x64 import x64
    from ..nets import apply, init_params

    steps = int(round(t_end / eta))
    every = max(1, steps // n_log)
    n_rec = steps // every
    with x64():
        th0 = []
        for s in seeds:
            flat, unravel = ravel_pytree(init_params(spec, jax.random.PRNGKey(int(s)), (x.shape[1],),
                                                     dtype=jnp.float64))
            th0.append(flat)
        th0 = jnp.stack(th0)
        f = lambda th, a: apply(spec, unravel(th), a)[:, 0]                       # noqa: E731
        xj, yj, xtj = jnp.asarray(x), jnp.asarray(y[:, 0]), jnp.asarray(xt)

        def one(th, lam):
            grad = jax.grad(lambda t: jnp.sum((f(t, xj) - yj) ** 2) / (2 * yj.size) + 0.5 * lam * jnp.sum(t ** 2))

            def block(th, _):
                th = jax.lax.fori_loop(0, every, lambda i, t: t - eta * grad(t), th)
                return th, (f(th, xj), f(th, xtj))
            return jax.lax.scan(block, th, None, length=n_rec)[1]

        run = jax.jit(jax.vmap(jax.vmap(one, (0, None)), (None, 0)))
        tr, te = run(th0, jnp.asarray(lams, dtype=jnp.float64))
        g = jax.jit(jax.vmap(lambda th, s, a: f(s * th, a), (None, 0, None)))

        def gfun(i):
            def initial(s):                         # g(x; s) = f(x; s theta0) of seed i, float64
                with x64():
                    sj = jnp.asarray(s, dtype=jnp.float64)
                    return np.asarray(g(th0[i], sj, xj))[:, :, None], np.asarray(g(th0[i], sj, xtj))[:, :, None]
            return initial
        f0 = np.asarray(jax.vmap(f, (0, None))(th0, xj)), np.asarray(jax.vmap(f, (0, None))(th0, xtj))
    return gfun, f0, np.asarray(tr), np.asarray(te), eta * every * np.arange(1, n_rec + 1)


def _flow(net, x, y, xt):
    from ..dynamics.volterra_separable import SeparableCrossScaleFlow
    return SeparableCrossScaleFlow(_spec(net, 1), x, y, x_test=xt, rtol=1e-6)


def width_convergence(p, x, y, xt) -> Dict[str, Any]:
    """Part A: per net, errors (n_seeds, n_widths) of the learned change and the fitted slope."""
    out = {}
    for net in p["nets_a"]:
        flow = _flow(net, x, y, xt)
        err = np.empty((len(p["seeds"]), len(p["widths"])))
        for k, width in enumerate(p["widths"]):
            gfun, (f0, f0t), tr, te, times = _train(_spec(net, width), p["seeds"], [p["lam_a"]], x, y, xt,
                                                    p["eta"], p["t_a"], 1)
            for i in range(len(p["seeds"])):
                pred = flow.solve(p["lam_a"], [times[-1]], initial=gfun(i))
                meas = np.concatenate([tr[0, i, -1] - f0[i], te[0, i, -1] - f0t[i]])
                pr = np.concatenate([pred.train[0, :, 0] - f0[i], pred.test[0, :, 0] - f0t[i]])
                err[i, k] = np.linalg.norm(meas - pr) / np.linalg.norm(meas)
        out[net] = {"errors": err, "slope": fit_power_law(p["widths"], err.mean(axis=0)).slope,
                    "fit_error": flow.fit_error}
    return out


def bias_effect(p, x, y, xt, yt) -> Dict[str, Any]:
    """Part B: per net, predicted and measured test-MSE curves (n_lam, n_seeds, n_log) at width_b."""
    out = {}
    for net in p["nets_b"]:
        flow = _flow(net, x, y, xt)
        gfun, _, tr, te, times = _train(_spec(net, p["width_b"]), p["seeds"], p["lams_b"], x, y, xt, p["eta"],
                                        p["t_b"], p["n_log"])
        meas = np.mean((te - yt[:, 0]) ** 2, axis=-1) / 2
        pred = np.empty_like(meas)
        for j, lam in enumerate(p["lams_b"]):
            for i in range(len(p["seeds"])):
                o = flow.solve(lam, times, initial=gfun(i))
                pred[j, i] = np.mean((o.test[:, :, 0] - yt[:, 0]) ** 2, axis=-1) / 2
        out[net] = {"measured": meas, "predicted": pred, "time": times}
    return out


def claims_from_data(data: Dict[str, Any], size: str) -> list:
    """Judged claims from the stored data alone (intervals: bootstrap over seeds)."""
    pairs = []
    widths = np.asarray(data["widths"], float)
    for net, r in data["width"].items():
        err = np.asarray(r["errors"], float)
        iv = bootstrap_seeds(err, lambda e: fit_power_law(widths, e.mean(axis=0), strict=False).slope)
        pairs.append((Claim(f"{net}: rate of the learned-change error", "d log e / d log width", -0.5,
                            TOLERANCES["rate"], relative=False, study=NAME, size=size,
                            note="O(width^-1/2) kernel fluctuations"), iv))
    lams = np.asarray(data["lams_b"], float)
    ratio = lambda a: tstar_of_mean(time, a[0])[0] / tstar_of_mean(time, a[1])[0]   # noqa: E731
    for net, r in data["bias"].items():
        time, meas, pred = (np.asarray(r[k], float) for k in ("time", "measured", "predicted"))
        for j, lam in enumerate(lams):     # paired: the same seeds' g in theory and training
            if tstar_of_mean(time, pred[j])[2] == "interior":
                pairs.append((Claim(f"{net}: t* measured/predicted at λ = {lam:.3g}", "ratio of seed-mean t*",
                                    1.0, TOLERANCES["paired"], study=NAME, size=size,
                                    note="paired over seeds (each seed's own g)"),
                              bootstrap_seeds((meas[j], pred[j]), ratio)))
    nets = list(data["bias"])
    if "relu_nobias" in nets:
        base = data["bias"]["relu_nobias"]
        for net in (n for n in nets if n != "relu_nobias"):
            r = data["bias"][net]
            time = np.asarray(r["time"], float)
            j = len(lams) // 2
            pm = [np.asarray(x[k], float)[j] for x in (r, base) for k in ("predicted",)]
            mm = [np.asarray(x[k], float)[j] for x in (r, base) for k in ("measured",)]
            shift = tstar_of_mean(time, pm[0])[0] / tstar_of_mean(time, pm[1])[0]
            pairs.append((Claim(f"{net} vs relu_nobias: t* ratio at λ = {lams[j]:.3g}", "t*(biases) / t*(no biases)",
                                float(shift), TOLERANCES["shift"], study=NAME, size=size,
                                note="how biases move t* (predicted) vs measured"), bootstrap_seeds(tuple(mm), ratio)))
    for net, r in data["bias"].items():
        time, meas, pred = (np.asarray(r[k], float) for k in ("time", "measured", "predicted"))
        for j, lam in enumerate(lams):
            t_pred, _, where = tstar_of_mean(time, pred[j])
            if where != "interior":
                continue
            pairs.append((Claim(f"{net}: t* at λ = {lam:.3g}", "t* of the seed-mean test MSE [η·steps]",
                                float(t_pred), TOLERANCES["t_star"], study=NAME, size=size),
                          tstar_interval(time, meas[j])))
        if len(lams) < 3:
            continue
        k = int(np.argmin(np.abs(time - data["budget"])))
        lam_pred = lambda_opt_interval(lams, pred[:, :, k]).estimate
        if lams[0] < lam_pred < lams[-1]:
            pairs.append((Claim(f"{net}: λ_opt at t = {time[k]:.3g}", "argmin over λ of the seed-mean test MSE",
                                float(lam_pred), TOLERANCES["lambda_opt"], study=NAME, size=size),
                          lambda_opt_interval(lams, meas[:, :, k])))
    return judge_all(pairs)


def run(size: str = "quick", out_dir="validation/quick", progress: bool = True, resume: bool = True):
    """Run the study at ``size``; write ``biases.md``/``.json`` into ``out_dir``; return the .md path."""
    size = check_size(size)
    out = check_out_dir(out_dir)
    check_provenance(out)
    sw = Stopwatch()
    p = SIZES[size]
    x, y, xt, yt = _data(p)
    wc = width_convergence(p, x, y, xt)
    be = bias_effect(p, x, y, xt, yt)
    data = {"widths": p["widths"], "lams_b": list(map(float, p["lams_b"])), "budget": p["budget"],
            "width": {k: {"errors": v["errors"].tolist(), "slope": v["slope"], "fit_error": v["fit_error"]}
                      for k, v in wc.items()},
            "bias": {k: {kk: np.asarray(vv).tolist() for kk, vv in v.items()} for k, v in be.items()},
            "params": {k: (list(map(float, v)) if isinstance(v, list) and not isinstance(v[0], str) else v)
                       for k, v in p.items()}}
    claims = claims_from_data(data, size)
    ta = Table(["net", *[f"e at width {w}" for w in p["widths"]], "slope", "kernel-fit error"],
               [[k, *[f"{e:.3g}" for e in v["errors"].mean(axis=0)], f"{v['slope']:.2f}", f"{v['fit_error']:.1e}"]
                for k, v in wc.items()])
    rows = []
    for net, r in be.items():
        for j, lam in enumerate(p["lams_b"]):
            tp, lp, _ = tstar_of_mean(r["time"], r["predicted"][j])
            tm, lm, _ = tstar_of_mean(r["time"], r["measured"][j])
            rows.append([net, f"{lam:.3g}", f"{tp:.3g}", f"{tm:.3g}", f"{lp:.4g}", f"{lm:.4g}"])
    tb = Table(["net", "λ", "t* predicted", "t* measured", "min test MSE predicted", "min test MSE measured"], rows)
    sections = [("A. Width convergence of the learned change", [
        f"λ = {p['lam_a']}, t = {p['t_a']} η·steps, η = {p['eta']}, {len(p['seeds'])} seeds; e = relative error "
        "of f_t − f_0 (train and test points) against the Volterra prediction started from the same net's "
        "g(x; s) = f(x; sθ0). Seed means:", ta]),
        ("B. Biases and t*, λ_opt", [f"width {p['width_b']}, {len(p['seeds'])} seeds, seed-mean test MSE; "
                                     "relu_nobias is the homogeneous (L = 2) net.", tb])]
    return write_report(NAME, out, title="Biases and erf: finite GD with L2 vs the Volterra prediction",
                        sections=sections, size=size, data=data, elapsed_s=sw.elapsed, claims=claims)


__all__ = ["run", "claims_from_data", "SIZES", "NAME", "TOLERANCES", "width_convergence", "bias_effect"]
