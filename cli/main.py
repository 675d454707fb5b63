"""`deepcluster`: pretrain, probe and inspect DeepCluster runs from the shell.

Nothing here imports keras at module level: `train --backend` must set
KERAS_BACKEND before the first import of keras.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.table import Table

from keras_deepcluster_cli.recipe import Recipe, RecipeError, check_value, load_recipe, recipe_names
from keras_deepcluster_cli.run_directory import RunDirectory, RunDirectoryError

BACKENDS = ("tensorflow", "jax", "torch")
# The TFDS names the `datasets` command looks for.
TFDS_DATASETS = ("mnist", "fashion_mnist", "svhn_cropped", "cifar10")
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"



def _console() -> Console:
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


def _checked(ctx, param, value):
    """Validates an override with the recipe's own rules (type and range)."""
    if value is None:
        return None
    setting = None if value == "none" else value
    try:
        check_value(param.name, setting)
    except RecipeError as error:
        raise click.BadParameter(str(error), ctx, param) from None
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="keras-deepcluster")
def main():
    """DeepCluster unsupervised pretraining for Keras 3 (TensorFlow, JAX, PyTorch).

    \b
    Examples:
      deepcluster train digits                     # offline, about a minute on a CPU
      deepcluster train fashion_mnist --source idx --data-dir /usr/share/datasets/fashion-mnist
      deepcluster probe runs/digits-tensorflow-k10-seed61
      deepcluster recipes
    """


def _override(*names, **kwargs):
    return click.option(*names, default=None, callback=_checked, **kwargs)


@main.command()
@click.argument("recipe")
@click.option("--backend", type=click.Choice(BACKENDS),
              help="Keras backend (default: $KERAS_BACKEND, else tensorflow).")
@_override("--clusters", "-k", type=int, help="Number of clusters k.")
@_override("--epochs", type=int, help="Epochs (one clustering + one training pass each).")
@_override("--halt-after", "halt_after", type=OptionalInt(),
           help="Freeze the pseudo-labels after this many epochs ('none': never).")
@_override("--seed", type=int, help="Seed of the weights, sampler, augmentation and k-means.")
@_override("--batch-size", "batch_size", type=int, help="Training batch size.")
@_override("--lr", type=float, help="SGD learning rate.")
@_override("--pca", type=OptionalInt(), help="PCA-whitening dimension ('none': no PCA).")
@_override("--limit", type=OptionalInt(), help="Train on the first N images ('none': all).")
@_override("--source", type=str, help="Data source: tfds, idx, npz, folder or digits.")
@_override("--data-dir", "data_dir", type=click.Path(exists=True, readable=True),
           help="Data directory (TFDS data_dir, IDX folder, image folder) or the .npz file.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Run directory (default: runs/<recipe>-<backend>-k<k>-seed<seed>).")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out.")
