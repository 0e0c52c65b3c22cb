"""Fault injection for tests: a ``StageContext.fault_hook`` that raises before a chosen step."""

from __future__ import annotations

from typing import Callable

__all__ = ["FaultInjected", "fault_at"]


class FaultInjected(RuntimeError):
    """Raised by :func:`fault_at` hooks (tests' fault injection)."""


def fault_at(stage: int, step: int, *, once: bool = True) -> Callable[[int, int], None]:
    """A ``fault_hook`` raising :class:`FaultInjected` before optimisation step ``step`` of ``stage``.

    Args:
        stage: 1, 2 or 3.
        step: global step (0-based, counted from the start of the stage).
        once: raise only the first time (a restarted worker then passes).
    """
    fired = {"done": False}

    def hook(s: int, global_step: int) -> None:
        if s == stage and global_step == step and not (once and fired["done"]):
            fired["done"] = True
            raise FaultInjected(f"fault injected at stage {stage}, step {step}")

    return hook
