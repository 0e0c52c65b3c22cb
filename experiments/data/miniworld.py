"""The synthetic mini-world: seeded face identities with the 13 AttGAN attributes.

No face data set can be downloaded on the project's machines, so the default
experiment runs on faces rendered from a seed (see ``miniworld_params`` for
the identity/attribute model and ``miniworld_render`` for the drawing).
Everything is a pure function of ``seed``: identity ``k`` and its image ``j``
are drawn from their own random streams (``[seed, 1, k]`` and
``[seed, 2, k, j]``), so they do not depend on how many identities or images
the world has, and the same seed gives the same bytes. Images are rendered
lazily and cached in memory as uint8.

Numbers measured on this world are mini-world numbers, never the paper's.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from erasablemask.experiments.data.attributes import ATTRIBUTES
from erasablemask.experiments.data.miniworld_params import IdentityParams, ImageParams, sample_identity, sample_image
from erasablemask.experiments.data.miniworld_render import render_face, skin_texture_field
from erasablemask.experiments.resources import check_disk, check_memory
from erasablemask.models.atomic_files import atomic_path

SPLITS: tuple[str, ...] = ("train", "val", "test")


def _uint8_to_tensor(arr: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(arr).permute(2, 0, 1).float().div(127.5).sub(1.0)


class MiniWorld:
    """A deterministic synthetic face world.

    Args:
        seed: world seed (non-negative int); same seed, same images byte for byte.
        n_identities: number of identities.
        images_per_identity: images rendered per identity.
        image_size: output side in pixels (square RGB images).
        val_fraction: share of each identity's images in the 'val' split.
        test_fraction: share of each identity's images in the 'test' split.
        supersample: anti-aliasing factor (drawing canvas = size * supersample);
            default 4 up to 128 px, 2 above.
        skin_texture: standard deviation, in 0-255 levels, of each identity's
            fine skin texture (``miniworld_render.skin_texture_field``); 0
            (default): none, the world renders as it did before the option.
        skin_texture_scale: the texture's correlation length in face-coordinate
            units (0.025 ≈ 1.6 px at 64 px).

    Splits are assigned per image within each identity (at least one val and
    one test image per identity when the fraction is positive), so every
    identity appears in every split.
    """

    def __init__(
        self,
        seed: int = 0,
        n_identities: int = 48,
        images_per_identity: int = 24,
        image_size: int = 64,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        supersample: int | None = None,
        skin_texture: float = 0.0,
        skin_texture_scale: float = 0.025,
    ) -> None:
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed={seed!r} must be a non-negative int")
        if n_identities < 1 or images_per_identity < 1:
            raise ValueError(f"n_identities={n_identities} and images_per_identity={images_per_identity} must be >= 1")
        if image_size < 16:
            raise ValueError(f"image_size={image_size} is too small to draw a face; use >= 16 (default 64)")
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1):
            raise ValueError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1)")
        if skin_texture < 0 or skin_texture_scale <= 0:
            raise ValueError(
                f"skin_texture={skin_texture} must be >= 0 (0-255 levels; 0: none) and skin_texture_scale="
                f"{skin_texture_scale} > 0 (face-coordinate units, 0.025 ~ 1.6 px at 64 px)"
            )
        self.skin_texture = float(skin_texture)
        self.skin_texture_scale = float(skin_texture_scale)
        self._textures: dict[int, np.ndarray] = {}
        self.seed = int(seed)
        self.n_identities = int(n_identities)
        self.images_per_identity = int(images_per_identity)
        self.image_size = int(image_size)
        self.supersample = int(supersample) if supersample else (4 if image_size <= 128 else 2)
        n_val = self._split_count(val_fraction)
        n_test = self._split_count(test_fraction)
        if n_val + n_test >= self.images_per_identity:
            raise ValueError(
                f"val_fraction={val_fraction} and test_fraction={test_fraction} leave no training image of "
                f"{self.images_per_identity} per identity; lower them or raise images_per_identity"
            )
        check_memory(
            self.memory_estimate(),
            f"a mini-world of {self.n_identities} identities x {self.images_per_identity} images at "
            f"{self.image_size}px",
            "lower the identities, the images per identity or the image size (--identities, --per-identity, --size)",
        )
        self.identities: list[IdentityParams] = [
            sample_identity(np.random.default_rng([self.seed, 1, k])) for k in range(self.n_identities)
        ]
        self._params: list[ImageParams] = []
        rows = []
        for k, ident in enumerate(self.identities):
            order = np.random.default_rng([self.seed, 3, k]).permutation(self.images_per_identity)
            split_of = np.array(["train"] * self.images_per_identity, dtype=object)
            split_of[order[:n_val]] = "val"
            split_of[order[n_val : n_val + n_test]] = "test"
            for j in range(self.images_per_identity):
                p = sample_image(np.random.default_rng([self.seed, 2, k, j]), ident)
                self._params.append(p)
                rows.append([k * self.images_per_identity + j, k, *p.attrs.tolist(), split_of[j]])
        table = pd.DataFrame(rows, columns=["index", "identity", *ATTRIBUTES, "split"])
        self.table: pd.DataFrame = table.astype({"index": "int64", "identity": "int64", **{a: "int64" for a in ATTRIBUTES}})
        self._cache: dict[int, np.ndarray] = {}

    def _split_count(self, fraction: float) -> int:
        return 0 if fraction == 0 else max(1, int(round(fraction * self.images_per_identity)))

    def __len__(self) -> int:
        return self.n_identities * self.images_per_identity

    def memory_estimate(self) -> int:
        """Peak bytes of a world whose images are all rendered (they stay cached), checked when it is made.

        Per image: its cached RGB array (3 x size² bytes) and its parameters and table row
        (measured 1.7 kB; 2 kB counted); plus one render's canvas, ``size x supersample`` square,
        at 48 bytes per canvas pixel (measured 37: PIL's canvas and numpy float layers).
        """
        n = self.n_identities * self.images_per_identity
        return n * (3 * self.image_size**2 + 2048) + 48 * (self.image_size * self.supersample) ** 2

    def _check_index(self, i: int) -> int:
        if not 0 <= int(i) < len(self):
            raise IndexError(f"image index {i} out of range for a world of {len(self)} images")
        return int(i)

    def image_uint8(self, i: int) -> np.ndarray:
        """Image ``i`` as an (H, W, 3) uint8 RGB array (rendered once, then cached)."""
        i = self._check_index(i)
        if i not in self._cache:
            self._cache[i] = self._render(i, self._params[i])
        return self._cache[i]

    def _render(self, i: int, p: ImageParams) -> np.ndarray:
        k = i // self.images_per_identity
        texture = None
        if self.skin_texture > 0:
            if k not in self._textures:
                self._textures[k] = skin_texture_field(self.seed, k, self.skin_texture_scale)
            texture = self._textures[k]
        return render_face(self.identities[k], p, self.image_size, self.supersample,
                           texture=texture, texture_amplitude=self.skin_texture)

    def render_edit(self, i: int, attrs01: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
        """Image ``i`` re-rendered with other attribute labels (same identity, pose, light, background).

        This is the ground-truth attribute edit of image ``i`` (not cached).
        Labels are drawn as given: resolve AttGAN's conflicts first if needed
        (``attributes.resolve_conflicts``); Male only changes hair/brows here,
        the face geometry belongs to the identity.

        Args:
            i: image index.
            attrs01: (13,) labels in {0, 1}, ATTRIBUTES order.

        Returns:
            (H, W, 3) uint8 RGB.
        """
        i = self._check_index(i)
        att = np.asarray(torch.as_tensor(attrs01).detach().cpu().numpy()).reshape(-1)
        if att.shape != (len(ATTRIBUTES),) or not np.isin(att, (0, 1)).all():
            raise ValueError(f"attrs01 must be {len(ATTRIBUTES)} labels in {{0, 1}} (ATTRIBUTES order); got {att.tolist()}")
        p = dataclasses.replace(self._params[i], attrs=att.astype(np.uint8))
        return self._render(i, p)

    def image(self, i: int) -> torch.Tensor:
        """Image ``i`` as a (3, H, W) float32 tensor in [-1, 1]."""
        return _uint8_to_tensor(self.image_uint8(i))

    def images(self, indices: Sequence[int]) -> torch.Tensor:
        """(N, 3, H, W) float32 in [-1, 1] for the given image indices."""
        if len(indices) == 0:
            return torch.empty(0, 3, self.image_size, self.image_size)
        return torch.stack([self.image(int(i)) for i in indices])

    def attributes(self, indices: Sequence[int] | None = None) -> torch.Tensor:
        """(N, 13) float32 labels in {0, 1} (all images when ``indices`` is None)."""
        values = self.table[list(ATTRIBUTES)].to_numpy(dtype=np.float32)
        if indices is not None:
            values = values[np.asarray(indices, dtype=np.int64)]
        return torch.from_numpy(np.ascontiguousarray(values))

    def indices(self, split: str | None = None, identities: Sequence[int] | None = None) -> list[int]:
        """Image indices in ``split`` (None: all) whose identity is in ``identities`` (None: all)."""
        mask = np.ones(len(self.table), dtype=bool)
        if split is not None:
            if split not in SPLITS:
                raise ValueError(f"split {split!r} is unknown; use one of {SPLITS} or None")
            mask &= (self.table["split"] == split).to_numpy()
        if identities is not None:
            ids = [int(k) for k in identities]
            bad = [k for k in ids if not 0 <= k < self.n_identities]
            if bad:
                raise ValueError(f"identities {bad[:5]} not in this world (0..{self.n_identities - 1})")
            mask &= self.table["identity"].isin(ids).to_numpy()
        return self.table["index"].to_numpy()[mask].tolist()

    def dataset(self, split: str | None = None, identities: Sequence[int] | None = None) -> "MiniWorldDataset":
        """A torch Dataset over the selected images (see ``MiniWorldDataset``)."""
        return MiniWorldDataset(self, self.indices(split, identities))

    def render_all(self, progress: bool = False) -> None:
        """Render (and cache) every image; ``progress`` shows a tqdm bar."""
        it = range(len(self))
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="rendering mini-world", unit="img")
        for i in it:
            self.image_uint8(i)

    def grid(self, n_identities: int = 8, per_identity: int = 8) -> np.ndarray:
        """(rows*H, cols*W, 3) uint8 sample sheet: one row per identity, its first images."""
        rows = []
        for k in range(min(n_identities, self.n_identities)):
            base = k * self.images_per_identity
            cells = [self.image_uint8(base + j) for j in range(min(per_identity, self.images_per_identity))]
            rows.append(np.concatenate(cells, axis=1))
        return np.concatenate(rows, axis=0)

    def write(self, out_dir: str | os.PathLike, progress: bool = True) -> Path:
        """Write ``images/<identity>/<index>.png``, ``table.parquet`` and ``grid.png``.

        Every file is written atomically (temporary name, then ``os.replace``);
        the table is written last, so its presence marks a complete world.
        The table has columns path (relative to ``out_dir``), index, identity,
        the 13 attributes and split.

        Returns:
            The output folder.
        """
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"--out {out} is a file; pass a folder path")
        # PNGs of these drawings measured 1.5-1.8 bytes per pixel; 3 (raw RGB) is counted.
        check_disk(3 * self.image_size**2 * len(self), out, f"writing {len(self)} images at {self.image_size}px",
                   "free some space, write elsewhere (--out) or make a smaller world")
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        try:
            return self._write(out, progress)
        except BaseException:
            if created:  # a folder this call made holds no complete world: leave nothing behind
                shutil.rmtree(out, ignore_errors=True)
            raise

    def _write(self, out: Path, progress: bool) -> Path:
        table = self.table.copy()
        table.insert(0, "path", [f"images/{k}/{i}.png" for i, k in zip(table["index"], table["identity"])])
        it = range(len(self))
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"writing {out}", unit="img")
        for i in it:
            img = Image.fromarray(self.image_uint8(i))
            with atomic_path(out / table["path"].iat[i]) as tmp:
                img.save(tmp, format="PNG")
        grid = Image.fromarray(self.grid())
        with atomic_path(out / "grid.png") as tmp:
            grid.save(tmp, format="PNG")
        with atomic_path(out / "table.parquet") as tmp:
            table.to_parquet(tmp, index=False)
        return out


class MiniWorldDataset(Dataset):
    """Torch Dataset over selected mini-world images.

    Items are dicts: ``image`` (3, H, W) float32 in [-1, 1], ``attrs`` (13,)
    float32 in {0, 1} (ATTRIBUTES order), ``identity`` int, ``index`` int.
    """

    def __init__(self, world: MiniWorld, indices: Sequence[int]) -> None:
        self.world = world
        self.indices = [int(i) for i in indices]
        self._attrs = world.attributes(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, n: int) -> dict:
        i = self.indices[n]
        return {
            "image": self.world.image(i),
            "attrs": self._attrs[n].clone(),
            "identity": i // self.world.images_per_identity,
            "index": i,
        }
