"""`deepcluster space`: the quality of the random filters of many seeds (paper §4.4)."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
from rich.table import Table

from keras_deepcluster.analysis.random_filters import (
    SPACE_RESULTS,
    read_space_results,
    score_random_filters,
)
from keras_deepcluster.runs.run_directory import RunDirectory
from keras_deepcluster_cli.options import (
    RUN_AGAIN,
    IntList,
    backend_option,
    checked,
    data_options,
    interruptible,
    make_console,
    output_options,
    resolve_recipe,
    use_backend,
    user_errors,
)

HISTOGRAM = "space_nmi.png"


@click.command()
@click.argument("recipe")
@click.option(
    "--seeds",
    required=True,
    type=IntList(),
    help="Seeds to score: integers and ranges, e.g. 0-99 or 1,5,9-12.",
)
@click.option("--clusters", "-k", type=int, callback=checked, help="k (default: the recipe's).")
@backend_option
@data_options
@output_options
def space(recipe, seeds, clusters, backend, out, overwrite, **data):
    """Random-filter quality: for each seed, cluster the features of the
    untrained network once and score the clusters against the labels (NMI,
    mean per-cluster label entropy and noise). Writes space.csv and a
    histogram; resumable: run it again and it scores only the missing seeds.

    The k-means of a seed is the first clustering of `deepcluster train` with
    that seed, so NMI here is that run's epoch-0 NMI.

    \b
    Examples:
      deepcluster space fashion_mnist --seeds 0-99 --source idx \\
          --data-dir /usr/share/datasets/fashion-mnist
      deepcluster space digits --seeds 0-19 -k 10 --out runs/space-digits
    """
    if any(seed < 0 for seed in seeds):
        raise click.BadParameter("seeds must be >= 0.", param_hint="--seeds")
    recipe = resolve_recipe(recipe, {"clusters": clusters, **data})
    use_backend(backend)
    from keras_deepcluster_cli import plots
    from keras_deepcluster_cli.progress import load_data

    console = make_console()
    out = out or Path("runs") / f"space-{recipe.name}-k{recipe.clusters}"
    run = RunDirectory(out)
    with user_errors():
        run.lock()  # before loading: another process may be scoring here
        data_ = load_data(console, recipe)
        if data_.y_train is None:
            raise ValueError(
                f"{recipe.dataset} has no labels; `space` scores clusters against labels."
            )
        resumed = run.open(recipe.replace(seed=0).to_toml(), overwrite)
        done = {row["seed"] for row in read_space_results(run)}
        missing = sum(seed not in done for seed in seeds)
        console.print(
            f"space: {recipe.name}, k={recipe.clusters}, {len(data_.x_train)} images; "
            f"{len(seeds) - missing} of {len(seeds)} seeds already scored"
            + (" (resumed)" if resumed else "")
        )
        scores = score_random_filters(recipe, seeds, data_.x_train, data_.y_train, run)
        status = console.status(f"scoring {missing} seeds")
        with interruptible(console, RUN_AGAIN), status:
            for i, _ in enumerate(scores):
                status.update(f"{i + 1} of {missing} seeds scored")
        scored = {row["seed"]: row for row in read_space_results(run)}
        rows = [scored[seed] for seed in seeds]
        plots.space_histogram(
            rows, run.path / HISTOGRAM, f"{recipe.name}: random-filter quality, k={recipe.clusters}"
        )
    console.print(results_table(rows, f"space {recipe.name} k={recipe.clusters}"))
    console.print(f"{summary(rows)}; written to {out / SPACE_RESULTS} and {out / HISTOGRAM}")


def summary(rows: list[dict]) -> str:
    """Mean, sample sd, median, min and max of the seeds' NMI."""
    nmis = np.array([row["nmi"] for row in rows])
    sd = nmis.std(ddof=1) if len(nmis) > 1 else 0.0
    return (
        f"NMI over {len(nmis)} seeds: mean {nmis.mean():.4f}, sd {sd:.4f}, median "
        f"{np.median(nmis):.4f}, min {nmis.min():.4f}, max {nmis.max():.4f}"
    )


def results_table(rows: list[dict], title: str) -> Table:
    """The seeds' scores, best NMI first."""
    table = Table(title=title)
    for column in ("seed", "NMI", "label entropy", "label noise", "seconds"):
        table.add_column(column, justify="right")
    for row in sorted(rows, key=lambda r: -r["nmi"]):
        table.add_row(
            f"{row['seed']:.0f}",
            f"{row['nmi']:.4f}",
            f"{row['label_entropy']:.3f}",
            f"{row['label_noise']:.3f}",
            f"{row['seconds']:.1f}",
        )
    return table
