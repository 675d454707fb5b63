"""Deterministic mode, in fresh processes: its switches act on the process for good."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tomllib

from keras_deepcluster.run_directory import RunDirectory

SWITCHES = """
import json, os, keras, keras_deepcluster as kdc
kdc.enable_determinism()
state = {"enabled": kdc.determinism.enabled(), "xla_flags": os.environ["XLA_FLAGS"],
         "cublas": os.environ["CUBLAS_WORKSPACE_CONFIG"]}
if keras.backend.backend() == "tensorflow":
    from tensorflow.python.framework import config
    state["backend"] = config.is_op_determinism_enabled()
elif keras.backend.backend() == "torch":
    import torch
    state["backend"] = (torch.are_deterministic_algorithms_enabled()
                        and torch.backends.cudnn.deterministic
                        and not torch.backends.cudnn.benchmark)
else:
    state["backend"] = True  # the XLA flag is all JAX has
print(json.dumps(state))
"""


def python(code_or_args, env=None):
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    environment = {**os.environ, "KERAS_BACKEND": keras.backend.backend(), **(env or {})}
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=environment, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_enable_determinism_turns_on_the_backends_switches():
    state = json.loads(python(SWITCHES, env={"XLA_FLAGS": "--xla_dump_to=/dev/null"}))
    assert state["enabled"] and state["backend"]
    # Appended to what the user set, not replacing it.
    assert state["xla_flags"] == "--xla_dump_to=/dev/null --xla_gpu_deterministic_ops=true"
    assert state["cublas"] == ":4096:8"


def deterministic_run(out):
    cli = [
        "-m",
        "keras_deepcluster_cli.main",
        "train",
        "digits",
        "--deterministic",
        "--limit",
        "300",
        "--epochs",
        "2",
        "-k",
        "5",
        "--out",
        str(out),
    ]
    python(cli)
    return RunDirectory(out)


def test_deterministic_runs_are_identical_and_recorded(tmp_path):
    first = deterministic_run(tmp_path / "a")
    second = deterministic_run(tmp_path / "b")
    for epoch in (0, 1):
        np.testing.assert_array_equal(
            first.read_pseudo_labels(epoch), second.read_pseudo_labels(epoch)
        )
    for row_a, row_b in zip(first.read_history(), second.read_history()):
        for key, value in row_a.items():
            if not key.startswith("seconds"):
                assert value == row_b[key] or (value != value and row_b[key] != row_b[key]), key
    config = tomllib.loads((first.path / "config.toml").read_text())
    assert config["training"]["deterministic"] is True
    assert first.read_json("summary.json")["deterministic"] is True


@pytest.mark.parametrize("value, ok", [("true", True), ("1", False), ('"yes"', False)])
def test_recipe_key_deterministic(tmp_path, value, ok):
    from keras_deepcluster.recipe import RecipeError, load_recipe

    path = tmp_path / "r.toml"
    path.write_text(f'[data]\ndataset = "digits"\n[training]\ndeterministic = {value}\n')
    if ok:
        assert load_recipe(path).deterministic is True
    else:
        with pytest.raises(RecipeError, match=r"\[training\] deterministic must be true or false"):
            load_recipe(path)


LATE_ON_A_GPU = """
import jax, keras_deepcluster as kdc
jax.numpy.zeros(1).block_until_ready()             # JAX has started, without the flag
kdc.devices.accelerator_available = lambda: True   # as on a GPU
try:
    kdc.enable_determinism()
except RuntimeError as error:
    print(error)
"""


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="XLA's flag is read by JAX only")
def test_determinism_asked_for_after_jax_started_on_a_gpu_is_refused():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run(
        [sys.executable, "-c", LATE_ON_A_GPU], capture_output=True, text=True, env=env, timeout=120
    )
    assert "JAX had already started" in result.stdout, result.stderr[-2000:]
