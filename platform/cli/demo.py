"""``erasablemask demo``: the mini-world end to end, through the Ray Train path.

1. generate the mini-world (images, parquet table, sample grid);
2. train and calibrate the mini FR zoo (cached by config hash);
3. the pipeline (:func:`erasablemask.platform.pipeline.run_pipeline`) inside a
   Ray session: the three curriculum stages on Ray Train, then the evaluation
   of ASR / ESR / identity restoration on every surrogate (white-box) and
   black-box model, clean and attribute-only baselines included, tracked in MLflow;
4. print the summary tables, where the results are and the command that
   opens the MLflow UI.

The numbers are mini-world numbers, not the paper's (README).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from erasablemask.platform.cli.config import add_config_arguments

DEMO_CONFIG = "miniworld_demo"


def _step(n: int, text: str, t0: float) -> None:
    print(f"\n[{n}/4] {text}   (t = {time.perf_counter() - t0:.0f} s)", flush=True)


def _demo(args: argparse.Namespace) -> int:
    from erasablemask.experiments.config.loading import load_config
    from erasablemask.experiments.data.splits import build_world, zoo_world
    from erasablemask.platform.cli.train import evaluation_lines, stage_table
    from erasablemask.platform.pipeline import preflight, run_pipeline
    from erasablemask.platform.ray_session import ray_session
    from erasablemask.platform.tracking import where_lines

    t0 = time.perf_counter()
    cfg = load_config(args.config or DEMO_CONFIG, args.overrides)
    if cfg.data.kind != "miniworld":
        raise ValueError(f"the demo runs on the mini-world; got data.kind='{cfg.data.kind}' (use `train` instead)")
    run_dir = Path(args.run_dir or Path(cfg.tracking.run_dir) / f"demo-{cfg.digest()}").resolve()
    preflight(cfg, run_dir=run_dir, stages=(1, 2, 3), runner="ray", evaluate=True)
    print(f"erasablemask demo: run dir {run_dir} (config digest {cfg.digest()})")

    _step(1, "mini-world", t0)
    world_dir = build_world(cfg).write(run_dir / "world", progress=True)
    print(f"  {world_dir / 'grid.png'}")

    _step(2, "mini FR zoo (cached; trained on first use)", t0)
    from erasablemask.experiments.fr_tools.mini_zoo import ensure_mini_zoo, mini_calibration

    names = list(cfg.attack.surrogates) + list(cfg.attack.black_box)
    world = zoo_world(cfg)
    ensure_mini_zoo(names, world, threads=args.threads or None, jobs=args.jobs)
    for name in names:
        role = "surrogate" if name in cfg.attack.surrogates else "black-box"
        thr = (mini_calibration(name, world) or {}).get("thresholds", {})
        print(f"  {role:9s} {name:26s} threshold@FAR0.01 {thr.get(0.01, float('nan')):.3f}")

    _step(3, "curriculum: stages 1-3 on Ray Train, then the evaluation on the test split", t0)
    with ray_session(address=args.address, cfg=cfg):
        result = run_pipeline(cfg, run_dir=run_dir, stages=(1, 2, 3), runner="ray", evaluate=True)

    _step(4, "results", t0)
    print("\n".join(stage_table(result)))
    print("\n".join(evaluation_lines(result, cfg)))
    print(f"  per-epoch log   {run_dir / 'metrics.jsonl'}")
    print(f"  checkpoints     {run_dir}/stage{{1,2,3}}/final")
    print("\n".join(where_lines(result.tracking_uri, result.trial_run_id)))
    from erasablemask.platform.cli.analysis import collect_and_report

    report = collect_and_report([run_dir], dataset=run_dir / "analysis" / "dataset",
                                out=run_dir / "analysis" / "report", tracking_uri=result.tracking_uri)
    print(f"  report          {report}  (open it in a browser)")
    print(f"\nThese are MINI-WORLD numbers (synthetic faces, mini FR models), not the paper's. "
          f"Total {time.perf_counter() - t0:.0f} s.")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="the mini-world end to end on Ray Train (10-20 minutes on 2 CPU cores, see README)")
    add_config_arguments(p, required=False)
    p.add_argument("--run-dir", default=None, help="output folder (default: runs/demo-<config digest>)")
    p.add_argument("--address", default=None, help="Ray cluster to join (default: a local instance)")
    p.add_argument("--threads", type=int, default=0, help="torch threads for the mini FR training (0: default)")
    p.add_argument("--jobs", type=int, default=2, help="mini FR models trained in parallel (default 2: one per core)")
    p.set_defaults(handler=_demo)
