"""Several processes, one job (`keras_deepcluster.platform.processes`): JAX processes on localhost.

Each job's processes are started by `two_processes.py`; JAX is kept on the
CPU, its collectives over Gloo. The bad-input tests run in this process: they
fail before anything joins a job.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import invoke

import keras_deepcluster as kdc
from keras_deepcluster.evaluation import nmi

SCRIPT = Path(__file__).parent / "two_processes.py"
BACKEND = keras.backend.backend()
needs_jax = pytest.mark.skipif(BACKEND != "jax", reason="several processes run on JAX only")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(*args, cwd=None, tmp=None):
    env = {**os.environ, "KERAS_BACKEND": BACKEND, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if tmp is not None:  # where process 1 keeps its scratch copy of the run
        env["TMPDIR"] = str(tmp)
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *map(str, args)],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(*processes, timeout=300):
    results = [(p.wait(timeout), *p.communicate()) for p in processes]
    return results


def job(*per_process_args, cwd=None):
    """Runs one process per argument list at once; returns (exit code, stdout, stderr) each."""
    return finish(*(start(*args, cwd=cwd) for args in per_process_args))


@needs_jax
@pytest.mark.long_running
def test_two_processes_give_the_pseudo_labels_of_one(tmp_path):
    coordinator = f"127.0.0.1:{free_port()}"
    ((code, _, err),) = job(["train", "-", 1, 0, tmp_path / "one.npz"])
    assert code == 0, err[-3000:]
    two = job(*(["train", coordinator, 2, i, tmp_path / f"two{i}.npz"] for i in (0, 1)))
    assert [code for code, _, _ in two] == [0, 0], two[0][2][-3000:] + two[1][2][-3000:]
    one, two0, two1 = (np.load(tmp_path / f"{name}.npz") for name in ("one", "two0", "two1"))
    assert (int(one["processes"]), int(two0["processes"])) == (1, 2)
    # Both processes hold the same labels, gathered from their shards.
    np.testing.assert_array_equal(two0["labels"], two1["labels"])
    # The first clustering, of the untrained network over two shards: exactly one process's.
    np.testing.assert_array_equal(two0["labels"][0], one["labels"][0])
    # Training: each process feeds half of every global batch, one step over both.
    assert one["loss"][-1] < one["loss"][0] - 0.1  # it did train
    np.testing.assert_allclose(two0["loss"], one["loss"], rtol=1e-3)
    for a, b in zip(one["labels"][1:], two0["labels"][1:]):
        assert nmi(a, b) > 0.9


@needs_jax
def test_a_clustering_over_two_shards_is_the_clustering_of_one(tmp_path):
    coordinator = f"127.0.0.1:{free_port()}"
    ((code, _, err),) = job(["cluster", "-", 1, 0, tmp_path / "one.npz"])
    assert code == 0, err[-3000:]
    two = job(*(["cluster", coordinator, 2, i, tmp_path / f"two{i}.npz"] for i in (0, 1)))
    assert [code for code, _, _ in two] == [0, 0], two[0][2][-3000:] + two[1][2][-3000:]
    one, two0, two1 = (np.load(tmp_path / f"{name}.npz") for name in ("one", "two0", "two1"))
    for name in ("repaired", "labels", "whitening"):
        np.testing.assert_array_equal(two0[name], two1[name])
    # The repair reads the rows of the largest cluster from both shards.
    assert int(two0["empty"]) == int(one["empty"]) == 2
    np.testing.assert_array_equal(two0["repaired"], one["repaired"])
    # The shards' means are added in float64: the same clustering up to rounding.
    assert nmi(two0["labels"], one["labels"]) > 0.95
    assert float(two0["objective"]) == pytest.approx(float(one["objective"]), rel=1e-4)


@needs_jax
@pytest.mark.parametrize(
    "differ, message",
    [
        ({"data": [0, 1]}, "disagree on the data and the re-clustering settings"),
        ({"count": [2, 3]}, "disagree on the number of processes"),
    ],
)
def test_processes_started_differently_are_refused(tmp_path, differ, message):
    coordinator = f"127.0.0.1:{free_port()}"
    data, counts = differ.get("data", [0, 0]), differ.get("count", [2, 2])
    results = job(
        *(["train", coordinator, counts[i], i, tmp_path / f"{i}.npz", data[i]] for i in (0, 1))
    )
    for code, _, err in results:
        assert code != 0 and message in err, err[-3000:]
    assert not list(tmp_path.glob("*.npz"))


@needs_jax
def test_cli_processes_with_other_settings_are_refused(tmp_path):
    port = free_port()
    results = job(
        *(
            ["cli", "train", "digits", "--seed", seed, "--out", tmp_path / "run"]
            + ["--coordinator", f"127.0.0.1:{port}", "--num-processes", 2, "--process-id", i]
            for i, seed in enumerate((1, 2))
        )
    )
    for code, _, err in results:
        assert code != 0 and "disagree on the recipe and options" in err, err[-3000:]
    assert not (tmp_path / "run").exists()


@needs_jax
@pytest.mark.long_running
def test_cli_job_writes_one_run_and_resumes_after_a_worker_is_killed(tmp_path):
    def train(out, *extra, port):
        args = ["cli", "train", "digits", "--epochs", 3, "--limit", 256, "-k", 8, "--out", out]
        args += ["--coordinator", f"127.0.0.1:{port}", "--num-processes", 2, *extra]
        return [start(*args, "--process-id", i, cwd=tmp_path, tmp=scratch) for i in (0, 1)]

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    whole = finish(*train("whole", port=free_port()))
    assert [code for code, _, _ in whole] == [0, 0], whole[0][2][-3000:]
    summary = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert (summary["processes"], summary["devices"]) == (2, 2)
    assert "finished in" in whole[0][1] and "finished in" not in whole[1][1]  # 0 speaks

    first, second = train("killed", port=free_port())
    checkpoint = tmp_path / "killed" / "checkpoint.json"
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    second.send_signal(signal.SIGKILL)
    start_wait = time.monotonic()
    code, _, err = finish(first)[0]
    finish(second)
    # The survivor stops at once with a message (not JAX's 100-s heartbeat wait and abort).
    assert code == 1 and time.monotonic() - start_wait < 60
    assert "process 0 of 2" in err and "--resume" in err
    assert not (tmp_path / "killed" / "summary.json").exists()

    resumed = finish(*train("killed", "--resume", tmp_path / "killed", port=free_port()))
    assert [code for code, _, _ in resumed] == [0, 0], resumed[0][2][-3000:]
    assert "resuming after epoch" in resumed[0][1]
    for epoch in range(3):
        name = f"pseudo_labels/epoch_{epoch:03d}.npz"
        with np.load(tmp_path / "whole" / name) as a, np.load(tmp_path / "killed" / name) as b:
            np.testing.assert_array_equal(a["labels"], b["labels"])
    assert not list(scratch.glob("deepcluster-process-*"))  # process 1's scratch removed


@pytest.mark.backend_independent  # refused while parsing the options, before any backend runs
@pytest.mark.parametrize(
    "args, message",
    [
        (["--num-processes", 2], "--process-id I together"),
        (["--coordinator", "nowhere", "--num-processes", 2, "--process-id", 0], "HOST:PORT"),
        (["--coordinator", "h:1", "--num-processes", 2, "--process-id", 2], "numbered 0..1"),
        (
            ["--coordinator", "h:1", "--num-processes", 2, "--process-id", 0, "--devices", 2],
            "--devices is for one process",
        ),
    ],
)
def test_bad_job_options_are_refused(tmp_path, args, message):
    result = invoke("train", "digits", "--out", tmp_path / "run", *args)
    assert result.exit_code != 0 and message in result.output, result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(BACKEND == "jax", reason="JAX runs several processes")
def test_other_backends_refuse_several_processes(tmp_path):
    result = invoke(
        "train",
        "digits",
        "--out",
        tmp_path / "run",
        "--coordinator",
        "127.0.0.1:1",
        "--num-processes",
        2,
        "--process-id",
        1,
    )
    assert result.exit_code != 0 and "need the JAX backend" in result.output, result.output


@needs_jax
def test_coordinator_that_does_not_answer_or_a_taken_port(tmp_path):
    port = free_port()  # nothing listens there
    start_wait = time.monotonic()
    with pytest.raises(ConnectionError, match=rf"127.0.0.1:{port} did not answer within 1 s"):
        kdc.platform.processes.initialize(f"127.0.0.1:{port}", 2, 1, timeout=1)
    assert time.monotonic() - start_wait < 10
    with socket.create_server(("", port)):
        with pytest.raises(ConnectionError, match=f"cannot listen on port {port}"):
            kdc.platform.processes.initialize(f"127.0.0.1:{port}", 2, 0)
    assert kdc.platform.processes.process_count() == 1  # never joined


def test_one_process_collectives_are_the_identity():
    assert kdc.platform.processes.shard(10) == slice(0, 10)
    np.testing.assert_array_equal(kdc.platform.processes.gather_shards(np.arange(3)), np.arange(3))
    assert kdc.platform.processes.all_sum(np.float32(1.5)).dtype == np.float64
    kdc.platform.processes.check_same("anything", "value")  # nothing to disagree with
    images = np.arange(12).reshape(4, 3)
    assert kdc.platform.processes.own_shard(images, take=None) is images  # not read again
    rows = kdc.platform.processes.global_rows(np.array([3, 1]), 4, 3, lambda i: images[i])
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows, images[[3, 1]])
