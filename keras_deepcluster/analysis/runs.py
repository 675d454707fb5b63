"""Finished runs read back as flat records, the rows that the comparisons pool and tabulate."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from keras_deepcluster.runs.recipe import Recipe, RecipeError, load_recipe
from keras_deepcluster.runs.run_directory import DamagedFileError, RunDirectory

# The halting setting of a run that clusters every epoch.
NEVER = "never"


def halt_rule(recipe: Recipe) -> str:
    """The halting setting of a recipe, as records and groups name it.

    Examples:
        >>> halt_rule(load_recipe("digits").replace(halt_after=3))
        'after 3'
    """
    if recipe.halt_after is not None:
        return f"after {recipe.halt_after}"
    if recipe.halt_when_stable is not None:
        return f"NMI(t,t-1)>={recipe.halt_when_stable:g} x{recipe.halt_patience}"
    return NEVER


def collect_runs(
    directories: Sequence[Path], on_damaged: Callable[[str], None] | None = None
) -> list[dict]:
    """Every finished run under `directories`, as one flat record each.

    The untrained network depends on the recipe's seed only, so a run without
    its own random-init probe takes that of a run of the same recipe, backend,
    data and seed (e.g. probed once per seed in a grid over k).

    Args:
        directories: Folders searched at any depth for run directories.
        on_damaged: Called with the message naming the file of a run that has a
            damaged file; that run is left out.

    Returns:
        One dict per finished run: its settings (``recipe``, ``backend``,
        ``images``, ``clusters``, ``seed``, ``pca``, ``epochs``, ``halt``), its
        NMI and clustering scores, probes (None where not probed), times, its
        ``history`` and the ``selection`` folder it belongs to (None outside one).
    """
    records = []
    for directory in directories:
        for config in sorted(directory.rglob(RunDirectory.CONFIG)):
            run = RunDirectory(config.parent)
            if run.is_finished and (run.path / "history.csv").is_file():
                try:
                    records.append(_record(run, directory))
                except (DamagedFileError, RecipeError) as error:
                    (on_damaged or (lambda message: None))(str(error))
    twin = {}
    for r in records:
        if r["probe_random"] is not None:
            twin.setdefault((r["recipe"], r["backend"], r["images"], r["seed"]), r["probe_random"])
    for r in records:
        if r["probe_random"] is None:
            r["probe_random"] = twin.get((r["recipe"], r["backend"], r["images"], r["seed"]))
        if r["probe"] is not None and r["probe_random"] is not None:
            r["gain"] = r["probe"] - r["probe_random"]  # over its own random init
    return records


def _record(run: RunDirectory, root: Path) -> dict:
    recipe = load_recipe(run.path / RunDirectory.CONFIG)
    summary = run.read_json(RunDirectory.SUMMARY, keys=("backend", "images", "wall_seconds"))
    history = run.read_history()
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
        "halt": halt_rule(recipe),
        "halted_at": stopped["epoch"] if stopped else recipe.epochs,
        "initial_nmi": nmis[0] if nmis else None,
        "best_nmi": max(nmis) if nmis else None,
        "last_nmi": nmis[-1] if nmis else None,
        "last_acc": history[-1].get("acc_labels") if history else None,
        **_final_clustering_scores(summary),
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
        "knn_20": None,
        "knn_200": None,
        # The `select` folder a trial or final run belongs to: not part of a grid.
        "selection": run.path.parent if (run.path.parent / "selection.json").is_file() else None,
    }
    for name in ("probe", "probe_random"):
        if (run.path / f"{name}.json").is_file():
            record[name] = run.read_json(f"{name}.json", keys=("accuracy",))["accuracy"]
    if (run.path / "knn.json").is_file():
        accuracy = run.read_json("knn.json", keys=("accuracy",))["accuracy"]
        record |= {f"knn_{k}": accuracy.get(k) for k in ("20", "200")}
    return record


def _final_clustering_scores(summary: dict) -> dict:
    """The final clustering's scores, the untrained network's and the change (None where
    not recorded)."""
    final = summary.get("final_clustering") or {}
    effect = summary.get("training_effect") or {}
    test = final.get("test") or {}
    kept = summary.get("kept")
    return {
        **{f"test_{key}": test.get(key) for key in ("nmi", "acc", "ari")},
        "final_nmi": (final.get("train") or {}).get("nmi"),
        "nmi_change": effect["train"]["nmi"]["change"] if "train" in effect else None,
        "verdict": effect["train"]["verdict"] if "train" in effect else None,
        "kept_epoch": kept["epoch"] if kept else None,
        "test_nmi_untrained": effect["test"]["nmi"]["untrained"] if "test" in effect else None,
        "test_nmi_change": effect["test"]["nmi"]["change"] if "test" in effect else None,
    }
