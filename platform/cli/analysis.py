"""``erasablemask collect`` and ``erasablemask report``: runs -> one analysis dataset -> the paper's tables.

``collect RUN_DIR... --out DATASET`` (or ``collect --tracking-uri URI
--experiment NAME --out DATASET``) gathers evaluated runs' per-sample
records and their MLflow facts into one parquet dataset
(:mod:`erasablemask.analysis.collect`); collecting again adds only what is
new or changed. ``report DATASET --out DIR`` writes Tables II, V, VI, VII,
the figures, CSV/Markdown files and a self-contained ``index.html``
(:mod:`erasablemask.analysis.report`). Neither imports training code.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "collect_and_report"]


def collect_and_report(run_dirs: list[Path], *, dataset: Path, out: Path, tracking_uri: str | None = None,
                       n_boot: int = 2000) -> Path:
    """Collect ``run_dirs`` into ``dataset`` and write its report under ``out``; returns ``index.html``'s path.

    What ``erasablemask demo`` calls at its end.
    """
    from erasablemask.analysis.collect import collect_run_dirs
    from erasablemask.analysis.report import write_report

    collect_run_dirs([Path(p) for p in run_dirs], Path(dataset), tracking_uri=tracking_uri)
    return write_report(Path(dataset), Path(out), n_boot=n_boot).index_html


def _collect(args: argparse.Namespace) -> int:
    from erasablemask.analysis.collect import collect_experiment, collect_run_dirs

    if args.experiment is not None:
        if args.runs or args.tracking_uri is None:
            raise ValueError("--experiment takes no RUN_DIR and needs --tracking-uri: "
                             "erasablemask collect --tracking-uri URI --experiment NAME --out DATASET")
        summary = collect_experiment(args.tracking_uri, args.experiment, Path(args.out))
    elif args.runs:
        summary = collect_run_dirs([Path(p) for p in args.runs], Path(args.out), tracking_uri=args.tracking_uri)
    else:
        raise ValueError("name the runs: erasablemask collect RUN_DIR... --out DATASET, or "
                         "erasablemask collect --tracking-uri URI --experiment NAME --out DATASET")
    print(summary.line())
    for outcome in ("added", "updated"):
        for run in getattr(summary, outcome):
            print(f"  {outcome:<9} {run}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from erasablemask.analysis.report import write_report

    report = write_report(Path(args.dataset), Path(args.out), n_boot=args.n_boot)
    for table in report.tables:
        state = f"not built: {table.missing}" if table.missing else f"{len(table.cells)} cells from " \
                                                                     f"{len(table.runs)} run(s)"
        print(f"  {table.key:<34} {state}")
    print(f"report: {report.index_html}  (tables: {report.out / 'tables'}, figures: {report.out / 'figures'})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``collect`` and ``report``."""
    c = subparsers.add_parser("collect", help="gather evaluated runs' records and MLflow facts into one dataset")
    c.add_argument("runs", nargs="*", metavar="RUN_DIR",
                   help="run folders with records.parquet (a folder of run folders, e.g. a sweep, is searched)")
    c.add_argument("--out", required=True, metavar="DATASET", help="the dataset folder (created or added to)")
    c.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default for RUN_DIRs: the mlflow.db in or above each run folder)")
    c.add_argument("--experiment", default=None, help="collect every run of this MLflow experiment instead")
    c.set_defaults(handler=_collect)
    r = subparsers.add_parser("report", help="the paper's tables and figures, and an HTML report, from a dataset")
    r.add_argument("dataset", metavar="DATASET", help="a dataset written by erasablemask collect")
    r.add_argument("--out", required=True, metavar="DIR", help="report folder (index.html, tables/, figures/)")
    r.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates per interval (default 2000)")
    r.set_defaults(handler=_report)
