"""Users' own networks: one :class:`UserModel` from plain JAX, Flax (linen, nnx), Equinox or a stax triple.

* :func:`as_model` wraps a network as ``apply(params, x) -> (n, K)`` with its parameter pytree (and, when
  given, an ``init(key)`` that draws fresh parameters: needed for Monte-Carlo NNGP kernels and seeds);
* :func:`analyse_structure` measures, per parameter group, the homogeneity degree of the output and
  scale invariance (whole group or per unit), and says which theory applies.

Frameworks are imported lazily, only when a model of theirs is given (extra ``widelimit[models]``).
"""
from .adapters import UserModel, as_model, from_equinox, from_flax_linen, from_flax_nnx, from_jax, from_stax
from .structure import GroupStructure, Invariance, Structure, TheoryKind, analyse_structure

__all__ = ["UserModel", "as_model", "from_jax", "from_flax_linen", "from_flax_nnx", "from_equinox",
           "from_stax", "analyse_structure", "Structure", "GroupStructure", "Invariance", "TheoryKind"]
