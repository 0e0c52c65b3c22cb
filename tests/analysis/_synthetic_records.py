"""Small synthetic records (the real schema, via experiments' records_frame) and run folders for analysis tests.

Cosines are drawn so that each kind of row succeeds with a chosen
probability; the flag columns are then computed by experiments'
``success_flags`` (the same comparisons the evaluation makes), so the
records are what an evaluation would write, without training anything.
"""

from __future__ import annotations

import io
import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from erasablemask.experiments.evaluation.metrics import success_flags
from erasablemask.experiments.evaluation.records import records_frame, write_records

MODELS = {"sur_a": "surrogate", "bb_one": "black_box", "bb_two": "black_box"}


def synthetic_records(run: str, method: str = "erasablemask", *, seed: int = 0, n_identities: int = 6,
                      per_identity: int = 3, transforms: tuple[str, ...] = ("none", "jpeg"),
                      targets: tuple[str, ...] = ("tA", "tB"), models: dict[str, str] = MODELS,
                      p_attack: float = 0.7, p_erase: float = 0.85, erases: bool = True,
                      attr_only: bool = True, rng_seed: int | None = None) -> pd.DataFrame:
    """Records of one evaluation: clean, attr_only and protected@t rows for every model.

    Args:
        run: the ``run`` value; method: the ``method`` value; seed: the ``seed`` value.
        n_identities, per_identity: source identities and images of each.
        p_attack: probability a protected row's attack succeeds (clean 0.05, attr_only 0.1).
        p_erase: probability a restored face falls below τ2 (and is verified as the source).
        erases: False gives null restored columns (a scheme that cannot erase).
        rng_seed: the cosine draws' seed (default: from ``seed`` and ``run``).
    """
    rng = np.random.default_rng(rng_seed if rng_seed is not None else zlib.crc32(f"{run}/{seed}".encode()))
    cols: dict[str, list] = {k: [] for k in (
        "run", "method", "kind", "stage", "seed", "split", "model", "role", "transform", "sample",
        "source_identity", "target", "cos_target", "cos_source", "cos_restored_target", "cos_restored_source",
        "cos_target_pair", "thr_far_0p1", "thr_far_0p01", "thr_far_0p001", "tau1", "tau2")}
    kinds = [("clean", "none"), *([("attr_only", "none")] if attr_only else []),
             *[("protected", t) for t in transforms]]
    for model, role in models.items():
        tau1, tau2 = 0.3, 0.2
        for sample in range(n_identities * per_identity):
            identity = sample // per_identity
            target = targets[sample % len(targets)]
            for kind, transform in kinds:
                p = {"clean": 0.05, "attr_only": 0.1, "protected": p_attack}[kind]
                hit = rng.random() < p
                cos_t = tau1 + rng.uniform(0.01, 0.3) if hit else tau1 - rng.uniform(0.01, 0.3)
                restored = kind == "protected" and erases
                erased = rng.random() < p_erase
                row = dict(run=run, method=method, kind=kind, stage=3, seed=seed, split="test", model=model,
                           role=role, transform=transform, sample=sample, source_identity=identity, target=target,
                           cos_target=cos_t, cos_source=rng.uniform(-0.2, 0.9),
                           cos_restored_target=(tau2 - 0.1 if erased else tau2 + 0.1) if restored else None,
                           cos_restored_source=(0.7 if erased else 0.1) if restored else None,
                           cos_target_pair=0.8, thr_far_0p1=tau2, thr_far_0p01=tau1, thr_far_0p001=0.45,
                           tau1=tau1, tau2=tau2)
                for k, v in row.items():
                    cols[k].append(v)
    frame = records_frame({**cols, "attack_success": [None] * len(cols["run"]),
                           "erasion_success": [None] * len(cols["run"]),
                           "identity_restored": [None] * len(cols["run"])})
    for name, flag in success_flags(frame).items():
        frame[name] = flag
    return frame


def write_run_dir(root: Path, name: str, records: pd.DataFrame, *, params: dict | None = None,
                  metrics: dict | None = None) -> Path:
    """An untracked run folder as the pipeline leaves it: records.parquet, config.yaml, evaluation.json."""
    import yaml

    run_dir = root / name
    run_dir.mkdir(parents=True, exist_ok=True)
    write_records(records, run_dir / "records.parquet")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(params or {"data": {"kind": "miniworld"}, "seed": 0}))
    (run_dir / "evaluation.json").write_text(json.dumps({"metrics": metrics or {}}))
    return run_dir


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 8), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def make_runs(root: Path) -> Path:
    """Three evaluated mini-world runs: ErasableMask at two γ (one with a grid), and PGD."""
    for name, gamma, p in (("em_g05", 0.05, 0.8), ("em_g20", 0.2, 0.5)):
        run = write_run_dir(root, name, synthetic_records(name, p_attack=p, transforms=("none", "jpeg", "rotate")),
                            params={"data": {"kind": "miniworld"}, "seed": 0, "protection": {"gamma": gamma},
                                    "attack": {"method": "meta_auxiliary"}})
    (run / "protection_grid.png").write_bytes(tiny_png())
    write_run_dir(root, "pgd", synthetic_records("pgd", "pgd", erases=False, attr_only=False),
                  params={"data": {"kind": "miniworld"}, "seed": 0, "attack": {"method": "meta_auxiliary"}})
    return root
