"""``erasablemask evaluate RUN_OR_CHECKPOINT [--models ...] [--transforms ...] [--data ...] [--method ...]``.

Evaluates a saved protection on a data set with FR models of the zoo, with
the same code as the pipeline's ``--evaluate``
(:func:`erasablemask.platform.evaluation_run.evaluate_and_write`):

- ``RUN_OR_CHECKPOINT``: a run folder (its last complete stage-3, else
  stage-2, checkpoint and its ``config.yaml``) or a stage-2/3 checkpoint
  directory (then ``--config`` names the config it was trained with, unless
  the checkpoint lies in a run folder). With ``--method`` other than
  ``erasablemask`` (a competitor, built by ``experiments.attacks.build``)
  it is a run folder or a config (YAML file or shipped name) that names the
  data and FR models;
- ``--models``: FR models of the zoo (default: ``attack.surrogates`` +
  ``attack.black_box``); a model in ``attack.surrogates`` keeps the role
  ``surrogate``, any other is ``black_box``;
- ``--transforms``: evaluation transforms (default ``evaluation.transforms``;
  ``none`` is always scored), with the options of ``evaluation.transform_options``;
- ``--data``: another data set: a ``data`` config-group option
  (``miniworld``, ``celebahq``) or a YAML file with a ``data:`` section; its
  keys replace the run's for the evaluation only (the networks are still
  loaded and checked with the run's config);
- ``--set key=value``: overrides for both (``evaluation.max_images=32``);
- ``--apis facepp tencent aliyun``: also score a seeded subset of the faces
  (``--api-max-images``, default 100) with commercial FR services (Table III;
  ``evaluation.commercial_apis``, :mod:`erasablemask.platform.commercial_scoring`);
  their credentials come from the environment and are checked before any work.

Writes ``evaluation.json``, ``records.parquet``, ``rates.csv`` (rates with 95 %
identity-bootstrap intervals) and, for ErasableMask, ``protection_grid.png`` to
``--out`` (default ``<run folder>/evaluations/<method>-<UTC time>``), logs them
to MLflow as a child run of the run folder's trial run (found by its config
digest at the run folder's tracking URI; ``--parent-run ID`` names it; a
top-level run when there is none) unless ``--no-track``, and prints the table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from erasablemask.experiments.config.loading import load_config
from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.platform.cli.args import add_commercial_api_arguments
from erasablemask.platform.evaluation_run import rate_cell

__all__ = ["register", "evaluation_config", "find_trial_run", "rates_lines"]

ERASABLEMASK = "erasablemask"


def _config_path_for(target: Path, config: str | None) -> str | Path:
    """The config of ``target``: ``--config``, else ``config.yaml`` of its run folder."""
    if config:
        return config
    for folder in (target, *target.parents):
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
        if folder.name.startswith("stage") and (folder.parent / "config.yaml").is_file():
            return folder.parent / "config.yaml"
    raise FileNotFoundError(
        f"no config.yaml in '{target}' or a folder above it; pass --config CONFIG (the config "
        f"the checkpoint was trained with)"
    )


def evaluation_config(
    run_cfg_source: str | Path, overrides: list[str], data: str | None
) -> tuple[ErasableMaskConfig, ErasableMaskConfig]:
    """(the run's config, the evaluation's config): ``--data``'s keys replace the run's in the second only.

    Raises:
        ValueError: ``--data`` is neither a data option nor a YAML file with a ``data:`` section.
    """
    from erasablemask.experiments.config.groups import deep_merge, read_option, read_yaml_mapping
    from erasablemask.experiments.config.loading import CONFIG_DIR

    run_cfg = load_config(run_cfg_source, overrides)
    if data is None:
        return run_cfg, run_cfg
    if Path(data).suffix in (".yaml", ".yml"):
        if not Path(data).is_file():
            raise FileNotFoundError(
                f"--data {data}: no such file; pass a data option ({_data_options()}) or a "
                f"YAML file with a data: section"
            )
        tree = read_yaml_mapping(Path(data))
        if "data" not in tree:
            raise ValueError(f"--data {data}: the file has no data: section")
    else:
        tree = read_option(CONFIG_DIR, "data", data)
    merged = deep_merge(run_cfg.model_dump(mode="json"), tree)
    try:
        eval_cfg = ErasableMaskConfig.model_validate(merged)
    except Exception as err:  # pydantic ValidationError: name the input
        raise ValueError(f"--data {data}: the evaluation config is invalid: {err}") from None
    eval_cfg.groups = {**run_cfg.groups, "data": Path(data).stem}
    return run_cfg, eval_cfg


def _data_options() -> str:
    from erasablemask.experiments.config.groups import options
    from erasablemask.experiments.config.loading import CONFIG_DIR

    return ", ".join(options(CONFIG_DIR, "data"))


def find_trial_run(uri: str, experiment_name: str, config_digest: str) -> str | None:
    """The newest finished trial run (tag ``stage=all``) tagged with ``config_digest`` at ``uri``, or None.

    ``config_digest`` is the one the checkpoint recorded when it was trained (the config's digest can change
    when the schema gains keys with defaults).
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment_name)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.config_digest = '{config_digest}' and tags.stage = 'all'",
        order_by=["attributes.start_time DESC"],
        max_results=20,
    )
    for r in runs:
        if r.info.status == "FINISHED":
            return r.info.run_id
    return None


