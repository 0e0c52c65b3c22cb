"""Seeds: one config seed, derived streams per purpose (stage, rank, ...), and seeding the global RNGs."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import torch

__all__ = ["derive_seed", "seed_everything"]


def derive_seed(seed: int, *parts: int | str) -> int:
    """A 63-bit seed derived from ``seed`` and ``parts`` (e.g. stage, rank, purpose).

    Distinct ``parts`` give unrelated streams; the same arguments always give
    the same seed (sha256, not Python's salted ``hash``).
    """
    blob = json.dumps([int(seed), *[str(p) for p in parts]]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") >> 1


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global RNG and torch's global RNG."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
