"""Cost of the generator-based competitors (AdvFaces, GMAA): per training step and epoch, per image at inference.

Issue 13, item 5. For each generator at its official network sizes and batch size,
on the config's world (default: the tiny curriculum-test world, 64×64, whose mini
FR zoo trains in minutes; ``--config miniworld_demo`` for the demo world), this
times ``--steps`` training steps of the competitor's stage trainer (the same
``train_step`` the curriculum loop calls; validation excluded) after one warm-up
step, and one feed-forward ``protect`` of ``--batch`` images. The baseline, in the
same run: one forward + backward of the white-box surrogates per image, the unit a
per-image optimiser (FGSM 1, PGD 10, SemanticAdv 200, Sibling ≈ 2,200) pays.

An epoch is extrapolated as ``mean step time × ⌊train images / batch⌋``. GMAA runs
with ``teacher=none`` here (the AttGAN teacher adds one frozen generator forward
per G step and needs a stage-1 checkpoint).

    python benchmarks/generator_competitors.py                   # tiny world, official network sizes
    python benchmarks/generator_competitors.py --config miniworld_demo --steps 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from erasablemask.experiments.config.loading import load_config  # noqa: E402
from erasablemask.experiments.curriculum.context import StageContext  # noqa: E402
from erasablemask.experiments.curriculum.loop import build_trainer  # noqa: E402


def _timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="tiny", help="'tiny' (tests/_curriculum_tiny.py) or a config name")
    ap.add_argument("--set", action="append", default=[], help="config override KEY=VALUE (repeatable)")
    ap.add_argument("--steps", type=int, default=4, help="timed training steps per generator")
    ap.add_argument("--batch", type=int, default=32, help="images per inference call")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.config == "tiny":
        from _curriculum_tiny import tiny_config

        cfg = tiny_config(*args.set)
    else:
        cfg = load_config(args.config, args.set)
    ctx = StageContext(progress=False)
    rows = []
    base = None
    for name, params in (("advfaces", {}), ("gmaa", {"teacher": "none"})):
        trainer = build_trainer(cfg, name, ctx, None, params)
        loader = iter(DataLoader(trainer.dataset, batch_size=trainer.batch_size, shuffle=True, drop_last=True))
        batches = [next(loader) for _ in range(min(args.steps + 1, len(trainer.dataset) // trainer.batch_size))]
        trainer.train_step(batches[0])  # warm-up
        steps = []
        for i in range(args.steps):
            b = batches[1 + i % (len(batches) - 1)] if len(batches) > 1 else batches[0]
            t0 = time.perf_counter()
            trainer.train_step(b)
            steps.append(time.perf_counter() - t0)
        step_s = statistics.mean(steps)
        per_epoch = len(trainer.dataset) // trainer.batch_size
        x = torch.stack([trainer.dataset[i % len(trainer.dataset)]["image"] for i in range(args.batch)])
        x_t = trainer.target_train[:1].expand(args.batch, -1, -1, -1)
        attack = trainer.attack
        for m in attack.networks().values():
            m.eval()
        infer = min(_timed(lambda: attack(x, x_t), 3)) / args.batch
        if base is None:
            sur = list(trainer.surrogates.values())

            def fwd_bwd() -> None:
                xx = x.clone().requires_grad_(True)
                loss = sum(fr(xx).sum() for fr in sur)
                loss.backward()

            base = min(_timed(fwd_bwd, 3)) / args.batch
        rows.append((name, trainer.batch_size, step_s, per_epoch, step_s * per_epoch, infer))
    print(
        f"world {cfg.data.image_size}x{cfg.data.image_size}, {len(trainer.dataset)} training images, "
        f"surrogates {list(cfg.attack.surrogates)}, torch threads {args.threads}"
    )
    print(f"baseline: surrogates forward+backward per image = {base * 1e3:.2f} ms")
    print(
        f"{'method':9} {'batch':>5} {'s/step':>8} {'steps/epoch':>11} {'s/epoch':>8} {'ms/image infer':>14} "
        f"{'infer/baseline':>14}"
    )
    for name, bs, step_s, n, epoch_s, infer in rows:
        print(f"{name:9} {bs:5d} {step_s:8.3f} {n:11d} {epoch_s:8.2f} {infer * 1e3:14.2f} {infer / base:14.2f}")


if __name__ == "__main__":
    main()
