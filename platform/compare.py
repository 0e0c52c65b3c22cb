"""Compare protection schemes on one experiment: same images, targets, FR models, thresholds and transforms.

:func:`run_comparison` evaluates every method of a comparison file
(:mod:`erasablemask.experiments.config.compare`) with the same code as
``erasablemask evaluate`` (:func:`~erasablemask.platform.evaluation_run.evaluate_and_write`:
:func:`~erasablemask.experiments.evaluation.evaluate.evaluate_protection`, per-sample
records, rates with 95 % identity-bootstrap intervals), on one set of FR
models built once (``attack.surrogates`` + ``attack.black_box`` of the
experiment config, thresholds at ``evaluation.asr_far`` / ``esr_far``), the
same targets (:func:`~erasablemask.experiments.evaluation.targets.build_targets`
of that config) and the same transforms (``evaluation.transforms``).

MLflow: one parent run (``stage=compare``, ``method=compare``, the experiment
config as params, ``comparison.csv`` and ``table.txt`` as artifacts) with one
child run per method: tag ``method``, its hyper-parameters as params (plain
names: ``eps``, ``steps``, ...), the evaluation's metrics (``test/<key>`` and
the headline means ``asr.black_box_mean``, ...), ``time.per_image_s`` (wall
time of protecting one image), and ``records.parquet``, ``rates.csv``,
``evaluation.json`` as artifacts.

Commercial FR services (Table III: ``evaluation.commercial_apis`` of the
experiment config, or ``apis`` here / ``compare --apis``) score the same
seeded subset of faces for every method
(:mod:`~erasablemask.platform.commercial_scoring`); their credentials are
checked before any method is built, and their table follows Table II's in
``table.txt``.

Resources a method's factory takes by parameter name, supplied here:
``cfg`` (the experiment config), ``generator`` (the run's frozen AttGAN G),
``ar_model`` (the mini-world attribute classifier:
:func:`~erasablemask.experiments.evaluation.attribute_classifier.ensure_attribute_classifier`),
``device``, ``train_dir`` (``<out>/<method>/train``, for a generator
method trained here) and ``inputs`` (the run's stage-1 checkpoint: GMAA's
AttGAN teacher); ``erasablemask`` gets ``checkpoint`` = the run.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from erasablemask.experiments.attacks.registry import factory_keywords
from erasablemask.experiments.config.compare import CompareConfig
from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.models.atomic_files import write_text_atomic
from erasablemask.platform.evaluation_run import rate_cell

__all__ = [
    "ComparisonResult",
    "MethodResources",
    "build_method",
    "run_comparison",
    "comparison_table",
    "experiment_config",
]

COMPARISON_CSV = "comparison.csv"
TABLE_TXT = "table.txt"


@dataclass
class ComparisonResult:
    """What :func:`run_comparison` produced.

    Attributes:
        out_dir: the folder holding ``<method>/`` evaluation files, ``comparison.csv`` and ``table.txt``.
        rates: every method's rates (``rate_table`` rows, with ``method``).
        seconds_per_image: wall time of protecting one image, per method (protect calls only).
        n_images: source images per method.
        table: the printed Table II-style lines.
        uri, parent_run_id, child_run_ids: where MLflow has them (None: not tracked).
    """

    out_dir: Path
    rates: pd.DataFrame
    seconds_per_image: dict[str, float]
    n_images: int
    table: list[str]
    uri: str | None = None
    parent_run_id: str | None = None
    child_run_ids: dict[str, str] = field(default_factory=dict)


def experiment_config(cmp: CompareConfig) -> tuple[ErasableMaskConfig, Path | None]:
    """(the experiment config, the run folder or None): the run's ``config.yaml`` when ``run`` is set."""
    from erasablemask.experiments.config.loading import load_config

    if cmp.run is None:
        return load_config(cmp.config, cmp.overrides), None
    run = Path(cmp.run)
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"run '{run}' has no config.yaml; pass an ErasableMask run folder as `run`")
    return load_config(run / "config.yaml", cmp.overrides), run


