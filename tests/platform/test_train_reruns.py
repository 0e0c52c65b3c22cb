"""Reruns are explicit: a rerun resumes (one run in metrics.jsonl), Ctrl-C leaves one line and a resumable folder,
another config is refused with the choice, invalid flag combinations are refused before training."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch
from _curriculum_tiny import assert_same_tensors, state_tensors

from erasablemask.experiments.curriculum.checkpoint import find_latest_checkpoint
from erasablemask.platform.cli.main import main
from erasablemask.platform.runners import in_process

# Stage 1 of the demo config, shrunk: 2 epochs x 2 steps, in-process, not tracked.
TINY = [
    "data.image_size=64", "data.miniworld.n_identities=6", "data.miniworld.images_per_identity=8",
    "data.miniworld.heldout_identities=2", "model.enc_dim=8", "model.dec_dim=8", "model.dis_dim=8",
    "model.dis_fc_dim=16", "model.enc_layers=3", "model.dec_layers=3", "model.dis_layers=3",
    "stage1.epochs=2", "stage1.batch_size=4",
]  # fmt: skip


def _argv(run_dir: Path, *extra: str, sets: tuple[str, ...] = ()) -> list[str]:
    argv = ["train", "miniworld_demo", "--in-process", "--stage", "1", "--no-track", "--run-dir", str(run_dir),
            "--max-steps-per-epoch", "2"]  # fmt: skip
    for s in [*TINY, *sets]:
        argv += ["--set", s]
    return argv + list(extra)


def _epochs(run_dir: Path) -> list[tuple[int, int]]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(line["stage"], line["epoch"]) for line in lines]


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run's final checkpoint."""
    run_dir = tmp_path_factory.mktemp("ref")
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # as every test here (_one_thread): the same float reductions
    try:
        assert main(_argv(run_dir)) == 0
    finally:
        torch.set_num_threads(old)
    final = find_latest_checkpoint(run_dir / "stage1", stage=1, complete=True)
    assert final is not None
    return final


def test_rerun_into_the_same_run_dir_resumes_and_logs_one_run(tmp_path: Path, reference: Path, capsys):
    run_dir = tmp_path / "run"
    assert main(_argv(run_dir)) == 0
    capsys.readouterr()
    assert main(_argv(run_dir)) == 0
    out = capsys.readouterr().out
    resumed = [line for line in out.splitlines() if line.startswith("resuming")]
    assert resumed == [f"resuming {run_dir.resolve()}: stage 1 finished ({run_dir.resolve()}/stage1/checkpoints/"
                       "stage1_epoch0002)"]  # fmt: skip
    assert "stage 1: already finished" in out
    assert _epochs(run_dir) == [(1, 1), (1, 2)]  # one run, not two appended
    # More epochs for the same weights' config: resumed from epoch 2, not restarted.
    assert main(_argv(run_dir, sets=("stage1.epochs=3",))) == 0
    assert "stage 1 from epoch 2/3" in capsys.readouterr().out
    assert _epochs(run_dir) == [(1, 1), (1, 2), (1, 3)]


def test_interrupted_run_prints_one_line_and_its_command_resumes_to_the_uninterrupted_weights(
    tmp_path: Path, reference: Path, capsys, monkeypatch
):
    run_dir = tmp_path / "run"
    loop = in_process.run_stage_loop

    def interrupted_at_step_3(cfg, stage, ctx, **kw):  # Ctrl-C mid epoch 2 (after epoch 1's checkpoint)
        def hook(s: int, step: int) -> None:
            if step == 3:
                raise KeyboardInterrupt

        ctx.fault_hook = hook
        return loop(cfg, stage, ctx, **kw)

    monkeypatch.setattr(in_process, "run_stage_loop", interrupted_at_step_3)
    assert main(_argv(run_dir)) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    ours = [line for line in err.splitlines() if line.startswith("erasablemask")]  # the rest: progress bars
    assert len(ours) == 1 and err.rstrip().endswith(ours[0]), err
    ckpt = run_dir.resolve() / "stage1" / "checkpoints" / "stage1_epoch0001"
    assert ours[0].startswith(f"erasablemask train: interrupted; the last complete checkpoint is {ckpt}; resume with: ")
    command = shlex.split(ours[0].split("resume with: ", 1)[1])
    assert command[:2] == ["erasablemask", "train"] and "--resume" in command
    assert _epochs(run_dir) == [(1, 1)]

    monkeypatch.setattr(in_process, "run_stage_loop", loop)
    assert main(command[1:]) == 0
    assert "resuming" in capsys.readouterr().out
    assert _epochs(run_dir) == [(1, 1), (1, 2)]
    final = find_latest_checkpoint(run_dir / "stage1", stage=1, complete=True)
    assert_same_tensors(state_tensors(reference), state_tensors(final))


