"""The pipeline: stages chained in one place, the evaluation's files, MLflow nesting sweep -> trial -> stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _curriculum_tiny import BLACK_BOX, SURROGATES, state_tensors, tiny_config, tiny_zoo

from erasablemask.platform.pipeline import preflight, run_pipeline


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory):
    # The same cache as tests/experiments/test_curriculum.py: in one session the mini zoo is trained once.
    with tiny_zoo(tmp_path_factory.getbasetemp() / "erasablemask_home"):
        yield


@pytest.mark.slow
def test_pipeline_chains_stages_evaluates_and_nests_the_trial_under_a_sweep_run(
    zoo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    from erasablemask.experiments.evaluation.records import read_records
    from erasablemask.platform.runners import in_process

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "run"
    cfg = tiny_config("stage1.epochs=1", "stage2.epochs=1", "stage3.epochs=1", "evaluation.max_images=4")

    # A sweep's run in the same (default) store: the trial must become its child.
    uri = f"sqlite:///{(run / 'mlflow.db').resolve()}"
    run.mkdir()
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("sweep-exp", artifact_location=(run / "mlartifacts").resolve().as_uri())
    sweep = client.create_run(exp, run_name="sweep").info.run_id

    calls: list[tuple[int, Path | None]] = []
    real = in_process.run_stage

    def spy(cfg, stage, **kw):
        calls.append((stage, kw["inputs"]))
        return real(cfg, stage, **kw)

    monkeypatch.setattr(in_process, "run_stage", spy)
    result = run_pipeline(cfg, run_dir=run, runner="in-process", evaluate=True, parent_run_id=sweep,
                          progress=False, max_steps_per_epoch=1)

    # The chain: stage k+1 starts from stage k's final checkpoint.
    assert calls == [(1, None), (2, result.stages[1].final_checkpoint), (3, result.stages[2].final_checkpoint)]
    assert result.final_checkpoint == result.stages[3].final_checkpoint
    assert [(s, r.global_step, len(r.history)) for s, r in result.stages.items()] == [(1, 1, 1), (2, 1, 1), (3, 1, 1)]
    assert all(r.wall_s > 0 for r in result.stages.values())
    s2, s3 = state_tensors(result.stages[2].final_checkpoint), state_tensors(result.final_checkpoint)
    key = "models:protector.perturbation_encoder.enc_layers.0.layers.0.weight"
    assert torch.equal(s2[key], s3[key])  # stage 3 trains R alone on stage 2's protector

    # The evaluation's files, and what they hold.
    assert (run / "config.yaml").is_file() and (run / "protection_grid.png").is_file()
    summary = json.loads(result.evaluation_json.read_text())
    assert summary == json.loads(json.dumps(result.evaluation.summary_json()))
    records = read_records(result.records_path)  # the versioned schema
    assert len(records) == len(result.evaluation.records) > 0 and result.evaluation.n_images == 4
    assert set(records["run"]) == {result.trial_run_id}  # the records name the trial's MLflow run
    assert set(records["model"]) == set(SURROGATES + BLACK_BOX)

    # MLflow: sweep -> trial -> 3 stage runs; test metrics and the files on the trial run.
    assert result.tracking_uri == uri
    trial = client.get_run(result.trial_run_id)
    assert trial.info.status == "FINISHED" and trial.data.tags["mlflow.parentRunId"] == sweep
    assert trial.data.tags["stage"] == "all" and trial.data.tags["runner"] == "in-process"
    assert trial.info.experiment_id == client.get_run(sweep).info.experiment_id
    children = client.search_runs([trial.info.experiment_id], f"tags.mlflow.parentRunId = '{trial.info.run_id}'")
    assert {c.data.tags["stage"]: c.info.run_id for c in children} == {str(s): r for s, r in
                                                                      result.stage_run_ids.items()}
    assert sorted(result.stage_run_ids) == [1, 2, 3] and all(c.info.status == "FINISHED" for c in children)
    m = BLACK_BOX[0]
    logged = trial.data.metrics
    assert logged[f"test/asr/{m}"] == pytest.approx(result.evaluation.metrics[f"asr/{m}"])
    assert logged[f"test/asr_at_jpeg/{m}"] == pytest.approx(result.evaluation.metrics[f"asr@jpeg/{m}"])
    artifacts = {a.path for a in client.list_artifacts(trial.info.run_id)}
    assert {"evaluation.json", "records.parquet", "grids", "manifest.json"} <= artifacts
    assert not (run / "mlflow.json").exists()  # no pointer file: the result names the run


def test_preflight_refuses_what_cannot_work_before_anything_runs(tmp_path: Path) -> None:
    cfg = tiny_config()
    ok = dict(run_dir=tmp_path, stages=(1, 2), runner="in-process", track=False)
    preflight(cfg, **ok)
    with pytest.raises(ValueError, match="increasing values from 1, 2, 3"):
        preflight(cfg, **{**ok, "stages": (2, 1)})
    with pytest.raises(ValueError, match="runner 'slurm'"):
        preflight(cfg, **{**ok, "runner": "slurm"})
    with pytest.raises(ValueError, match="stage-2 or stage-3 checkpoint"):
        preflight(cfg, **{**ok, "stages": (1,)}, evaluate=True)
    with pytest.raises(FileNotFoundError, match=r"--inputs .*not a checkpoint directory"):
        preflight(cfg, **ok, inputs=tmp_path)
    remote = tiny_config(f"compute.remote_fr.models=[{cfg.attack.surrogates[0]}]")
    with pytest.raises(ValueError, match=r"served by Ray actors, which only the Ray runner starts"):
        preflight(remote, **ok)
    preflight(remote, **{**ok, "stages": (1,)})  # stage 1 uses no FR model
    with pytest.raises(ValueError, match="stage 2 needs stage 1's final checkpoint"):
        run_pipeline(cfg, run_dir=tmp_path / "empty", stages=(2,), runner="in-process", track=False, progress=False)
