"""Evaluation scores any Protection into per-sample records; the summary from the records equals the tally it replaced.

Fast tests use the tiny real config (seeded targets, untrained ErasableMask
networks) with small seeded FR embedders that keep the evaluation's FR
contract (unit embeddings, ``threshold(far)``); the slow ones train stages 1-2
for a step and evaluate with the real mini zoo.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from _curriculum_tiny import BLACK_BOX, SURROGATES, tiny_config, tiny_zoo
from _one_step_fgsm import OneStepFGSM
from torch import nn

from erasablemask.experiments.curriculum.build import build_generator, build_protection, build_restorer
from erasablemask.experiments.data.attribute_codes import code_attributes
from erasablemask.experiments.evaluation.batches import evaluation_batches
from erasablemask.experiments.evaluation.erasablemask_protection import ErasableMaskProtection
from erasablemask.experiments.evaluation.evaluate import evaluate_checkpoint, evaluate_protection
from erasablemask.experiments.evaluation.metrics import cosine, destroy, summary_metrics
from erasablemask.experiments.evaluation.protection import Protection
from erasablemask.experiments.evaluation.records import read_records, write_records
from erasablemask.experiments.evaluation.targets import ImpersonationTargets, build_targets, target_index_for
from erasablemask.experiments.evaluation.validator import ProtectionValidator
from erasablemask.experiments.seeding import derive_seed
from erasablemask.models.erasablemask import restorer_code
from erasablemask.models.eval_transforms import build_eval_transform

TRANSFORMS = ["none", "jpeg", "gaussian"]


class _SeededFR(nn.Module):
    """A random conv embedder: (N, 3, H, W) in [-1, 1] -> unit (N, 16); thresholds set by the test."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, 5, stride=2)
        self.fc = nn.Linear(8 * 16, 16)
        self.thresholds: dict[float, float] = {0.1: 0.0, 0.01: 0.0}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fc(F.adaptive_avg_pool2d(torch.tanh(self.conv(x)), 4).flatten(1)), dim=1)

    def threshold(self, far: float) -> float:
        if far not in self.thresholds:
            raise LookupError(f"no threshold at FAR {far}")
        return self.thresholds[far]


class _Identity(Protection):
    """Protects nothing: the protected face is the clean face."""

    name = "identity"

    def _protect(self, x, x_target, *, att_a, att_b):
        return x.clone()


@pytest.fixture(scope="module")
def world():
    """Tiny config with seeded targets, untrained ErasableMask networks and seeded FR embedders."""
    cfg = tiny_config("attack.target.selection=seeded", "attack.target.count=2")
    torch.manual_seed(0)
    G = build_generator(cfg)
    protection = ErasableMaskProtection(cfg, build_protection(cfg, G), build_restorer(cfg, G))
    models = {name: _SeededFR(k) for k, name in enumerate(SURROGATES + BLACK_BOX)}
    targets = build_targets(cfg)
    # Thresholds inside the scores' range, so that every rate is a fraction, not 0 or 1.
    first = ProtectionValidator(cfg, models, targets, "cpu", split="test").score(protection, TRANSFORMS)
    for name, fr in models.items():
        rows = first[first["model"] == name]
        fr.thresholds = {0.01: float(rows["cos_target"].quantile(0.6)),
                         0.1: float(rows["cos_restored_target"].quantile(0.4)), 0.001: 0.99}
    return cfg, protection, models, targets


