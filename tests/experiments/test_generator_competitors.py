"""AdvFaces and GMAA: trained by the curriculum loop, then feed-forward Protections.

The surrogates and the black-box model are small frozen random projections (tests/_competitor_fr.py) of the
mean-centred face (served through ``fr_model_provider``, as the Ray runner serves remote
models), so the tests need no mini-zoo training: cosine similarity under them follows the
pixels' (centred) similarity, so "targeted similarity rises" is a real white-box effect.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _competitor_fr import projection_fr_models
from _curriculum_tiny import (
    SURROGATES,
    assert_same_tensors,
    state_tensors,
    strip_times,
    tiny_config,
)
from torch import nn

from erasablemask.experiments.attacks import build
from erasablemask.experiments.curriculum.checkpoint import CheckpointMismatch, find_latest_checkpoint
from erasablemask.experiments.curriculum.context import in_process_context
from erasablemask.experiments.curriculum.faults import FaultInjected, fault_at
from erasablemask.experiments.curriculum.loop import run_stage
from erasablemask.experiments.data.splits import split_dataset
from erasablemask.experiments.evaluation.protection import Protection
from erasablemask.experiments.evaluation.targets import build_targets
from erasablemask.experiments.fr_tools.zoo import build_fr_models

GENERATORS = ["advfaces", "gmaa"]
# Tiny networks, short epochs; each test adds what it needs.
TINY = {
    "advfaces": {"gen_dim": 8, "gen_res_blocks": 1, "dis_dim": 8, "dis_layers": 3, "batch_size": 4},
    "gmaa": {
        "gen_dim": 8,
        "gen_res_blocks": 1,
        "dis_dim": 8,
        "dis_layers": 3,
        "batch_size": 4,
        "di_copies": 2,
        "teacher": "none",
    },
}


@pytest.fixture(scope="module")
def provider():
    """Frozen FR models for SURROGATES + BLACK_BOX (module docstring), thresholds at the evaluation's FARs."""
    with projection_fr_models(tiny_config()) as models:
        yield models


def _surrogates(cfg):
    return list(build_fr_models(cfg, list(cfg.attack.surrogates), "cpu", progress=False).values())


def _eval_batch(cfg, n: int = 8):
    ds = split_dataset(cfg, "val")
    items = [ds[i] for i in range(n)]
    x = torch.stack([it["image"] for it in items])
    att = torch.stack([it["attrs"] for it in items])
    x_t = build_targets(cfg).train_images[:1].expand(n, -1, -1, -1)
    return x, x_t, att


# An easy setting, so that a short training visibly works: a strong identity term, a loose
# perturbation budget (AdvFaces) or weak GAN/structure terms (GMAA), a higher learning rate.
EASY = {
    "advfaces": {"lr": 2e-3, "pert_eps": 40.0, "lambda_id": 50.0},
    "gmaa": {"lr": 2e-3, "g_freq": 1, "lambda_gan": 1.0, "lambda_cls": 1.0, "lambda_ssim": 1.0, "lambda_adv": 50.0},
}


@pytest.mark.parametrize("name", GENERATORS)
def test_trained_generator_is_a_protection_raising_targeted_similarity(provider, tmp_path: Path, name: str):
    cfg = tiny_config()
    sur = _surrogates(cfg)
    attack = build(name, sur, cfg=cfg, train_dir=tmp_path, max_steps_per_epoch=16, epochs=1, **TINY[name], **EASY[name])
    assert isinstance(attack, Protection) and attack.name == name
    x, x_t, att = _eval_batch(cfg)
    att_b = 1 - att
    out = attack(x, x_t, att_a=att, att_b=att_b)
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    levels = (out.double() + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)  # what a saved 8-bit image holds
    assert torch.equal(out, attack(x, x_t, att_a=att, att_b=att_b))  # feed-forward: deterministic
    assert set(attack.last_check.cos) == set(SURROGATES)

    # Targeted similarity on the white-box surrogates: above the clean faces' and above what the same
    # generator does untrained (freshly initialised networks of the same size).
    untrained = type(attack).with_networks(sur, attack.resolve_params({**TINY[name], **EASY[name]}), cfg)
    untrained.generator.eval()

    def mean_cos(a) -> float:
        a(x, x_t, att_a=att, att_b=att_b)
        return float(torch.stack(list(a.last_check.cos.values())).mean())

    with torch.no_grad():
        clean = float(torch.stack([nn.functional.cosine_similarity(fr(x), fr(x_t)) for fr in sur]).mean())
    trained, before = mean_cos(attack), mean_cos(untrained)
    assert trained > clean + 0.1 and trained > before + 0.1, (clean, before, trained)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1] and "val/cos/surrogates_mean" in lines[0]

    # The registry factory loads the same generator from the checkpoint path (its hyper-parameters come along).
    hp = attack.hparams()
    assert hp["checkpoint"] and hp["epochs"] == 1 and hp["gen_dim"] == 8
    again = build(name, sur, checkpoint=hp["checkpoint"])
    assert torch.equal(again(x, x_t, att_a=att, att_b=att_b), out)
    assert again.hparams() == hp
    with pytest.raises(CheckpointMismatch, match="gen_dim"):
        build(name, sur, checkpoint=hp["checkpoint"], gen_dim=16)
    with pytest.raises(ValueError, match="no hyper-parameter bogus"):
        build(name, sur, checkpoint=hp["checkpoint"], bogus=1)
    with pytest.raises(ValueError, match="checkpoint=DIR"):
        build(name, sur)


