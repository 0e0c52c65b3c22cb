"""The mini-world FR zoo for an explicit world: train, cache by config hash, calibrate, build.

The mini models (:mod:`erasablemask.models.fr.mini_zoo`) are trained
(:mod:`erasablemask.experiments.fr_tools.mini_training`) on the *FR population* of a
mini-world and cached as ``cache_dir()/mini_fr/<name>-<hash>.safetensors``
(written atomically), then its sha256 in the sidecar ``<file>.sha256``
(:func:`erasablemask.models.integrity.seal_file`), which every load checks
first: a damaged entry is refused naming the file, with the fix (delete it
and its sidecar; it is trained again). An entry cached before sidecars
existed is sealed on first use (it was written atomically, so it is
complete). The hash in the name covers the model's recipe, the
:class:`MiniZooWorld` and :data:`RECIPE_VERSION`.

The world and its FR population are in
:mod:`~erasablemask.experiments.fr_tools.mini_world`; thresholds are
calibrated on its calibration identities
(:mod:`~erasablemask.experiments.fr_tools.mini_calibration`) and stored under
the weights' digest and the world's calibration set, so thresholds follow
the weights: two worlds, or two training runs, never overwrite each other's.
A lock file per weights file keeps two processes from training one model
twice.

There is no process-global world: every function takes the world
explicitly, and :func:`build_mini_model` ``(name, world)`` gives the same
model and thresholds in any process (a Ray actor, a Tune trial) as in the
driver; ``experiments.fr_tools.zoo.build_fr_models(cfg, ...)`` passes the
config's world (:func:`erasablemask.experiments.data.splits.zoo_world`).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import AbstractContextManager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors.torch import save_file
from torch import Tensor

from erasablemask.experiments.fr_tools.mini_calibration import calibrate_mini_model
from erasablemask.experiments.fr_tools.mini_training import torch_threads, train_mini_model
from erasablemask.experiments.fr_tools.mini_world import MiniZooWorld, calibration_set_id, training_data
from erasablemask.experiments.progress import progress_bar
from erasablemask.models.atomic_files import atomic_path, file_lock
from erasablemask.models.fr.download import sha256_file
from erasablemask.models.fr.mini_zoo import MINI_RECIPES, MiniRecipe, build_mini_recognizer, load_mini_weights
from erasablemask.models.fr.registry import FaceRecognizer, build, cache_dir, read_calibration, weights_digest
from erasablemask.models.integrity import seal_file, sidecar_path

__all__ = [
    "RECIPE_VERSION",
    "config_hash",
    "mini_weights_path",
    "mini_calibration",
    "ensure_mini_model",
    "ensure_mini_zoo",
    "build_mini_model",
]

# Bump when the training code changes in a way that changes the weights.
# 3: disjoint roles (no source val/test image, target or calibration identity in the FR population).
# 4: the models see the centre 0.625 of the image (a face crop, MiniRecipe.center_crop).
RECIPE_VERSION = 4


def _recipe(name: str, world: MiniZooWorld) -> MiniRecipe:
    if name not in MINI_RECIPES:
        raise KeyError(f"unknown mini FR model '{name}'; available: {', '.join(sorted(MINI_RECIPES))}")
    r = MINI_RECIPES[name]
    return replace(r, epochs=world.epochs) if world.epochs is not None else r


def config_hash(name: str, world: MiniZooWorld) -> str:
    """16 hex digits identifying the weights of ``name`` trained on ``world``."""
    blob = {"recipe": asdict(_recipe(name, world)), "world": asdict(replace(world, epochs=None)), "v": RECIPE_VERSION}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def mini_weights_path(name: str, world: MiniZooWorld) -> Path:
    """Cache path ``cache_dir()/mini_fr/<name>-<hash>.safetensors`` (may not exist yet)."""
    return cache_dir() / "mini_fr" / f"{name}-{config_hash(name, world)}.safetensors"


def training_lock(path: Path) -> AbstractContextManager[float]:
    """Exclusive lock per weights file, so that two processes never train the same model at once."""
    return file_lock(path.parent / f".{path.name}.lock")


def _train_and_save(
    name: str, world: MiniZooWorld, data: Callable[[], tuple[Tensor, Tensor]], threads: int | None, progress: bool
) -> None:
    """Train ``name`` on ``data()`` and save it, unless its weights file exists (checked under the lock)."""
    path = mini_weights_path(name, world)
    with training_lock(path):
        if path.is_file():  # another process trained it while we waited
            _seal_once(path)
            return
        recipe = _recipe(name, world)
        model, info = train_mini_model(name, *data(), recipe=recipe, threads=threads, progress=progress)
        meta = {
            "name": name,
            "hash": config_hash(name, world),
            "recipe": json.dumps(asdict(recipe)),
            "world": json.dumps(asdict(replace(world, epochs=None))),
            **{k: str(v) for k, v in info.items()},
        }
        with atomic_path(path) as tmp:
            state = {k: v.detach().contiguous() for k, v in model.backbone.state_dict().items()}
            save_file(state, str(tmp), metadata=meta)
        seal_file(path)  # the digest, last


def _seal_once(path: Path) -> None:
    """Seal a weights file cached before sidecars existed (complete: it was written atomically)."""
    if path.is_file() and not sidecar_path(path).is_file():
        seal_file(path)


def _load(name: str, path: Path) -> FaceRecognizer:
    return load_mini_weights(build_mini_recognizer(name), path).eval()


def mini_calibration(name: str, world: MiniZooWorld) -> dict | None:
    """The calibration record of ``name``'s cached weights for ``world`` on its calibration set, or None."""
    path = mini_weights_path(name, world)
    if not path.is_file():
        return None
    return read_calibration(name, weights_digest(_load(name, path).backbone), calibration_set_id(world))


