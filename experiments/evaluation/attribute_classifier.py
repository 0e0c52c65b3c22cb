"""A separately trained attribute classifier, to judge attribute edits without the GAN's own D_att.

D_att is biased as a judge: the generator was trained to satisfy it. This
classifier (a small CNN, BCE over the 13 attributes) is trained on the
*train* split of the source images (:func:`split_dataset`), never sees
generated images, and is cached by (data, recipe) hash under
``cache_dir()/attr_clf/``. The evaluation images come from the test split.

:func:`edit_accuracy` reports, for the evaluation batches, its accuracy on
clean images against ``att_a`` (its own reliability), and on the
attribute-only edits and the protected faces against ``att_b`` — over all 13
attributes and over the edited one — plus the same measured with D_att.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.data.attribute_codes import code_attributes
from erasablemask.experiments.data.attributes import N_ATTRIBUTES
from erasablemask.experiments.data.splits import split_dataset
from erasablemask.experiments.evaluation.metrics import attribute_accuracy
from erasablemask.experiments.progress import progress_bar
from erasablemask.models.atomic_files import atomic_path
from erasablemask.models.fr.registry import cache_dir

__all__ = ["AttributeClassifier", "RECIPE", "ensure_attribute_classifier", "edit_accuracy"]

RECIPE = {"widths": [32, 64, 128, 128], "epochs": 12, "batch_size": 64, "lr": 2e-3, "seed": 0, "v": 1}


class AttributeClassifier(nn.Module):
    """Strided conv net: (N, 3, H, W) in [-1, 1] -> (N, 13) attribute logits."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for w in widths:
            layers += [nn.Conv2d(cin, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, N_ATTRIBUTES)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def _path(cfg: ErasableMaskConfig) -> Path:
    blob = json.dumps({"recipe": RECIPE, "seed": cfg.seed, "data": cfg.data.model_dump(mode="json")}, sort_keys=True)
    return cache_dir() / "attr_clf" / f"{hashlib.sha256(blob.encode()).hexdigest()[:16]}.safetensors"


def ensure_attribute_classifier(cfg: ErasableMaskConfig, *, progress: bool = True) -> AttributeClassifier:
    """The classifier for this config's data (trained on its train split on first use, then cached)."""
    model = AttributeClassifier(RECIPE["widths"])
    path = _path(cfg)
    if path.is_file():
        model.load_state_dict(load_file(str(path)), strict=True)
        return model.eval()
    ds = split_dataset(cfg, "train")  # read batch by batch: real data sets do not fit in memory
    gen = torch.Generator().manual_seed(RECIPE["seed"])
    torch.manual_seed(RECIPE["seed"])
    model = AttributeClassifier(RECIPE["widths"])
    opt = torch.optim.Adam(model.parameters(), lr=RECIPE["lr"])
    bs = RECIPE["batch_size"]
    steps = max(1, len(ds) // bs)
    bar = progress_bar(total=RECIPE["epochs"] * steps, desc="training attribute classifier", disable=not progress, leave=False)
    model.train()
    for _ in range(RECIPE["epochs"]):
        order = torch.randperm(len(ds), generator=gen)
        for s in range(steps):
            items = [ds[int(i)] for i in order[s * bs:(s + 1) * bs]]
            xb = torch.stack([it["image"] for it in items])
            yb = torch.stack([it["attrs"] for it in items])
            flip = torch.rand(len(items), generator=gen) < 0.5  # horizontal flips keep every attribute
            xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)
            loss = F.binary_cross_entropy_with_logits(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update(1)
    bar.close()
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    return model.eval()


def edit_accuracy(cfg: ErasableMaskConfig, batches, protector: nn.Module, discriminator: nn.Module,
                  *, progress: bool = True) -> dict[str, float]:
    """Attribute accuracy of clean / attribute-only / protected images (module docstring for the keys)."""
    with torch.enable_grad():
        clf = ensure_attribute_classifier(cfg, progress=progress)
    with torch.no_grad():
        return _edit_accuracy(cfg, batches, protector, discriminator, clf)


def _edit_accuracy(cfg: ErasableMaskConfig, batches, protector: nn.Module, discriminator: nn.Module,
                   clf: nn.Module) -> dict[str, float]:
    protector.eval()
    discriminator.eval()
    preds: dict[str, list[Tensor]] = {}
    att_a_all, att_b_all = [], []
    for b in batches:
        out = protector.protect(b.x, code_attributes(b.att_b, cfg))
        for judge, fn in (("clf", lambda z: clf(z)), ("datt", lambda z: discriminator(z)[1])):
            for kind, img in (("clean", b.x), ("attr_only", out.x_cov_b), ("protected", out.x_adv)):
                preds.setdefault(f"{judge}_{kind}", []).append((fn(img) > 0).float())
        att_a_all.append(b.att_a)
        att_b_all.append(b.att_b)
    att_a, att_b = torch.cat(att_a_all), torch.cat(att_b_all)
    out: dict[str, float] = {}
    for key, parts in preds.items():
        p = torch.cat(parts)
        judge, kind = key.split("_", 1)
        if kind == "clean":
            out[f"attr/{judge}_clean_all"] = attribute_accuracy(p, att_a, att_a)["all"]
            continue
        acc = attribute_accuracy(p, att_b, att_a)
        out[f"attr/{judge}_{kind}_all"] = acc["all"]
        out[f"attr/{judge}_{kind}_edited"] = acc["edited"]
    return out
