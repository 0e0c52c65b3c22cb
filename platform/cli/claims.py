"""``erasablemask claims``: rerun the paper's claims over seeds and attack variants, with intervals.

For every seed and every attack method (the ``attack`` config group:
``meta_auxiliary``, ``ensemble``, ``first_order``) it runs one whole
reproduction (:func:`~erasablemask.platform.pipeline.run_pipeline`, in
process, evaluated on the test split) with ``seed=<s>`` and
``attack=<method>`` added to the overrides, into ``OUT/seed<s>-<method>``
(a finished run folder is reused), then prints and writes
(``OUT/claims.csv``, ``OUT/claims.txt``) the claims table of
:mod:`erasablemask.experiments.evaluation.claims`: per method, black-box
and surrogate ASR, ESR beside its ceilings and destroyed control, IDR
beside its ceiling, each the mean over seeds with a 95 % interval
(seeds, then source identities resampled), and the paired differences
meta-auxiliary − ensemble and meta-auxiliary − first-order of ASR.

A seed is a new mini-world (and mini FR zoo, trained and cached once per
seed) and a new target choice, so seeds also vary the targets.

Stage 1 (the attribute GAN) does not depend on the attack method
(``STAGE_SECTIONS[1]``), so the methods of one seed share one stage-1
checkpoint, trained once into ``OUT/stage1_cache/<key>`` (the sweeps' cache,
:func:`~erasablemask.platform.sweep.ensure_stage1`, keyed by the digest of
everything stage 1 depends on); each run folder then holds stages 2-3.
``--own-stage1`` trains stage 1 in every run instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from erasablemask.platform.cli.config import add_config_arguments

__all__ = ["register"]

METHODS = ("meta_auxiliary", "ensemble", "first_order")


def _claims(args: argparse.Namespace) -> int:
    import pandas as pd

    from erasablemask.experiments.config.loading import load_config
    from erasablemask.experiments.evaluation.claims import claims_rows, format_claims
    from erasablemask.experiments.evaluation.records import read_records
    from erasablemask.platform.evaluation_run import RECORDS_PARQUET
    from erasablemask.platform.pipeline import run_pipeline
    from erasablemask.platform.sweep import STAGE1_CACHE, ensure_stage1

    methods = list(dict.fromkeys(args.methods))
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"--methods {unknown or methods}: choose from {list(METHODS)}")
    if len(set(args.seeds)) != len(args.seeds) or any(s < 0 for s in args.seeds):
        raise ValueError(f"--seeds {args.seeds}: give distinct non-negative seeds")
    out = Path(args.out)
    configs = {
        (s, m): load_config(args.config, [*args.overrides, f"seed={s}", f"attack={m}"])
        for s in args.seeds
        for m in methods
    }  # every config checked before anything runs
    records: dict[str, list[pd.DataFrame]] = {m: [] for m in methods}
    for (s, m), cfg in configs.items():
        run_dir = out / f"seed{s}-{m}"
        done = run_dir / RECORDS_PARQUET
        if not done.is_file():
            print(f"erasablemask claims: seed {s}, {m} -> {run_dir}", flush=True)
            inputs, stages = None, (1, 2, 3)
            if not args.own_stage1:
                stage1 = ensure_stage1(
                    cfg, out / STAGE1_CACHE, runner="in-process", max_steps_per_epoch=args.max_steps_per_epoch,
                    progress=True,
                )
                print(f"erasablemask claims: stage 1 {'trained' if stage1.trained else 'reused'}: "
                      f"{stage1.checkpoint}", flush=True)
                inputs, stages = stage1.checkpoint, (2, 3)
            run_pipeline(
                cfg,
                run_dir=run_dir,
                stages=stages,
                inputs=inputs,
                runner="in-process",
                evaluate=True,
                track=not args.no_track,
                max_steps_per_epoch=args.max_steps_per_epoch,
            )
        records[m].append(read_records(done))
    pairs = [
        (a, b)
        for a, b in (("meta_auxiliary", "ensemble"), ("meta_auxiliary", "first_order"))
        if a in methods and b in methods
    ]
    rows = claims_rows(
        {m: pd.concat(r, ignore_index=True) for m, r in records.items()}, pairs=pairs, n_boot=args.n_boot
    )
    table = format_claims(rows)
    from erasablemask.models.atomic_files import write_text_atomic

    write_text_atomic(out / "claims.txt", table + "\n")
    pd.DataFrame(rows).to_csv(out / "claims.csv", index=False)
    print(
        f"claims over seeds {args.seeds} (rates in %, 95 % intervals over seeds then source identities; "
        f"mini-world numbers):"
    )
    print(table)
    print(f"  table   {out / 'claims.txt'}\n  csv     {out / 'claims.csv'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``claims``."""
    p = subparsers.add_parser("claims", help="rerun the claims over seeds and attack variants, with intervals")
    add_config_arguments(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), help=f"attack methods (default {list(METHODS)})")
    p.add_argument("--out", required=True, help="folder of the runs and the claims table")
    p.add_argument("--no-track", action="store_true", help="do not record the runs in MLflow")
    p.add_argument("--own-stage1", action="store_true",
                   help="train stage 1 in every run (default: the methods of a seed share one stage-1 checkpoint)")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates")
    p.add_argument("--max-steps-per-epoch", type=int, default=None, help=argparse.SUPPRESS)  # tests
    p.set_defaults(handler=_claims)