def _tally_summary(cfg, protector, restorer, models, targets, transforms) -> dict[str, float]:
    """The summary as evaluate.py computed it before per-sample records: cosines tallied per (model, kind)."""
    tau = {m: {"asr": fr.threshold(cfg.evaluation.asr_far), "esr": fr.threshold(cfg.evaluation.esr_far),
               "idr": fr.threshold(0.01)} for m, fr in models.items()}
    scores: dict[tuple[str, str], list[torch.Tensor]] = defaultdict(list)
    protector.eval()
    restorer.eval()
    with torch.no_grad():
        t_emb = {m: fr(targets.eval_images) for m, fr in models.items()}
        pair = {m: cosine(fr(targets.train_images), t_emb[m]) for m, fr in models.items()}
        for k, b in enumerate(evaluation_batches(cfg, "test")):
            which = target_index_for(b.index, len(targets))
            tgt = {m: e if which is None else e[which] for m, e in t_emb.items()}
            a_a, a_b = code_attributes(b.att_a, cfg), code_attributes(b.att_b, cfg)
            out = protector.protect(b.x, a_b)
            for m, fr in models.items():
                emb = fr(b.x)
                scores[m, "clean"].append(cosine(emb, tgt[m]))
                scores[m, "clean_source"].append(cosine(emb, fr(b.x_other)))
                scores[m, "attr_only"].append(cosine(fr(out.x_cov_b), tgt[m]))
                scores[m, "destroyed"].append(cosine(fr(destroy(out.x_adv)), tgt[m]))
                scores[m, "destroyed_source"].append(cosine(fr(destroy(out.x_adv)), fr(b.x_other)))
                scores[m, "identity"].append(b.identity.float())
            for t in transforms:
                x_t = build_eval_transform(t)(out.x_adv, seed=derive_seed(cfg.seed, "eval_transform", t, k))
                x_rec = restorer(x_t, restorer_code(cfg.protection.restorer_attribute_input, a_a, a_b))
                for m, fr in models.items():
                    scores[m, f"protected@{t}"].append(cosine(fr(x_t), tgt[m]))
                    scores[m, f"restored_target@{t}"].append(cosine(fr(x_rec), tgt[m]))
                    scores[m, f"restored_source@{t}"].append(cosine(fr(x_rec), fr(b.x_other)))
    s = {key: torch.cat(v) for key, v in scores.items()}
    out: dict[str, float] = {}
    for m in models:
        out[f"asr_clean/{m}"] = float((s[m, "clean"] > tau[m]["asr"]).float().mean())
        out[f"asr_attr_only/{m}"] = float((s[m, "attr_only"] > tau[m]["asr"]).float().mean())
        out[f"target_pair_cos/{m}"] = float(pair[m].mean())
        out[f"target_pair_verified/{m}"] = float((pair[m] > tau[m]["asr"]).float().mean())
        out[f"idr_clean/{m}"] = float((s[m, "clean_source"] > tau[m]["idr"]).float().mean())
        out[f"esr_clean/{m}"] = float((s[m, "clean"] < tau[m]["esr"]).float().mean())
        out[f"esr_attr_only/{m}"] = float((s[m, "attr_only"] < tau[m]["esr"]).float().mean())
        out[f"esr_destroyed/{m}"] = float((s[m, "destroyed"] < tau[m]["esr"]).float().mean())
        out[f"idr_destroyed/{m}"] = float((s[m, "destroyed_source"] > tau[m]["idr"]).float().mean())
        for t in transforms:
            sfx = "" if t == "none" else f"@{t}"
            out[f"asr{sfx}/{m}"] = float((s[m, f"protected@{t}"] > tau[m]["asr"]).float().mean())
            out[f"esr{sfx}/{m}"] = float((s[m, f"restored_target@{t}"] < tau[m]["esr"]).float().mean())
            out[f"esr_unrestored{sfx}/{m}"] = float((s[m, f"protected@{t}"] < tau[m]["esr"]).float().mean())
            out[f"idr{sfx}/{m}"] = float((s[m, f"restored_source@{t}"] > tau[m]["idr"]).float().mean())
            out[f"cos{sfx}/{m}"] = float(s[m, f"protected@{t}"].mean())
            out[f"n_images{sfx}/{m}"] = float(len(s[m, "identity"]))
            out[f"n_identities{sfx}/{m}"] = float(len(s[m, "identity"].unique()))
    for group, names in (("surrogates", cfg.attack.surrogates), ("black_box", cfg.attack.black_box)):
        for key in sorted({k.split("/")[0] for k in out}):
            vals = [out[f"{key}/{n}"] for n in names if f"{key}/{n}" in out]
            if vals:
                out[f"{key}/{group}_mean"] = sum(vals) / len(vals)
    return out


