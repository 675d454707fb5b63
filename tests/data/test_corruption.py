"""The corruption harness: every file a command reads, damaged in turn, gets a clear message.

For a finished run, a killed (resumable) run, an analysis folder (`space`) and an
image cache, each file is
damaged (emptied, cut to half, bytes flipped in the middle, replaced by another
file, deleted) and every command that reads it runs on the damaged copy. The
property: exit 0 (the file was not needed, or the command went on without it
and named it), or exit 1/2 with one ``Error:`` line that names the file; never a
traceback or a parser's raw error.

CI runs the quick profile (each file with one damage, the modes in turn); set
``KDC_CORRUPTION=full`` for every file with every damage (docs/reliability.md).
The files are Python's to read, the same on every backend: run on one.
"""

import json
import os
import shutil
import signal

import numpy as np
import pytest
from conftest import invoke, signalled_run

from keras_deepcluster import data

pytestmark = pytest.mark.backend_independent

FULL = os.environ.get("KDC_CORRUPTION") == "full"
# A file to append each case's outcome to (kind, file, damage, command, exit code), for the docs.
LOG = os.environ.get("KDC_CORRUPTION_LOG")
TRAIN = ["train", "digits", "--limit", "100", "--epochs", "2", "-k", "5"]


def emptied(path):
    path.write_bytes(b"")


def halved(path):
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


def flipped(path):
    content = bytearray(path.read_bytes())
    middle = len(content) // 2
    content[middle : middle + 16] = bytes(b ^ 0xFF for b in content[middle : middle + 16])
    path.write_bytes(bytes(content))


def replaced(path):
    near = [*sorted(path.parent.iterdir()), *sorted(path.parent.parent.iterdir())]
    other = next(p for p in near if p.is_file() and p != path and not p.name.startswith("."))
    path.write_bytes(other.read_bytes())


def deleted(path):
    path.unlink()


DAMAGES = (emptied, halved, flipped, replaced, deleted)
# Raw errors that must never reach the user.
RAW = ("Traceback", "JSONDecodeError", "KeyError", "BadZipFile", "UnicodeDecodeError",
       "Expecting property", "File not found: filepath", "unpickl")  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished run, a killed one (after epoch 0) and an image cache with what reads each."""
    root = tmp_path_factory.mktemp("intact")
    finished = root / "finished"
    result = invoke(*TRAIN, "--out", finished)
    assert result.exit_code == 0, result.output
    result = invoke("probe", finished, "--epochs", "1")
    assert result.exit_code == 0, result.output
    killed = root / "killed"
    code, output = signalled_run("clustering", 1, signal.SIGINT, *TRAIN, "--out", killed)
    assert code == 130 and (killed / "checkpoint.json").is_file(), output
    images = np.random.default_rng(0).integers(0, 256, (60, 28, 28, 1), np.uint8)
    np.savez(root / "images.npz", x_train=images)
    cache = data.prepare("npz", path=root / "images.npz", out=root / "cache").path
    space = ["space", "digits", "--seeds", "0-1", "-k", "5", "--limit", "100"]
    result = invoke(*space, "--out", root / "space")
    assert result.exit_code == 0, result.output
    return {
        "finished": (
            finished,
            {
                "probe": ["probe", "{run}", "--epochs", "1"],
                "report": ["report", "{root}", "--out", "{root}/../report"],
                "export": ["export", "{run}", "--format", "csv", "--out", "{root}/../c.csv"],
            },
        ),
        "killed": (killed, {"resume": [*TRAIN, "--resume", "{run}"]}),
        # An analysis folder continued with more seeds.
        "space": (root / "space", {"space": [*space[:3], "0-2", *space[4:], "--out", "{run}"]}),
        "cache": (
            cache,
            {
                "train": [
                    "train",
                    "mnist",
                    "--min-steps",
                    "none",
                    "--source",
                    "cache",
                    "--data-dir",
                    "{run}",
                    "--epochs",
                    "1",
                    "-k",
                    "3",
                    "--pca",
                    "4",
                    "--out",
                    "{root}/../cache-run",
                ]
            },  # fmt: skip
        ),
    }


def cases():
    """(kind, file, damage) triples: all of them, or each file once with the modes in turn."""
    files = {
        "finished": ["config.toml", "history.csv", "model.keras", "clustering.npz",
                     "summary.json", "data.json", "probe.json", "pseudo_labels/epoch_001.npz"],
        "killed": ["config.toml", "checkpoint.json", "checkpoint_epoch_000.keras",
                   "history.csv", "pseudo_labels/epoch_000.npz"],
        "cache": ["manifest.json", "train_images.npy"],
        "space": ["space.csv"],
    }  # fmt: skip
    triples = [(kind, name) for kind, names in files.items() for name in names]
    if FULL:
        return [(kind, name, damage) for kind, name in triples for damage in DAMAGES]
    return [(kind, name, DAMAGES[i % len(DAMAGES)]) for i, (kind, name) in enumerate(triples)]


@pytest.mark.parametrize(
    "kind, name, damage", cases(), ids=lambda v: getattr(v, "__name__", str(v))
)
def test_a_damaged_file_gets_a_message_that_names_it(runs, tmp_path, kind, name, damage):
    intact, commands = runs[kind]
    for command, args in commands.items():  # each on its own damaged copy
        copy = tmp_path / command / intact.name
        shutil.copytree(intact, copy)
        damage(copy / name)
        result = invoke(*[a.format(run=copy, root=copy.parent) for a in args])
        output = result.output
        where = f"{kind}/{name} {damage.__name__}, {command}: {output}"
        if LOG:
            with open(LOG, "a") as log:
                log.write(json.dumps([kind, name, damage.__name__, command, result.exit_code]))
                log.write("\n")
        assert result.exit_code in (0, 1, 2), where
        # CliRunner keeps an unhandled exception (a traceback for the user) in `exception`.
        unhandled = result.exception is not None and not isinstance(result.exception, SystemExit)
        assert not unhandled, f"{where} {result.exception!r}"
        assert not any(raw in output for raw in RAW), where
        if result.exit_code != 0:
            errors = [line for line in output.splitlines() if line.startswith("Error:")]
            assert len(errors) == 1, where
            assert os.path.basename(name) in output or "config" in output, where
