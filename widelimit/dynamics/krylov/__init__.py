"""Large-N solver of the infinite-width L2 dynamics: one block Krylov basis instead of an
eigendecomposition (docs/theory.md §4).

* :class:`KrylovLoss` -- test-loss model (:class:`~widelimit.dynamics.protocol.LossModel`): outputs,
  mean-function and expected (over ``f0 ~ NNGP``) test loss, flow or GD, for any ``weight_decay`` and ``t``;
* :func:`block_lanczos`, :class:`KrylovBasis` -- the basis with its a-posteriori error estimate;
* :class:`KernelMatrix` -- a kernel (array or memmap, float32/float64) applied in bounded-memory chunks.
"""
from .lanczos import KrylovBasis, block_lanczos
from .model import KrylovConvergenceWarning, KrylovLoss
from .operator import KernelMatrix, as_kernel, available_memory_bytes

__all__ = ["KrylovLoss", "KrylovConvergenceWarning", "KrylovBasis", "block_lanczos", "KernelMatrix",
           "as_kernel", "available_memory_bytes"]
