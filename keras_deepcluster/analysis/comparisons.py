"""What `deepcluster report` compares: groups of seeds, halting against never
halting, filter quality × k, and the choices of `select` against the grid.

Each function takes the flat run records of `runs.collect_runs` and returns
plain rows (dicts) for tables; the tests themselves are in `statistics`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_deepcluster.analysis import statistics
from keras_deepcluster.analysis.runs import NEVER
from keras_deepcluster.analysis.statistics import Interaction, finite

# Settings that, with the seed, make a run; runs equal in all of them are one group.
SETTINGS = ("recipe", "backend", "images", "clusters", "pca", "epochs", "halt")
# Values summarised per group with a bootstrap interval.
MEASURES = ("probe", "best_nmi", "last_nmi", "probe_random", "gain")


def _groups(runs: list[dict]) -> dict[tuple, list[dict]]:
    groups = defaultdict(list)
    for r in runs:
        groups[tuple(r[key] for key in SETTINGS)].append(r)
    return groups


def group_summary(runs: list[dict]) -> list[dict]:
    """Runs that differ only in their seed, pooled.

    Args:
        runs: Run records (`collect_runs`).

    Returns:
        One row per group: its `SETTINGS`, ``seeds``, ``<measure>_<n|mean|sd|low|high>``
        (95 % bootstrap interval) of every measure of `MEASURES`, and the mean
        halt epoch and times; sorted by settings.
    """
    rows = []
    for key, members in _groups(runs).items():
        row = dict(zip(SETTINGS, key), seeds=len(members))
        for measure in MEASURES:
            summary = statistics.interval([m.get(measure) for m in members])
            for field in ("n", "mean", "sd", "low", "high"):
                row[f"{measure}_{field}"] = getattr(summary, field) if summary else None
        for measure in ("halted_at", "recluster_seconds", "wall_seconds"):
            row[measure] = sum(m[measure] for m in members) / len(members)
        rows.append(row)
    return sorted(rows, key=_order)


def _order(row: dict) -> tuple:
    """Tables sorted by settings (numbers as numbers), then by how long the clustering ran."""
    text = str(row["recipe"]), str(row["backend"]), str(row["pca"])
    return text + (row["images"] or 0, row["clusters"], row["epochs"], row.get("halted_at") or 0)


def halting_equivalence(runs: list[dict], margin: float) -> list[dict]:
    """Every halted group against the never-halted group of the same settings, paired by seed.

    Args:
        runs: Run records (`collect_runs`).
        margin: Equivalence margin of the probe accuracy, a fraction.

    Returns:
        One row per halted group with a never-halted twin: mean probe
        difference, its 90 % interval, the TOST p-value, a verdict (or why it
        was not testable) and the time saved.
    """
    groups = _groups(runs)
    rows = []
    for key, members in groups.items():
        settings = dict(zip(SETTINGS, key))
        reference = groups.get(tuple({**settings, "halt": NEVER}[k] for k in SETTINGS))
        if settings["halt"] == NEVER or not reference:
            continue
        never = {r["seed"]: r for r in reference if finite(r["probe"])}
        pairs = [
            (r, never[r["seed"]]) for r in members if finite(r["probe"]) and r["seed"] in never
        ]
        row = {**settings, "seeds": len(pairs), "margin": margin}
        if pairs:
            row["probe"] = sum(r["probe"] for r, _ in pairs) / len(pairs)
            row["probe_never"] = sum(n["probe"] for _, n in pairs) / len(pairs)
            row["halted_at"] = sum(r["halted_at"] for r, _ in pairs) / len(pairs)
            for measure in ("recluster_seconds", "wall_seconds"):
                ours = sum(r[measure] for r, _ in pairs) / len(pairs)
                theirs = sum(n[measure] for _, n in pairs) / len(pairs)
                row[measure], row[f"{measure}_saved"] = ours, theirs - ours
            row["wall_saved_share"] = row["wall_seconds_saved"] / (
                row["wall_seconds"] + row["wall_seconds_saved"]
            )
        try:
            test = statistics.equivalence_test([r["probe"] - n["probe"] for r, n in pairs], margin)
            row.update(
                difference=test.difference,
                difference_low=test.low,
                difference_high=test.high,
                p_tost=test.p,
                verdict="equivalent" if test.equivalent else "not shown",
            )
        except statistics.NotTestable as error:
            row["verdict"] = f"not testable: {error}"
        rows.append(row)
    return sorted(rows, key=_order)


def quality_by_k(
    runs: list[dict], quality: dict[int, float]
) -> list[tuple[dict, Interaction | str]]:
    """The filter-quality × k interaction test of every set of never-halted runs
    that share all settings but k and seed.

    Args:
        runs: Run records (`collect_runs`).
        quality: Seeds' `space` NMI; seeds without one use the NMI of their
            first clustering at the smallest k.

    Returns:
        ``(settings, Interaction or the reason it could not be tested)`` per set.
    """
    sets = defaultdict(list)
    for r in runs:
        if r["halt"] == NEVER and finite(r["probe"]):
            sets[(r["recipe"], r["backend"], r["images"], r["pca"], r["epochs"])].append(r)
    results = []
    for key, members in sets.items():
        if len({r["clusters"] for r in members}) < 2:
            continue
        probes = defaultdict(dict)
        own_quality = {}
        for r in sorted(members, key=lambda r: -r["clusters"]):
            probes[r["seed"]][r["clusters"]] = r["probe"]
            if finite(r["initial_nmi"]):
                own_quality[r["seed"]] = r["initial_nmi"]
        settings = dict(zip(("recipe", "backend", "images", "pca", "epochs"), key))
        try:
            result = statistics.interaction_test(probes, {**own_quality, **quality})
        except statistics.NotTestable as error:
            result = str(error)
        results.append((settings, result))
    return results


def selection_regret(runs: list[dict], selections: Sequence[Path]) -> list[dict]:
    """Each `select` folder's choices scored on the grid of runs.

    Regret is the best grid probe minus the grid probe of the chosen seed and k
    (same recipe, images, epochs and PCA, never halted), for the chosen k and
    for the k each recorded criterion would have chosen. Runs inside `select`
    folders are not the grid.

    Args:
        runs: Run records (`collect_runs`).
        selections: The ``selection.json`` files of `select` folders.

    Returns:
        One row per selection: its choices, the probe of its own final run (if
        it has one), and the grid's best, mean and regrets.
    """
    rows = []
    for path in selections:
        chosen = json.loads(path.read_text())
        final = next(
            (r for r in runs if r["selection"] == path.parent and Path(r["name"]).name == "final"),
            None,
        )
        row = {
            "selection": str(path.parent),
            "draw": chosen.get("draw"),
            "seed": chosen["chosen"]["seed"],
            "clusters": chosen["chosen"]["clusters"],
            "halt_after": chosen["chosen"]["halt_after"],
            "criterion": chosen.get("criterion", "probe"),
            "final_probe": final["probe"] if final else None,
        }
        settings = chosen.get("final", {})
        probe = {
            (r["seed"], r["clusters"]): r["probe"]
            for r in runs
            if r["selection"] is None
            and r["halt"] == NEVER
            and finite(r["probe"])
            and all(r[key] == value for key, value in settings.items())
        }
        if probe:
            best = max(probe.values())
            default = [p for (_, k), p in probe.items() if k == chosen.get("recipe_clusters")]
            row.update(
                grid_best=best,
                grid_mean=sum(probe.values()) / len(probe),
                default_mean=sum(default) / len(default) if default else None,
                final_regret=best - row["final_probe"] if finite(row["final_probe"]) else None,
            )
            for criterion, k in chosen.get("choices", {}).items():
                key = (row["seed"], int(k))
                row[f"probe_{criterion}"] = probe.get(key)
                row[f"regret_{criterion}"] = best - probe[key] if key in probe else None
        rows.append(row)
    return rows


def regret_summary(rows: list[dict]) -> list[dict]:
    """Per k-choosing criterion over the `select` draws.

    Args:
        rows: The rows of `selection_regret`.

    Returns:
        Per criterion: mean probe of the chosen configurations and mean regret,
        each with a 95 % bootstrap interval, beside choosing at random (the
        grid's mean) and the recipe's k (mean over seeds).
    """
    criteria = sorted(
        {key.removeprefix("regret_") for row in rows for key in row if key.startswith("regret_")}
    )
    summary = []
    for criterion in criteria:
        scored = [row for row in rows if finite(row.get(f"regret_{criterion}"))]
        if not scored:
            continue
        probe = statistics.interval([row[f"probe_{criterion}"] for row in scored])
        regret = statistics.interval([row[f"regret_{criterion}"] for row in scored])
        summary.append(
            {
                "criterion": criterion,
                "draws": len(scored),
                **{f"probe_{f}": getattr(probe, f) for f in ("mean", "sd", "low", "high")},
                **{f"regret_{f}": getattr(regret, f) for f in ("mean", "sd", "low", "high")},
                "grid_mean": sum(row["grid_mean"] for row in scored) / len(scored),
                "default_mean": scored[0]["default_mean"],
                "over_default": probe.mean - scored[0]["default_mean"]
                if finite(scored[0]["default_mean"])
                else None,
            }
        )
    return summary


def filter_quality_correlation(runs: list[dict]) -> float | None:
    """Pearson r between the epoch-0 NMI and the probe accuracy, over runs of 3+ seeds.

    Args:
        runs: Run records (`collect_runs`).

    Returns:
        The correlation, or None when fewer than three seeds were probed (then
        the NMIs barely vary) or either value is constant.
    """
    probed = [r for r in runs if finite(r["initial_nmi"]) and finite(r["probe"])]
    if len({r["seed"] for r in probed}) < 3:
        return None
    pairs = np.array([(r["initial_nmi"], r["probe"]) for r in probed]).T
    if not np.ptp(pairs, axis=1).all():  # a constant has no correlation
        return None
    return float(np.corrcoef(pairs)[0, 1])
