"""Progress bars (tqdm, on stderr) and the up-front cost-estimate line shared by the commands."""
from __future__ import annotations

import sys
from typing import Iterable, Optional

#: an estimated cost above this many seconds is announced on stderr before the work starts
ANNOUNCE_S = 10.0
#: sustained double-precision rate assumed for estimates (2 shared CPU cores, NumPy/LAPACK)
FLOPS_PER_S = 2e9


def add_progress_option(p) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars or cost estimate on stderr")


def progress(iterable: Iterable, args, *, desc: str, total: Optional[int] = None):
    """A tqdm bar on stderr unless ``--no-progress``."""
    from tqdm.auto import tqdm
    return tqdm(iterable, disable=getattr(args, "no_progress", False), file=sys.stderr, desc=desc, total=total,
                leave=False)


def announce(args, what: str, seconds: float) -> None:
    """Print ``estimated cost: <what> ≈ <seconds>`` on stderr when it exceeds :data:`ANNOUNCE_S`."""
    if getattr(args, "no_progress", False) or seconds < ANNOUNCE_S:
        return
    human = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    print(f"estimated cost: {what} ≈ {human} (progress bars follow; --no-progress hides them)", file=sys.stderr)


def kernel_cost_s(n_train: int, n_test: int, depth: int, dim: int, cnn: bool = False, eigh: bool = True) -> float:
    """Rough seconds for the analytic NTK/NNGP blocks (train-train, test-train, test diagonal) of an MLP
    (``~ pairs · (dim + 30·depth)`` flops) or a CNN (neural-tangents; ~1000× an MLP per pair), plus, with
    ``eigh``, the eigendecomposition of the train-train block (``~ 10 N³`` flops)."""
    pairs = n_train * n_train + n_test * n_train + n_test
    per_pair = (dim + 30.0 * depth) * (1000.0 if cnn else 1.0)
    return (pairs * per_pair + (10.0 * n_train ** 3 if eigh else 0.0)) / FLOPS_PER_S


#: kernel passes of a Krylov build (MNIST-1D, 3-layer ReLU, tol 1e-10: 27 for the mean basis; with the
#: variance basis the first 8 are wider and the NNGP projection adds about 8 pass-equivalents) and the
#: float32 pass rate measured at N = 50 000 on this machine (1.75 GB/s, benchmarks/RESULTS_scale.md §5)
KRYLOV_PASSES = {"zero": 27, "nngp": 40}
KRYLOV_BYTES_PER_S = 1.75e9


def krylov_cost_s(n_train: int, itemsize: int, f0: str) -> float:
    """Rough seconds of the Krylov build: passes x bytes of the train-train NTK / the measured pass rate."""
    return KRYLOV_PASSES[f0] * float(n_train) ** 2 * itemsize / KRYLOV_BYTES_PER_S

