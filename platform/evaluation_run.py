"""One evaluation of a protection, written and tracked the same way wherever it runs.

The pipeline's ``--evaluate`` (:mod:`erasablemask.platform.pipeline`), ``erasablemask
evaluate`` (:mod:`erasablemask.platform.cli.evaluate`) and the demo call
:func:`evaluate_and_write`: it scores a
:class:`~erasablemask.experiments.evaluation.protection.Protection` with
:func:`~erasablemask.experiments.evaluation.evaluate.evaluate_protection`
and writes, to one folder,

- ``evaluation.json``: the summary metrics (:meth:`EvaluationReport.summary_json`);
- ``records.parquet``: the per-sample records (one row per scored image x FR
  model x transform);
- ``rates.csv``: ASR, ESR and IDR per (method, model, role, transform, kind)
  with 95 % bootstrap intervals over source identities and the counts behind
  each (:func:`rate_table`, the analysis layer's
  :func:`~erasablemask.analysis.rates.estimate`);
- ``protection_grid.png``: the image grid, for ErasableMask checkpoints.

The caller decides which MLflow run receives them
(:meth:`~erasablemask.platform.tracking.Tracker.log_evaluation`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from erasablemask.models.atomic_files import atomic_path, write_text_atomic

if TYPE_CHECKING:
    from torch import nn

    from erasablemask.experiments.config.schema import ErasableMaskConfig
    from erasablemask.experiments.evaluation.evaluate import EvaluationReport
    from erasablemask.experiments.evaluation.protection import Protection
    from erasablemask.platform.fr_apis import FRApi

__all__ = [
    "EVALUATION_JSON",
    "RECORDS_PARQUET",
    "RATES_CSV",
    "PROTECTION_GRID",
    "EvaluationFiles",
    "rate_table",
    "rate_cell",
    "evaluate_and_write",
]

EVALUATION_JSON = "evaluation.json"
RECORDS_PARQUET = "records.parquet"
RATES_CSV = "rates.csv"
PROTECTION_GRID = "protection_grid.png"
TABLE_RATES = ("asr", "esr", "idr", "api_asr_1e-3", "api_asr_1e-4", "api_asr_1e-5")
# Means reported like rates (value / 100, so that rate_cell prints the confidence): commercial services' confidence.
TABLE_MEANS = ("api_confidence", "api_confidence_restored")



def rate_cell(rates: pd.DataFrame, *, empty: str = "-", **where: Any) -> str:
    """One rate of a :func:`rate_table` as ``" 37.5 [26.2, 50.0]"`` (%), the row chosen by ``column=value``;
    ``empty`` (right-aligned) where no row matches. Printed by ``evaluate`` and ``compare``."""
    sel = rates
    for k, v in where.items():
        sel = sel[sel[k] == v]
    if sel.empty:
        return f"{empty:>17s}"
    r = sel.iloc[0]
    if pd.isna(r["lo"]):
        return f"{100 * r['value']:5.1f}{'':12s}"
    return f"{100 * r['value']:5.1f} [{100 * r['lo']:4.1f},{100 * r['hi']:5.1f}]"

@dataclass
class EvaluationFiles:
    """The files one evaluation wrote (``grid`` is None without an ErasableMask checkpoint)."""

    summary: Path
    records: Path
    rates: Path
    grid: Path | None

    def all(self) -> list[Path]:
        return [p for p in (self.summary, self.records, self.rates, self.grid) if p is not None]


def rate_table(
    records: pd.DataFrame, *, rates: Sequence[str] = TABLE_RATES, n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Rates with 95 % identity-bootstrap intervals, one row per (method, model, role, transform, kind, rate).

    A rate a cell cannot have (ESR of a scheme that cannot erase, of a baseline row) is left out. Commercial
    services' rows (role ``commercial``) give ``api_asr_<far>`` (confidence above the service's threshold at FAR
    1e-3 / 1e-4 / 1e-5) and the mean confidences ``api_confidence`` / ``api_confidence_restored`` divided by
    100 (the service's [0, 100] scale as a share, as the rates are).

    Returns:
        Columns ``method, model, role, transform, kind, rate, value, lo, hi, n, n_identities``.
    """
    from erasablemask.analysis.rates import estimate, mean_estimate

    rows: list[dict[str, Any]] = []
    keys = ["method", "model", "role", "transform", "kind"]
    for key, sub in records.groupby(keys, sort=False):
        cells = [(rate, estimate(sub, rate, n_boot=n_boot, seed=seed), 1.0) for rate in rates]
        if (sub["role"] == "commercial").all():
            cells += [(m, mean_estimate(sub, m, n_boot=n_boot, seed=seed), 100.0) for m in TABLE_MEANS]
        for rate, est, scale in cells:
            if est.value is None:
                continue
            rows.append(
                dict(
                    zip(keys, key, strict=True),
                    rate=rate,
                    value=est.value / scale,
                    lo=None if est.lo is None else est.lo / scale,
                    hi=None if est.hi is None else est.hi / scale,
                    n=est.n,
                    n_identities=est.n_identities,
                )
            )
    return pd.DataFrame(rows, columns=[*keys, "rate", "value", "lo", "hi", "n", "n_identities"])


