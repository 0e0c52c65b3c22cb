"""Adversarial fine-tuning of an FR model (Madry et al. 2018), saved as a robust zoo entry.

The paper's Table IV attacks FR models made robust by adversarial training
(ArcFace and CosFace fine-tuned on LFW). This module makes such models:

1. the base model's margin head is rebuilt for the training identities
   (its family's ArcFace or CosFace head, :class:`MarginHead`; class
   weights start at the base model's class-mean embeddings, so the loss is
   meaningful from the first step);
2. each step, the batch (augmented as in mini training) is attacked with
   untargeted L∞ PGD from a random start, maximising that margin loss
   (Madry's inner maximisation); the model then takes a step on the
   adversarial examples' margin loss (optionally mixed with the clean loss,
   ``clean_weight``);
3. the weights are saved atomically with their sha256 sidecar in
   ``cache_dir()/robust_fr/<name>-<key>.safetensors``, ``key`` a digest of
   (base weights digest, recipe, data), and registered as the entry ``name``
   (:mod:`erasablemask.models.fr.robust_zoo`), with thresholds calibrated on
   the calibration role of the same data.

Data roles are those of the base: a mini model is fine-tuned on its world's
FR population (:func:`~erasablemask.experiments.fr_tools.mini_world.training_data`,
which checks the roles) and calibrated on the world's calibration
identities; a real model (:mod:`~erasablemask.experiments.fr_tools.robustify_folder`)
on a folder of identity subfolders, calibrated on a pairs file whose
identities must not be among them.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor

from erasablemask.experiments.devices import resolve_device
from erasablemask.experiments.errors import UserError
from erasablemask.experiments.fr_tools.mini_calibration import calibrate_mini_model, embed
from erasablemask.experiments.fr_tools.mini_training import MarginHead, augment, torch_threads
from erasablemask.experiments.fr_tools.mini_world import (
    MiniZooWorld,
    calibration_set_id,
    image_indices,
    population_world,
    training_data,
)
from erasablemask.experiments.fr_tools.mini_zoo import ensure_mini_model, training_lock
from erasablemask.experiments.progress import progress_bar
from erasablemask.models.atomic_files import atomic_path
from erasablemask.models.fr.download import sha256_file
from erasablemask.models.fr.mini_zoo import MINI_RECIPES
from erasablemask.models.fr.registry import PUBLISHED, FaceRecognizer, available, build, read_calibration
from erasablemask.models.fr.robust_zoo import ROBUST_SUFFIX, check_entry_name, read_entry, robust_dir, save_entry
from erasablemask.models.integrity import seal_file

__all__ = [
    "ROBUST_VERSION", "AdvRecipe", "MarginRecipe", "margin_recipe", "resolve_base", "pgd_margin",
    "adversarial_finetune", "robust_key", "save_robust", "ensure_robust_mini", "robustify_mini",
]

ROBUST_VERSION = 1  # bump when the fine-tuning code changes the weights it makes


@dataclass(frozen=True)
class AdvRecipe:
    """Hyper-parameters of adversarial fine-tuning (recorded in the entry).

    Attributes:
        eps_255: L∞ budget in 1/255 of the [0, 1] range (Madry et al.: 8).
        steps: PGD steps per training batch.
        step_255: PGD step in 1/255 (None: ``2.5 * eps / steps``, Madry et al.'s rule).
        random_start: start PGD uniformly inside the budget.
        clean_weight: weight of the clean loss, ``(1 - w) * adversarial + w * clean`` (0: Madry).
        epochs: passes over the training images.
        batch_size: images per step.
        lr: peak AdamW learning rate (one-cycle schedule).
        weight_decay: AdamW weight decay.
        seed: shuffling, augmentation and PGD-start seed.
    """

    eps_255: float = 8.0
    steps: int = 5
    step_255: float | None = None
    random_start: bool = True
    clean_weight: float = 0.0
    epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 5e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.eps_255 <= 64 or self.steps < 1 or self.epochs < 1 or self.batch_size < 2:
            raise UserError(f"adversarial recipe {self}: need 0 < eps <= 64 (/255), steps >= 1, epochs >= 1, "
                            f"batch size >= 2; fix --eps/--steps/--epochs/--batch-size")
        if not 0 <= self.clean_weight < 1 or self.lr <= 0:
            raise UserError(f"--clean-weight {self.clean_weight} must be in [0, 1) and --lr {self.lr} > 0")


@dataclass(frozen=True)
class MarginRecipe:
    """The margin head a model family was trained with: ``kind`` arcface/cosface, logit ``scale``, ``margin``."""

    kind: str
    scale: float
    margin: float


# insightface arcface_torch configs: ms1mv3_r100 / ms1mv3_r50 margin_list (1.0, 0.5, 0.0), scale 64 (ArcFace
# m = 0.5); glint360k_r100 cosface margin_list (1.0, 0.0, 0.4), scale 64 (CosFace m = 0.4).
PAPER_MARGINS = {
    "arcface_r100": MarginRecipe("arcface", 64.0, 0.5),
    "arcface_r50": MarginRecipe("arcface", 64.0, 0.5),
    "cosface_r100": MarginRecipe("cosface", 64.0, 0.4),
}


def margin_recipe(name: str) -> MarginRecipe:
    """The margin head of registered model ``name``.

    Raises:
        UserError: unknown model, or one not trained with an ArcFace/CosFace head.
    """
    if name in MINI_RECIPES:
        r = MINI_RECIPES[name]
        return MarginRecipe(r.margin, r.scale, r.margin_value)
    if name in PAPER_MARGINS:
        return PAPER_MARGINS[name]
    known = sorted([*MINI_RECIPES, *PAPER_MARGINS])
    if name not in available():
        raise UserError(f"unknown FR model '{name}'; robustify one of: {', '.join(known)}")
    raise UserError(f"FR model '{name}' has no margin-head recipe (it was not trained with an ArcFace or CosFace "
                    f"head here), so it cannot be fine-tuned with its family's loss; robustify one of: "
                    f"{', '.join(known)}")


def resolve_base(name: str) -> str:
    """The base of robust entry ``name`` (``<base>_robust`` or a saved entry's base), or ``name`` itself."""
    entry = read_entry(name)
    if entry is not None:
        return entry["base"]
    return name.removesuffix(ROBUST_SUFFIX) if name.endswith(ROBUST_SUFFIX) else name


def pgd_margin(model: FaceRecognizer, head: MarginHead, x: Tensor, y: Tensor, *, eps: float, steps: int,
               step_size: float, random_start: bool, gen: torch.Generator) -> Tensor:
    """Untargeted L∞ PGD maximising the margin loss ``CE(head(f(x_adv)), y)`` (Madry et al. 2018, Eq. 2).

    Args:
        x: ``(N, 3, H, W)`` in [-1, 1]; ``eps`` and ``step_size`` in [-1, 1] units.
        y: ``(N,)`` class ids of ``head``.

    Returns:
        ``x_adv`` in [-1, 1] with ``|x_adv - x| <= eps``. The model runs in eval mode
        (batch-norm statistics are not updated by the attack) and is put back as it was.
    """
    was_training = model.training
    model.eval()
    x_adv = x.clone()
    if random_start:
        x_adv = (x + (torch.rand(x.shape, generator=gen) * 2 - 1).to(x.device) * eps).clamp(-1, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(head(model(x_adv), y), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            x_adv = (x + (x_adv + step_size * grad.sign() - x).clamp(-eps, eps)).clamp(-1, 1)
    model.train(was_training)
    return x_adv.detach()


def _as_float(x: Tensor) -> Tensor:
    return x.float().div(127.5).sub(1.0) if x.dtype == torch.uint8 else x


def adversarial_finetune(model: FaceRecognizer, images: Tensor, labels: Tensor, margin: MarginRecipe,
                         recipe: AdvRecipe, *, threads: int | None = None, progress: bool = True,
                         device: str | torch.device = "auto") -> dict:
    """Fine-tune ``model`` in place on PGD examples of ``(images, labels)`` with ``margin``'s head.

    Args:
        images: ``(N, 3, H, W)``, float in [-1, 1] or uint8 (converted per batch).
        labels: ``(N,)`` class ids in ``[0, C)``.

    Returns:
        ``{"seconds", "final_adv_loss", "adv_train_acc", "steps"}``: the mean adversarial margin loss of the
        last epoch and the share of last-epoch adversarial examples still nearest their class (no margin).
    """
    start = time.perf_counter()
    n_classes = int(labels.max()) + 1
    with torch_threads(threads):
        torch.manual_seed(recipe.seed)
        device = resolve_device(device, announce=False) if isinstance(device, str) else device
        model.to(device)
        head = MarginHead(model.spec.embedding_size, n_classes, kind=margin.kind, scale=margin.scale,
                          margin=margin.margin).to(device)
        with torch.no_grad():  # class weights = the base model's class means (a warm head)
            emb = torch.cat([embed(model, _as_float(images[i : i + 256]).to(device)) for i in
                             range(0, len(images), 256)])
            means = torch.zeros(n_classes, emb.shape[1], device=device).index_add_(0, labels.to(device), emb)
            head.weight.copy_(F.normalize(means, dim=1))
        params = list(model.parameters()) + list(head.parameters())
        opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
        steps_per_epoch = max(1, len(images) // recipe.batch_size)
        total = recipe.epochs * steps_per_epoch
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=total, pct_start=0.1)
        gen = torch.Generator().manual_seed(recipe.seed)
        eps = 2 * recipe.eps_255 / 255
        step_size = 2 * recipe.step_255 / 255 if recipe.step_255 else 2.5 * eps / recipe.steps
        bar = progress_bar(total=total, desc=f"robustifying {model.spec.name}", unit="step", disable=not progress,
                           leave=False)
        losses, correct, seen = [], 0, 0
        model.train()
        for epoch in range(recipe.epochs):
            order = torch.randperm(len(images), generator=gen)
            for s in range(steps_per_epoch):
                idx = order[s * recipe.batch_size : (s + 1) * recipe.batch_size]
                x, y = augment(_as_float(images[idx]), gen).to(device), labels[idx].to(device)
                x_adv = pgd_margin(model, head, x, y, eps=eps, steps=recipe.steps, step_size=step_size,
                                   random_start=recipe.random_start, gen=gen)
                emb = model(x_adv)
                loss = F.cross_entropy(head(emb, y), y)
                if recipe.clean_weight:
                    clean = F.cross_entropy(head(model(x), y), y)
                    loss = (1 - recipe.clean_weight) * loss + recipe.clean_weight * clean
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                if epoch == recipe.epochs - 1:
                    correct += int((head.cosine(emb.detach()).argmax(1) == y).sum())
                    seen += len(y)
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.3f}", refresh=False)
        bar.close()
    model.eval().cpu()
    return {"seconds": time.perf_counter() - start, "final_adv_loss": float(np.mean(losses[-steps_per_epoch:])),
            "adv_train_acc": correct / max(seen, 1), "steps": total}


def robust_key(base_digest: str, recipe: AdvRecipe, data_id: str) -> str:
    """16 hex digits: the robust weights of (base weights, recipe, data)."""
    blob = {"base": base_digest, "recipe": asdict(recipe), "data": data_id, "v": ROBUST_VERSION}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def save_robust(model: FaceRecognizer, name: str, base: str, key: str, recipe: AdvRecipe, data_id: str,
                info: dict) -> Path:
    """Write the fine-tuned backbone atomically, then its sha256 sidecar; return the file."""
    path = robust_dir() / f"{name}-{key}.safetensors"
    meta = {"name": name, "base": base, "key": key, "recipe": json.dumps(asdict(recipe)), "data": data_id,
            **{k: str(v) for k, v in info.items()}}
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in model.backbone.state_dict().items()}, str(tmp),
                  metadata=meta)
    seal_file(path)  # the digest, last
    return path


def _world_id(world: MiniZooWorld) -> str:
    return "miniworld-fr-" + calibration_set_id(world).removeprefix("miniworld-")


def ensure_robust_mini(name: str, world: MiniZooWorld, recipe: AdvRecipe | None = None, *, base: str | None = None,
                       threads: int | None = None, progress: bool = True) -> Path:
    """Robust weights of entry ``name`` (base: :func:`resolve_base`) for ``world``, fine-tuning and calibrating if needed.

    Args:
        name: the entry's name, e.g. ``mini_mobileface_arc_s0_robust``.
        world: the mini-world of the base model (its FR population trains, its calibration identities calibrate).
        recipe: hyper-parameters (None: the saved entry's, else :class:`AdvRecipe` defaults).
        base: the model to fine-tune (None: :func:`resolve_base` of ``name``).

    Returns:
        The safetensors path (the entry is saved and registered; ``build(name, weights=path,
        calibration=calibration_set_id(world))`` gives the calibrated model).

    Raises:
        UserError: the base is not a mini model with a margin-head recipe.
    """
    check_entry_name(name)
    base = base or resolve_base(name)
    margin = margin_recipe(base)
    if base not in MINI_RECIPES:
        raise UserError(f"'{base}' is not a mini-world model; robustify it on a face data set with --data and --pairs")
    if recipe is None:
        entry = read_entry(name)
        recipe = AdvRecipe(**entry["recipe"]) if entry and "recipe" in entry else AdvRecipe()
    base_path = ensure_mini_model(base, world, threads=threads, progress=progress)
    model = build(base, weights=base_path, calibration=PUBLISHED)
    data_id = _world_id(world)
    key = robust_key(model.weights_digest, recipe, data_id)
    path = robust_dir() / f"{name}-{key}.safetensors"
    with training_lock(path):
        if not path.is_file():
            images, labels = training_data(world)
            info = adversarial_finetune(model, images, labels, margin, recipe, threads=threads, progress=progress)
            save_robust(model, name, base, key, recipe, data_id, info)
    cal_set = calibration_set_id(world)
    save_entry({"name": name, "base": base, "weights": path.name, "sha256": sha256_file(path), "key": key,
                "recipe": asdict(recipe), "data_id": data_id, "calibration_set": cal_set})
    robust = build(name, weights=path, calibration=PUBLISHED)
    if read_calibration(name, robust.weights_digest, cal_set) is None:
        with torch_threads(threads):
            calibrate_mini_model(name, robust, world, weights_hash=key, weights_sha256=sha256_file(path))
    return path


def robustify_mini(name: str, world: MiniZooWorld, recipe: AdvRecipe | None = None, *, base: str | None = None,
                   far: float = 0.01,
                   attack_eps_255: float = 8.0, attack_steps: int = 10, n_attack: int = 100,
                   threads: int | None = None, progress: bool = True) -> list[dict]:
    """Robustify mini entry ``name`` on ``world`` (:func:`ensure_robust_mini`) and measure base and robust model.

    Both are measured on the world's calibration identities (never trained on) with
    :func:`~erasablemask.experiments.fr_tools.robust_eval.verification_robustness`: every genuine pair and
    as many impostor pairs, at each model's own threshold at ``far``.

    Returns:
        Two rows (base, robust): ``model``, ``weights`` (digest prefix) and the measurement's fields.
    """
    from erasablemask.experiments.fr_tools.robust_eval import balanced_pairs, verification_robustness

    base = base or resolve_base(name)
    path = ensure_robust_mini(name, world, recipe, base=base, threads=threads, progress=progress)
    cal_set = calibration_set_id(world)
    models = {base: build(base, weights=ensure_mini_model(base, world, threads=threads, progress=progress),
                          calibration=cal_set),
              name: build(name, weights=path, calibration=cal_set)}
    idx = image_indices(world, world.calibration)
    pop = population_world(world)
    images, ids = pop.images(idx), [i // pop.images_per_identity for i in idx]
    pairs = balanced_pairs(ids)
    rows = []
    with torch_threads(threads):
        for label, m in models.items():
            row = verification_robustness(m, images, ids, pairs, far=far, eps_255=attack_eps_255,
                                          steps=attack_steps, n_attack=n_attack)
            rows.append({"model": label, "weights": m.weights_digest[:16], **row})
    return rows
