"""The mini-world FR zoo on disk: which world, cache by config hash, calibration.

The mini models (:mod:`erasablemask.models.fr.mini_zoo`) are trained
(:mod:`erasablemask.experiments.fr_mini_train`) on the *FR population* of a
mini-world and cached as ``cache_dir()/mini_fr/<name>-<hash>.safetensors``
(written atomically); the hash covers the model's recipe, the
:class:`MiniZooWorld` and :data:`RECIPE_VERSION`.

FR population: the world's identities ``[0, n - heldout)`` (every image),
plus ``extra_identities`` identities ``[n, n + extra)`` of the same seed
that the world itself does not contain (their first
``extra_images_per_identity`` images). The extras play the part of the
paper's FR training sets (MS1M, CASIA), whose people are not CelebA-HQ's:
the generator never sees them. They exist because 40 identities are too few
for a face embedding that generalises to unseen people. Identity ``k`` of a
mini-world does not depend on how many identities it has, so the population
world's first ``n`` identities are exactly the world's.

Thresholds are calibrated on the held-out identities ``[n - heldout, n)``,
which no mini model sees, using every image of theirs (not only val/test:
the default world's held-out val/test images give 448 impostor pairs, too
few for FAR 0.01; all 192 give 16,128). The record stores the sha256 of the
weights file, so thresholds are redone whenever the file in use changes; a
lock file per weights file keeps two processes from training one model twice.

Which world :func:`ensure_mini_model` (and so ``build("mini_...")``) uses is
the one last passed to :func:`ensure_mini_zoo` in this process, else the
default :class:`MiniZooWorld`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor

from erasablemask.experiments.data.miniworld import MiniWorld
from erasablemask.experiments.fr_tools.calibration import DEFAULT_FARS, roc_auc, save_thresholds, thresholds_at_far
from erasablemask.experiments.fr_tools.mini_training import torch_threads, train_mini_model
from erasablemask.experiments.progress import progress_bar
from erasablemask.models.atomic_files import atomic_path
from erasablemask.models.fr.mini_zoo import MINI_RECIPES, MiniRecipe, build_mini_recognizer, load_mini_weights
from erasablemask.models.fr.registry import FaceRecognizer, cache_dir, read_calibration

__all__ = [
    "RECIPE_VERSION",
    "MiniZooWorld",
    "population_world",
    "config_hash",
    "mini_weights_path",
    "embed",
    "heldout_scores",
    "calibrate_mini_model",
    "ensure_mini_model",
    "ensure_mini_zoo",
]

# Bump when the training code changes in a way that changes the weights.
RECIPE_VERSION = 2


@dataclass(frozen=True)
class MiniZooWorld:
    """The mini-world a zoo is trained on, its FR population, and an optional epochs override.

    Attributes:
        seed: world seed (``MiniWorld(seed=...)``).
        n_identities: identities in the world.
        images_per_identity: images per identity.
        heldout_identities: the world's last identities; never trained on.
        image_size: rendered image side (pixels).
        extra_identities: FR-only identities beyond the world (see module doc).
        extra_images_per_identity: images used of each extra identity.
        epochs: overrides every recipe's epochs when set (tests, quick runs).
    """

    seed: int = 0
    n_identities: int = 48
    images_per_identity: int = 24
    heldout_identities: int = 8
    image_size: int = 64
    extra_identities: int = 160
    extra_images_per_identity: int = 12
    epochs: int | None = None

    def __post_init__(self) -> None:
        if not 2 <= self.heldout_identities <= self.n_identities - 2:
            raise ValueError(
                f"heldout_identities={self.heldout_identities} must leave >= 2 identities for training and "
                f"be >= 2 for calibration (n_identities={self.n_identities}); change data.miniworld"
            )
        if self.extra_identities < 0 or (self.extra_identities and self.extra_images_per_identity < 2):
            raise ValueError(
                f"extra_identities={self.extra_identities} must be >= 0 and extra_images_per_identity="
                f"{self.extra_images_per_identity} >= 2 (an identity needs two images to be learned)"
            )
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs={self.epochs} must be >= 1 (or None for each recipe's own)")

    @property
    def train_identities(self) -> list[int]:
        """FR population: the world's non-held-out identities, then the extras."""
        n = self.n_identities
        return list(range(n - self.heldout_identities)) + list(range(n, n + self.extra_identities))

    @property
    def heldout(self) -> list[int]:
        return list(range(self.n_identities - self.heldout_identities, self.n_identities))


