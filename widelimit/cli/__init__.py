"""The ``widelimit`` command line: ``solve``, ``table ntk``, ``table norms``, ``validate`` and ``derive``.

Run ``widelimit --help`` (or ``python -m widelimit.cli --help``) and ``widelimit SUBCOMMAND --help``.
The command line holds no theory: it parses options (names as in Python, docs/theory.md §1), checks every
argument and output path before any computation, calls the same library functions as Python and renders
their results with :mod:`widelimit.tables`.

Modules: :mod:`.app` (parser, entry point), one module per subcommand (:mod:`.solve`, :mod:`.table_ntk`,
:mod:`.table_norms`, :mod:`.validate`, :mod:`.derive`), shared :mod:`.argtypes`, :mod:`.options`,
:mod:`.paths` (output checks), :mod:`.writing` (tables, warnings), :mod:`.progress`, :mod:`.problem`
(kernels), :mod:`.ntk_common` and :mod:`._theory` (the one bridge to the predictions), :mod:`.errors`.

Exit status: 0 ok; 1 a failure while computing; 2 a bad argument (one line on stderr naming the option).
"""
from .errors import EXIT_FAIL, EXIT_OK, EXIT_USAGE, CommandError, UsageError
from .app import build_parser, main

__all__ = ["main", "build_parser", "UsageError", "CommandError", "EXIT_OK", "EXIT_FAIL", "EXIT_USAGE"]