def evaluate_and_write(
    cfg: ErasableMaskConfig,
    protection: Protection,
    out_dir: Path,
    *,
    run: str,
    stage: int | None,
    checkpoint: Path | None = None,
    split: Literal["val", "test"] = "test",
    transforms: Sequence[str] | None = None,
    models: Mapping[str, nn.Module] | None = None,
    max_images: int | None = None,
    discriminator: nn.Module | None = None,
    n_boot: int = 1000,
    progress: bool = True,
    services: Mapping[str, FRApi] | None = None,
) -> tuple[EvaluationReport, EvaluationFiles]:
    """Evaluate ``protection`` and write the evaluation's files to ``out_dir`` (module docstring).

    Args:
        cfg: the config (data, targets, FR models' roles, FARs).
        protection: the scheme.
        out_dir: the folder for the files (created).
        run: the records' ``run`` column (an MLflow run id, or a name).
        stage: the records' ``stage`` column.
        checkpoint: the ErasableMask checkpoint evaluated (also draws ``protection_grid.png``).
        split, transforms, models, max_images, discriminator, progress: as
            :func:`~erasablemask.experiments.evaluation.evaluate.evaluate_protection`.
        n_boot: bootstrap replicates for ``rates.csv``.
        services: commercial FR services to score a subset of the faces with (Table III;
            :mod:`~erasablemask.platform.commercial_scoring`), by name; default: those of
            ``evaluation.commercial_apis`` (credentials checked before any image is protected).

    Returns:
        The report and the files written.

    Raises:
        MissingCredentials: a commercial service's environment variables are not set (before any work).
        UserError: a commercial service answered with an error (after the FR models' files are written).
    """
    from erasablemask.experiments.evaluation.evaluate import evaluate_protection
    from erasablemask.experiments.evaluation.records import write_records

    scoring = None
    targets = None
    if services is None and cfg.evaluation.commercial_apis.services:
        from erasablemask.platform.commercial_scoring import build_services

        services = build_services(cfg)  # missing credentials: refused before any image is protected
    if services:
        from erasablemask.experiments.evaluation.targets import build_targets
        from erasablemask.platform.commercial_scoring import CommercialScoring

        targets = build_targets(cfg)
        scoring = CommercialScoring(cfg, targets, services)
    report = evaluate_protection(
        cfg,
        protection,
        run=run,
        stage=stage,
        split=split,
        transforms=transforms,
        max_images=max_images,
        discriminator=discriminator,
        checkpoint=checkpoint,
        models=models,
        targets=targets,
        progress=progress,
        on_batch=None if scoring is None else scoring.add,
    )
    api_error: Exception | None = None
    if scoring is not None:
        from erasablemask.platform.commercial_scoring import commercial_metrics

        try:
            api_rows = scoring.score(run=run, method=protection.name, stage=stage, split=split, progress=progress)
        except Exception as err:  # the FR models' results are still written, then the error is raised
            api_error = err
        else:
            report.records = pd.concat([report.records, api_rows], ignore_index=True)
            report.metrics.update(commercial_metrics(api_rows, scoring.no_face))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = write_text_atomic(out_dir / EVALUATION_JSON, json.dumps(report.summary_json(), indent=2, sort_keys=True))
    records = write_records(report.records, out_dir / RECORDS_PARQUET)
    rates = rate_table(report.records, n_boot=n_boot, seed=cfg.seed)
    rates_path = write_text_atomic(out_dir / RATES_CSV, rates.to_csv(index=False))
    grid = None
    if checkpoint is not None and protection.name == "erasablemask":
        from erasablemask.experiments.evaluation.protection_grid import protection_grid

        grid = out_dir / PROTECTION_GRID
        with atomic_path(grid) as tmp:
            protection_grid(cfg, checkpoint).save(tmp, format="PNG")
    if api_error is not None:
        from erasablemask.experiments.errors import UserError

        if isinstance(api_error, UserError):
            raise UserError(f"{api_error} (the FR models' results are written to {out_dir})") from None
        raise api_error
    return report, EvaluationFiles(summary=Path(summary), records=Path(records), rates=Path(rates_path), grid=grid)


ADAPTIVE_ROWS = "adaptive_attacker.parquet"
ADAPTIVE_CSV = "adaptive_attacker.csv"
ADAPTIVE_PNG = "adaptive_attacker.png"


