"""What the commands share: option types and decorators, the backend switch, errors.

Nothing here imports keras: `--backend` must act before its first import.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import warnings
from pathlib import Path

import click
from rich.console import Console

from keras_deepcluster.runs.recipe import CHOICES, Recipe, RecipeError, check_value, load_recipe
from keras_deepcluster_cli import BACKENDS

# keras_deepcluster.data.image_cache.CACHE_ENV, named here without importing keras.
CACHE_ENV = "KERAS_DEEPCLUSTER_CACHE"


def make_console() -> Console:
    # Rich draws 80 columns when not on a terminal; logs and CI get room for the tables.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


class OptionalInt(click.ParamType):
    """An integer, or "none" to switch a setting off."""

    name = "integer|none"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value is None:
            return value
        if str(value).lower() == "none":
            return "none"
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is neither an integer nor 'none'.", param, ctx)


class IntList(click.ParamType):
    """Comma-separated integers and ranges ("5,10,50", "0-99", "1-3,7"); with
    `allow_none`, "none" too (a setting switched off)."""

    name = "list"

    def __init__(self, allow_none: bool = False):
        self.allow_none = allow_none

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        values = []
        for part in str(value).split(","):
            part = part.strip()
            try:
                if self.allow_none and part.lower() == "none":
                    values.append(None)
                elif "-" in part.lstrip("-"):
                    low, high = (int(x) for x in part.split("-", 1))
                    if high < low:
                        self.fail(f"range {part!r} is empty (it runs backwards).", param, ctx)
                    values.append(range(low, high + 1))
                else:
                    values.append(int(part))
            except ValueError:
                kinds = "integers, ranges like 0-9" + (" or 'none'" if self.allow_none else "")
                self.fail(
                    f"{part!r} in {value!r} is not an integer; give {kinds}, comma-separated.",
                    param,
                    ctx,
                )
        flat = [v for item in values for v in (item if isinstance(item, range) else [item])]
        if not flat:
            self.fail(f"{value!r} holds no values.", param, ctx)
        return list(dict.fromkeys(flat))  # keep order, drop repeats


def checked(ctx, param, value):
    """Validates a recipe override with the recipe's own rules (type and range)."""
    if value is None:
        return None
    for setting in value if isinstance(value, list) else [value]:
        try:
            check_value(param.name, None if setting == "none" else setting, choices=False)
        except RecipeError as error:
            raise click.BadParameter(str(error), ctx, param) from None
    return value


def override(*names, **kwargs):
    """An option that overrides the recipe setting named by its destination."""
    return click.option(*names, default=None, callback=checked, **kwargs)


def backend_option(command):
    return click.option(
        "--backend",
        type=click.Choice(BACKENDS),
        help="Keras backend (default: $KERAS_BACKEND, else tensorflow).",
    )(command)


def devices_option(command):
    return click.option(
        "--devices",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="Train data-parallel on this many devices (GPUs, else CPUs); JAX or TensorFlow.",
    )(command)


def processes_options(command):
    """--coordinator, --num-processes, --process-id: one job over several processes (JAX)."""
    options = (
        click.option(
            "--coordinator",
            envvar="JAX_COORDINATOR_ADDRESS",
            help="HOST:PORT of process 0, for a job of several processes (hosts or GPUs); "
            "JAX only. Env: JAX_COORDINATOR_ADDRESS.",
        ),
        click.option(
            "--num-processes",
            "num_processes",
            type=click.IntRange(min=1),
            envvar="JAX_NUM_PROCESSES",
            help="Processes in the job (with --coordinator). Env: JAX_NUM_PROCESSES.",
        ),
        click.option(
            "--process-id",
            "process_id",
            type=click.IntRange(min=0),
            envvar="JAX_PROCESS_ID",
            help="This process's index, 0..P-1; process 0 writes the run directory. "
            "Env: JAX_PROCESS_ID.",
        ),
    )
    for option in reversed(options):
        command = option(command)
    return command


def deterministic_option(command):
    return click.option(
        "--deterministic",
        is_flag=True,
        default=None,
        help="Deterministic GPU kernels and k-means sums: identical runs from one seed, "
        "slower on a GPU (recipe key [training] deterministic).",
    )(command)


