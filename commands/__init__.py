"""The `asp` subcommands, one per module. Each parses options, calls the library, prints.

A module only imports click and asp_export's light leaf modules at import time;
TensorFlow and the runtimes are imported inside the command body.
"""

from __future__ import annotations

import importlib

# Listed in data-flow order; `asp --help` shows them alphabetically.
_COMMAND_MODULES = ("models", "prune", "shrink", "export", "bench", "check")


def _load():
    commands = []
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"{__name__}.{name}":
                continue  # not written yet in this checkout
            raise
        commands.append(module.command)
    return commands


COMMANDS = _load()