class _Timed:
    """Wraps a Protection's ``protect`` to add up its wall time and image count (:meth:`restore` unwraps)."""

    def __init__(self, protection: Any) -> None:
        self.protection, self.seconds, self.images = protection, 0.0, 0
        inner = protection.protect
        self._had_own = "protect" in vars(protection)

        def protect(x, x_target, **kw):
            t0 = time.perf_counter()
            out = inner(x, x_target, **kw)
            self.seconds += time.perf_counter() - t0
            self.images += int(x.shape[0])
            return out

        protection.protect = protect

    def restore(self) -> None:
        if not self._had_own:
            del self.protection.protect


class MethodResources:
    """The factories' non-hyper-parameter inputs, built on first use and shared between methods."""

    def __init__(self, cfg: ErasableMaskConfig, run: Path | None, out_dir: Path) -> None:
        self.cfg, self.run, self.out_dir = cfg, run, out_dir
        self._erasablemask: Any = None
        self._ar: Any = None

    def erasablemask(self) -> Any:
        if self._erasablemask is None:
            if self.run is None:
                raise ValueError(
                    "method erasablemask needs a trained run: set `run: RUN_FOLDER` in the "
                    "comparison file (or --set run=RUN_FOLDER)"
                )
            from erasablemask.experiments import attacks

            self._erasablemask = attacks.build("erasablemask", [], checkpoint=self.run, cfg=self.cfg)
        return self._erasablemask

    def generator(self) -> Any:
        if self.run is None:
            raise ValueError(
                "method semanticadv edits with the run's AttGAN generator: set `run: RUN_FOLDER` "
                "in the comparison file (or --set run=RUN_FOLDER)"
            )
        return self.erasablemask().protector.generator

    def ar_model(self) -> Any:
        if self._ar is None:
            from erasablemask.experiments.evaluation.attribute_classifier import ensure_attribute_classifier

            self._ar = ensure_attribute_classifier(self.cfg, progress=True)
        return self._ar

    def stage1_checkpoint(self) -> str:
        """The run's stage-1 checkpoint (``stage1/final``, else the newest complete one): a teacher's ``inputs``."""
        from erasablemask.experiments.curriculum.checkpoint import finished_stage_checkpoint

        latest = finished_stage_checkpoint(self.run, 1)
        if latest is None:
            raise FileNotFoundError(
                f"run '{self.run}' has no complete stage-1 checkpoint (a generator method's "
                f"teacher); train stage 1 there first"
            )
        return str(latest)

    def kwargs(self, name: str, hparams: dict[str, Any]) -> dict[str, Any]:
        wanted = set(factory_keywords(name)) - set(hparams)
        supply = {
            "cfg": lambda: self.cfg,
            "generator": self.generator,
            "ar_model": self.ar_model,
            "device": lambda: "cpu",
            "train_dir": lambda: str(self.out_dir / name / "train"),
        }
        if self.run is not None:
            supply["inputs"] = self.stage1_checkpoint
        out = {k: make() for k, make in supply.items() if k in wanted}
        if name == "erasablemask" and "checkpoint" not in hparams:
            if self.run is None:
                raise ValueError(
                    "method erasablemask needs a trained run: set `run: RUN_FOLDER` in the "
                    "comparison file (or --set run=RUN_FOLDER)"
                )
            out["checkpoint"] = str(self.run)
        return out


def build_method(name: str, hparams: dict[str, Any], surrogates: list[Any], resources: MethodResources) -> Any:
    """Method ``name`` with ``hparams`` against ``surrogates``, its resources from ``resources``.

    Raises:
        LookupError: ``name`` is not registered.
        ValueError: a bad hyper-parameter, or a resource that this comparison lacks (no run).
    """
    from erasablemask.experiments import attacks

    if name == "erasablemask" and "checkpoint" not in hparams:
        return resources.erasablemask()  # shared with semanticadv's generator: loaded once
    return attacks.build(name, surrogates, **hparams, **resources.kwargs(name, hparams))