def halt_options(command):
    """--halt-when-stable and --halt-patience: the automatic halt of the clustering."""
    for option in reversed(
        [
            override(
                "--halt-when-stable",
                "halt_when_stable",
                type=float,
                help="Freeze the pseudo-labels once NMI(t, t-1) stays >= this for "
                "--halt-patience epochs.",
            ),
            override(
                "--halt-patience",
                "halt_patience",
                type=int,
                help="Consecutive stable clusterings --halt-when-stable needs (default 3).",
            ),
        ]
    ):
        command = option(command)
    return command


def cache_dir_option(command):
    """--cache-dir: where this command keeps image caches (for the command's duration)."""

    def use(context, parameter, value):
        if value is not None:
            saved = os.environ.get(CACHE_ENV)
            os.environ[CACHE_ENV] = str(Path(value).resolve())
            context.call_on_close(
                lambda: (
                    os.environ.pop(CACHE_ENV)
                    if saved is None
                    else os.environ.update({CACHE_ENV: saved})
                )
            )
        return value

    return click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=Path),
        callback=use,
        expose_value=False,
        help=f"Where image caches are kept (default: ${CACHE_ENV}, else "
        "~/.cache/keras_deepcluster).",
    )(command)


LABELS = (
    "For a folder: 'inferred' (the top-level sub-folders are the classes), 'none' (the whole "
    "tree, unlabelled) or 'auto' (the default: inferred for one flat folder per class, else none)."
)


def data_options(command):
    """--limit, --source, --data-dir, --labels, --no-download and --cache-dir: where the
    images come from."""
    command = cache_dir_option(command)
    for option in reversed(
        [
            override(
                "--limit", type=OptionalInt(), help="Use the first N training images ('none': all)."
            ),
            override(
                "--source", type=str, help="Data source: tfds, idx, npz, folder, cache or digits."
            ),
            override(
                "--data-dir",
                "data_dir",
                type=click.Path(exists=True, readable=True),
                help="Data directory (TFDS data_dir, IDX folder, image folder, image cache) or "
                "the .npz file.",
            ),
            override("--labels", type=click.Choice(CHOICES["labels"]), help=LABELS),
            override(
                "--download/--no-download",
                "download",
                help="tfds: download and prepare a dataset that is not prepared (default: on; "
                "also [data] download, KERAS_DEEPCLUSTER_NO_DOWNLOAD=1).",
            ),
        ]
    ):
        command = option(command)
    return command


def run_data_option(command):
    """--data-dir for a finished run: where its training data is now, if it moved."""
    return click.option(
        "--data-dir",
        type=click.Path(exists=True, path_type=Path),
        help="The run's data source, if it moved since training (default: the image cache "
        "the run recorded, else its recipe's source).",
    )(command)


def output_options(command):
    command = click.option(
        "--overwrite",
        is_flag=True,
        help="Replace what --out already holds (a run of other settings).",
    )(command)
    return click.option("--out", type=click.Path(path_type=Path), help="Output directory.")(command)


