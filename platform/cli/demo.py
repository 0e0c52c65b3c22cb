"""``erasablemask demo``: the mini-world end to end, through the Ray Train path.

1. generate the mini-world (images, parquet table, sample grid);
2. train and calibrate the mini FR zoo (cached by config hash);
3. run the three curriculum stages on Ray Train, tracked in MLflow;
4. evaluate ASR / ESR / identity restoration on every surrogate (white-box)
   and black-box model, clean and attribute-only baselines included;
5. print where the results are and the command that opens the MLflow UI.

The numbers are mini-world numbers, not the paper's (README).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from erasablemask.platform.cli.config import add_config_arguments

DEMO_CONFIG = "miniworld_demo"


def _step(n: int, text: str, t0: float) -> None:
    print(f"\n[{n}/5] {text}   (t = {time.perf_counter() - t0:.0f} s)", flush=True)


def _demo(args: argparse.Namespace) -> int:
    from erasablemask.experiments.config.loading import dump_config, load_config
    from erasablemask.experiments.data.splits import build_world, zoo_world
    from erasablemask.models.atomic_files import write_text_atomic
    from erasablemask.platform.cli.train import summary_lines
    from erasablemask.platform.tracking import log_evaluation, where_lines

    t0 = time.perf_counter()
    cfg = load_config(args.config or DEMO_CONFIG, args.overrides)
    if cfg.data.kind != "miniworld":
        raise ValueError(f"the demo runs on the mini-world; got data.kind='{cfg.data.kind}' (use `train` instead)")
    run_dir = Path(args.run_dir or Path(cfg.tracking.run_dir) / f"demo-{cfg.digest()}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", dump_config(cfg))
    print(f"erasablemask demo: run dir {run_dir} (config digest {cfg.digest()})")

    _step(1, "mini-world", t0)
    world_dir = build_world(cfg).write(run_dir / "world", progress=True)
    print(f"  {world_dir / 'grid.png'}")

    _step(2, "mini FR zoo (cached; trained on first use)", t0)
    from erasablemask.experiments.fr_tools.mini_zoo import ensure_mini_zoo
    from erasablemask.models.fr import get_spec

    names = list(cfg.attack.surrogates) + list(cfg.attack.black_box)
    ensure_mini_zoo(names, zoo_world(cfg), threads=args.threads or None, jobs=args.jobs)
    for name in names:
        role = "surrogate" if name in cfg.attack.surrogates else "black-box"
        thr = get_spec(name).thresholds
        print(f"  {role:9s} {name:26s} threshold@FAR0.01 {thr.get(0.01, float('nan')):.3f}")

    _step(3, "curriculum: stages 1-3 on Ray Train", t0)
    from erasablemask.platform.runners import ray_train as ray_runner

    outcomes = ray_runner.run(cfg, (1, 2, 3), run_dir=run_dir, address=args.address)
    final = outcomes[3].checkpoint

    _step(4, "evaluation on the test split (every FR model, every transform)", t0)
    from erasablemask.experiments.evaluation.evaluate import evaluate_checkpoint
    from erasablemask.experiments.evaluation.protection_grid import protection_grid

    report = evaluate_checkpoint(cfg, final)
    write_text_atomic(run_dir / "evaluation.json", json.dumps(report, indent=2, sort_keys=True))
    grid = run_dir / "protection_grid.png"
    protection_grid(cfg, final).save(grid)
    log_evaluation(run_dir, report, [grid, run_dir / "evaluation.json"])
    print(f"  {report['n_images']} test images, target(s) {report['targets']}; rates in % "
          f"(ASR at FAR {cfg.evaluation.asr_far:g}, ESR at FAR {cfg.evaluation.esr_far:g}):")
    print("\n".join(summary_lines(report["metrics"], cfg, prefix="")))

    _step(5, "results", t0)
    print(f"  evaluation      {run_dir / 'evaluation.json'}")
    print(f"  image grid      {grid}   (source | edited | protected | erased | target)")
    print(f"  per-epoch log   {run_dir / 'metrics.jsonl'}")
    print(f"  checkpoints     {run_dir}/stage{{1,2,3}}/final")
    print("\n".join(where_lines(run_dir)))
    print(f"\nThese are MINI-WORLD numbers (synthetic faces, mini FR models), not the paper's. "
          f"Total {time.perf_counter() - t0:.0f} s.")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="the mini-world end to end on Ray Train (a few minutes on 2 CPU cores)")
    add_config_arguments(p, required=False)
    p.add_argument("--run-dir", default=None, help="output folder (default: runs/demo-<config digest>)")
    p.add_argument("--address", default=None, help="Ray cluster to join (default: a local instance)")
    p.add_argument("--threads", type=int, default=0, help="torch threads for the mini FR training (0: default)")
    p.add_argument("--jobs", type=int, default=2, help="mini FR models trained in parallel (default 2: one per core)")
    p.set_defaults(handler=_demo)
