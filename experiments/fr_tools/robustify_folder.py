"""``fr robustify`` on a face data set the user has: identity folders to train on, a pairs file to calibrate on.

The real version of Table IV's robust models (the paper: ArcFace and
CosFace fine-tuned on LFW). Roles, as in the mini-world: the training
identities (``--data``: one subfolder per identity, >= 2 images each) and the
calibration identities (the first folder of each path in ``--pairs``,
relative to ``--images``) must be disjoint
(:func:`~erasablemask.experiments.fr_tools.mini_world.check_disjoint_roles`),
and so must the image files. Base and robust model are both calibrated on
the pairs (the base's thresholds go under its own weights digest, as
``fr calibrate`` would save them), and both are measured on them.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from erasablemask.experiments.data.image_io import IMAGE_EXTENSIONS, load_image_tensor
from erasablemask.experiments.devices import resolve_device
from erasablemask.experiments.errors import UserError
from erasablemask.experiments.fr_tools.calibration import (
    DEFAULT_FARS,
    pairs_calibration_set,
    read_pairs,
    roc_auc,
    save_thresholds,
    score_pairs,
    thresholds_at_far,
)
from erasablemask.experiments.fr_tools.mini_world import check_disjoint_roles
from erasablemask.experiments.fr_tools.robust_eval import verification_robustness
from erasablemask.experiments.fr_tools.robustify import (
    AdvRecipe,
    adversarial_finetune,
    margin_recipe,
    robust_key,
    save_robust,
)
from erasablemask.models.fr.download import sha256_file
from erasablemask.models.fr.registry import PUBLISHED, FaceRecognizer, build, read_calibration
from erasablemask.models.fr.robust_zoo import check_entry_name, robust_dir, save_entry

__all__ = ["identity_folder", "pair_identity", "robustify_folder"]


def identity_folder(root: str | Path) -> tuple[list[Path], list[str]]:
    """Images of a folder of identity subfolders: ``(paths, identity per path)``, sorted.

    Raises:
        UserError: the folder is missing, or has < 2 identities with >= 2 images each.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--data '{root}' is not a folder; give a folder with one subfolder of face images per identity")
    paths, ids = [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        if len(files) >= 2:  # an identity needs two images to be learned
            paths += files
            ids += [sub.name] * len(files)
    if len(set(ids)) < 2:
        raise UserError(f"--data '{root}' has {len(set(ids))} identity subfolder(s) with >= 2 images; "
                        f"adversarial training needs >= 2 (one subfolder of images per identity)")
    return paths, ids


def pair_identity(path: str) -> str:
    """Identity of a pairs-file image: its first folder (LFW's ``Name/Name_0001.jpg``)."""
    parts = Path(path).parts
    if len(parts) < 2:
        raise UserError(f"pairs-file image '{path}' is not inside an identity folder; list images as IDENTITY/FILE "
                        f"so that calibration identities can be checked against the training ones")
    return parts[0]


def _load(paths: list[Path], size: tuple[int, int]) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` images at the model's input size (the project's one image loader)."""
    return torch.stack([load_image_tensor(p, size).add(1).mul(127.5).round().to(torch.uint8) for p in paths])


def _calibrate_on_pairs(name: str, model: FaceRecognizer, df: pd.DataFrame, images: Path, cal_set: str,
                        progress: bool) -> None:
    genuine, impostor = score_pairs(model, df, images, progress=progress)
    fars = [f for f in DEFAULT_FARS if f * impostor.size >= 10]
    if not fars:
        raise UserError(f"--pairs has {impostor.size} impostor pairs, too few for FAR {max(DEFAULT_FARS):g} "
                        f"(>= 10 false accepts); add impostor pairs")
    rows = thresholds_at_far(genuine, impostor, fars)
    save_thresholds(name, model.weights_digest, cal_set, rows, f"{len(df)} pairs ({cal_set}) by fr robustify",
                    n_genuine=int(genuine.size), n_impostor=int(impostor.size),
                    extra={"auc": roc_auc(genuine, impostor)})


def robustify_folder(base: str, name: str, data: str | Path, pairs: str | Path, images: str | Path,
                     recipe: AdvRecipe, *, weights: str | Path | None = None, far: float = 0.01,
                     attack_eps_255: float = 8.0, attack_steps: int = 10, n_attack: int = 100,
                     threads: int | None = None, device: str | torch.device = "auto", progress: bool = True) -> list[dict]:
    """Fine-tune ``base`` on ``data``, save entry ``name``, calibrate both on ``pairs``, measure both.

    Returns:
        Two rows (base, robust) of :func:`verification_robustness` with ``model`` and ``weights`` added.

    Raises:
        UserError: no margin-head recipe, missing data, overlapping roles (all before any training).
    """
    check_entry_name(name)
    margin = margin_recipe(base)
    device = resolve_device(device, announce=False) if isinstance(device, str) else device
    train_paths, train_ids = identity_folder(data)
    images = Path(images)
    df = read_pairs(pairs, images)
    pair_files = pd.unique(pd.concat([df["a"], df["b"]]))
    pair_ids = {pair_identity(f) for f in pair_files}
    check_disjoint_roles({"training (--data)": set(train_ids), "calibration (--pairs)": pair_ids})
    check_disjoint_roles({"training (--data)": {p.resolve() for p in train_paths},
                          "calibration (--pairs)": {(images / f).resolve() for f in pair_files}}, "images")
    model = build(base, weights=weights, calibration=PUBLISHED)
    size = model.spec.preprocessing.size
    h = hashlib.sha256()
    for p, i in zip(train_paths, train_ids):
        h.update(f"{i}/{p.name}\t{sha256_file(p)}\n".encode())
    data_id = f"folder-{h.hexdigest()[:16]}"
    key = robust_key(model.weights_digest, recipe, data_id)
    path = robust_dir() / f"{name}-{key}.safetensors"
    cal_set = pairs_calibration_set(df, images)
    if not path.is_file():
        classes = {c: k for k, c in enumerate(sorted(set(train_ids)))}
        x = _load(train_paths, size)
        y = torch.tensor([classes[i] for i in train_ids])
        info = adversarial_finetune(model, x, y, margin, recipe, threads=threads, progress=progress, device=device)
        save_robust(model, name, base, key, recipe, data_id, info)
    save_entry({"name": name, "base": base, "weights": path.name, "sha256": sha256_file(path), "key": key,
                "recipe": asdict(recipe), "data_id": data_id, "calibration_set": cal_set,
                "base_weights": str(weights) if weights else None})
    pair_x = _load([images / f for f in pair_files], size).float().div(127.5).sub(1)
    index = {f: k for k, f in enumerate(pair_files)}
    ids = np.array([pair_identity(f) for f in pair_files])
    triple = (df["a"].map(index).to_numpy(), df["b"].map(index).to_numpy(), df["same"].to_numpy())
    rows = []
    for label, n, w in ((base, base, weights), (name, name, path)):
        m = build(n, weights=w, calibration=PUBLISHED).to(device)
        if read_calibration(n, m.weights_digest, cal_set) is None:
            _calibrate_on_pairs(n, m, df, images, cal_set, progress)
        m = build(n, weights=w, calibration=cal_set).to(device)
        row = verification_robustness(m, pair_x.to(device), ids, triple, far=far, eps_255=attack_eps_255,
                                      steps=attack_steps, n_attack=n_attack)
        rows.append({"model": label, "weights": m.weights_digest[:16], **row})
    return rows
