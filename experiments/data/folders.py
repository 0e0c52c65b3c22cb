"""Real face data sets: CelebA-HQ, FFHQ and any image folder with an attribute table.

All three give the mini-world's item dict: ``image`` (3, H, W) float32 in
[-1, 1], ``attrs`` (13,) float32 in {0, 1} (ATTRIBUTES order), ``identity``
(int, -1 when unknown) and ``index`` (row of the full, ordered table).

Construction validates eagerly and cheaply (no decoding): the table parses,
the 13 attribute columns exist with 0/1 or -1/1 values, every row's image
exists and is not empty, and every image in the folders that hold the listed
images has a row. One ``DataSetError`` lists up to five offenders and the
fix. Decoding errors (corrupt, truncated) are raised at load time, naming the
file; ``verify()`` decodes everything up front when wanted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from erasablemask.experiments.data.attributes import ATTRIBUTES
from erasablemask.experiments.data.image_io import IMAGE_EXTENSIONS, DataSetError, ModePolicy, check_mode_policy
from erasablemask.experiments.data.labelled_images import (
    SPLIT_ALIASES,
    AttributeImageDataset,
    MissingPolicy,
    UnlistedPolicy,
    attributes_to_01,
    check_files,
    listing,
    normalise_split,
    posix_path,
    require_dir,
    sequential_split,
)

CELEBA_HQ_SPLIT_SIZES: tuple[int, int, int] = (28000, 500, 1500)  # AttGAN-PyTorch data.py: [:28000], [28000:28500], [28500:]
PATH_COLUMNS: tuple[str, ...] = ("path", "filename", "file", "image", "image_id", "name")


def read_attribute_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV or parquet attribute table (by extension)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"attribute table '{path}' does not exist; pass the CSV or parquet file with the labels")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    raise DataSetError(f"attribute table '{path}' has extension '{suffix}'; use a .csv or .parquet file")


class ImageFolderWithAttributes(AttributeImageDataset):
    """A folder of images plus a CSV/parquet table of attributes.

    The table needs a path column (``path_column``, or the first of
    ``PATH_COLUMNS`` present) with paths relative to ``root`` and the 13
    ATTRIBUTES columns coded 0/1 or -1/1. Optional columns: ``identity``
    (int) and ``split`` ('train'/'val'/'test'; 'valid' is accepted).

    Args:
        root: image folder.
        attr_table: .csv or .parquet file.
        split: 'train', 'val', 'test' or None/'all'. Uses the table's split
            column, else ``split_sizes`` cut in table order.
        size: output side in pixels (centre square crop + resize); None keeps the size.
        mode_policy: 'convert' or 'refuse' non-RGB images.
        missing: rows without images: 'error' or 'drop'.
        unlisted: images without rows (in the folders of listed images): 'error' or 'ignore'.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        attr_table: str | os.PathLike,
        split: str | None = None,
        size: int | None = 256,
        mode_policy: ModePolicy = "convert",
        *,
        path_column: str | None = None,
        identity_column: str = "identity",
        split_column: str = "split",
        split_sizes: Sequence[int] | None = None,
        missing: MissingPolicy = "error",
        unlisted: UnlistedPolicy = "error",
    ) -> None:
        root_path = require_dir(root, "image")
        check_mode_policy(mode_policy)
        table = read_attribute_table(attr_table)
        source = f"'{attr_table}'"
        paths = self._paths_from_table(root_path, table, source, path_column)
        keep = check_files(root_path, paths, source, missing, unlisted)
        self._init_from_table(root_path, table, paths, keep, source, split, size, mode_policy, identity_column, split_column, split_sizes)

    @staticmethod
    def _path_column(table: pd.DataFrame, source: str, path_column: str | None) -> str:
        if path_column is not None:
            if path_column not in table.columns:
                raise DataSetError(f"{source} has no column '{path_column}'; its columns are {list(table.columns)}")
            return path_column
        for name in PATH_COLUMNS:
            if name in table.columns:
                return name
        raise DataSetError(f"{source} has no image path column (tried {PATH_COLUMNS}); pass path_column=")

    def _paths_from_table(self, root: Path, table: pd.DataFrame, source: str, path_column: str | None) -> list[str]:
        col = self._path_column(table, source, path_column)
        paths = [posix_path(p) for p in table[col]]
        dup = table[col][table[col].duplicated()].astype(str).tolist()
        if dup:
            raise DataSetError(f"{source} lists {len(dup)} image(s) twice: {listing(dup)}; keep one row per image")
        return paths

    def _init_from_table(
        self,
        root: Path,
        table: pd.DataFrame,
        paths: list[str],
        keep: np.ndarray,
        source: str,
        split: str | None,
        size: int | None,
        mode_policy: ModePolicy,
        identity_column: str,
        split_column: str,
        split_sizes: Sequence[int] | None,
    ) -> None:
        absent = [a for a in ATTRIBUTES if a not in table.columns]
        if absent:
            lower = {c.lower(): c for c in map(str, table.columns)}
            hints = [f"{lower[a.lower()]}->{a}" for a in absent if a.lower() in lower]
            raise DataSetError(
                f"{source} lacks attribute column(s) {absent}; name the columns exactly as ATTRIBUTES"
                + (f" (rename {', '.join(hints)})" if hints else "")
            )
        attrs = attributes_to_01(table[list(ATTRIBUTES)].to_numpy(), source, paths)
        ids = table[identity_column].to_numpy(dtype=np.int64) if identity_column in table.columns else np.full(len(table), -1)
        want = normalise_split(split)
        if want is None:
            selected = np.ones(len(table), dtype=bool)
        elif split_column in table.columns:
            labels = table[split_column].astype(str).map(lambda s: SPLIT_ALIASES.get(s, s))
            unknown = sorted(set(labels) - {"train", "val", "test"})
            if unknown:
                raise DataSetError(f"{source} column '{split_column}' has values {unknown}; use train/val/test")
            selected = (labels == want).to_numpy()
        elif split_sizes is not None:
            selected = np.zeros(len(table), dtype=bool)
            selected[sequential_split(len(table), want, split_sizes, source)] = True
        else:
            raise DataSetError(
                f"{source} has no '{split_column}' column, so split={split!r} is undefined; add the column "
                f"(train/val/test), pass split_sizes=(n_train, n_val, n_test), or use split=None"
            )
        rows = np.where(selected & keep)[0]
        super().__init__(root, paths, attrs, ids, rows, size, mode_policy)


