"""``erasablemask train CONFIG [--set k=v ...] [--in-process] [--stage 1|2|3|all] [--run-dir DIR] [--resume CKPT]``.

With ``--in-process`` the curriculum runs in this process
(:func:`erasablemask.platform.runners.in_process.run`): a progress bar per epoch,
metrics as JSON lines in ``RUN_DIR/metrics.jsonl``, checkpoints in
``RUN_DIR/stage<k>/checkpoints``. Without it, the stages run on Ray Train
(:func:`erasablemask.platform.runners.ray_train.run`, imported only then). Both
record the run in MLflow (parent run, a child run per stage) unless
``--no-track``.
``--evaluate`` ends with the full evaluation of the last stage's checkpoint
(every FR model and evaluation transform) in ``RUN_DIR/evaluation.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from erasablemask.experiments.config.loading import dump_config, load_config
from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.models.atomic_files import write_text_atomic
from erasablemask.platform.cli.config import add_config_arguments

__all__ = ["register", "parse_stages", "default_run_dir", "summary_lines"]


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


def _train(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    stages = parse_stages(args.stage)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", dump_config(cfg))
    inputs = Path(args.inputs) if args.inputs else None
    resume = Path(args.resume) if args.resume else None
    for flag, path in (("--inputs", inputs), ("--resume", resume)):
        if path is not None and not (path / "state.json").is_file():
            raise FileNotFoundError(f"{flag} {path}: not a checkpoint directory (no state.json)")
    print(f"erasablemask train: stages {list(stages)}, run dir {run_dir}, config digest {cfg.digest()}")
    if not args.in_process:
        if resume is not None:
            raise ValueError("--resume applies to --in-process runs; Ray resumes a failed stage from its own "
                             "latest checkpoint (compute.max_failures)")
        from erasablemask.platform.runners import ray_train as ray_runner

        outcomes = ray_runner.run(cfg, stages, run_dir=run_dir, address=args.address, inputs=inputs,
                                  track=not args.no_track)
        last = outcomes[stages[-1]].checkpoint
        history = {s: [o.metrics] for s, o in outcomes.items()}
    else:
        import torch

        from erasablemask.platform.runners import in_process as local_runner

        if args.threads:
            torch.set_num_threads(args.threads)
        results = local_runner.run(cfg, stages, run_dir=run_dir, inputs=inputs, resume=resume,
                                   track=not args.no_track, max_steps_per_epoch=args.max_steps_per_epoch)
        last = results[stages[-1]].final_checkpoint
        history = {s: r.history for s, r in results.items()}
    for s in stages:
        if history.get(s) and s >= 2:
            print(f"stage {s}, last epoch (val split, FAR {cfg.evaluation.asr_far:g} for ASR):")
            print("\n".join(summary_lines(history[s][-1], cfg)))
    print(f"final checkpoint: {last}")
    print(f"metrics: {run_dir / 'metrics.jsonl'}")
    if not args.no_track:
        from erasablemask.platform.tracking import where_lines

        print("\n".join(where_lines(run_dir)))
    if args.evaluate:
        if stages[-1] < 2:
            raise ValueError("--evaluate needs a stage-2 or stage-3 checkpoint; include stage 2 or 3")
        from erasablemask.experiments.evaluation.evaluate import evaluate_checkpoint

        report = evaluate_checkpoint(cfg, Path(last))
        write_text_atomic(run_dir / "evaluation.json", json.dumps(report, indent=2, sort_keys=True))
        if not args.no_track:
            from erasablemask.platform.tracking import log_evaluation

            log_evaluation(run_dir, report, [run_dir / "evaluation.json"])
        print(f"evaluation ({report['n_images']} test images, targets {report['targets']}):")
        print("\n".join(summary_lines(report["metrics"], cfg, prefix="")))
        print(f"evaluation: {run_dir / 'evaluation.json'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``."""
    p = subparsers.add_parser("train", help="run the three-stage curriculum (in-process or on Ray Train)")
    add_config_arguments(p)
    p.add_argument("--in-process", action="store_true", help="run here, without Ray")
    p.add_argument("--stage", default="all", help="1, 2, 3, a range like 2-3, or all (default)")
    p.add_argument("--run-dir", default=None, help="output folder (default: tracking.run_dir/<config digest>)")
    p.add_argument("--resume", default=None, metavar="CKPT",
                   help="checkpoint directory of the first stage to resume from (--in-process)")
    p.add_argument("--inputs", default=None, metavar="CKPT",
                   help="the previous stage's final checkpoint (default: the newest complete one in --run-dir)")
    p.add_argument("--address", default=None, help="Ray cluster to join (without --in-process)")
    p.add_argument("--evaluate", action="store_true", help="evaluate the final checkpoint on the test split")
    p.add_argument("--no-track", action="store_true", help="do not record the run in MLflow")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (--in-process; 0: torch's default)")
    p.add_argument("--max-steps-per-epoch", type=int, default=None, help=argparse.SUPPRESS)  # tests, benchmarks
    p.set_defaults(handler=_train)
