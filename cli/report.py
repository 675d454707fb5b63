"""`deepcluster report`: tables and plots of saved runs, without training anything."""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from pathlib import Path

import click
import numpy as np
from rich.table import Table

from keras_deepcluster_cli import plots, space
from keras_deepcluster_cli.directory_lock import lock_folder
from keras_deepcluster_cli.options import make_console, user_errors
from keras_deepcluster_cli.recipe import load_recipe
from keras_deepcluster_cli.run_directory import RunDirectory

# (key, title, format) of the run table and its CSV / Markdown files.
COLUMNS = (
    ("name", "run", "{}"),
    ("recipe", "recipe", "{}"),
    ("backend", "backend", "{}"),
    ("images", "images", "{}"),
    ("clusters", "k", "{}"),
    ("seed", "seed", "{}"),
    ("pca", "pca", "{}"),
    ("epochs", "epochs", "{}"),
    ("halted_at", "halted at", "{}"),
    ("initial_nmi", "NMI epoch 0", "{:.4f}"),
    ("best_nmi", "NMI best", "{:.4f}"),
    ("last_nmi", "NMI last", "{:.4f}"),
    ("probe", "probe acc", "{:.4f}"),
    ("probe_random", "random-init acc", "{:.4f}"),
    ("gain", "gain", "{:+.4f}"),
    ("recluster_seconds", "recluster s", "{:.1f}"),
    ("train_seconds", "train s", "{:.1f}"),
    ("wall_seconds", "wall s", "{:.1f}"),
)


def collect_runs(directories: list[Path]) -> list[dict]:
    """Every finished run under `directories`, as one flat record each."""
    records = []
    for directory in directories:
        for config in sorted(directory.rglob(RunDirectory.CONFIG)):
            run = RunDirectory(config.parent)
            if run.is_finished and (run.path / "history.csv").is_file():
                records.append(_record(run, directory))
    return records


def _record(run: RunDirectory, root: Path) -> dict:
    recipe = load_recipe(run.path / RunDirectory.CONFIG)
    summary, history = run.read_json(RunDirectory.SUMMARY), run.read_history()
    nmis = [row["nmi_labels"] for row in history if "nmi_labels" in row]
    stopped = summary.get("clustering_stopped")
    record = {
        "name": str(run.path.relative_to(root.parent)),
        "recipe": recipe.name,
        "backend": summary["backend"],
        "images": summary["images"],
        "clusters": recipe.clusters,
        "seed": recipe.seed,
        "pca": recipe.pca,
        "epochs": recipe.epochs,
        "halted_at": stopped["epoch"] if stopped else recipe.epochs,
        "initial_nmi": nmis[0] if nmis else None,
        "best_nmi": max(nmis) if nmis else None,
        "last_nmi": nmis[-1] if nmis else None,
        "wall_seconds": summary["wall_seconds"],
        "recluster_seconds": sum(
            row[key]
            for row in history
            for key in ("seconds_features", "seconds_pca", "seconds_kmeans")
        ),
        "train_seconds": sum(row["seconds_train"] for row in history),
        "history": history,
        "probe": None,
        "probe_random": None,
    }
    for name in ("probe", "probe_random"):
        if (run.path / f"{name}.json").is_file():
            record[name] = run.read_json(f"{name}.json")["accuracy"]
    if record["probe"] is not None and record["probe_random"] is not None:
        record["gain"] = record["probe"] - record["probe_random"]  # over its own random init
    return record


@click.command()
@click.argument(
    "directories",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Where to write the tables and plots (default: DIRECTORY/report).",
)
def report(directories, out):
    """Tables (terminal, CSV, Markdown) and PNG plots of the finished runs and
    `space` results found under DIRECTORIES. Trains nothing.

    \b
    Plots: NMI against the labels and NMI(t, t-1) per epoch; probe accuracy
    against k; probe accuracy against the seed's initial NMI; probe accuracy
    and wall time against the halt epoch; the NMI histogram of each `space`.

    \b
    Examples:
      deepcluster report runs/sweep-fashion_mnist
      deepcluster report runs/sweep-k runs/sweep-halt runs/space-fashion_mnist-k5 --out docs/results
    """
    console = make_console()
    with user_errors():
        runs = collect_runs(list(directories))
        spaces = sorted(p.parent for d in directories for p in d.rglob(space.RESULTS))
        if not runs and not spaces:
            raise ValueError(
                f"No finished runs (config.toml with summary.json) or space results "
                f"({space.RESULTS}) under {', '.join(map(str, directories))}."
            )
        out = out or directories[0] / "report"
        out.mkdir(parents=True, exist_ok=True)
        lock_folder(out)
        written = write_tables(runs, out) if runs else []
        written += draw_plots(runs, out)
        for directory in spaces:
            rows = space.read_results(RunDirectory(directory))
            console.print(space.results_table(rows, f"space: {directory}"))
            console.print(space.summary(rows))
            written.append(
                plots.space_histogram(
                    rows,
                    out / f"space_{directory.name}.png",
                    f"random-filter quality: {directory.name}",
                )
            )
    if runs:
        console.print(table(runs, COLUMNS, f"{len(runs)} runs"))
        console.print(table(group_summary(runs), GROUP_COLUMNS, "seeds pooled (mean, sample sd)"))
        r = filter_quality_correlation(runs)
        if r is not None:
            console.print(f"Pearson r(NMI epoch 0, probe accuracy) over the probed runs: {r:.2f}")
    console.print("written: " + ", ".join(str(path) for path in written))


