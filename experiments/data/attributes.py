"""The 13 AttGAN attributes and how labels are coded and edited.

Labels are stored everywhere as 0/1 (float or int). AttGAN-PyTorch feeds the
generator ``(att * 2 - 1) * thres_int`` with ``thres_int = 0.5``, i.e. labels
coded ±0.5; the original TensorFlow AttGAN uses ±1. ``to_generator_input``
converts between these codings.

Target attributes ``att_b`` are made the AttGAN way: flip attributes of
``att_a`` and then resolve conflicts (``check_attribute_conflict`` in
AttGAN-PyTorch's helpers): the hair colours are mutually exclusive, Bald and
Bangs are mutually exclusive, and Mustache conflicts with No_Beard.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch

ATTRIBUTES: tuple[str, ...] = (
    "Bald",
    "Bangs",
    "Black_Hair",
    "Blond_Hair",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Eyeglasses",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "No_Beard",
    "Pale_Skin",
    "Young",
)
"""The 13 AttGAN attributes, in AttGAN's order (columns of every label tensor)."""

N_ATTRIBUTES: int = len(ATTRIBUTES)

HAIR_COLOURS: tuple[str, ...] = ("Black_Hair", "Blond_Hair", "Brown_Hair")
"""Mutually exclusive hair colours (AttGAN also lists Gray_Hair, not among the 13)."""

Coding = Literal["pm0.5", "pm1", "01"]


def attribute_index(name: str) -> int:
    """Column of attribute ``name`` in label tensors.

    Raises:
        KeyError: ``name`` is not one of ``ATTRIBUTES`` (the message lists them).
    """
    try:
        return ATTRIBUTES.index(name)
    except ValueError:
        raise KeyError(f"unknown attribute {name!r}; use one of {', '.join(ATTRIBUTES)}") from None


def _check_01(att01: torch.Tensor, name: str = "att01") -> None:
    if att01.ndim != 2 or att01.shape[1] != N_ATTRIBUTES:
        raise ValueError(
            f"{name} has shape {tuple(att01.shape)}; expected (N, {N_ATTRIBUTES}) columns in ATTRIBUTES order"
        )
    if att01.numel() and not bool(((att01 == 0) | (att01 == 1)).all()):
        raise ValueError(f"{name} must hold 0/1 labels; convert ±1 labels with (att + 1) / 2")


def to_generator_input(att01: torch.Tensor, coding: Coding = "pm0.5") -> torch.Tensor:
    """Code 0/1 labels for the generator input.

    Args:
        att01: (N, 13) labels in {0, 1}.
        coding: ``"pm0.5"`` (AttGAN-PyTorch, ``(2a-1)*0.5``), ``"pm1"`` (TF AttGAN,
            ``2a-1``) or ``"01"`` (unchanged).

    Returns:
        (N, 13) float32 tensor in the requested coding.
    """
    _check_01(att01)
    att = att01.float()
    if coding == "pm0.5":
        return (att * 2 - 1) * 0.5
    if coding == "pm1":
        return att * 2 - 1
    if coding == "01":
        return att.clone()
    raise ValueError(f"coding {coding!r} is unknown; use 'pm0.5', 'pm1' or '01'")


def from_generator_input(att: torch.Tensor, coding: Coding = "pm0.5") -> torch.Tensor:
    """Inverse of ``to_generator_input``: (N, 13) coded labels -> 0/1 float (thresholded at the midpoint)."""
    if coding == "pm0.5" or coding == "pm1":
        return (att > 0).float()
    if coding == "01":
        return (att > 0.5).float()
    raise ValueError(f"coding {coding!r} is unknown; use 'pm0.5', 'pm1' or '01'")


def resolve_conflicts(att01: torch.Tensor, changed: str) -> torch.Tensor:
    """AttGAN's ``check_attribute_conflict`` after attribute ``changed`` was set.

    If ``changed`` is now 1: a new hair colour clears the other hair colours;
    Bald clears Bangs and Bangs clears Bald; Mustache clears No_Beard and
    No_Beard clears Mustache. Labels are 0/1; returns a new tensor.

    Args:
        att01: (N, 13) labels in {0, 1}.
        changed: the attribute that was edited.
    """
    _check_01(att01)
    out = att01.clone()
    j = attribute_index(changed)
    on = out[:, j] == 1
    groups = [HAIR_COLOURS, ("Bald", "Bangs"), ("Mustache", "No_Beard")]
    for group in groups:
        if changed in group:
            for other in group:
                if other != changed:
                    out[on, attribute_index(other)] = 0
    return out


def flip_attributes(att01: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
    """Flip the given attributes (0 <-> 1) and resolve conflicts after each flip.

    Args:
        att01: (N, 13) labels in {0, 1}.
        names: attributes to flip, in order.

    Returns:
        (N, 13) new labels (same dtype).
    """
    out = att01.clone()
    for name in names:
        j = attribute_index(name)
        out[:, j] = 1 - out[:, j]
        out = resolve_conflicts(out, name)
    return out


def sample_target_attributes(
    att01: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    mode: Literal["flip_one", "flip_random", "permute"] = "flip_one",
    p_flip: float = 0.25,
) -> torch.Tensor:
    """Sample ``att_b`` from ``att_a`` for attribute editing.

    Args:
        att01: (N, 13) source labels ``att_a`` in {0, 1}.
        generator: torch RNG for reproducibility.
        mode: ``"flip_one"`` flips one uniformly chosen attribute per row (as
            AttGAN's test-time editing does); ``"flip_random"`` flips each
            attribute independently with probability ``p_flip``;
            ``"permute"`` shuffles rows within the batch (AttGAN-PyTorch's
            training recipe, ``att_a[randperm]``), which needs no conflict fix.
        p_flip: per-attribute flip probability for ``"flip_random"``.

    Returns:
        (N, 13) target labels in {0, 1}, conflicts resolved the AttGAN way.
    """
    _check_01(att01)
    n = att01.shape[0]
    if mode == "permute":
        return att01[torch.randperm(n, generator=generator)].clone()
    out = att01.clone()
    if mode == "flip_one":
        cols = torch.randint(0, N_ATTRIBUTES, (n,), generator=generator)
        flips = torch.zeros(n, N_ATTRIBUTES, dtype=torch.bool)
        flips[torch.arange(n), cols] = True
    elif mode == "flip_random":
        if not 0.0 <= p_flip <= 1.0:
            raise ValueError(f"p_flip={p_flip} must be in [0, 1]")
        flips = torch.rand(n, N_ATTRIBUTES, generator=generator) < p_flip
    else:
        raise ValueError(f"mode {mode!r} is unknown; use 'flip_one', 'flip_random' or 'permute'")
    for j, name in enumerate(ATTRIBUTES):
        rows = flips[:, j]
        if rows.any():
            sub = out[rows]
            sub[:, j] = 1 - sub[:, j]
            out[rows] = resolve_conflicts(sub, name)
    return out
