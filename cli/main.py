"""`deepcluster`: pretrain, probe and inspect DeepCluster runs from the shell.

Nothing here imports keras at module level: `train --backend` must set
KERAS_BACKEND before the first import of keras.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.table import Table

from keras_deepcluster.data.file_names import print_escaped
from keras_deepcluster.platform import directory_lock
from keras_deepcluster.runs.recipe import CHOICES, Recipe, load_recipe, recipe_names
from keras_deepcluster.runs.resume import recipe_to_resume
from keras_deepcluster.runs.run_directory import RunDirectory
from keras_deepcluster_cli import multi_process, random_filters, report, results, selection, sweep
from keras_deepcluster_cli.options import (
    LABELS,
    OptionalInt,
    backend_option,
    cache_dir_option,
    data_options,
    deterministic_option,
    devices_option,
    halt_options,
    interruptible,
    make_console,
    output_options,
    override,
    print_library_warnings,
    processes_options,
    resolve_recipe,
    run_data_option,
    use_backend,
    user_errors,
)

# The TFDS names the `datasets` command looks for.
TFDS_DATASETS = ("mnist", "fashion_mnist", "svhn_cropped", "cifar10")
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="keras-deepcluster")
def main():
    """DeepCluster unsupervised pretraining for Keras 3 (TensorFlow, JAX, PyTorch).

    \b
    Examples:
      deepcluster train digits                     # offline, no download
      deepcluster train fashion_mnist --source idx --data-dir /usr/share/datasets/fashion-mnist
      deepcluster probe runs/digits-tensorflow-k10-seed61
      deepcluster recipes
    """
    # Each command's folder locks end with the command, also when several run in one process.
    click.get_current_context().call_on_close(directory_lock.release_all)
    print_escaped()  # file names that are not UTF-8 print escaped
    print_library_warnings()


@main.command()
@click.argument("recipe", required=False)
@backend_option
@override("--clusters", "-k", type=int, help="Number of clusters k.")
@override("--epochs", type=int, help="Epochs (one clustering + one training pass each).")
@override(
    "--halt-after",
    "halt_after",
    type=OptionalInt(),
    help="Freeze the pseudo-labels after this many epochs ('none': never).",
)
@halt_options
@override("--seed", type=int, help="Seed of the weights, sampler, augmentation and k-means.")
@override("--batch-size", "batch_size", type=int, help="Training batch size.")
@override("--lr", type=float, help="SGD learning rate.")
@override("--pca", type=OptionalInt(), help="PCA-whitening dimension ('none': no PCA).")
@override(
    "--min-steps",
    "min_steps",
    type=OptionalInt(),
    help="Train at least this many steps on each clustering (small data sets need it; "
    "'none': one pass over the images).",
)
@data_options
@override(
    "--check-labels",
    "check_labels",
    type=click.Path(dir_okay=False),
    help="CSV of a few images' labels (file or row, label) for unlabelled images: the run "
    "scores every clustering on them and keeps its best epoch.",
)
@override(
    "--tensorboard",
    type=click.Path(file_okay=False),
    help="Write each epoch's clustering diagnostics (loss, NMI(t, t-1), empty clusters, "
    "k-means objective, cluster sizes, phase times, scores) for TensorBoard into a "
    "sub-folder of this folder named after the run directory (recipe key [training] "
    "tensorboard); view with: tensorboard --logdir DIR.",
)
@devices_option
@processes_options
@deterministic_option
@output_options
@click.option(
    "--resume",
    type=click.Path(path_type=Path),
    help="Continue the unfinished run in this directory, with its own settings and on its "
    "own backend (RECIPE may be left out).",
)
def train(
    recipe,
    backend,
    devices,
    coordinator,
    num_processes,
    process_id,
    out,
    overwrite,
    resume,
    **overrides,
):
    """Pretrain with DeepCluster as RECIPE says (a recipe name or a .toml file).

    Options override the recipe. With --resume, RECIPE may be left out: the
    run continues with its own settings, on the backend it trained on. Writes
    a run directory: config.toml,
    history.csv (one row per epoch), metrics.jsonl (the same as JSON lines, with
    the cluster sizes), pseudo_labels/epoch_NNN.npz, model.keras and summary.json.

    \b
    Examples:
      deepcluster train digits
      deepcluster train fashion_mnist --source idx \\
          --data-dir /usr/share/datasets/fashion-mnist --epochs 3 --backend jax
      deepcluster train mnist -k 10 --halt-after 5 --limit 10000 --out runs/mnist-k10
      deepcluster train --resume runs/digits-tensorflow-k10-seed61   # after a crash
      deepcluster train digits --tensorboard runs/tb   # then: tensorboard --logdir runs/tb
      deepcluster train cifar10 --backend jax --devices 4   # data-parallel on 4 GPUs
      deepcluster train imagenet --data-dir /data/imagenet --backend jax \\
          --coordinator host0:1234 --num-processes 8 --process-id $I   # on each host I
    """
    # The backend of a resumed run was set from its checkpoint before keras was imported
    # (cli/__init__.py); RunRecorder refuses another one.
    if resume is not None and recipe is None:
        if not RunDirectory(resume).is_run:
            raise click.UsageError(
                f"{resume} holds no run ({RunDirectory.CONFIG}); nothing to resume."
            )
        recipe = str(resume / RunDirectory.CONFIG)
    elif recipe is None:
        raise click.UsageError("Missing argument 'RECIPE' (or --resume RUN_DIR to continue a run).")
    recipe = resolve_recipe(recipe, overrides)
    use_backend(backend)
    several = (coordinator, num_processes, process_id) != (None, None, None)
    if several:
        with user_errors():
            devices = multi_process.join(
                coordinator, num_processes, process_id, devices, recipe, resume
            )
    hint = "relaunch them all with --resume on the run directory to continue."
    with multi_process.failing_fast(several, hint):
        _train(recipe, devices, out, overwrite, resume, overrides)


def _train(recipe, devices, out, overwrite, resume, overrides):
    if resume is not None:
        with user_errors():
            given = [key for key, value in overrides.items() if value is not None]
            recipe = recipe_to_resume(RunDirectory(resume), recipe, given)
        out = resume
    import keras

    from keras_deepcluster.platform import processes  # import keras, after the backend is set
    from keras_deepcluster.runs import pretraining
    from keras_deepcluster_cli.progress import (
        TrainingProgress,
        cache_progress,
        effect_lines,
        metrics_table,
    )

    console = make_console()
    console.quiet = processes.process_index() != 0  # process 0 speaks for the job
    backend = keras.backend.backend()
    out = out or Path("runs") / f"{recipe.name}-{backend}-k{recipe.clusters}-seed{recipe.seed}"
    _print_config(console, recipe, backend, out, devices)
    progress = TrainingProgress(console, recipe.epochs)
    continue_hint = f"continue with: deepcluster train {recipe.name} --resume {out}"
    with user_errors(), interruptible(console, continue_hint), cache_progress(console) as cache_bar:

        def on_progress(phase, done, total):
            (
                cache_bar(done, total)
                if phase == "cache"
                else progress.on_progress(phase, done, total)
            )

        try:
            run = pretraining.train(
                recipe,
                out,
                resume=resume is not None,
                overwrite=overwrite,
                devices=devices,
                callbacks=[progress],
                on_progress=on_progress,
                on_note=partial(console.print, soft_wrap=True),  # paths kept whole
            )
        except OSError as error:  # a full disk, a vanished directory, ...
            if not RunDirectory(out).is_run:
                raise
            raise OSError(
                f"{error}. The epochs before it are saved in {out}; fix this, then {continue_hint}"
            ) from None
        finally:
            progress.progress.stop()
    if console.quiet:
        return
    console.print(metrics_table(run.read_history(), title=f"{recipe.name} on {backend}"))
    summary = run.read_json(RunDirectory.SUMMARY, keys=("wall_seconds",))
    for line in effect_lines(summary):
        console.print(line)
    console.print(f"finished in {summary['wall_seconds']:.1f} s; run directory: {out}")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--layer", help="Layer to tap (default: the recipe's [probe] layer).")
@click.option("--epochs", type=click.IntRange(min=1), help="Probe epochs (default: the recipe's).")
@click.option(
    "--random",
    is_flag=True,
    help="Probe the untrained network of the same seed instead of the trained one.",
)
@click.option(
    "--knn",
    is_flag=True,
    help="Also the weighted kNN classifier (cosine, k = 20 and 200, T = 0.07) on the same "
    "layer and splits; writes knn.json.",
)
@run_data_option
@cache_dir_option
def probe(run_dir, layer, epochs, random, knn, data_dir):
    """Linear probe of the run in RUN_DIR: test accuracy of a linear classifier
    trained on a frozen layer. Writes probe.json (probe_random.json with --random).

    \b
    Examples:
      deepcluster probe runs/digits-tensorflow-k10-seed61
      deepcluster probe runs/digits-tensorflow-k10-seed61 --random --epochs 5
      deepcluster probe runs/digits-tensorflow-k10-seed61 --knn
    """
    console = make_console()
    run = RunDirectory(run_dir)
    with user_errors():
        run.read_config()
        run.lock()
        recipe = load_recipe(run_dir / RunDirectory.CONFIG)
        use_backend(None)
        from keras_deepcluster.runs import probes
        from keras_deepcluster_cli.progress import load_data

        data = load_data(console, recipe, run, data_dir)
        with console.status("linear probe"):
            report = probes.probe(recipe, data, run, layer, epochs, random)
        if knn:
            with console.status("kNN probe"):
                neighbours = probes.knn_probe(recipe, data, run, layer, random=random)
    console.print(
        f"{report['model']} {report['layer']} ({report['feature_dim']} features): "
        f"accuracy {report['accuracy']:.2%} (best epoch {report['best_accuracy']:.2%}) on "
        f"{report['test_images']} images ({report['test_split']}); written to {run_dir}"
    )
    if knn:
        accuracies = ", ".join(f"k={k} {value:.2%}" for k, value in neighbours["accuracy"].items())
        console.print(f"weighted kNN (T={neighbours['temperature']}): {accuracies}")


@main.command()
@click.argument("source", type=click.Choice(["folder", "idx", "npz", "tfds"]))
@click.option(
    "--data-dir",
    type=click.Path(exists=True, path_type=Path),
    help="The image folder, IDX directory, .npz file or TFDS data_dir.",
)
@click.option("--name", help="The dataset's name (for tfds: the TFDS name, e.g. cifar10).")
@click.option(
    "--size",
    type=click.IntRange(min=1),
    help="Side S of the cached images: shorter side resized to S, centre S x S crop "
    "(default: the source's own size; folders of mixed sizes need it).",
)
@click.option(
    "--channels",
    type=click.Choice(["1", "3"]),
    help="1 (grayscale) or 3 (RGB); default: the source's (3 for folders).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Cache only the first N training images.")
@click.option(
    "--labels", type=click.Choice(CHOICES["labels"]), default="auto", show_default=True, help=LABELS
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="The cache folder (default: named after the settings, in --cache-dir).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Decoding processes (default: the CPUs available).",
)
@click.option(
    "--no-download",
    is_flag=True,
    help="tfds: fail rather than download a dataset that is not prepared.",
)
@cache_dir_option
def prepare(source, data_dir, name, size, channels, limit, labels, out, workers, no_download):
    """Decode SOURCE once into an image cache that every command reads from disk.

    A folder's images may differ in size, mode (grayscale, RGB, RGBA,
    palette, CMYK, 16-bit) and format (anything Pillow reads): each becomes
    S x S (shorter side resized to S, centre crop; EXIF orientation applied,
    transparency on white). Unreadable files are skipped and listed. A cache
    that matches its source is reused; one whose source changed is rebuilt;
    an interrupted build resumes. train, space, sweep, select and probe do
    this by themselves on first use; train reads a cache built here with
    --source cache --data-dir CACHE.

    \b
    Examples:
      deepcluster prepare folder --data-dir ~/photos --size 64 --out ~/photos-64
      deepcluster train cifar10 --source cache --data-dir ~/photos-64
      deepcluster prepare tfds --name cifar10 --size 32
    """
    use_backend(None)
    from keras_deepcluster import data
    from keras_deepcluster_cli.progress import cache_progress, report_cache

    console = make_console()
    if source != "tfds" and data_dir is None:
        raise click.UsageError(f"SOURCE {source} needs --data-dir.")
    if source == "tfds" and not name:
        raise click.UsageError("SOURCE tfds needs --name (the TFDS dataset name).")
    with user_errors(), interruptible(console, "run the same command again to resume the build"):
        with cache_progress(console) as on_progress:
            cache = data.prepare(
                source,
                name,
                data_dir,
                size=size,
                channels=None if channels is None else int(channels),
                limit=limit,
                out=out,
                workers=workers,
                on_progress=on_progress,
                on_note=partial(console.print, soft_wrap=True),  # paths kept whole
                download=not no_download,
                labels=labels,
            )
    report_cache(console, cache)
    seconds = cache.manifest["seconds"]
    images = sum(entry["shape"][0] for entry in cache.manifest["splits"].values())
    done = (
        f"built in {seconds:.1f} s ({images / max(seconds, 1e-9):,.0f} images/s)"
        if cache.built
        else "up to date (reused)"
    )
    console.print(f"{done}; use it with --source cache --data-dir {cache.path}")


@main.command()
def recipes():
    """List the bundled recipes with their dataset, backbone and defaults.

    \b
    Example:
      deepcluster recipes
    """
    console = make_console()
    table = Table(title="recipes (deepcluster train NAME)", box=box.SIMPLE_HEAD)
    for column in (
        "name",
        "dataset",
        "source",
        "backbone",
        "k",
        "epochs",
        "batch",
        "lr",
        "momentum",
        "wd",
        "pca",
        "seed",
        "probe",
    ):
        table.add_column(column, no_wrap=True)
    loaded = [load_recipe(name) for name in recipe_names()]
    for r in loaded:
        table.add_row(
            r.name,
            r.dataset,
            r.source,
            r.backbone,
            str(r.clusters),
            str(r.epochs),
            str(r.batch_size),
            f"{r.lr:g}",
            f"{r.momentum:g}",
            f"{r.weight_decay:g}",
            str(r.pca or "–"),
            str(r.seed),
            r.probe_layer or "–",
        )
    console.print(table)
    for r in loaded:
        console.print(f"[bold]{r.name}[/bold]: {r.description}")


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="Also check this location (TFDS data_dir, IDX or image folder, .npz file).",
)
def datasets(data_dir):
    """Each data source and whether it can be loaded here right now.

    \b
    Examples:
      deepcluster datasets
      deepcluster datasets --data-dir ~/tensorflow_datasets
    """
    use_backend(None)
    from keras_deepcluster import data

    console = make_console()
    checks = [("digits", "digits", None), ("idx", "fashion_mnist", DEBIAN_FASHION_MNIST)]
    checks += [("tfds", name, None) for name in TFDS_DATASETS]
    if data_dir is not None:
        checks += [("tfds", name, data_dir) for name in TFDS_DATASETS]
        checks += [(source, "", data_dir) for source in ("idx", "npz", "folder")]
    table = Table(title="data sources (deepcluster train RECIPE --source S --data-dir D)")
    for column in ("source", "dataset"):
        table.add_column(column)
    # Paths are wrapped, never cut short: a user copies them from here.
    for column in ("location", "loadable here"):
        table.add_column(column, overflow="fold")
    with console.status("checking data sources"):
        for source, name, path in checks:
            reason = data.unavailable_reason(source, name, path)
            where = str(path) if path else ("bundled" if source == "digits" else "default")
            table.add_row(
                source,
                name or "–",
                where,
                "[green]yes[/green]" if reason is None else f"[red]no[/red]: {reason}",
            )
    console.print(table)


def _print_config(
    console: Console, recipe: Recipe, backend: str, out: Path, devices: int = 1
) -> None:
    on = f" on {devices} devices" if devices > 1 else ""
    console.rule(f"deepcluster train {recipe.name} · backend {backend}{on}")
    for section, settings in recipe.sections().items():
        pairs = "  ".join(f"{key}={value}" for key, value in settings.items())
        console.print(f"[bold]{section:>10}[/bold]  {pairs}")
    console.print(f"run directory: {out}")


for _command in (
    random_filters.space,
    sweep.sweep,
    report.report,
    selection.select,
    results.export,
    results.show,
):
    main.add_command(_command)

if __name__ == "__main__":
    main()