def _cell(record: dict, key: str, fmt: str) -> str:
    value = record.get(key)
    return "–" if not plots.finite(value) else fmt.format(value)


def table(rows: list[dict], columns, title: str) -> Table:
    result = Table(title=title)
    for _, name, _ in columns:
        result.add_column(name, justify="right")
    for row in rows:
        result.add_row(*(_cell(row, key, fmt) for key, _, fmt in columns))
    return result


def group_summary(runs: list[dict]) -> list[dict]:
    """Runs that differ only in their seed, pooled: mean and spread of the probes."""
    groups = defaultdict(list)
    for r in runs:
        groups[
            (r["recipe"], r["images"], r["clusters"], r["pca"], r["epochs"], r["halted_at"])
        ].append(r)
    rows = []
    for (recipe, images, k, pca, epochs, halted_at), members in groups.items():
        row = {
            "recipe": recipe,
            "images": images,
            "clusters": k,
            "pca": pca,
            "epochs": epochs,
            "halted_at": halted_at,
            "seeds": len(members),
        }
        for key in ("initial_nmi", "last_nmi", "probe", "probe_random", "gain", "wall_seconds"):
            values = [m[key] for m in members if plots.finite(m.get(key))]
            row[key], row[f"{key}_sd"] = mean_and_spread(values) if values else (None, None)
        rows.append(row)
    return rows


GROUP_COLUMNS = (
    ("recipe", "recipe", "{}"),
    ("images", "images", "{}"),
    ("clusters", "k", "{}"),
    ("pca", "pca", "{}"),
    ("epochs", "epochs", "{}"),
    ("halted_at", "halted at", "{}"),
    ("seeds", "seeds", "{}"),
    ("initial_nmi", "NMI epoch 0", "{:.4f}"),
    ("last_nmi", "NMI last", "{:.4f}"),
    ("probe", "probe acc", "{:.4f}"),
    ("probe_sd", "± sd", "{:.4f}"),
    ("probe_random", "random-init acc", "{:.4f}"),
    ("probe_random_sd", "± sd", "{:.4f}"),
    ("gain", "gain", "{:+.4f}"),
    ("gain_sd", "± sd", "{:.4f}"),
    ("wall_seconds", "wall s", "{:.1f}"),
)


def write_tables(runs: list[dict], out: Path) -> list[Path]:
    """runs.csv/.md (one row per run) and groups.csv/.md (seeds pooled)."""
    written = []
    for name, rows, columns in (
        ("runs", runs, COLUMNS),
        ("groups", group_summary(runs), GROUP_COLUMNS),
    ):
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow([key for key, _, _ in columns])
        writer.writerows(
            [[_cell(r, key, fmt).replace("–", "") for key, _, fmt in columns] for r in rows]
        )
        (out / f"{name}.csv").write_text(text.getvalue())
        lines = [
            "| " + " | ".join(title for _, title, _ in columns) + " |",
            "|" + "---|" * len(columns),
        ]
        lines += [
            "| " + " | ".join(_cell(r, key, fmt) for key, _, fmt in columns) + " |" for r in rows
        ]
        (out / f"{name}.md").write_text("\n".join(lines) + "\n")
        written += [out / f"{name}.csv", out / f"{name}.md"]
    return written


def draw_plots(runs: list[dict], out: Path) -> list[Path]:
    """Every plot the runs have the data for."""
    written = []
    if runs:
        written.append(plots.nmi_curves(runs, out / "nmi_curves.png"))
    probed = [r for r in runs if plots.finite(r["probe"])]
    if len({r["clusters"] for r in probed}) >= 2:
        written.append(plots.probe_against_k(probed, out / "probe_vs_k.png"))
    with_nmi = [r for r in probed if plots.finite(r["initial_nmi"])]
    if len({r["seed"] for r in with_nmi}) >= 2:
        written.append(
            plots.probe_against_initial_nmi(
                with_nmi, out / "probe_vs_initial_nmi.png", filter_quality_correlation(runs)
            )
        )
    groups = defaultdict(list)
    for r in probed:
        groups[
            f"seed {r['seed']}, k={r['clusters']}" + (f", PCA {r['pca']}" if r["pca"] else "")
        ].append(r)
    groups = {label: rs for label, rs in groups.items() if len({r["halted_at"] for r in rs}) >= 2}
    if groups:
        written.append(plots.halting(groups, out / "halting.png"))
    return written


def filter_quality_correlation(runs: list[dict]) -> float | None:
    """Pearson r between the epoch-0 NMI and the probe accuracy, over runs of 3+ seeds.

    None when fewer than three seeds were probed (then the NMIs barely vary).
    """
    probed = [r for r in runs if plots.finite(r["initial_nmi"]) and plots.finite(r["probe"])]
    if len({r["seed"] for r in probed}) < 3:
        return None
    pairs = [(r["initial_nmi"], r["probe"]) for r in probed]
    return float(np.corrcoef(np.array(pairs).T)[0, 1])


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
