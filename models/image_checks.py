"""Input checks shared by every public entry point that takes images.

The project's one image convention (DESIGN.md): ``(N, 3, H, W)`` float
tensors in ``[-1, 1]``, RGB. The most-reported bug of attack libraries is
silent range confusion (STYLE.md, torchattacks), so each public entry point
calls :func:`check_image_range` once, before any expensive work.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_image_range"]


def check_image_range(
    x: Tensor,
    name: str,
    lo: float = -1.0,
    hi: float = 1.0,
    tol: float = 1e-3,
) -> None:
    """Raise ``ValueError`` unless ``x`` is an ``(N, 3, H, W)`` float batch in ``[lo, hi]``.

    Args:
        x: the tensor to check.
        name: how the caller calls this input; it is named in the error.
        lo: lowest allowed value (default -1).
        hi: highest allowed value (default 1).
        tol: slack on both bounds, for float round-off (default 1e-3).

    Raises:
        ValueError: naming ``name``, what was received and how to fix it.
    """
    fix = "normalise with x/127.5-1 (uint8 [0, 255]) or x*2-1 (float [0, 1])"
    expect = f"`{name}` must be (N, 3, H, W) in [{lo:g}, {hi:g}]"
    if not isinstance(x, Tensor):
        raise ValueError(f"{expect}; got {type(x).__name__} — convert to a torch.Tensor, {fix}")
    if x.dim() != 4 or x.shape[1] != 3:
        hint = "add a batch dimension with x.unsqueeze(0)" if x.dim() == 3 else "convert to RGB (N, 3, H, W)"
        raise ValueError(f"{expect}; got shape {tuple(x.shape)} — {hint}")
    if not torch.is_floating_point(x):
        raise ValueError(f"{expect}; got dtype {x.dtype} — {fix}")
    if x.numel() == 0:
        raise ValueError(f"{expect}; got an empty tensor of shape {tuple(x.shape)}")
    with torch.no_grad():
        x_min = float(x.detach().amin())
        x_max = float(x.detach().amax())
    if x_min != x_min or x_max != x_max:  # NaN compares unequal to itself
        raise ValueError(f"{expect}; got NaN values — check the step that produced `{name}`")
    if x_min < lo - tol or x_max > hi + tol:
        raise ValueError(f"{expect}; got values in [{x_min:.4g}, {x_max:.4g}] — {fix}")
