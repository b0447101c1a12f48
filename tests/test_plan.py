"""Device plan: the FLOP model against XLA's own cost analysis, memory/grouping logic, and the proposed
full sizes fitting the ~9-minute GPU budget while keeping 8 seeds."""
import jax
import jax.numpy as jnp
import pytest

from widelimit.arch import CNN, MLP
from widelimit.nets import apply, init_params, param_count
from widelimit.studies import plan as P


def _xla_flops(spec, in_shape, n):
    params = init_params(spec, jax.random.PRNGKey(0), in_shape)
    x = jnp.ones((n, *in_shape))
    cost = jax.jit(lambda p, x: apply(spec, p, x)).lower(params, x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"]), param_count(params)


@pytest.mark.parametrize("spec,in_shape", [(MLP(depth=3, width=96, out_dim=10), (64,)),
                                           (CNN(depth=2, channels=16, ndim=1, out_dim=1), (40, 1)),
                                           (CNN(depth=2, channels=8, ndim=2, out_dim=3), (8, 8, 1))])
def test_forward_flops_match_xla(spec, in_shape):
    n = 32
    w = P.Workload("t", "", spec.to_dict(), in_shape, n, 0, None, 1, 1, 1)
    f, params, _, _ = P._layers(w)
    xla, n_params = _xla_flops(spec, in_shape, n)
    assert abs(f * n / xla - 1) < 0.1, (f * n, xla)  # matmuls/convs dominate; elementwise ops are the rest
    assert params == pytest.approx(n_params, rel=0.02)  # no biases are counted; the nets here have none


def test_run_cost_and_memory_scale_as_stated():
    base = P.Workload("t", "", dict(kind="MLP", depth=3, width=512, out_dim=10), (64,), 1000, 500, None, 100, 10, 8)
    f1 = P.run_flops(base)
    f2 = P.run_flops(P.Workload(**{**base.__dict__, "steps": 200, "eval_every": 20}))
    F = P._layers(base)[0]
    assert f1 == pytest.approx(3 * F * 1000 * 100 + F * 1500 * 11, rel=1e-12)  # 100 steps, 11 evaluations
    assert f2 - f1 == pytest.approx(3 * F * 1000 * 100, rel=1e-12)  # 100 more steps, same evaluations
    big = P.Workload(**{**base.__dict__, "arch": dict(base.arch, width=65536), "members": 4})
    row = P.cost(big, "H100")
    assert row.members_fit == 1 and row.chunks == 4  # 17 GB of weights per member: one at a time
    assert P.cost(base, "H200").members_fit > P.cost(base, "H100").members_fit
    with pytest.raises(ValueError, match="device"):
        P.cost(base, "A100")
    with pytest.raises(ValueError, match="study"):
        P.workloads("nope")


def test_proposed_full_fits_the_budget_with_eight_seeds():
    table = P.plan("full")
    prop = P.plan("full", overrides=P.proposed_full())
    assert set(prop.study_s) == set(P.STUDIES)
    assert table.total_s > 4 * 600  # the unplanned full sizes do not fit one GPU command
    assert 420 < prop.total_s < 580  # ~9 minutes, one command under 10
    ov = P.proposed_full()
    for name in ("quick", "lambda_opt", "width", "linear_vs_deep"):
        assert len(ov[name]["seeds"]) >= 8
    assert all(len(v["seeds"]) >= 8 for v in ov["tstar"]) and len(ov["autol2"]["seeds"]) >= 8
    assert any(w.arch["kind"] == "CNN" for w in P.workloads("tstar", "full", ov["tstar"]))
    d = prop.to_dict()
    assert d["rows"] and {"flops_per_run", "predicted_s", "members"} <= set(d["rows"][0])


def test_main_prints_the_plan(capsys, tmp_path):
    assert P.main(["--proposed", "--study", "width", "quick", "--json", str(tmp_path / "p.json")]) == 0
    out = capsys.readouterr().out
    assert "| width |" in out and "**total**" in out
    with pytest.raises(SystemExit):
        P.main(["--size", "nope"])
