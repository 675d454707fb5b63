"""The Deep Dive analyses: space, sweep, report, select and the automatic halt."""

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

import keras_deepcluster as kdc
from keras_deepcluster.reclustering import stable_since
from keras_deepcluster import pretraining
from keras_deepcluster_cli.main import main
from keras_deepcluster.run_directory import RunDirectory

DIGITS = ["--limit", "150"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="deepcluster")


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
    interrupt_after(monkeypatch, pretraining.RunRecorder, "on_epoch_end", 3)
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
    interrupt_after(monkeypatch, pretraining.Pretraining, "fit", 0)  # report must not train
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


def test_report_needs_runs(tmp_path):
    result = invoke("report", tmp_path)
    assert result.exit_code == 1 and "No finished runs" in result.output
    result = invoke("report", tmp_path, "--margin", "0")
    assert result.exit_code == 2 and "'--margin': 0.0 is not in the range 0<x<=100" in result.output


def test_select_chooses_and_trains(tmp_path):
    def select(out, *args):
        result = invoke(
            "select",
            "digits",
            "--labelled",
            "60",
            "--trial-epochs",
            "2",
            "--epochs",
            "2",
            *DIGITS,
            "--out",
            out,
            *args,
        )
        assert result.exit_code == 0, result.output
        return json.loads((out / "selection.json").read_text()), result.output

    out = tmp_path / "select"
    selection, output = select(out, "--seeds", "0-1", "-k", "3,4", "--criterion", "knn")
    chosen = selection["chosen"]
    assert chosen["seed"] == int(max(selection["seed_nmi"], key=selection["seed_nmi"].get))
    trials = {int(k): t for k, t in selection["trials"].items()}
    assert all(set(t) == {"probe", "knn", "linear", "nmi"} for t in trials.values())
    assert all(0 <= v <= 1 for t in trials.values() for v in t.values())
    for criterion, k in selection["choices"].items():
        assert trials[k][criterion] == max(t[criterion] for t in trials.values())
    assert selection["criterion"] == "knn" and chosen["clusters"] == selection["choices"]["knn"]
    assert chosen["halt_after"] in (None, 1)
    final = RunDirectory(out / "final")
    assert final.is_finished and f"clusters = {chosen['clusters']}" in final.read_config()
    assert "chosen seed" in output and "chosen k=" in output
    # Another draw of the labelled images scores the same seeds differently.
    other, _ = select(
        tmp_path / "draw1", "--seeds", "0-1", "-k", "3", "--draw", "1", "--choose-only"
    )
    assert other["draw"] == 1 and other["seed_nmi"] != selection["seed_nmi"]
    assert other["final"]["epochs"] == 2 and not (tmp_path / "draw1" / "final").exists()


def test_select_bad_input(tmp_path):
    result = invoke("select", "digits", "--labelled", "5", "--out", tmp_path / "s")
    assert result.exit_code == 2 and "--labelled" in result.output
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
