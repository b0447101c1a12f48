"""The reduced-basis Volterra solver (widelimit.dynamics.volterra_reduced): reduction to the closed form for
homogeneous nets, agreement with the full-space separable solver with a truncated basis (ReLU and erf with
biases), stated basis error, bad input."""
import numpy as np
import pytest

from widelimit.arch import MLP
from widelimit.dynamics.ntk_l2 import L2Flow
from widelimit.dynamics.volterra_loss import VolterraLoss
from widelimit.dynamics.volterra_reduced import ReducedCrossScaleFlow
from widelimit.dynamics.volterra_separable import SeparableCrossScaleFlow
from widelimit.kernels.native import mlp_kernels


def _problem(seed, n, m, k=2, d=16):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(m, d)), rng.normal(size=(n, k)), rng.normal(size=(m, k))


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_reduced_solver_reduces_to_closed_form_for_homogeneous_net(weight_decay):
    x, xt, y, _ = _problem(0, 7, 4, d=4)
    spec = MLP(depth=3)
    ktt, kxt = mlp_kernels(spec, x)[0], mlp_kernels(spec, xt, x)[0]
    flow = ReducedCrossScaleFlow(spec, x, y, x_test=xt, rtol=1e-6, step=0.08)
    assert flow.rank == 1 and flow.fit_error < 1e-13          # (s s')^2 Theta(1, 1): one pivot kernel
    t = np.array([40.0, 0.0, 0.3, 4.0])
    ref = L2Flow(ktt, y, weight_decay, 3, ntk_test_train=kxt)(t)
    out = flow.solve(weight_decay, t)
    assert max(_rel(out.train, ref.train), _rel(out.test, ref.test)) < 1e-10


def test_reduced_solver_with_truncated_basis_matches_closed_form_within_stated_error():
    """N = 100, homogeneous: the basis is smaller than N; the deviation from L2Flow is below 1e-6, and the
    deviation from the full-space separable solver on the same grids (exact fit in both: pure basis
    error) is within the stated basis error (a bound)."""
    x, xt, y, _ = _problem(1, 100, 15)
    spec = MLP(depth=3)
    ktt, kxt = mlp_kernels(spec, x)[0], mlp_kernels(spec, xt, x)[0]
    flow = ReducedCrossScaleFlow(spec, x, y, x_test=xt, rtol=1e-6)
    t = np.geomspace(1.0, 1e3, 6)
    lams = [1e-4, 1e-3, 1e-2]
    outs = flow.solve_many(lams, t)
    assert flow.basis.shape[1] < 100
    full = SeparableCrossScaleFlow(spec, x, y, x_test=xt, rtol=1e-6, step=flow.step).solve_many(lams, t)
    for lam, out, ref_full in zip(lams, outs, full):
        ref = L2Flow(ktt, y, lam, 3, ntk_test_train=kxt)(t)
        assert max(_rel(out.train, ref.train), _rel(out.test, ref.test)) < 1e-6
        basis_dev = max(_rel(out.train, ref_full.train), _rel(out.test, ref_full.test))
        assert basis_dev <= out.basis_error + 1e-12 and out.basis_error <= 1e-6


def test_reduced_solver_matches_separable_solver_relu_with_biases():
    """N = 120 (the enrichment reaches the complete basis here: the Galerkin solve is the full-space one),
    only the interpolation in the scales differs from the separable fit: deviation below 1e-6."""
    spec = MLP(depth=3, b_std=0.5)
    x, xt, y, _ = _problem(2, 120, 20)
    t = np.geomspace(1.0, 1e3, 5)
    lams = [1e-4, 1e-2]
    flow = ReducedCrossScaleFlow(spec, x, y, x_test=xt, rtol=1e-6)
    outs = flow.solve_many(lams, t)
    assert flow.rank > 1 and flow.fit_error < 1e-8
    refs = SeparableCrossScaleFlow(spec, x, y, x_test=xt, rtol=1e-6).solve_many(lams, t)
    for out, ref in zip(outs, refs):
        assert max(_rel(out.train, ref.train), _rel(out.test, ref.test)) < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("spec", [MLP(depth=3, b_std=0.5), MLP(depth=3, activation="erf", b_std=0.8)])