def ensure_mini_model(
    name: str,
    world: MiniZooWorld,
    *,
    threads: int | None = None,
    progress: bool = True,
) -> Path:
    """Weights of ``name`` for ``world``, training and calibrating if needed.

    Trains when ``mini_weights_path(name, world)`` is missing (one process at
    a time per file); calibrates when these exact weights (digest) have no
    thresholds on ``world``'s calibration set yet.

    Returns:
        The safetensors path.
    """
    path = mini_weights_path(name, world)
    if not path.is_file():
        _train_and_save(name, world, lambda: training_data(world), threads, progress)
    _seal_once(path)
    model = _load(name, path)
    if read_calibration(name, weights_digest(model.backbone), calibration_set_id(world)) is None:
        with torch_threads(threads):
            calibrate_mini_model(name, model, world, weights_hash=config_hash(name, world),
                                 weights_sha256=sha256_file(path))
    return path


def build_mini_model(
    name: str, world: MiniZooWorld, *, threads: int | None = None, progress: bool = True
) -> FaceRecognizer:
    """Mini model ``name`` trained on ``world``, with the thresholds calibrated on ``world``'s calibration set.

    The model depends only on the arguments (and the cache): a Ray actor or
    a Tune trial given the same world builds the same weights and
    thresholds as the driver. Trains and calibrates first if needed.

    Returns:
        A :class:`FaceRecognizer` in eval mode (``build(name, weights=path,
        calibration=calibration_set_id(world))``).
    """
    path = ensure_mini_model(name, world, threads=threads, progress=progress)
    return build(name, weights=path, calibration=calibration_set_id(world))


_WORKER_DATA: dict[str, Tensor] = {}


def _worker_init(images_u8: Tensor, labels: Tensor) -> None:
    torch.set_num_threads(1)
    _WORKER_DATA["images"] = images_u8.float().div(127.5).sub(1.0)  # the same floats MiniWorld makes
    _WORKER_DATA["labels"] = labels


def _worker_train(name: str, world: MiniZooWorld) -> str:
    _train_and_save(name, world, lambda: (_WORKER_DATA["images"], _WORKER_DATA["labels"]), 1, False)
    return name


def _train_in_parallel(names: list[str], world: MiniZooWorld, jobs: int, progress: bool) -> None:
    """Train ``names`` in ``jobs`` spawned processes of one thread each (the world is rendered once, here)."""
    images, labels = training_data(world)
    images_u8 = images.add(1.0).mul(127.5).round().to(torch.uint8)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init, initargs=(images_u8, labels)) as pool:
        futures = [pool.submit(_worker_train, n, world) for n in names]
        bar = progress_bar(total=len(names), desc=f"training mini zoo ({jobs} processes)", unit="model", disable=not progress)
        for done in as_completed(futures):
            bar.set_postfix_str(done.result())
            bar.update(1)
        bar.close()


def ensure_mini_zoo(
    names: Sequence[str] | None,
    world: MiniZooWorld,
    *,
    threads: int | None = None,
    jobs: int = 1,
    progress: bool = True,
) -> dict[str, Path]:
    """Train (if missing) and calibrate mini models on ``world``.

    Args:
        names: models to ensure (None: every registered ``mini_*``).
        world: the mini-world (e.g. ``MiniZooWorld()`` for the default one).
        threads: torch threads while training in this process (None: unchanged).
        jobs: models trained at once, each in its own process with one
            thread (``jobs=2`` on two cores is ~2x faster than ``threads=2``).
        progress: tqdm bars.

    Returns:
        ``{name: safetensors path}``.

    Raises:
        KeyError: an unknown name (before anything is trained).
    """
    names = list(names) if names is not None else sorted(MINI_RECIPES)
    unknown = [n for n in names if n not in MINI_RECIPES]
    if unknown:
        raise KeyError(f"unknown mini FR model(s) {unknown}; available: {', '.join(sorted(MINI_RECIPES))}")
    if jobs < 1:
        raise ValueError(f"jobs={jobs} must be >= 1")
    missing = [n for n in names if not mini_weights_path(n, world).is_file()]
    if jobs > 1 and len(missing) > 1:
        _train_in_parallel(missing, world, min(jobs, len(missing)), progress)
    return {n: ensure_mini_model(n, world, threads=threads, progress=progress) for n in names}
