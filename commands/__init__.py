"""The `asp` subcommands, one per module. Each parses options, calls the library, prints.

A module only imports click and asp_export's light leaf modules at import time;
TensorFlow and the runtimes are imported inside the command body.
"""

from __future__ import annotations

import importlib

# In data-flow order; `asp --help` lists them alphabetically.
_COMMAND_MODULES = ("models", "prune", "shrink", "export", "bench", "check", "sweep")

COMMANDS = [importlib.import_module(f"{__name__}.{name}").command for name in _COMMAND_MODULES]
