"""Small PNG plots of predictions and measurements (matplotlib, Agg backend, never ``plt.show``).

Figures are drawn on their own Agg canvas without pyplot, so no global matplotlib state changes and
nothing opens a window.

Every function takes arrays and an output ``path``, writes one PNG (default 120 dpi, about
6x4 inches) and returns the path. Time axes are physical time ``t = eta * steps`` unless a label says
otherwise; the functions never convert units themselves.

* :func:`plot_panels` — several :class:`Panel` axes (each a list of :class:`Series`) side by side: the
  generic multi-panel figure the validation studies draw;
* :func:`plot_l2_trajectories` — train (dashed) and test (solid) loss vs t for several λ, log axes,
  the best-test time t* of each curve marked;
* :func:`plot_tstar_vs_lambda` — t* vs λ on log axes with the least-squares power law
  ``log t* = slope * log λ + log c`` (theory ``slope = -1``; the fit is
  :func:`widelimit.evidence.fit_power_law`, re-exported here), measured and/or predicted;
* :func:`plot_lambda_opt_vs_budget` — best λ vs step budget T, predicted line and measured points;
* :func:`plot_norm_trajectories` — per-group weight norm / angular update vs steps, measured
  (solid) against the ODE prediction (dashed) and the equilibrium value (dotted);
* :func:`plot_theory_vs_measurement` — scatter of measured against predicted values with the
  identity line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .evidence import fit_power_law

PathLike = Union[str, "os.PathLike[str]"]
DPI = 120
FIGSIZE = (6.0, 4.0)


def _figure(figsize=FIGSIZE):
    """A figure on its own Agg canvas: no pyplot state, no GUI backend, nothing to ``show``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _viridis(x):
    import matplotlib
    return matplotlib.colormaps["viridis"](x)


def _line(**kw):
    from matplotlib.lines import Line2D
    return Line2D([], [], **kw)


def _arr(name: str, x, ndim: Optional[Tuple[int, ...]] = (1,)) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be an array of numbers: {e}") from None
    if ndim is not None and a.ndim not in ndim:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndim))} dimension(s), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} must not be empty")
    return a


def _path(path: PathLike) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    p = Path(path)
    if p.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {str(p)!r}")
    return p


def _save(fig, path: Path, dpi: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, format="png")
    return path


def plot_l2_trajectories(t, lams: Sequence[float], test_loss, path: PathLike, *, train_loss=None,
                         t_star: Optional[Sequence[float]] = None, xlabel: str = "t = η·steps",
                         ylabel: str = "MSE loss", title: Optional[str] = None, logy: bool = True,
                         dpi: int = DPI) -> Path:
    """Loss trajectories for several L2 coefficients.

    ``t`` is a time grid of shape ``(T,)`` shared by all curves or ``(len(lams), T)``;
    ``test_loss``/``train_loss`` have shape ``(len(lams), T)``. One colour per λ: test solid, train
    dashed; ``t_star`` (one per λ, NaN to skip) marks the best-test time. Log-log axes (``logy=False``
    for a linear loss axis, e.g. accuracies).
    """
    lams = _arr("lams", lams)
    test = _arr("test_loss", test_loss, (2,))
    if test.shape[0] != lams.size:
        raise ValueError(f"test_loss must have one row per lambda ({lams.size}), got shape {test.shape}")
    t = _arr("t", t, (1, 2))
    if (t.shape[-1], t.shape[0] if t.ndim == 2 else test.shape[0]) != (test.shape[1], test.shape[0]):
        raise ValueError(f"t must have shape ({test.shape[1]},) or {test.shape}, got {t.shape}")
    tt = np.broadcast_to(t, test.shape)
    train = None
    if train_loss is not None:
        train = _arr("train_loss", train_loss, (2,))
        if train.shape != test.shape:
            raise ValueError(f"train_loss must have the shape of test_loss {test.shape}, got {train.shape}")
    if t_star is not None:
        t_star = _arr("t_star", t_star)
        if t_star.size != lams.size:
            raise ValueError(f"t_star must have one value per lambda ({lams.size}), got {t_star.size}")
    path = _path(path)
    fig, ax = _figure()
    colors = _viridis(np.linspace(0.0, 0.9, lams.size))
    for i, (lam, c) in enumerate(zip(lams, colors)):
        ax.plot(tt[i], test[i], color=c, lw=1.6, label=f"λ = {lam:.3g}")
        if train is not None:
            ax.plot(tt[i], train[i], color=c, lw=1.0, ls="--")
        if t_star is not None and np.isfinite(t_star[i]):
            ax.plot([t_star[i]], [np.interp(t_star[i], tt[i], test[i])], "o", color=c, ms=5)
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    if train is not None:
        handles += [_line(color="k", lw=1.6), _line(color="k", lw=1.0, ls="--")]
        labels += ["test", "train"]
    if t_star is not None:
        handles.append(_line(color="k", marker="o", ls=""))
        labels.append("t* (best test)")
    ax.legend(handles, labels, fontsize=7, ncol=2)
    ax.grid(True, which="both", alpha=0.2)
    return _save(fig, path, dpi)


