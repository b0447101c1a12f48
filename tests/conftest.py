"""Shared pytest configuration.

* ``@pytest.mark.nt`` tests need neural-tangents; they are skipped, with the reason shown, in the
  current-JAX environment where it is not installed.
* ``@pytest.mark.slow`` tests are excluded by the default command (``python3 tasks.py test``) and run
  with ``python3 tasks.py test --slow``.
"""
import importlib.util
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HAS_NT = importlib.util.find_spec("neural_tangents") is not None


def _same_random_bits_in_both_environments() -> None:
    """JAX 0.5 changed the default of ``jax_threefry_partitionable`` to True, which changes every random
    draw. The pinned environment (jax 0.4.38) gets the current default so that seeded finite-network checks
    draw the same initialisations and minibatches in both environments."""
    import jax

    try:
        jax.config.update("jax_threefry_partitionable", True)
    except (AttributeError, KeyError):  # removed once it is the only behaviour
        pass


_same_random_bits_in_both_environments()


def pytest_collection_modifyitems(config, items):
    if HAS_NT:
        return
    skip = pytest.mark.skip(reason="neural-tangents is not installed in this environment "
                                   "(current-JAX env); run in the pinned 'nt' environment")
    for item in items:
        if "nt" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    import jax
    return f"widelimit: jax {jax.__version__}, neural-tangents {'yes' if HAS_NT else 'no'}"
