"""`deepcluster sweep`: a grid of training runs (and probes), resumable."""

from __future__ import annotations

import json
from pathlib import Path

import click

from keras_deepcluster.analysis.sweep import grid_recipes, run_name
from keras_deepcluster.platform.directory_lock import lock_folder
from keras_deepcluster.runs.recipe import RecipeError
from keras_deepcluster.runs.run_directory import RunDirectory
from keras_deepcluster_cli.options import (
    RUN_AGAIN,
    IntList,
    backend_option,
    checked,
    data_options,
    deterministic_option,
    devices_option,
    halt_options,
    interruptible,
    make_console,
    output_options,
    override,
    resolve_recipe,
    use_backend,
    user_errors,
)


@click.command()
@click.argument("recipe")
@click.option(
    "--clusters",
    "-k",
    type=IntList(),
    callback=checked,
    help="Values of k, e.g. 5,10,50,200 (default: the recipe's).",
)
@click.option(
    "--seeds",
    "seed",
    type=IntList(),
    callback=checked,
    help="Seeds, e.g. 0-4 or 6,39,61 (default: the recipe's).",
)
@click.option(
    "--halt-after",
    "halt_after",
    type=IntList(allow_none=True),
    callback=checked,
    help="Halt epochs, e.g. 1,5,10,none (default: the recipe's).",
)
@click.option(
    "--pca",
    type=IntList(allow_none=True),
    callback=checked,
    help="PCA dimensions, e.g. 64,256,none (default: the recipe's).",
)
@override("--epochs", type=int, help="Epochs of every run.")
@halt_options
@click.option("--probe", is_flag=True, help="Linear-probe every finished run (probe.json).")
@click.option(
    "--probe-random",
    is_flag=True,
    help="Also probe each run's untrained network (probe_random.json).",
)
@click.option(
    "--probe-epochs", type=click.IntRange(min=1), help="Probe epochs (default: the recipe's)."
)
@override(
    "--tensorboard",
    type=click.Path(file_okay=False),
    help="Write each run's clustering diagnostics per epoch for TensorBoard into a sub-folder "
    "of this folder per run, DIR/<--out's name>/<run> (e.g. sweep-digits/k5-seed0-haltnone-"
    "pcanone; recipe key [training] tensorboard); compare them with: tensorboard --logdir DIR.",
)
@backend_option
@data_options
@devices_option
@deterministic_option
@output_options
def sweep(
    recipe,
    clusters,
    seed,
    halt_after,
    pca,
    probe,
    probe_random,
    probe_epochs,
    backend,
    devices,
    out,
    overwrite,
    **overrides,
):
    """Train RECIPE for every combination of the given k, seeds, halt epochs and
    PCA dimensions: one run directory each under --out. Resumable: finished
    runs (and probes) are kept, unfinished ones start again.

    \b
    Examples:
      deepcluster sweep fashion_mnist --clusters 5,10,50,200 --seeds 61 --probe \\
          --source idx --data-dir /usr/share/datasets/fashion-mnist --epochs 15
      deepcluster sweep digits --seeds 0-2 --halt-after 1,3,none --probe --probe-random
      deepcluster sweep digits -k 5,10,20 --tensorboard runs/tb   # tensorboard --logdir runs/tb
    """
    base = resolve_recipe(recipe, overrides)
    use_backend(backend)
    grid = {
        "clusters": clusters or [base.clusters],
        "seed": seed or [base.seed],
        "halt_after": halt_after or [base.halt_after],
        "pca": pca or [base.pca],
    }
    try:
        recipes = grid_recipes(base, grid)
    except RecipeError as error:
        raise click.UsageError(str(error)) from None
    import keras

    from keras_deepcluster.runs import build, pretraining, probes
    from keras_deepcluster.runs.diagnostics import check_log_dir
    from keras_deepcluster_cli.progress import TrainingProgress, load_data, progress_bars

    console = make_console()
    out = out or Path("runs") / f"sweep-{base.name}"
    with user_errors():
        if out.exists() and not out.is_dir():
            raise ValueError(f"{out} is a file, not a directory; choose another --out.")
        if base.tensorboard is not None:
            check_log_dir(base.tensorboard)  # before the sweep's folder is written
            # DIR/<sweep>/<run>: two sweeps' runs of the same settings never share a curve.
            log_dir = str(Path(base.tensorboard) / out.resolve().name)
            recipes = [r.replace(tensorboard=log_dir) for r in recipes]
        build.check_devices(devices, recipes)
        runs = [RunDirectory(out / run_name(r)) for r in recipes]
        for run, r in zip(runs, recipes):  # refuse other settings before any work
            run.check_replaceable(r.to_toml(), overwrite)
        out.mkdir(parents=True, exist_ok=True)
        lock_folder(out)  # one sweep per folder: a second process is refused
        (out / "sweep.json").write_text(
            json.dumps(
                {"recipe": base.name, "grid": grid, "runs": [run.path.name for run in runs]},
                indent=1,
            )
        )
        data = load_data(console, base)
        console.print(f"sweep {base.name}: {len(runs)} runs on {len(data.x_train)} images -> {out}")
        bars = progress_bars(console)
        grid_task = bars.add_task("sweep", total=len(runs))
        with interruptible(console, RUN_AGAIN), bars:
            for run, r in zip(runs, recipes):
                # Each run builds its own models: start each from a fresh Keras session, as
                # `space` and `select` do (benchmarks/sweep_memory.py: memory per run).
                keras.utils.clear_session()
                bars.update(grid_task, description=run.path.name[:17])
                progress = TrainingProgress(console, r.epochs, progress=bars)
                pretraining.train_unless_finished(
                    r,
                    data,
                    run,
                    callbacks=[progress],
                    on_progress=progress.on_progress,
                    devices=devices,
                )
                if probe and not (run.path / "probe.json").is_file():
                    probes.probe(r, data, run, epochs=probe_epochs)
                if probe_random and not (run.path / "probe_random.json").is_file():
                    probes.probe(r, data, run, epochs=probe_epochs, random=True)
                summary = run.read_json(RunDirectory.SUMMARY)
                console.print(_line(run, summary))
                bars.advance(grid_task)
    console.print(
        f"done: {len(runs)} runs in {out}; `deepcluster report {out}` tabulates and plots them"
    )


def _line(run: RunDirectory, summary: dict) -> str:
    parts = [f"{run.path.name}: {summary['wall_seconds']:.0f} s"]
    if summary.get("best_nmi_labels") is not None:
        parts.append(f"NMI last {summary['final']['nmi_labels']:.3f}")
    for name in ("probe", "probe_random"):
        if (run.path / f"{name}.json").is_file():
            parts.append(f"{name} {run.read_json(f'{name}.json')['accuracy']:.2%}")
    return ", ".join(parts)