def test_reduced_solver_matches_separable_solver_with_truncated_basis(spec):
    """Against the full-space separable solver (its own fit error ~1e-9): N = 200, the basis truncated
    below N; the deviation below 1e-6 and within twice the stated basis + quadrature errors."""
    x, xt, y, _ = _problem(2, 200, 30)
    t = np.geomspace(1.0, 1e3, 5)
    lams = [1e-4, 1e-2]
    flow = ReducedCrossScaleFlow(spec, x, y, x_test=xt, rtol=1e-6)
    outs = flow.solve_many(lams, t)
    assert flow.basis.shape[1] < 200 and flow.rank > 1 and flow.fit_error < 1e-8
    refs = SeparableCrossScaleFlow(spec, x, y, x_test=xt, rtol=1e-6).solve_many(lams, t)
    for out, ref in zip(outs, refs):
        dev = max(_rel(out.train, ref.train), _rel(out.test, ref.test))
        assert dev < 1e-6
        assert out.basis_error <= 1e-6 and dev <= 2 * (out.basis_error + out.error_estimate) + 5e-8


def test_too_small_basis_is_reported_by_the_stated_basis_error():
    """With the basis capped far below what the table needs, the stated basis error exceeds rtol and the
    solve raises; the cap's deviation from the uncapped solution is of the size the estimate says."""
    spec = MLP(depth=3, b_std=0.5)
    x, xt, y, _ = _problem(3, 60, 15)
    t = np.geomspace(1.0, 1e3, 5)
    small = ReducedCrossScaleFlow(spec, x, y, x_test=xt, rtol=1e-6, max_basis=16)
    with pytest.raises(FloatingPointError, match="basis error"):
        small.solve_many([1e-3], t)
    loose = ReducedCrossScaleFlow(spec, x, y, x_test=xt, rtol=0.5, max_basis=16)
    out = loose.solve_many([1e-3], t)[0]
    ref = ReducedCrossScaleFlow(spec, x, y, x_test=xt, rtol=1e-6).solve_many([1e-3], t)[0]
    dev = max(_rel(out.train, ref.train), _rel(out.test, ref.test))
    assert 1e-6 < dev and out.basis_error > 1e-6


def test_reduced_bad_input_raises_before_any_kernel_is_evaluated():
    calls = []

    def counting_kernel(x1, x2, s1, s2):
        calls.append(1)
        raise AssertionError("kernel evaluated")

    x, _, y, _ = _problem(4, 6, 2, d=3)
    for kw in (dict(degree=1), dict(n_samples=5), dict(n_probe=1), dict(interp_tol=0.5), dict(basis_tol=1.0),
               dict(max_basis=1), dict(enrich_tol=-1.0), dict(max_rounds=-1)):
        with pytest.raises(ValueError):
            ReducedCrossScaleFlow(None, x, y, kernel_fn=counting_kernel, **kw)
    assert not calls
    flow = ReducedCrossScaleFlow(MLP(depth=2, b_std=0.3), x, y, rtol=1e-4)
    with pytest.raises(ValueError, match="initial=None"):
        flow.solve(0.1, [1.0], initial="prior")
    with pytest.raises(ValueError, match="f0='zero'"):
        VolterraLoss(MLP(depth=2, b_std=0.3), x, y, x[:2], y[:2], f0="prior", method="reduced")


def test_volterra_loss_with_reduced_method_equals_separable():
    spec = MLP(depth=2, b_std=0.7)
    x, xt, y, yt = _problem(5, 12, 6, k=1, d=5)
    t = np.array([0.0, 2.0, 40.0])
    lams = [1e-3, 3e-2]
    red = VolterraLoss(spec, x, y, xt, yt, f0="zero", rtol=1e-6, method="reduced")
    sep = VolterraLoss(spec, x, y, xt, yt, f0="zero", rtol=1e-6, method="separable")
    red.precompute(lams, t)
    for lam in lams:
        np.testing.assert_allclose(red.test_loss(lam, t), sep.test_loss(lam, t), rtol=1e-7)