def use_backend(backend: str | None) -> None:
    """Sets KERAS_BACKEND (too late once keras is imported with another backend), and on
    TensorFlow imports it now, quietly (see `quiet_tensorflow`): call it after the checks of
    the command's options and recipe, which need neither.

    Also TensorFlow's oneDNN kernels on, whatever the CPU (as `keras_deepcluster`
    does on import, which comes after keras here).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if backend is not None:
        _set_backend(backend)
    quiet_tensorflow()


def _set_backend(backend: str) -> None:
    if "keras" in sys.modules:
        current = sys.modules["keras"].backend.backend()
        if current != backend:
            raise click.UsageError(
                f"--backend {backend}: keras is already running on {current} in this process; "
                f"set KERAS_BACKEND={backend} before starting Python instead."
            )
    os.environ["KERAS_BACKEND"] = backend


def quiet_tensorflow() -> None:
    """Imports TensorFlow now, without its load-time log lines, when it is the backend to be used.

    Keras imports it on its own import; importing it first, quietly, keeps the terminal clean.
    """
    backend = os.environ.get("KERAS_BACKEND")
    if backend is None:  # as Keras decides: its config file, else TensorFlow
        config = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "keras.json"
        try:
            backend = json.loads(config.read_text()).get("backend")
        except (OSError, ValueError, AttributeError):
            backend = None
    if (backend or "tensorflow") == "tensorflow" and "keras" not in sys.modules:
        from keras_deepcluster.platform.tensorflow_import import import_tensorflow_quietly

        import_tensorflow_quietly()


def resolve_recipe(name: str, overrides: dict) -> Recipe:
    """The recipe called `name` with the given options (None: not given) applied."""
    try:
        recipe = load_recipe(name)
    except RecipeError as error:
        raise click.BadParameter(str(error), param_hint="RECIPE") from None
    changes = {k: (None if v == "none" else v) for k, v in overrides.items() if v is not None}
    for path in ("data_dir", "check_labels", "tensorboard"):
        if path in changes:
            changes[path] = str(Path(changes[path]).resolve())
    try:
        return recipe.replace(**changes) if changes else recipe
    except RecipeError as error:
        raise click.UsageError(str(error)) from None


# What an interrupted resumable command (space, sweep, select) tells the user.
RUN_AGAIN = "run the same command again to continue; what finished is kept"


@contextlib.contextmanager
def interruptible(console: Console, how_to_continue: str):
    """Ctrl-C (SIGINT) and SIGTERM end the command with a short message and exit 130.

    Whatever finished is on disk already (atomic writes); `how_to_continue`
    tells the user how to go on. Training stops at the next batch or epoch
    boundary (`keras_deepcluster.platform.interrupts`).
    """
    from keras_deepcluster.platform.interrupts import catch_interrupts

    try:
        with catch_interrupts():
            yield
    except KeyboardInterrupt:
        console.print(f"interrupted; {how_to_continue}")
        sys.exit(130)


# The library's parameters, as its messages name them (`name` or `name=value`),
# and the options that set them here.
OPTIONS = {
    "out": "--out",
    "overwrite": "--overwrite",
    "resume": "--resume",
    "devices": "--devices",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "limit": "--limit",
    "check_labels": "--check-labels",
    "tensorboard": "--tensorboard",
    "labels": "--labels",
    "min_steps": "--min-steps",
    "layer": "--layer",
    "random": "--random",
    "pca_dim": "--pca",
    "size": "--size",
    "coordinator": "--coordinator",
    "backend": "--backend",
    "data_dir": "--data-dir",
    "split": "--split",
    "copy": "--copy",
    "labelled": "--labelled",
}


def as_options(message: str) -> str:
    """A library message with its parameters written as this CLI's options.

    Examples:
        >>> as_options("pass `overwrite=True` to replace it, or choose another `out`.")
        'pass --overwrite to replace it, or choose another --out.'
    """

    def option(match: re.Match) -> str:
        name, value = match.group(1), match.group(2)
        if name not in OPTIONS:
            return match.group(0)
        if value in (None, "True"):
            return OPTIONS[name]
        return f"{OPTIONS[name]} {'none' if value == 'None' else value}"

    return re.sub(r"`(\w+)(?:=([^`]+))?`", option, message)


def print_library_warnings() -> None:
    """Shows the library's warnings (`kdc.ClusteringWarning`) as one "Warning:" line each."""
    default = warnings.showwarning
    if getattr(default, "prints_library_warnings", False):
        return  # installed by an earlier command in this process

    def show(message, category, filename, lineno, file=None, line=None):
        # Looked up when a warning comes: commands that never train never import the library.
        reclustering = sys.modules.get("keras_deepcluster.method.reclustering")
        if reclustering is not None and issubclass(category, reclustering.ClusteringWarning):
            click.echo(f"Warning: {as_options(str(message))}", err=True)
        else:
            default(message, category, filename, lineno, file, line)

    show.prints_library_warnings = True
    warnings.showwarning = show


class user_errors:
    """Turns the library's input errors into a one-line CLI error (no traceback)."""

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is not None and issubclass(kind, (ValueError, FloatingPointError, OSError)):
            raise click.ClickException(as_options(str(error))) from None
        return False
