"""One `deepcluster train` job over several processes (hosts or GPUs), on JAX.

Every process runs the same command with its own ``--process-id``; process 0
writes the run directory (`keras_deepcluster.runs.pretraining.train`).
"""

from __future__ import annotations

import contextlib
import os
import sys

import click

from keras_deepcluster.runs.recipe import Recipe


def join(coordinator, num_processes, process_id, devices: int, recipe: Recipe, resume) -> int:
    """Joins the job; returns the number of devices training spans (all of every process's)."""
    if None in (coordinator, num_processes, process_id):
        raise ValueError(
            "A job of several processes needs --coordinator HOST:PORT, --num-processes P and "
            "--process-id I together (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
            "JAX_PROCESS_ID)."
        )
    if devices != 1:
        raise ValueError(
            "--devices is for one process; with --num-processes training spans every device "
            "of every process (run one process per GPU, or one per host)."
        )
    import keras_deepcluster as kdc

    processes = kdc.platform.processes
    processes.initialize(coordinator, num_processes, process_id)
    processes.check_same("the recipe and options", f"{recipe.to_toml()}{resume is not None}")
    return kdc.platform.devices.device_count()


@contextlib.contextmanager
def failing_fast(several: bool, resume_hint: str):
    """With several processes, an error ends this process at once, with its message.

    A process whose peer died gets a collective error at once, but JAX's exit
    would then wait in its shutdown barrier until the peer's heartbeat times
    out (100 s) and abort with a C++ stack trace.
    """
    try:
        yield
    except BaseException as error:
        if not several or isinstance(error, SystemExit) and not error.code:
            raise
        from keras_deepcluster.platform import processes

        code = getattr(error, "exit_code", 1)
        if isinstance(error, click.ClickException):
            message = error.format_message()
        elif isinstance(error, (KeyboardInterrupt, SystemExit)):  # Ctrl-C, SIGTERM
            message, code = "interrupted", 130
        else:
            message = f"{type(error).__name__}: {error}".splitlines()[0]
        click.echo(
            f"Error: process {processes.process_index()} of {processes.process_count()}: "
            f"{message}\nEvery process of the job stops; {resume_hint}",
            err=True,
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
