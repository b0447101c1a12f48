"""Structure of a user's network, measured: homogeneity per parameter group, scale invariance, which theory.

For a group ``g`` of parameters (default: every leaf of the pytree; or a user mapping ``name -> paths``)
the output is *homogeneous of degree* ``L_g`` in ``g`` when ``f(θ_g ← αθ_g) = α^{L_g} f(θ)`` for α > 0
(docs/theory.md §2). It is measured on a float64 copy of the model at inputs ``x``: for each α in
``alphas`` the ratio ``r = <f_α, f>/<f, f>`` must reproduce ``f_α = r f`` to relative error ``rtol`` and
``log r / log α`` must be the same integer for every α. A group of degree 0 is *scale-invariant*
(weights before BatchNorm/LayerNorm, WeightNorm directions; docs/theory.md §6). Scale invariance is also
tested *per unit*: every slice of the array along one axis is multiplied by its own random factor
``c_i ∈ [0.5, 2]`` at once; if the output does not change, each unit (row or column) is invariant on its
own (BatchNorm, WeightNorm), otherwise only the whole array is (LayerNorm).

The verdict (:class:`Structure.theories`) is what the measurements allow:

* ``NTK_L2_FLOW``: the output is L-homogeneous in all parameters (integer ``L ≥ 1``) and no group is
  scale-invariant: the infinite-width L2 flow with that ``L`` applies (docs/theory.md §2);
* ``SCALE_INVARIANT_NORMS``: some groups are scale-invariant: their norms follow the weight-norm dynamics
  (docs/theory.md §6), whatever the rest does;
* ``NONE``: neither; ``reason`` says why (which groups break homogeneity and how much, biases by name).

``rtol`` defaults to 1e-4 because normalisation layers add an ``eps`` to the variance (Flax: 1e-5), which
breaks the invariance at that relative level; every measured deviation is reported, so nothing hides in it.
"""
from __future__ import annotations

import dataclasses
import enum
import math
import re
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from .adapters import UserModel

__all__ = ["Invariance", "TheoryKind", "GroupStructure", "Structure", "analyse_structure", "leaf_paths"]


class Invariance(str, enum.Enum):
    """How a parameter group is scale-invariant."""

    NONE = "none"
    WHOLE = "whole"          # only under a common factor for the whole group (LayerNorm)
    PER_UNIT = "per-unit"    # under an independent factor per unit (BatchNorm, WeightNorm rows)

    def __str__(self) -> str:
        return self.value


class TheoryKind(str, enum.Enum):
    NTK_L2_FLOW = "ntk-l2-flow"
    SCALE_INVARIANT_NORMS = "scale-invariant-norms"
    NONE = "none"

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class GroupStructure:
    """Measured structure of one parameter group.

    Attributes:
      name: group name (the leaf path, e.g. ``"['params']['Dense_0']['kernel']"``, or the user's name).
      paths: the leaf paths in the group.
      shapes: their shapes.
      degree: measured homogeneity degree (int) or None when the output is not homogeneous in the group.
      deviation: worst relative deviation ``‖f_α − r f‖/‖f_α‖`` over α (how far from proportional).
      invariance: :class:`Invariance` (``NONE`` unless ``degree == 0``).
      unit_axis: for ``PER_UNIT``, the axis of the (single-leaf) array that indexes units, else None.
      unit_deviation: relative output change under per-unit random scaling along ``unit_axis`` (or the
        smallest over axes tried), NaN when not tried.
    """

    name: str
    paths: Tuple[str, ...]
    shapes: Tuple[Tuple[int, ...], ...]
    degree: Optional[int]
    deviation: float
    invariance: Invariance
    unit_axis: Optional[int]
    unit_deviation: float

    @property
    def n_units(self) -> Optional[int]:
        return None if self.unit_axis is None else int(self.shapes[0][self.unit_axis])


@dataclasses.dataclass(frozen=True)
class Structure:
    """Structure of a model: overall degree, per-group results, verdict.

    Attributes:
      degree: homogeneity degree in all parameters together (int) or None.
      deviation: its worst relative deviation from proportionality.
      groups: per-group :class:`GroupStructure`.
      theories: which theories apply (:class:`TheoryKind`; ``(NONE,)`` when none does).
      reason: one paragraph in words: what was measured and why each theory does or does not apply.
      rtol: tolerance used.
    """

    degree: Optional[int]
    deviation: float
    groups: Tuple[GroupStructure, ...]
    theories: Tuple[TheoryKind, ...]
    reason: str
    rtol: float

    @property
    def scale_invariant_groups(self) -> Tuple[GroupStructure, ...]:
        return tuple(g for g in self.groups if g.invariance is not Invariance.NONE)

    def to_rows(self) -> list:
        return [{"group": g.name, "shape": "+".join("x".join(map(str, s)) for s in g.shapes),
                 "degree": "none" if g.degree is None else g.degree, "deviation": g.deviation,
                 "invariance": g.invariance.value,
                 "unit_axis": "" if g.unit_axis is None else g.unit_axis} for g in self.groups]


