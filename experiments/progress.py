"""Progress bars that stay cheap when nobody watches a terminal.

On a terminal a bar redraws at most 10 times a second (tqdm's default). When
stderr is a file or a pipe (a Ray worker, whose output Ray's log monitor
ships to the driver line by line; CI; ``nohup``) every redraw is a new line,
so the bar becomes a periodic line instead: one every ``PERIODIC_LINE_S``
seconds, plus the last one. Callers that update a postfix every step pass
``refresh=False``, so the postfix does not force a redraw either.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

__all__ = ["PERIODIC_LINE_S", "progress_bar"]

PERIODIC_LINE_S = 10.0


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """A ``tqdm`` bar: tqdm's redraw rate on a terminal, a line every ``PERIODIC_LINE_S`` s elsewhere."""
    stream = kwargs.get("file") or sys.stderr
    interactive = hasattr(stream, "isatty") and stream.isatty()
    kwargs.setdefault("mininterval", 0.1 if interactive else PERIODIC_LINE_S)
    return tqdm(iterable, **kwargs)
