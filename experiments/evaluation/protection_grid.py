"""Image grids people would rather look at than read.

:func:`protection_grid`: one row per source face — source | attribute-edited
(x_cov^{att_b}) | protected (x_adv) | erased (x_rec) | target (the target's
evaluation image), for a stage-2 or stage-3 checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw

from erasablemask.experiments.config.schema import ErasableMaskConfig

COLUMNS = ("source", "edited", "protected", "erased", "target")


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
    """Grid of ``n`` test faces through a stage-2/3 checkpoint (module docstring)."""
    from erasablemask.experiments.curriculum.build import load_protection_models
    from erasablemask.experiments.curriculum.checkpoint import load_checkpoint, read_checkpoint_meta
    from erasablemask.experiments.data.attribute_codes import code_attributes
    from erasablemask.experiments.evaluation.evaluate import evaluation_batches
    from erasablemask.experiments.evaluation.targets import build_targets, target_index_for
    from erasablemask.models.erasablemask import restorer_code

    stage = int(read_checkpoint_meta(Path(checkpoint))["stage"])
    ckpt = load_checkpoint(checkpoint, cfg, stage=stage, purpose="input")
    _, _, protector, restorer = load_protection_models(cfg, ckpt, torch.device("cpu"))
    protector.eval()
    restorer.eval()
    batch = evaluation_batches(cfg, "test", max_images=n)[0]
    targets = build_targets(cfg)
    a_a, a_b = code_attributes(batch.att_a, cfg), code_attributes(batch.att_b, cfg)
    out = protector.protect(batch.x, a_b)
    x_rec = restorer(out.x_adv, restorer_code(cfg.protection.restorer_attribute_input, a_a, a_b))
    which = target_index_for(batch.index, len(targets))
    rows = []
    for i in range(batch.x.shape[0]):
        t = targets.eval_images[0 if which is None else int(which[i])]
        rows.append([batch.x[i], out.x_cov_b[i], out.x_adv[i], x_rec[i], t])
    return to_uint8_grid(rows, labels=COLUMNS)
