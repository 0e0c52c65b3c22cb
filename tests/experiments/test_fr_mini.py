"""Mini-world FR zoo: architectures, margin heads, training cache, calibration, diversity.

Everything trains on a tiny world (20 identities of 16 images, 6 held out,
plus 40 FR-only identities of 8 images) for a few epochs in a private
``ERASABLEMASK_HOME``, on one thread. There is no process-global world:
every build names its world, and a fresh process given the same config
builds the same model.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from erasablemask.experiments.fr_tools import mini_zoo as fr_mini
from erasablemask.experiments.fr_tools.calibration import roc_auc
from erasablemask.experiments.fr_tools.mini_calibration import heldout_scores
from erasablemask.experiments.fr_tools.mini_report import (
    impersonation_pairs,
    impersonation_transfer,
    pgd_impersonate,
    zoo_quality,
)
from erasablemask.experiments.fr_tools.mini_training import MarginHead
from erasablemask.experiments.fr_tools.mini_world import MiniZooWorld, heldout_calibration_set, population_world
from erasablemask.experiments.fr_tools.mini_zoo import build_mini_model, ensure_mini_zoo, mini_calibration
from erasablemask.models.fr import build, get_spec
from erasablemask.models.fr.mini import MINI_FAMILIES
from erasablemask.models.fr.mini_zoo import MINI_RECIPES, build_mini_recognizer, load_mini_weights
from erasablemask.models.fr.registry import RANDOM_INIT, WeightsUnavailable, available, list_calibrations

TINY = MiniZooWorld(
    seed=0, n_identities=20, images_per_identity=16, heldout_identities=6, image_size=64,
    extra_identities=40, extra_images_per_identity=8, skin_texture=12.0, epochs=6,
)
A, B = "mini_iresnet_arc_s0", "mini_mobileface_arc_s0"


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    """Two mini models of different families trained on TINY in a private cache."""
    home = tmp_path_factory.mktemp("home")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ERASABLEMASK_HOME", str(home))
        paths = ensure_mini_zoo([A, B], TINY, threads=1, progress=False)
        yield paths
    torch.set_num_threads(threads)


@pytest.fixture
def home(tiny_zoo, monkeypatch):
    """The tiny zoo's cache as ERASABLEMASK_HOME, for one test."""
    monkeypatch.setenv("ERASABLEMASK_HOME", str(next(iter(tiny_zoo.values())).parents[1]))
    return tiny_zoo


def test_zoo_registers_six_models_of_four_families():
    # robust entries saved by `fr robustify` in the cache register as mini_* too: not the zoo's six
    names = [n for n in available() if n.startswith("mini_") and not get_spec(n).role_hint.startswith("robust:")]
    assert sorted(names) == sorted(MINI_RECIPES) and len(names) == 6
    assert {MINI_RECIPES[n].family for n in names} == set(MINI_FAMILIES) == {"iresnet", "irse", "mobileface", "incept"}
    assert {MINI_RECIPES[n].margin for n in names} == {"arcface", "cosface"}
    for n in names:
        spec = get_spec(n)
        assert spec.role_hint == "mini" and spec.embedding_size == 128
        assert spec.weights.kind == "trained_here" and "mini_fr/" in spec.weights.location


