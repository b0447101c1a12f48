"""Native (NumPy) infinite-width kernels: Gaussian integrals by quadrature, exact diagonals, structure."""
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import integrate, special

from widelimit.arch import CNN, MLP
from widelimit.kernels import Kernels, analytic_kernels, kernel_fn
from widelimit.kernels.native import mlp_kernels

RNG = np.random.default_rng(0)
X1 = RNG.normal(size=(6, 4))
X2 = RNG.normal(size=(3, 4))

def _ab_mean(a, b):
    # E[phi(m + s Z)] and E[phi'(m + s Z)] for phi = a*min(y,0) + b*max(y,0) = a*y + (b-a)*relu(y)
    def mean(m, s):
        r = m / s
        return a * m + (b - a) * (m * special.ndtr(r) + s * math.exp(-r * r / 2) / math.sqrt(2 * math.pi))

    def dmean(m, s):
        return a + (b - a) * special.ndtr(m / s)
    return (lambda u: a * np.minimum(u, 0) + b * np.maximum(u, 0), lambda u: np.where(u > 0, b, a), mean, dmean)


# activation -> (phi, phi', E[phi(m + sZ)], E[phi'(m + sZ)]) with Z ~ N(0, 1): one-dimensional facts only
PHI = {
    "relu": _ab_mean(0.0, 1.0),
    "leaky_relu": _ab_mean(0.1, 1.0),
    "abrelu": _ab_mean(-0.4, 1.5),
    "erf": (special.erf, lambda u: 2 / math.sqrt(math.pi) * np.exp(-u ** 2),
            lambda m, s: special.erf(m / math.sqrt(1 + 2 * s * s)),
            lambda m, s: 2 / math.sqrt(math.pi) * math.exp(-m * m / (1 + 2 * s * s)) / math.sqrt(1 + 2 * s * s)),
    "identity": (lambda u: u, lambda u: 1.0, lambda m, s: m, lambda m, s: 1.0),
}


def _spec(act, **kw):
    return MLP(activation=act, slope=0.1, abrelu_a=-0.4, abrelu_b=1.5, **kw)


