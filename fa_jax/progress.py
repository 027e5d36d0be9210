"""Step-level progress from inside compiled programs, with one host callback per record segment.

The trainer calls :func:`report` once per record segment (not per step, not per run: the step counter is the
same for every run of a vmapped chunk, so under ``vmap`` the callback fires once per chunk and device). The
callback forwards to whatever *sink* is active on the host; the sweep engine installs one that advances its
progress bar, throttled to a few refreshes per second. With no sink the callback returns at once.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import jax

__all__ = ["report", "sink"]

_SINK: list[Callable[[int, int], None] | None] = [None]
_LOCK = threading.Lock()


def _dispatch(step, total) -> None:
    fn = _SINK[0]
    if fn is not None:
        with _LOCK:
            fn(int(step), int(total))


def report(step, total: int) -> None:
    """Inside traced code: the current chunk reached ``step`` (an unbatched int scalar) of ``total`` (static)."""
    jax.debug.callback(_dispatch, step, total)


@contextlib.contextmanager
def sink(fn: Callable[[int, int], None] | None) -> Iterator[None]:
    """Route :func:`report` calls to ``fn(step, total)`` for the duration of the block."""
    prev = _SINK[0]
    _SINK[0] = fn
    try:
        yield
    finally:
        _SINK[0] = prev