def test_another_config_is_refused_naming_the_keys_and_the_choice_then_overwrite_starts_over(
    tmp_path: Path, reference: Path, capsys
):
    run_dir = tmp_path / "run"
    assert main(_argv(run_dir)) == 0
    before = (run_dir / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(_argv(run_dir, sets=("model.enc_dim=16",))) == 2
    err = capsys.readouterr().err
    assert "model.enc_dim: checkpoint 8, config 16" in err
    assert all(choice in err for choice in ("--overwrite", "another --run-dir", "--resume"))
    assert (run_dir / "metrics.jsonl").read_text() == before  # nothing trained, nothing appended
    assert main(_argv(run_dir, "--overwrite", sets=("model.enc_dim=16",))) == 0
    assert _epochs(run_dir) == [(1, 1), (1, 2)]
    cfg_line = (run_dir / "config.yaml").read_text()
    assert "enc_dim: 16" in cfg_line


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--evaluate",), "--evaluate needs a stage-2 or stage-3 checkpoint"),
        (("--resume",), "holds no stage-1 checkpoint to resume"),
        (("--resume", "--overwrite"), "choose one"),
    ],
)
def test_invalid_combinations_are_refused_before_training(tmp_path: Path, capsys, extra, message):
    run_dir = tmp_path / "run"
    assert main(_argv(run_dir, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (run_dir / "stage1").exists() and not (run_dir / "metrics.jsonl").exists()


@pytest.mark.slow
def test_ray_rerun_after_a_failed_stage_resumes_from_the_newest_checkpoint_to_the_uninterrupted_weights(
    tmp_path: Path, reference: Path, capsys
):
    from erasablemask.experiments.config.loading import load_config
    from erasablemask.platform.pipeline import run_pipeline
    from erasablemask.platform.ray_session import ray_session

    run_dir = tmp_path / "ray"
    clean = load_config("miniworld_demo", [*TINY, "compute.cpus_per_worker=1"])
    # A worker failure at step 3 (mid epoch 2) with no restarts left: the stage fails after epoch 1's checkpoint.
    faulty = load_config("miniworld_demo", [*TINY, "compute.cpus_per_worker=1", "compute.max_failures=0",
                                            "compute.fault_injection.stage=1", "compute.fault_injection.step=3"])  # fmt: skip
    options = dict(run_dir=run_dir, stages=(1,), runner="ray", track=False, max_steps_per_epoch=2)
    from ray.train import TrainingFailedError

    with ray_session(cfg=clean):
        with pytest.raises(TrainingFailedError, match="fault injected at stage 1, step 3"):
            run_pipeline(faulty, **options)
        assert _epochs(run_dir) == [(1, 1)]
        capsys.readouterr()
        result = run_pipeline(clean, **options)  # the same command again: resumed, not restarted
    out = capsys.readouterr().out
    assert f"resuming {run_dir.resolve()}: stage 1 from epoch 1/2" in out
    assert _epochs(run_dir) == [(1, 1), (1, 2)]
    assert result.stages[1].global_step == 4
    assert_same_tensors(state_tensors(reference), state_tensors(result.final_checkpoint))
