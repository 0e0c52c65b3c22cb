"""A separately trained attribute classifier, to judge attribute edits without the GAN's own D_att.

D_att is biased as a judge: the generator was trained to satisfy it. This
classifier (a small CNN, BCE over the 13 attributes) is trained on the
*train* split of the source images (:func:`split_dataset`), never sees
generated images, and is cached by (data, recipe) hash under
``cache_dir()/attr_clf/`` with a sha256 sidecar (``models/integrity.py``:
a damaged entry is refused naming the file). The evaluation images come from the test split.

:class:`EditAccuracy` reports, for the evaluation batches, its accuracy on
clean images against ``att_a`` (its own reliability), and on the
attribute-only edits and the protected faces against ``att_b`` — over all 13
attributes and over the edited one — plus the same measured with D_att.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.data.attributes import N_ATTRIBUTES
from erasablemask.experiments.data.splits import split_dataset
from erasablemask.experiments.evaluation.metrics import attribute_accuracy
from erasablemask.experiments.progress import progress_bar
from erasablemask.models.atomic_files import atomic_path
from erasablemask.models.fr.registry import cache_dir
from erasablemask.models.integrity import read_safetensors, seal_file, verify_file

if TYPE_CHECKING:
    from erasablemask.experiments.evaluation.validator import ProtectedBatch

__all__ = ["AttributeClassifier", "RECIPE", "ensure_attribute_classifier", "EditAccuracy"]

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
        what, fix = "cached attribute classifier", f"delete '{path}' and its .sha256 file; it is trained again"
        if not verify_file(path, what=what, fix=fix):
            seal_file(path)  # cached before sidecars (written atomically: complete)
        model.load_state_dict(read_safetensors(path, what=what, fix=fix), strict=True)
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
    seal_file(path)  # the digest, last
    return model.eval()


class EditAccuracy:
    """Attribute accuracy of clean / attribute-only / protected images, batch by batch (module docstring).

    Judges: the separate classifier (``clf``) and, when given, AttGAN's D_att
    (``datt``, biased: the generator was trained to satisfy it). Feed it every
    batch of an evaluation with :meth:`add`; :meth:`result` gives the keys
    ``attr/<judge>_clean_all`` (against ``att_a``) and
    ``attr/<judge>_<attr_only|protected>_<all|edited>`` (against ``att_b``;
    only for schemes that edit attributes).

    Args:
        cfg: the config (the classifier is the one cached for its data).
        discriminator: AttGAN D, whose attribute head is the second judge (None: classifier only).
        progress: show the classifier's training on first use.
    """

    def __init__(self, cfg: ErasableMaskConfig, *, discriminator: nn.Module | None = None,
                 progress: bool = True) -> None:
        with torch.enable_grad():
            clf = ensure_attribute_classifier(cfg, progress=progress)
        self.judges: dict[str, Callable[[Tensor], Tensor]] = {"clf": lambda z: clf(z.cpu())}
        if discriminator is not None:
            discriminator.eval()
            self.judges["datt"] = lambda z: discriminator(z)[1]
        self.preds: dict[str, list[Tensor]] = {}
        self.att_a: list[Tensor] = []
        self.att_b: list[Tensor] = []

    @torch.no_grad()
    def add(self, out: ProtectedBatch) -> None:
        """Judge one batch's clean, attribute-only and protected faces."""
        edits = out.attribute_only is not None  # protected faces are judged against att_b if the scheme edits
        for judge, fn in self.judges.items():
            for kind, img in (("clean", out.x), ("attr_only", out.attribute_only),
                              ("protected", out.protected if edits else None)):
                if img is not None:
                    self.preds.setdefault(f"{judge}_{kind}", []).append((fn(img) > 0).float().cpu())
        self.att_a.append(out.batch.att_a)
        self.att_b.append(out.batch.att_b)

    def result(self) -> dict[str, float]:
        """Accuracies over every batch added."""
        att_a, att_b = torch.cat(self.att_a), torch.cat(self.att_b)
        acc: dict[str, float] = {}
        for key, parts in self.preds.items():
            p = torch.cat(parts)
            judge, kind = key.split("_", 1)
            if kind == "clean":
                acc[f"attr/{judge}_clean_all"] = attribute_accuracy(p, att_a, att_a)["all"]
                continue
            a = attribute_accuracy(p, att_b, att_a)
            acc[f"attr/{judge}_{kind}_all"] = a["all"]
            acc[f"attr/{judge}_{kind}_edited"] = a["edited"]
        return acc
