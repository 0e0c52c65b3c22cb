"""Real-data loaders (CelebA-HQ, FFHQ, image folder) on small fixture folders made here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from erasablemask.experiments.data.attributes import ATTRIBUTES
from erasablemask.experiments.data.folders import FFHQ, CelebAHQ, ImageFolderWithAttributes
from erasablemask.experiments.data.image_io import DataSetError, load_image_tensor
from erasablemask.experiments.data.miniworld import MiniWorld

CELEBA_40 = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()


def _labels(k: int) -> np.ndarray:
    """Deterministic (13,) 0/1 labels for image k."""
    return np.array([(k >> (j % 5)) & 1 ^ (j % 2) for j in range(13)], dtype=np.int64)


def _solid(path, colour, size=(40, 40), mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, format=fmt)


def _celeba(tmp_path, n=12, order=None):
    img_dir = tmp_path / "CelebA-HQ-img"
    rows = []
    for k in order if order is not None else range(n):
        _solid(img_dir / f"{k}.jpg", (10 * k, 100, 200))
        full = np.full(40, -1)
        for j, name in enumerate(ATTRIBUTES):
            full[CELEBA_40.index(name)] = 1 if _labels(k)[j] else -1
        rows.append(f"{k}.jpg  " + " ".join(map(str, full)))
    anno = tmp_path / "CelebAMask-HQ-attribute-anno.txt"
    anno.write_text(f"{len(rows)}\n" + " ".join(CELEBA_40) + "\n" + "\n".join(rows) + "\n")
    return img_dir, anno


def test_celebahq_orders_numerically_splits_like_attgan_and_selects_13_attributes(tmp_path):
    order = [3, 11, 0, 10, 1, 2, 9, 4, 8, 5, 7, 6]  # file order shuffled; 10, 11 must sort after 9
    img_dir, anno = _celeba(tmp_path, order=order)
    sizes = (8, 2, 2)
    train = CelebAHQ(img_dir, anno, "train", size=32, split_sizes=sizes)
    val = CelebAHQ(img_dir, anno, "valid", size=32, split_sizes=sizes)
    test = CelebAHQ(img_dir, anno, "test", size=32, split_sizes=sizes)
    assert train.paths == [f"{k}.jpg" for k in range(8)]
    assert val.paths == ["8.jpg", "9.jpg"] and test.paths == ["10.jpg", "11.jpg"]
    item = test[1]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert -1 <= item["image"].min() and item["image"].max() <= 1
    assert torch.equal(item["attrs"], torch.tensor(_labels(11), dtype=torch.float32))
    assert item["identity"] == -1 and item["index"] == 11
    # the colour survives: red channel 10*11 = 110 -> 110/127.5 - 1
    assert abs(item["image"][0].mean().item() - (110 / 127.5 - 1)) < 0.05
    with pytest.raises(DataSetError, match=r"lists 12 images but split_sizes=\(28000, 500, 1500\)"):
        CelebAHQ(img_dir, anno, "train")


def test_celebahq_annotation_errors_name_file_and_line(tmp_path):
    img_dir, anno = _celeba(tmp_path, n=4)
    lines = anno.read_text().splitlines()
    anno.write_text("\n".join(["5", *lines[1:]]) + "\n")
    with pytest.raises(DataSetError, match="says 5 images but lists 4; the file is truncated"):
        CelebAHQ(img_dir, anno, "all", split_sizes=(2, 1, 1))
    anno.write_text("\n".join([lines[0], lines[1], lines[2], lines[3] + " 1", *lines[4:]]) + "\n")
    with pytest.raises(DataSetError, match="line 4 has 41 values, expected 40"):
        CelebAHQ(img_dir, anno, "all", split_sizes=(2, 1, 1))
    with pytest.raises(FileNotFoundError, match="CelebAMask-HQ-attribute-anno.txt"):
        CelebAHQ(img_dir, tmp_path / "nope.txt", "all")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CelebAHQ(tmp_path / "no_images", anno, "all")


def test_rows_without_images_and_images_without_rows_are_listed(tmp_path):
    img_dir, anno = _celeba(tmp_path, n=8)
    for k in (2, 5):
        (img_dir / f"{k}.jpg").unlink()
    with pytest.raises(DataSetError, match=r"2 image\(s\) listed in .* are missing .*'2.jpg', '5.jpg'.*missing='drop'"):
        CelebAHQ(img_dir, anno, "all", split_sizes=(4, 2, 2))
    kept = CelebAHQ(img_dir, anno, "train", split_sizes=(4, 2, 2), missing="drop")
    assert kept.paths == ["0.jpg", "1.jpg", "3.jpg"]
    _solid(img_dir / "2.jpg", (0, 0, 0))
    _solid(img_dir / "5.jpg", (0, 0, 0))
    for name in ("extra_a.png", "extra_b.jpg"):
        _solid(img_dir / name, (1, 2, 3))
    with pytest.raises(DataSetError, match=r"2 image\(s\) under .* have no row .*'extra_a.png', 'extra_b.jpg'.*unlisted='ignore'"):
        CelebAHQ(img_dir, anno, "all", split_sizes=(4, 2, 2))
    assert len(CelebAHQ(img_dir, anno, "all", split_sizes=(4, 2, 2), unlisted="ignore")) == 8
    (img_dir / "3.jpg").write_bytes(b"")
    (img_dir / "extra_a.png").unlink()
    (img_dir / "extra_b.jpg").unlink()
    with pytest.raises(DataSetError, match=r"empty \(0 bytes\): '3.jpg'"):
        CelebAHQ(img_dir, anno, "all", split_sizes=(4, 2, 2))


def test_corrupt_and_truncated_images_fail_at_load_naming_the_file(tmp_path):
    img_dir, anno = _celeba(tmp_path, n=4)
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    big.save(img_dir / "1.jpg", quality=95)
    data = (img_dir / "1.jpg").read_bytes()
    (img_dir / "1.jpg").write_bytes(data[: len(data) // 2])  # truncated
    (img_dir / "2.jpg").write_bytes(b"this is not an image at all")
    ds = CelebAHQ(img_dir, anno, "all", split_sizes=(2, 1, 1))  # construction does not decode
    assert ds[0]["image"].shape == (3, 256, 256)
    with pytest.raises(DataSetError, match=r"1\.jpg' cannot be decoded .*truncated"):
        ds[1]
    with pytest.raises(DataSetError, match=r"2\.jpg' cannot be decoded"):
        ds[2]
    with pytest.raises(DataSetError, match=r"2 of 4 images failed to load"):
        ds.verify()


@pytest.mark.parametrize(
    ("mode", "colour", "expected"),
    [
        ("RGBA", (255, 0, 0, 0), (255, 255, 255)),  # transparent -> white
        ("RGBA", (255, 0, 0, 255), (255, 0, 0)),
        ("LA", (0, 128), (128, 128, 128)),  # half transparent black on white
        ("L", 77, (77, 77, 77)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
        ("I;16", 65535, (255, 255, 255)),
    ],
)
def test_non_rgb_images_convert_or_refuse(tmp_path, mode, colour, expected):
    path = tmp_path / "im.png" if mode != "CMYK" else tmp_path / "im.tif"
    Image.new(mode, (8, 8), colour).save(path)
    x = load_image_tensor(path, None, "convert")
    rgb = ((x[:, 4, 4] + 1) * 127.5).round().tolist()
    assert rgb == pytest.approx(list(expected), abs=2)
    with pytest.raises(DataSetError, match=rf"im\.\w+' is .*\(mode {mode}\), not RGB; convert it to RGB .*mode_policy='convert'"):
        load_image_tensor(path, None, "refuse")


def test_palette_with_transparency_and_float_images(tmp_path):
    p = Image.new("P", (8, 8), 1)
    p.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    p.info["transparency"] = 1
    p.save(tmp_path / "p.png", transparency=1)
    assert load_image_tensor(tmp_path / "p.png", None)[:, 0, 0].tolist() == [1.0, 1.0, 1.0]
    Image.new("F", (8, 8), 0.5).save(tmp_path / "f.tif")
    with pytest.raises(DataSetError, match="32-bit float .* no standard range"):
        load_image_tensor(tmp_path / "f.tif", None)


def test_image_folder_reads_csv_and_parquet_with_splits_identities_and_codings(tmp_path):
    root = tmp_path / "imgs"
    rows = []
    for k in range(6):
        _solid(root / f"p{k // 3}" / f"{k}.png", (k * 40, 0, 0), size=(48, 32))  # non-square: centre crop
        rows.append({"filename": f"p{k // 3}/{k}.png", "identity": k // 3, "split": ["train", "valid", "test"][k % 3],
                     **{a: int(v) * 2 - 1 for a, v in zip(ATTRIBUTES, _labels(k))}})
    table = pd.DataFrame(rows)
    table.to_csv(tmp_path / "attrs.csv", index=False)
    ds = ImageFolderWithAttributes(root, tmp_path / "attrs.csv", split="val", size=16)
    assert ds.paths == ["p0/1.png", "p1/4.png"]
    item = ds[1]
    assert item["image"].shape == (3, 16, 16) and item["identity"] == 1 and item["index"] == 4
    assert torch.equal(item["attrs"], torch.tensor(_labels(4), dtype=torch.float32))  # -1/1 -> 0/1
    table[list(ATTRIBUTES)] = (table[list(ATTRIBUTES)] + 1) // 2
    table.drop(columns=["split", "identity"]).to_parquet(tmp_path / "attrs.parquet")
    whole = ImageFolderWithAttributes(root, tmp_path / "attrs.parquet", split=None, size=None)
    assert len(whole) == 6 and whole[0]["identity"] == -1 and whole[0]["image"].shape == (3, 32, 48)
    assert torch.equal(whole[5]["attrs"], torch.tensor(_labels(5), dtype=torch.float32))
    with pytest.raises(DataSetError, match="has no 'split' column.*split_sizes"):
        ImageFolderWithAttributes(root, tmp_path / "attrs.parquet", split="train")
    assert len(ImageFolderWithAttributes(root, tmp_path / "attrs.parquet", split="test", split_sizes=(3, 1, 2))) == 2


def test_image_folder_table_errors_are_explained(tmp_path):
    root = tmp_path / "imgs"
    _solid(root / "a.png", (0, 0, 0))
    good = {"path": "a.png", **{a: 0 for a in ATTRIBUTES}}
    bad_col = dict(good)
    bad_col["mustache"] = bad_col.pop("Mustache")
    pd.DataFrame([bad_col]).to_csv(tmp_path / "t1.csv", index=False)
    with pytest.raises(DataSetError, match=r"lacks attribute column\(s\) \['Mustache'\].*rename mustache->Mustache"):
        ImageFolderWithAttributes(root, tmp_path / "t1.csv")
    pd.DataFrame([{**good, "Bald": 2}]).to_csv(tmp_path / "t2.csv", index=False)
    with pytest.raises(DataSetError, match="0/1 or -1/1; bad values in rows 'a.png'"):
        ImageFolderWithAttributes(root, tmp_path / "t2.csv")
    pd.DataFrame([good, good]).to_csv(tmp_path / "t3.csv", index=False)
    with pytest.raises(DataSetError, match="twice: 'a.png'"):
        ImageFolderWithAttributes(root, tmp_path / "t3.csv")
    (tmp_path / "t4.json").write_text("{}")
    with pytest.raises(DataSetError, match="use a .csv or .parquet"):
        ImageFolderWithAttributes(root, tmp_path / "t4.json")


def test_image_folder_loads_a_written_miniworld_exactly(tmp_path):
    world = MiniWorld(seed=5, n_identities=2, images_per_identity=5, image_size=32)
    out = world.write(tmp_path / "mw", progress=False)
    ds = ImageFolderWithAttributes(out, out / "table.parquet", split="test", size=None)
    expected = world.dataset("test")
    assert len(ds) == len(expected) == 2
    for a, b in zip(ds, expected):
        assert a["index"] == b["index"] and a["identity"] == b["identity"]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["attrs"], b["attrs"])


def test_ffhq_finds_numbered_images_in_subfolders(tmp_path):
    root = tmp_path / "ffhq"
    for k in (0, 1, 1000):
        _solid(root / f"{(k // 1000) * 1000:05d}" / f"{k:05d}.png", (k % 255, 0, 0))
    table = pd.DataFrame([{"image_id": k, **{a: int(v) for a, v in zip(ATTRIBUTES, _labels(k))}} for k in (0, 1, 1000)])
    table.to_csv(tmp_path / "ffhq_attrs.csv", index=False)
    ds = FFHQ(root, tmp_path / "ffhq_attrs.csv", size=24)
    assert ds.paths == ["00000/00000.png", "00000/00001.png", "01000/01000.png"]
    assert ds[2]["image"].shape == (3, 24, 24)
    table.loc[3] = {"image_id": 7, **{a: 0 for a in ATTRIBUTES}}
    table.to_csv(tmp_path / "ffhq_attrs.csv", index=False)
    with pytest.raises(DataSetError, match="missing .*'00007.png'"):
        FFHQ(root, tmp_path / "ffhq_attrs.csv")


# --- label coding and AttGAN's attribute editing rules (experiments/data/attributes.py) ---


def test_generator_input_codings_round_trip():
    from erasablemask.experiments.data.attributes import from_generator_input, to_generator_input

    att = torch.tensor([[0, 1] * 6 + [1]], dtype=torch.float32)
    assert to_generator_input(att, "pm0.5")[0, :2].tolist() == [-0.5, 0.5]  # AttGAN-PyTorch: (2a-1)*0.5
    assert to_generator_input(att, "pm1")[0, :2].tolist() == [-1.0, 1.0]  # TF AttGAN
    assert torch.equal(to_generator_input(att, "01"), att)
    for coding in ("pm0.5", "pm1", "01"):
        assert torch.equal(from_generator_input(to_generator_input(att, coding), coding), att)
    with pytest.raises(ValueError, match=r"0/1 labels; convert ±1"):
        to_generator_input(att * 2 - 1)
    with pytest.raises(ValueError, match="coding"):
        to_generator_input(att, "pm2")


def test_flips_follow_attgan_conflict_rules():
    from erasablemask.experiments.data.attributes import attribute_index as ix
    from erasablemask.experiments.data.attributes import flip_attributes, sample_target_attributes

    att = torch.zeros(1, 13)
    att[0, ix("Black_Hair")] = att[0, ix("Bangs")] = att[0, ix("No_Beard")] = 1
    blond = flip_attributes(att, ["Blond_Hair"])[0]
    assert blond[ix("Blond_Hair")] == 1 and blond[ix("Black_Hair")] == 0
    bald = flip_attributes(att, ["Bald"])[0]
    assert bald[ix("Bald")] == 1 and bald[ix("Bangs")] == 0
    mustache = flip_attributes(att, ["Mustache"])[0]
    assert mustache[ix("Mustache")] == 1 and mustache[ix("No_Beard")] == 0
    assert torch.equal(flip_attributes(att, ["Black_Hair"])[0, ix("Blond_Hair"):ix("Brown_Hair") + 1], torch.zeros(2))
    g = torch.Generator().manual_seed(0)
    batch = MiniWorld(seed=0, n_identities=8, images_per_identity=8).attributes()
    for mode in ("flip_one", "flip_random", "permute"):
        b = sample_target_attributes(batch, torch.Generator().manual_seed(1), mode=mode)
        assert torch.equal(b, sample_target_attributes(batch, torch.Generator().manual_seed(1), mode=mode))
        assert b[:, [ix("Black_Hair"), ix("Blond_Hair"), ix("Brown_Hair")]].sum(1).max() <= 1
        assert not ((b[:, ix("Bald")] == 1) & (b[:, ix("Bangs")] == 1)).any()
        assert not ((b[:, ix("Mustache")] == 1) & (b[:, ix("No_Beard")] == 1)).any()
    one = sample_target_attributes(batch, g, mode="flip_one")
    assert ((one != batch).sum(1) >= 1).all() and ((one != batch).sum(1) <= 3).all()
    with pytest.raises(KeyError, match="unknown attribute 'Smiling'"):
        flip_attributes(att, ["Smiling"])