@pytest.mark.parametrize("name", sorted(MINI_RECIPES))
def test_mini_backbone_is_small_and_differentiable(name):
    model = build(name, weights=RANDOM_INIT)
    n_params = sum(p.numel() for p in model.backbone.parameters())
    assert 5e4 < n_params < 1e6, n_params
    x = (torch.rand(3, 3, 64, 64) * 2 - 1).requires_grad_(True)
    model.train()  # BatchNorm over a batch, as in training
    emb = model(x)
    assert emb.shape == (3, 128)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    emb[:, 0].sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_margin_heads_change_only_the_target_logit_by_their_margin():
    emb = torch.eye(4)[:2]  # sample 0 aligned with class 0, sample 1 with class 1
    labels = torch.tensor([0, 1])
    for kind, m, expect in [("arcface", 0.5, 10 * math.cos(0.5)), ("cosface", 0.35, 10 * (1 - 0.35))]:
        head = MarginHead(4, 4, kind=kind, scale=10.0, margin=m)
        with torch.no_grad():
            head.weight.copy_(torch.eye(4))
        logits = head(emb, labels)
        assert logits[0, 0].item() == pytest.approx(expect, abs=1e-4)
        assert logits[1, 1].item() == pytest.approx(expect, abs=1e-4)
        assert logits[0, 1:].abs().max().item() == pytest.approx(0.0, abs=1e-3)  # cos 90° = 0, no margin
    with pytest.raises(ValueError, match="arcface"):
        MarginHead(4, 4, kind="sphereface", scale=10.0, margin=0.5)


def test_training_is_deterministic_under_its_seed():
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(64, 3, 32, 32, generator=g) * 2 - 1, torch.arange(64) % 4
    recipe = fr_mini._recipe(A, MiniZooWorld(epochs=1))
    m1, m2 = (fr_mini.train_mini_model(A, images, labels, recipe=recipe, threads=1, progress=False)[0] for _ in "ab")
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        fr_mini.train_mini_model(A, images * 255, labels, recipe=recipe, progress=False)


def test_cache_by_config_hash_trains_once_and_retrains_on_change(home, monkeypatch):
    path = home[A]
    assert path.name == f"{A}-{fr_mini.config_hash(A, TINY)}.safetensors" and path.is_file()
    stamp = path.stat().st_mtime_ns
    calls = []
    original = fr_mini.train_mini_model
    monkeypatch.setattr(fr_mini, "train_mini_model", lambda *a, **k: calls.append(a[0]) or original(*a, **k))
    assert ensure_mini_zoo([A], TINY, threads=1, progress=False) == {A: path}
    assert calls == [] and path.stat().st_mtime_ns == stamp  # cached: not retrained
    changed = MiniZooWorld(**{**TINY.__dict__, "epochs": 1})
    assert fr_mini.config_hash(A, changed) != fr_mini.config_hash(A, TINY)
    new = ensure_mini_zoo([A], changed, threads=1, progress=False)[A]
    assert calls == [A] and new != path and new.is_file() and path.is_file()
    assert mini_calibration(A, changed)["weights_hash"] == fr_mini.config_hash(A, changed)  # calibrated for new weights
    ensure_mini_zoo([A], TINY, threads=1, progress=False)  # back: cached, and its thresholds were kept
    assert calls == [A] and mini_calibration(A, TINY)["weights_hash"] == fr_mini.config_hash(A, TINY)
    assert fr_mini.config_hash(A, changed) in build_mini_model(A, changed).spec.threshold_source
    assert fr_mini.config_hash(A, TINY) in build_mini_model(A, TINY).spec.threshold_source


