"""Narration for long operations: a live line on a terminal, plain lines in CI and logs."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


def interactive(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stdout
    return stream.isatty() and not os.environ.get("CI")


PLAIN_PROGRESS_EVERY = 2.0


class Console:
    """Prints steps as they happen. ``quiet`` keeps errors only (for --json output)."""

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.live = interactive(self.stream)
        self._progress_shown = False
        self._last_plain_progress = 0.0
        self.closed = False

    def _print(self, text: str, stream: TextIO | None = None) -> None:
        """Print, unless the reader went away (``invoke deploy | head``): a deploy half done
        must carry on to its end, narrated or not."""
        if self.closed:
            return
        try:
            print(text, file=stream or self.stream, flush=True)
        except BrokenPipeError:
            self.closed = True

    def say(self, message: str) -> None:
        if self.quiet:
            return
        self._clear_progress()
        self._print(message)

    def warn(self, message: str) -> None:
        self._clear_progress()
        self._print(f"warning: {message}", sys.stderr)

    def progress(self, message: str) -> None:
        """A status that replaces itself on a terminal; in CI only every change is printed."""
        if self.quiet:
            return
        if self.live and not self.closed:
            self.stream.write("\r\033[K" + message)
            self.stream.flush()
            self._progress_shown = True
        elif time.monotonic() - self._last_plain_progress >= PLAIN_PROGRESS_EVERY:
            # In CI logs a status every few seconds is progress; every poll would be noise.
            self._last_plain_progress = time.monotonic()
            self._print(message)

    def _clear_progress(self) -> None:
        if self._progress_shown:
            self.stream.write("\r\033[K")
            self._progress_shown = False

    @contextmanager
    def step(self, message: str) -> Iterator[None]:
        """Narrate one step: ``message…`` then its duration, or that it failed."""
        self.say(f"{message}…")
        started = time.monotonic()
        try:
            yield
        except BaseException:
            self.say(f"  ✗ failed after {time.monotonic() - started:.1f} s")
            raise
        self.say(f"  ✓ {time.monotonic() - started:.1f} s")


console = Console()