def plot_tstar_vs_lambda(lams, t_star, path: PathLike, *, t_star_theory=None, lams_theory=None,
                         xlabel: str = "λ", ylabel: str = "t* = η·steps", title: Optional[str] = None,
                         dpi: int = DPI) -> Path:
    """Best-test time against λ on log axes with fitted power laws.

    ``t_star`` (measured, or the only series) is drawn as points with its fit
    ``t* ≈ c·λ^slope`` in the legend; ``t_star_theory`` (on ``lams_theory``, default ``lams``) as a
    line with its own fit. The theory predicts slope -1 and a constant ``c = λ·t*``.
    """
    lams = _arr("lams", lams)
    ts = _arr("t_star", t_star)
    if ts.shape != lams.shape:
        raise ValueError(f"t_star must have the shape of lams {lams.shape}, got {ts.shape}")
    th = lt = None
    if t_star_theory is not None:
        th = _arr("t_star_theory", t_star_theory)
        lt = lams if lams_theory is None else _arr("lams_theory", lams_theory)
        if th.shape != lt.shape:
            raise ValueError(f"t_star_theory must have the shape of lams_theory {lt.shape}, got {th.shape}")
    path = _path(path)
    fig, ax = _figure()
    label = "measured" if th is not None else "t*"
    ax.plot(lams, ts, "o", color="C0", label=label)
    if np.sum(np.isfinite(ts) & (ts > 0)) >= 2:
        fit = fit_power_law(lams, ts)
        s, c = fit.slope, fit.prefactor
        grid = np.geomspace(np.nanmin(lams), np.nanmax(lams), 50)
        ax.plot(grid, c * grid ** s, "-", color="C0", lw=1.0, label=f"fit: slope {s:.3f}, c {c:.3g}")
    if th is not None:
        ax.plot(lt, th, "s", color="C1", ms=4, mfc="none", label="theory")
        if np.sum(np.isfinite(th) & (th > 0)) >= 2:
            fit = fit_power_law(lt, th)
            s, c = fit.slope, fit.prefactor
            grid = np.geomspace(np.nanmin(lt), np.nanmax(lt), 50)
            ax.plot(grid, c * grid ** s, "--", color="C1", lw=1.0, label=f"theory fit: slope {s:.3f}, c {c:.3g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.2)
    return _save(fig, path, dpi)


def plot_lambda_opt_vs_budget(budgets, lam_opt_pred, path: PathLike, *, lam_opt_meas=None,
                              xlabel: str = "budget T [steps]", ylabel: str = "λ_opt",
                              title: Optional[str] = None, dpi: int = DPI) -> Path:
    """Best λ for a step budget T: prediction ``λ_opt ≈ c/(ηT)`` as a line, measurements as points."""
    b = _arr("budgets", budgets)
    p = _arr("lam_opt_pred", lam_opt_pred)
    if p.shape != b.shape:
        raise ValueError(f"lam_opt_pred must have the shape of budgets {b.shape}, got {p.shape}")
    m = None
    if lam_opt_meas is not None:
        m = _arr("lam_opt_meas", lam_opt_meas)
        if m.shape != b.shape:
            raise ValueError(f"lam_opt_meas must have the shape of budgets {b.shape}, got {m.shape}")
    path = _path(path)
    fig, ax = _figure()
    order = np.argsort(b)
    ax.plot(b[order], p[order], "-", marker="s", mfc="none", color="C1", label="predicted")
    if m is not None:
        ax.plot(b, m, "o", color="C0", label="measured")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.2)
    return _save(fig, path, dpi)


def plot_norm_trajectories(steps, measured: Mapping[str, object], path: PathLike, *,
                           predicted: Optional[Mapping[str, object]] = None, steps_predicted=None,
                           equilibrium: Optional[Mapping[str, float]] = None,
                           ylabel: str = "||w||", xlabel: str = "steps", title: Optional[str] = None,
                           logx: bool = False, logy: bool = True, dpi: int = DPI) -> Path:
    """Per-group quantity (weight norm, angular update, effective LR) vs steps.

    ``measured`` maps a group name to values on ``steps``; ``predicted`` (same keys, values on
    ``steps_predicted``, default ``steps``) is drawn dashed in the same colour, ``equilibrium``
    values as dotted horizontal lines.
    """
    steps = _arr("steps", steps)
    if not isinstance(measured, Mapping) or not measured:
        raise ValueError("measured must be a non-empty mapping {group name: values}")
    sp = steps if steps_predicted is None else _arr("steps_predicted", steps_predicted)
    data = {}
    for k, v in measured.items():
        a = _arr(f"measured[{k!r}]", v)
        if a.shape != steps.shape:
            raise ValueError(f"measured[{k!r}] must have the shape of steps {steps.shape}, got {a.shape}")
        data[k] = a
    pred = {}
    for k, v in (predicted or {}).items():
        a = _arr(f"predicted[{k!r}]", v)
        if a.shape != sp.shape:
            raise ValueError(f"predicted[{k!r}] must have the shape of steps_predicted {sp.shape}, got {a.shape}")
        pred[k] = a
    path = _path(path)
    fig, ax = _figure()
    keys = list(dict.fromkeys(list(data) + list(pred) + list(equilibrium or {})))
    for i, k in enumerate(keys):
        c = f"C{i % 10}"
        if k in data:
            ax.plot(steps, data[k], "-", color=c, lw=1.4, label=f"{k} measured")
        if k in pred:
            ax.plot(sp, pred[k], "--", color=c, lw=1.2, label=f"{k} ODE")
        if equilibrium and k in equilibrium and np.isfinite(equilibrium[k]):
            ax.axhline(float(equilibrium[k]), color=c, ls=":", lw=1.0, label=f"{k} equilibrium")
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, ncol=2 if len(keys) > 3 else 1)
    ax.grid(True, which="both", alpha=0.2)
    return _save(fig, path, dpi)


