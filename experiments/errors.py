"""The one exception type for expected failures caused by the user's input or machine.

Raise :class:`UserError` (or a subclass) when the input or the environment is
wrong and the message can say which input and what to do: the command line
prints the message as one line and exits with status 2, without a traceback
(``erasablemask --debug ...`` shows it). ``ValueError``, ``FileNotFoundError``
and ``LookupError`` with such a message are treated the same way, so lower
layers that cannot import this module (``models/``) keep raising those.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """An expected failure: the message names the input at fault and the fix."""
