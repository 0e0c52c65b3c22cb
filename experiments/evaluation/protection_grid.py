"""Image grids people would rather look at than read.

:func:`scheme_grid`: one row per source face — source | attribute-edited
(x_cov^{att_b}) | protected (x_adv) | erased (x_rec) | target (the target's
evaluation image), for any :class:`Protection` (the columns a scheme lacks
are left out); :func:`protection_grid` for ErasableMask from a stage-2 or
stage-3 checkpoint or a run folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.evaluation.protection import Protection


def to_uint8_grid(rows: list[list[torch.Tensor]], *, labels: tuple[str, ...] = (), pad: int = 2) -> Image.Image:
    """Tile ``rows`` of ``(3, H, W)`` images in [-1, 1] into one RGB image, with column labels."""
    h, w = rows[0][0].shape[-2:]
    head = 12 if labels else 0
    n_cols = max(len(r) for r in rows)
    canvas = Image.new("RGB", (n_cols * (w + pad) + pad, head + len(rows) * (h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for c, text in enumerate(labels):
        draw.text((pad + c * (w + pad), 1), text[: max(1, w // 6)], fill="black")
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            arr = ((img.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
            canvas.paste(Image.fromarray(arr), (pad + c * (w + pad), head + pad + r * (h + pad)))
    return canvas


@torch.no_grad()
def protection_grid(cfg: ErasableMaskConfig, checkpoint: Path, *, n: int = 8) -> Image.Image:
    """Grid of ``n`` test faces through ErasableMask from a stage-2/3 checkpoint or a run folder."""
    from erasablemask.experiments.evaluation.erasablemask_protection import ErasableMaskProtection

    return scheme_grid(cfg, ErasableMaskProtection.from_checkpoint(cfg, Path(checkpoint)), n=n)


@torch.no_grad()
def scheme_grid(cfg: ErasableMaskConfig, protection: Protection, *, n: int = 8) -> Image.Image:
    """Grid of ``n`` test faces through any protection (columns it lacks, edited or erased, are left out)."""
    from erasablemask.experiments.evaluation.batches import evaluation_batches
    from erasablemask.experiments.evaluation.targets import build_targets, target_index_for

    batch = evaluation_batches(cfg, "test", max_images=n)[0]
    targets = build_targets(cfg)
    which = target_index_for(batch.index, len(targets))
    which = torch.zeros_like(batch.index) if which is None else which
    att = {"att_a": batch.att_a, "att_b": batch.att_b}
    columns = {"source": batch.x, "edited": protection.attribute_only(batch.x, **att),
               "protected": protection.protect(batch.x, targets.train_images[which], **att)}
    columns["erased"] = protection.erase(columns["protected"], **att) if protection.can_erase else None
    columns["target"] = targets.eval_images[which]
    shown = {k: v for k, v in columns.items() if v is not None}
    rows = [[img[i] for img in shown.values()] for i in range(batch.x.shape[0])]
    return to_uint8_grid(rows, labels=tuple(shown))
