"""The PNG figures of `deepcluster space` and `deepcluster report` (matplotlib, no display)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

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


def probe_against_k(runs: list[dict], path: Path) -> Path:
    """Linear-probe accuracy against k (points: runs; line: mean per k)."""
    figure, axis = plt.subplots(figsize=(6, 4))
    by_k = defaultdict(list)
    for run in runs:
        by_k[run["clusters"]].append(100 * run["probe"])
        axis.scatter(run["clusters"], 100 * run["probe"], color="tab:blue", alpha=0.6)
    ks = sorted(by_k)
    axis.plot(
        ks, [sum(by_k[k]) / len(by_k[k]) for k in ks], color="tab:blue", label="DeepCluster (mean)"
    )
    random = [
        (run["clusters"], 100 * run["probe_random"])
        for run in runs
        if run.get("probe_random") is not None
    ]
    if random:
        axis.scatter(*zip(*random), marker="x", color="tab:gray", label="random init, same seed")
    axis.set(
        xscale="log",
        title="Linear probe against the number of clusters",
        xlabel="k (log scale)",
        ylabel="test accuracy (%)",
    )
    axis.legend()
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


def halting(groups: dict[str, list[dict]], path: Path) -> Path:
    """Probe accuracy and wall time against the epoch the clustering stopped.

    One pair of lines per group (runs that differ only in when they halted).
    """
    figure, axis = plt.subplots(figsize=(7, 4.5 + 0.25 * len(groups)))
    time_axis = axis.twinx()
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    for color, (label, runs) in zip(
        plt.rcParams["axes.prop_cycle"].by_key()["color"], groups.items()
    ):
        runs = sorted(runs, key=lambda run: run["halted_at"])
        x = [run["halted_at"] for run in runs]
        axis.plot(
            x,
            [100 * run["probe"] for run in runs],
            "o-",
            color=color,
            label=f"{label}: probe accuracy",
        )
        time_axis.plot(
            x,
            [run["wall_seconds"] for run in runs],
            "s--",
            color=color,
            alpha=0.6,
            label=f"{label}: wall time",
        )
    axis.set(
        title="Stopping the clustering early",
        ylabel="test accuracy (%) (solid)",
        xlabel="clustering epochs before the labels froze (= all epochs: never halted)",
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


def finite(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))
