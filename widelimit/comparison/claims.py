"""Predicted vs measured for a user's model: claims, bootstrap intervals over seeds, verdicts (docs/theory.md §8).

Measured arrays come from the training ensemble reshaped to ``(seeds, weight_decays, logs)``. Claims:

* ``t*`` per weight decay (NTK path): measured = the time of the minimum of the seed-averaged test-loss
  curve, its interval by resampling seeds (:func:`widelimit.evidence.bootstrap_seeds`); predicted = t* of
  the expected curve, band = the predicted interval of the n-seed t* (:func:`~widelimit.predict.spread
  .t_star_spread`) widened by one logging interval (the measured t* is only known on the logged grid)
  and by the relative tolerance;
* the test loss at a few logged times per weight decay: measured = seed mean (bootstrap interval),
  predicted = the expected loss, band = the predicted interval of the n-seed mean
  (:func:`~widelimit.predict.spread.loss_spread`) widened by the tolerance;
* per scale-invariant group and weight decay: ‖w‖² and the angular update per step averaged over the last
  quarter of the logs, against the equilibrium (driven claims: G is measured).

Claims whose prediction is non-finite (e.g. GD outside its stable range) are not made; the prediction's
validity is written into the claim's note.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from ..evidence import Claim, ClaimResult, bootstrap_interval, bootstrap_seeds, judge


def ntk_claims(pred, test_loss: np.ndarray, time: np.ndarray, settings, *, name: str = "model") -> List[ClaimResult]:
    """Claims of the NTK path (module docstring). ``test_loss``: (seeds, P, T); ``time``: (T,) η·steps."""
    out: List[ClaimResult] = []
    dt = settings.eval_every * settings.learning_rate
    size = f"N={pred.data_kernels.ntk_train_train.shape[0]}, {settings.seeds} seeds"
    for p, lam in enumerate(settings.weight_decays):
        curves = test_loss[:, p, :]
        if not np.all(np.isfinite(curves)):
            continue
        validity = pred.t_star.validity[p]
        t_pred = float(pred.t_star.t_star[p])
        lo, hi = float(pred.t_star_spread.low[p]), float(pred.t_star_spread.high[p])
        if np.isfinite(t_pred) and np.isfinite(lo) and np.isfinite(hi):
            iv = bootstrap_seeds(curves, lambda x: float(time[int(np.argmin(x.mean(0)))]), level=settings.level)
            claim = Claim(f"t* at λ={lam:g}", "t* [η·steps]", t_pred, settings.tolerance, study="compare", size=size,
                          predicted_interval=(max(lo - dt, 0.0), hi + dt),
                          note=f"{name}; GD at η={settings.learning_rate:g}; prediction {validity.value}; "
                               f"kernels measured at init; band widened by one logging interval ({dt:g})")
            out.append(judge(claim, iv))
        spread = pred.loss_spread[p]
        for q, j in enumerate(pred.spread_index):
            mean_pred = float(pred.curves.test_loss[p, j])
            s_lo, s_hi = float(spread.low[q]), float(spread.high[q])
            if not (np.isfinite(mean_pred) and np.isfinite(s_lo) and np.isfinite(s_hi)):
                continue
            iv = bootstrap_interval(curves[:, j], level=settings.level)
            claim = Claim(f"test loss at λ={lam:g}, t={time[j]:g}", "test MSE", mean_pred, settings.tolerance,
                          study="compare", size=size, predicted_interval=(s_lo, s_hi),
                          note=f"{name}; seed mean; band = predicted {settings.seeds}-seed interval; kernels "
                               "measured at init")
            out.append(judge(claim, iv))
    return out


def tail(a: np.ndarray, frac: float = 0.25) -> np.ndarray:
    """Mean over the last ``frac`` of the logs (axis -1), at least one log."""
    n = a.shape[-1]
    k = max(1, int(round(frac * n)))
    return np.mean(a[..., n - k:], axis=-1)


def norm_claims(preds: Sequence, layers: dict, settings, *, name: str = "model") -> List[ClaimResult]:
    """Driven claims for scale-invariant groups. ``layers``: ``"<quantity>/<group>" -> (seeds, P, T)``."""
    out: List[ClaimResult] = []
    for pred in preds:
        g = pred.group
        norms = layers.get(f"weight_norm/{g}")
        angles = layers.get(f"angular_update_mean/{g}")
        if norms is None:
            continue
        for p, lam in enumerate(settings.weight_decays):
            tau = float(pred.relaxation_steps[p])
            settled = np.isfinite(tau) and 4 * tau < settings.steps
            note = (f"{name}; G measured (driven); relaxation {tau:.3g} steps"
                    + ("" if settled else f" — not settled within the last quarter of {settings.steps} steps"))
            for label, quantity, predicted, meas in (
                    ("‖w‖²", "norm² at equilibrium", pred.norm_sq[p], tail(norms[:, p, :] ** 2)),
                    ("angular update", "angle per step [rad]", pred.angular_update[p],
                     None if angles is None else tail(angles[:, p, 1:]))):
                if meas is None or not np.isfinite(predicted) or not np.all(np.isfinite(meas)):
                    continue
                claim = Claim(f"{label} of {g} at λ={lam:g}", quantity, float(predicted), settings.tolerance,
                              driven=True, study="compare", note=note)
                out.append(judge(claim, bootstrap_interval(meas, level=settings.level)))
    return out


__all__ = ["ntk_claims", "norm_claims", "tail"]
