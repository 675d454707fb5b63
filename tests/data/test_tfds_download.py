"""The tfds source downloads a missing dataset, unless forbidden; no network in tests."""

import time

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")  # absent where TensorFlow is (GPU check)

from keras_deepcluster import data  # noqa: E402
from keras_deepcluster.data import tfds as tfds_source  # noqa: E402

pytestmark = pytest.mark.backend_independent


@pytest.fixture
def downloads(monkeypatch):
    """Records TFDS download attempts; none reaches the network."""
    calls = []
    monkeypatch.setattr(
        tfds.core.DatasetBuilder,
        "download_and_prepare",
        lambda self, *a, **k: calls.append(self.name),
    )
    return calls


def network(monkeypatch, answers: bool):
    def connect(address, timeout=None):
        assert timeout is not None and timeout <= 10  # never TFDS's minutes of retries
        if not answers:
            raise TimeoutError("timed out")
        return type("Connection", (), {"close": lambda self: None})()

    monkeypatch.setattr(tfds_source.socket, "create_connection", connect)


def test_no_network_fails_fast_naming_the_alternatives(tmp_path, monkeypatch, downloads):
    network(monkeypatch, answers=False)
    start = time.perf_counter()
    with pytest.raises(ValueError) as error:
        data.prepare("tfds", "mnist", path=tmp_path / "tfds")
    message = str(error.value)
    assert "'mnist' is not prepared in" in message and "does not answer" in message
    assert "'idx' source" in message and "'folder'" in message
    assert downloads == [] and time.perf_counter() - start < 10


def test_downloading_forbidden_by_argument_or_environment(tmp_path, monkeypatch, downloads):
    network(monkeypatch, answers=True)
    with pytest.raises(ValueError, match="is not prepared in .* and downloading is off"):
        data.load("tfds", "mnist", path=tmp_path, download=False)
    monkeypatch.setenv(tfds_source.NO_DOWNLOAD_ENV, "1")
    with pytest.raises(ValueError, match="downloading is off"):
        data.prepare("tfds", "mnist", path=tmp_path)
    assert downloads == []
    assert "forbids downloading" in data.unavailable_reason("tfds", "mnist", tmp_path)


def test_a_missing_dataset_is_downloaded_once_and_cached(tmp_path, monkeypatch, downloads):
    network(monkeypatch, answers=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, 24)
    tf = pytest.importorskip("tensorflow")

    def as_datasets(builder):
        if not downloads:  # what TFDS raises for a dataset that is not prepared
            raise AssertionError(f"Dataset {builder.name}: could not find data")
        split = tf.data.Dataset.from_tensor_slices((images, labels))
        return {"train": split, "test": split.take(8)}

    monkeypatch.setattr(tfds_source, "_as_datasets", as_datasets)
    notes = []
    cache = data.prepare("tfds", "mnist", path=tmp_path / "tfds", on_note=notes.append)
    assert downloads == ["mnist"]
    assert any("downloading and preparing TFDS 'mnist'" in note for note in notes)
    cached = cache.data()
    np.testing.assert_array_equal(cached.x_train[:], images)
    np.testing.assert_array_equal(cached.y_train, labels)
    assert cached.x_test.shape == (8, 28, 28, 1)


def test_cli_no_download(tmp_path, monkeypatch, downloads):
    from click.testing import CliRunner

    from keras_deepcluster_cli.main import main

    network(monkeypatch, answers=True)
    result = CliRunner().invoke(
        main, ["prepare", "tfds", "--name", "mnist", "--data-dir", str(tmp_path), "--no-download"]
    )
    assert result.exit_code == 1 and "downloading is off" in result.output, result.output
    assert downloads == []
