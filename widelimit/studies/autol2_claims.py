"""Study 5's protocol helpers (the validation / held-out split of the test set) and its claims: AutoL2
against the best fixed λ and against λ = 0, judged from intervals over seeds.

All accuracies are final accuracies on the *held-out* half of the test set; the best fixed λ is the grid value
with the highest seed-mean final accuracy on the *validation* half (:func:`widelimit.studies.autol2.split_test`).
Seeds are paired (seed ``s`` gives the same initialisation and minibatch order to every method), and the
intervals are bootstrap intervals over seeds of the mean paired difference with the best λ re-picked on the
validation half in every resample (:func:`widelimit.evidence.bootstrap_seeds`), so the selection's own noise is
in the interval. Claims (absolute accuracy differences, tie margin :data:`TIE`):

* "AutoL2 ties or beats the best fixed λ": band ``[−TIE, 1]`` for AutoL2 − best fixed λ;
* "AutoL2 ties or beats λ = 0": the same band for AutoL2 − (λ = 0);
* "fixed λ differ": the best fixed λ − (λ = 0) in ``[TIE, 1]`` — without it the setup cannot tell methods apart.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import numpy as np

from ..evidence import Claim, ClaimResult, bootstrap_seeds, judge

NAME = "autol2"
#: accuracy difference below which two methods are called a tie (held-out half: 500 test signals on MNIST-1D)
TIE = 0.01


def split_test(n_test: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """``(validation, held_out)`` index arrays: a fixed random permutation of ``range(n_test)`` cut in half."""
    if isinstance(n_test, bool) or not isinstance(n_test, (int, np.integer)) or n_test < 2:
        raise ValueError(f"n_test must be an int >= 2, got {n_test!r}")
    perm = np.random.default_rng(seed).permutation(int(n_test))
    return np.sort(perm[: n_test // 2]), np.sort(perm[n_test // 2:])


def split_accuracy(outputs: np.ndarray, y_test: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Accuracy per logging point on test points ``idx`` from probe ``outputs`` ``(n_logs, n_test, K)``
    (argmax match; ``K = 1``: sign match), shape ``(n_logs,)``."""
    f, y = np.asarray(outputs)[:, idx], np.asarray(y_test)[idx]
    if f.shape[-1] == 1:
        return np.mean(np.sign(f[..., 0]) == np.sign(y[None, :, 0]), axis=1)
    return np.mean(np.argmax(f, -1) == np.argmax(y, -1)[None], axis=1)


def steps_to(steps: np.ndarray, acc: np.ndarray, target: float) -> float:
    """First logging step at which ``acc >= target`` (NaN if never)."""
    steps, acc = np.asarray(steps, float), np.asarray(acc, float)
    if steps.shape != acc.shape or steps.ndim != 1:
        raise ValueError(f"steps and acc must be 1-D arrays of equal length, got {steps.shape}, {acc.shape}")
    hit = np.nonzero(acc >= target)[0]
    return float(steps[hit[0]]) if hit.size else float("nan")


def _pick(val: np.ndarray) -> int:
    return int(np.argmax(val.mean(axis=0)))


def per_seed(setup: Dict[str, Any], lams) -> Dict[str, Any]:
    """``{"val", "held"}`` arrays ``(n_seeds, n_lams)`` of the fixed grid and ``{"auto": {label: (n_seeds,)}}``
    from one setup's stored data (``data["setups"][i]``)."""
    keys = [str(float(l)) for l in lams]
    fixed = {str(float(k)): v for k, v in setup["fixed"].items()}
    val = np.asarray([fixed[k]["per_seed_val_final"] for k in keys], float).T
    held = np.asarray([fixed[k]["per_seed_final"] for k in keys], float).T
    auto = {a: np.asarray(s["per_seed_final"], float) for a, s in setup["autol2"].items()}
    return {"val": val, "held": held, "auto": auto}


def claims_from_data(data: Dict[str, Any], size: str) -> List[ClaimResult]:
    """The study's claims judged from its stored ``data`` alone (``autol2.json``), so a committed report can
    be rebuilt and checked. No claims with fewer than 2 seeds."""
    lams = [float(l) for l in data["lams"]]
    i0 = lams.index(0.0) if 0.0 in lams else None
    out: List[ClaimResult] = []
    for su in data["setups"]:
        name = su["setup"]["name"]
        p = per_seed(su, lams)
        val, held = p["val"], p["held"]
        if val.shape[0] < 2:
            continue
        kw = dict(relative=False, study=NAME, size=size)
        for a, auto in p["auto"].items():
            iv = bootstrap_seeds((val, held, auto), lambda t: float(np.mean(t[2] - t[1][:, _pick(t[0])])))
            out.append(judge(Claim(f"{name}: AutoL2 λ0={a} ties or beats the best fixed λ",
                                   "held-out accuracy, AutoL2 − best fixed λ (picked on validation)", 0.0, TIE,
                                   predicted_interval=(0.0, 1.0), note="paired over seeds; λ re-picked per resample",
                                   **kw), iv))
            if i0 is not None:
                iv = bootstrap_seeds((held, auto), lambda t: float(np.mean(t[1] - t[0][:, i0])))
                out.append(judge(Claim(f"{name}: AutoL2 λ0={a} ties or beats λ = 0",
                                       "held-out accuracy, AutoL2 − (λ = 0)", 0.0, TIE, predicted_interval=(0.0, 1.0),
                                       note="paired over seeds", **kw), iv))
        if i0 is not None:
            iv = bootstrap_seeds((val, held), lambda t: float(np.mean(t[1][:, _pick(t[0])] - t[1][:, i0])))
            out.append(judge(Claim(f"{name}: fixed λ differ (best fixed λ beats λ = 0)",
                                   "held-out accuracy, best fixed λ − (λ = 0)", TIE, 0.0, predicted_interval=(TIE, 1.0),
                                   note="precondition: otherwise the setup cannot tell methods apart", **kw), iv))
    return out


__all__ = ["claims_from_data", "per_seed", "TIE", "split_test", "split_accuracy", "steps_to"]
