"""`deepcluster select`: choose seed, k and halt epoch with a few labelled images, then
train with them. The choosing is `keras_deepcluster.analysis.selection`'s; this command
parses, locks, records the choices in selection.json and prints them.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from keras_deepcluster.analysis.selection import (
    CRITERIA,
    LABEL_FREE_CRITERIA,
    HaltChoice,
    SeedChoice,
    choose_clusters,
    choose_halt,
    choose_seed,
    draw_labelled,
)
from keras_deepcluster.platform.directory_lock import lock_folder
from keras_deepcluster.runs.run_directory import RunDirectory
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

# What --labelled 0 says first: docs/results.md, "Choosing k without labels".
NO_LABELS = (
    "without labels: k by a label-free score of short trial runs. On Fashion-MNIST, MNIST and "
    "digits no label-free score chose k as well as the largest candidate, and most no better "
    "than chance (docs/results.md); a few labels (--labelled 100) choose better, and without "
    "any, k a few times the classes you expect."
)


@click.command()
@click.argument("recipe")
@click.option(
    "--labelled",
    required=True,
    type=click.IntRange(min=0),
    help="How many training images may be used with their labels (at least 10), or 0: none "
    "(k by a label-free criterion, the recipe's seed, no halt).",
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
    type=click.Choice([*CRITERIA, *LABEL_FREE_CRITERIA]),
    help="How the trials' k is chosen (default: probe; with --labelled 0: generalization): "
    + "; ".join(f"{name}: {text}" for name, text in {**CRITERIA, **LABEL_FREE_CRITERIA}.items())
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
    if 0 < labelled < 10:
        raise click.BadParameter(
            f"{labelled} labelled images are too few to score with; give at least 10, or 0 to "
            "choose without labels.",
            param_hint="--labelled",
        )
    criteria = CRITERIA if labelled else LABEL_FREE_CRITERIA
    criterion = criterion or ("probe" if labelled else "generalization")
    if criterion not in criteria:
        kind = "with labelled images" if labelled else "with --labelled 0"
        raise click.BadParameter(
            f"{criterion} cannot choose k {kind}; use one of {', '.join(criteria)}.",
            param_hint="--criterion",
        )
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

    from keras_deepcluster.runs import build
    from keras_deepcluster_cli.progress import load_data

    console = make_console()
    out = out or Path("runs") / f"select-{base.name}-n{labelled}"
    with user_errors(), interruptible(console, RUN_AGAIN):
        data = load_data(console, base)
        known = draw_labelled(data, labelled, draw, holdout) if labelled else None
        build.check_devices(devices, [base])
        out.mkdir(parents=True, exist_ok=True)
        lock_folder(out)  # one selection per folder: a second process is refused

        if known is None:
            console.print(NO_LABELS)
            chosen_seed = SeedChoice(
                base.seed, {}, f"seed {base.seed}: the recipe's (no labels to score seeds with)"
            )
        else:
            with console.status("scoring the seeds' random filters on the labelled images"):
                chosen_seed = choose_seed(base, seed, known)
        # The trials: the chosen seed, a few epochs, no halting of their own.
        trial = base.replace(
            seed=chosen_seed.seed, epochs=trial_epochs, halt_after=None, halt_when_stable=None
        )
        with console.status("trial runs") as status:
            chosen_k = choose_clusters(
                trial,
                candidates_k,
                criterion,
                known,
                out,
                data=data,
                overwrite=overwrite,
                devices=devices,
                on_step=status.update,
            )
        chosen_halt = (
            choose_halt(RunDirectory(out / f"trial-k{chosen_k.clusters}"))
            if known is not None
            else HaltChoice(None, "never halt: no labels to find the best epoch with")
        )
        final = base.replace(
            seed=chosen_seed.seed, clusters=chosen_k.clusters, halt_after=chosen_halt.halt_after
        )
        reasons = {"seed": chosen_seed.why, "clusters": chosen_k.why, "halt_after": chosen_halt.why}
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
            "choices": chosen_k.choices,
            "seed_nmi": chosen_seed.nmi,
            "trials": chosen_k.scores,
            "chosen": {
                "seed": chosen_seed.seed,
                "clusters": chosen_k.clusters,
                "halt_after": chosen_halt.halt_after,
            },
            "why": reasons,
        }
        (out / "selection.json").write_text(json.dumps(selection, indent=1, default=str))
        console.print(_table(chosen_seed.nmi, chosen_k.scores, criterion, known is not None))
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


def _train_final(console, final, data, out: Path, overwrite, devices, probe: bool) -> RunDirectory:
    """Step 4: the run of the chosen settings on all the data, probed with --probe."""
    from keras_deepcluster.runs import pretraining, probes
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
            probes.probe(final, data, run)
    return run


def _table(seed_scores: dict, trials: dict, criterion: str, labelled: bool) -> Table:
    """Every candidate's score; the trials' chosen criterion in bold."""
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
            "trial, with the labelled images" if labelled else "trial, without labels",
        )
    return table
