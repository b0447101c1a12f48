"""Finite bias-free ReLU MLPs trained by full-batch GD with L2 approach the infinite-width L2 flow (issue 3).

Network: ``MLP(depth=3)`` (L = 3), NTK parameterisation, ``W_std = sqrt(2)``, no biases, float64.
Training: ``theta <- theta - eta (grad loss + lam theta)`` with ``loss = 1/(2 N K) sum (f - y)^2`` (the
loss whose function-space kernel is ``Theta / (N K)``, as in ``L2Flow``), physical time ``t = eta * steps``.
Measured: the relative error ``||df_pred - df_net|| / ||df_net||`` of the learned change
``df = f_t - f_0`` on held-out points, for ``t`` in ``(0, 1/lam]``, where the prediction is ``L2Flow``
started from the network's own ``f_0`` with (a) the analytic infinite-width NTK and (b) the network's
empirical NTK at initialisation.
"""
import numpy as np
import pytest

N_TRAIN, N_TEST, DIM = 16, 16, 8


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_TRAIN + N_TEST, DIM))
    x = x / np.linalg.norm(x, axis=1, keepdims=True) * np.sqrt(DIM)
    y = np.sin(1.5 * x[:N_TRAIN, :1]) + 0.3 * x[:N_TRAIN, 1:2]
    return x, y


def _errors(width, lam, eta, *, n_check=10, seed=1, empirical=True):
    """Relative errors of f_t - f_0 at t = (1..n_check)/n_check / lam: (analytic, empirical or None)."""
    import jax
    import jax.numpy as jnp
    from widelimit._x64 import x64
    from widelimit.arch import MLP
    from widelimit.dynamics.ntk_l2 import L2Flow
    from widelimit.kernels import analytic_kernels
    from widelimit.nets import empirical_ntk
    from widelimit.nets import apply, init_params

    x, y = _data()
    spec = MLP(depth=3, width=width, out_dim=1)
    assert spec.homogeneity_degree == 3
    steps = int(round(1.0 / lam / eta))
    per = steps // n_check
    with x64():
        params = init_params(spec, jax.random.PRNGKey(seed), (DIM,), dtype=jnp.float64)
        xtr, xte, yj = jnp.asarray(x[:N_TRAIN]), jnp.asarray(x[N_TRAIN:]), jnp.asarray(y)
        grad = jax.grad(lambda p: jnp.sum((apply(spec, p, xtr) - yj) ** 2) / (2 * y.size))

        def step(p, _):
            return jax.tree_util.tree_map(lambda w, g: w - eta * (g + lam * w), p, grad(p)), None

        @jax.jit
        def run(p):
            p, _ = jax.lax.scan(step, p, None, length=per)
            return p, apply(spec, p, xte)

        f0 = np.asarray(apply(spec, params, xtr))
        f0x = np.asarray(apply(spec, params, xte))
        assert f0x.dtype == np.float64
        p, outs = params, []
        for _ in range(n_check):
            p, fx = run(p)
            outs.append(np.asarray(fx))
        emp = (empirical_ntk(lambda q, xx: apply(spec, q, xx), params, x) if empirical else None)
    t = eta * per * np.arange(1, n_check + 1)
    got = np.stack(outs) - f0x
    errs = []
    for k in (analytic_kernels(spec, x).ntk, emp):
        if k is None:
            errs.append(None)
            continue
        sol = L2Flow(k[:N_TRAIN, :N_TRAIN], y, lam, 3, ntk_test_train=k[N_TRAIN:, :N_TRAIN],
                     f0_train=f0, f0_test=f0x)
        pred = sol.test(t) - f0x
        errs.append(np.linalg.norm(pred - got, axis=(1, 2)) / np.linalg.norm(got, axis=(1, 2)))
    return t, errs[0], errs[1]


def test_width_512_matches_infinite_width_prediction():
    lam, eta = 0.1, 0.05                      # 200 steps to t = 1/lam
    t, err_analytic, err_empirical = _errors(512, lam, eta)
    assert t[-1] == pytest.approx(1 / lam)
    # finite-width corrections are O(1/sqrt(width)): a few percent at width 512 (3-7% measured at this size)
    assert err_analytic.max() < 0.10, err_analytic
    # the network's own NTK at initialisation leaves only the kernel's motion during training
    assert err_empirical.max() < 0.02, err_empirical
    assert np.all(err_empirical < err_analytic)


@pytest.mark.slow
def test_error_shrinks_with_width():
    """Widths 256 ... 4096, lam = 0.05, t up to 1/lam: error falls with width and is <= 6% at 2048."""
    lam, eta = 0.05, 0.05                     # 400 steps; eta * mu_max ~ 0.1 (discretisation << 1%)
    widths = (256, 512, 1024, 2048, 4096)
    res = {w: _errors(w, lam, eta, empirical=w <= 1024) for w in widths}
    worst = {w: float(res[w][1].max()) for w in widths}
    print("max relative error of f_t - f_0 (analytic NTK):", {w: round(e, 4) for w, e in worst.items()})
    print("max relative error (empirical NTK):",
          {w: round(float(res[w][2].max()), 4) for w in widths if res[w][2] is not None})
    assert worst[256] > worst[1024] > worst[4096]
    assert worst[512] > worst[2048]
    assert worst[2048] <= 0.06
    for w in widths:
        if res[w][2] is not None:
            assert res[w][2].max() < worst[w]
