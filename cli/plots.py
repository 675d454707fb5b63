"""The PNG figures of `deepcluster space` and `deepcluster report` (matplotlib, no display)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

from keras_deepcluster.analysis.statistics import finite  # noqa: E402

# Above this many runs a legend hides the curves.
MAX_LEGEND = 12


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def space_histogram(rows: list[dict], path: Path, title: str) -> Path:
    """Histogram of the NMI of the seeds' random filters."""
    nmis = [row["nmi"] for row in rows]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.hist(nmis, bins=max(5, min(30, len(nmis) // 3)), color="tab:blue", edgecolor="white")
    mean = sum(nmis) / len(nmis)
    axis.axvline(mean, color="black", linestyle="--", label=f"mean {mean:.3f} ({len(nmis)} seeds)")
    axis.set(title=title, xlabel="NMI(k-means on random features, labels)", ylabel="seeds")
    axis.legend()
    return _save(figure, path)


def nmi_curves(runs: list[dict], path: Path) -> Path:
    """NMI against the labels and NMI(t, t-1) per epoch, one line per run."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for run in runs:
        epochs = [row["epoch"] for row in run["history"]]
        if "nmi_labels" in run["history"][0]:
            left.plot(epochs, [row["nmi_labels"] for row in run["history"]], label=run["name"])
        right.plot(epochs, [row["nmi_previous"] for row in run["history"]], label=run["name"])
    left.set(title="Pseudo-labels against true labels", xlabel="epoch", ylabel="NMI")
    right.set(title="Stability: consecutive clusterings", xlabel="epoch", ylabel="NMI(t, t-1)")
    if len(runs) <= MAX_LEGEND:
        right.legend(fontsize=7)
    return _save(figure, path)


def _error_bars(groups: list[dict]) -> list[list[float]]:
    """Distances from each group's mean probe to its interval ends, in points (0 if none)."""
    return [
        [100 * (g["probe_mean"] - g["probe_low"]) if finite(g["probe_low"]) else 0 for g in groups],
        [
            100 * (g["probe_high"] - g["probe_mean"]) if finite(g["probe_high"]) else 0
            for g in groups
        ],
    ]


def probe_against_k(groups: list[dict], runs: list[dict], path: Path) -> Path:
    """Linear-probe accuracy against k: each seed's run (points) and each k's mean
    with its 95 % bootstrap interval (bars); untrained networks as crosses."""
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.scatter(
        [run["clusters"] for run in runs],
        [100 * run["probe"] for run in runs],
        color="tab:blue",
        alpha=0.35,
        s=14,
        label="one seed",
    )
    groups = sorted(groups, key=lambda g: g["clusters"])
    axis.errorbar(
        [g["clusters"] for g in groups],
        [100 * g["probe_mean"] for g in groups],
        yerr=_error_bars(groups),
        color="tab:blue",
        marker="o",
        capsize=4,
        label="DeepCluster: mean, 95 % interval",
    )
    random = [
        (run["clusters"], 100 * run["probe_random"])
        for run in runs
        if finite(run.get("probe_random"))
    ]
    if random:
        axis.scatter(*zip(*random), marker="x", color="tab:gray", label="random init, same seed")
    axis.set(
        xscale="log",
        title="Linear probe against the number of clusters",
        xlabel="k (log scale)",
        ylabel="test accuracy (%)",
    )
    axis.legend(fontsize=8)
    return _save(figure, path)


def probe_against_initial_nmi(runs: list[dict], path: Path, correlation: float | None) -> Path:
    """Final probe accuracy against the epoch-0 NMI (the seed's filter quality)."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for run in runs:
        x, y = run["initial_nmi"], 100 * run["probe"]
        axis.scatter(x, y, color="tab:blue")
        axis.annotate(
            f"seed {run['seed']}, k={run['clusters']}",
            (x, y),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    axis.set(
        title="Does filter quality predict the result?"
        + ("" if correlation is None else f" (Pearson r = {correlation:.2f})"),
        xlabel="NMI of the first clustering (random filters)",
        ylabel="test accuracy (%)",
    )
    return _save(figure, path)


def halting(rows: list[dict], path: Path) -> Path:
    """Probe difference to never halting (paired by seed; mean and 90 % interval) and
    mean wall time against the halt epoch, with the equivalence margin shaded; one
    line per set of settings (k, epochs)."""
    figure, axis = plt.subplots(figsize=(7, 4.8))
    time_axis = axis.twinx()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    sets = defaultdict(list)
    for row in rows:
        if finite(row.get("difference")):
            sets[(row["clusters"], row["epochs"])].append(row)
    margin = 100 * rows[0]["margin"]
    axis.axhspan(-margin, margin, color="tab:green", alpha=0.12, label=f"±{margin:g} points")
    axis.axhline(0, color="black", linewidth=0.8)
    for color, ((k, epochs), group) in zip(colors, sets.items()):
        group = sorted(group, key=lambda row: row["halted_at"])
        x = [row["halted_at"] for row in group]
        means = [100 * row["difference"] for row in group]
        axis.errorbar(
            x,
            means,
            yerr=[
                [m - 100 * row["difference_low"] for m, row in zip(means, group)],
                [100 * row["difference_high"] - m for m, row in zip(means, group)],
            ],
            fmt="o-",
            color=color,
            capsize=4,
            label=f"k={k}: probe minus never halted (90 % interval)",
        )
        for row, m in zip(group, means):
            axis.annotate(
                row["halt"],
                (row["halted_at"], m),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
        time_axis.plot(
            x,
            [row["wall_seconds"] for row in group],
            "s--",
            color=color,
            alpha=0.5,
            label=f"k={k}: mean wall time",
        )
        time_axis.axhline(
            group[0]["wall_seconds"] + group[0]["wall_seconds_saved"],
            color=color,
            linestyle=":",
            alpha=0.5,
            label=f"k={k}: never halted, mean wall time",
        )
    axis.set_xlim(0, epochs + 0.5)
    axis.set(
        title="Stopping the clustering early (paired by seed)",
        ylabel="probe accuracy difference (points)",
        xlabel=f"epochs clustered before the labels froze (mean over seeds; {epochs} = never)",
    )
    time_axis.set_ylabel("wall time of the run (s) (dashed)")
    lines = axis.get_legend_handles_labels()[0] + time_axis.get_legend_handles_labels()[0]
    axis.legend(
        lines,
        [line.get_label() for line in lines],
        fontsize=7,
        ncol=2,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.15),
    )
    return _save(figure, path)


def interaction(tests: list[tuple[dict, object]], path: Path) -> Path:
    """Mean probe against k, one line per filter-quality tercile, with 95 % intervals."""
    figure, axes = plt.subplots(1, len(tests), figsize=(6 * len(tests), 4), squeeze=False)
    for axis, (settings, result) in zip(axes[0], tests):
        for shift, (name, seeds, cells, intervals) in enumerate(
            zip(("worst", "middle", "best"), result.groups, result.cells, result.intervals)
        ):
            x = [k * 1.06 ** (shift - 1) for k in result.ks]  # side by side on the log axis
            means = [100 * c for c in cells]
            axis.errorbar(
                x,
                means,
                yerr=[
                    [m - 100 * low if finite(low) else 0 for m, (low, _) in zip(means, intervals)],
                    [
                        100 * high - m if finite(high) else 0
                        for m, (_, high) in zip(means, intervals)
                    ],
                ],
                fmt="o-",
                capsize=3,
                label=f"{name} third of filters (seeds {', '.join(map(str, seeds))})",
            )
        axis.set(
            xscale="log",
            title=f"Filter quality x k: permutation p = {result.p_permutation:.3f}",
            xlabel="k (log scale)",
            ylabel="mean test accuracy (%)",
        )
        axis.legend(fontsize=7)
    return _save(figure, path)