def leaf_paths(params) -> Tuple[str, ...]:
    """The pytree paths of the leaves of ``params`` (``jax.tree_util.keystr``), in leaf order."""
    import jax

    return tuple(jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0])


def _check_groups(groups, paths: Sequence[str]) -> Dict[str, Tuple[int, ...]]:
    """``name -> leaf indices``. Default: one group per leaf. A user mapping gives ``name -> paths``."""
    if groups is None:
        return {p: (i,) for i, p in enumerate(paths)}
    if not isinstance(groups, Mapping) or not groups:
        raise TypeError("groups: expected a non-empty mapping from group name to a list of leaf paths")
    index = {p: i for i, p in enumerate(paths)}
    out: Dict[str, Tuple[int, ...]] = {}
    seen: Dict[int, str] = {}
    for name, members in groups.items():
        members = [members] if isinstance(members, str) else list(members)
        if not members:
            raise ValueError(f"groups: group {name!r} is empty")
        idx = []
        for m in members:
            if m not in index:
                raise ValueError(f"groups: {m!r} (group {name!r}) is not a leaf path; leaf paths are "
                                 f"{list(paths)}")
            if index[m] in seen:
                raise ValueError(f"groups: {m!r} is in both {seen[index[m]]!r} and {name!r}")
            seen[index[m]] = name
            idx.append(index[m])
        out[str(name)] = tuple(idx)
    return out


def _degree(f, f_of, leaves, idx, alphas, rtol) -> Tuple[Optional[int], float]:
    """Fit the degree of ``f_of(leaves)`` in the leaves ``idx``; returns (degree or None, worst deviation)."""
    ff = float(np.vdot(f, f))
    degrees, worst = [], 0.0
    for a in alphas:
        scaled = [leaf * a if i in idx else leaf for i, leaf in enumerate(leaves)]
        fa = np.asarray(f_of(scaled))
        r = float(np.vdot(fa, f)) / ff
        dev = float(np.linalg.norm(fa - r * f) / max(np.linalg.norm(fa), 1e-300))
        worst = max(worst, dev)
        if not r > 0 or dev > rtol:
            return None, worst
        degrees.append(math.log(r) / math.log(a))
    L = round(degrees[0])
    tol = [10 * rtol * max(1.0, abs(L)) / abs(math.log(a)) for a in alphas]
    if all(abs(d - L) <= t for d, t in zip(degrees, tol)):
        return int(L), worst
    return None, worst


def _per_unit(f, f_of, leaves, i, rng) -> Tuple[Optional[int], float]:
    """Try every axis of the 2-D+ leaf ``i``: random per-slice factors; the first axis (from the last) for
    which the output is unchanged is the unit axis. Returns (axis or None, smallest relative change)."""
    import jax.numpy as jnp

    leaf = leaves[i]
    best = math.inf
    if leaf.ndim < 2:
        return None, math.nan
    for axis in reversed(range(leaf.ndim)):
        c = rng.uniform(0.5, 2.0, size=leaf.shape[axis])
        shape = [1] * leaf.ndim
        shape[axis] = leaf.shape[axis]
        scaled = list(leaves)
        scaled[i] = leaf * jnp.asarray(c.reshape(shape), leaf.dtype)
        dev = float(np.linalg.norm(np.asarray(f_of(scaled)) - f) / max(np.linalg.norm(f), 1e-300))
        if dev < best:
            best, best_axis = dev, axis
    return best_axis, best