def test_parallel_training_gives_the_same_weights_as_sequential(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    quick = MiniZooWorld(**{**TINY.__dict__, "epochs": 1})
    monkeypatch.setenv("ERASABLEMASK_HOME", str(tmp_path / "parallel"))
    parallel = ensure_mini_zoo([A, B], quick, jobs=2, threads=1, progress=False)
    monkeypatch.setenv("ERASABLEMASK_HOME", str(tmp_path / "sequential"))
    sequential = ensure_mini_zoo([A, B], quick, threads=1, progress=False)
    for name in (A, B):
        p, s = load_file(str(parallel[name])), load_file(str(sequential[name]))
        assert sorted(p) == sorted(s) and all(torch.equal(p[k], s[k]) for k in p), name


def test_thresholds_follow_the_weights_file_when_another_process_replaces_it(home, monkeypatch):
    from safetensors.torch import load_file, save_file

    from erasablemask.models.integrity import seal_file

    cal = mini_calibration(B, TINY)
    state = load_file(str(home[B]))
    original = home[B].read_bytes()
    monkeypatch.setattr(fr_mini, "train_mini_model", lambda *a, **k: pytest.fail("must not retrain"))
    try:
        # Another training run's (different) weights under the same config hash:
        w = state["project.0.weight"]
        w += 0.5 * w.std() * torch.randn(w.shape, generator=torch.Generator().manual_seed(0))
        save_file(state, str(home[B]))
        seal_file(home[B])  # a training process seals what it writes (models/integrity.py)
        model = build_mini_model(B, TINY, threads=1, progress=False)
        new = mini_calibration(B, TINY)
        assert new["weights_sha256"] != cal["weights_sha256"] and new["weights_hash"] == cal["weights_hash"]
        assert new["thresholds"] != cal["thresholds"] and model.spec.thresholds == new["thresholds"]
        assert new["weights_digest"] != cal["weights_digest"]
    finally:
        home[B].write_bytes(original)
        seal_file(home[B])
    # The first weights' calibration was kept, not overwritten: restoring the file needs no recalibration.
    assert len(list_calibrations(B)) == 2
    assert build_mini_model(B, TINY, progress=False).spec.thresholds == cal["thresholds"]


def test_short_trained_models_verify_heldout_identities_well_above_chance(home):
    for name in (A, B):
        genuine, impostor = heldout_scores(build_mini_model(name, TINY), TINY)
        untrained = roc_auc(*heldout_scores(build(name, weights=RANDOM_INIT), TINY))
        auc = roc_auc(genuine, impostor)
        # On the 24 calibration identities (288 images; measured 2026-11-30: mobileface 0.677 vs 0.575 untrained),
        # a harder set than the 6 held-out identities the thresholds used to be set on (then > 0.7). With the
        # skin texture even random features tell identities apart (measured 2026-12-01, 6 epochs: mobileface
        # 0.758 vs 0.711 untrained); training still adds to that.
        assert auc > 0.65 and auc > untrained + 0.03, (name, auc, untrained)


def test_thresholds_are_calibrated_on_the_calibration_identities_and_used_by_build(home):
    cal = mini_calibration(A, TINY)
    n = 24 * 12  # the calibration identities' images (their own role: not targets, not trained on)
    assert cal["n_genuine"] == 24 * 12 * 11 // 2 and cal["n_impostor"] == n * (n - 1) // 2 - cal["n_genuine"]
    assert cal["n_impostor"] == TINY.n_impostor_pairs == 39_744
    assert sorted(cal["thresholds"]) == [0.001, 0.01, 0.1]  # >= 10,000 impostor pairs: FAR 0.001 too
    assert "calibration identities 60-83" in cal["source"]
    model = build_mini_model(A, TINY)
    assert model.threshold(0.1) == cal["thresholds"][0.1] and model.threshold(0.01) == cal["thresholds"][0.01]
    assert fr_mini.config_hash(A, TINY) in model.spec.threshold_source
    assert model.calibration_set == heldout_calibration_set(TINY) == cal["calibration_set"]
    assert model.weights_digest == cal["weights_digest"]
    assert cal["tar"][0.1] >= cal["tar"][0.01] > 0.1
    x = population_world(TINY).images(range(4))
    explicit = build(A, weights=home[A])  # no calibration named: the only one for these weights
    assert torch.allclose(model(x), explicit(x)) and explicit.spec.thresholds == model.spec.thresholds
    assert not torch.allclose(model(x), build(A, weights=RANDOM_INIT)(x), atol=1e-3)
    rows = zoo_quality(home, TINY)
    assert [r["name"] for r in rows] == [A, B]
    assert rows[0]["params"] == sum(p.numel() for p in model.backbone.parameters())
    assert rows[0]["tar@0.01"] == cal["tar"][0.01] and rows[0]["train_cpu_seconds"] > 0


def test_weights_of_another_architecture_are_refused(home, tmp_path):
    with pytest.raises(ValueError, match="FR model 'mini_iresnet_arc_s0'.*does not fit.*another architecture"):
        load_mini_weights(build_mini_recognizer(A), home[B])
    with pytest.raises(FileNotFoundError, match="not found"):
        build(A, weights=tmp_path / "nope.safetensors")


def test_bad_world_and_unknown_names_fail_before_training():
    with pytest.raises(ValueError, match="heldout_identities"):
        MiniZooWorld(n_identities=10, heldout_identities=9)
    with pytest.raises(KeyError, match="unknown mini FR model"):
        ensure_mini_zoo(["mini_nope"], TINY)


def test_attack_on_one_model_transfers_only_partly_to_another_family(home):
    models = {n: build_mini_model(n, TINY) for n in (A, B)}
    world = population_world(TINY)
    src, tgt, _ = impersonation_pairs(world, TINY.heldout, 12, seed=0)
    adv = pgd_impersonate(models[A], src, tgt, eps=16 / 255, steps=5)
    assert (adv - src).abs().max() <= 16 / 255 + 1e-6 and adv.min() >= -1 and adv.max() <= 1
    # Judged against the attacked target image itself, at FAR 0.1: PGD mostly reaches it on the
    # white-box model; the other family mostly does not follow (measured with the face crop of
    # recipe 4: 0.58 and 1.00 white-box vs 0.00 and 0.17 transferred; 1.00 vs <= 0.08 before).
    m = impersonation_transfer(models, [A, B], src, tgt, tgt, far=0.1, eps=16 / 255, steps=5)
    for attacked, other in [(A, B), (B, A)]:
        assert m[attacked][attacked] >= 0.5, m
        assert m[attacked][attacked] >= m[attacked][other] + 0.4, m
        assert m[attacked][other] <= 0.4, m
    assert max(m["clean"].values()) <= 0.4, m
    both = pgd_impersonate([models[A], models[B]], src, tgt, eps=16 / 255, steps=5)  # an ensemble fools both
    with torch.no_grad():
        for n, model in models.items():
            assert ((model(both) * model(tgt)).sum(1) > model.threshold(0.1)).float().mean() >= 0.75, n
    # The two models' similarity structures differ: their impostor scores are far from one function.
    _, ia = heldout_scores(models[A], TINY)
    _, ib = heldout_scores(models[B], TINY)
    corr = torch.corrcoef(torch.tensor([list(ia), list(ib)]))[0, 1].item()
    assert corr < 0.9, corr


def test_gradient_alignment_is_one_on_itself_and_partial_across_families(home):
    from erasablemask.experiments.fr_tools.mini_report import gradient_alignment

    models = {n: build_mini_model(n, TINY) for n in (A, B)}
    src, tgt, _ = impersonation_pairs(population_world(TINY), TINY.heldout, 8, seed=0)
    own = gradient_alignment([models[A]], models, src, tgt)
    assert torch.allclose(own[A]["cosine"], torch.ones(8), atol=1e-5) and bool((own[A]["sign_agreement"] == 1).all())
    assert own[B]["cosine"].shape == (8,) and float(own[B]["cosine"].abs().mean()) < 0.9
    assert 0.0 < float(own[B]["sign_agreement"].mean()) < 0.95
    pair = gradient_alignment([models[A], models[B]], models, src, tgt)  # the ensemble leans on both
    assert float(pair[B]["cosine"].mean()) > float(own[B]["cosine"].mean())


# ------------------------------------------------------------------- no global state: explicit worlds


def test_two_worlds_calibrations_of_one_model_coexist_and_each_build_gets_its_own(home):
    other = MiniZooWorld(**{**TINY.__dict__, "seed": 1, "epochs": 1})  # a sweep over the world seed
    assert heldout_calibration_set(other) != heldout_calibration_set(TINY)
    first = build_mini_model(A, TINY, threads=1, progress=False)
    second = build_mini_model(A, other, threads=1, progress=False)
    assert second.weights_digest != first.weights_digest
    assert second.spec.thresholds != first.spec.thresholds
    # Both calibrations are on disk, each under its own weights and calibration set ...
    keys = {(r["weights_digest"], r["calibration_set"]) for r in list_calibrations(A)}
    assert {(first.weights_digest, first.calibration_set), (second.weights_digest, second.calibration_set)} <= keys
    # ... and building either world's model again gives back that world's thresholds, in any order.
    assert build_mini_model(A, TINY, progress=False).spec.thresholds == first.spec.thresholds
    assert build_mini_model(A, other, progress=False).spec.thresholds == second.spec.thresholds
    assert mini_calibration(A, other)["thresholds"] == second.spec.thresholds
    assert build(A, weights=fr_mini.mini_weights_path(A, TINY)).spec.thresholds == first.spec.thresholds


def test_build_of_a_mini_model_without_a_world_refuses_naming_the_fix(home):
    with pytest.raises(WeightsUnavailable, match=r"mini_iresnet_arc_s0.*trained here.*build_mini_model\(name, world\)"):
        build(A)


_CHILD = """
import os, sys, torch
torch.set_num_threads(int(os.environ["CHILD_TORCH_THREADS"]))  # the driver's: same kernels, same bits
from erasablemask.experiments.config.loading import load_config
from erasablemask.experiments.fr_tools.zoo import build_fr_models
cfg = load_config("miniworld_demo", sys.argv[2:])
models = build_fr_models(cfg, ["{a}", "{b}"], progress=False)
x = torch.load(sys.argv[1])["x"]
with torch.no_grad():
    out = {{n: {{"emb": m(x), "thresholds": m.spec.thresholds, "digest": m.weights_digest}} for n, m in models.items()}}
torch.save(out, sys.argv[1])
"""


def test_a_fresh_process_builds_the_configs_mini_models_bit_identical_to_the_driver(home, tmp_path):
    """What a Ray actor or Tune trial does: a new interpreter, only the config, the same cache."""
    from erasablemask.experiments.config.loading import load_config
    from erasablemask.experiments.data.splits import zoo_world
    from erasablemask.experiments.fr_tools.zoo import build_fr_models

    overrides = ["seed=0", "data.image_size=64", "data.miniworld.n_identities=20",
                 "data.miniworld.images_per_identity=16", "data.miniworld.heldout_identities=6",
                 "data.miniworld.fr_extra_identities=40", "data.miniworld.fr_extra_images_per_identity=8",
                 "data.miniworld.fr_epochs=6"]
    cfg = load_config("miniworld_demo", overrides)
    assert zoo_world(cfg) == TINY  # the module's cached zoo: nothing is trained here or in the child
    stamps = {n: p.stat().st_mtime_ns for n, p in home.items()}
    driver = build_fr_models(cfg, [A, B], progress=False)
    x = population_world(TINY).images(range(6))
    exchange = tmp_path / "exchange.pt"
    torch.save({"x": x}, exchange)
    env = {**os.environ, "CHILD_TORCH_THREADS": str(torch.get_num_threads())}
    done = subprocess.run([sys.executable, "-c", _CHILD.format(a=A, b=B), str(exchange), *overrides],
                          capture_output=True, text=True, env=env, cwd=Path(__file__).parent, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    child = torch.load(exchange)
    with torch.no_grad():
        for name, model in driver.items():
            assert torch.equal(child[name]["emb"], model(x)), name
            assert child[name]["thresholds"] == model.spec.thresholds and model.spec.thresholds, name
            assert child[name]["digest"] == model.weights_digest == mini_calibration(name, TINY)["weights_digest"]
    assert {n: p.stat().st_mtime_ns for n, p in home.items()} == stamps  # cached weights were used, not retrained
