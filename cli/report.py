"""`deepcluster report`: tables, tests and plots of saved runs, without training anything."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import click
from rich.table import Table

from keras_deepcluster.analysis import comparisons
from keras_deepcluster.analysis.random_filters import SPACE_RESULTS, read_space_results
from keras_deepcluster.analysis.runs import NEVER, collect_runs
from keras_deepcluster.analysis.statistics import finite
from keras_deepcluster.platform.directory_lock import lock_folder
from keras_deepcluster.runs.run_directory import RunDirectory
from keras_deepcluster_cli import random_filters
from keras_deepcluster_cli.options import make_console, user_errors

# (key, title, format) of the run table and its CSV / Markdown files.
_RUN_COLUMNS = (
    ("name", "run", "{}"),
    ("recipe", "recipe", "{}"),
    ("backend", "backend", "{}"),
    ("images", "images", "{}"),
    ("clusters", "k", "{}"),
    ("seed", "seed", "{}"),
    ("pca", "pca", "{}"),
    ("epochs", "epochs", "{}"),
    ("halt", "halt", "{}"),
    ("halted_at", "halted at", "{}"),
    ("initial_nmi", "NMI epoch 0", "{:.4f}"),
    ("best_nmi", "NMI best", "{:.4f}"),
    ("last_nmi", "NMI last", "{:.4f}"),
    ("last_acc", "ACC last", "{:.4f}"),
    ("final_nmi", "NMI final", "{:.4f}"),
    ("nmi_change", "NMI change", "{:+.4f}"),
    ("verdict", "verdict", "{}"),
    ("kept_epoch", "kept epoch", "{}"),
    ("test_nmi_untrained", "test NMI untrained", "{:.4f}"),
    ("test_nmi", "test NMI", "{:.4f}"),
    ("test_nmi_change", "test NMI change", "{:+.4f}"),
    ("test_acc", "test ACC", "{:.4f}"),
    ("test_ari", "test ARI", "{:.4f}"),
    ("knn_20", "kNN 20", "{:.4f}"),
    ("knn_200", "kNN 200", "{:.4f}"),
    ("probe", "probe acc", "{:.4f}"),
    ("probe_random", "random-init acc", "{:.4f}"),
    ("gain", "gain", "{:+.4f}"),
    ("recluster_seconds", "recluster s", "{:.1f}"),
    ("train_seconds", "train s", "{:.1f}"),
    ("wall_seconds", "wall s", "{:.1f}"),
)
COLUMNS = tuple(((key,), title, fmt) for key, title, fmt in _RUN_COLUMNS)


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
@click.option(
    "--margin",
    type=click.FloatRange(0, 100, min_open=True),
    default=1.0,
    show_default=True,
    help="Equivalence margin of halting against never halting, in probe points.",
)
def report(directories, out, margin):
    """Tables (terminal, CSV, Markdown), tests and PNG plots of the finished runs,
    `space` results and `select` choices found under DIRECTORIES. Trains nothing.

    \b
    Runs that differ only in their seed form a group: mean, sd and 95 % bootstrap
    interval of the probe, the best and last NMI (groups.*). Halted groups are
    tested for equivalence with never halting, paired by seed (two one-sided
    t-tests, ±--margin points; halting.*). A grid of seeds × k is tested for an
    interaction of filter quality (`space` NMI terciles) with k (permutation
    test; interaction.*). `select` folders are scored against the grid
    (regret; selection.*).

    \b
    Examples:
      deepcluster report runs/sweep-fashion_mnist
      deepcluster report runs/grid runs/space-fashion_mnist --out docs/results/claim1
    """
    console = make_console()
    with user_errors():
        runs = collect_runs(
            list(directories),
            on_damaged=lambda message: console.print(f"Skipped a run: {message}"),
        )
        spaces = sorted(p.parent for d in directories for p in d.rglob(SPACE_RESULTS))
        selections = sorted(p for d in directories for p in d.rglob("selection.json"))
        if not runs and not spaces:
            raise ValueError(
                f"No finished runs (config.toml with summary.json) or space results "
                f"({SPACE_RESULTS}) under {', '.join(map(str, directories))}."
            )
        out = out or directories[0] / "report"
        from keras_deepcluster_cli import plots  # matplotlib: imported only to draw

        out.mkdir(parents=True, exist_ok=True)
        lock_folder(out)
        quality = {}
        written = []
        for directory in spaces:
            rows = read_space_results(RunDirectory(directory))
            quality.update({int(row["seed"]): row["nmi"] for row in rows})
            console.print(random_filters.results_table(rows, f"space: {directory}"))
            console.print(random_filters.summary(rows))
            written.append(
                plots.space_histogram(
                    rows,
                    out / f"space_{directory.name}.png",
                    f"random-filter quality: {directory.name}",
                )
            )
        # Trials and final runs of `select` are listed, not pooled with the grid's seeds.
        pooled = [r for r in runs if r["selection"] is None]
        tables = {
            "runs": (runs, COLUMNS),
            "groups": (comparisons.group_summary(pooled), GROUP_COLUMNS),
            "halting": (
                comparisons.halting_equivalence(pooled, margin / 100),
                HALTING_COLUMNS,
            ),
            "selection": (comparisons.selection_regret(runs, selections), SELECTION_COLUMNS),
        }
        tables["criteria"] = (
            comparisons.regret_summary(tables["selection"][0]),
            CRITERIA_COLUMNS,
        )
        for name, (rows, columns) in tables.items():
            if rows:
                written += write_table(rows, columns, out / name)
                console.print(table(rows, columns, TITLES[name].format(n=len(rows))))
        interactions = comparisons.quality_by_k(pooled, quality)
        if interactions:
            written += write_interactions(interactions, out)
            for settings, result in interactions:
                console.print(describe_interaction(settings, result))
        written += draw_plots(pooled, tables["groups"][0], tables["halting"][0], interactions, out)
    console.print("written: " + ", ".join(str(path) for path in written))


TITLES = {
    "runs": "{n} runs",
    "groups": "{n} groups of seeds: mean, sd, [95 % bootstrap interval]",
    "halting": "halting against never halting, paired by seed (TOST)",
    "selection": "select's choices scored on the grid (regret in probe points)",
    "criteria": "criteria for k over the select draws: probe of the choice, regret",
}


def _percent(value) -> str:
    return f"{100 * value:.2f}"


def _interval(measure: str, scale=_percent):
    """A Markdown/terminal cell `mean ± sd [low, high]` of a group measure."""

    def cell(row: dict) -> str:
        mean, sd = row.get(f"{measure}_mean"), row.get(f"{measure}_sd")
        low, high = row.get(f"{measure}_low"), row.get(f"{measure}_high")
        if not finite(mean):
            return "–"
        text = scale(mean)
        if finite(sd):
            text += f" ± {scale(sd)}"
        if finite(low):
            text += f" [{scale(low)}, {scale(high)}]"
        return text

    return cell


def _nmi(value) -> str:
    return f"{value:.3f}"


def _interval_column(measure: str, title: str, scale=_percent) -> tuple:
    """A column of a group measure: mean, sd and interval in the CSV, one cell on screen."""
    return (
        tuple(f"{measure}_{f}" for f in ("mean", "sd", "low", "high")),
        title,
        _interval(measure, scale),
    )


# (CSV keys, title, Markdown/terminal cell: a format or a function of the row).
GROUP_COLUMNS = (
    (("recipe",), "recipe", "{}"),
    (("backend",), "backend", "{}"),
    (("images",), "images", "{}"),
    (("clusters",), "k", "{}"),
    (("pca",), "pca", "{}"),
    (("epochs",), "epochs", "{}"),
    (("halt",), "halt", "{}"),
    (("seeds",), "seeds", "{}"),
    _interval_column("probe", "probe %"),
    _interval_column("probe_random", "random-init probe %"),
    _interval_column("gain", "gain (points)"),
    _interval_column("best_nmi", "NMI best", _nmi),
    _interval_column("last_nmi", "NMI last", _nmi),
    (("halted_at",), "halted at", "{:.1f}"),
    (("recluster_seconds",), "recluster s", "{:.1f}"),
    (("wall_seconds",), "wall s", "{:.1f}"),
)


def _difference(row: dict) -> str:
    if not finite(row.get("difference")):
        return "–"
    return (
        f"{100 * row['difference']:+.2f} [{100 * row['difference_low']:+.2f}, "
        f"{100 * row['difference_high']:+.2f}]"
    )


HALTING_COLUMNS = (
    (("backend",), "backend", "{}"),
    (("clusters",), "k", "{}"),
    (("epochs",), "epochs", "{}"),
    (("halt",), "halt", "{}"),
    (("seeds",), "seeds", "{}"),
    (("halted_at",), "halted at", "{:.1f}"),
    (("probe",), "probe %", _percent),
    (("probe_never",), "never halted %", _percent),
    (("difference", "difference_low", "difference_high"), "difference [90 % CI]", _difference),
    (("margin",), "margin", lambda m: f"±{100 * m:g}"),
    (("p_tost",), "p (TOST)", "{:.3f}"),
    (("verdict",), "equivalent?", "{}"),
    (("recluster_seconds_saved",), "recluster s saved", "{:.1f}"),
    (("wall_seconds",), "wall s", "{:.1f}"),
    (("wall_seconds_saved",), "wall s saved", "{:.1f}"),
    (("wall_saved_share",), "wall saved", "{:.0%}"),
)


def _regret(key):
    return ((key,), key.removeprefix("regret_") + " regret", lambda v: f"{100 * v:.2f}")


SELECTION_COLUMNS = (
    (("selection",), "select folder", "{}"),
    (("draw",), "draw", "{}"),
    (("criterion",), "criterion", "{}"),
    (("seed",), "seed", "{}"),
    (("clusters",), "k", "{}"),
    (("halt_after",), "halt after", "{}"),
    (("final_probe",), "final probe %", _percent),
    (("final_regret",), "final regret", _percent),
    _regret("regret_probe"),
    _regret("regret_knn"),
    _regret("regret_linear"),
    _regret("regret_nmi"),
    (("grid_best",), "grid best %", _percent),
    (("grid_mean",), "grid mean (random choice) %", _percent),
    (("default_mean",), "recipe's k, mean %", _percent),
)


CRITERIA_COLUMNS = (
    (("criterion",), "criterion", "{}"),
    (("draws",), "draws", "{}"),
    _interval_column("probe", "probe of the choice %"),
    _interval_column("regret", "regret (points)"),
    (("grid_mean",), "random choice %", _percent),
    (("default_mean",), "recipe's k %", _percent),
    (("over_default",), "choice minus recipe's k", lambda v: f"{100 * v:+.2f}"),
)


def _shown(value) -> bool:
    """Whether a table cell has a value: a label, or a finite number (see `finite`)."""
    return isinstance(value, str) or finite(value)


def _cell(row: dict, keys: tuple, fmt) -> str:
    if callable(fmt) and len(keys) > 1:
        return fmt(row)
    value = row.get(keys[0])
    if not _shown(value):
        return "–"
    return fmt(value) if callable(fmt) else fmt.format(value)


def table(rows: list[dict], columns, title: str) -> Table:
    result = Table(title=title)
    for _, name, _ in columns:
        result.add_column(name, justify="right")
    for row in rows:
        result.add_row(*(_cell(row, keys, fmt) for keys, _, fmt in columns))
    return result


def write_table(rows: list[dict], columns, stem: Path) -> list[Path]:
    """`stem`.csv (every number, unformatted) and `stem`.md (the terminal's cells)."""
    keys = [key for group, _, _ in columns for key in group]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(keys)
    writer.writerows([[r[k] if _shown(r.get(k)) else "" for k in keys] for r in rows])
    stem.with_suffix(".csv").write_text(text.getvalue())
    lines = [
        "| " + " | ".join(title for _, title, _ in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += [
        "| " + " | ".join(_cell(r, keys, fmt) for keys, _, fmt in columns) + " |" for r in rows
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return [stem.with_suffix(".csv"), stem.with_suffix(".md")]


def describe_interaction(settings: dict, result) -> str:
    """The interaction test in words (or why there is none)."""
    where = ", ".join(f"{key} {value}" for key, value in settings.items())
    if isinstance(result, str):
        return f"filter quality × k ({where}): not tested: {result}"
    correlations = "; ".join(
        f"k={k}: rho {rho:+.2f} (p {p:.2f})" for k, (rho, p) in result.correlations.items()
    )
    return (
        f"filter quality × k ({where}): seeds in quality terciles {result.groups}; "
        f"interaction F = {result.statistic:.2f}, permutation p = {result.p_permutation:.3f} "
        f"({result.permutations} regroupings), normal-theory p = {result.p_normal:.3f}. "
        f"Spearman rho(filter quality, probe) per k: {correlations}"
    )


def write_interactions(interactions: list, out: Path) -> list[Path]:
    """interaction.md (the cell means and tests) and interaction.json."""
    lines, records = [], []
    for settings, result in interactions:
        lines.append(describe_interaction(settings, result) + "\n")
        records.append({**settings, "result": result if isinstance(result, str) else vars(result)})
        if isinstance(result, str):
            continue
        lines.append(
            "| quality tercile (seeds) | " + " | ".join(f"k={k}" for k in result.ks) + " |"
        )
        lines.append("|" + "---|" * (len(result.ks) + 1))
        for name, seeds, cells in zip(("worst", "middle", "best"), result.groups, result.cells):
            lines.append(
                f"| {name} ({', '.join(map(str, seeds))}) | "
                + " | ".join(f"{100 * c:.2f}" for c in cells)
                + " |"
            )
        lines.append("")
    (out / "interaction.md").write_text("\n".join(lines))
    (out / "interaction.json").write_text(json.dumps(records, indent=1, default=str))
    return [out / "interaction.md", out / "interaction.json"]


def draw_plots(runs, groups, halting, interactions, out: Path) -> list[Path]:
    """Every plot the runs have the data for."""
    from keras_deepcluster_cli import plots  # matplotlib: imported only to draw

    written = []
    if runs:
        written.append(plots.nmi_curves(runs, out / "nmi_curves.png"))
    probed = [r for r in runs if finite(r["probe"])]
    never = [g for g in groups if g["halt"] == NEVER and finite(g["probe_mean"])]
    if len({g["clusters"] for g in never}) >= 2:
        written.append(plots.probe_against_k(never, probed, out / "probe_vs_k.png"))
    with_nmi = [r for r in probed if finite(r["initial_nmi"])]
    if len({r["seed"] for r in with_nmi}) >= 2:
        written.append(
            plots.probe_against_initial_nmi(
                with_nmi,
                out / "probe_vs_initial_nmi.png",
                comparisons.filter_quality_correlation(runs),
            )
        )
    if any(finite(row.get("difference")) for row in halting):
        written.append(plots.halting(halting, out / "halting.png"))
    tested = [(s, r) for s, r in interactions if not isinstance(r, str)]
    if tested:
        written.append(plots.interaction(tested, out / "interaction.png"))
    return written
