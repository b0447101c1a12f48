"""Cross-scale NNGP/NTK (widelimit.kernels.cross_scale) against the native kernels, exact scaling laws,
Gauss-Hermite quadrature and empirical cross-scale kernels of wide finite networks."""
import math

import numpy as np
import pytest
from scipy.special import erf

from widelimit.arch import CNN, MLP
from widelimit.evidence import bootstrap_interval
from widelimit.kernels.cross_scale import bivariate_expectation, cross_scale_kernels
from widelimit.kernels.native import mlp_kernels

ACTS = ("relu", "leaky_relu", "abrelu", "erf", "identity")


def _specs():
    for act in ACTS:
        for b_std in (None, 0.4):
            for par in ("ntk", "standard"):
                yield MLP(depth=3, width=128, activation=act, b_std=b_std, parameterization=par,
                          W_std=1.3, abrelu_a=-0.3, abrelu_b=1.2)


def _data(seed=0, n=6, m=4, d=5):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(m, d))


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_equal_scales_one_is_native_kernel():
    x, xt = _data()
    for spec in _specs():
        for a, b in ((x, None), (xt, x)):
            ntk, nngp = mlp_kernels(spec, a, b)
            k = cross_scale_kernels(spec, a, b, scale1=1.0, scale2=1.0)
            assert _rel(k.ntk, ntk) < 1e-12, spec
            assert _rel(k.nngp, nngp) < 1e-12, spec


def test_equal_scales_are_native_kernels_of_the_scaled_stds():
    """At s = s' the network is the one with stds (s W_std, s b_std): its NNGP; its NTK up to the chain-rule
    factor s^2 in the NTK parameterisation (whose parameters are the unit-variance ones)."""
    x, _ = _data(1)
    s = 0.6
    for spec in _specs():
        scaled = spec.replace(W_std=s * spec.W_std, b_std=None if spec.b_std is None else s * spec.b_std)
        ntk, nngp = mlp_kernels(scaled, x)
        k = cross_scale_kernels(spec, x, scale1=s, scale2=s)
        factor = s ** 2 if spec.parameterization == "ntk" else 1.0
        assert _rel(factor * k.ntk, ntk) < 1e-12, spec
        assert _rel(k.nngp, nngp) < 1e-12, spec


def test_homogeneous_scaling_law():
    x, xt = _data(2)
    s1, s2 = np.array([0.3, 0.9, 1.0]), np.array([0.8, 0.2, 0.05])
    for act in ("relu", "leaky_relu", "abrelu", "identity"):
        spec = MLP(depth=4, activation=act, abrelu_a=-0.5, abrelu_b=0.7)
        L = spec.homogeneity_degree
        ntk, nngp = mlp_kernels(spec, xt, x)
        k = cross_scale_kernels(spec, xt, x, scale1=s1, scale2=s2)
        for p, ss in enumerate(s1 * s2):
            assert _rel(k.ntk[p], ss ** (L - 1) * ntk) < 1e-13
            assert _rel(k.nngp[p], ss ** L * nngp) < 1e-13
        kd = cross_scale_kernels(spec, x, scale1=0.5, scale2=0.25)   # diagonal: correlation exactly 1
        assert _rel(np.diag(kd.ntk), 0.125 ** (L - 1) * np.diag(mlp_kernels(spec, x)[0])) < 1e-14


def test_swap_symmetry_and_non_homogeneous_scale_dependence():
    x, xt = _data(3)
    spec = MLP(depth=3, activation="erf", b_std=0.5)
    a = cross_scale_kernels(spec, xt, x, scale1=0.4, scale2=0.9)
    b = cross_scale_kernels(spec, x, xt, scale1=0.9, scale2=0.4)
    np.testing.assert_allclose(a.ntk, b.ntk.T, rtol=1e-14)
    np.testing.assert_allclose(a.nngp, b.nngp.T, rtol=1e-14)
    k1 = cross_scale_kernels(spec, xt, x, scale1=1.0, scale2=1.0)
    # not the homogeneous law for any L: the ratio is not a constant power of s s'
    ratio = a.ntk / k1.ntk
    assert np.ptp(ratio) > 1e-3


