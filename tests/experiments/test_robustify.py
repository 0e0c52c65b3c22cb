"""`erasablemask fr robustify`: adversarial fine-tuning of a mini model, saved and registered as a zoo entry.

One tiny world (as in test_fr_mini.py), one base model trained for a few
epochs and robustified for one epoch of 3-step PGD, on one thread, in a
private ``ERASABLEMASK_HOME``.
"""

from __future__ import annotations

import json

import pytest
import torch

from erasablemask.experiments.fr_tools.mini_report import pgd_impersonate
from erasablemask.experiments.fr_tools.mini_world import (
    MiniZooWorld,
    calibration_set_id,
    image_indices,
    population_world,
)
from erasablemask.experiments.fr_tools.mini_zoo import build_mini_model
from erasablemask.experiments.fr_tools.robust_eval import balanced_pairs
from erasablemask.experiments.fr_tools.robustify import AdvRecipe, ensure_robust_mini, robust_key
from erasablemask.models.fr.registry import build, get_spec, is_registered, read_calibration
from erasablemask.models.fr.robust_zoo import entry_path, read_entry, register_all_saved, unregister
from erasablemask.models.integrity import sidecar_path, verify_file
from erasablemask.platform.cli.main import main

TINY = MiniZooWorld(
    seed=0, n_identities=20, images_per_identity=16, heldout_identities=6, image_size=64,
    extra_identities=40, extra_images_per_identity=8, epochs=6,
)
BASE = "mini_iresnet_arc_s0"
NAME = BASE + "_robust"
RECIPE = AdvRecipe(epochs=1, steps=3, batch_size=32)


@pytest.fixture(scope="module")
def robust(tmp_path_factory):
    """(base model, robust weights path) on TINY in a private cache."""
    home = tmp_path_factory.mktemp("home")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ERASABLEMASK_HOME", str(home))
        path = ensure_robust_mini(NAME, TINY, RECIPE, threads=1, progress=False)
        base = build_mini_model(BASE, TINY, threads=1, progress=False)
        yield base, path
    unregister(NAME)
    torch.set_num_threads(threads)


@pytest.fixture
def home(robust, monkeypatch):
    monkeypatch.setenv("ERASABLEMASK_HOME", str(robust[1].parents[1]))
    return robust


def test_robust_entry_has_new_sealed_weights_calibrated_thresholds_and_builds_by_name(home):
    base, path = home
    assert path.parent.name == "robust_fr" and verify_file(path, what="robust", fix="-")  # sidecar checked
    assert sidecar_path(path).read_text().split()[0] == __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    unregister(NAME)  # as in a fresh process: found by name from the saved entry
    assert NAME in register_all_saved() and get_spec(NAME).role_hint == f"robust:{BASE}"  # as `fr list` does
    unregister(NAME)
    assert is_registered(NAME) and get_spec(NAME).role_hint == f"robust:{BASE}"
    model = build(NAME, calibration=calibration_set_id(TINY))
    assert model.spec.name == NAME and model.calibration_set == calibration_set_id(TINY)
    assert model.weights_digest != base.weights_digest
    changed = [k for k, v in model.backbone.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, base.backbone.state_dict()[k])]
    assert len(changed) > 10
    record = read_calibration(NAME, model.weights_digest, calibration_set_id(TINY))
    assert record is not None and {0.1, 0.01} <= set(record["thresholds"])
    assert model.threshold(0.01) == pytest.approx(record["thresholds"][0.01])
    entry = read_entry(NAME)
    assert entry["base"] == BASE and entry["weights"] == path.name and entry["recipe"]["eps_255"] == 8.0
    assert entry["key"] in path.name and json.loads(entry_path(NAME).read_text())["recipe"]["steps"] == 3
    other = AdvRecipe(epochs=1, steps=4, batch_size=32)
    assert robust_key(base.weights_digest, other, entry["data_id"]) != entry["key"]  # the recipe is in the key


