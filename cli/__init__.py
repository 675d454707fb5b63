"""The `deepcluster` command line: option parsing, locks and printing over the library.

Installed as ``keras_deepcluster_cli`` (from the top-level ``cli/`` folder).
Importing `keras_deepcluster` imports keras, which fixes the backend, so this
package reads ``--backend`` from the command line first, before any of its
modules imports the library: ``deepcluster train --backend jax`` then runs on
JAX whatever ``KERAS_BACKEND`` says. (The option is parsed again, and checked,
by the commands.)
"""

import json
import os
import sys

BACKENDS = ("tensorflow", "jax", "torch")


def _backend_from_command_line(arguments: list[str]) -> str | None:
    for index, argument in enumerate(arguments):
        if argument == "--":
            return None
        if argument == "--backend" and index + 1 < len(arguments):
            return arguments[index + 1]
        if argument.startswith("--backend="):
            return argument.split("=", 1)[1]
    return None


def _resumed_backend(arguments: list[str]) -> str | None:
    """The backend a run given to ``--resume`` recorded (its checkpoint's), read without keras."""
    for index, argument in enumerate(arguments):
        if argument == "--":
            return None
        if argument == "--resume" and index + 1 < len(arguments):
            path = arguments[index + 1]
        elif argument.startswith("--resume="):
            path = argument.split("=", 1)[1]
        else:
            continue
        try:  # RunDirectory.CHECKPOINT; a missing or damaged one is reported by `train`
            with open(os.path.join(path, "checkpoint.json"), encoding="utf-8") as file:
                return json.load(file).get("backend")
        except (OSError, ValueError, AttributeError):
            return None
    return None


_backend = _backend_from_command_line(sys.argv[1:]) or _resumed_backend(sys.argv[1:])
if _backend in BACKENDS and "keras" not in sys.modules:
    os.environ["KERAS_BACKEND"] = _backend
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