def _assert_same_summary(got: dict[str, float], want: dict[str, float]) -> None:
    assert sorted(got) == sorted(want)
    different = {k: (got[k], want[k]) for k in want if got[k] != pytest.approx(want[k], rel=1e-6, abs=1e-7)}
    assert not different


def test_summary_from_records_equals_the_tally_it_replaced(world):
    cfg, protection, models, targets = world
    records = ProtectionValidator(cfg, models, targets, "cpu", split="test").score(protection, TRANSFORMS)
    got = summary_metrics(records, intervals=False)
    want = _tally_summary(cfg, protection.protector, protection.restorer, models, targets, TRANSFORMS)
    _assert_same_summary(got, want)
    fractions = [v for k, v in got.items() if k.startswith(("asr/", "esr/", "idr/")) and "_mean" not in k]
    assert any(0.0 < v < 1.0 for v in fractions)  # the comparison is not between all-0 or all-1 rates
    assert set(records["target"]) == set(targets.names)  # two targets, by data-set index


def test_records_have_one_row_per_image_model_and_transform(world):
    cfg, protection, models, targets = world
    validator = ProtectionValidator(cfg, models, targets, "cpu", split="test")
    records = validator.score(protection, TRANSFORMS, run="trial-7", stage=None)
    n = validator.n_images
    assert len(records) == n * len(models) * (3 + len(TRANSFORMS))
    counts = records.groupby(["kind", "transform"]).size().to_dict()
    assert counts == {("attr_only", "none"): n * 3, ("clean", "none"): n * 3, ("destroyed", "none"): n * 3,
                      **{("protected", t): n * 3 for t in TRANSFORMS}}
    assert set(records["run"]) == {"trial-7"} and set(records["method"]) == {"erasablemask"}
    assert records["stage"].isna().all() and set(records["role"]) == {"surrogate", "black_box"}
    protected = records[records["kind"] == "protected"]
    assert protected["cos_restored_target"].notna().all() and protected["identity_restored"].notna().all()
    baseline = records[records["kind"] != "protected"]
    assert baseline["cos_restored_target"].isna().all() and baseline["erasion_success"].isna().all()
    assert records["source_identity"].notna().all()  # mini-world identities are known


def test_any_protection_is_scored_and_the_identity_protection_has_the_clean_asr(world):
    cfg, _, models, targets = world
    report = evaluate_protection(cfg, _Identity(), run="t", stage=None, models=models, targets=targets,
                                 transforms=["none"], attribute_accuracy=False, progress=False)
    rows = report.records
    clean = rows[rows["kind"] == "clean"].set_index(["model", "sample"])["cos_target"]
    protected = rows[rows["kind"] == "protected"].set_index(["model", "sample"])["cos_target"]
    pd.testing.assert_series_equal(protected.sort_index(), clean.sort_index())
    for m in models:
        assert report.metrics[f"asr/{m}"] == report.metrics[f"asr_clean/{m}"]
        assert f"esr/{m}" not in report.metrics and f"asr_attr_only/{m}" not in report.metrics
    quality = {k: v for k, v in report.metrics.items() if k.startswith("quality/")}
    assert quality and all(k.endswith("_protected_vs_source") for k in quality)  # nothing edited, nothing restored
    assert quality["quality/l1_protected_vs_source"] == 0.0 and quality["quality/ssim_protected_vs_source"] == 1.0
    assert set(rows["kind"]) == {"clean", "protected", "destroyed"} and rows["cos_restored_target"].isna().all()
    assert report.method == "identity" and report.stage is None and report.n_images == 12


