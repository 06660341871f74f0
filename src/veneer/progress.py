"""The one progress bar of veneer: a live bar on a terminal, a few plain lines in a log.

tqdm redraws its bar with carriage returns; written into a file (``make demo > log``, CI) that is one long line
of overwritten states. :func:`progress_bar` keeps tqdm's bar on a terminal and, when the stream is not one,
writes the bar's state as a whole line at most every :data:`LOG_INTERVAL` seconds (and once at the end).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, TextIO

from tqdm.auto import tqdm

LOG_INTERVAL = 10.0  # seconds between two lines of a bar written into a log


class LineStream:
    """A text stream for tqdm that turns its redraws (``"\\r" + state``) into whole lines of ``stream``: the
    first state, then at most one every ``interval`` seconds, and the last one when the bar closes."""

    def __init__(self, stream: TextIO, interval: float = LOG_INTERVAL):
        self.stream, self.interval = stream, interval
        self.pending, self.last = "", None

    def write(self, text: str) -> int:
        line = text.replace("\r", "").rstrip()
        if line:
            self.pending = line
            now = time.monotonic()
            if self.last is None or now - self.last >= self.interval:
                self._emit(now)
        elif "\n" in text and self.pending:  # the bar closes
            self._emit(time.monotonic())
        return len(text)

    def _emit(self, now: float) -> None:
        self.stream.write(self.pending + "\n")
        self.pending, self.last = "", now

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable: Iterable | None = None, *, disable: bool = False, stream: TextIO | None = None,
                 **options: Any) -> tqdm:
    """``tqdm(iterable, **options)`` on ``stream`` (default stderr): a live bar on a terminal; elsewhere one
    line per :data:`LOG_INTERVAL` seconds and a last line when it closes, never a carriage return."""
    stream = sys.stderr if stream is None else stream
    if disable:
        return tqdm(iterable, disable=True, **options)
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return tqdm(iterable, file=stream, **options)
    return tqdm(iterable, file=LineStream(stream), mininterval=LOG_INTERVAL, maxinterval=LOG_INTERVAL,
                dynamic_ncols=False, ncols=100, **options)
