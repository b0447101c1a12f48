"""Package-level guarantees: lazy exports, no TensorFlow/neural-tangents at import, no global x64."""
import subprocess
import sys

import widelimit


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_every_export_resolves():
    for name in widelimit.__all__:
        assert getattr(widelimit, name) is not None, name


def test_import_pulls_in_neither_tensorflow_nor_neural_tangents():
    code = ("import sys, widelimit\n"
            "for n in widelimit.__all__: getattr(widelimit, n)\n"
            "print(sorted(m for m in ('tensorflow', 'neural_tangents', 'tf2jax') if m in sys.modules))")
    assert _run(code) == "[]"


def test_global_float64_flag_is_untouched():
    code = ("import jax, jax.numpy as jnp, numpy as np, widelimit\n"
            "from widelimit import MLP, analytic_kernels\n"
            "from widelimit._x64 import x64\n"
            "k = analytic_kernels(MLP(depth=3), np.random.default_rng(0).normal(size=(4, 3)))\n"
            "with x64():\n"
            "    inner = jnp.ones(1).dtype\n"
            "print(k.ntk.dtype, inner, jnp.ones(1).dtype, bool(jax.config.jax_enable_x64))")
    assert _run(code) == "float64 float64 float32 False"


def test_unknown_attribute_is_an_attribute_error():
    try:
        widelimit.no_such_name  # noqa: B018
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("expected AttributeError")


def test_subpackage_names_are_not_shadowed():
    code = ("import widelimit\n"
            "widelimit.RunConfig\n"
            "import widelimit.train as T\n"
            "from widelimit.train import train\n"
            "print(type(T).__name__, callable(train))")
    assert _run(code) == "module True"