def adaptive_summary(rows: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """IDR per (who, budget, role) from :func:`~erasablemask.experiments.evaluation.adaptive_attacker.adaptive_attack`'s
    rows, pooled over the role's FR models and the attacker's seeds, with a 95 % bootstrap interval over source
    identities (an identity's rows, all models and seeds, stay together) and the counts behind it.

    Returns:
        Columns ``who, budget, role, idr, lo, hi, n, n_identities, n_seeds``.
    """
    from erasablemask.analysis.rates import bootstrap_interval

    out = []
    for (who, budget, role), sub in rows.groupby(["who", "budget", "role"], sort=True):
        hits = sub["restored"].to_numpy(dtype=np.float64)
        lo, hi = bootstrap_interval(hits, sub["source_identity"].to_numpy(), n_boot=n_boot, seed=seed)
        out.append(
            dict(
                who=who,
                budget=int(budget),
                role=role,
                idr=float(hits.mean()),
                lo=lo,
                hi=hi,
                n=len(sub),
                n_identities=int(sub["source_identity"].nunique()),
                n_seeds=int(sub.loc[sub["seed"] >= 0, "seed"].nunique()),
            )
        )
    return pd.DataFrame(out)


def adaptive_curve_png(summary: pd.DataFrame, title: str) -> bytes:
    """IDR after the attacker's restorer over its training budget (one panel per role), beside the trusted
    authority's IDR, the protected faces' and the clean ceiling (horizontal bands), with 95 % intervals."""
    import io

    from matplotlib.figure import Figure

    roles = [r for r in ("surrogate", "black_box") if r in set(summary["role"])]
    fig = Figure(figsize=(5.2 * len(roles), 4.0))
    axes = fig.subplots(1, len(roles), squeeze=False)[0]
    styles = {
        "clean": ("clean ceiling", "tab:green"),
        "trusted_authority": ("trusted authority's R", "tab:blue"),
        "protected": ("protected, no restorer", "tab:gray"),
    }
    for ax, role in zip(axes, roles, strict=True):
        s = summary[summary["role"] == role]
        att = s[s["who"] == "attacker"].sort_values("budget")
        ax.errorbar(
            att["budget"],
            att["idr"],
            yerr=[att["idr"] - att["lo"], att["hi"] - att["idr"]],
            marker="o",
            color="tab:red",
            capsize=3,
            label="attacker's own restorer",
        )
        for who, (label, color) in styles.items():
            ref = s[s["who"] == who]
            if ref.empty:
                continue
            r = ref.iloc[0]
            ax.axhline(r["idr"], color=color, linestyle="--", label=label)
            ax.axhspan(r["lo"], r["hi"], color=color, alpha=0.12)
        ax.set_xlabel("attacker's training budget (steps)")
        ax.set_ylabel("identity restoration rate (FAR 0.01)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{role.replace('_', '-')} FR models")
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def adaptive_attack_and_write(
    cfg: ErasableMaskConfig,
    protection: Protection,
    models: Mapping[str, nn.Module],
    out_dir: Path,
    *,
    budgets: Sequence[int],
    seeds: Sequence[int],
    arch: str,
    max_images: int = 0,
    n_boot: int = 1000,
    attacker_faces: tuple[int, int] = (16, 8),
) -> tuple[pd.DataFrame, list[Path]]:
    """Run the adaptive attacker and write its rows (parquet), the IDR summary (CSV) and the curve (PNG).

    ``attacker_faces``: (identities, images per identity) of the attacker's own mini-world faces.
    """
    from erasablemask.experiments.evaluation.adaptive_attacker import adaptive_attack

    rows = adaptive_attack(
        cfg, protection, dict(models), budgets=budgets, seeds=seeds, arch=arch, max_images=max_images,
        attacker_identities=attacker_faces[0], attacker_images_per_identity=attacker_faces[1], progress=True,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / ADAPTIVE_ROWS) as tmp:
        rows.to_parquet(tmp, index=False)
    summary = adaptive_summary(rows, n_boot=n_boot, seed=cfg.seed)
    csv = write_text_atomic(out_dir / ADAPTIVE_CSV, summary.to_csv(index=False))
    png = out_dir / ADAPTIVE_PNG
    with atomic_path(png) as tmp:
        tmp.write_bytes(
            adaptive_curve_png(
                summary,
                f"adaptive attacker vs {protection.name} ({arch}, {len(seeds)} seeds, "
                f"{attacker_faces[0]}x{attacker_faces[1]} attacker faces; {cfg.data.kind})",
            )
        )
    return summary, [out_dir / ADAPTIVE_ROWS, Path(csv), png]