def _pre_post(spec, q11, q22, q12):
    """(E[phi phi], E[phi' phi']) by the cross-scale recursion for a depth-2 net whose first layer has the
    given pre-activation covariance: inputs chosen so that W_std^2 x x'/d reproduces it."""
    # two inputs in 2-D with |x1|^2/2 = q11, |x2|^2/2 = q22, x1.x2/2 = q12 (W_std = 1, no bias, NTK param)
    r1, r2 = math.sqrt(2 * q11), math.sqrt(2 * q22)
    cos = q12 / math.sqrt(q11 * q22)
    x1 = np.array([[r1, 0.0]])
    x2 = np.array([[r2 * cos, r2 * math.sqrt(1 - cos ** 2)]])
    one = spec.replace(depth=2, W_std=1.0, b_std=None, parameterization="ntk")
    k = cross_scale_kernels(one, x1, x2, scale1=1.0, scale2=1.0)
    # depth 2: nngp = E[phi phi]; ntk = E[phi phi] + E[phi' phi'] * q12
    return k.nngp[0, 0], (k.ntk[0, 0] - k.nngp[0, 0]) / q12


def test_closed_forms_match_gauss_hermite_quadrature():
    q11, q22, q12 = 0.7, 2.9, 0.9
    erf_p = lambda u: 2 / math.sqrt(math.pi) * np.exp(-u ** 2)  # noqa: E731
    e, ed = _pre_post(MLP(depth=2, activation="erf"), q11, q22, q12)
    assert abs(e - bivariate_expectation(erf, erf, q11, q22, q12, 80)) < 1e-12
    assert abs(ed - bivariate_expectation(erf_p, erf_p, q11, q22, q12, 80)) < 1e-12
    a, b = -0.3, 1.2
    phi = lambda u: a * np.minimum(u, 0) + b * np.maximum(u, 0)  # noqa: E731
    dphi = lambda u: np.where(u > 0, b, a)  # noqa: E731
    e, ed = _pre_post(MLP(depth=2, activation="abrelu", abrelu_a=a, abrelu_b=b), q11, q22, q12)
    # kinks: Gauss-Hermite converges only like 1/n here; check the error halves towards the closed form
    for fn, ref in ((phi, e), (dphi, ed)):
        err = [abs(ref - bivariate_expectation(fn, fn, q11, q22, q12, n)) for n in (400, 800, 1600)]
        assert err[2] < 5e-3 * abs(ref)
        assert err[0] > 1.7 * err[1] > 2.9 * err[2]


def test_bad_input_raises_before_compute():
    x, _ = _data()
    with pytest.raises(TypeError, match="spec"):
        cross_scale_kernels(CNN(depth=2), x, scale1=1.0, scale2=1.0)
    with pytest.raises(ValueError, match="norm"):
        cross_scale_kernels(MLP(depth=2, norm="layer"), x, scale1=1.0, scale2=1.0)
    with pytest.raises(ValueError, match="scale1"):
        cross_scale_kernels(MLP(depth=2), x, scale1=0.0, scale2=1.0)
    with pytest.raises(ValueError, match="scale2"):
        cross_scale_kernels(MLP(depth=2), x, scale1=1.0, scale2=[np.nan])
    with pytest.raises(ValueError, match="features"):
        cross_scale_kernels(MLP(depth=2), x, x[:, :2], scale1=1.0, scale2=1.0)
    with pytest.raises(ValueError, match="zero activation"):
        cross_scale_kernels(MLP(depth=2, activation="abrelu", abrelu_a=0.0, abrelu_b=0.0), x,
                            scale1=1.0, scale2=1.0)
    with pytest.raises(ValueError, match="covariance"):
        bivariate_expectation(np.sin, np.sin, 1.0, 1.0, 2.0)


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_empirical_cross_scale_kernels_of_wide_networks(activation):
    """Jacobians of the SAME random network at scales s and s' (float64): the seed mean of the empirical
    cross-scale NTK/NNGP lies in the bootstrap interval around the theory (widened by the O(1/width) bias)."""
    from _scaled_net import ScaledNet

    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 4))
    width, seeds, s, s2 = 512, 10, 1.0, 0.45
    spec = MLP(depth=3, width=width, activation=activation, b_std=0.6, W_std=1.4, out_dim=48)
    theory = cross_scale_kernels(spec, x, scale1=s, scale2=s2)
    ntk_runs, nngp_runs = [], []
    for seed in range(seeds):
        net = ScaledNet(spec, seed, 4)
        ntk_runs.append(net.jacobian(s, x) @ net.jacobian(s2, x).T)
        nngp_runs.append(net.outputs(s, x) @ net.outputs(s2, x).T / spec.out_dim)
        assert net.n_params > width ** 2
    for runs, th in ((np.array(ntk_runs), theory.ntk), (np.array(nngp_runs), theory.nngp)):
        scale = np.max(np.abs(th))
        for i, j in ((0, 0), (0, 1), (2, 1)):
            iv = bootstrap_interval(runs[:, i, j], level=0.999)
            slack = 3.0 / width * scale
            assert iv.low - slack <= th[i, j] <= iv.high + slack, (i, j, iv, th[i, j])
    # and the test is informative: the interval excludes the equal-scale kernel where they differ most
    wrong = cross_scale_kernels(spec, x, scale1=s, scale2=s).ntk
    i, j = np.unravel_index(np.argmax(np.abs(wrong - theory.ntk)), wrong.shape)
    iv = bootstrap_interval(np.array(ntk_runs)[:, i, j], level=0.999)
    assert not iv.contains(wrong[i, j]), (iv, wrong[i, j])