def plot_theory_vs_measurement(theory, measured, path: PathLike, *, labels: Optional[Sequence[str]] = None,
                               xlabel: str = "theory", ylabel: str = "measured", loglog: bool = True,
                               title: Optional[str] = None, dpi: int = DPI) -> Path:
    """Scatter of measured against predicted values with the line y = x (optional point labels)."""
    th = _arr("theory", theory)
    me = _arr("measured", measured)
    if th.shape != me.shape:
        raise ValueError(f"theory and measured must have the same shape, got {th.shape} and {me.shape}")
    if labels is not None and len(labels) != th.size:
        raise ValueError(f"labels must have one entry per point ({th.size}), got {len(labels)}")
    path = _path(path)
    fig, ax = _figure((4.5, 4.5))
    ax.plot(th, me, "o", color="C0")
    vals = np.concatenate([th, me])
    vals = vals[np.isfinite(vals) & ((vals > 0) if loglog else True)]
    if vals.size:
        lo, hi = vals.min(), vals.max()
        if lo == hi:
            lo, hi = (lo / 2, hi * 2) if loglog else (lo - 1, hi + 1)
        ax.plot([lo, hi], [lo, hi], "k--", lw=1.0, label="y = x")
    if labels is not None:
        for x, y, s in zip(th, me, labels):
            ax.annotate(str(s), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if loglog:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.2)
    return _save(fig, path, dpi)


@dataclass(frozen=True)
class Series:
    """One line/marker series of a panel: ``x``, ``y``, matplotlib ``fmt`` (e.g. ``"-"``, ``"o"``,
    ``"--"``), ``label``, optional ``color`` and optional error bars ``yerr`` (shape (2, n): distances
    below/above ``y``, e.g. from a bootstrap interval)."""

    x: Any
    y: Any
    fmt: str = "-"
    label: Optional[str] = None
    color: Optional[str] = None
    yerr: Any = None


@dataclass(frozen=True)
class Panel:
    """One axes: a list of :class:`Series`, axis labels, log scales and a title."""

    series: Sequence[Series]
    xlabel: str = ""
    ylabel: str = ""
    title: str = ""
    logx: bool = True
    logy: bool = True


def plot_panels(path: PathLike, panels: Sequence[Panel], *, ncols: Optional[int] = None,
                panel_size: Tuple[float, float] = (4.6, 3.6), dpi: int = 110) -> Path:
    """Draw ``panels`` side by side (``ncols`` per row, default all) into a PNG at ``path``; return the path."""
    path = _path(path)
    if not panels:
        raise ValueError("panels must not be empty")
    if not all(isinstance(pan, Panel) for pan in panels):
        raise TypeError("panels must be a sequence of Panel")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(panels)
    ncols = ncols or n
    nrows = -(-n // ncols)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows))
    FigureCanvasAgg(fig)
    for k, pan in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        for s in pan.series:
            xs, ys = np.asarray(s.x, dtype=float), np.asarray(s.y, dtype=float)
            kw = {"label": s.label}
            if s.color is not None:
                kw["color"] = s.color
            if s.yerr is not None:
                ax.errorbar(xs, ys, yerr=np.asarray(s.yerr, dtype=float), fmt=s.fmt, ms=4, lw=1.3, capsize=2, **kw)
            else:
                ax.plot(xs, ys, s.fmt, ms=4, lw=1.3, **kw)
        if pan.logx:
            ax.set_xscale("log")
        if pan.logy:
            ax.set_yscale("log")
        ax.set_xlabel(pan.xlabel)
        ax.set_ylabel(pan.ylabel)
        if pan.title:
            ax.set_title(pan.title, fontsize=9)
        if any(s.label for s in pan.series):
            ax.legend(fontsize=6.5)
        ax.grid(True, which="both", alpha=0.2)
    return _save(fig, path, dpi)


__all__ = ["Series", "Panel", "plot_panels", "fit_power_law", "plot_l2_trajectories", "plot_tstar_vs_lambda", "plot_lambda_opt_vs_budget",
           "plot_norm_trajectories", "plot_theory_vs_measurement"]