def comparison_table(
    rates: pd.DataFrame,
    *,
    black_box: list[str],
    surrogates: list[str],
    seconds_per_image: dict[str, float] | None = None,
) -> list[str]:
    """Table II-style lines: per method, ASR (and ESR where the method erases) per black-box model, the
    surrogates' mean ASR, the images behind each rate and the wall time per image.

    Rates in %, with the 95 % identity-bootstrap interval in brackets (``rates.csv``); "-": not defined
    (ESR of a method that cannot erase). The ``clean`` row is the unprotected faces, ``attr-only`` the
    AttGAN edit without protection (from the first method that has it).
    """
    lines = ["  rates in % [95 % identity-bootstrap interval]; ASR at FAR 0.01 (τ1), ESR at FAR 0.1 (τ2)"]
    head = f"  {'method':14s}" + "".join(f" {'ASR ' + m:>17.17s}" for m in black_box)
    head += "".join(f" {'ESR ' + m:>17.17s}" for m in black_box)
    head += f" {'ASR white-box':>17s} {'n':>5s} {'s/image':>9s}"
    lines.append(head)
    prot = rates[(rates["transform"] == "none")]
    methods = list(dict.fromkeys(prot["method"]))

    def row(label: str, sub: pd.DataFrame, kind: str, seconds: float | None) -> str:
        cells = [rate_cell(sub, empty="-", model=m, kind=kind, rate="asr") for m in black_box]
        cells += [rate_cell(sub, empty="-", model=m, kind=kind, rate="esr") for m in black_box]
        wb = sub[(sub["kind"] == kind) & (sub["rate"] == "asr") & sub["model"].isin(surrogates)]
        wb_cell = f"{100 * wb['value'].mean():5.1f}{'':12s}" if len(wb) else f"{'-':>17s}"
        n = sub[(sub["kind"] == kind) & (sub["rate"] == "asr")]["n"]
        secs = f"{seconds:9.3f}" if seconds is not None else f"{'':9s}"
        return f"  {label:14.14s} " + " ".join(cells) + f" {wb_cell} {int(n.max()) if len(n) else 0:5d} {secs}"

    if methods:
        first = prot[prot["method"] == methods[0]]
        lines.append(row("clean", first, "clean", None))
        for m in methods:
            sub = prot[prot["method"] == m]
            if (sub["kind"] == "attr_only").any():
                lines.append(row("attr-only", sub, "attr_only", None))
                break
    for m in methods:
        lines.append(row(m, prot[prot["method"] == m], "protected", (seconds_per_image or {}).get(m)))
    lines.append("  ASR white-box: mean over the surrogates (no interval; per-model rows in comparison.csv)")
    return lines


