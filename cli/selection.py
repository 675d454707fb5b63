"""`deepcluster select`: choose seed, k and halt epoch with a few labelled images.

The Deep Dive paper's proposal (digest §4.8), made concrete:

1. **seed** — the candidate whose untrained network clusters the labelled
   images best (NMI of one k-means, `filter_quality`);
2. **k** — a short trial run per candidate k with that seed, scored with the
   labelled images by every criterion of `CRITERIA`; the `--criterion` one
   chooses (all are recorded, so their choices can be compared later);
3. **halt epoch** — in the winning trial, the epoch whose pseudo-labels agree
   best with the labelled images (NMI on them); halt after it, or never if
   the agreement still rose at the trial's last epoch;

then it trains with the chosen settings. Only the `--labelled` images' labels
are used for choosing; the final run's history reports NMI against all labels
when the data has them, for the record.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click
import numpy as np
from rich.table import Table

from keras_deepcluster.data.image_data import ImageData
from keras_deepcluster.directory_lock import lock_folder
from keras_deepcluster.run_directory import RunDirectory
from keras_deepcluster_cli.options import (
    RUN_AGAIN,
    IntList,
    backend_option,
    checked,
    data_options,
    deterministic_option,
    devices_option,
    interruptible,
    make_console,
    output_options,
    override,
    resolve_recipe,
    use_backend,
    user_errors,
)
from keras_deepcluster_cli.random_filters import random_filter_qualities

# How a trial run is scored with the labelled images (higher is better).
CRITERIA = {
    "probe": "held-out accuracy of a linear probe trained on the other labelled images",
    "knn": "5-fold cross-validated 10-NN accuracy on all labelled images",
    "linear": "5-fold cross-validated logistic-regression accuracy on all labelled images",
    "nmi": "NMI of the trial's last pseudo-labels with the labelled images",
}


@click.command()
@click.argument("recipe")
@click.option(
    "--labelled",
    required=True,
    type=click.IntRange(min=10),
    help="How many training images may be used with their labels.",
)
@click.option(
    "--seeds",
    "seed",
    type=IntList(),
    callback=checked,
    default="0-9",
    show_default=True,
    help="Candidate seeds.",
)
@click.option(
    "--clusters",
    "-k",
    type=IntList(),
    callback=checked,
    help="Candidate k (default: the recipe's k, half and double it).",
)
@click.option(
    "--trial-epochs",
    type=click.IntRange(min=2),
    default=5,
    show_default=True,
    help="Epochs of each trial run.",
)
@click.option(
    "--criterion",
    type=click.Choice(list(CRITERIA)),
    default="probe",
    show_default=True,
    help="How the trials' k is chosen: "
    + "; ".join(f"{name}: {text}" for name, text in CRITERIA.items())
    + ".",
)
@click.option(
    "--draw",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed of the draw of the labelled images and of their held-out part.",
)
@click.option(
    "--holdout",
    type=click.FloatRange(0.1, 0.9),
    default=0.5,
    show_default=True,
    help="Fraction of the labelled images held out to score the trial probes.",
)
@override("--epochs", type=int, help="Epochs of the final run (default: the recipe's).")
@click.option("--probe", is_flag=True, help="Linear-probe the final run (all labels, probe.json).")
@click.option(
    "--choose-only",
    is_flag=True,
    help="Choose and write selection.json, without the final run.",
)
@backend_option
@data_options
@devices_option
@deterministic_option
@output_options
def select(
    recipe,
    labelled,
    seed,
    clusters,
    trial_epochs,
    criterion,
    draw,
    holdout,
    probe,
    choose_only,
    backend,
    devices,
    out,
    overwrite,
    **overrides,
):
    """Choose the seed, k and halt epoch of RECIPE with only --labelled labelled
    images, say why, and train with them. Trials and the final run are run
    directories under --out; selection.json records every score. Resumable.
    --choose-only stops before the final run.

    \b
    Examples:
      deepcluster select fashion_mnist --labelled 1000 --seeds 0-19 -k 5,10,50 \\
          --source idx --data-dir /usr/share/datasets/fashion-mnist --epochs 15
      deepcluster select digits --labelled 200 --seeds 0-4 --trial-epochs 3
    """
    base = resolve_recipe(recipe, overrides)
    use_backend(backend)
    candidates_k = clusters or sorted(
        {max(2, base.clusters // 2), base.clusters, 2 * base.clusters}
    )
    if trial_epochs > base.epochs:
        raise click.BadParameter(
            f"{trial_epochs} is more than the final run's {base.epochs} epochs.",
            param_hint="--trial-epochs",
        )
    import keras

    from keras_deepcluster import pretraining
    from keras_deepcluster_cli.progress import load_data

    console = make_console()
    out = out or Path("runs") / f"select-{base.name}-n{labelled}"
    with user_errors(), interruptible(console, RUN_AGAIN):
        data = load_data(console, base)
        known = _draw_labelled(data, base.dataset, labelled, draw, holdout)
        pretraining.check_devices(devices, [base])
        out.mkdir(parents=True, exist_ok=True)
        lock_folder(out)  # one selection per folder: a second process is refused

        best_seed, seed_scores, why_seed = _choose_seed(console, base, seed, known)
        # The trials: the chosen seed, a few epochs, no halting of their own.
        trial = base.replace(
            seed=best_seed, epochs=trial_epochs, halt_after=None, halt_when_stable=None
        )
        best_k, trials, choices, why_k = _choose_clusters(
            console, trial, candidates_k, criterion, known, out, overwrite, devices
        )
        halt, why_halt = _choose_halt(RunDirectory(out / f"trial-k{best_k}"))
        final = base.replace(seed=best_seed, clusters=best_k, halt_after=halt)
        reasons = {"seed": why_seed, "clusters": why_k, "halt_after": why_halt}
        selection = {
            # What the final run is, so `report` can find its twin in a grid of runs.
            "final": {
                "recipe": base.name,
                "backend": keras.backend.backend(),
                "images": len(data.x_train),
                "epochs": final.epochs,
                "pca": final.pca,
            },
            "labelled": labelled,
            "draw": draw,
            "holdout": holdout,
            "recipe_clusters": base.clusters,
            "criterion": criterion,
            "choices": choices,
            "seed_nmi": seed_scores,
            "trials": trials,
            "chosen": {"seed": best_seed, "clusters": best_k, "halt_after": halt},
            "why": reasons,
        }
        (out / "selection.json").write_text(json.dumps(selection, indent=1, default=str))
        console.print(_table(seed_scores, trials, criterion))
        for line in reasons.values():
            console.print(f"[bold]chosen[/bold] {line}")
        if choose_only:
            console.print(f"written {out / 'selection.json'}; no final run (--choose-only)")
            return
        run = _train_final(console, final, data, out / "final", overwrite, devices, probe)
    summary = run.read_json(RunDirectory.SUMMARY)
    console.print(
        f"final run {run.path}: {summary['wall_seconds']:.0f} s"
        + (f", probe {run.read_json('probe.json')['accuracy']:.2%}" if probe else "")
    )


@dataclasses.dataclass(frozen=True)
class _Labelled:
    """The training images whose labels `select` may use, drawn once.

    Attributes:
        rows: Their indices in the training set, ascending.
        held_out: Which of them score the trial probes (the others train them).
        data: The training data with only their labels (the others -1), no test split.
        images: Their images.
        labels: Their labels.
    """

    rows: np.ndarray
    held_out: np.ndarray
    data: ImageData

    @property
    def images(self) -> np.ndarray:
        return self.data.x_train[self.rows]

    @property
    def labels(self) -> np.ndarray:
        return self.data.y_train[self.rows]


def _draw_labelled(data, dataset: str, count: int, draw: int, holdout: float) -> _Labelled:
    """Draws the `count` labelled images (seed `draw`), and the `holdout` fraction of them.

    Raises:
        ValueError: The data has no labels, or fewer training images than `count`.
    """
    if data.y_train is None:
        raise ValueError(f"{dataset} has no labels; `select` needs --labelled of them.")
    if count > len(data.x_train):
        raise ValueError(
            f"--labelled {count} is more than the {len(data.x_train)} training images."
        )
    rng = np.random.default_rng(draw)
    rows = np.sort(rng.choice(len(data.x_train), count, replace=False))
    held_out = np.zeros(count, bool)
    held_out[rng.choice(count, round(holdout * count), replace=False)] = True
    partial = np.full(len(data.x_train), -1, np.int64)
    partial[rows] = data.y_train[rows]
    known = dataclasses.replace(data, y_train=partial, x_test=None, y_test=None)
    return _Labelled(rows, held_out, known)


def _choose_seed(console, base, seeds, labelled: _Labelled) -> tuple[int, dict, str]:
    """Step 1: the seed whose random filters cluster the labelled images best.

    Returns:
        The seed, every seed's NMI (of one k-means with the recipe's k), and why.
    """
    with console.status("scoring the seeds' random filters on the labelled images"):
        scores = {
            seed: quality.nmi
            for seed, quality in random_filter_qualities(
                base, seeds, labelled.images, labelled.labels
            )
        }
    best = max(scores, key=scores.get)
    why = (
        f"seed {best}: NMI {scores[best]:.4f} of k-means (k={base.clusters}) on its random "
        f"features of the {len(labelled.rows)} labelled images, best of {len(seeds)}"
    )
    return best, scores, why


def _choose_clusters(
    console, trial, candidates, criterion: str, labelled: _Labelled, out: Path, overwrite, devices
) -> tuple[int, dict, dict, str]:
    """Step 2: k, by `criterion`, from a short run of `trial` per candidate k.

    The trials see only the labelled images' labels and are scored with them
    by every criterion of `CRITERIA`. Each is a run directory ``trial-k<k>``
    under `out`, kept with its ``scores_labelled.json``, so an interrupted
    selection resumes.

    Returns:
        The k; the trials' scores ``{k: {criterion: score}}``; the k each
        criterion chooses; and why.
    """
    from keras_deepcluster import pretraining

    trials = {}
    for k in candidates:
        recipe = trial.replace(clusters=k)
        run = RunDirectory(out / f"trial-k{k}")
        run.check_replaceable(recipe.to_toml(), overwrite)
        with console.status(f"trial run k={k}, {trial.epochs} epochs"):
            pretraining.train_unless_finished(recipe, labelled.data, run, devices=devices)
        if not (run.path / "scores_labelled.json").is_file():
            with console.status(f"scoring trial k={k} with the labelled images"):
                run.write_json("scores_labelled.json", _trial_scores(run, trial, labelled))
        trials[k] = run.read_json("scores_labelled.json")
    choices = {name: max(trials, key=lambda k: trials[k][name]) for name in CRITERIA}
    best = choices[criterion]
    why = (
        f"k={best}: {CRITERIA[criterion]} {trials[best][criterion]:.4f} "
        f"after {trial.epochs} trial epochs, best of k in {candidates}"
    )
    return best, trials, choices, why


def _choose_halt(trial: RunDirectory) -> tuple[int | None, str]:
    """Step 3: halt after the trial epoch whose labels agreed best with the labelled images.

    Returns:
        The halt epoch, or None (never) when the agreement still peaked at the
        trial's last epoch, and why.
    """
    nmis = [row["nmi_labels"] for row in trial.read_history()]
    peak = int(np.argmax(nmis))
    if peak + 1 < len(nmis):
        why = (
            f"halt after {peak + 1} epochs: NMI with the labelled images peaked at "
            f"epoch {peak} ({nmis[peak]:.4f}) of the trial"
        )
        return peak + 1, why
    why = (
        f"never halt: NMI with the labelled images still peaked at the trial's "
        f"last epoch ({nmis[peak]:.4f})"
    )
    return None, why


def _train_final(console, final, data, out: Path, overwrite, devices, probe: bool) -> RunDirectory:
    """Step 4: the run of the chosen settings on all the data, probed with --probe."""
    from keras_deepcluster import pretraining
    from keras_deepcluster_cli.progress import TrainingProgress

    run = RunDirectory(out)
    run.check_replaceable(final.to_toml(), overwrite)
    progress = TrainingProgress(console, final.epochs)
    pretraining.train_unless_finished(
        final,
        data,
        run,
        callbacks=[progress],
        on_progress=progress.on_progress,
        devices=devices,
    )
    if probe and not (run.path / "probe.json").is_file():
        with console.status("probing the final run"):
            pretraining.probe(final, data, run)
    return run


def _trial_scores(run: RunDirectory, recipe, labelled: _Labelled) -> dict:
    """Every criterion of `CRITERIA` for one finished trial run of `recipe`."""
    import keras

    import keras_deepcluster as kdc
    from keras_deepcluster import pretraining

    backbone = keras.saving.load_model(run.path / RunDirectory.MODEL).backbone
    views = pretraining.image_views(recipe)
    x, y, held = labelled.images, labelled.labels, labelled.held_out
    probe = kdc.evaluation.linear_probe(
        backbone,
        recipe.probe_layer,
        (x[~held], y[~held]),
        (x[held], y[held]),
        views,
        epochs=recipe.probe_epochs,
        flip=recipe.probe_flip,
        seed=recipe.seed,
    )
    scores = {"probe": probe.accuracy, "nmi": run.read_history()[-1]["nmi_labels"]}
    for classifier in ("knn", "linear"):
        scores[classifier] = kdc.evaluation.cross_validated_accuracy(
            backbone, recipe.probe_layer, x, y, views, classifier, seed=recipe.seed
        )
    return scores


def _table(seed_scores: dict, trials: dict, criterion: str) -> Table:
    table = Table(title="candidates")
    for column in ("candidate", "score", "on"):
        table.add_column(column, justify="right")
    for s, score in sorted(seed_scores.items(), key=lambda item: -item[1]):
        table.add_row(f"seed {s}", f"{score:.4f}", "NMI, random filters")
    for k, scores in trials.items():
        table.add_row(
            f"k={k}",
            " ".join(
                f"[bold]{name} {value:.4f}[/bold]" if name == criterion else f"{name} {value:.4f}"
                for name, value in scores.items()
            ),
            "trial, with the labelled images",
        )
    return table
