"""The mini-world FR zoo: tiny models trained here, registered as ``mini_*``.

Six models over four families (``models/fr/mini.py``), two margin heads and
two seeds, chosen so that a surrogate / black-box split mirrors the paper's
(surrogates IR152, IRSE50, FaceNet; black-box MobileFace, ArcFace-R100,
CosFace-R100). Every model sees the centre 0.625 of the world image (a face
crop, as an aligner gives real FR models), resized to its input side:

==========================  ==========  =======  =====  ====  ========  ======
name                        family      margin   input  seed  resize    epochs
==========================  ==========  =======  =====  ====  ========  ======
``mini_iresnet_arc_s0``     IResNet     ArcFace  64x64  0     bilinear  10
``mini_irse_cos_s0``        IR-SE       CosFace  56x56  0     area      12
``mini_incept_arc_s0``      Incept-Res  ArcFace  48x48  0     area      20
``mini_mobileface_arc_s0``  MobileFace  ArcFace  56x56  0     bilinear  14
``mini_iresnet_cos_s1``     IResNet     CosFace  64x64  1     bilinear  10
``mini_mobileface_cos_s1``  MobileFace  CosFace  56x56  1     bilinear  14
==========================  ==========  =======  =====  ====  ========  ======

A split that mirrors the paper: surrogates ``mini_iresnet_arc_s0``,
``mini_irse_cos_s0``, ``mini_incept_arc_s0``; black-box
``mini_mobileface_arc_s0``, ``mini_iresnet_cos_s1``,
``mini_mobileface_cos_s1``.

Weights (``WeightsSource(kind="trained_here")``) depend on the mini-world
they are trained on, so there is no default file: the experiments layer
(``experiments/fr_tools/mini_zoo.py``) trains them on a world's non-held-out
identities plus FR-only extras, caches them by config hash as
``cache_dir()/mini_fr/<name>-<hash>.safetensors``, calibrates thresholds on
the world's held-out identities, and builds the model from that file with
``build(name, weights=path, calibration=<the world's set>)``. Here, a factory
only loads the file it is given: ``build("mini_...")`` without ``weights``
raises :class:`~erasablemask.models.fr.spec.WeightsUnavailable` naming that
fix, rather than guessing a world.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from erasablemask.models.fr.mini import build_mini_backbone
from erasablemask.models.fr.registry import (
    FaceRecognizer,
    FRSpec,
    Preprocessing,
    WeightsSource,
    get_spec,
    register,
    resolve_weights,
)
from erasablemask.models.integrity import read_safetensors, sidecar_path, verify_file
from erasablemask.models.state_dicts import load_state_dict_checked

__all__ = ["MiniRecipe", "MINI_RECIPES", "build_mini_recognizer", "load_mini_weights"]


@dataclass(frozen=True)
class MiniRecipe:
    """Everything that determines a mini model's weights, except the world.

    Attributes:
        family: key of :data:`erasablemask.models.fr.mini.MINI_FAMILIES`.
        margin: ``arcface`` (additive angular, cos(θ+m)) or ``cosface``
            (additive cosine, cos θ − m).
        seed: initialisation, shuffling and augmentation seed.
        input_size: side the wrapper resizes world images to.
        resize: interpolation of that resize (``bilinear`` or ``area``).
        center_crop: fraction of the world image's side kept around its centre before the
            resize: the face crop an aligner gives real FR models (the face fills it; the
            background and shirt do not reach the model).
        embedding_size: embedding length.
        scale: logit scale ``s`` of the margin head.
        margin_value: ``m`` (radians for ArcFace, cosine units for CosFace).
        epochs: passes over the training identities' images.
        batch_size: images per step.
        optimizer: ``adamw`` or ``sgd`` (momentum 0.9, Nesterov).
        lr: peak learning rate (one-cycle schedule).
        weight_decay: weight decay.
    """

    family: str
    margin: Literal["arcface", "cosface"]
    seed: int
    input_size: int
    resize: str = "bilinear"
    center_crop: float = 0.625
    embedding_size: int = 128
    scale: float = 16.0
    margin_value: float = 0.5
    epochs: int = 16
    batch_size: int = 64
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 3e-3
    weight_decay: float = 5e-4


def _arc(**kw) -> MiniRecipe:
    return MiniRecipe(margin="arcface", margin_value=0.5, **kw)


def _cos(**kw) -> MiniRecipe:
    return MiniRecipe(margin="cosface", margin_value=0.35, **kw)


# Epochs are set so that each model trains in about a minute on one CPU core
# (measured CPU seconds per epoch on the default population of 2,880 images:
# IResNet ~6, IR-SE ~6, Inception-ResNet ~3.5, MobileFaceNet ~7.5).
MINI_RECIPES: dict[str, MiniRecipe] = {
    "mini_iresnet_arc_s0": _arc(family="iresnet", seed=0, input_size=64, epochs=10),
    "mini_irse_cos_s0": _cos(family="irse", seed=0, input_size=56, resize="area", epochs=12),
    "mini_incept_arc_s0": _arc(family="incept", seed=0, input_size=48, resize="area", epochs=20),
    "mini_mobileface_arc_s0": _arc(family="mobileface", seed=0, input_size=56, epochs=14),
    "mini_iresnet_cos_s1": _cos(family="iresnet", seed=1, input_size=64, epochs=10),
    "mini_mobileface_cos_s1": _cos(family="mobileface", seed=1, input_size=56, epochs=14),
}


def _spec(name: str, recipe: MiniRecipe) -> FRSpec:
    margin = "ArcFace" if recipe.margin == "arcface" else "CosFace"
    return FRSpec(
        name=name,
        family=f"mini_{recipe.family}",
        embedding_size=recipe.embedding_size,
        preprocessing=Preprocessing(
            size=(recipe.input_size, recipe.input_size), resize=recipe.resize, center_crop=recipe.center_crop
        ),
        weights=WeightsSource(
            kind="trained_here",
            location=f"$ERASABLEMASK_HOME/mini_fr/{name}-<config hash>.safetensors",
            note=(
                f"{margin} (s={recipe.scale:g}, m={recipe.margin_value:g}), seed {recipe.seed}, trained on "
                "a mini-world's non-held-out identities and FR-only extras by "
                "experiments.fr_tools.mini_zoo.build_mini_model(name, world) or `erasablemask fr train-mini`"
            ),
        ),
        threshold_source="none: calibrated on the held-out identities of the world the weights were trained on",
        role_hint="mini",
    )


def build_mini_recognizer(name: str) -> FaceRecognizer:
    """The untrained :class:`FaceRecognizer` of mini model ``name`` (random init)."""
    if name not in MINI_RECIPES:
        raise KeyError(f"unknown mini FR model '{name}'; available: {', '.join(sorted(MINI_RECIPES))}")
    r = MINI_RECIPES[name]
    backbone = build_mini_backbone(r.family, input_size=r.input_size, embedding_size=r.embedding_size)
    return FaceRecognizer(backbone, get_spec(name))


def load_mini_weights(model: FaceRecognizer, path: str | Path) -> FaceRecognizer:
    """Load a mini model's safetensors file into ``model.backbone`` (strict).

    A file with a sha256 sidecar (``<file>.sha256``, written by the mini-zoo
    cache) is verified against it first.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        IntegrityError: the file differs from its sidecar digest, or is not a
            readable safetensors file (names it; the fix: delete the cache entry).
        ValueError: the file's tensors do not fit the architecture (names the
            missing/unexpected keys and the fix).
    """
    file = resolve_weights(model.spec, path)
    if file is None:
        raise ValueError(f"load_mini_weights needs a weights file for FR model '{model.spec.name}', got {path!r}")
    what = f"weights of FR model '{model.spec.name}'"
    fix = (f"delete the cache entry ('{file}' and '{sidecar_path(file).name}'); it is trained again on next use"
           if sidecar_path(file).is_file() else "use an undamaged copy of the file")
    verify_file(file, what=what, fix=fix)
    load_state_dict_checked(
        model.backbone, read_safetensors(file, what=what, fix=fix), source=f"'{file}' (FR model '{model.spec.name}')",
        fix="It was saved for another architecture: pass that model's name, or the file trained for this one.",
    )
    return model


def _make_factory(name: str):
    def factory(weights: str | Path | None = None) -> FaceRecognizer:
        model = build_mini_recognizer(name)
        path = resolve_weights(model.spec, weights)  # None only for RANDOM_INIT; no default file (trained here)
        return model if path is None else load_mini_weights(model, path)

    factory.__name__ = f"build_{name}"
    factory.__doc__ = f"Factory of '{name}': weights = a trained .safetensors file, or 'random'."
    return factory


for _name, _recipe in MINI_RECIPES.items():
    register(_spec(_name, _recipe))(_make_factory(_name))
