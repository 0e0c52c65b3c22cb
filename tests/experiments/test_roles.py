"""Disjoint roles: FR population, calibration identities, targets and sources never overlap."""

from __future__ import annotations

import pytest

from erasablemask.experiments.config.loading import load_config
from erasablemask.experiments.data.miniworld import MiniWorld
from erasablemask.experiments.data.splits import check_roles, zoo_world
from erasablemask.experiments.fr_tools.mini_world import (
    MiniZooWorld,
    check_disjoint_roles,
    fr_training_indices,
    image_indices,
    population_world,
)


def test_default_world_roles_are_disjoint_and_calibration_has_enough_impostor_pairs():
    w = MiniZooWorld()
    r = w.roles
    assert r["source"] == list(range(40)) and r["target"] == list(range(40, 48))
    assert r["fr_only"] == list(range(48, 48 + w.extra_identities))
    assert r["calibration"] == list(range(48 + w.extra_identities, 48 + w.extra_identities + 24))
    assert w.n_impostor_pairs == 39_744 >= 10_000  # 24 identities x 12 images, pairs of two identities
    assert w.calibration == r["calibration"] and w.heldout == r["target"]


def test_fr_population_holds_source_train_images_only_and_no_target_or_calibration_identity():
    w = MiniZooWorld(
        n_identities=10,
        images_per_identity=10,
        heldout_identities=3,
        extra_identities=5,
        extra_images_per_identity=4,
        calibration_identities=4,
        calibration_images_per_identity=3,
    )
    per = population_world(w).images_per_identity
    idx = fr_training_indices(w)
    # The generator's own split (a world of the source size): train images in, val/test images out.
    gen_world = MiniWorld(seed=0, n_identities=10, images_per_identity=10, image_size=64)
    as_pop = {(i // 10) * per + i % 10 for i in gen_world.indices("train", range(7))}
    held = {(i // 10) * per + i % 10 for s in ("val", "test") for i in gen_world.indices(s, range(7))}
    assert as_pop <= set(idx) and not held & set(idx) and len(held) == 7 * 2
    ids = {i // per for i in idx}
    assert ids == set(range(7)) | set(range(10, 15))
    assert len(idx) == len(as_pop) + 5 * 4
    no_sources = MiniZooWorld(**{**w.__dict__, "source_train_images": False})
    assert {i // per for i in fr_training_indices(no_sources)} == set(range(10, 15))
    cal = image_indices(w, w.calibration)
    assert {i // per for i in cal} == set(range(15, 19)) and len(cal) == 4 * 3


def test_overlapping_roles_are_refused_naming_both():
    with pytest.raises(ValueError, match=r"roles 'target' and 'calibration' share 2 identities \(e\.g\. \[4, 5\]\)"):
        check_disjoint_roles({"source": [0, 1], "target": [3, 4, 5], "calibration": [4, 5, 6]})
    check_disjoint_roles({"a": [0], "b": [1]})  # disjoint: no error
    with pytest.raises(ValueError, match="calibration_identities"):
        MiniZooWorld(calibration_identities=1)
    with pytest.raises(ValueError, match="fr_source_train_images"):
        MiniZooWorld(extra_identities=0, source_train_images=False)


def test_config_carries_the_roles_to_the_zoo_world():
    cfg = load_config(
        "miniworld_demo", ["data.miniworld.fr_calibration_identities=30", "data.miniworld.fr_source_train_images=false"]
    )
    w = zoo_world(cfg)
    assert w.calibration_identities == 30 and not w.source_train_images
    check_roles(cfg)


def test_a_target_photo_from_the_data_set_is_refused(tmp_path):
    world = MiniWorld(seed=5, n_identities=3, images_per_identity=6, image_size=32)
    out = world.write(tmp_path / "mw", progress=False)
    table = out / "table.parquet"
    import pandas as pd

    paths = pd.read_parquet(table)["path"].tolist()
    other = tmp_path / "target.png"
    other.write_bytes((out / paths[0]).read_bytes())
    base = ["data.kind=folder", f"data.root={out}", f"data.attr_file={table}", "attack.target.mode=images"]
    ok = load_config(
        "miniworld_demo", base + [f"attack.target.train_images=[{other}]", f"attack.target.eval_images=[{other}]"]
    )
    check_roles(ok)
    bad = load_config(
        "miniworld_demo",
        base + [f"attack.target.train_images=[{other}]", f"attack.target.eval_images=[{out / paths[3]}]"],
    )
    with pytest.raises(ValueError, match=r"roles 'source images' and 'target photos \(attack.target\)' share 1"):
        check_roles(bad)


def test_real_data_with_an_identity_column_gets_another_photo_of_each_source(tmp_path):
    """IDR beyond the mini-world: the folder loader's identity column gives x_other."""
    import pandas as pd
    import torch

    from erasablemask.experiments.data.image_io import load_image_tensor
    from erasablemask.experiments.evaluation.batches import evaluation_batches

    world = MiniWorld(seed=5, n_identities=3, images_per_identity=6, image_size=64)
    out = world.write(tmp_path / "mw", progress=False)
    table = out / "table.parquet"
    cfg = load_config("miniworld_demo", ["data.kind=folder", f"data.root={out}", f"data.attr_file={table}"])
    (batch,) = evaluation_batches(cfg, "test")
    assert batch.x_other is not None and batch.x_other.shape == batch.x.shape
    df = pd.read_parquet(table)
    for n, (index, ident) in enumerate(zip(batch.index.tolist(), batch.identity.tolist())):
        first_other = df[(df["identity"] == ident) & (df["index"] != index)].sort_values("index").iloc[0]
        assert torch.equal(batch.x_other[n], load_image_tensor(out / first_other["path"], 64, "convert"))
    df.assign(identity=-1).to_parquet(tmp_path / "anon.parquet")
    anon = load_config(
        "miniworld_demo", ["data.kind=folder", f"data.root={out}", f"data.attr_file={tmp_path / 'anon.parquet'}"]
    )
    assert evaluation_batches(anon, "test")[0].x_other is None  # identities unknown: no IDR