def train(recipe, backend, out, overwrite, **overrides):
    """Pretrain with DeepCluster as RECIPE says (a recipe name or a .toml file).

    Options override the recipe. Writes a run directory: config.toml,
    history.csv (one row per epoch), pseudo_labels/epoch_NNN.npz, model.keras
    and summary.json.

    \b
    Examples:
      deepcluster train digits
      deepcluster train fashion_mnist --source idx \\
          --data-dir /usr/share/datasets/fashion-mnist --epochs 3 --backend jax
      deepcluster train mnist -k 10 --halt-after 5 --limit 10000 --out runs/mnist-k10
    """
    _use_backend(backend)
    recipe = _resolve(recipe, overrides)
    from keras_deepcluster_cli import training  # imports keras, after the backend is set
    from keras_deepcluster_cli.progress import TrainingProgress, metrics_table

    import keras

    console = _console()
    backend = keras.backend.backend()
    out = out or Path("runs") / f"{recipe.name}-{backend}-k{recipe.clusters}-seed{recipe.seed}"
    run = RunDirectory(out)
    with _user_errors():
        run.check_writable(overwrite)
        _print_config(console, recipe, backend, out)
        with console.status(f"loading {recipe.dataset} ({recipe.source})"):
            data = training.load_data(recipe)
        console.print(f"data: {len(data.x_train)} training images {data.x_train.shape[1:]}"
                      + ("" if data.y_train is not None else ", unlabelled"))
        progress = TrainingProgress(console, recipe.epochs)
        pretraining = training.Pretraining.build(recipe, data, on_progress=progress.on_progress)
        run.create(recipe.to_toml(), overwrite)
        pretraining.fit(run, callbacks=[progress])
    rows = run.read_history()
    console.print(metrics_table(rows, title=f"{recipe.name} on {backend}"))
    summary = run.read_json(RunDirectory.SUMMARY)
    console.print(f"finished in {summary['wall_seconds']:.1f} s; run directory: {out}")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--layer", help="Layer to tap (default: the recipe's [probe] layer).")
@click.option("--epochs", type=click.IntRange(min=1), help="Probe epochs (default: the recipe's).")
@click.option("--random", is_flag=True,
              help="Probe the untrained network of the same seed instead of the trained one.")
def probe(run_dir, layer, epochs, random):
    """Linear probe of the run in RUN_DIR: test accuracy of a linear classifier
    trained on a frozen layer. Writes probe.json (probe_random.json with --random).

    \b
    Examples:
      deepcluster probe runs/digits-tensorflow-k10-seed61
      deepcluster probe runs/digits-tensorflow-k10-seed61 --random --epochs 5
    """
    console = _console()
    run = RunDirectory(run_dir)
    with _user_errors():
        run.read_config()
        recipe = load_recipe(run_dir / RunDirectory.CONFIG)
        _use_backend(None)
        from keras_deepcluster_cli import training

        with console.status(f"loading {recipe.dataset} ({recipe.source})"):
            data = training.load_data(recipe)
        with console.status("linear probe"):
            report = training.probe(recipe, data, run, layer, epochs, random)
    console.print(
        f"{report['model']} {report['layer']} ({report['feature_dim']} features): "
        f"accuracy {report['accuracy']:.2%} (best epoch {report['best_accuracy']:.2%}) on "
        f"{report['test_images']} images ({report['test_split']}); written to {run_dir}"
    )


@main.command()
def recipes():
    """List the bundled recipes with their dataset, backbone and defaults.

    \b
    Example:
      deepcluster recipes
    """
    console = _console()
    table = Table(title="recipes (deepcluster train NAME)", box=box.SIMPLE_HEAD)
    for column in ("name", "dataset", "source", "backbone", "k", "epochs", "batch", "lr",
                   "momentum", "wd", "pca", "seed", "probe"):
        table.add_column(column, no_wrap=True)
    loaded = [load_recipe(name) for name in recipe_names()]
    for r in loaded:
        table.add_row(r.name, r.dataset, r.source, r.backbone, str(r.clusters), str(r.epochs),
                      str(r.batch_size), f"{r.lr:g}", f"{r.momentum:g}", f"{r.weight_decay:g}",
                      str(r.pca or "–"), str(r.seed), r.probe_layer or "–")
    console.print(table)
    for r in loaded:
        console.print(f"[bold]{r.name}[/bold]: {r.description}")


@main.command()
@click.option("--data-dir", type=click.Path(path_type=Path),
              help="Also check this location (TFDS data_dir, IDX or image folder, .npz file).")
def datasets(data_dir):
    """Each data source and whether it can be loaded here right now.

    \b
    Examples:
      deepcluster datasets
      deepcluster datasets --data-dir ~/tensorflow_datasets
    """
    _use_backend(None)
    from keras_deepcluster import data

    console = _console()
    checks = [("digits", "digits", None), ("idx", "fashion_mnist", DEBIAN_FASHION_MNIST)]
    checks += [("tfds", name, None) for name in TFDS_DATASETS]
    if data_dir is not None:
        checks += [("tfds", name, data_dir) for name in TFDS_DATASETS]
        checks += [(source, "", data_dir) for source in ("idx", "npz", "folder")]
    table = Table(title="data sources (deepcluster train RECIPE --source S --data-dir D)")
    for column in ("source", "dataset", "location", "loadable here"):
        table.add_column(column)
    with console.status("checking data sources"):
        for source, name, path in checks:
            reason = data.unavailable_reason(source, name, path)
            where = str(path) if path else ("bundled" if source == "digits" else "default")
            table.add_row(source, name or "–", where,
                          "[green]yes[/green]" if reason is None else f"[red]no[/red]: {reason}")
    console.print(table)


def _use_backend(backend: str | None) -> None:
    """Sets KERAS_BACKEND; too late once keras is imported with another backend."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if backend is None:
        return
    if "keras" in sys.modules:
        current = sys.modules["keras"].backend.backend()
        if current != backend:
            raise click.UsageError(
                f"--backend {backend}: keras is already running on {current} in this process; "
                f"set KERAS_BACKEND={backend} before starting Python instead."
            )
    os.environ["KERAS_BACKEND"] = backend


def _resolve(name: str, overrides: dict) -> Recipe:
    try:
        recipe = load_recipe(name)
    except RecipeError as error:
        raise click.BadParameter(str(error), param_hint="RECIPE") from None
    changes = {k: (None if v == "none" else v) for k, v in overrides.items() if v is not None}
    if "data_dir" in changes:
        changes["data_dir"] = str(Path(changes["data_dir"]).resolve())
    try:
        return recipe.replace(**changes) if changes else recipe
    except RecipeError as error:
        raise click.UsageError(str(error)) from None


def _print_config(console: Console, recipe: Recipe, backend: str, out: Path) -> None:
    console.rule(f"deepcluster train {recipe.name} · backend {backend}")
    for section, settings in recipe.sections().items():
        pairs = "  ".join(f"{key}={value}" for key, value in settings.items())
        console.print(f"[bold]{section:>10}[/bold]  {pairs}")
    console.print(f"run directory: {out}")


class _user_errors:
    """Turns the library's input errors into a one-line CLI error (no traceback)."""

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is not None and issubclass(kind, (ValueError, FloatingPointError, OSError)):
            raise click.ClickException(str(error)) from None
        return False


if __name__ == "__main__":
    main()
