"""A short run gives the pseudo-labels and losses it gave when they were recorded.

Guards refactors that must change nothing (issue 38): the recorded values come from this
file's `record` on one machine, so the check runs where the CPU, backend and versions are
the recorded ones (other CPUs sum floats in other orders) and is skipped elsewhere.

Record again, after a change that is meant to change the numbers, with the thread limits
of `.ci/run` (the check runs under them):

    OMP_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 \
        KERAS_BACKEND=<backend> python tests/method/test_unchanged.py
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_deepcluster as kdc

RECORDED = Path(__file__).parent / "unchanged"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def cpu() -> str:
    """The CPU's name and the vector extensions that change how its kernels sum."""
    name, flags = "unknown", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
    vector = sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"})
    return f"{name} ({' '.join(vector)})"


def environment() -> dict:
    backend = keras.backend.backend()
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    return {
        "cpu": cpu(),
        # CI limits each test worker to one thread; sums split over threads round otherwise.
        "threads": {name: os.environ.get(name) for name in THREAD_VARIABLES},
        "backend": backend,
        "keras": keras.__version__,
        module: sys.modules[module].__version__ if module in sys.modules else None,
    }


def short_run(out: Path) -> dict:
    """Two epochs on 300 digits: per epoch the loss, NMI and a hash of the pseudo-labels."""
    recipe = kdc.load_recipe("digits").replace(epochs=2, limit=300, deterministic=True)
    run = kdc.train(recipe, out)
    epochs = []
    for row in run.history:
        labels = np.asarray(run.read_pseudo_labels(int(row["epoch"])), np.int64)
        epochs.append(
            {
                "loss": row["loss"],
                "nmi_labels": row["nmi_labels"],
                "pseudo_labels": hashlib.sha256(labels.tobytes()).hexdigest(),
            }
        )
    return {"environment": environment(), "epochs": epochs}


def test_a_short_run_gives_the_recorded_numbers(tmp_path):
    path = RECORDED / f"{keras.backend.backend()}.json"
    if not path.is_file():
        pytest.skip(f"nothing recorded for this backend ({path.name})")
    recorded = json.loads(path.read_text())
    result = short_run(tmp_path / "run")
    if result["environment"] != recorded["environment"]:
        pytest.skip(f"recorded on {recorded['environment']}, here {result['environment']}")
    for got, expected in zip(result["epochs"], recorded["epochs"], strict=True):
        assert got["pseudo_labels"] == expected["pseudo_labels"]
        assert got["loss"] == pytest.approx(expected["loss"], rel=1e-5)
        assert got["nmi_labels"] == pytest.approx(expected["nmi_labels"], abs=1e-9)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        result = short_run(Path(folder) / "run")
    RECORDED.mkdir(exist_ok=True)
    target = RECORDED / f"{keras.backend.backend()}.json"
    target.write_text(json.dumps(result, indent=1) + "\n")
    print(f"recorded {target}")
