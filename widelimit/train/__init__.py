"""Finite-width training harness: optimisers with L2/weight decay, AutoL2, training loop, ensembles, sweeps.

Conventions: penalty ``(lam/2)||theta||^2``; GD ``theta <- theta - eta (grad l + lam theta)``; physical time
``t = eta * steps``; MSE ``1/(2NK) sum (f - y)^2``. Nothing here imports neural-tangents (it must run on a GPU
machine with current JAX and no NT).
"""
from .autol2 import AutoL2, AutoL2State, autol2, autol2_advance, autol2_init, autol2_observe
from .config import RunConfig
from .ensemble import EnsembleResult, member_configs, train_ensemble, train_members
from .loop import Program, RunResult, train
from .optim import OPTIMIZERS, L2State, current_l2, l2_regularization, make_optimizer, mask_from_patterns
from .schedules import check_schedule, make_schedule
from .sweep import SweepReport, run_sweep

__all__ = ["AutoL2", "AutoL2State", "autol2", "autol2_init", "autol2_observe", "autol2_advance",
           "OPTIMIZERS", "L2State", "current_l2", "l2_regularization", "make_optimizer", "mask_from_patterns",
           "RunConfig", "RunResult", "Program", "train", "EnsembleResult", "train_ensemble", "train_members",
           "member_configs", "run_sweep", "SweepReport", "check_schedule", "make_schedule"]
