"""Finite-width training harness: optimisers with weight decay, AutoL2, one training loop with hooks,
ensembles, sweeps.

Conventions (docs/theory.md §1): weight decay λ with penalty ``(λ/2)‖θ‖²``; GD ``θ ← θ − η(∇ℓ + λθ)``;
physical time ``t = η·steps``; MSE ``1/(2NK) Σ (f − y)²``. Nothing here imports neural-tangents or the
theory packages (it must run on a GPU machine with current JAX and no NT).
"""
from .autol2 import AutoL2, AutoL2State, autol2, autol2_advance, autol2_init, autol2_observe
from .config import RunConfig
from .ensemble import EnsembleResult, member_configs, train_ensemble, train_members
from .hooks import Hooks, StepView
from .loop import Program, RunResult, train
from .optim import OPTIMIZERS, make_optimizer
from .regularizers import WeightDecayState, add_weight_decay, current_weight_decay, mask_from_patterns
from .schedules import check_schedule, make_schedule
from .sweep import SweepReport, run_sweep

__all__ = ["AutoL2", "AutoL2State", "autol2", "autol2_init", "autol2_observe", "autol2_advance",
           "OPTIMIZERS", "WeightDecayState", "add_weight_decay", "current_weight_decay", "make_optimizer",
           "mask_from_patterns", "RunConfig", "RunResult", "Program", "train", "Hooks", "StepView",
           "EnsembleResult", "train_ensemble", "train_members", "member_configs", "run_sweep", "SweepReport",
           "check_schedule", "make_schedule"]
