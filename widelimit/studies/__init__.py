"""Validation studies: theory next to finite-network measurements.

Each study is a module exposing ``run(size: str, out_dir: pathlib.Path, progress: bool = True,
resume: bool = True) -> pathlib.Path`` that trains/solves, writes ``<out_dir>/<name>.md`` (tables, the
exact command and the machine), its PNG plots and a ``<name>.json`` with the raw numbers, and returns the
Markdown path. ``size`` is ``"quick"`` (minutes on 2 CPU cores), ``"medium"`` (about an hour for all
studies on 2 CPU cores: more data, wider nets, >= 8 seeds) or ``"full"`` (GPU-sized). Each study declares
its claims (:mod:`widelimit.evidence`) and stores the judged claims in its JSON; ``validation/REPORT.md``
and the README findings block are generated from them (:mod:`widelimit.studies.report`).

Modules are imported lazily so that ``widelimit validate --help`` stays fast.
"""
from __future__ import annotations

import importlib
from typing import Callable

SIZES = ("quick", "medium", "full")

#: study name -> (module, one-line description)
STUDIES: dict[str, tuple[str, str]] = {
    "quick": ("widelimit.studies.quick",
              "main job: predicted vs measured t* and lambda_opt on sklearn digits, with a plot"),
    "width": ("widelimit.studies.width",
              "1. function-space error of finite MLPs vs width, with fitted rate"),
    "tstar": ("widelimit.studies.tstar",
              "2. t* law: best-test time vs lambda and vs learning rate, slope and constant c"),
    "lambda_opt": ("widelimit.studies.lambda_opt",
                   "3. predicted vs measured best lambda for several step budgets"),
    "scale_invariant": ("widelimit.studies.scale_invariant",
                        "4. norms, angular updates, effective LR of normalised nets vs the ODEs"),
    "autol2": ("widelimit.studies.autol2",
               "5. AutoL2 against the best fixed lambda"),
    "linear_vs_deep": ("widelimit.studies.linear_vs_deep",
                       "6. L = 1 (ridge limit) against L >= 2 (decay to zero)"),
    "bridge": ("widelimit.studies.bridge", "8. norm relaxation time against the best weight decay per budget; per-unit check"),
    "spread": ("widelimit.studies.spread", "7. predicted spread over n seeds vs many cheap finite-network seeds"),
    "biases": ("widelimit.studies.biases", "9. MLPs with biases / erf: GD with L2 vs the Volterra theory; t*, λ_opt shift"),
}


def get_study(name: str) -> Callable:
    """Return the ``run`` function of study ``name`` (ValueError listing the names if unknown)."""
    if name not in STUDIES:
        raise ValueError(f"study must be one of {sorted(STUDIES)}, got {name!r}")
    module = importlib.import_module(STUDIES[name][0])
    return module.run
