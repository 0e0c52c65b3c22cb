"""``erasablemask train CONFIG [--set k=v ...] [--in-process] [--stage 1|2|3|all] [--run-dir DIR] [--resume CKPT]``.

The handler parses the arguments, owns the Ray lifecycle and calls
:func:`erasablemask.platform.pipeline.run_pipeline`, which does the work:
with ``--in-process`` the stages run in this process (a progress bar per
epoch, checkpoints in ``RUN_DIR/stage<k>/checkpoints``); without it on Ray
Train, inside :func:`erasablemask.platform.ray_session.ray_session` (``--address``
joins a cluster and leaves it running; otherwise a local instance lives for
the command). Both write ``RUN_DIR/metrics.jsonl`` and record the trial in
MLflow (a trial run, a child run per stage) unless ``--no-track``.
``--evaluate`` ends with the full evaluation of the last stage's checkpoint
(every FR model and evaluation transform): ``RUN_DIR/evaluation.json``,
``RUN_DIR/records.parquet`` and ``RUN_DIR/protection_grid.png``. The console
shows progress lines and, at the end, summary tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from erasablemask.experiments.config.loading import load_config
from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.platform.cli.config import add_config_arguments
from erasablemask.platform.pipeline import PipelineResult, preflight, run_pipeline
from erasablemask.platform.tracking import where_lines

__all__ = ["register", "parse_stages", "default_run_dir", "summary_lines", "stage_table", "evaluation_lines"]


def parse_stages(value: str) -> tuple[int, ...]:
    """``"all"`` -> (1, 2, 3); ``"2"`` -> (2,); ``"2,3"`` / ``"2-3"`` -> (2, 3)."""
    if value == "all":
        return (1, 2, 3)
    parts = value.replace("-", ",").split(",")
    try:
        stages = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--stage {value!r}: use 1, 2, 3, a range like 2-3, or all") from None
    if "-" in value and len(stages) == 2:
        stages = tuple(range(stages[0], stages[1] + 1))
    if not stages or any(s not in (1, 2, 3) for s in stages) or list(stages) != sorted(set(stages)):
        raise ValueError(f"--stage {value!r}: use 1, 2, 3, a range like 2-3, or all")
    return stages


def default_run_dir(cfg: ErasableMaskConfig) -> Path:
    """``tracking.run_dir / <config digest>``."""
    return Path(cfg.tracking.run_dir) / cfg.digest()


def summary_lines(metrics: dict, cfg: ErasableMaskConfig, prefix: str = "val/") -> list[str]:
    lines = []
    for role, names in (("surrogate", cfg.attack.surrogates), ("black-box", cfg.attack.black_box)):
        for m in names:
            vals = [metrics.get(f"{prefix}{k}/{m}") for k in ("asr", "asr_clean", "asr_attr_only", "esr", "idr")]
            if vals[0] is None:
                continue
            cells = "  ".join("   n/a" if v is None else f"{100 * v:6.1f}" for v in vals)
            lines.append(f"  {role:9s} {m:26s} {cells}")
    if lines:
        lines.insert(0, f"  {'role':9s} {'model':26s} {'ASR':>6s}  {'clean':>6s}  {'attr':>6s}  {'ESR':>6s}  {'IDR':>6s}  (%)")
    return lines


def stage_table(result: PipelineResult) -> list[str]:
    """One line per stage: epochs, steps, wall time, final checkpoint."""
    lines = [f"  {'stage':5s} {'epochs':>6s} {'steps':>7s} {'wall (s)':>8s}  final checkpoint"]
    for s, r in result.stages.items():
        lines.append(f"  {s:<5d} {len(r.history):6d} {r.global_step:7d} {r.wall_s:8.0f}  {r.final_checkpoint}")
    return lines


def evaluation_lines(result: PipelineResult, cfg: ErasableMaskConfig) -> list[str]:
    """The evaluation's header and per-model table (rates in %), and where its files are."""
    report = result.evaluation
    if report is None:
        return []
    return [
        f"evaluation ({report.n_images} test images, targets {report.targets}; rates in %, ASR at FAR "
        f"{cfg.evaluation.asr_far:g}, ESR at FAR {cfg.evaluation.esr_far:g}):",
        *summary_lines(report.metrics, cfg, prefix=""),
        f"  evaluation      {result.evaluation_json}",
        f"  records         {result.records_path}   (one row per image x FR model x transform)",
        f"  image grid      {result.grid_path}   (source | edited | protected | erased | target)",
    ]


def _train(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    stages = parse_stages(args.stage)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(cfg)
    runner = "in-process" if args.in_process else "ray"
    options = dict(run_dir=run_dir, stages=stages, runner=runner, inputs=Path(args.inputs) if args.inputs else None,
                   resume=Path(args.resume) if args.resume else None, evaluate=args.evaluate,
                   track=not args.no_track)
    preflight(cfg, **options)  # bad input and an unreachable tracking server fail before Ray starts
    print(f"erasablemask train: stages {list(stages)} ({runner}), run dir {run_dir}, config digest {cfg.digest()}",
          flush=True)
    if args.in_process:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        result = run_pipeline(cfg, **options, max_steps_per_epoch=args.max_steps_per_epoch)
    else:
        from erasablemask.platform.ray_session import ray_session

        with ray_session(address=args.address, cfg=cfg):
            result = run_pipeline(cfg, **options, max_steps_per_epoch=args.max_steps_per_epoch)
    print("\n".join(stage_table(result)))
    for s, r in result.stages.items():
        if r.history and s >= 2:
            print(f"stage {s}, last epoch (val split, FAR {cfg.evaluation.asr_far:g} for ASR):")
            print("\n".join(summary_lines(r.history[-1], cfg)))
    print(f"final checkpoint: {result.final_checkpoint}")
    print(f"metrics: {result.run_dir / 'metrics.jsonl'}")
    print("\n".join([*evaluation_lines(result, cfg), *where_lines(result.tracking_uri, result.trial_run_id)]))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``."""
    p = subparsers.add_parser("train", help="run the three-stage curriculum (in-process or on Ray Train)")
    add_config_arguments(p)
    p.add_argument("--in-process", action="store_true", help="run here, without Ray")
    p.add_argument("--stage", default="all", help="1, 2, 3, a range like 2-3, or all (default)")
    p.add_argument("--run-dir", default=None, help="output folder (default: tracking.run_dir/<config digest>)")
    p.add_argument("--resume", default=None, metavar="CKPT",
                   help="checkpoint directory of the first stage to resume from")
    p.add_argument("--inputs", default=None, metavar="CKPT",
                   help="the previous stage's final checkpoint (default: the newest complete one in --run-dir)")
    p.add_argument("--address", default=None, help="Ray cluster to join (without --in-process)")
    p.add_argument("--evaluate", action="store_true", help="evaluate the final checkpoint on the test split")
    p.add_argument("--no-track", action="store_true", help="do not record the run in MLflow")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (--in-process; 0: torch's default)")
    p.add_argument("--max-steps-per-epoch", type=int, default=None, help=argparse.SUPPRESS)  # tests, benchmarks
    p.set_defaults(handler=_train)
