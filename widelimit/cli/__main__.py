"""``python -m widelimit.cli``."""
import sys

from .app import main

sys.exit(main())