@pytest.mark.parametrize("name", GENERATORS)
def test_generator_training_resumed_after_a_crash_ends_bitwise_equal(provider, tmp_path: Path, name: str):
    cfg = tiny_config()
    params = {**TINY[name], "epochs": 2}

    def ctx(run: str, **kw):
        return in_process_context(tmp_path / run, name, progress=False, max_steps_per_epoch=2, **kw)

    ref = run_stage(cfg, name, ctx("ref"), params=params)
    with pytest.raises(FaultInjected):
        run_stage(cfg, name, ctx("run", fault_hook=fault_at(name, 3)), params=params)
    latest = find_latest_checkpoint(tmp_path / "run" / f"stage{name}", stage=name)
    assert latest is not None and latest.name == f"stage{name}_epoch0001"
    with pytest.raises(CheckpointMismatch, match="lr: checkpoint 0.0001, now 0.0005"):
        run_stage(cfg, name, ctx("bad", latest_checkpoint=latest), params={**params, "lr": 5e-4})
    resumed = run_stage(cfg, name, ctx("run", latest_checkpoint=latest), params=params)
    assert resumed.global_step == ref.global_step == 4
    assert strip_times(resumed.history) == strip_times(ref.history)
    assert_same_tensors(state_tensors(resumed.final_checkpoint), state_tensors(ref.final_checkpoint))


def test_competitor_stage_kinds_are_checked(provider):
    cfg = tiny_config()
    with pytest.raises(ValueError, match="advfaces, gmaa"):
        run_stage(cfg, "semanticadv", in_process_context(Path("/nonexistent"), 1, progress=False))
    with pytest.raises(ValueError, match="no hyper-parameter gen_width"):
        run_stage(cfg, "advfaces", in_process_context(Path("/nonexistent"), 1, progress=False), params={"gen_width": 8})


def test_gmaa_attgan_teacher_is_the_stage1_generator(provider, tmp_path: Path):
    from erasablemask.experiments.curriculum.context import StageContext
    from erasablemask.experiments.curriculum.loop import build_trainer

    cfg = tiny_config()
    stage1 = run_stage(cfg, 1, in_process_context(tmp_path / "s1", 1, progress=False, max_steps_per_epoch=1))
    params = {**TINY["gmaa"], "teacher": "attgan", "g_freq": 1}
    with pytest.raises(ValueError, match="stage-1 checkpoint as inputs"):
        build_trainer(cfg, "gmaa", StageContext(progress=False), None, params)
    trainer = build_trainer(cfg, "gmaa", StageContext(progress=False), stage1.final_checkpoint, params)
    saved = state_tensors(stage1.final_checkpoint)
    teacher = trainer.teacher.state_dict()
    assert teacher and all(torch.equal(v, saved[f"models:generator.{k}"]) for k, v in teacher.items())
    assert not any(p.requires_grad for p in trainer.teacher.parameters())
    batch = next(iter(torch.utils.data.DataLoader(trainer.dataset, batch_size=4)))
    logs = trainer.train_step(batch)
    assert 0.0 < logs["G/ssim"] < 1.0 and logs["G/L_adv"] > 0.0
