import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

import keras_deepcluster as kdc
from keras_deepcluster.evaluation import nmi
from keras_deepcluster_cli.main import main

TWO_DEVICES = Path(__file__).parent / "two_devices.py"
BACKEND = keras.backend.backend()
needs_data_parallel = pytest.mark.skipif(
    BACKEND not in ("jax", "tensorflow"), reason="Keras's fit has no multi-device mode on torch"
)


def run_two_devices(*args, cwd=None):
    env = {**os.environ, "KERAS_BACKEND": BACKEND, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, str(TWO_DEVICES), *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


@needs_data_parallel
def test_two_devices_give_the_pseudo_labels_of_one(tmp_path):
    result = run_two_devices("compare", tmp_path / "runs.npz")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = np.load(tmp_path / "runs.npz")
    assert (runs["one_replicas"], runs["two_replicas"]) == (1, 2)
    # The first clustering, on the untrained network: exactly the same.
    np.testing.assert_array_equal(runs["one_labels"][0], runs["two_labels"][0])
    # Training splits each batch but computes the same step (batch norm over the
    # whole batch, weight decay counted once), so later epochs agree up to
    # rounding (counting the weight decay twice is 1-2 % off in the loss).
    assert runs["one_loss"][-1] < runs["one_loss"][0] - 0.1  # it did train
    np.testing.assert_allclose(runs["two_loss"], runs["one_loss"], rtol=5e-3)
    # The logged parts are those of the whole batch, not of one replica's share.
    for part in ("cross_entropy", "weight_decay"):
        np.testing.assert_allclose(runs[f"two_{part}"], runs[f"one_{part}"], rtol=5e-3)
    for one, two in zip(runs["one_labels"][1:], runs["two_labels"][1:]):
        assert nmi(one, two) > 0.9
    assert "feature_batch_size=127" in str(runs["uneven_batch_error"])
    assert "multiple of 2" in str(runs["uneven_batch_error"])


@needs_data_parallel
def test_cli_trains_on_two_devices(tmp_path):
    out = tmp_path / "run"
    args = ["train", "digits", "--devices", "2", "--epochs", "2", "--limit", "256", "--out", out]
    result = run_two_devices("cli", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "on 2 devices" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["devices"] == 2 and summary["final"]["epoch"] == 1
    assert (out / "model.keras").is_file()

    uneven = run_two_devices("cli", *args[:-1], tmp_path / "odd", "--batch-size", "63")
    assert uneven.returncode != 0
    assert "batch size 63" in uneven.stderr and "multiple of 2" in uneven.stderr
    assert not (tmp_path / "odd").exists()


def test_one_device_is_no_distribution():
    with kdc.data_parallel(1).scope():
        model = kdc.DeepCluster(kdc.backbones.lenet(seed=0), num_clusters=4)
        assert keras.distribution.distribution() is None
        assert kdc.platform.devices.replica_count(model) == 1
        assert kdc.platform.devices.strategy_replicas() == 1


@pytest.mark.backend_independent
@pytest.mark.parametrize("devices", [0, -1, 1.5, "2", True])
def test_data_parallel_rejects_what_is_not_a_device_count(devices):
    with pytest.raises(ValueError, match="devices must be a positive integer or None"):
        kdc.data_parallel(devices)


def test_data_parallel_rejects_more_devices_than_there_are():
    there = kdc.platform.devices.device_count()
    expected = "JAX or TensorFlow" if BACKEND == "torch" else f"sees {there} "
    with pytest.raises(ValueError, match=expected):
        kdc.data_parallel(there + 1)


def test_cli_refuses_more_devices_than_there_are_before_writing(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "digits", "--devices", "64", "--out", str(out)])
    assert result.exit_code != 0
    expected = "JAX or TensorFlow" if BACKEND == "torch" else "64 devices asked for"
    assert expected in result.output
    assert not out.exists()
