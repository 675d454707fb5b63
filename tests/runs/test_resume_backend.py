"""A resumed run continues on the backend it trained on, or is refused another one."""

import json
import os
import subprocess
import sys

import keras
import pytest
from conftest import invoke

import keras_deepcluster as kdc
from keras_deepcluster import RunDirectory
from keras_deepcluster.platform import directory_lock
from keras_deepcluster.runs.run_directory import RunDirectoryError

BACKENDS = ("tensorflow", "jax", "torch")


class Crash(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise SystemExit("killed after the first epoch")


def _killed_run(path):
    recipe = kdc.load_recipe("digits").replace(limit=96, epochs=2, clusters=4)
    with pytest.raises(SystemExit):
        kdc.train(recipe, out=path, callbacks=[Crash()])
    directory_lock.release_all()  # as the killed process's end would
    run = RunDirectory(path)
    assert run.read_checkpoint()["backend"] == keras.backend.backend()
    return run


def test_a_run_refuses_to_continue_on_another_backend(tmp_path):
    run = _killed_run(tmp_path / "run")
    other = next(b for b in BACKENDS if b != keras.backend.backend())
    checkpoint = json.loads((run.path / RunDirectory.CHECKPOINT).read_text())
    checkpoint["backend"] = other  # as if it had trained there
    (run.path / RunDirectory.CHECKPOINT).write_text(json.dumps(checkpoint))
    with pytest.raises(RunDirectoryError, match=f"trained on {other}; it continues on {other}"):
        kdc.train(None, out=run.path, resume=True)
    result = invoke("train", "--resume", run.path, "--backend", keras.backend.backend())
    assert result.exit_code != 0 and f"trained on {other}" in result.output
    assert "Traceback" not in result.output
    assert not run.is_finished and run.read_checkpoint()["epoch"] == 0


@pytest.mark.long_running
def test_resume_without_a_recipe_continues_on_the_recorded_backend(tmp_path):
    run = _killed_run(tmp_path / "run")
    recorded = keras.backend.backend()
    other = next(b for b in BACKENDS if b != recorded)
    command = [sys.executable, "-m", "keras_deepcluster_cli.main", "train", "--resume", run.path]
    result = subprocess.run(
        [str(part) for part in command],
        env={**os.environ, "KERAS_BACKEND": other},  # the environment says another one
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"backend {recorded}" in result.stdout
    assert run.is_finished and run.summary["backend"] == recorded


@pytest.mark.backend_independent
def test_resume_without_a_recipe_of_a_folder_without_a_run_is_refused(tmp_path):
    result = invoke("train", "--resume", tmp_path)
    assert (
        result.exit_code == 2 and "holds no run (config.toml); nothing to resume" in result.output
    )
    result = invoke("train")
    assert result.exit_code == 2 and "Missing argument 'RECIPE'" in result.output