_ACTIVE: dict[str, object] = {"world": MiniZooWorld(), "threads": None}
_WORLDS: dict[MiniZooWorld, MiniWorld] = {}


def population_world(world: MiniZooWorld) -> MiniWorld:
    """The rendered world holding the FR population and the held-out identities (one kept in memory).

    It has ``n + extra`` identities of ``max(images_per_identity,
    extra_images_per_identity)`` images; use :func:`_image_indices` to pick
    the images that belong to the population.
    """
    key = replace(world, epochs=None)
    if key not in _WORLDS:
        _WORLDS.clear()
        _WORLDS[key] = MiniWorld(
            seed=world.seed,
            n_identities=world.n_identities + world.extra_identities,
            images_per_identity=max(world.images_per_identity, world.extra_images_per_identity),
            image_size=world.image_size,
        )
    return _WORLDS[key]


def _image_indices(world: MiniZooWorld, identities: Sequence[int]) -> list[int]:
    """Indices into :func:`population_world` of the images of ``identities`` that the world uses."""
    per = max(world.images_per_identity, world.extra_images_per_identity)
    out = []
    for k in identities:
        count = world.images_per_identity if k < world.n_identities else world.extra_images_per_identity
        out += [k * per + j for j in range(count)]
    return out


def _recipe(name: str, world: MiniZooWorld) -> MiniRecipe:
    if name not in MINI_RECIPES:
        raise KeyError(f"unknown mini FR model '{name}'; available: {', '.join(sorted(MINI_RECIPES))}")
    r = MINI_RECIPES[name]
    return replace(r, epochs=world.epochs) if world.epochs is not None else r


def config_hash(name: str, world: MiniZooWorld) -> str:
    """16 hex digits identifying the weights of ``name`` trained on ``world``."""
    blob = {"recipe": asdict(_recipe(name, world)), "world": asdict(replace(world, epochs=None)), "v": RECIPE_VERSION}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def mini_weights_path(name: str, world: MiniZooWorld | None = None) -> Path:
    """Cache path ``cache_dir()/mini_fr/<name>-<hash>.safetensors`` (may not exist yet)."""
    world = world or _ACTIVE["world"]
    return cache_dir() / "mini_fr" / f"{name}-{config_hash(name, world)}.safetensors"


@torch.no_grad()
def embed(model: FaceRecognizer, images: Tensor, batch_size: int = 128) -> Tensor:
    """``(N, D)`` unit embeddings of ``(N, 3, H, W)`` images in [-1, 1], in eval mode, batched."""
    model.eval()
    return torch.cat([model(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)])


