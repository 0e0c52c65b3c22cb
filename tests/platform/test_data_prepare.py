"""``data prepare`` on Ray Data: good photos become aligned crops in shards + a table, bad ones are counted, never fatal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from erasablemask.experiments.data.attributes import ATTRIBUTES
from erasablemask.experiments.photos.prepare import PrepareFaces

GOOD = [
    "images/angelina_jolie/deepface_1.jpg",
    "images/angelina_jolie/deepface_2.jpg",
    "images/kit_harington/facerec_1.jpg",
]


def _raw_folder(root: Path, faces_dir: Path) -> Path:
    raw = root / "raw"
    for rel in GOOD:
        dst = raw / Path(rel).parent.name / Path(rel).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(faces_dir / rel, dst)  # into tmp_path only, removed with it
    (raw / "junk").mkdir()
    (raw / "junk" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    Image.new("RGB", (160, 120), (90, 140, 200)).save(raw / "junk" / "sky.png")
    shutil.copyfile(faces_dir / "scenes/facerec_two_people.jpg", raw / "junk" / "two.jpg")
    return raw


@pytest.mark.slow  # a local Ray instance and two actors each loading MTCNN: ~40 s on 2 idle cores
def test_prepare_on_ray_data_writes_crops_table_and_report_and_the_loader_reads_it(
    tmp_path: Path, faces_dir: Path, capsys
):
    import ray

    from erasablemask.experiments.data.folders import ImageFolderWithAttributes
    from erasablemask.platform.cli.main import main

    raw = _raw_folder(tmp_path, faces_dir)
    rels = sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*") if p.is_file())
    labels = pd.DataFrame({"path": rels, **{a: [i % 2 for i in range(len(rels))] for a in ATTRIBUTES}})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "prepared"
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        rc = main(
            [
                "data",
                "prepare",
                str(raw),
                "--out",
                str(out),
                "--size",
                "128",
                "--labels",
                str(tmp_path / "labels.csv"),
                "--identity-from-folder",
                "--actors",
                "2",
                "--batch-size",
                "2",
            ]
        )
    finally:
        ray.shutdown()
    assert rc == 0
    text = capsys.readouterr().out
    assert "6 photos -> 3 face crops" in text and "unreadable 1, no_face 1, several_faces 1" in text
    report = json.loads((out / "report.json").read_text())
    assert report["n_images"] == 6 and report["n_good"] == 3 and report["actors"] == 2
    assert report["bad"] == {"unreadable": 1, "no_face": 1, "several_faces": 1, "too_small": 0}
    bad = pd.read_csv(out / "bad.csv")
    assert dict(zip(bad["source"].map(lambda s: Path(s).name), bad["reason"])) == {
        "corrupt.jpg": "unreadable",
        "sky.png": "no_face",
        "two.jpg": "several_faces",
    }
    table = pd.read_parquet(out / "table.parquet")
    assert sorted(table["identity_name"]) == ["angelina_jolie", "angelina_jolie", "kit_harington"]
    assert table.groupby("identity_name")["identity"].nunique().eq(1).all() and table["identity"].nunique() == 2
    assert all(p.startswith("images/00000/") for p in table["path"]) and (table["score"] > 0.9).all()
    for row in table.itertuples():
        src = Path(row.source).relative_to(raw).as_posix()
        assert row.Bangs == labels.set_index("path").loc[src, "Bangs"]
        with Image.open(out / row.path) as im:
            assert im.size == (128, 128) and im.mode == "RGB"
        lm = np.array(row.crop_landmarks).reshape(5, 2)
        assert np.isclose(lm[1, 0] - lm[0, 0], 128 / 4, rtol=0.25)  # FFHQ alignment: eyes a quarter crop apart
        assert abs(lm[0, 1] - lm[1, 1]) < 3 and 30 < lm[0, 1] < 70  # level, in the upper half
        box = np.array(row.crop_box).reshape(4, 2)
        assert np.isclose(np.linalg.norm(box[1] - box[0]), np.linalg.norm(box[3] - box[0]), rtol=1e-6)
    # The data loaders read the prepared folder directly.
    ds = ImageFolderWithAttributes(out, out / "table.parquet", size=64)
    item = ds[0]
    assert len(ds) == 3 and item["image"].shape == (3, 64, 64) and item["identity"] in (0, 1)


def test_prepare_worker_on_miniworld_images_counts_what_it_cannot_use(tmp_path: Path):
    """No real photos needed: the worker on mini-world images (and one unreadable file), in this process."""
    from erasablemask.experiments.data.miniworld import MiniWorld

    world = MiniWorld(seed=0, n_identities=2, images_per_identity=3, image_size=64, val_fraction=0.0, test_fraction=0.0)
    folder = world.write(tmp_path / "mw", progress=False)
    paths = sorted(str(p) for p in (folder / "images").rglob("*.png"))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    rows = PrepareFaces(str(tmp_path / "out"), size=64)(
        {"index": np.arange(len(paths) + 1), "path": np.array([*paths, str(tmp_path / "bad.png")])}
    )
    assert list(rows["index"]) == list(range(len(paths) + 1))
    assert rows["reason"][-1] == "unreadable" and "cannot be read" in rows["detail"][-1]
    # MTCNN finds the one drawn face of every mini-world image.
    assert list(rows["status"]) == ["ok"] * len(paths) + ["bad"] and set(rows["n_faces"][:-1]) == {1}
    for rel in rows["path"][:-1]:
        with Image.open(tmp_path / "out" / rel) as im:
            assert im.size == (64, 64)
