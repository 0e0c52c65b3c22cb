"""Images on disk with 13 attribute labels: validation and the base Dataset of the real-data loaders.

Validation is eager and cheap (no decoding): every listed image exists and is
not empty, and every image in the folders that hold listed images has a row.
Errors (``DataSetError``) list up to five offenders and say how to fix them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from erasablemask.experiments.data.attributes import ATTRIBUTES
from erasablemask.experiments.data.image_io import (
    IMAGE_EXTENSIONS,
    DataSetError,
    ModePolicy,
    check_mode_policy,
    load_image_tensor,
)

MissingPolicy = Literal["error", "drop"]
UnlistedPolicy = Literal["error", "ignore"]
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def listing(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(f"'{s}'" for s in items[:limit])
    return shown + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


def normalise_split(split: str | None) -> str | None:
    if split is None or split == "all":
        return None
    if split not in SPLIT_ALIASES:
        raise ValueError(f"split={split!r} is unknown; use 'train', 'val', 'test' or 'all'")
    return SPLIT_ALIASES[split]


def sequential_split(n: int, split: str | None, split_sizes: Sequence[int], source: str) -> slice:
    """Rows of ``split`` when an ordered table of ``n`` rows is cut into train/val/test sizes (AttGAN's way)."""
    n_train, n_val, n_test = (int(v) for v in split_sizes)
    if n != n_train + n_val + n_test:
        raise DataSetError(
            f"{source} lists {n} images but split_sizes={tuple(split_sizes)} sums to {n_train + n_val + n_test}; "
            f"pass split_sizes that sum to {n} (e.g. for a subset) or use the complete annotation"
        )
    return {
        None: slice(0, n),
        "train": slice(0, n_train),
        "val": slice(n_train, n_train + n_val),
        "test": slice(n_train + n_val, n),
    }[split]


def attributes_to_01(values: np.ndarray, source: str, rows: Sequence[str]) -> np.ndarray:
    """(N, 13) labels coded 0/1 or -1/1 (whole table one way) -> uint8 0/1; errors name bad rows."""
    arr = np.asarray(values, dtype=np.float64)
    bad = ~np.isin(arr, (-1, 0, 1))
    if bad.any():
        rows_bad = [rows[i] for i in np.where(bad.any(axis=1))[0]]
        raise DataSetError(f"{source}: attribute values must be 0/1 or -1/1; bad values in rows {listing(rows_bad)}")
    has_neg, has_zero = (arr == -1).any(), (arr == 0).any()
    if has_neg and has_zero:
        raise DataSetError(f"{source}: attribute columns mix -1, 0 and 1; code the whole table as 0/1 or as -1/1")
    return ((arr + 1) / 2 if has_neg else arr).astype(np.uint8)


def posix_path(value: object) -> str:
    """A table path as a POSIX path relative to the root ('a\\b.png', './a/b.png' -> 'a/b.png')."""
    text = str(value).replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def _scan_images(folder: Path) -> set[str]:
    with os.scandir(folder) as it:
        return {e.name for e in it if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)}


def check_files(
    root: Path, rel_paths: Sequence[str], source: str, missing: MissingPolicy, unlisted: UnlistedPolicy
) -> np.ndarray:
    """Validate listed images against the folders that hold them.

    Args:
        root: folder the relative paths start from.
        rel_paths: POSIX paths relative to ``root``.
        source: the table's name for messages.
        missing: 'error' on rows without images, or 'drop' them.
        unlisted: 'error' on images without rows (in the same folders), or 'ignore'.

    Returns:
        (N,) bool mask of rows kept.
    """
    by_dir: dict[str, set[str]] = {}
    for rel in rel_paths:
        parent, _, name = rel.rpartition("/")
        by_dir.setdefault(parent, set()).add(name)
    present: dict[str, set[str]] = {}
    for parent in by_dir:
        folder = root / parent if parent else root
        present[parent] = _scan_images(folder) if folder.is_dir() else set()
    keep = np.array([rel.rpartition("/")[2] in present[rel.rpartition("/")[0]] for rel in rel_paths], dtype=bool)
    lost = [rel for rel, k in zip(rel_paths, keep) if not k]
    if lost and missing == "error":
        raise DataSetError(
            f"{len(lost)} image(s) listed in {source} are missing under '{root}': {listing(lost)}. Fix: put the "
            f"images there, point root at the folder that holds them, or pass missing='drop' to skip these rows"
        )
    empty = [rel for rel, k in zip(rel_paths, keep) if k and (root / rel).stat().st_size == 0]
    if empty:
        raise DataSetError(
            f"{len(empty)} image file(s) under '{root}' are empty (0 bytes): {listing(empty)}. "
            f"Fix: re-download them, or remove the files and their rows in {source}"
        )
    if unlisted == "error":
        extra = sorted(f"{p}/{n}" if p else n for p, names in present.items() for n in names - by_dir[p])
        if extra:
            raise DataSetError(
                f"{len(extra)} image(s) under '{root}' have no row in {source}: {listing(extra)}. Fix: add their "
                f"rows, move the files out of the data folder, or pass unlisted='ignore'"
            )
    return keep


class AttributeImageDataset(Dataset):
    """Images on disk with 13 attribute labels (base of the real-data loaders).

    Args:
        root: folder the paths are relative to.
        paths: (N,) POSIX paths relative to ``root`` (the full ordered table).
        attrs01: (N, 13) uint8 labels in {0, 1}.
        identities: (N,) ints, -1 when unknown.
        rows: the selected row numbers (this split).
        size: output side (centre square crop, bicubic resize); None keeps the file's size.
        mode_policy: 'convert' non-RGB images to RGB or 'refuse' them.
    """

    def __init__(
        self,
        root: Path,
        paths: Sequence[str],
        attrs01: np.ndarray,
        identities: np.ndarray,
        rows: Sequence[int],
        size: int | None,
        mode_policy: ModePolicy,
    ) -> None:
        check_mode_policy(mode_policy)
        if size is not None and size < 1:
            raise ValueError(f"size={size} must be a positive number of pixels or None")
        self.root = root
        self.size = size
        self.mode_policy: ModePolicy = mode_policy
        self.rows = [int(r) for r in rows]
        self.paths = [paths[r] for r in self.rows]
        self._attrs = torch.from_numpy(np.asarray(attrs01, dtype=np.float32)[self.rows].reshape(-1, len(ATTRIBUTES)))
        self._ids = np.asarray(identities, dtype=np.int64)[self.rows]

    @property
    def table(self) -> pd.DataFrame:
        """This split as a table: path, index, identity and the 13 attributes (0/1 ints)."""
        df = pd.DataFrame({"path": self.paths, "index": self.rows, "identity": self._ids})
        for j, name in enumerate(ATTRIBUTES):
            df[name] = self._attrs[:, j].to(torch.int64).numpy()
        return df

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, n: int) -> dict:
        return {
            "image": load_image_tensor(self.root / self.paths[n], self.size, self.mode_policy),
            "attrs": self._attrs[n].clone(),
            "identity": int(self._ids[n]),
            "index": self.rows[n],
        }

    def verify(self) -> None:
        """Decode every image now; raise one DataSetError listing every file that fails."""
        problems = []
        for n in range(len(self)):
            try:
                load_image_tensor(self.root / self.paths[n], None, self.mode_policy)
            except DataSetError as e:
                problems.append(str(e))
        if problems:
            raise DataSetError(f"{len(problems)} of {len(self)} images failed to load:\n" + "\n".join(problems[:20]))


def require_dir(root: str | os.PathLike, what: str) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder '{path}' does not exist or is not a folder; pass the folder that holds the images")
    return path
