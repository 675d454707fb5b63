import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_deepcluster.platform import determinism, directory_lock
from keras_deepcluster.platform.devices import accelerator_available

# float32 matrix products on NVIDIA GPUs run in TF32 under JAX (10-bit
# mantissa): results that go through one agree to about 1e-3 of their scale
# there, to float32 rounding elsewhere. Tests compare with this tolerance, set
# in `pytest_configure` (asking JAX for its devices starts it, which must come
# after `enable_determinism`).
MATMUL_ATOL = None


def pytest_addoption(parser):
    parser.addoption(
        "--deterministic",
        action="store_true",
        help="Run the whole session in deterministic mode (enable_determinism); for GPUs.",
    )


def pytest_configure(config):
    global MATMUL_ATOL
    if config.getoption("--deterministic"):
        determinism.enable_determinism()
    MATMUL_ATOL = 1e-2 if accelerator_available() else 1e-5


def pytest_collection_modifyitems(items):
    # pytest-xdist hands tests out in this order: the long ones first.
    items.sort(key=lambda item: item.get_closest_marker("long_running") is None)


def make_shapes(n: int, seed: int = 0, size: int = 28):
    """Four shape classes (square, ring, cross, diagonal) at random places and sizes.

    Random-filter features cluster them mostly by position and size (NMI with
    the shape about 0.15); features that ignore where the shape is, which
    random-crop training teaches, cluster them by shape.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(4, size=n)
    yy, xx = np.mgrid[:size, :size]
    images = np.zeros((n, size, size), np.float32)
    for i, label in enumerate(labels):
        r = rng.uniform(4, 9)
        cy, cx = rng.uniform(r + 1, size - r - 1, 2)
        dy, dx = yy - cy, xx - cx
        if label == 0:
            mask = (np.abs(dy) < r) & (np.abs(dx) < r)
        elif label == 1:
            mask = (dy**2 + dx**2 < r**2) & (dy**2 + dx**2 > (r - 2.5) ** 2)
        elif label == 2:
            mask = ((np.abs(dy) < 1.5) & (np.abs(dx) < r)) | ((np.abs(dx) < 1.5) & (np.abs(dy) < r))
        else:
            mask = (np.abs(dy - dx) < 1.5) & (np.abs(dy) < r)
        images[i] = mask
    images = images * rng.uniform(0.6, 1.0, (n, 1, 1)) + rng.normal(0, 0.1, images.shape)
    return (np.clip(images, 0, 1) * 255).astype(np.uint8), labels


@pytest.fixture(autouse=True)
def fresh_session(tmp_path, monkeypatch):
    keras.utils.clear_session()
    # What a command writes by default (runs/...) goes into this test's folder: tests run
    # side by side in CI (pytest-xdist) and must not share a working directory.
    monkeypatch.chdir(tmp_path)
    # Each test's image caches in its own folder: none is reused by another test.
    monkeypatch.setenv("KERAS_DEEPCLUSTER_CACHE", str(tmp_path / "image-caches"))
    yield


@pytest.fixture
def shapes():
    return make_shapes


@pytest.fixture
def write_pngs():
    """Writes uint8 images (N, H, W[, 3]) as PNG files into a new folder."""
    from PIL import Image

    def write(folder, images):
        folder.mkdir()
        for i, image in enumerate(images):
            Image.fromarray(image).save(folder / f"{i:03d}.png")

    return write


def invoke(*args):
    """`deepcluster ARGS...` in this process (click's CliRunner, current backend); its Result.

    Every test that runs the command line imports this: `from conftest import invoke`.
    """
    from click.testing import CliRunner

    from keras_deepcluster_cli.main import main

    return CliRunner().invoke(main, [str(a) for a in args], prog_name="deepcluster")


# The shared run: `train digits` with these options, trained once per session.
SHARED_RUN = ["--limit", "100", "--epochs", "1"]


@pytest.fixture(scope="session")
def shared_digits_run(tmp_path_factory):
    """A finished `train digits --limit 100 --epochs 1` run, trained once per pytest session.

    Tests only read it; one that changes a run (deletes a file, overwrites or
    resumes it) changes `copy_of_shared_run` instead.
    """
    out = tmp_path_factory.mktemp("shared") / "digits"
    result = invoke("train", "digits", *SHARED_RUN, "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def copy_of_shared_run(shared_digits_run, tmp_path):
    """A copy of `shared_digits_run` in this test's tmp_path, to change as it likes."""
    return shutil.copytree(shared_digits_run, tmp_path / "shared-copy")


# `deepcluster ARGS...`, raising signal NUMBER in itself at a known point of the run: the
# start of epoch EPOCH's k-means ("clustering"; epoch EPOCH - 1 is checkpointed by then),
# or the first batch end from step 3 on of epoch EPOCH ("training"; with
# steps_per_execution=8 Keras calls the batch hooks after steps 7, 15 and the last).
# Raised in the thread that gets there: the main thread handles it at once, or, from a
# Keras hook thread (JAX, PyTorch), at its next Python instruction, as a Ctrl-C would be.
SIGNAL_ITSELF = """
import signal, sys
from keras_deepcluster.method import clustering
from keras_deepcluster.runs import callbacks
phase, epoch, number, args = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
clusterings, sent = [], []  # one clustering per epoch, at its start
cluster_features = clustering.cluster_features
batch_end = callbacks.StopOnInterrupt.on_train_batch_end

def signal_in_clustering(*args, **kwargs):
    clusterings.append(epoch)
    if phase == "clustering" and len(clusterings) == epoch + 1:
        sent.append(signal.raise_signal(number))
    return cluster_features(*args, **kwargs)

def signal_in_training(self, batch, logs=None):
    if phase == "training" and len(clusterings) == epoch + 1 and batch >= 3 and not sent:
        sent.append(signal.raise_signal(number))
    return batch_end(self, batch, logs)

clustering.cluster_features = signal_in_clustering
callbacks.StopOnInterrupt.on_train_batch_end = signal_in_training
from keras_deepcluster_cli.main import main
main(args, prog_name="deepcluster")
"""


def signalled_run(phase, epoch, signal_number, *args):
    """Runs `deepcluster ARGS...` that signals itself (see SIGNAL_ITSELF); (exit code, output)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-c", SIGNAL_ITSELF, phase, str(epoch), str(int(signal_number))]
    process = subprocess.run(
        [*command, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        timeout=300,
    )
    return process.returncode, process.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short fashion_mnist-like run on Debian-free data: 'shapes' saved as an .npz.

    (run directory, (train images, labels), (test images, labels)); one per test module.
    """
    folder = tmp_path_factory.mktemp("trained")
    images, labels = make_shapes(240, seed=4)
    test_images, test_labels = make_shapes(80, seed=5)
    np.savez(
        folder / "shapes.npz",
        x_train=images,
        y_train=labels,
        x_test=test_images,
        y_test=test_labels,
    )
    import keras_deepcluster as kdc

    recipe = kdc.load_recipe("mnist").replace(
        source="npz",
        data_dir=str(folder / "shapes.npz"),
        epochs=2,
        clusters=4,
        batch_size=32,
        min_steps=None,
    )
    os.environ["KERAS_DEEPCLUSTER_CACHE"] = str(folder / "caches")
    try:
        run = kdc.train(recipe, folder / "run")
    finally:
        del os.environ["KERAS_DEEPCLUSTER_CACHE"]
    return run, (images, labels), (test_images, test_labels)


# The library's directory_lock.py, loaded by its path: it needs only the standard library,
# and the package itself imports keras (seconds per holder).
HOLD = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("directory_lock", sys.argv[2])
directory_lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(directory_lock)
directory_lock.lock_folder(sys.argv[1])
print("locked", flush=True)
time.sleep(600)
"""


def holder(folder):
    """A process that holds `folder`'s lock until killed."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), directory_lock.__file__],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "locked"
    return process
