"""Does Keras's `fit` run under TensorFlow's MultiWorkerMirroredStrategy? A two-worker check.

Starts two TensorFlow workers on localhost (TF_CONFIG), each fitting a one-layer
Keras model on the same data inside the strategy's scope, and prints what each
got: the losses, or the error. Keras 3.15.1 with TensorFlow 2.21 fails (keras-team/
keras#20585: "Keras 3 does not work with tf.distribute.MultiWorkerMirroredStrategy"),
which is why `processes.initialize` refuses the TensorFlow backend; re-run it on a
new Keras to see whether that can change.

    python benchmarks/tensorflow_multi_worker.py
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys


def worker(index: int, addresses: list[str]) -> None:
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
    )
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import keras
    import numpy as np
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.integers(0, 3, 64)
    try:
        losses = model.fit(x, y, batch_size=16, epochs=2, verbose=0).history["loss"]
        print(f"worker {index}: fit ran, losses {losses}", flush=True)
    except Exception as error:  # the finding, reported rather than raised
        lines = str(error).splitlines()  # the value it names is long: its first and last line
        message = f"{lines[0]} ... {lines[-1]}" if len(lines) > 1 else str(error)
        print(f"worker {index}: fit failed: {type(error).__name__}: {message}", flush=True)


def main() -> None:
    if len(sys.argv) > 1:
        return worker(int(sys.argv[1]), sys.argv[2].split(","))
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    addresses = ",".join(f"127.0.0.1:{port}" for port in ports)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    workers = [
        subprocess.Popen([sys.executable, __file__, str(i), addresses], env=env) for i in (0, 1)
    ]
    sys.exit(max(w.wait() for w in workers))


if __name__ == "__main__":
    main()
