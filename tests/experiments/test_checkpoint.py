"""Checkpoints: exact round trips, atomic writes, refusals that name the mismatch, exact resume after a crash."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from _curriculum_tiny import assert_same_tensors, state_tensors, strip_times, tiny_config
from torch import nn

from erasablemask.experiments.curriculum.checkpoint import (
    CheckpointMismatch,
    capture_rng,
    decode_tree,
    encode_tree,
    find_latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from erasablemask.experiments.curriculum.context import in_process_context
from erasablemask.experiments.curriculum.faults import FaultInjected, fault_at
from erasablemask.experiments.curriculum.loop import run_stage


def _roundtrip(obj):
    tensors: dict[str, torch.Tensor] = {}
    skeleton = json.loads(json.dumps(encode_tree(obj, tensors)))
    return decode_tree(skeleton, tensors)


def test_optimizer_state_roundtrips_exactly_through_json_and_tensors():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 4)).square().sum().backward()
        opt.step()
    state = _roundtrip(opt.state_dict())
    assert list(state["state"]) == [0, 1]  # int keys survive
    assert state["param_groups"][0]["betas"] == (0.5, 0.999)  # tuples survive
    for k in (0, 1):
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(state["state"][k][name], opt.state_dict()["state"][k][name])
    fresh = torch.optim.Adam(model.parameters(), lr=1e-3)
    fresh.load_state_dict(state)  # accepted by torch


def test_rng_states_restore_every_stream():
    gen = torch.Generator().manual_seed(7)
    saved = _roundtrip(capture_rng({"g": gen}))
    first = (random.random(), np.random.rand(), torch.rand(2), torch.rand(2, generator=gen))
    random.seed(99), np.random.seed(99), torch.manual_seed(99), gen.manual_seed(99)
    restore_rng(saved, {"g": gen})
    again = (random.random(), np.random.rand(), torch.rand(2), torch.rand(2, generator=gen))
    assert first[:2] == again[:2]
    assert torch.equal(first[2], again[2]) and torch.equal(first[3], again[3])


def _save(path: Path, cfg, module: nn.Module, *, stage: int = 1, epoch: int = 1, complete: bool = True) -> Path:
    return save_checkpoint(path, cfg=cfg, stage=stage, epoch=epoch, global_step=epoch * 2, complete=complete,
                           modules={"net": module}, state={"note": "x"})


def test_save_is_atomic_and_overwrites_cleanly(tmp_path: Path):
    cfg = tiny_config()
    net = nn.Linear(2, 2)
    path = _save(tmp_path / "ck", cfg, net)
    with torch.no_grad():
        net.weight.add_(1.0)
    _save(tmp_path / "ck", cfg, net)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temporary or old directories left
    loaded = load_checkpoint(path, cfg, stage=1, purpose="input")
    other = nn.Linear(2, 2)
    loaded.load_module("net", other)
    assert torch.equal(other.weight, net.weight)


def test_checkpoint_from_another_config_is_refused_naming_the_keys(tmp_path: Path):
    path = _save(tmp_path / "ck", tiny_config(), nn.Linear(2, 2))
    with pytest.raises(CheckpointMismatch) as err:
        load_checkpoint(path, tiny_config("model.enc_dim=16", "stage1.lambda_rec=1.0"), stage=1, purpose="input")
    msg = str(err.value)
    assert "model.enc_dim: checkpoint 8, config 16" in msg
    assert "stage1.lambda_rec: checkpoint 150.0, config 1.0" in msg
    # Keys that cannot change stage-1 weights are not compared.
    load_checkpoint(path, tiny_config("attack.epsilon=0.5", "compute.num_to_keep=5"), stage=1, purpose="input")
    # Resuming may ask for more epochs; an input may not come from a run with other epochs.
    load_checkpoint(path, tiny_config("stage1.epochs=9"), stage=1, purpose="resume")
    with pytest.raises(CheckpointMismatch, match="stage1.epochs"):
        load_checkpoint(path, tiny_config("stage1.epochs=9"), stage=1, purpose="input")
    # A protection is evaluated against other black-box models than it was validated on (Table IV's robust
    # entries); a resumed stage keeps scoring the same ones.
    cfg = tiny_config()
    path = _save(tmp_path / "ck2", cfg, nn.Linear(2, 2), stage=2)
    other = tiny_config("attack.black_box=[mini_mobileface_cos_s1]")
    load_checkpoint(path, other, stage=2, purpose="input")
    with pytest.raises(CheckpointMismatch, match="attack.black_box"):
        load_checkpoint(path, other, stage=2, purpose="resume")
    with pytest.raises(CheckpointMismatch, match="attack.surrogates"):
        load_checkpoint(path, tiny_config("attack.surrogates=[mini_irse_cos_s0,mini_incept_arc_s0]"), stage=2, purpose="input")


def test_checkpoint_of_another_architecture_is_refused_naming_the_tensors(tmp_path: Path):
    cfg = tiny_config()
    ckpt = load_checkpoint(_save(tmp_path / "ck", cfg, nn.Linear(2, 2)), cfg, stage=1, purpose="input")
    with pytest.raises(CheckpointMismatch, match=r"net.weight: checkpoint \[2, 2\], model \[3, 2\]"):
        ckpt.load_module("net", nn.Linear(2, 3))
    with pytest.raises(CheckpointMismatch, match="has no module 'restorer'"):
        ckpt.load_module("restorer", nn.Linear(2, 2))


def test_wrong_stage_and_unfinished_input_are_refused(tmp_path: Path):
    cfg = tiny_config()
    path = _save(tmp_path / "ck", cfg, nn.Linear(2, 2), complete=False)
    with pytest.raises(CheckpointMismatch, match="from stage 1, but stage 2"):
        load_checkpoint(path, cfg, stage=2, purpose="resume")
    with pytest.raises(CheckpointMismatch, match="not its final one"):
        load_checkpoint(path, cfg, stage=1, purpose="input")
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory"):
        load_checkpoint(tmp_path, cfg, stage=1, purpose="input")


def test_find_latest_checkpoint_picks_most_steps(tmp_path: Path):
    cfg = tiny_config()
    _save(tmp_path / "a", cfg, nn.Linear(2, 2), epoch=1, complete=False)
    _save(tmp_path / "b", cfg, nn.Linear(2, 2), epoch=3, complete=True)
    _save(tmp_path / "c", cfg, nn.Linear(2, 2), epoch=2, complete=False)
    assert find_latest_checkpoint(tmp_path, stage=1) == tmp_path / "b"
    assert find_latest_checkpoint(tmp_path, stage=2) is None


def test_stage1_resumed_after_a_crash_mid_epoch_ends_bitwise_equal(tmp_path: Path):
    """2 epochs x 2 steps; crash before step 3 (mid epoch 2); resume from epoch 1's checkpoint."""
    cfg = tiny_config("stage1.d_steps_per_g_step=2")
    ref = run_stage(cfg, 1, in_process_context(tmp_path / "ref", 1, progress=False, max_steps_per_epoch=2))
    crashed = in_process_context(tmp_path / "run", 1, progress=False, max_steps_per_epoch=2,
                                 fault_hook=fault_at(1, 3))
    with pytest.raises(FaultInjected):
        run_stage(cfg, 1, crashed)
    latest = find_latest_checkpoint(tmp_path / "run" / "stage1", stage=1)
    assert latest is not None and latest.name == "stage1_epoch0001"
    resumed = run_stage(cfg, 1, in_process_context(tmp_path / "run", 1, progress=False, max_steps_per_epoch=2,
                                                   latest_checkpoint=latest))
    assert resumed.global_step == ref.global_step == 4
    assert_same_tensors(state_tensors(ref.final_checkpoint), state_tensors(resumed.final_checkpoint))
    assert strip_times(resumed.history) == strip_times(ref.history)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]  # epoch 1 before the crash, epoch 2 after resuming
    # A different seed gives different weights: the comparison above can fail.
    other = run_stage(tiny_config("stage1.d_steps_per_g_step=2", "seed=1"),
                      1, in_process_context(tmp_path / "other", 1, progress=False, max_steps_per_epoch=2))
    a, b = state_tensors(ref.final_checkpoint), state_tensors(other.final_checkpoint)
    assert not torch.equal(a["models:generator.enc_layers.0.layers.0.weight"],
                           b["models:generator.enc_layers.0.layers.0.weight"])
