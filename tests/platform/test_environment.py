"""What importing and using keras_deepcluster does to the process: TensorFlow's oneDNN kernels
on; on the other backends, TensorFlow left unimported."""

import json
import os
import subprocess
import sys

import keras
import pytest

from keras_deepcluster.runs.diagnostics import EVENT_FILE_SUFFIX

pytest.importorskip("tensorflow")

# TensorFlow answers whether its oneDNN kernels are on (`IsMKLEnabled` in
# tensorflow/core/util/port.cc: TF_ENABLE_ONEDNN_OPTS, read once when TensorFlow
# starts, else `DefaultOneDnnPolicy`, which is off on CPUs without AVX-512 VNNI/BF16,
# AVX-VNNI or AMX); it also logs "oneDNN custom operations are on" then.
ONEDNN = """
import json, os, sys
if sys.argv[1] == "package":
    import keras_deepcluster
seen = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
from tensorflow.python.util import _pywrap_util_port
print(json.dumps({"variable": seen, "onednn": _pywrap_util_port.IsMklEnabled()}))
"""


def onednn(given, import_package=True):
    """(what TensorFlow read, whether it turned oneDNN on, its log) in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "0"  # TensorFlow's INFO lines, the oneDNN one among them
    if given is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = given
    result = subprocess.run(
        [sys.executable, "-c", ONEDNN, "package" if import_package else "tensorflow only"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    state = json.loads(result.stdout.strip().splitlines()[-1])
    return state["variable"], state["onednn"], result.stderr


@pytest.mark.backend_independent
def test_importing_the_package_turns_tensorflows_onednn_on():
    variable, on, log = onednn(None)
    assert variable == "1"
    assert on is True and "oneDNN custom operations are on" in log, log[-2000:]
    # The same check sees oneDNN off when the variable says so (it can fail).
    assert onednn("0", import_package=False)[1] is False
    # On a CPU where TensorFlow's own default is off (no AVX-512 VNNI or AMX) `on` is
    # the package's doing; where it is on anyway, `variable` shows the package set it.


@pytest.mark.backend_independent
def test_an_explicit_tf_enable_onednn_opts_0_is_kept():
    variable, on, log = onednn("0")
    assert variable == "0"
    assert on is False and "oneDNN custom operations are on" not in log, log[-2000:]


# A run from Python as the CLI makes it: seeded, trained, saved as the run directory's
# model and checkpoint, loaded again.
# With TensorBoard diagnostics on: their writer (tensorboardX) needs no TensorFlow either.
TRAIN_SAVE_LOAD = """
import sys
import numpy as np
import keras_deepcluster as kdc
recipe = kdc.load_recipe("digits").replace(limit=40, epochs=1, tensorboard="tb")
run = kdc.train(recipe, out="run")
clusters, _ = kdc.Run.open(run.path).assign(np.zeros((3, 8, 8, 1), np.uint8))
print(len(clusters), *(name in sys.modules for name in ("tensorflow", "torch", "tensorboardX")))
"""


@pytest.mark.skipif(keras.backend.backend() == "tensorflow", reason="TensorFlow is the backend")
def test_training_on_jax_or_torch_never_imports_tensorflow(tmp_path):
    # Keras imports TensorFlow when seeding and saving if it is installed (seconds per
    # process); `without_tensorflow` keeps it out.
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend()}
    result = subprocess.run(
        [sys.executable, "-c", TRAIN_SAVE_LOAD],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    torch_loaded = keras.backend.backend() == "torch"  # the backend's, not the writer's
    expected = f"3 False {torch_loaded} True"
    assert result.stdout.strip().splitlines()[-1] == expected, result.stdout[-2000:]
    assert (tmp_path / "run" / "model.keras").is_file()
    assert list((tmp_path / "tb" / "run").glob(f"events.out.tfevents.*{EVENT_FILE_SUFFIX}"))