def _gauss2(f, inner_mean, k11, k12, k22):
    """E[f(u) g(v)] for (u, v) ~ N(0, [[k11, k12], [k12, k22]]), given inner_mean(m, s) = E[g(m + s Z)]:
    condition on u = sqrt(k11) z, then v | u ~ N(k12/k11 u, k22 - k12^2/k11); integrate over z by quadrature."""
    l11 = math.sqrt(k11)
    l21 = k12 / l11
    l22 = math.sqrt(k22 - l21 ** 2)

    def integrand(z):
        return float(f(l11 * z)) * inner_mean(l21 * z, l22) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

    return sum(integrate.quad(integrand, lo, hi, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
               for lo, hi in ((-12.0, 0.0), (0.0, 12.0)))


@pytest.mark.parametrize("act", sorted(PHI))
@pytest.mark.parametrize("b_std", [None, 0.4])
def test_two_layer_kernels_equal_gaussian_integrals(act, b_std):
    # depth 2, NTK parameterisation: K1 = W^2 x.x'/d + b^2, NNGP = W^2 E[phi phi] + b^2,
    # NTK = NNGP + W^2 E[phi' phi'] K1.
    W = 1.3
    spec = _spec(act, depth=2, W_std=W, b_std=b_std)
    x = np.array([[0.3, -1.1], [0.9, 0.4]])
    ntk, nngp = mlp_kernels(spec, x)
    b2 = 0.0 if b_std is None else b_std ** 2
    k1 = W ** 2 * x @ x.T / 2 + b2
    phi, dphi, mean, dmean = PHI[act]
    e_pp = _gauss2(phi, mean, k1[0, 0], k1[0, 1], k1[1, 1])
    e_dd = _gauss2(dphi, dmean, k1[0, 0], k1[0, 1], k1[1, 1])
    want_nngp = W ** 2 * e_pp + b2
    assert nngp[0, 1] == pytest.approx(want_nngp, rel=1e-9)
    assert ntk[0, 1] == pytest.approx(want_nngp + W ** 2 * e_dd * k1[0, 1], rel=1e-9)


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_relu_diagonal_closed_form(depth):
    # W_std^2 = 2, ReLU, no bias: the variance is preserved, K_l(x,x) = 2|x|^2/d, Theta_L(x,x) = L K.
    ntk, nngp = mlp_kernels(MLP(depth=depth, W_std=math.sqrt(2.0)), X1)
    var = 2 * np.sum(X1 ** 2, axis=1) / X1.shape[1]
    np.testing.assert_allclose(np.diag(nngp), var, rtol=1e-13)
    np.testing.assert_allclose(np.diag(ntk), depth * var, rtol=1e-13)


@pytest.mark.parametrize("act", sorted(PHI))
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_symmetric_psd_and_consistent(act, parameterization):
    spec = _spec(act, depth=3, b_std=0.2, parameterization=parameterization, width=32)
    ntk, nngp = mlp_kernels(spec, X1)
    for k in (ntk, nngp):
        np.testing.assert_allclose(k, k.T, rtol=1e-14, atol=0)
        assert np.linalg.eigvalsh(k).min() > -1e-12 * np.abs(k).max()
    # cross kernel equals the corresponding block of the joint kernel
    joint = mlp_kernels(spec, np.vstack([X1, X2]))
    cross = mlp_kernels(spec, X1, X2)
    for j, c in zip(joint, cross):
        np.testing.assert_allclose(c, j[:6, 6:], rtol=1e-12)


@pytest.mark.parametrize("act", ["relu", "erf"])
def test_nngp_does_not_depend_on_parameterisation(act):
    a = mlp_kernels(_spec(act, depth=3, b_std=0.3, parameterization="ntk"), X1, X2)[1]
    b = mlp_kernels(_spec(act, depth=3, b_std=0.3, parameterization="standard"), X1, X2)[1]
    np.testing.assert_allclose(a, b, rtol=1e-13)


def test_standard_ntk_is_affine_in_width():
    # depth 2, standard parameterisation: Theta = width * E[phi phi] + W^2 E[phi' phi'] x.x' (+1 with bias),
    # so doubling the width adds width * E[phi phi] = width * NNGP / W^2 (no bias).
    W = 1.5
    spec = MLP(depth=2, W_std=W, parameterization="standard", width=100)
    t1, nngp = mlp_kernels(spec, X1, X2)
    t2, _ = mlp_kernels(spec.replace(width=200), X1, X2)
    np.testing.assert_allclose(t2 - t1, 100 * nngp / W ** 2, rtol=1e-12)


def test_identity_network_is_linear_kernel():
    spec = MLP(depth=4, activation="identity", W_std=1.2)
    ntk, nngp = mlp_kernels(spec, X1, X2)
    lin = X1 @ X2.T / 4
    np.testing.assert_allclose(nngp, 1.2 ** 8 * lin, rtol=1e-13)
    np.testing.assert_allclose(ntk, 4 * 1.2 ** 8 * lin, rtol=1e-13)


def test_public_api_blocking_and_backends():
    spec = MLP(depth=3, b_std=0.1)
    full = analytic_kernels(spec, X1, X2)
    assert isinstance(full, Kernels) and full.ntk.shape == (6, 3) and full.ntk.dtype == np.float64
    blocked = analytic_kernels(spec, X1, X2, batch_size=2)
    np.testing.assert_allclose(blocked.ntk, full.ntk, rtol=1e-14)
    sym = analytic_kernels(spec, X1, batch_size=4)
    np.testing.assert_allclose(sym.nngp, analytic_kernels(spec, X1).nngp, rtol=1e-14)
    k = kernel_fn(spec, backend="native")
    np.testing.assert_allclose(k(X1, X2).nngp, full.nngp, rtol=0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(model=MLP(depth=2), x1=np.ones((3, 2, 2))), "x1"),
    (dict(model=MLP(depth=2, in_dim=3), x1=np.ones((3, 2))), "in_dim"),
    (dict(model=MLP(depth=2), x1=np.ones((3, 2)), x2=np.ones((3, 4))), "features"),
    (dict(model=MLP(depth=2), x1=np.ones((3, 2)), backend="jax"), "backend"),
    (dict(model=MLP(depth=2, norm="layer"), x1=np.ones((3, 2)), backend="native"), "native"),
    (dict(model=CNN(depth=1), x1=np.ones((3, 4, 4, 1)), backend="native"), "native"),
    (dict(model=MLP(depth=2), x1=np.ones((3, 2)), batch_size=0), "batch_size"),
    (dict(model=CNN(depth=1, ndim=1), x1=np.ones((3, 4, 4, 1))), "x1"),
])
def test_bad_arguments_raise_value_error(kwargs, match):
    model = kwargs.pop("model")
    x1 = kwargs.pop("x1")
    with pytest.raises(ValueError, match=match):
        analytic_kernels(model, x1, **kwargs)


def test_import_does_not_pull_in_neural_tangents():
    code = ("import sys, widelimit, widelimit.kernels, widelimit.nets; "
            "bad = [m for m in ('neural_tangents', 'tensorflow') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_neural_tangents_message():
    from widelimit.kernels import nt_backend
    if nt_backend.is_available():
        pytest.skip("neural-tangents is installed here; the message is for environments without it")
    with pytest.raises(ImportError, match=r"widelimit\[nt\]"):
        analytic_kernels(CNN(depth=1, ndim=1), np.ones((2, 5, 1)))
