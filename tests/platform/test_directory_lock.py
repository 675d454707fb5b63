"""One writer per folder: the lock itself, and every command that writes behind it.

The lock is Python's (`fcntl.flock`), the same on every backend: these tests run
on one, except the two training processes, a run on each backend.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import keras
import pytest
from conftest import holder, invoke

from keras_deepcluster.platform.directory_lock import (
    LOCK_FILE,
    FolderInUseError,
    holds_lock,
    lock_folder,
    unlock_folder,
)


@pytest.mark.backend_independent
def test_a_second_process_is_told_who_holds_the_folder(tmp_path):
    process = holder(tmp_path)
    try:
        with pytest.raises(FolderInUseError) as error:
            lock_folder(tmp_path)
        message = str(error.value)
        assert f"in use by process {process.pid} on {socket.gethostname()} since 20" in message
        assert not holds_lock(tmp_path)
    finally:
        process.kill()
        process.wait()


@pytest.mark.backend_independent
def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    process = holder(tmp_path)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert (tmp_path / LOCK_FILE).is_file()  # the record stays; the lock does not
    lock_folder(tmp_path)
    try:
        assert holds_lock(tmp_path)
        assert f'"pid": {os.getpid()}' in (tmp_path / LOCK_FILE).read_text()
        lock_folder(tmp_path)  # again: already ours, nothing happens
    finally:
        unlock_folder(tmp_path)
    assert not holds_lock(tmp_path)


@pytest.mark.backend_independent
def test_a_released_lock_can_be_taken_by_another_process(tmp_path):
    lock_folder(tmp_path)
    unlock_folder(tmp_path)
    process = holder(tmp_path)  # would hang on readline if the lock were still held
    process.kill()
    process.wait()


@pytest.fixture
def busy_run(copy_of_shared_run):
    """A run directory whose lock another process holds, as a training process would."""
    run = copy_of_shared_run  # a finished `train digits --limit 100 --epochs 1`
    (run / "summary.json").unlink()  # unfinished, so that --resume would enter it
    before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*") if p.name != LOCK_FILE}
    process = holder(run)
    yield run, process.pid, before
    process.kill()
    process.wait()


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "command",
    [
        ["train", "digits", "--resume", "{run}"],
        ["train", "digits", "--out", "{run}", "--overwrite"],
        ["probe", "{run}", "--random"],
    ],
)
def test_commands_refuse_a_run_in_use_before_writing(busy_run, command):
    run, pid, before = busy_run
    result = invoke(*[str(part).replace("{run}", str(run)) for part in command])
    assert result.exit_code == 1
    assert f"is in use by process {pid} on" in result.output
    after = {p.name: p.stat().st_mtime_ns for p in run.rglob("*") if p.name != LOCK_FILE}
    assert after == before  # nothing written, nothing removed


@pytest.mark.backend_independent
def test_sweep_refuses_a_sweep_folder_in_use(tmp_path):
    folder = tmp_path / "sweep"
    folder.mkdir()
    process = holder(folder)
    try:
        result = invoke("sweep", "digits", "--seeds", "1,2", "--epochs", "1", "--out", folder)
        assert result.exit_code == 1 and f"in use by process {process.pid}" in result.output
        assert sorted(p.name for p in folder.iterdir()) == [LOCK_FILE]
    finally:
        process.kill()
        process.wait()


# `deepcluster ARGS...` that stops itself (SIGSTOP) once epoch 0 is recorded, holding its lock.
PAUSE_AFTER_EPOCH_0 = """
import os, signal, sys
from keras_deepcluster.runs import callbacks
epoch_end = callbacks.RunRecorder.on_epoch_end

def on_epoch_end(self, epoch, logs=None):
    epoch_end(self, epoch, logs)
    if epoch == 0:
        os.kill(os.getpid(), signal.SIGSTOP)

callbacks.RunRecorder.on_epoch_end = on_epoch_end
from keras_deepcluster_cli.main import main
main(sys.argv[1:], prog_name="deepcluster")
"""


def is_stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


@pytest.mark.backend_independent  # the lock is Python; what it guards trains per backend elsewhere
def test_two_training_processes_on_one_directory(tmp_path):
    # The reproduction: a resume started while the first run is still writing
    # (the first one waits, stopped after its first epoch, until the second has run).
    run = tmp_path / "run"
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = ["train", "digits", "--limit", "300", "--epochs", "3"]
    first = subprocess.Popen(
        [sys.executable, "-c", PAUSE_AFTER_EPOCH_0, *args, "--out", str(run)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 240
        while not is_stopped(first.pid):
            assert first.poll() is None, "the first run ended before its first epoch"
            assert time.time() < deadline, "the first run did not finish an epoch in time"
            time.sleep(0.1)
        assert len((run / "history.csv").read_text().splitlines()) == 2  # epoch 0 only
        cli = [sys.executable, "-m", "keras_deepcluster_cli.main", *args, "--resume", str(run)]
        second = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 1, second.stdout + second.stderr
        assert f"is in use by process {first.pid}" in second.stderr
    finally:
        first.send_signal(signal.SIGCONT)
        first.wait(timeout=300)
    assert first.returncode == 0
    epochs = (run / "history.csv").read_text().splitlines()[1:]
    assert [line.split(",")[0] for line in epochs] == [str(epoch) for epoch in range(3)]
