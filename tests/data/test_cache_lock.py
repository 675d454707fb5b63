"""The image cache's lock: a process that needs a cache another is building waits, then reads it.

The lock is Python's, the same on every backend: these tests run on one.
"""

import shutil
import socket
import subprocess
import sys
import threading

import pytest
from conftest import holder

from keras_deepcluster import data
from keras_deepcluster.platform.directory_lock import FolderInUseError

pytestmark = pytest.mark.backend_independent


def release_later(process, seconds):
    """Kills the lock holder `process` after `seconds`, from a thread."""
    timer = threading.Timer(seconds, process.kill)
    timer.start()
    return timer


class OutputReader:
    """Collects a process's output in a thread; `seen` is set once a line starts with `line`."""

    def __init__(self, process, line):
        self.lines, self.seen = [], threading.Event()
        self.thread = threading.Thread(target=self._read, args=(process, line), daemon=True)
        self.thread.start()

    def _read(self, process, line):
        for text in process.stdout:
            self.lines.append(text)
            if text.startswith(line):
                self.seen.set()

    def text(self):
        self.thread.join(timeout=5)
        return "".join(self.lines)


def test_a_build_waits_for_the_builder_it_names_then_builds(tmp_path):
    data.write_image_folder(tmp_path / "photos", 12, classes=2, sizes=(20, 40))
    cache = tmp_path / "cache"
    cache.mkdir()
    process = holder(cache)  # a builder that stops (dies) before finishing
    timer = release_later(process, 1.0)
    notes = []
    try:
        built = data.prepare(
            "folder", path=tmp_path / "photos", size=8, out=cache, on_note=notes.append
        )
    finally:
        timer.join()
        process.wait()
    assert len(notes) == 1, notes
    assert f"Waiting for process {process.pid} on {socket.gethostname()} since 20" in notes[0]
    assert f"building the image cache in {cache}" in notes[0]
    assert built.built and built.data().x_train.shape == (12, 8, 8, 3)
    again = data.prepare("folder", path=tmp_path / "photos", size=8, out=cache)
    assert not again.built  # the lock file is not taken for a foreign file


def test_waiting_gives_up_after_the_timeout_and_names_the_builder(tmp_path):
    data.write_image_folder(tmp_path / "photos", 4, classes=2, sizes=(20, 40))
    cache = tmp_path / "cache"
    cache.mkdir()
    process = holder(cache)
    try:
        with pytest.raises(FolderInUseError, match=f"still held by process {process.pid} on "):
            data.prepare("folder", path=tmp_path / "photos", size=8, out=cache, lock_timeout=0.5)
    finally:
        process.kill()
        process.wait()
    assert sorted(p.name for p in cache.iterdir()) == [".lock"]  # nothing half-written


def test_two_prepare_and_a_train_started_together_share_one_build(tmp_path, monkeypatch):
    """Three processes need one new cache while its lock is held: one builds, two reuse it."""
    data.write_image_folder(tmp_path / "photos", 40, classes=2, sizes=(20, 40))
    monkeypatch.setenv("KERAS_DEEPCLUSTER_CACHE", str(tmp_path / "root"))
    # The folder that `train cifar10` and `prepare --name cifar10 --size 45` choose.
    cache = data.prepare("folder", "cifar10", tmp_path / "photos", size=45).path
    shutil.rmtree(cache)
    cache.mkdir()
    blocker = holder(cache)  # so that all three are waiting when the build can start
    cli = [sys.executable, "-m", "keras_deepcluster_cli.main"]
    source = ["--data-dir", str(tmp_path / "photos")]
    commands = [
        [*cli, "prepare", "folder", "--name", "cifar10", *source, "--size", "45"],
        [*cli, "prepare", "folder", "--name", "cifar10", *source, "--size", "45"],
        [*cli, "train", "cifar10", "--source", "folder", *source, "--epochs", "1", "-k", "2"]
        + [
            "--min-steps",
            "none",
            "--pca",
            "4",
            "--batch-size",
            "8",
            "--out",
            str(tmp_path / "run"),
        ],
    ]
    processes = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for c in commands
    ]
    readers = [OutputReader(process, f"Waiting for process {blocker.pid}") for process in processes]
    try:
        for reader in readers:  # all three wait for the lock before it is released
            assert reader.seen.wait(timeout=120), reader.text()
        blocker.kill()
        for process in processes:
            process.wait(timeout=240)
    finally:
        blocker.kill()
        blocker.wait()
        for process in processes:
            process.kill()
    outputs = [reader.text() for reader in readers]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    # One of the three built it (train, or one prepare); the prepares that did not reused it.
    assert sum("up to date (reused)" in o for o in outputs[:2]) >= 1, outputs
    assert sum("built in" in o for o in outputs[:2]) <= 1, outputs
    assert (tmp_path / "run" / "model.keras").is_file()
