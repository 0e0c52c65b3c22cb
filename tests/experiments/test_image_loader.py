"""The one image loader: training photos, target photos and verification photos load alike.

experiments/data/image_io.load_image_tensor applies the EXIF orientation,
converts to RGB, centre-crops to the requested aspect and resizes (bicubic,
antialiased); the training data sets, ``attack.target`` images and
``fr verify``/calibration all go through it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from erasablemask.experiments.config.loading import load_config
from erasablemask.experiments.data.attributes import ATTRIBUTES
from erasablemask.experiments.data.folders import ImageFolderWithAttributes
from erasablemask.experiments.data.image_io import DataSetError, center_crop_to_aspect, load_image_tensor
from erasablemask.experiments.evaluation.targets import build_targets
from erasablemask.experiments.fr_tools.verification import load_face_image

ORIENTATION = 0x0112
SIZE = 64  # the schema's smallest data.image_size


def _upright(height: int = 96, width: int = 72) -> Image.Image:
    """A portrait test card no rotation or flip maps onto itself: red top third, blue bottom-left, noise."""
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    arr[: height // 3, :, 0] = 250
    arr[-height // 3 :, : width // 2, 2] = 250
    return Image.fromarray(arr)


def _save_rotated_with_exif(upright: Image.Image, path: Path) -> None:
    """Store the pixels rotated 90° counter-clockwise, tagged orientation 6 ("rotate 90° clockwise to show")."""
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = stored.getexif()
    exif[ORIENTATION] = 6
    stored.save(path, exif=exif)  # PNG: lossless, so tensors compare exactly


@pytest.fixture()
def photo_pair(tmp_path: Path) -> tuple[Path, Path]:
    """(the upright photo without EXIF, the same photo stored sideways with an orientation tag)."""
    (tmp_path / "faces").mkdir()
    upright, tagged = tmp_path / "faces" / "upright.png", tmp_path / "faces" / "tagged.png"
    _upright().save(upright)
    _save_rotated_with_exif(_upright(), tagged)
    with Image.open(tagged) as im:
        assert im.size == (96, 72) and im.getexif()[ORIENTATION] == 6  # really stored sideways
    return upright, tagged


def _training(path: Path, size: int) -> torch.Tensor:
    table = pd.DataFrame([{"path": path.name, **{a: 0 for a in ATTRIBUTES}}])
    table.to_csv(path.parent.parent / f"{path.stem}.csv", index=False)
    ds = ImageFolderWithAttributes(path.parent, path.parent.parent / f"{path.stem}.csv", size=size, unlisted="ignore")
    return ds[0]["image"]


def _target(path: Path, size: int) -> torch.Tensor:
    cfg = load_config(None, [f"data.image_size={size}", "attack.target.mode=images",
                             f"attack.target.train_images=['{path}']", f"attack.target.eval_images=['{path}']"])
    targets = build_targets(cfg)
    assert torch.equal(targets.train_images[0], targets.eval_images[0])
    return targets.train_images[0]


def test_exif_rotated_photo_loads_upright_and_identically_for_training_targets_and_verification(photo_pair) -> None:
    upright, tagged = photo_pair
    reference = load_image_tensor(upright, SIZE)
    assert reference.shape == (3, SIZE, SIZE)
    for use, load in (("training", _training), ("target", _target), ("verification", load_face_image)):
        x = load(tagged, SIZE)
        assert torch.equal(x, reference), f"{use}: the EXIF-tagged photo does not load as the upright one"
    # Upright means: red on top (the centre square keeps rows 12..84 of 96), blue bottom-left.
    assert reference[0, :8].mean() > 0.9 and reference[0, -8:].mean() < -0.5
    assert reference[2, -8:, :8].mean() > 0.9 and reference[2, -8:, -8:].mean() < -0.5


def test_native_size_keeps_the_upright_shape_for_verification(photo_pair) -> None:
    upright, tagged = photo_pair
    x = load_face_image(tagged)
    assert x.shape == (3, 96, 72)  # rows x columns as shown, not as stored (72 x 96)
    assert torch.equal(x, load_image_tensor(upright)) and x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0


def test_crop_and_resize_is_centre_crop_then_antialiased_bicubic(photo_pair) -> None:
    upright, _ = photo_pair
    im = _upright()
    square = im.crop((0, 12, 72, 84))  # 96 x 72 portrait: the central 72 x 72
    want = torch.from_numpy(np.asarray(square.resize((32, 32), Image.Resampling.BICUBIC)).copy())
    got = load_image_tensor(upright, 32)
    assert torch.equal(got, want.permute(2, 0, 1).float().div(127.5).sub(1.0))
    # (height, width): centre crop to that aspect, the same resize.
    wide = load_image_tensor(upright, (24, 48))
    band = im.crop((0, 30, 72, 66))  # 72 wide -> 36 rows for a 2:1 aspect
    want = torch.from_numpy(np.asarray(band.resize((48, 24), Image.Resampling.BICUBIC)).copy())
    assert torch.equal(wide, want.permute(2, 0, 1).float().div(127.5).sub(1.0))


@pytest.mark.parametrize(
    ("size", "box"),
    [((10, 10), (3, 0, 13, 10)), ((4, 8), (0, 1, 16, 9)), ((10, 4), (6, 0, 10, 10)), ((10, 16), (0, 0, 16, 10))],
)
def test_center_crop_to_aspect_keeps_the_largest_centred_region(size: tuple[int, int], box: tuple) -> None:
    im = Image.fromarray(np.arange(10 * 16 * 3, dtype=np.uint32).reshape(10, 16, 3).astype(np.uint8))
    out = center_crop_to_aspect(im, *size)
    assert out.size == (box[2] - box[0], box[3] - box[1])
    assert np.array_equal(np.asarray(out), np.asarray(im.crop(box)))


def test_loader_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_text("not an image")
    with pytest.raises(DataSetError, match=r"x\.jpg' cannot be decoded"):
        load_image_tensor(tmp_path / "x.jpg", SIZE)
    Image.new("RGBA", (8, 8)).save(tmp_path / "a.png")
    with pytest.raises(DataSetError, match=r"a\.png' is RGB with alpha \(mode RGBA\), not RGB"):
        load_image_tensor(tmp_path / "a.png", SIZE, "refuse")
    with pytest.raises(ValueError, match=r"size=\(0, 4\) for image '.*a\.png' must be positive"):
        load_image_tensor(tmp_path / "a.png", (0, 4))
    with pytest.raises(FileNotFoundError, match="target image '.*nope.png' not found"):
        _target(tmp_path / "nope.png", SIZE)
