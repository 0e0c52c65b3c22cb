"""benchmarks/gpu_pipeline_check.py --dry-run: part 2 of the GPU check runs on the CPU and checks what it claims."""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest
from _curriculum_tiny import tiny_zoo

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _check_module():
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("gpu_pipeline_check")
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.slow
def test_gpu_pipeline_check_dry_run_trains_three_stages_and_evaluates_on_the_asked_device(tmp_path: Path):
    check = _check_module()
    with tiny_zoo(tmp_path / "home"):
        assert check.main(["--dry-run", "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "gpu_pipeline_check.json").read_text())
    assert result["ok"] is True
    assert [r["what"] for r in result["rows"]] == ["stage1", "stage2", "stage3", "evaluation"]
    for row in result["rows"][:3]:
        assert row["on_device"] and row["max_rel_loss_diff"] == 0.0  # both runs on the CPU: identical losses
        assert row["device_s"] > 0 and row["cpu_s"] > 0
    assert result["device_run"]["evaluation"]["devices"] == ["cpu"]
    assert any(k.startswith("asr") for k in result["device_run"]["evaluation"]["rates"])


def test_the_comparison_fails_a_stage_off_the_device_or_off_tolerance():
    check = _check_module()

    def run(device: str, loss: float) -> dict:
        stage = {"wall_s": 1.0, "losses": {"train/L": loss}, "devices": [device]}
        return {"stage1": stage, "stage2": stage, "stage3": stage,
                "evaluation": {"wall_s": 1.0, "devices": [device], "rates": {}}, "device": device}

    rows, ok = check.compare(run("cuda", 1.0), run("cpu", 1.0), "cuda", 0.02)
    assert ok and all(r["ok"] for r in rows)
    rows, ok = check.compare(run("cpu", 1.0), run("cpu", 1.0), "cuda", 0.02)  # the "GPU" run stayed on the CPU
    assert not ok and not any(r["on_device"] for r in rows)
    rows, ok = check.compare(run("cuda", 1.05), run("cpu", 1.0), "cuda", 0.02)  # 5 % off
    assert not ok and math.isclose(rows[0]["max_rel_loss_diff"], 0.05)