def test_a_gradient_attack_written_against_the_interface_moves_faces_towards_the_target(world):
    cfg, _, models, targets = world
    m = SURROGATES[0]
    # The attack sees the target photo it is scored against here, so that one step must raise the cosine
    # (for every sample's own target: two targets, assigned by data-set index).
    same = ImpersonationTargets(train_images=targets.eval_images, eval_images=targets.eval_images,
                                names=targets.names)
    report = evaluate_protection(cfg, OneStepFGSM(models[m], eps=2 / 255), run="t", stage=None, models=models,
                                 targets=same, transforms=["none"], attribute_accuracy=False, progress=False)
    rows = report.records[report.records["model"] == m]
    clean = rows[rows["kind"] == "clean"]["cos_target"].to_numpy()
    gain = rows[rows["kind"] == "protected"]["cos_target"].to_numpy() - clean
    assert (gain > 0).mean() >= 0.9 and report.metrics[f"cos/{m}"] > float(clean.mean()) + 0.005


# ---------------------------------------------------------------------------- with the real mini zoo


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory):
    with tiny_zoo(tmp_path_factory.getbasetemp() / "erasablemask_home"):
        yield


@pytest.fixture(scope="module")
def run_folder(zoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with stages 1 and 2 after one step each (the in-process layout: stage<k>/checkpoints/)."""
    from erasablemask.experiments.curriculum.context import in_process_context
    from erasablemask.experiments.curriculum.loop import run_stage

    run = tmp_path_factory.mktemp("eval_run")
    cfg = tiny_config("stage1.epochs=1", "stage2.epochs=1")
    s1 = run_stage(cfg, 1, in_process_context(run, 1, progress=False, max_steps_per_epoch=1))
    run_stage(cfg, 2, in_process_context(run, 2, progress=False, max_steps_per_epoch=1), inputs=s1.final_checkpoint)
    return run


@pytest.mark.slow
def test_evaluating_a_run_folder_gives_records_and_the_summary_they_imply(run_folder: Path, tmp_path: Path):
    cfg = tiny_config("stage1.epochs=1", "stage2.epochs=1")
    report = evaluate_checkpoint(cfg, run_folder, run="trial-1", transforms=["none", "jpeg"], progress=False)
    assert report.stage == 2 and Path(report.checkpoint).parent == run_folder / "stage2" / "checkpoints"
    records = report.records
    assert len(records) == report.n_images * 3 * 5 and set(records["run"]) == {"trial-1"}  # clean, attr, destroyed,
    # protected@none, protected@jpeg
    assert set(records["stage"]) == {2}
    fr_keys = summary_metrics(records)
    assert {k: report.metrics[k] for k in fr_keys} == fr_keys
    assert 0.0 <= report.metrics["quality/l1_restored_vs_source"] <= 1.0
    assert 0.0 <= report.metrics["attr/clf_protected_edited"] <= 1.0 and "attr/datt_clean_all" in report.metrics
    back = read_records(write_records(records, tmp_path / "records.parquet"))
    pd.testing.assert_frame_equal(back, records)
    summary = json.loads(json.dumps(report.summary_json()))  # what evaluation.json holds
    assert summary["metrics"] == report.metrics and summary["records_schema_version"] == 3
    assert (summary["n_images"], summary["stage"], summary["method"]) == (12, 2, "erasablemask")


@pytest.mark.slow
def test_a_run_folder_prefers_final_then_stage3_and_refuses_stage1(run_folder: Path, tmp_path: Path):
    from erasablemask.experiments.curriculum.checkpoint import find_latest_checkpoint
    from erasablemask.experiments.evaluation.erasablemask_protection import resolve_protection_checkpoint

    run = tmp_path / "run"
    shutil.copytree(run_folder, run)
    stage2 = find_latest_checkpoint(run / "stage2", stage=2, complete=True)
    assert resolve_protection_checkpoint(run) == stage2
    shutil.copytree(stage2, run / "stage2" / "final")
    assert resolve_protection_checkpoint(run) == run / "stage2" / "final"
    cfg = tiny_config("stage1.epochs=1", "stage2.epochs=1")
    stage1 = find_latest_checkpoint(run / "stage1", stage=1, complete=True)
    with pytest.raises(ValueError, match="is from stage 1; ErasableMask protects from a stage-2 or stage-3"):
        ErasableMaskProtection.from_checkpoint(cfg, stage1)