class FFHQ(ImageFolderWithAttributes):
    """FFHQ images (``00000.png`` ... flat or in ``00000/``, ``01000/`` sub-folders) plus a user attribute table.

    The table's path column may hold paths relative to ``root``, file names,
    or image numbers (``123`` or ``'00123'``); names and numbers are found
    anywhere under ``root``. FFHQ has no official split: use a ``split``
    column, ``split_sizes`` (table order), or ``split=None``. Other arguments
    as ``ImageFolderWithAttributes``.
    """

    def _paths_from_table(self, root: Path, table: pd.DataFrame, source: str, path_column: str | None) -> list[str]:
        col = self._path_column(table, source, path_column)
        found: dict[str, list[str]] = {}
        for path in root.rglob("*"):
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                rel = path.relative_to(root).as_posix()
                found.setdefault(path.stem, []).append(rel)
        paths = []
        for value in table[col]:
            text = posix_path(value)
            if "/" in text:
                paths.append(text)
                continue
            stem = Path(text).stem
            if stem.isdigit():
                stem = f"{int(stem):05d}"
            hits = found.get(stem, [])
            if len(hits) > 1:
                raise DataSetError(f"{source}: image '{text}' matches several files under '{root}': {listing(hits)}; give paths instead")
            paths.append(hits[0] if hits else (text if Path(text).suffix else f"{stem}.png"))
        dup = pd.Series(paths)[pd.Series(paths).duplicated()].tolist()
        if dup:
            raise DataSetError(f"{source} lists {len(dup)} image(s) twice: {listing(dup)}; keep one row per image")
        return paths


