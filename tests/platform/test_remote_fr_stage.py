"""Stage 2 with its surrogates in Ray actors: the same parameter update as with local surrogates.

The tiny curriculum config; one stage-2 epoch of one step (the meta-auxiliary
attack, second order, through the actors), then validation. Once in this
process with the actors injected through ``fr_model_provider``, once by the
Ray runner with ``compute.remote_fr.models`` set; both against the in-process
run with local surrogates.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _curriculum_tiny import SURROGATES, state_tensors, tiny_config, tiny_zoo

from erasablemask.experiments.curriculum.context import in_process_context
from erasablemask.experiments.curriculum.loop import run_stage
from erasablemask.experiments.fr_tools.zoo import fr_model_provider

pytestmark = pytest.mark.slow

REMOTE = [f"compute.remote_fr.models=[{','.join(SURROGATES)}]", "compute.remote_fr.cpus_per_actor=0.5",
          "compute.cpus_per_worker=1"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    """The private FR cache, then a local Ray (its workers inherit the cache path), and stage 1's checkpoint."""
    from erasablemask.platform.ray_session import ray_session

    with tiny_zoo(tmp_path_factory.getbasetemp() / "erasablemask_home"):
        torch.set_num_threads(1)
        run = tmp_path_factory.mktemp("stage1")
        stage1 = run_stage(tiny_config(), 1, in_process_context(run, 1, progress=False, max_steps_per_epoch=1))
        with ray_session(cfg=tiny_config(*REMOTE)):
            yield stage1.final_checkpoint


def _stage2(cfg, run: Path, stage1: Path) -> dict[str, torch.Tensor]:
    result = run_stage(cfg, 2, in_process_context(run, 2, progress=False, max_steps_per_epoch=1), inputs=stage1)
    return state_tensors(result.final_checkpoint)


def _assert_same_update(remote: dict[str, torch.Tensor], local: dict[str, torch.Tensor], before: Path) -> None:
    start = state_tensors(before)
    key = "models:protector.perturbation_encoder.enc_layers.0.layers.0.weight"
    assert not torch.equal(local[key], start["models:generator.enc_layers.0.layers.0.weight"]), "no update at all"
    assert sorted(remote) == sorted(local)
    trained = [k for k in local if k.startswith(("models:protector.perturbation_encoder", "models:restorer"))]
    assert trained
    worst = max(float((remote[k].double() - local[k].double()).abs().max()) for k in trained)
    assert worst <= 1e-6, f"remote vs local surrogates: parameters differ by up to {worst:.2e} after one step"


def test_one_stage2_step_with_surrogates_in_actors_updates_the_parameters_as_local_ones(env, tmp_path) -> None:
    from erasablemask.platform.fr_actors import start_fr_actors_for_config

    stage1 = env
    local = _stage2(tiny_config("stage2.epochs=1"), tmp_path / "local", stage1)
    cfg = tiny_config("stage2.epochs=1", *REMOTE)
    actors = start_fr_actors_for_config(cfg)
    try:
        with fr_model_provider(actors.provider):
            remote = _stage2(cfg, tmp_path / "remote", stage1)
        calls = {n: actors.proxy(n).stats.round_trips for n in SURROGATES}
    finally:
        actors.shutdown()
    assert all(c > 0 for c in calls.values()), f"the surrogates were not served by the actors: {calls}"
    _assert_same_update(remote, local, stage1)


def test_the_ray_runner_serves_the_configured_surrogates_from_actors_with_the_same_update(env, tmp_path) -> None:
    from erasablemask.platform.runners.ray_train import run_stage as ray_run_stage

    stage1 = env
    local = _stage2(tiny_config("stage2.epochs=1"), tmp_path / "local", stage1)
    before = _fr_actor_ids()
    result = ray_run_stage(tiny_config("stage2.epochs=1", *REMOTE), 2, run_dir=tmp_path / "ray", inputs=stage1,
                           progress=False, max_steps_per_epoch=1)
    started = _fr_actor_ids() - before
    assert len(started) == len(SURROGATES), f"the runner started {len(started)} FR actors, not one per surrogate"
    _assert_same_update(state_tensors(result.final_checkpoint), local, stage1)


def _fr_actor_ids() -> set[str]:
    """Every FRActor this Ray instance has known, alive or dead (the State API of ray_session's dashboard)."""
    from ray.util.state import list_actors

    return {a.actor_id for a in list_actors(filters=[("class_name", "=", "FRActor")], limit=1000, detail=False)}