@pytest.mark.parametrize("spec", [MLP(depth=3, b_std=0.5), MLP(depth=3, activation="erf", b_std=0.8),
                                  MLP(depth=2, activation="leaky_relu", slope=0.2),
                                  MLP(depth=3, b_std=0.3, parameterization="standard", width=64)])
def test_jax_backend_equals_numpy_backend(spec):
    """The jit-compiled recursion against the NumPy one (same formulas, different evaluation order)."""
    rng = np.random.default_rng(7)
    x1, x2 = rng.normal(size=(9, 4)), rng.normal(size=(5, 4))
    s1, s2 = np.array([0.2, 0.9, 1.0]), np.array([0.5, 0.9, 1.0])
    for a, b in ((x1, None), (x2, x1)):
        ref = cross_scale_kernels(spec, a, b, scale1=s1, scale2=s2)
        out = cross_scale_kernels(spec, a, b, scale1=s1, scale2=s2, backend="jax")
        for u, v in ((out.ntk, ref.ntk), (out.nngp, ref.nngp)):
            assert isinstance(u, np.ndarray) and u.dtype == np.float64
            np.testing.assert_allclose(u, v, rtol=1e-13, atol=1e-14 * np.max(np.abs(v)))
    with pytest.raises(ValueError, match="backend"):
        cross_scale_kernels(spec, x1, scale1=1.0, scale2=1.0, backend="torch")


@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_scale_free_first_layer_equals_full_recursion(depth, backend):
    """The first layer computed once at unit scales (positively homogeneous activations) against the
    recursion run whole for every scale pair: equal to rounding, for every activation (erf takes the full
    recursion either way), with and without biases, both parameterisations, one pair and several."""
    rng = np.random.default_rng(11)
    x1, x2 = rng.normal(size=(7, 4)), rng.normal(size=(5, 4))
    s1, s2 = np.array([1.0, 0.3, 1e-3, 0.7]), np.array([1.0, 0.9, 2e-3, 0.7])
    for act in ACTS:
        for b_std in (None, 0.6):
            for par in ("ntk", "standard"):
                spec = MLP(depth=depth, width=32, activation=act, b_std=b_std, parameterization=par,
                           W_std=1.3, abrelu_a=-0.3, abrelu_b=1.2)
                for a, b in ((x1, None), (x2, x1)):
                    for sa, sb in ((s1, s2), (0.4, 0.8)):
                        out = cross_scale_kernels(spec, a, b, scale1=sa, scale2=sb, backend=backend)
                        ref = cross_scale_kernels(spec, a, b, scale1=sa, scale2=sb, _prefix=False)
                        for u, v in ((out.ntk, ref.ntk), (out.nngp, ref.nngp)):
                            assert u.shape == v.shape
                            assert _rel(u, v) < 1e-13, (act, b_std, par, depth, _rel(u, v))
