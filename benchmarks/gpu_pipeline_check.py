"""Part 2 of the GPU check (issue 20): the real training path on the GPU, checked against the CPU.

Run through ``benchmarks/gpu_check.sh`` (after part 1, the paper-size step timings). A short mini-world
curriculum runs twice with the same seed: on the device (``compute.device=cuda``) and on the CPU. Each run
trains the three stages with the one training loop (``experiments/curriculum/loop.run_stage`` with the
in-process context, exactly what ``platform/runners/in_process.py`` calls; with ``--ray`` and Ray installed,
the device run's stages go through Ray Train with one GPU worker instead) and then evaluates the stage-3
checkpoint on its device. The check:

- every module of every stage and of the evaluation sat on the asked device (a hard-coded CPU fails it);
- each stage's first-epoch training losses agree between the device and the CPU within ``--rtol``
  (TF32 is switched off for this comparison, so the remaining differences are summation order);
- the evaluation's headline rates of the two runs, side by side (reported, not asserted: at this size
  one image crossing a threshold moves a rate by a whole sample);
- the wall time of each stage and of the evaluation, device vs CPU.

It prints one table and writes ``gpu_pipeline_check.json`` under ``--out``. ``--dry-run`` runs the same code
with both runs on the CPU at the smallest sizes (CI: ``tests/platform/test_gpu_check.py``). Nothing is
downloaded: the mini-world and its FR zoo are rendered and trained here (cached under ``ERASABLEMASK_HOME``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from erasablemask.experiments.config.loading import load_config
from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.curriculum.context import in_process_context
from erasablemask.experiments.curriculum.loop import run_stage
from erasablemask.experiments.devices import describe_device, resolve_device

SMALL = [  # a 64² world, narrow AttGAN, two surrogates + one black box: minutes on one GPU with its CPU reference
    "data.image_size=64", "data.miniworld.n_identities=16", "data.miniworld.images_per_identity=16",
    "data.miniworld.heldout_identities=4", "data.miniworld.fr_epochs=2",
    "model.enc_dim=16", "model.dec_dim=16", "model.dis_dim=16", "model.dis_fc_dim=64",
    "model.enc_layers=4", "model.dec_layers=4", "model.dis_layers=4",
    "stage1.epochs=1", "stage2.epochs=1", "stage3.epochs=1",
    "stage1.batch_size=16", "stage2.batch_size=8", "stage3.batch_size=16",
    "attack.surrogates=[mini_iresnet_arc_s0,mini_incept_arc_s0]", "attack.black_box=[mini_mobileface_arc_s0]",
    "evaluation.transforms=[none,jpeg]", "evaluation.max_images=32",
]
TINY = [*SMALL, "data.miniworld.n_identities=10", "data.miniworld.fr_epochs=1", "model.enc_dim=8",
        "model.dec_dim=8", "model.dis_dim=8", "model.dis_fc_dim=16", "model.enc_layers=3", "model.dec_layers=3",
        "model.dis_layers=3", "stage1.batch_size=8", "stage2.batch_size=4", "stage3.batch_size=8",
        "evaluation.max_images=8"]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="both runs on the CPU at the smallest sizes")
    p.add_argument("--steps", type=int, default=None, help="optimisation steps per stage (default 8; dry run 2)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="the device run's precision")
    p.add_argument("--rtol", type=float, default=2e-2, help="first-epoch losses: device vs CPU")
    p.add_argument("--ray", action="store_true", help="device run's stages through Ray Train (needs ray)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    args = p.parse_args(argv)
    args.steps = args.steps or (2 if args.dry_run else 8)
    args.device = "cpu" if args.dry_run else "cuda"
    if not args.dry_run and not torch.cuda.is_available():
        p.error("no CUDA device: run on the lent GPU, or pass --dry-run to check the script on the CPU")
    return args


def _module_devices(modules: dict[str, torch.nn.Module]) -> set[str]:
    return {t.device.type for m in modules.values() for t in [*m.parameters(), *m.buffers()]}


def _stage(cfg: ErasableMaskConfig, stage: int, run_dir: Path, inputs: Path | None, steps: int,
           use_ray: bool) -> dict[str, Any]:
    """One stage by the real loop; returns its wall time, first-epoch losses, final checkpoint, devices seen."""
    seen: set[str] = set()
    t0 = time.perf_counter()
    if use_ray:
        from erasablemask.platform.runners.ray_train import run_stage as ray_stage

        result = ray_stage(cfg, stage, run_dir=run_dir, inputs=inputs, progress=False, max_steps_per_epoch=steps)
        seen.add("cuda (Ray worker)" if cfg.compute.use_gpu else "cpu (Ray worker)")
    else:
        ctx = in_process_context(run_dir, stage, progress=False, max_steps_per_epoch=steps,
                                 device=cfg.compute.device)
        from erasablemask.experiments.curriculum import loop

        build = loop.build_trainer

        def spy(*a: Any, **k: Any):  # record where the trainer put its modules
            trainer = build(*a, **k)
            seen.update(_module_devices(trainer.modules))
            return trainer

        loop.build_trainer = spy
        try:
            result = run_stage(cfg, stage, ctx, inputs=inputs)
        finally:
            loop.build_trainer = build
    wall = time.perf_counter() - t0
    losses = {k: v for k, v in result.history[0].items() if k.startswith("train/") and "/epoch_" not in k}
    return {"wall_s": wall, "losses": losses, "final": result.final_checkpoint, "devices": sorted(seen)}


def _evaluate(cfg: ErasableMaskConfig, checkpoint: Path) -> dict[str, Any]:
    from erasablemask.experiments.evaluation.erasablemask_protection import ErasableMaskProtection
    from erasablemask.experiments.evaluation.evaluate import evaluate_protection

    t0 = time.perf_counter()
    protection = ErasableMaskProtection.from_checkpoint(cfg, checkpoint)  # on compute.device
    devices = _module_devices({"protector": protection.protector, "restorer": protection.restorer})
    report = evaluate_protection(cfg, protection, run="gpu_check", stage=protection.stage, progress=False,
                                 attribute_accuracy=False)
    rates = {k: float(v) for k, v in report.metrics.items()
             if isinstance(v, (int, float)) and k.split("/")[0] in ("asr", "esr", "idr")}
    return {"wall_s": time.perf_counter() - t0, "devices": sorted(devices), "rates": rates}


def run_curriculum(overrides: list[str], device: str, steps: int, root: Path, use_ray: bool) -> dict[str, Any]:
    cfg = load_config("miniworld_demo", [*overrides, f"compute.device={device}"])
    if use_ray:
        cfg = load_config("miniworld_demo", [*overrides, f"compute.device={device}", "compute.use_gpu=true"])
    out: dict[str, Any] = {"device": describe_device(resolve_device(device, announce=False))}
    inputs = None
    for stage in (1, 2, 3):
        res = _stage(cfg, stage, root / f"stage{stage}", inputs, steps, use_ray)
        inputs = res.pop("final")
        out[f"stage{stage}"] = res
        print(f"  {device}: stage {stage} {res['wall_s']:.1f}s on {res['devices']}", flush=True)
    out["evaluation"] = _evaluate(cfg, inputs)
    print(f"  {device}: evaluation {out['evaluation']['wall_s']:.1f}s on {out['evaluation']['devices']}", flush=True)
    return out


def compare(dev: dict[str, Any], cpu: dict[str, Any], device: str, rtol: float) -> tuple[list[dict], bool]:
    """Rows of the table and whether every check passed."""
    rows, ok = [], True
    want = torch.device(device).type
    for stage in ("stage1", "stage2", "stage3"):
        d, c = dev[stage], cpu[stage]
        diffs = [abs(d["losses"][k] - c["losses"][k]) / max(abs(c["losses"][k]), 1e-6)
                 for k in c["losses"] if k in d["losses"]]
        worst = max(diffs) if diffs else math.nan
        on_device = all(want in x for x in d["devices"])
        passed = on_device and worst <= rtol and set(d["losses"]) == set(c["losses"])
        ok &= passed
        rows.append({"what": stage, "device_s": d["wall_s"], "cpu_s": c["wall_s"], "max_rel_loss_diff": worst,
                     "on_device": on_device, "ok": passed})
    d, c = dev["evaluation"], cpu["evaluation"]
    on_device = all(x == want for x in d["devices"])
    ok &= on_device
    rows.append({"what": "evaluation", "device_s": d["wall_s"], "cpu_s": c["wall_s"], "max_rel_loss_diff": math.nan,
                 "on_device": on_device, "ok": on_device})
    return rows, ok


def print_table(rows: list[dict], dev: dict, cpu: dict) -> None:
    print(f"\nreal pipeline: {dev['device']} vs {cpu['device']}")
    print("| part | device s | CPU s | CPU/device | max rel. loss diff | on device | ok |\n|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["cpu_s"] / r["device_s"] if r["device_s"] > 0 else math.nan
        print(f"| {r['what']} | {r['device_s']:.1f} | {r['cpu_s']:.1f} | {ratio:.1f}× | {r['max_rel_loss_diff']:.2e} "
              f"| {r['on_device']} | {'ok' if r['ok'] else 'FAIL'} |")
    keys = sorted(set(dev["evaluation"]["rates"]) & set(cpu["evaluation"]["rates"]))[:8]
    if keys:
        print("\nevaluation rates (device / CPU): " + ", ".join(
            f"{k} {dev['evaluation']['rates'][k]:.3f}/{cpu['evaluation']['rates'][k]:.3f}" for k in keys))


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    t_start = time.perf_counter()
    overrides = TINY if args.dry_run else SMALL
    overrides = [*overrides, f"compute.precision={args.precision}"] if args.precision != "fp32" else overrides
    torch.backends.cuda.matmul.allow_tf32 = False  # the loss comparison is about the code path, not TF32
    torch.backends.cudnn.allow_tf32 = False
    with tempfile.TemporaryDirectory(prefix="gpu_pipeline_check-") as tmp:
        root = Path(tmp)
        print(f"part 2: the real pipeline, {args.steps} steps per stage, on {args.device} then on the CPU", flush=True)
        dev = run_curriculum(overrides, args.device, args.steps, root / "device", args.ray)
        cpu = run_curriculum([o for o in overrides if not o.startswith("compute.precision")], "cpu", args.steps,
                             root / "cpu", False)
    rows, ok = compare(dev, cpu, args.device, args.rtol if args.precision == "fp32" else max(args.rtol, 0.1))
    print_table(rows, dev, cpu)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp_json = args.out / "gpu_pipeline_check.json.tmp"
    tmp_json.write_text(json.dumps({"ok": ok, "rows": rows, "device_run": dev, "cpu_run": cpu,
                                    "precision": args.precision, "steps": args.steps}, indent=2, default=str))
    os.replace(tmp_json, args.out / "gpu_pipeline_check.json")
    print(f"part 2 {'passed' if ok else 'FAILED'} in {time.perf_counter() - t_start:.1f}s; "
          f"wrote {args.out / 'gpu_pipeline_check.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