def rates_lines(rates: pd.DataFrame) -> list[str]:
    """The console table: per model ASR / ESR / IDR (protected, no transform), the clean and attribute-only
    ASR; then ASR / ESR / IDR per transform, averaged rows not shown (rates.csv has every cell)."""
    if rates.empty:
        return ["  (no rates)"]
    cell = partial(rate_cell, rates, empty="n/a")
    models = list(dict.fromkeys(rates.loc[rates["role"] != "commercial", "model"]))
    roles = rates.drop_duplicates("model").set_index("model")["role"].to_dict()
    head = f"  {'role':9s} {'model':26s} {'ASR':>17s} {'ESR':>17s} {'IDR':>17s} {'ASR clean':>17s} {'ASR attr':>17s}"
    lines = [head]
    for m in models:
        prot = dict(model=m, transform="none", kind="protected")
        lines.append(
            f"  {roles[m]:9s} {m:26s} {cell(**prot, rate='asr')} {cell(**prot, rate='esr')} "
            f"{cell(**prot, rate='idr')} "
            f"{cell(model=m, kind='clean', rate='asr')} "
            f"{cell(model=m, kind='attr_only', rate='asr')}"
        )
    transforms = [t for t in dict.fromkeys(rates["transform"]) if t != "none"]
    if transforms:
        lines.append("  after each transform (Table V; ESR/IDR: the restorer applied to the transformed face):")
        lines.append(f"  {'transform':12s} {'model':26s} {'ASR':>17s} {'ESR':>17s} {'IDR':>17s}")
        for t in transforms:
            for m in models:
                sel = dict(model=m, transform=t, kind="protected")
                lines.append(
                    f"  {t:12s} {m:26s} {cell(**sel, rate='asr')} "
                    f"{cell(**sel, rate='esr')} {cell(**sel, rate='idr')}"
                )
    return lines


