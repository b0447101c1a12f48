"""Exit statuses and the two error kinds of the ``widelimit`` command.

Every bad argument (including an output path that cannot be written, or an unreadable ``--kernels`` file)
is a :class:`UsageError`: one line on stderr naming the option, exit status 2, found before any computation.
A failure while computing is a :class:`CommandError`: one line on stderr, exit status 1.
"""
from __future__ import annotations

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A bad command-line argument found after parsing (exit status 2). The message names the option."""


class CommandError(Exception):
    """A failure while running a command (exit status 1)."""


def require(module: str, *names: str):
    """Import ``names`` from ``module`` or raise :class:`CommandError` saying which part is missing."""
    import importlib
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise CommandError(f"{module} is not available ({e}); this widelimit installation is incomplete") from e
    out = []
    for n in names:
        if not hasattr(mod, n):
            raise CommandError(f"{module}.{n} is not available; this widelimit installation is incomplete")
        out.append(getattr(mod, n))
    return out[0] if len(out) == 1 else tuple(out)