def read_celebamask_hq_annotation(attr_file: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Parse ``CelebAMask-HQ-attribute-anno.txt``.

    Format: line 1 the image count; line 2 the 40 attribute names; then
    ``filename v1 .. v40`` with values -1/1.

    Returns:
        File names in numeric order of their stems (``0.jpg``, ``1.jpg``, ...
        as AttGAN orders CelebA-HQ; file order when stems are not numbers)
        and their (N, 13) uint8 labels in {0, 1}, ATTRIBUTES order.
    """
    path = Path(attr_file)
    if not path.is_file():
        raise FileNotFoundError(f"attribute file '{path}' does not exist; pass CelebAMask-HQ-attribute-anno.txt")
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise DataSetError(
            f"'{path}' line 1 should be the image count (CelebAMask-HQ-attribute-anno.txt format); "
            f"got {lines[0][:40]!r}" if lines else f"'{path}' is empty; re-download CelebAMask-HQ-attribute-anno.txt"
        )
    count, names = int(lines[0].strip()), lines[1].split()
    absent = [a for a in ATTRIBUTES if a not in names]
    if absent:
        raise DataSetError(f"'{path}' line 2 lacks attribute name(s) {absent}; is this the CelebAMask-HQ attribute file?")
    cols = [names.index(a) for a in ATTRIBUTES]
    files, values = [], []
    for lineno, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise DataSetError(f"'{path}' line {lineno} has {len(parts) - 1} values, expected {len(names)}; the file is damaged")
        files.append(parts[0])
        try:
            values.append([int(parts[1 + c]) for c in cols])
        except ValueError:
            raise DataSetError(f"'{path}' line {lineno} has non-integer attribute values; the file is damaged") from None
    if len(files) != count:
        raise DataSetError(f"'{path}' says {count} images but lists {len(files)}; the file is truncated: re-download it")
    arr = np.asarray(values, dtype=np.int64).reshape(-1, len(ATTRIBUTES))
    if not np.isin(arr, (-1, 1)).all():
        bad = [files[i] for i in np.where(~np.isin(arr, (-1, 1)).all(axis=1))[0]]
        raise DataSetError(f"'{path}': attribute values must be -1 or 1; bad rows {listing(bad)}")
    stems = [Path(f).stem for f in files]
    order = np.argsort([int(s) for s in stems], kind="stable") if all(s.isdigit() for s in stems) else np.arange(len(files))
    return [files[i] for i in order], ((arr[order] + 1) // 2).astype(np.uint8)


class CelebAHQ(AttributeImageDataset):
    """CelebA-HQ images with CelebAMask-HQ attribute labels, split as AttGAN does.

    AttGAN-PyTorch orders CelebA-HQ as ``0.jpg`` ... ``29999.jpg`` and takes
    the first 28000 for training, the next 500 for validation and the last
    1500 for testing (``CELEBA_HQ_SPLIT_SIZES``).

    Args:
        root: folder with the images (``CelebA-HQ-img``).
        attr_file: ``CelebAMask-HQ-attribute-anno.txt``.
        split: 'train', 'val' ('valid'), 'test' or 'all'.
        size: output side (the paper uses 256); None keeps 1024 (or the file's size).
        mode_policy: 'convert' or 'refuse' non-RGB images.
        split_sizes: (train, val, test) counts; must sum to the annotated images.
        missing: rows without images: 'error' or 'drop' (split positions stay as annotated).
        unlisted: images in ``root`` without rows: 'error' or 'ignore'.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        attr_file: str | os.PathLike,
        split: str = "train",
        size: int | None = 256,
        mode_policy: ModePolicy = "convert",
        *,
        split_sizes: Sequence[int] = CELEBA_HQ_SPLIT_SIZES,
        missing: MissingPolicy = "error",
        unlisted: UnlistedPolicy = "error",
    ) -> None:
        root_path = require_dir(root, "CelebA-HQ image")
        check_mode_policy(mode_policy)
        files, attrs = read_celebamask_hq_annotation(attr_file)
        sl = sequential_split(len(files), normalise_split(split), split_sizes, f"'{attr_file}'")
        keep = check_files(root_path, files, f"'{attr_file}'", missing, unlisted)
        rows = [r for r in range(sl.start, sl.stop) if keep[r]]
        super().__init__(root_path, files, attrs, np.full(len(files), -1), rows, size, mode_policy)
