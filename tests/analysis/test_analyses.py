"""The Deep Dive analyses: space, sweep, report, select and the automatic halt."""

import csv
import json
import types

import keras
import numpy as np
import pytest
from conftest import invoke

import keras_deepcluster as kdc
from keras_deepcluster.evaluation.cluster_metrics import nmi
from keras_deepcluster.method.reclustering import stable_since
from keras_deepcluster.runs import build, pretraining, recipe_data
from keras_deepcluster.runs.recipe import load_recipe
from keras_deepcluster.runs.run_directory import RunDirectory

DIGITS = ["--limit", "150"]


def read_csv(path, drop=("seconds",)):
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def interrupt_after(monkeypatch, owner, name, calls):
    """Makes owner.name raise KeyboardInterrupt (a kill) once it has run `calls` times."""
    original, count = getattr(owner, name), [0]

    def wrapped(*args, **kwargs):
        if count[0] >= calls:
            raise KeyboardInterrupt
        count[0] += 1
        result = original(*args, **kwargs)
        if count[0] == calls:
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(owner, name, wrapped)


@pytest.mark.backend_independent
def test_stable_since_fires_only_on_a_stable_run():
    nan = float("nan")
    assert stable_since([nan, 0.5, 0.91, 0.92, 0.95], threshold=0.9, patience=3)
    assert not stable_since([nan, 0.95, 0.96, 0.89, 0.97], threshold=0.9, patience=3)
    assert not stable_since([nan, 0.95, 0.96], threshold=0.9, patience=3)  # NaN never counts
    assert stable_since([nan, 0.2], threshold=0.1, patience=1)


def test_space_scores_seeds_and_resumes_after_a_kill(tmp_path, monkeypatch):
    whole = invoke(
        "space", "digits", "--seeds", "0-3", "-k", "5", *DIGITS, "--out", tmp_path / "whole"
    )
    assert whole.exit_code == 0, whole.output
    rows = read_csv(tmp_path / "whole" / "space.csv")
    assert [row["seed"] for row in rows] == ["0", "1", "2", "3"]
    assert all(0 < float(row["nmi"]) < 1 and 0 <= float(row["label_noise"]) < 1 for row in rows)
    assert (tmp_path / "whole" / "space_nmi.png").stat().st_size > 10_000

    interrupt_after(monkeypatch, kdc.evaluation, "filter_quality", 3)
    killed = invoke(
        "space", "digits", "--seeds", "0-3", "-k", "5", *DIGITS, "--out", tmp_path / "resumed"
    )
    assert killed.exit_code != 0 and len(read_csv(tmp_path / "resumed" / "space.csv")) == 2
    monkeypatch.undo()
    resumed = invoke(
        "space", "digits", "--seeds", "0-3", "-k", "5", *DIGITS, "--out", tmp_path / "resumed"
    )
    assert resumed.exit_code == 0 and "2 of 4 seeds already scored (resumed)" in resumed.output
    assert read_csv(tmp_path / "resumed" / "space.csv") == rows

    other = invoke(
        "space", "digits", "--seeds", "0-3", "-k", "6", *DIGITS, "--out", tmp_path / "whole"
    )
    assert other.exit_code == 1 and "holds a run of other settings" in other.output


def test_space_nmi_is_the_first_clustering_of_training(tmp_path):
    invoke("space", "digits", "--seeds", "7", "-k", "5", *DIGITS, "--out", tmp_path / "space")
    train = invoke(
        "train",
        "digits",
        "--seed",
        "7",
        "-k",
        "5",
        "--epochs",
        "1",
        *DIGITS,
        "--out",
        tmp_path / "run",
    )
    assert train.exit_code == 0, train.output
    space_nmi = float(read_csv(tmp_path / "space" / "space.csv")[0]["nmi"])
    assert space_nmi == pytest.approx(
        RunDirectory(tmp_path / "run").read_history()[0]["nmi_labels"]
    )


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "5-3"], "range '5-3' is empty"),
        (["--seeds", "1,x"], "'x' in '1,x' is not an integer"),
        (["--seeds", "0", "-k", "1"], "must be >= 2; got 1"),
    ],
)
def test_space_bad_input(tmp_path, args, message):
    result = invoke("space", "digits", *args, "--out", tmp_path / "space")
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "space").exists()


