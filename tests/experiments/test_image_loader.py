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


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width x height`` (8-bit grey) with no pixel data: only the size is readable."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path: Path) -> None:
    from erasablemask.experiments.data.image_io import MAX_IMAGE_PIXELS, load_rgb

    _png_header_only(tmp_path / "bomb.png", 60_000, 60_000)  # 3.6 G pixels: 10.8 GB as RGB if decoded
    with pytest.raises(DataSetError, match=r"bomb\.png' is too large \(3,600,000,000 pixels\).*limit of 178,956,970 pixels.*shrink it"):
        load_image_tensor(tmp_path / "bomb.png")
    _png_header_only(tmp_path / "big.png", 12_000, 14_000)  # over our limit, under Pillow's hard one
    with pytest.raises(DataSetError, match=r"big\.png' is 12000x14000 \(168,000,000 pixels\)"):
        load_rgb(tmp_path / "big.png", max_pixels=150_000_000)
    assert MAX_IMAGE_PIXELS == 178_956_970
    Image.new("RGB", (20, 10)).save(tmp_path / "small.png")
    with pytest.raises(DataSetError, match=r"small\.png' is 20x10 \(200 pixels\), more than the loader's limit of 199"):
        load_rgb(tmp_path / "small.png", max_pixels=199)
    assert load_rgb(tmp_path / "small.png", max_pixels=200).size == (20, 10)


def test_a_decompression_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """A real 14000² PNG of zeros (0.5 MB on disk, 588 MB as RGB) is refused without its memory being touched."""
    import struct
    import subprocess
    import sys
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    side = 14_000
    comp, row = zlib.compressobj(9), b"\x00" * (side + 1)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    assert bomb.stat().st_size < 2_000_000
    script = (
        "import resource, sys\n"
        "from erasablemask.experiments.data.image_io import DataSetError, load_image_tensor\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    load_image_tensor(sys.argv[1], 64)\n"
        "except DataSetError as e:\n"
        "    print('refused:', e)\n"
        "print('grew_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(bomb)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "refused: image" in out.stdout and "196,000,000 pixels" in out.stdout
    assert "Traceback" not in out.stderr and "DecompressionBomb" not in out.stdout + out.stderr
    grew_kb = int(out.stdout.split("grew_kb")[1])
    assert grew_kb < 50_000, f"peak RSS grew {grew_kb} kB while refusing the bomb (decoding it takes > 190,000 kB)"


def test_large_photos_are_decoded_at_the_size_they_are_needed(tmp_path: Path) -> None:
    """JPEG: libjpeg's 1/2..1/8 scale; other formats: an integer box reduction; both keep >= 2x the needed side."""
    from erasablemask.experiments.data.image_io import REDUCING_GAP

    rng = np.random.default_rng(1)
    smooth = Image.fromarray(rng.integers(0, 255, (25, 50, 3), dtype=np.uint8)).resize((2000, 1000), Image.BICUBIC)
    smooth.save(tmp_path / "wide.jpg", quality=95)
    smooth.save(tmp_path / "wide.png")
    # Native size for verification with a 112-px model: both sides stay >= 2 x 112 = 224.
    assert REDUCING_GAP == 2
    assert tuple(load_image_tensor(tmp_path / "wide.jpg", min_side=112).shape) == (3, 250, 500)  # 1/4 scale
    assert tuple(load_image_tensor(tmp_path / "wide.png", min_side=112).shape) == (3, 250, 500)  # reduce(4)
    assert tuple(load_image_tensor(tmp_path / "wide.jpg").shape) == (3, 1000, 2000)  # no hint: full resolution
    # With a size the result is the same size and nearly the same pixels as decoding in full.
    full = pil_to_tensor_full(tmp_path / "wide.png", 64)
    for name in ("wide.jpg", "wide.png"):
        reduced = load_image_tensor(tmp_path / name, 64)
        assert reduced.shape == (3, 64, 64)
        assert (reduced - full).abs().mean() < 0.02, name
    # A photo at most twice the needed side is decoded exactly as before (no reduction).
    small = tmp_path / "small.jpg"
    smooth.resize((250, 125)).save(small, quality=95)
    with Image.open(small) as im:
        exact = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.equal(load_image_tensor(small, min_side=60), exact)


def pil_to_tensor_full(path: Path, size: int) -> torch.Tensor:
    """The loader's crop-and-resize from the fully decoded file (the reference for reduced decoding)."""
    with Image.open(path) as im:
        square = center_crop_to_aspect(im.convert("RGB"), size, size).resize((size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(square).copy()).permute(2, 0, 1).float() / 127.5 - 1
