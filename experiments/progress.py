"""Progress bars that stay cheap when nobody watches a terminal.

On a terminal a bar redraws at most 10 times a second (tqdm's default). When
stderr is a file or a pipe (a Ray worker, whose output Ray's log monitor
ships to the driver line by line; CI; ``nohup``) every redraw is a new line,
so the bar becomes a periodic line instead: one every ``PERIODIC_LINE_S``
seconds, plus the last one, each a plain line ending in ``\n``: tqdm's
carriage returns (which make log files show one endless line) are not
written there. Callers that update a postfix every step pass
``refresh=False``, so the postfix does not force a redraw either.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

__all__ = ["PERIODIC_LINE_S", "progress_bar"]

PERIODIC_LINE_S = 10.0


class _Lines:
    """A stream for tqdm off a terminal: each redraw becomes one line, without ``\r`` or blank lines."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        text = text.replace("\r", "")
        if text.strip():  # tqdm's clear-line writes and its final "\n" carry no text
            self._stream.write(text.rstrip() + "\n")
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """A ``tqdm`` bar: tqdm's redraw rate on a terminal, a line every ``PERIODIC_LINE_S`` s elsewhere."""
    stream = kwargs.get("file") or sys.stderr
    interactive = hasattr(stream, "isatty") and stream.isatty()
    kwargs.setdefault("mininterval", 0.1 if interactive else PERIODIC_LINE_S)
    if not interactive and not kwargs.get("disable"):
        kwargs["file"] = _Lines(stream)
    return tqdm(iterable, **kwargs)
