import math
import os
import stat

import numpy as np
import pytest

from keras_deepcluster.runs.run_directory import RunDirectory, RunDirectoryError

# Files and folders only: on one backend.
pytestmark = pytest.mark.backend_independent


def test_new_run_files(tmp_path):
    run = RunDirectory(tmp_path / "run")
    run.check_writable()
    run.create("description = 'x'\n")
    assert run.is_run and not run.is_finished
    run.write_history(
        [
            {"epoch": 0, "loss": 2.0, "seconds_train": 1.5, "zeta": 1.0, "nmi_labels": 0.3},
            {"epoch": 1, "loss": 1.5, "seconds_train": 1.2, "nmi_labels": 0.4},
        ]
    )
    header = (run.path / "history.csv").read_text().splitlines()[0]
    assert header == "epoch,loss,nmi_labels,seconds_train,zeta"  # known order first, then extra
    rows = run.read_history()
    assert [r["nmi_labels"] for r in rows] == [0.3, 0.4] and math.isnan(rows[1]["zeta"])
    run.write_pseudo_labels(3, np.array([2, 0, 1]))
    np.testing.assert_array_equal(run.read_pseudo_labels(3), [2, 0, 1])
    mode = stat.S_IMODE(os.stat(run.path / "history.csv").st_mode)
    assert mode & stat.S_IRGRP  # not left private by the temporary file
    assert not list(run.path.rglob(".partial-*"))


def test_refuses_to_replace_or_mix_runs(tmp_path):
    run = RunDirectory(tmp_path / "run")
    run.create("a = 1\n")
    with pytest.raises(
        RunDirectoryError, match="holds an unfinished run; continue it with `resume=True`"
    ):
        run.check_writable()
    run.write_json(RunDirectory.SUMMARY, {"done": True})
    with pytest.raises(RunDirectoryError, match="already holds a finished run"):
        run.create("b = 2\n")
    assert run.read_config() == "a = 1\n"
    run.create("b = 2\n", overwrite=True)
    assert run.read_config() == "b = 2\n" and not run.is_finished

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirectoryError, match="not empty and holds no run"):
        RunDirectory(tmp_path / "other").check_writable(overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirectoryError, match="is a file, not a directory"):
        RunDirectory(tmp_path / "file").check_writable()
    with pytest.raises(RunDirectoryError, match="holds no run"):
        RunDirectory(tmp_path / "other").read_config()


def test_failed_write_keeps_the_previous_file(tmp_path):
    run = RunDirectory(tmp_path)
    run.write_text("history.csv", "old\n")

    class Unwritable:
        pass

    with pytest.raises(TypeError):
        run.write_json("history.csv", {"x": Unwritable()})
    assert (tmp_path / "history.csv").read_text() == "old\n"
    assert not list(tmp_path.glob(".partial-*"))


def test_unwritable_parent(tmp_path, monkeypatch):
    # Simulated: as root (CI) a chmod would not stop the write.
    monkeypatch.setattr(os, "access", lambda path, mode: path != tmp_path)
    with pytest.raises(RunDirectoryError, match=f"Cannot write to {tmp_path}: permission denied"):
        RunDirectory(tmp_path / "new" / "run").check_writable()
