"""Evaluation fanned out over Ray actors (one FR model per actor) gives the sequential evaluation's records.

The tiny config's three mini FR models (two surrogates, one black box), a
gradient attack on a surrogate as the protection (a competitor-style scheme,
rebuilt in every actor from a picklable factory), two transforms; the
gathered records must equal ``evaluate_protection``'s exactly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import _one_step_fgsm
import pandas as pd
import pytest
import torch
from _curriculum_tiny import BLACK_BOX, SURROGATES, tiny_config, tiny_zoo
from _one_step_fgsm import OneStepFGSM

from erasablemask.experiments.evaluation.evaluate import evaluate_protection
from erasablemask.experiments.evaluation.metrics import summary_metrics
from erasablemask.experiments.evaluation.protection import Protection
from erasablemask.platform.eval_fanout import FREvalPool, canonical_order
from erasablemask.platform.fr_actors import build_one_fr_model

pytestmark = pytest.mark.slow

TRANSFORMS = ["none", "jpeg"]


class _FGSMFactory:
    """Picklable: builds the attack on the config's surrogate wherever it is called (driver or actor)."""

    def __init__(self, cfg_json: dict, name: str) -> None:
        self.cfg_json, self.name = cfg_json, name

    def __call__(self) -> Protection:
        return OneStepFGSM(build_one_fr_model(self.cfg_json, self.name), eps=8 / 255)


def test_fanned_out_evaluation_gathers_the_sequential_records(tmp_path: Path) -> None:
    import ray.cloudpickle

    from erasablemask.platform.ray_session import ray_session

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import this test module
    ray.cloudpickle.register_pickle_by_value(_one_step_fgsm)  # nor tests/_one_step_fgsm.py
    with tiny_zoo(tmp_path / "home"):
        torch.set_num_threads(1)  # the actors run one thread too: the same float reductions
        cfg = tiny_config("compute.remote_fr.cpus_per_actor=0.5")
        factory = _FGSMFactory(cfg.model_dump(mode="json"), SURROGATES[0])
        sequential = evaluate_protection(cfg, factory(), run="r", stage=None, transforms=TRANSFORMS, max_images=8,
                                         attribute_accuracy=False, progress=False)
        with ray_session(cfg=cfg), FREvalPool(cfg) as pool:
            assert list(pool.handles) == [*SURROGATES, *BLACK_BOX]  # one actor per model
            pids = {ray.get(h.__ray_call__.remote(lambda actor: __import__("os").getpid()))
                    for h in pool.handles.values()}
            fanned = pool.records(factory, run="r", stage=None, transforms=TRANSFORMS, max_images=8)
    assert len(pids) == 3, "the models were not scored in separate actor processes"
    expected = canonical_order(sequential.records)
    # clean + protected@t + the destroyed control (no attribute-only rows)
    assert len(fanned) == 8 * 3 * (1 + len(TRANSFORMS) + 1)
    assert set(fanned["model"]) == {*SURROGATES, *BLACK_BOX}
    pd.testing.assert_frame_equal(fanned, expected, check_exact=True)
    gain = fanned[fanned["kind"] == "protected"]["cos_target"].mean() - fanned[fanned["kind"] == "clean"][
        "cos_target"].mean()
    assert gain != 0  # the attack changed the faces, so equality is not between two copies of the clean rows
    assert summary_metrics(fanned) == summary_metrics(sequential.records)