# sweep's grid and resume are Python over `train`, which every backend's tests train.
@pytest.mark.backend_independent
def test_sweep_runs_the_grid_and_resumes_after_a_kill(tmp_path, monkeypatch):
    args = [
        "sweep",
        "digits",
        "--clusters",
        "3,4",
        "--seeds",
        "0",
        "--epochs",
        "2",
        *DIGITS,
        "--probe",
        "--probe-epochs",
        "1",
    ]
    whole = invoke(*args, "--out", tmp_path / "whole")
    assert whole.exit_code == 0, whole.output
    names = sorted(p.name for p in (tmp_path / "whole").iterdir() if p.is_dir())
    assert names == ["k3-seed0-haltnone-pcanone", "k4-seed0-haltnone-pcanone"]

    # Killed mid-way through the second run: after its first epoch was checkpointed
    # (the first run's two epochs, then one more).
    interrupt_after(monkeypatch, build.RunRecorder, "on_epoch_end", 3)
    killed = invoke(*args, "--out", tmp_path / "resumed")
    assert killed.exit_code != 0
    second = RunDirectory(tmp_path / "resumed" / names[1])
    assert not second.is_finished and second.read_checkpoint()["epoch"] == 0
    monkeypatch.undo()
    assert invoke(*args, "--out", tmp_path / "resumed").exit_code == 0
    for name in names:
        first, again = (
            RunDirectory(tmp_path / "whole" / name),
            RunDirectory(tmp_path / "resumed" / name),
        )
        np.testing.assert_array_equal(first.read_pseudo_labels(1), again.read_pseudo_labels(1))
        assert [r["nmi_labels"] for r in first.read_history()] == [
            r["nmi_labels"] for r in again.read_history()
        ]
        assert (
            first.read_json("probe.json")["accuracy"] == again.read_json("probe.json")["accuracy"]
        )


@pytest.mark.backend_independent
def test_sweep_bad_grid(tmp_path):
    result = invoke("sweep", "digits", "--clusters", "5,x", "--out", tmp_path / "s")
    assert result.exit_code == 2 and "'x' in '5,x' is not an integer" in result.output
    result = invoke(
        "sweep", "digits", "--epochs", "3", "--halt-after", "2,4", "--out", tmp_path / "s"
    )
    assert result.exit_code == 2 and "halt_after=4 is larger than epochs=3" in result.output
    assert not (tmp_path / "s").exists()


