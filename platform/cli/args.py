"""Argument types shared by the command groups: checked when the command line is parsed.

A bad value is refused by argparse (usage line, one error line naming the
option, exit 2) before anything is loaded or computed.
"""

from __future__ import annotations

import argparse

__all__ = ["device", "non_negative_int", "positive_int", "add_commercial_api_arguments"]


def positive_int(text: str) -> int:
    """An ``int`` >= 1 (counts, sizes, threads)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give one >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def non_negative_int(text: str) -> int:
    """An ``int`` >= 0 (0 usually meaning "the default")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give one >= 0") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0 (0: the default)")
    return value


def device(text: str) -> str:
    """A torch device this machine has (``cpu``, ``cuda``, ``cuda:1``, ``mps``; ``auto``: CUDA if any, else CPU).

    Returns the resolved device's name (``"cpu"``, ``"cuda"``), usable with ``.to()`` and ``resolve_device``.
    """
    import torch

    from erasablemask.experiments.devices import resolve_device

    try:
        resolved = resolve_device(text, announce=False)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("compute.device=", "")) from None
    except RuntimeError:  # torch.device("banana")
        cuda = "cuda, cuda:N" if torch.cuda.is_available() else "no CUDA GPU here"
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device; use cpu or auto ({cuda})") from None
    return str(resolved)


def add_commercial_api_arguments(p: argparse.ArgumentParser) -> None:
    """``--apis SERVICE ...`` and ``--api-max-images N`` (Table III's commercial services; ``evaluate``, ``compare``)."""
    from erasablemask.experiments.config.schema import COMMERCIAL_APIS

    p.add_argument(
        "--apis",
        nargs="+",
        default=None,
        choices=COMMERCIAL_APIS,
        metavar="SERVICE",
        help="also score faces with commercial FR services (Table III): "
        f"{', '.join(COMMERCIAL_APIS)}; credentials from the environment (README)",
    )
    p.add_argument(
        "--api-max-images",
        type=positive_int,
        default=None,
        help="source faces sent to each service (default evaluation.commercial_apis.max_images, 100)",
    )
