"""Ctrl-C and SIGTERM as a clean stop: the signal becomes a KeyboardInterrupt
that training raises at the next batch or epoch boundary.

Native code (a compiled training step, JAX's garbage-collection hook) can
swallow the KeyboardInterrupt a signal handler raises, so the handler also
sets a flag that `keras_deepcluster.runs.callbacks.StopOnInterrupt` checks.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

_interrupted = threading.Event()


def interrupt_requested() -> bool:
    """Whether SIGINT or SIGTERM arrived inside `catch_interrupts`."""
    return _interrupted.is_set()


@contextlib.contextmanager
def catch_interrupts():
    """SIGINT and SIGTERM raise KeyboardInterrupt here, and set `interrupt_requested`.

    Outside the main thread the handlers are left alone (Python allows
    signal handlers there only). The previous handlers come back on exit.

    Examples:
        >>> with catch_interrupts():
        ...     model.fit(data, epochs=50, callbacks=[reclustering, StopOnInterrupt()])
    """

    def interrupt(signum, frame):
        _interrupted.set()
        raise KeyboardInterrupt

    def quiet_swallowed_interrupt(unraisable):
        # A signal landing in a callback Python cannot propagate from would print
        # an "Exception ignored" traceback; the flag re-raises it instead.
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous_hook(unraisable)

    _interrupted.clear()
    previous_hook, sys.unraisablehook = sys.unraisablehook, quiet_swallowed_interrupt
    previous = {}
    for number in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[number] = signal.signal(number, interrupt)
        except ValueError:  # not the main thread
            pass
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        for number, handler in previous.items():
            signal.signal(number, handler)