def heldout_scores(
    model: FaceRecognizer, world: MiniZooWorld, identities: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores of every pair of images of ``identities`` (default: the held-out ones).

    Returns:
        ``(genuine, impostor)``: same-identity and different-identity pair
        scores, each unordered pair once.
    """
    idx = _image_indices(world, world.heldout if identities is None else identities)
    pop = population_world(world)
    emb = embed(model, pop.images(idx))
    ids = torch.as_tensor(idx) // pop.images_per_identity
    i, j = torch.triu_indices(len(idx), len(idx), offset=1)
    cos = (emb[i] * emb[j]).sum(1).double().numpy()
    same = (ids[i] == ids[j]).numpy()
    return cos[same], cos[~same]


def calibrate_mini_model(
    name: str,
    model: FaceRecognizer,
    world: MiniZooWorld,
    *,
    weights_hash: str,
    weights_sha256: str | None = None,
    fars: Sequence[float] = DEFAULT_FARS,
) -> list[dict]:
    """Calibrate ``name`` on the held-out identities of ``world`` and save the thresholds.

    FARs with fewer than 10 expected false accepts on this world's impostor
    pairs are skipped (a small test world cannot support FAR 0.001). The
    record keeps ``weights_hash`` (config hash) and ``weights_sha256`` (the
    weights file's digest), so that thresholds are redone when the file changes.

    Returns:
        The rows of :func:`~erasablemask.experiments.fr_tools.calibration.thresholds_at_far`.
    """
    genuine, impostor = heldout_scores(model, world)
    usable = [f for f in fars if f * impostor.size >= 10]
    if not usable:
        raise ValueError(
            f"held-out identities of this mini-world give {impostor.size} impostor pairs, too few for FAR "
            f"{max(fars):g}; raise data.miniworld.heldout_identities or images_per_identity"
        )
    rows = thresholds_at_far(genuine, impostor, usable)
    w = world
    source = (
        f"mini-world seed {w.seed} ({w.n_identities} ids x {w.images_per_identity} imgs, {w.image_size}px), "
        f"held-out identities {w.heldout[0]}-{w.heldout[-1]}, all images; weights {weights_hash}"
    )
    extra = {"weights_hash": weights_hash, "weights_sha256": weights_sha256, "auc": roc_auc(genuine, impostor)}
    save_thresholds(name, rows, source, n_genuine=int(genuine.size), n_impostor=int(impostor.size), extra=extra)
    return rows


def _training_data(world: MiniZooWorld) -> tuple[Tensor, Tensor]:
    """The FR population's images ``(N, 3, H, W)`` in [-1, 1] and class labels ``(N,)``."""
    ids = world.train_identities
    idx = _image_indices(world, ids)
    pop = population_world(world)
    label_of = {k: c for c, k in enumerate(ids)}
    return pop.images(idx), torch.tensor([label_of[i // pop.images_per_identity] for i in idx])


@contextmanager
def _training_lock(path: Path) -> Iterator[None]:
    """Exclusive lock per weights file, so that two processes never train the same model at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _train_and_save(
    name: str, world: MiniZooWorld, data: Callable[[], tuple[Tensor, Tensor]], threads: int | None, progress: bool
) -> None:
    """Train ``name`` on ``data()`` and save it, unless its weights file exists (checked under the lock)."""
    path = mini_weights_path(name, world)
    with _training_lock(path):
        if path.is_file():  # another process trained it while we waited
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


def ensure_mini_model(
    name: str,
    world: MiniZooWorld | None = None,
    *,
    threads: int | None = None,
    progress: bool = True,
) -> Path:
    """Weights of ``name`` for ``world`` (default: the active one), training and calibrating if needed.

    Trains when ``mini_weights_path(name, world)`` is missing (one process at
    a time per file); (re)calibrates when the saved thresholds were not
    computed from this exact file (sha256).

    Returns:
        The safetensors path.
    """
    world = world or _ACTIVE["world"]
    threads = threads if threads is not None else _ACTIVE["threads"]
    path = mini_weights_path(name, world)
    if not path.is_file():
        _train_and_save(name, world, lambda: _training_data(world), threads, progress)
    sha = _file_sha256(path)
    calibration = read_calibration(name)
    if calibration is None or calibration.get("weights_sha256") != sha:
        model = load_mini_weights(build_mini_recognizer(name), path)
        with torch_threads(threads):
            calibrate_mini_model(name, model, world, weights_hash=config_hash(name, world), weights_sha256=sha)
    return path


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
    images, labels = _training_data(world)
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
    names: Sequence[str] | None = None,
    world: MiniZooWorld | None = None,
    *,
    threads: int | None = None,
    jobs: int = 1,
    progress: bool = True,
) -> dict[str, Path]:
    """Train (if missing) and calibrate mini models on ``world``; make ``world`` the active one.

    Args:
        names: models to ensure (default: every registered ``mini_*``).
        world: the mini-world (default :class:`MiniZooWorld`). Becomes the
            world ``build("mini_...")`` uses in this process.
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
    world = world or MiniZooWorld()
    _ACTIVE["world"], _ACTIVE["threads"] = world, threads
    missing = [n for n in names if not mini_weights_path(n, world).is_file()]
    if jobs > 1 and len(missing) > 1:
        _train_in_parallel(missing, world, min(jobs, len(missing)), progress)
    return {n: ensure_mini_model(n, world, threads=threads, progress=progress) for n in names}