def analyse_structure(model: UserModel, x, *, groups: Optional[Mapping[str, Sequence[str]]] = None,
                      alphas: Sequence[float] = (0.5, 2.0, 3.0), rtol: float = 1e-4,
                      seed: int = 0) -> Structure:
    """Measure the homogeneity and scale invariance of ``model`` at inputs ``x`` (see the module docstring).

    ``groups``: optional ``{name: [leaf paths]}`` (paths as :func:`leaf_paths` prints them); default one
    group per leaf. Runs in float64 (scoped). Cost: ``(1 + n_groups) * len(alphas)`` forward passes plus
    ``ndim`` per 2-D scale-invariant leaf.
    """
    import jax
    import jax.numpy as jnp

    from .._x64 import x64

    if not isinstance(model, UserModel):
        raise TypeError(f"model: expected a UserModel (see widelimit.models.as_model), got {type(model).__name__}")
    alphas = tuple(float(a) for a in alphas)
    if not alphas or any(not math.isfinite(a) or a <= 0 or a == 1.0 for a in alphas):
        raise ValueError(f"alphas: must be positive numbers other than 1, got {alphas!r}")
    if not (0 < rtol < 1):
        raise ValueError(f"rtol: must lie in (0, 1), got {rtol}")
    paths = leaf_paths(model.params)
    members = _check_groups(groups, paths)
    rng = np.random.default_rng(seed)
    with x64():
        m64 = model.with_dtype(jnp.float64)
        xs = jnp.asarray(np.asarray(x), jnp.float64)
        leaves, treedef = jax.tree_util.tree_flatten(m64.params)
        apply = jax.jit(lambda ls, a: m64.apply(jax.tree_util.tree_unflatten(treedef, ls), a))
        f_of = lambda ls: apply(ls, xs)  # noqa: E731
        f = np.asarray(m64.output(xs))
        if not float(np.vdot(f, f)) > 0:
            raise ValueError("x: the model's output is identically zero at these inputs; use other inputs")
        degree, deviation = _degree(f, f_of, leaves, set(range(len(leaves))), alphas, rtol)
        out = []
        for name, idx in members.items():
            d, dev = _degree(f, f_of, leaves, set(idx), alphas, rtol)
            inv, axis, udev = Invariance.NONE, None, math.nan
            if d == 0:
                inv = Invariance.WHOLE
                if len(idx) == 1:
                    axis, udev = _per_unit(f, f_of, leaves, idx[0], rng)
                    if axis is not None and udev <= rtol:
                        inv = Invariance.PER_UNIT
                    else:
                        axis = None
            out.append(GroupStructure(name, tuple(paths[i] for i in idx),
                                      tuple(tuple(int(s) for s in leaves[i].shape) for i in idx),
                                      d, dev, inv, axis, udev))
    theories, reason = _verdict(degree, deviation, out)
    return Structure(degree, deviation, tuple(out), theories, reason, rtol)


def _looks_like_bias(path: str, shape: Tuple[int, ...]) -> bool:
    last = path.rsplit("[", 1)[-1].strip("]'\". ").lower()
    return len(shape) == 1 and (re.fullmatch(r"b_?\d*|beta", last) is not None or "bias" in last)


def _verdict(degree, deviation, groups) -> Tuple[Tuple[TheoryKind, ...], str]:
    invariant = [g for g in groups if g.invariance is not Invariance.NONE]
    broken = [g for g in groups if g.degree is None]
    parts, theories = [], []
    if invariant:
        theories.append(TheoryKind.SCALE_INVARIANT_NORMS)
        parts.append("scale-invariant groups (weight-norm dynamics, docs/theory.md §6): " + ", ".join(
            f"{g.name} ({g.invariance.value}{'' if g.unit_axis is None else f', units on axis {g.unit_axis}'})"
            for g in invariant))
    if degree is not None and degree >= 1 and not invariant:
        theories.append(TheoryKind.NTK_L2_FLOW)
        parts.append(f"the output is {degree}-homogeneous in all parameters (deviation {deviation:.1e}): "
                     f"the infinite-width L2 flow with L = {degree} applies (docs/theory.md §2)")
    elif degree is not None and invariant:
        parts.append(f"the output is {degree}-homogeneous overall, but the NTK-regime closed form assumes no "
                     "scale-invariant group (their kernel contribution grows as their norms shrink)")
    else:
        why = f"the output is not homogeneous in all parameters (deviation {deviation:.1e})"
        biases = [g.name for g in broken if any(_looks_like_bias(p, s) for p, s in zip(g.paths, g.shapes))]
        others = [g.name for g in broken if g.name not in biases]
        if biases:
            why += "; biases break it: " + ", ".join(biases)
        if others:
            why += ("; not homogeneous in " + ", ".join(others) +
                    " (a non-homogeneous activation such as erf/tanh/GELU, or another non-homogeneous operation)")
        parts.append(why + ". The closed-form L2 flow does not apply; for the widelimit MLP with biases or "
                     "erf the cross-scale theory (docs/theory.md §5) does")
    if not theories:
        theories.append(TheoryKind.NONE)
    return tuple(theories), "; ".join(parts) + "."