def _build_protection(
    method: str, target: Path, run_cfg: ErasableMaskConfig, eval_cfg: ErasableMaskConfig, models: dict[str, Any]
) -> tuple[Any, Path | None, int | None]:
    """(protection, checkpoint, stage) for ``--method``."""
    if method == ERASABLEMASK:
        from erasablemask.experiments.evaluation.erasablemask_protection import ErasableMaskProtection

        p = ErasableMaskProtection.from_checkpoint(run_cfg, target, "cpu")
        return p, p.checkpoint, p.stage
    import importlib

    attacks = importlib.import_module("erasablemask.experiments.attacks")
    build = getattr(attacks, "build", None)
    if build is None:
        raise ValueError(
            f"--method {method}: this erasablemask has no competitor registry "
            f"(experiments.attacks.build); use --method erasablemask"
        )
    missing = [n for n in eval_cfg.attack.surrogates if n not in models]
    if missing:  # the attack's white-box models, also when --models scores others
        from erasablemask.experiments.fr_tools.zoo import build_fr_models

        models = {**models, **build_fr_models(eval_cfg, missing, "cpu", progress=True)}
    return build(method, surrogates=[models[n] for n in eval_cfg.attack.surrogates]), None, None


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    from erasablemask.platform.evaluation_run import evaluate_and_write
    from erasablemask.platform.tracking import check_tracking_uri, resolve_tracking_uri, where_lines

    target = Path(args.target)
    method = args.method
    is_dir = target.is_dir()
    if method == ERASABLEMASK and not is_dir:
        raise FileNotFoundError(f"'{target}' is not a folder; pass a run folder or a stage-2/3 checkpoint directory")
    if method == ERASABLEMASK or (is_dir and (target / "config.yaml").is_file()):
        cfg_source: str | Path = _config_path_for(target, args.config)
    else:
        cfg_source = args.config or args.target  # a competitor on a config
    run_cfg, cfg = evaluation_config(cfg_source, args.overrides, args.data)
    if args.max_images is not None:
        cfg = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"max_images": args.max_images})})
    from erasablemask.platform.commercial_scoring import build_services, with_commercial_apis

    cfg = with_commercial_apis(cfg, args.apis, args.api_max_images)
    services = build_services(cfg)  # missing credentials: one line, before any work
    names = list(args.models or [*cfg.attack.surrogates, *cfg.attack.black_box])
    from erasablemask.models.fr.registry import is_registered

    unknown = [n for n in names if not is_registered(n)]  # also robust entries saved by `fr robustify`
    if unknown:
        raise LookupError(f"--models: unknown FR models {unknown}; `erasablemask fr list` shows the zoo")
    if args.transforms:
        from erasablemask.models.eval_transforms import EVAL_TRANSFORMS

        bad = [t for t in args.transforms if t not in EVAL_TRANSFORMS]
        if bad:
            raise ValueError(f"--transforms: unknown {bad}; choose from {sorted(EVAL_TRANSFORMS)}")
    if args.adaptive_attacker:
        if any(b < 0 for b in args.budgets):
            raise ValueError(f"--budgets {args.budgets}: attacker training steps must be >= 0")
        if min(args.attacker_faces) < 2:
            raise ValueError(f"--attacker-faces {args.attacker_faces}: give >= 2 identities and >= 2 images each")
    run_dir = Path(cfg_source).parent if Path(str(cfg_source)).name == "config.yaml" else None
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else (run_dir or Path(cfg.tracking.run_dir)) / "evaluations" / f"{method}-{stamp}"
    store_dir = run_dir or out
    uri = None
    if not args.no_track:
        uri = resolve_tracking_uri(cfg, store_dir)
        check_tracking_uri(uri)  # before any work
    if args.threads:
        torch.set_num_threads(args.threads)

    from erasablemask.experiments.fr_tools.zoo import build_fr_models

    models = build_fr_models(cfg, names, "cpu", progress=True)
    protection, checkpoint, stage = _build_protection(method, target, run_cfg, cfg, models)
    print(
        f"erasablemask evaluate: {method}"
        + (f" from {checkpoint}" if checkpoint else "")
        + f", models {names}, data {cfg.data.kind}, out {out}",
        flush=True,
    )
    kw = dict(
        stage=stage,
        checkpoint=checkpoint,
        split=args.split,
        transforms=args.transforms,
        models=models,
        # D_att judges attribute edits with AttGAN's D only (a competitor's own discriminator is another net).
        discriminator=getattr(protection, "discriminator", None) if method == "erasablemask" else None,
        n_boot=args.n_boot,
        services=services,
    )
    if args.no_track:
        report, files = evaluate_and_write(cfg, protection, out, run=out.name, **kw)
        run_id = None
    else:
        from erasablemask.platform.tracking import Tracker

        parent = args.parent_run
        if parent is None and run_dir is not None and checkpoint is not None:
            from erasablemask.experiments.curriculum.checkpoint import read_checkpoint_meta

            digest = str(read_checkpoint_meta(checkpoint).get("config_digest", ""))
            parent = find_trial_run(uri, cfg.tracking.experiment_name, digest) if digest else None
        tags = {
            "stage": "evaluate",
            "method": protection.name,
            "sweep": "none",
            "evaluated_run": parent or "none",
            "evaluation_data": cfg.data.kind,
            "fr_models": ",".join(names),
        }
        with Tracker.open(
            cfg, store_dir, run_name=f"evaluate-{method}-{stamp}", runner="in-process", parent_run_id=parent, tags=tags
        ) as tracker:
            run_id = tracker.trial_run_id
            report, files = evaluate_and_write(cfg, protection, out, run=run_id, **kw)
            tracker.log_evaluation(report.metrics, files.all(), targets=report.targets)
    if args.adaptive_attacker:
        from erasablemask.platform.evaluation_run import adaptive_attack_and_write

        print(f"adaptive attacker: arch {args.attacker_arch}, budgets {args.budgets}, seeds {args.seeds}", flush=True)
        summary, written = adaptive_attack_and_write(
            cfg,
            protection,
            models,
            out,
            budgets=args.budgets,
            seeds=args.seeds,
            arch=args.attacker_arch,
            attacker_faces=tuple(args.attacker_faces),
            max_images=cfg.evaluation.max_images,
            n_boot=args.n_boot,
        )
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print("\n".join(f"  adaptive        {p}" for p in written))
        if run_id is not None:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=uri)
            for p in written:
                client.log_artifact(run_id, str(p), "adaptive_attacker")
    rates = pd.read_csv(files.rates)
    print(
        f"evaluation ({report.n_images} {args.split} images, targets {report.targets}; rates in % with 95 % "
        f"identity-bootstrap intervals; ASR at FAR {cfg.evaluation.asr_far:g}, ESR at FAR {cfg.evaluation.esr_far:g},"
        f" IDR at FAR 0.01):"
    )
    print("\n".join(rates_lines(rates)))
    from erasablemask.platform.commercial_scoring import commercial_lines

    for line in commercial_lines(rates):
        print(line)
    quality = {k: v for k, v in report.metrics.items() if k.startswith("quality/")}
    if quality:
        print("image quality (Table VI):")
        print("\n".join(f"  {k:48s} {v:.4g}" for k, v in sorted(quality.items())))
    print(f"  evaluation      {files.summary}\n  records         {files.records}\n  rates           {files.rates}")
    if files.grid is not None:
        print(f"  image grid      {files.grid}")
    print("\n".join(where_lines(uri, run_id)))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``evaluate``."""
    p = subparsers.add_parser("evaluate", help="evaluate a saved protection on a data set and FR models")
    p.add_argument(
        "target",
        metavar="RUN_OR_CHECKPOINT",
        help="run folder or stage-2/3 checkpoint directory (a config for a competitor --method)",
    )
    p.add_argument("--config", default=None, help="the checkpoint's config (default: config.yaml of its run folder)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a config value (repeatable), e.g. --set evaluation.max_images=32",
    )
    p.add_argument("--models", nargs="+", default=None, help="FR models of the zoo (default: surrogates + black-box)")
    p.add_argument("--transforms", nargs="+", default=None, help="evaluation transforms (default: the config's)")
    p.add_argument(
        "--data",
        default=None,
        help="evaluate on another data set: a data config option or a YAML file with a data: section",
    )
    p.add_argument(
        "--method",
        default=ERASABLEMASK,
        help="the protection: erasablemask (default) or a competitor of experiments.attacks",
    )
    p.add_argument("--split", choices=("test", "val"), default="test", help="source images (default test)")
    add_commercial_api_arguments(p)
    p.add_argument("--max-images", type=int, default=None, help="cap on source images (0: all)")
    p.add_argument("--out", default=None, help="output folder (default: RUN/evaluations/<method>-<UTC time>)")
    p.add_argument("--parent-run", default=None, help="MLflow run to nest under (default: the run folder's trial)")
    p.add_argument("--no-track", action="store_true", help="do not record the evaluation in MLflow")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates per interval (default 1000)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument(
        "--adaptive-attacker",
        action="store_true",
        help="also train an attacker's own restorer with the public protector and report IDR after it",
    )
    p.add_argument(
        "--attacker-arch",
        choices=("restorer", "unet"),
        default="restorer",
        help="the attacker's restorer: R's architecture from G (default) or a plain U-Net",
    )
    p.add_argument(
        "--budgets",
        type=int,
        nargs="+",
        default=[0, 50, 100, 200],
        help="attacker training steps at which IDR is measured (the curve)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="attacker seeds")
    p.add_argument(
        "--attacker-faces",
        type=int,
        nargs=2,
        default=[16, 8],
        metavar=("IDENTITIES", "PER_IDENTITY"),
        help="the attacker's own mini-world faces: identities and images each (default 16 8)",
    )
    p.set_defaults(handler=_evaluate)
