"""What importing keras_deepcluster sets up in the process environment."""

import os
import subprocess
import sys

import pytest

PRINT_ONEDNN = "import keras_deepcluster, os; print(os.environ['TF_ENABLE_ONEDNN_OPTS'])"


@pytest.mark.parametrize("given, expected", [(None, "1"), ("0", "0")])
def test_tensorflow_onednn_is_on_unless_the_user_said_otherwise(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if given is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = given
    result = subprocess.run(
        [sys.executable, "-c", PRINT_ONEDNN], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == expected