def run_comparison(
    cmp: CompareConfig,
    *,
    out_dir: Path | None = None,
    track: bool = True,
    max_images: int | None = None,
    progress: bool = True,
    apis: list[str] | None = None,
    api_max_images: int | None = None,
) -> ComparisonResult:
    """Evaluate every method of ``cmp`` on the same experiment, write, track and tabulate (module docstring).

    Args:
        cmp: the validated comparison (:func:`~erasablemask.experiments.config.compare.load_compare`).
        out_dir: where to write (default ``<run>/comparisons/<name>-<UTC time>``, or under
            ``tracking.run_dir`` without a run).
        track: log to MLflow (the run folder's tracking URI, else the config's / ``<out_dir>/mlflow.db``).
        max_images: cap on source images (overrides ``evaluation.max_images``).
        progress: progress bars while models are prepared.
        apis, api_max_images: commercial FR services and the faces sent to each (override
            ``evaluation.commercial_apis``; :mod:`~erasablemask.platform.commercial_scoring`).

    Returns:
        The :class:`ComparisonResult`.

    Raises:
        MissingCredentials: a commercial service's environment variables are not set (before any work).
    """
    from erasablemask.experiments.fr_tools.zoo import build_fr_models
    from erasablemask.platform.evaluation_run import evaluate_and_write
    from erasablemask.platform.tracking import check_tracking_uri, headline_metrics, resolve_tracking_uri, run_tags

    cfg, run = experiment_config(cmp)
    if max_images is not None:
        cfg = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"max_images": max_images})})
    from erasablemask.platform.commercial_scoring import build_services, commercial_lines, with_commercial_apis

    cfg = with_commercial_apis(cfg, apis, api_max_images)
    services = build_services(cfg)  # missing credentials: one line, before any work
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = (
        Path(out_dir)
        if out_dir
        else (run / "comparisons" if run else Path(cfg.tracking.run_dir)) / f"{cmp.name}-{stamp}"
    )
    out.mkdir(parents=True, exist_ok=True)
    store_dir = run or out
    uri = None
    if track:
        uri = resolve_tracking_uri(cfg, store_dir)
        check_tracking_uri(uri)  # before any work
    names = [*cfg.attack.surrogates, *cfg.attack.black_box]
    models = build_fr_models(cfg, names, "cpu", progress=progress)
    surrogates = [models[n] for n in cfg.attack.surrogates]
    resources = MethodResources(cfg, run, out)

    all_rates: list[pd.DataFrame] = []
    seconds: dict[str, float] = {}
    child_ids: dict[str, str] = {}
    n_images = 0
    label = f"{cmp.name}-{stamp}"
    tracking: Any = contextlib.nullcontext(None)
    if track:
        from erasablemask.platform.tracking import Tracker

        tracking = Tracker.open(
            cfg,
            store_dir,
            run_name=f"compare-{label}",
            runner="in-process",
            tags={"stage": "compare", "method": "compare", "sweep": "none", "methods": ",".join(cmp.methods)},
        )
    with tracking as tracker:
        parent_id = tracker.trial_run_id if tracker is not None else None
        if tracker is not None:
            tracker.log_params(
                parent_id, {"compare.name": cmp.name, "compare.split": cmp.split, "compare.methods": list(cmp.methods)}
            )
        for k, (name, hp) in enumerate(cmp.methods.items(), 1):
            if progress:
                print(f"compare: [{k}/{len(cmp.methods)}] {name}", file=sys.stderr, flush=True)
            protection = build_method(name, hp, surrogates, resources)
            timed = _Timed(protection)
            child = None
            if tracker is not None:
                child = tracker.client.create_run(
                    tracker.experiment_id,
                    run_name=name,
                    tags={
                        **run_tags(cfg, method=name, stage="compare", runner="in-process"),
                        "mlflow.parentRunId": parent_id,
                        "comparison": label,
                    },
                ).info.run_id
                child_ids[name] = child
            child_ok = False
            try:
                is_em = name == "erasablemask"
                report, files = evaluate_and_write(
                    cfg,
                    protection,
                    out / name,
                    run=child or f"{label}/{name}",
                    stage=getattr(protection, "stage", None) if is_em else None,
                    checkpoint=getattr(protection, "checkpoint", None) if is_em else None,
                    split=cmp.split,
                    models=models,
                    discriminator=getattr(protection, "discriminator", None) if is_em else None,  # AttGAN D only
                    n_boot=cmp.n_boot,
                    progress=progress,
                    services=services,
                )
                n_images = report.n_images
                seconds[name] = timed.seconds / max(timed.images, 1)
                all_rates.append(pd.read_csv(files.rates))
                if tracker is not None and child is not None:
                    hparams = protection.hparams() if hasattr(protection, "hparams") else dict(hp)
                    tracker.log_params(child, hparams)
                    metrics = {f"test/{k}": v for k, v in report.metrics.items()}
                    tracker.log_metrics(
                        child,
                        {**metrics, **headline_metrics(report.metrics), "time.per_image_s": seconds[name]},
                        step=0,
                    )
                    for f in files.all():
                        tracker.client.log_artifact(child, str(f))
                child_ok = True
            finally:
                timed.restore()
                if tracker is not None and child is not None:
                    tracker.client.set_terminated(child, status="FINISHED" if child_ok else "FAILED")
        rates_all = pd.concat(all_rates, ignore_index=True) if all_rates else pd.DataFrame()
        table = comparison_table(
            rates_all,
            black_box=list(cfg.attack.black_box),
            surrogates=list(cfg.attack.surrogates),
            seconds_per_image=seconds,
        )
        table += commercial_lines(rates_all)
        csv = write_text_atomic(out / COMPARISON_CSV, rates_all.to_csv(index=False))
        txt = write_text_atomic(out / TABLE_TXT, "\n".join(table) + "\n")
        if tracker is not None:
            tracker.client.log_artifact(parent_id, str(csv))
            tracker.client.log_artifact(parent_id, str(txt))
            tracker.log_metrics(parent_id, {f"time.per_image_s/{m}": s for m, s in seconds.items()}, step=0)
    return ComparisonResult(
        out_dir=out,
        rates=rates_all,
        seconds_per_image=seconds,
        n_images=n_images,
        table=table,
        uri=uri,
        parent_run_id=parent_id,
        child_run_ids=child_ids,
    )