def test_automatic_halt_is_recorded(tmp_path):
    out = tmp_path / "run"
    result = invoke(
        "train",
        "digits",
        "--epochs",
        "3",
        "--halt-when-stable",
        "0.01",
        "--halt-patience",
        "1",
        *DIGITS,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    run = RunDirectory(out)
    history = run.read_history()
    assert [row["clustered"] for row in history] == [1.0, 1.0, 0.0]
    assert history[2]["halt_reason"].startswith("NMI(t, t-1) >= 0.01 for 1 clusterings")
    assert run.read_json("summary.json")["clustering_stopped"]["epoch"] == 2
    np.testing.assert_array_equal(run.read_pseudo_labels(2), run.read_pseudo_labels(1))


# report reads run directories and draws; no Keras in what it checks.
@pytest.mark.backend_independent
def test_report_draws_every_plot_from_saved_runs(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    result = invoke(
        "sweep",
        "digits",
        "--clusters",
        "3,4",
        "--seeds",
        "0,1",
        "--halt-after",
        "1,none",
        "--epochs",
        "2",
        *DIGITS,
        "--probe",
        "--probe-epochs",
        "1",
        "--out",
        sweep,
    )
    assert result.exit_code == 0, result.output
    invoke("space", "digits", "--seeds", "0-2", "-k", "3", *DIGITS, "--out", tmp_path / "space")
    interrupt_after(monkeypatch, build.Pretraining, "fit", 0)  # report must not train
    result = invoke("report", sweep, tmp_path / "space", "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    for name in (
        "runs.csv",
        "runs.md",
        "groups.csv",
        "nmi_curves.png",
        "probe_vs_k.png",
        "probe_vs_initial_nmi.png",
        "halting.png",
        "space_space.png",
    ):
        assert (tmp_path / "report" / name).stat().st_size > 0, name
    runs = read_csv(tmp_path / "report" / "runs.csv", drop=())
    assert len(runs) == 8 and {r["clusters"] for r in runs} == {"3", "4"}
    assert {r["halted_at"] for r in runs} == {"1", "2"} and all(
        0 <= float(r["probe"]) <= 1 for r in runs
    )
    assert all(float(r["recluster_seconds"]) >= 0 and float(r["train_seconds"]) > 0 for r in runs)
    groups = read_csv(tmp_path / "report" / "groups.csv", drop=())
    assert len(groups) == 4 and all(g["seeds"] == "2" for g in groups)


@pytest.mark.backend_independent
def test_report_needs_runs(tmp_path):
    result = invoke("report", tmp_path)
    assert result.exit_code == 1 and "No finished runs" in result.output
    result = invoke("report", tmp_path, "--margin", "0")
    assert result.exit_code == 2 and "'--margin': 0.0 is not in the range 0<x<=100" in result.output


# The criteria of `select` (keras_deepcluster.analysis.selection), each with its answer known
# in advance: the seed whose random filters cluster the labelled images best; per criterion
# the k whose trial scores highest; and the epoch after which the chosen trial's pseudo-labels
# agreed best with the labelled images (NMI), or never when that was the last epoch.
PLANTED_SEED_NMI = {0: 0.21, 1: 0.35, 2: 0.28}  # seed 1 is best
PLANTED_TRIAL_NMI = {  # NMI with the labelled images per epoch of the 4-epoch trials
    3: [0.30, 0.46, 0.38, 0.40],  # peak at epoch 1: halt after 2
    4: [0.30, 0.33, 0.36, 0.48],  # still rising at the last epoch: never halt
    5: [0.30, 0.50, 0.55, 0.45],  # peak at epoch 2: halt after 3
}
PLANTED_SCORES = {  # the trials' scores; "nmi" is the last epoch's NMI, as select scores it
    3: {"probe": 0.50, "knn": 0.80, "linear": 0.60, "nmi": 0.40},
    4: {"probe": 0.70, "knn": 0.60, "linear": 0.65, "nmi": 0.48},
    5: {"probe": 0.60, "knn": 0.70, "linear": 0.90, "nmi": 0.45},
}
PLANTED_CHOICES = {"probe": 4, "knn": 3, "linear": 5, "nmi": 4}
PLANTED_HALT = {3: 2, 4: None, 5: 3}


@pytest.mark.backend_independent
@pytest.mark.parametrize("criterion", ["knn", "probe", "linear", "nmi"])
def test_select_chooses_by_the_documented_criteria(tmp_path, monkeypatch, criterion):
    """The choosing steps from Python on planted scores and trial histories (nothing
    trains): each choice is known."""
    from keras_deepcluster.analysis import selection

    labelled_labels, trials = {}, []

    def filter_quality(backbone, images, labels, views, clusters, seed, *args, **kwargs):
        labelled_labels.setdefault("labels", np.asarray(labels))
        return types.SimpleNamespace(nmi=PLANTED_SEED_NMI[seed])

    def train_unless_finished(recipe, data, run, **kwargs):
        trials.append(recipe)
        labelled_labels.setdefault("known", np.asarray(data.y_train))
        run.create(recipe.to_toml())
        run.write_history(
            [
                {"epoch": epoch, "nmi_labels": value}
                for epoch, value in enumerate(PLANTED_TRIAL_NMI[recipe.clusters])
            ]
        )

    def trial_scores(run, *args):
        return PLANTED_SCORES[int(run.path.name.removeprefix("trial-k"))]

    monkeypatch.setattr(build, "build_backbone", lambda recipe, shape: None)
    monkeypatch.setattr(kdc.evaluation, "filter_quality", filter_quality)
    monkeypatch.setattr(pretraining, "train_unless_finished", train_unless_finished)
    monkeypatch.setattr(selection, "trial_scores", trial_scores)
    recipe = load_recipe("digits").replace(limit=150)
    labelled = selection.draw_labelled(recipe_data.load_data(recipe), 60, draw=0, holdout=0.5)

    seed = selection.choose_seed(recipe, [0, 1, 2], labelled)
    assert (seed.seed, seed.nmi) == (1, PLANTED_SEED_NMI)
    trial = recipe.replace(seed=seed.seed, epochs=4, halt_after=None, halt_when_stable=None)
    clusters = selection.choose_clusters(trial, [3, 4, 5], criterion, labelled, tmp_path)
    best_k = PLANTED_CHOICES[criterion]
    assert clusters.choices == PLANTED_CHOICES and clusters.clusters == best_k
    assert clusters.scores == PLANTED_SCORES
    assert (
        RunDirectory(tmp_path / f"trial-k{best_k}").read_json("scores_labelled.json")
        == PLANTED_SCORES[best_k]
    )  # kept, so that a selection resumes
    halt = selection.choose_halt(RunDirectory(tmp_path / f"trial-k{best_k}"))
    assert halt.halt_after == PLANTED_HALT[best_k]
    # Every trial: the chosen seed, the trial's epochs, no halting of their own.
    assert [(t.seed, t.clusters, t.epochs, t.halt_after, t.halt_when_stable) for t in trials] == [
        (1, k, 4, None, None) for k in (3, 4, 5)
    ]
    # Only the labelled images' labels reach the trials: 60 known, the rest -1, and the
    # known ones are the labels the seeds were scored with.
    known = labelled_labels["known"]
    assert np.count_nonzero(known >= 0) == 60 and set(known[known < 0]) == {-1}
    np.testing.assert_array_equal(known[known >= 0], labelled_labels["labels"])


# select's phases are Python over `train` and the probes, tested per backend elsewhere.
@pytest.mark.backend_independent
def test_select_chooses_and_trains(tmp_path, monkeypatch):
    # What the trials were given (the labelled images, as the runs saw them).
    trial_data, train = {}, pretraining.train_unless_finished

    def recording(recipe, data, run, **kwargs):
        if run.path.name.startswith("trial-"):
            trial_data.setdefault(run.path.parent, data)
        return train(recipe, data, run, **kwargs)

    monkeypatch.setattr(pretraining, "train_unless_finished", recording)

    def select(out, *args, epochs=3):
        result = invoke(
            "select",
            "digits",
            "--labelled",
            "60",
            "--trial-epochs",
            epochs,
            "--epochs",
            epochs,
            *DIGITS,
            "--out",
            out,
            *args,
        )
        assert result.exit_code == 0, result.output
        return json.loads((out / "selection.json").read_text()), result.output

    out = tmp_path / "select"
    selection, output = select(out, "--seeds", "0-1", "-k", "3,4", "--criterion", "knn")
    chosen, recipe = selection["chosen"], load_recipe("digits")
    known = trial_data[out]
    mask = known.y_train >= 0
    x, y = known.x_train[mask], known.y_train[mask]
    assert len(y) == 60
    views = recipe_data.image_views(recipe)

    # The seed: recomputed filter quality of each seed's random network on the labelled images.
    seed_nmi = {}
    for seed in (0, 1):
        keras.utils.clear_session()
        shape = (views.size, views.size, x.shape[-1])
        backbone = build.build_backbone(recipe.replace(seed=seed), shape)
        seed_nmi[seed] = kdc.evaluation.filter_quality(
            backbone, x, y, views, recipe.clusters, seed, recipe.pca, recipe.kmeans
        ).nmi
    assert {int(s): v for s, v in selection["seed_nmi"].items()} == pytest.approx(seed_nmi)
    assert chosen["seed"] == max(seed_nmi, key=seed_nmi.get)

    # k: the criterion recomputed from each trial run's saved model and history.
    trials = {k: RunDirectory(out / f"trial-k{k}") for k in (3, 4)}
    knn, last_nmi = {}, {}
    for k, run in trials.items():
        assert f"seed = {chosen['seed']}" in run.read_config()
        model = keras.saving.load_model(run.path / RunDirectory.MODEL)
        knn[k] = kdc.evaluation.cross_validated_accuracy(
            model.backbone, recipe.probe_layer, x, y, views, "knn", seed=chosen["seed"]
        )
        last_nmi[k] = run.read_history()[-1]["nmi_labels"]
    scores = {int(k): t for k, t in selection["trials"].items()}
    assert {k: t["knn"] for k, t in scores.items()} == pytest.approx(knn)
    assert {k: t["nmi"] for k, t in scores.items()} == pytest.approx(last_nmi)
    assert selection["choices"]["nmi"] == max(last_nmi, key=last_nmi.get)
    assert selection["criterion"] == "knn" and chosen["clusters"] == max(knn, key=knn.get)
    assert all(0 <= v <= 1 for t in scores.values() for v in t.values())

    # The halt epoch, from the chosen trial's pseudo-labels: 3 epochs give None, 1 or 2.
    trial = trials[chosen["clusters"]]
    agreement = [nmi(trial.read_pseudo_labels(epoch)[mask], y) for epoch in range(3)]
    assert agreement == pytest.approx([row["nmi_labels"] for row in trial.read_history()])
    peak = int(np.argmax(agreement))
    assert chosen["halt_after"] == (peak + 1 if peak < 2 else None)

    final = RunDirectory(out / "final")
    assert final.is_finished and f"clusters = {chosen['clusters']}" in final.read_config()
    stopped = final.read_json("summary.json")["clustering_stopped"]
    assert (stopped or {}).get("epoch") == chosen["halt_after"]
    assert "chosen seed" in output and "chosen k=" in output
    # Another draw of the labelled images scores the same seeds differently.
    other, _ = select(
        tmp_path / "draw1", "--seeds", "0-1", "-k", "3", "--draw", "1", "--choose-only", epochs=2
    )
    assert other["draw"] == 1 and other["seed_nmi"] != selection["seed_nmi"]
    assert other["final"]["epochs"] == 2 and not (tmp_path / "draw1" / "final").exists()


@pytest.mark.backend_independent
def test_select_without_labels_chooses_k_by_a_label_free_score(tmp_path):
    out = tmp_path / "select"
    args = ["--labelled", "0", "-k", "3,5", "--trial-epochs", "2", "--epochs", "2", *DIGITS]
    result = invoke("select", "digits", *args, "--choose-only", "--out", out)
    assert result.exit_code == 0, result.output
    assert "no label-free score chose k as well as the largest" in " ".join(result.output.split())
    selection = json.loads((out / "selection.json").read_text())
    chosen, recipe = selection["chosen"], load_recipe("digits")
    assert selection["labelled"] == 0 and selection["criterion"] == "generalization"
    assert chosen["seed"] == recipe.seed and chosen["halt_after"] is None
    # The trials trained without labels, and their scores are label_free_run_scores'.
    scores = {}
    for k in (3, 5):
        trial = RunDirectory(out / f"trial-k{k}")
        assert "nmi_labels" not in trial.history[-1]
        images = kdc.data.load("digits").x_train[:150]
        scores[k] = kdc.analysis.label_free_run_scores(
            kdc.Run.open(trial.path), images, seed=recipe.seed
        )
    trials = {int(k): t for k, t in selection["trials"].items()}
    assert trials.keys() == scores.keys()
    for k in scores:
        assert trials[k] == pytest.approx(scores[k])
    assert chosen["clusters"] == max(scores, key=lambda k: scores[k]["generalization"])
    # A trial's scores kept from before a criterion existed are computed again on resuming.
    kept = out / "trial-k3" / "scores_label_free.json"
    kept.write_text(json.dumps({k: v for k, v in trials[3].items() if k != "gap"}))
    result = invoke("select", "digits", *args, "--choose-only", "--criterion", "gap", "--out", out)
    assert result.exit_code == 0, result.output
    assert json.loads(kept.read_text()) == pytest.approx(trials[3])


@pytest.mark.backend_independent
def test_select_bad_input(tmp_path):
    result = invoke("select", "digits", "--labelled", "5", "--out", tmp_path / "s")
    assert result.exit_code == 2 and "give at least 10, or 0" in result.output
    result = invoke("select", "digits", "--labelled", "0", "--criterion", "probe")
    assert result.exit_code == 2 and "use one of silhouette, generalization" in result.output
    result = invoke("select", "digits", "--labelled", "50", "--criterion", "silhouette")
    assert result.exit_code == 2 and "use one of probe, knn" in result.output
    result = invoke("select", "digits", "--labelled", "0", "-k", "3,100", *DIGITS)
    assert result.exit_code == 1 and "100" in result.output
    for option, value in (("--criterion", "svm"), ("--draw", "-1")):
        result = invoke(
            "select", "digits", "--labelled", "50", option, value, "--out", tmp_path / "s"
        )
        assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output
    result = invoke("select", "digits", "--labelled", "500", *DIGITS, "--out", tmp_path / "s")
    assert (
        result.exit_code == 1
        and "--labelled 500 is more than the 150 training images" in result.output
    )
