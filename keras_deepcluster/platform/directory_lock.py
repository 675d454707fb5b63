"""One writer per folder: a lock that the operating system releases when its process ends.

Every command that writes into a run directory or an analysis folder (train,
its resume, space, sweep, select, probe, report) first takes that folder's
lock: an exclusive ``flock`` on the file ``.lock`` inside it, which also
records who holds it. A second process gets, before it writes anything,
"R is in use by process PID on HOST since TIME". The lock is held until the
command (or the process) ends, however it ends: the kernel drops it when the descriptor
closes, so a killed process (SIGKILL included) leaves no stale lock, only a
``.lock`` file that the next holder overwrites.

The image cache is locked differently: `waiting_lock` holds a cache folder's
lock only while the cache is built, and a second process that needs the same
cache waits for it (saying once whom it waits for) and then reads it.

Where it works: local file systems on Linux and macOS, and NFS on Linux
(the kernel maps ``flock`` to NFS byte-range locks, NFSv4 or NFSv3 with
lockd). A file system without locks (some FUSE mounts) gets an error naming
it, rather than a run without protection.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

LOCK_FILE = ".lock"

# Folders this process holds, by resolved path, with their descriptors.
_held: dict[Path, int] = {}


class FolderInUseError(ValueError):
    """Another process holds the folder's lock."""


def lock_folder(folder: str | Path) -> None:
    """Takes `folder`'s lock for this process, until it ends (or `unlock_folder`).

    The folder must exist. Taking a lock this process already holds does
    nothing.

    Raises:
        FolderInUseError: another process holds it; the message says which.
        OSError: the file system cannot lock, or the folder is not writable.
    """
    folder = Path(folder)
    key = folder.resolve()
    if key in _held:
        return
    descriptor = os.open(key / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    if not _try_lock(descriptor, folder):
        holder = _holder(descriptor)
        os.close(descriptor)
        raise FolderInUseError(
            f"{folder} is in use by {holder}; wait for it to finish or stop it, "
            "or choose another folder."
        )
    _held[key] = descriptor


@contextlib.contextmanager
def waiting_lock(
    folder: str | Path,
    timeout: float,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Holds `folder`'s lock for the ``with`` block, waiting for another holder first.

    For shared state that a process builds and others then read (the image
    cache): a second process waits until the first is done, rather than
    failing. A holder that dies releases the lock with its process.

    Args:
        folder: The folder (it must exist); the lock is its ``.lock`` file.
        timeout: Seconds to wait for another holder before giving up.
        on_wait: Called once, with "process PID on HOST since TIME", when the
            lock is held by another process and this one starts waiting.

    Raises:
        FolderInUseError: still held by another process after `timeout`
            seconds; the message names the holder.
        OSError: the file system cannot lock.
    """
    descriptor = os.open(Path(folder) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        waiting = False
        while not _try_lock(descriptor, folder):
            holder = _holder(descriptor)
            if time.monotonic() >= deadline:
                raise FolderInUseError(
                    f"{folder} is still held by {holder} after {timeout:.0f} s; wait for it to "
                    "finish or stop it, or choose another folder."
                )
            if not waiting and on_wait is not None:
                on_wait(holder)
            waiting = True
            time.sleep(0.2)
        yield
    finally:
        os.close(descriptor)  # drops the flock


def _try_lock(descriptor: int, folder: str | Path) -> bool:
    """Takes the exclusive flock and records this process in the file; False if held."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise OSError(
            f"Cannot lock {folder} ({error.strerror}): its file system does not support "
            "file locks, so two processes could write it at once; use a local or NFS folder."
        ) from None
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, (json.dumps(record) + "\n").encode(), 0)
    return True


def is_held(folder: str | Path) -> bool:
    """Whether this process holds `folder`'s lock."""
    return Path(folder).resolve() in _held


def unlock_folder(folder: str | Path) -> None:
    """Releases `folder`'s lock if this process holds it."""
    descriptor = _held.pop(Path(folder).resolve(), None)
    if descriptor is not None:
        os.close(descriptor)  # closing the descriptor drops the flock


def release_all() -> None:
    """Releases every lock this process holds: what the end of a command does.

    The `deepcluster` group calls it when a command finishes, so that commands
    run in one process (tests, a notebook) do not keep their folders locked.
    """
    for folder in list(_held):
        unlock_folder(folder)


def holds_lock(folder: str | Path) -> bool:
    """Whether this process holds `folder`'s lock."""
    return Path(folder).resolve() in _held


def _holder(descriptor: int) -> str:
    """ "process PID on HOST since TIME", from the lock file (written by its holder)."""
    try:
        record = json.loads(os.pread(descriptor, 4096, 0).decode())
        return f"process {record['pid']} on {record['host']} since {record['since']}"
    except (ValueError, KeyError, OSError):  # written this instant, or by something else
        return "another process"