def test_pgd_moves_the_robust_model_less_than_the_base_on_a_fixed_batch(home):
    base, path = home
    robust = build(NAME, weights=path, calibration=calibration_set_id(TINY))
    idx = image_indices(TINY, TINY.calibration)
    pop = population_world(TINY)
    ids = [i // pop.images_per_identity for i in idx]
    a, b, same = balanced_pairs(ids, seed=1)
    pick = (same == 0).nonzero()[0][:32]  # 32 impostor pairs of identities no model was trained on
    xa, xb = pop.images([idx[i] for i in a[pick]]), pop.images([idx[i] for i in b[pick]])
    gains, success = {}, {}
    for label, m in (("base", base), ("robust", robust)):
        x_adv = pgd_impersonate(m, xa, xb, eps=2 * 4 / 255, steps=5)
        with torch.no_grad():
            target = m(xb)
            before, after = (m(xa) * target).sum(1), (m(x_adv) * target).sum(1)
        gains[label] = float((after - before).mean())
        success[label] = float((after > m.threshold(0.01)).float().mean())
    assert gains["robust"] < 0.75 * gains["base"], gains
    assert success["robust"] <= success["base"], success


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["no_such_model"], "unknown FR model 'no_such_model'"),
        (["facenet"], "no margin-head recipe"),
        (["arcface_r100", "--data", "/nonexistent/faces", "--pairs", "p.csv", "--images", "/tmp"], "--data"),
        (["mini_iresnet_arc_s0", "--data", "/tmp"], "missing ['--pairs', '--images']"),
        (["mini_iresnet_arc_s0", "--eps", "0"], "eps"),
        (["mini_iresnet_arc_s0", "--name", "mini_irse_cos_s0"], "is a registered FR model"),
        (["mini_iresnet_arc_s0", "--name", "../x"], "must be letters"),
        (["mini_iresnet_arc_s0", "--set", "seed=1"], "needs --config"),
        (["mini_iresnet_arc_s0", "--config", "miniworld_demo", "--set", "data.miniworld.no_such_key=1"],
         "no_such_key"),
    ],
)
def test_cli_refuses_bad_input_with_one_line_and_exit_2_before_training(argv, says, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ERASABLEMASK_HOME", str(tmp_path))
    assert main(["fr", "robustify", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err, err
    assert not (tmp_path / "robust_fr").exists() and not (tmp_path / "mini_fr").exists()  # nothing trained


def _write_identity_folders(root, identities, per):
    """PNG files ROOT/id<k>/<j>.png of the first ``per`` images of each mini-world identity."""
    from PIL import Image

    pop = population_world(TINY)
    for k in identities:
        (root / f"id{k}").mkdir(parents=True)
        x = pop.images([k * pop.images_per_identity + j for j in range(per)])
        for j, im in enumerate(x.add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).numpy()):
            Image.fromarray(im).save(root / f"id{k}" / f"{j}.png")


def test_robustify_on_identity_folders_calibrates_on_disjoint_pairs_and_refuses_shared_identities(home, tmp_path):
    import itertools

    import pandas as pd

    from erasablemask.experiments.errors import UserError
    from erasablemask.experiments.fr_tools.mini_zoo import mini_weights_path
    from erasablemask.experiments.fr_tools.robustify_folder import robustify_folder

    train, cal = TINY.roles["fr_only"][:8], TINY.calibration[:6]
    _write_identity_folders(tmp_path / "train", train, 6)
    _write_identity_folders(tmp_path / "cal", cal, 4)
    files = [f"id{k}/{j}.png" for k in cal for j in range(4)]
    rows = [(a, b, int(a.split("/")[0] == b.split("/")[0])) for a, b in itertools.combinations(files, 2)]
    pd.DataFrame(rows, columns=["a", "b", "same"]).to_csv(tmp_path / "pairs.csv", index=False)
    name = "folder_robust"
    recipe = AdvRecipe(epochs=1, steps=2, batch_size=16)
    kw = {"weights": mini_weights_path(BASE, TINY), "far": 0.1, "n_attack": 8, "attack_steps": 2, "threads": 1,
          "progress": False}
    try:
        out = robustify_folder(BASE, name, tmp_path / "train", tmp_path / "pairs.csv", tmp_path / "cal", recipe, **kw)
        assert [r["model"] for r in out] == [BASE, name] and out[0]["weights"] != out[1]["weights"]
        assert all(0 <= r["clean_acc_lo"] <= r["clean_acc"] <= r["clean_acc_hi"] <= 1 for r in out)
        assert out[0]["n_pairs"] == len(rows) and out[0]["n_attacked"] == 16
        model = build(name)  # the entry's own file and its only calibration: on the pairs
        assert model.calibration_set.startswith("pairs-") and 0.1 in model.spec.thresholds
        _write_identity_folders(tmp_path / "cal2", [train[0]], 4)  # a training identity among the pairs
        pd.DataFrame([("id%d/0.png" % train[0], "id%d/1.png" % train[0], 1)], columns=["a", "b", "same"]).to_csv(
            tmp_path / "pairs2.csv", index=False)
        with pytest.raises(ValueError, match="share 1 identities"):
            robustify_folder(BASE, name, tmp_path / "train", tmp_path / "pairs2.csv", tmp_path / "cal2", recipe, **kw)
        with pytest.raises(UserError, match="identity subfolder"):
            robustify_folder(BASE, name, tmp_path / "cal2", tmp_path / "pairs.csv", tmp_path / "cal", recipe, **kw)
    finally:
        unregister(name)


def test_a_config_names_the_robust_entry_and_build_fr_models_gives_it_calibrated_on_the_configs_world(home):
    from erasablemask.experiments.config.loading import load_config
    from erasablemask.experiments.data.splits import zoo_world
    from erasablemask.experiments.fr_tools.zoo import build_fr_models

    _, path = home
    unregister(NAME)  # a fresh process: the config and build_fr_models find the name from the saved entry
    m = "data.miniworld"
    cfg = load_config("miniworld_demo", [
        "seed=0", "data.image_size=64", f"{m}.n_identities=20", f"{m}.images_per_identity=16",
        f"{m}.heldout_identities=6", f"{m}.fr_extra_identities=40", f"{m}.fr_extra_images_per_identity=8",
        f"{m}.fr_epochs=6", f"{m}.skin_texture=0", f"attack.black_box=[mini_mobileface_arc_s0, {NAME}]",
    ])
    assert zoo_world(cfg) == TINY
    model = build_fr_models(cfg, [NAME], "cpu", progress=False)[NAME]
    assert model.spec.name == NAME and model.calibration_set == calibration_set_id(TINY)
    assert model.weights_digest == build(NAME, weights=path, calibration=calibration_set_id(TINY)).weights_digest


def test_cli_world_is_the_configs_with_seed_and_epochs_overrides():
    """``--config`` gives the config's mini-world (the demo's is textured); without it the schema default's."""
    import argparse

    from erasablemask.experiments.config.loading import load_config
    from erasablemask.experiments.data.splits import zoo_world
    from erasablemask.platform.cli.fr import _robustify_world

    def world(**kw):
        args = dict(config=None, overrides=[], world_seed=None, base_epochs=None) | kw
        return _robustify_world(argparse.Namespace(**args))

    demo = world(config="miniworld_demo")
    assert demo == zoo_world(load_config("miniworld_demo")) and demo.skin_texture > 0
    assert world(config="miniworld_demo", world_seed=3, base_epochs=2) == zoo_world(
        load_config("miniworld_demo", ["seed=3", "data.miniworld.fr_epochs=2"]))
    assert world().skin_texture == 0 and world(world_seed=3).seed == 3
