"""Ensembles sharded over all local devices (2 forced CPU devices, in a subprocess) give exactly the
results of one device."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from widelimit.arch import MLP
    from widelimit.train import RunConfig, loop, sharding
    loop.COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}  # both runs: compile faster
    from widelimit.train.ensemble import train_members

    base = RunConfig(arch=MLP(depth=2, width=16, out_dim=1), data="teacher",
                     data_options=dict(n_train=24, n_test=6, in_dim=3), learning_rate=0.1, steps=15,
                     eval_every=5, batch_size=8)
    members = [base.replace(seed=s, learning_rate=lr) for s, lr in ((0, 0.1), (1, 0.05), (2, 0.2))]
    out = {}
    for mode in ("on", "off"):  # all local devices, then the default device alone
        sharding.SHARD_MEMBERS = mode == "on"
        res = train_members(members)
        placed = sharding.shard_members(jax.numpy.zeros((4, 3)))
        out[mode] = {"devices": len(jax.devices()), "info_devices": res.info["devices"],
                     "chunk": res.info["chunk_size"], "placed_on": len(placed.sharding.device_set),
                     "runs": [{k: np.asarray(v).tolist() for k, v in r.metrics.items() if k != "time"}
                              for r in res.runs],
                     "probe": [np.asarray(r.probe["outputs"]).tolist() for r in res.runs]}
    print("RESULT" + json.dumps(out))
""")


def _run(tmp_path, n_devices):
    script = tmp_path / "shard.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}")
    p = subprocess.run([sys.executable, str(script)], env=env, cwd=str(ROOT), capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def test_two_devices_match_one(tmp_path):
    out = _run(tmp_path, 2)
    two, one = out["on"], out["off"]  # same process, sharding switched off: one device
    assert two["devices"] == 2 and two["info_devices"] == 2 and two["placed_on"] == 2
    assert two["chunk"] == 4  # 3 members padded to a multiple of 2 devices
    assert one["info_devices"] == 1 and one["chunk"] == 3 and one["placed_on"] == 1
    assert len(two["runs"]) == 3
    for a, b in zip(two["runs"], one["runs"]):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
    np.testing.assert_array_equal(np.asarray(two["probe"]), np.asarray(one["probe"]))
    assert not np.allclose(two["runs"][0]["train_loss"], two["runs"][1]["train_loss"])  # members differ


def test_chunk_rounding_and_errors():
    from widelimit.train import sharding

    assert [sharding.chunk_for_devices(s, 4) for s in (1, 4, 5, 8)] == [4, 4, 8, 8]
    assert sharding.chunk_for_devices(3, 1) == 3
    with pytest.raises(ValueError, match="size"):
        sharding.chunk_for_devices(0)
