"""Integrity: checkpoints and cached weights record sha256 digests; damaged files are refused naming the file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from _curriculum_tiny import tiny_config
from safetensors.torch import save_file
from torch import nn

from erasablemask.experiments.curriculum.checkpoint import CHECKPOINT_FILES, load_checkpoint, save_checkpoint
from erasablemask.models.integrity import MANIFEST, IntegrityError, seal_file, sidecar_path


def _xor_middle(path: Path, n: int = 4096) -> None:
    """XOR ``n`` bytes in the middle of ``path`` (tensor data of a safetensors file, not its header)."""
    blob = bytearray(path.read_bytes())
    mid = len(blob) // 2
    for i in range(mid, mid + n):
        blob[i] ^= 0xFF
    path.write_bytes(bytes(blob))


def _save(path: Path, cfg, *, epoch: int, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    net = nn.Linear(64, 128)  # 32 KB of weights: the middle of the file is tensor data
    return save_checkpoint(
        path,
        cfg=cfg,
        stage=1,
        epoch=epoch,
        global_step=2 * epoch,
        complete=False,
        modules={"net": net},
        state={"history": [{"epoch": epoch}], "m": torch.ones(3)},
    )


@pytest.fixture(scope="module")
def cfg():
    return tiny_config()


def test_checkpoint_records_the_sha256_of_each_file_and_is_readable_like_a_run_folder(tmp_path: Path, cfg):
    path = _save(tmp_path / "ck", cfg, epoch=1)
    manifest = json.loads((path / MANIFEST).read_text())
    assert sorted(manifest["files"]) == sorted(CHECKPOINT_FILES)
    import hashlib

    for name, entry in manifest["files"].items():
        assert entry["sha256"] == hashlib.sha256((path / name).read_bytes()).hexdigest()
        assert entry["bytes"] == (path / name).stat().st_size
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.iterdir()}
    assert modes == {name: 0o644 for name in (*CHECKPOINT_FILES, MANIFEST)}
    assert stat.S_IMODE(path.stat().st_mode) == 0o755


def test_checkpoint_with_4kb_of_tensor_data_xored_is_refused_naming_the_file_and_the_previous_one(tmp_path: Path, cfg):
    first = _save(tmp_path / "stage1_epoch0001", cfg, epoch=1)
    second = _save(tmp_path / "stage1_epoch0002", cfg, epoch=2)
    ok = load_checkpoint(second, cfg, stage=1, purpose="resume")
    assert ok.epoch == 2
    _xor_middle(second / "models.safetensors")
    with pytest.raises(IntegrityError) as err:
        load_checkpoint(second, cfg, stage=1, purpose="resume")
    msg = str(err.value)
    assert f"'{second / 'models.safetensors'}' is damaged (sha256" in msg
    assert f"--resume {first}" in msg and "\n" not in msg
    load_checkpoint(first, cfg, stage=1, purpose="resume")  # the previous one still loads


def test_truncated_state_json_is_refused_naming_it_with_and_without_a_manifest(tmp_path: Path, cfg, capsys):
    path = _save(tmp_path / "ck", cfg, epoch=1)
    state_json = path / "state.json"
    state_json.write_text(state_json.read_text()[:200])
    with pytest.raises(IntegrityError, match=rf"'{state_json}' is damaged \(\d+ bytes, \d+ written: truncated"):
        load_checkpoint(path, cfg, stage=1, purpose="resume")
    (path / MANIFEST).unlink()  # a checkpoint from before manifests: still named, never a bare JSONDecodeError
    with pytest.raises(IntegrityError, match=rf"'{state_json}' is not readable JSON"):
        load_checkpoint(path, cfg, stage=1, purpose="resume")
    assert "has no manifest.json" in capsys.readouterr().err


def test_checkpoint_without_manifest_loads_with_one_warning_and_damaged_safetensors_are_named(
    tmp_path: Path, cfg, capsys
):
    path = _save(tmp_path / "ck", cfg, epoch=1)
    (path / MANIFEST).unlink()
    assert load_checkpoint(path, cfg, stage=1, purpose="resume").epoch == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: checkpoint '{path}' has no manifest.json")
    models = path / "models.safetensors"
    models.write_bytes(models.read_bytes()[: models.stat().st_size // 2])  # truncated
    with pytest.raises(IntegrityError, match=rf"'{models}' is not a readable safetensors file"):
        load_checkpoint(path, cfg, stage=1, purpose="resume")


def test_flipped_header_byte_is_refused(tmp_path: Path, cfg):
    path = _save(tmp_path / "ck", cfg, epoch=1)
    f = path / "state.safetensors"
    blob = bytearray(f.read_bytes())
    blob[10] ^= 0x55
    f.write_bytes(bytes(blob))
    with pytest.raises(IntegrityError, match=rf"'{f}' is damaged"):
        load_checkpoint(path, cfg, stage=1, purpose="input")


def test_tampered_mini_zoo_cache_entry_is_refused_naming_it_and_the_fix(tmp_path: Path, monkeypatch):
    from erasablemask.experiments.fr_tools import mini_zoo
    from erasablemask.experiments.fr_tools.mini_world import MiniZooWorld
    from erasablemask.models.fr.mini_zoo import build_mini_recognizer

    monkeypatch.setenv("ERASABLEMASK_HOME", str(tmp_path))
    name, world = "mini_incept_arc_s0", MiniZooWorld()
    path = mini_zoo.mini_weights_path(name, world)
    path.parent.mkdir(parents=True)
    model = build_mini_recognizer(name)
    save_file({k: v.contiguous() for k, v in model.backbone.state_dict().items()}, str(path))
    mini_zoo._seal_once(path)  # an entry cached before sidecars: sealed on first use
    assert sidecar_path(path).read_text().split()[1] == path.name
    loaded = mini_zoo._load(name, path)
    assert torch.equal(
        loaded.backbone.state_dict()[next(iter(loaded.backbone.state_dict()))],
        model.backbone.state_dict()[next(iter(model.backbone.state_dict()))],
    )
    _xor_middle(path)
    with pytest.raises(IntegrityError) as err:
        mini_zoo._load(name, path)
    msg = str(err.value)
    assert f"'{path}' is damaged" in msg and "delete the cache entry" in msg and sidecar_path(path).name in msg


def test_tampered_converted_weights_are_refused(tmp_path: Path, monkeypatch):
    from erasablemask.models.fr import real_weights

    monkeypatch.setenv("ERASABLEMASK_HOME", str(tmp_path))
    target = real_weights.weights_dir("dlib_resnet") / "dlib_resnet_v1_faceapi.safetensors"
    save_file({"w": torch.arange(4096, dtype=torch.float32)}, str(target))
    seal_file(target)
    assert real_weights.dlib_converted("faceapi") == target  # cached and intact: no conversion
    assert torch.equal(real_weights.load_dlib_state_dict(target)["w"], torch.arange(4096, dtype=torch.float32))
    _xor_middle(target, 1024)
    os.utime(target)  # a new mtime, as any write gives
    with pytest.raises(IntegrityError, match=rf"'{target}' is damaged.*converted again"):
        real_weights.dlib_converted("faceapi")
    with pytest.raises(IntegrityError, match=rf"'{target}' is damaged"):
        real_weights.load_dlib_state_dict(target)
