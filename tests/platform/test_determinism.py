"""Deterministic mode, in fresh processes: its switches act on the process for good."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tomllib

from keras_deepcluster import recipes as kdc_recipes
from keras_deepcluster.runs.run_directory import RunDirectory

SWITCHES = """
import json, os, keras, numpy as np, keras_deepcluster as kdc
from keras_deepcluster.platform import accelerated_kmeans

# What the k-means step is built from: which sum (`deterministic`) and which ops.
modes, built = [], {"one_hot": 0, "scatter_update": 0}
step = accelerated_kmeans._lloyd_step
def spy(backend, k, deterministic):
    modes.append(deterministic)
    return step(backend, k, deterministic)
accelerated_kmeans._lloyd_step = spy
for name in built:
    def counting(*args, _op=getattr(keras.ops, name), _name=name, **kwargs):
        built[_name] += 1
        return _op(*args, **kwargs)
    setattr(keras.ops, name, counting)

def kmeans():
    # Four far-apart blobs: both ways of summing find the same clusters.
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(400, 8)) + 10 * np.repeat(np.eye(4, 8), 100, axis=0)).astype("float32")
    before, built_before = len(modes), dict(built)
    labels = kdc.method.clustering.kmeans(x, 4, seed=0, backend="keras")[0]
    used = {name: built[name] - built_before[name] > 0 for name in built}
    return labels.tolist(), modes[before:], used

if keras.backend.backend() == "jax":
    from jax._src import xla_bridge
    jax_started_before = xla_bridge.backends_are_initialized()
kdc.enable_determinism()
state = {"enabled": kdc.platform.determinism.enabled(), "xla_flags": os.environ["XLA_FLAGS"],
         "cublas": os.environ["CUBLAS_WORKSPACE_CONFIG"],
         "tf_deterministic_ops": os.environ["TF_DETERMINISTIC_OPS"]}
if keras.backend.backend() == "tensorflow":
    from tensorflow.python.framework import config
    state["backend"] = config.is_op_determinism_enabled()
elif keras.backend.backend() == "torch":
    import torch
    state["backend"] = (torch.are_deterministic_algorithms_enabled()
                        and torch.backends.cudnn.deterministic
                        and not torch.backends.cudnn.benchmark)
else:  # JAX's switch is the XLA flag, which XLA reads when JAX starts its backends
    state["backend"] = (not jax_started_before
                        and "--xla_gpu_deterministic_ops=true" in os.environ["XLA_FLAGS"].split())
state["fixed_order"] = kmeans()
# The same k-means with the mode off again (as before `enable_determinism`).
kdc.platform.determinism._enabled = False
if keras.backend.backend() == "torch":
    torch.use_deterministic_algorithms(False)
state["scatter"] = kmeans()
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


def test_enable_determinism_turns_on_the_backends_switches_and_fixed_order_sums():
    env = {"XLA_FLAGS": "--xla_dump_to=/dev/null"}
    env = {**{k: v for k, v in os.environ.items() if k != "TF_DETERMINISTIC_OPS"}, **env}
    state = json.loads(python(SWITCHES, env=env).strip().splitlines()[-1])
    assert state["enabled"] and state["backend"]
    # Appended to what the user set, not replacing it.
    assert state["xla_flags"] == "--xla_dump_to=/dev/null --xla_gpu_deterministic_ops=true"
    assert state["cublas"] == ":4096:8" and state["tf_deterministic_ops"] == "1"
    # Our keras.ops k-means: in deterministic mode each cluster's sum is a product with
    # one-hot labels (fixed order), with no scatter-add; off, a scatter-add.
    labels, modes, used = state["fixed_order"]
    assert modes == [True] and used == {"one_hot": True, "scatter_update": False}
    scatter_labels, modes, used = state["scatter"]
    assert modes == [False] and used == {"one_hot": False, "scatter_update": True}
    assert labels == scatter_labels and sorted(set(labels)) == [0, 1, 2, 3]


# A CLI run whose k-means steps are recorded: which sum each clustering asked for.
RECORDING_KMEANS = """
import json, sys
from keras_deepcluster.platform import accelerated_kmeans
modes, step = [], accelerated_kmeans._lloyd_step
def spy(backend, k, deterministic):
    modes.append(deterministic)
    return step(backend, k, deterministic)
accelerated_kmeans._lloyd_step = spy
from keras_deepcluster_cli.main import main
try:
    main(sys.argv[2:], prog_name="deepcluster")
finally:
    open(sys.argv[1], "w").write(json.dumps(modes))
"""


def deterministic_run(recipe, out):
    cli = [
        "train",
        str(recipe),
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
    modes = out.with_suffix(".modes.json")
    python(["-c", RECORDING_KMEANS, str(modes), *cli])
    return RunDirectory(out), json.loads(modes.read_text())


def test_deterministic_runs_use_fixed_order_kmeans_are_identical_and_recorded(tmp_path):
    # The digits recipe with our keras.ops k-means (the path deterministic mode changes),
    # not faiss, which `auto` picks on a CPU.
    recipe = tmp_path / "digits_keras.toml"
    text = (Path(kdc_recipes.__file__).parent / "digits.toml").read_text()
    assert 'kmeans = "auto"' in text
    recipe.write_text(text.replace('kmeans = "auto"', 'kmeans = "keras"'))
    first, first_modes = deterministic_run(recipe, tmp_path / "a")
    second, second_modes = deterministic_run(recipe, tmp_path / "b")
    # Each epoch's clustering, and the final one of the trained network, ran the keras
    # k-means with its fixed-order sums.
    assert first_modes == second_modes == [True, True, True]
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
    assert config["clustering"]["kmeans"] == "keras"
    assert first.read_json("summary.json")["deterministic"] is True


@pytest.mark.backend_independent
@pytest.mark.parametrize("value, ok", [("true", True), ("1", False), ('"yes"', False)])
def test_recipe_key_deterministic(tmp_path, value, ok):
    from keras_deepcluster.runs.recipe import RecipeError, load_recipe

    path = tmp_path / "r.toml"
    path.write_text(
        f'[data]\ndataset = "digits"\nviews = "mnist"\n[training]\ndeterministic = {value}\n'
    )
    if ok:
        assert load_recipe(path).deterministic is True
    else:
        with pytest.raises(RecipeError, match=r"\[training\] deterministic must be true or false"):
            load_recipe(path)


LATE_ON_A_GPU = """
import jax, keras_deepcluster as kdc
jax.numpy.zeros(1).block_until_ready()             # JAX has started, without the flag
kdc.platform.devices.accelerator_available = lambda: True   # as on a GPU
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
