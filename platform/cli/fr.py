"""``erasablemask fr list | calibrate | verify``: the face-recognition zoo from the shell.

- ``fr list [--json]``: every registered model with its input convention,
  weights source and published thresholds per FAR (with their provenance),
  then every calibration made here, keyed by (model, weights digest,
  calibration set).
- ``fr calibrate MODEL --pairs PAIRS.csv --images DIR``: thresholds at the
  requested FARs from impostor scores, the TAR at each; saved under the
  digest of the weights used and the pairs' calibration set, where
  ``erasablemask.models.fr.build`` picks them up for those weights.
- ``fr verify MODEL A.jpg B.jpg [--calibration ID]``: cosine similarity and
  the decision at each FAR the model has a threshold for.
- ``fr train-mini [NAMES]``: train (or load from the cache) and calibrate
  the mini-world models of one world (:mod:`erasablemask.experiments.fr_tools.mini_zoo`).
- ``fr robustify MODEL [--data DIR --pairs CSV --images DIR]``: adversarial
  fine-tuning (PGD in the loop) saved as the zoo entry ``MODEL_robust``, with
  clean and under-PGD verification accuracy before and after
  (:mod:`erasablemask.experiments.fr_tools.robustify`).

Handlers return 0 on success and 2 on bad input (after printing the error).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from erasablemask.experiments.fr_tools.calibration import (
    DEFAULT_FARS,
    check_fars,
    pairs_calibration_set,
    read_pairs,
    roc_auc,
    save_thresholds,
    score_pairs,
    thresholds_at_far,
)
from erasablemask.experiments.fr_tools.verification import verify_pair
from erasablemask.models.fr.calibrations import legacy_threshold_files
from erasablemask.models.fr.download import sha256_file
from erasablemask.models.fr.registry import (
    PUBLISHED,
    FRSpec,
    WeightsUnavailable,
    available,
    build,
    get_spec,
    list_calibrations,
)

if TYPE_CHECKING:
    from erasablemask.experiments.fr_tools.mini_world import MiniZooWorld

_BAD_INPUT = (ValueError, OSError, KeyError, LookupError, WeightsUnavailable)


def _fail(exc: BaseException) -> int:
    from erasablemask.platform.cli.main import error_line

    print(error_line("fr", exc), file=sys.stderr)
    return 2


def format_table(rows: list[list[str]], headers: list[str], max_width: int | None = None) -> str:
    """Left-aligned plain-text table with a dashed rule under the header.

    Cells longer than ``max_width`` characters (if given and > 0) are cut
    with an ellipsis (``--json`` output keeps everything).
    """
    if max_width:
        rows = [[c if len(str(c)) <= max_width else str(c)[: max_width - 1] + "…" for c in r] for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [headers, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _preprocessing(spec: FRSpec) -> str:
    p = spec.preprocessing
    parts = [f"{p.channel_order} {p.scale}"]
    if p.center_crop < 1:
        parts.insert(0, f"crop {p.center_crop:g}")
    if any(m != 0 for m in p.mean) or any(s != 1 for s in p.std):
        mean = ",".join(f"{m:.4g}" for m in p.mean)
        std = f"{p.std[0]:.4g}" if len(set(p.std)) == 1 else ",".join(f"{v:.4g}" for v in p.std)
        parts.append(f"(x-[{mean}])/{std}")
    return f"{p.resize} " + ", ".join(parts)


def _weights(spec: FRSpec) -> str:
    w = spec.weights
    return f"{w.kind}: {w.location}" if w.location else w.kind


def _thr(thresholds: dict[float, float], far: float) -> str:
    return f"{thresholds[far]:.6f}" if far in thresholds else "-"


def _json_record(record: dict) -> dict:
    """A calibration record with string FAR keys (JSON keys must be strings)."""
    return {k: ({repr(f): x for f, x in v.items()} if k in ("thresholds", "tar", "actual_far") else v)
            for k, v in record.items()}


def _list(args: argparse.Namespace) -> int:
    from erasablemask.models.fr.robust_zoo import register_all_saved

    register_all_saved()  # entries saved by `fr robustify` are listed with the zoo
    names = available()
    calibrations, errors = {}, {}
    for name in names:
        try:
            calibrations[name] = list_calibrations(name)
        except ValueError as e:  # unreadable calibration file: show it, keep listing
            calibrations[name], errors[name] = [], str(e)
    specs = {name: get_spec(name) for name in names}
    if args.json:
        out = []
        for name in names:
            d = dataclasses.asdict(specs[name])
            d["thresholds"] = {repr(k): v for k, v in sorted(specs[name].thresholds.items())}
            d["calibrations"] = [_json_record(r) for r in calibrations[name]]
            if name in errors:
                d["error"] = errors[name]
            out.append(d)
        print(json.dumps(out, indent=2))
        return 0
    records = [r for name in names for r in calibrations[name]]
    fars = sorted({f for s in specs.values() for f in s.thresholds} | {f for r in records for f in r["thresholds"]}
                  | set(DEFAULT_FARS), reverse=True)
    headers = ["name", "family", "emb", "input", "preprocessing", "weights",
               *[f"thr@{f:g}" for f in fars], "thresholds source"]
    rows = []
    for name in names:
        s = specs[name]
        size = f"{s.preprocessing.size[0]}x{s.preprocessing.size[1]}"
        source = s.threshold_source if s.thresholds else f"none published ({s.threshold_source.removeprefix('none: ')})"
        if name in errors:
            source = f"ERROR: {errors[name]}"
        rows.append([name, s.family, str(s.embedding_size), size, _preprocessing(s), _weights(s),
                     *[_thr(s.thresholds, f) for f in fars], source])
    print(format_table(rows, headers, max_width=args.max_width) if rows else "no FR models registered")
    if records:
        print("\ncalibrated here (used by build() for exactly these weights; several sets: name one with "
              "calibration=ID / --calibration ID):")
        cal_rows = [[r["model"], r["weights_digest"][:16], r["calibration_set"],
                     *[_thr(r["thresholds"], f) for f in fars], r.get("source", "")] for r in records]
        print(format_table(cal_rows, ["name", "weights", "calibration set", *[f"thr@{f:g}" for f in fars], "source"],
                           max_width=args.max_width))
    legacy = legacy_threshold_files()
    if legacy:
        print(f"\nignored: {len(legacy)} threshold file(s) of the old layout, which do not say which weights they "
              f"belong to ({', '.join(str(p) for p in legacy[:3])}{', ...' if len(legacy) > 3 else ''}); "
              "delete them and re-run `erasablemask fr calibrate` (or `fr train-mini`)")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    try:
        spec = get_spec(args.model)
        pairs = read_pairs(args.pairs, args.images)
        n_gen, n_imp = int((pairs["same"] == 1).sum()), int((pairs["same"] == 0).sum())
        check_fars(args.far, n_imp, min_false_accepts=args.min_false_accepts)  # before embedding
        if n_gen == 0:
            raise ValueError(f"pairs file '{args.pairs}' has no genuine pairs (same=1); TAR needs some")
        model = build(spec.name, weights=args.weights, calibration=PUBLISHED).to(args.device)
        embed = None
        if args.align:  # the makers' alignment (experiments/photos/fr_align.py); its own calibration set
            from erasablemask.experiments.photos.fr_align import AlignedEmbedder

            embed = AlignedEmbedder(model).embed
        genuine, impostor = score_pairs(model, pairs, args.images, batch_size=args.batch_size, embed=embed)
        rows = thresholds_at_far(genuine, impostor, args.far, min_false_accepts=args.min_false_accepts)
        calibration_set = pairs_calibration_set(pairs, args.images)
        if args.align:
            from erasablemask.experiments.photos.fr_align import aligned_set_id

            calibration_set = aligned_set_id(calibration_set)
            whole = embed.__self__.whole
            if whole:
                print(f"note: no face found in {len(whole)} image(s), used whole: {whole[:3]}", file=sys.stderr)
    except _BAD_INPUT as e:
        return _fail(e)
    auc = roc_auc(genuine, impostor)
    weights = {"weights": str(args.weights), "weights_sha256": sha256_file(Path(args.weights))} if args.weights else {}
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    source = f"{args.pairs} ({n_gen} genuine / {n_imp} impostor pairs), {today}"
    if args.weights:
        source += f", weights {args.weights}"
    path = save_thresholds(
        spec.name, model.weights_digest, calibration_set, rows, source, n_genuine=n_gen, n_impostor=n_imp,
        extra={"auc": auc, "pairs": str(args.pairs), "images": str(args.images),
               "mean_genuine": float(genuine.mean()), "mean_impostor": float(impostor.mean()), **weights},
    )
    table = [[f"{r['far']:g}", f"{r['threshold']:.6f}", f"{r['tar']:.4f}", f"{r['actual_far']:.5f}"] for r in rows]
    print(f"{spec.name}: {n_gen} genuine, {n_imp} impostor pairs; ROC AUC {auc:.4f}; "
          f"mean cosine genuine {genuine.mean():.4f}, impostor {impostor.mean():.4f}")
    print(format_table(table, ["FAR", "threshold", "TAR", "actual FAR"]))
    print(f"saved to {path}: calibration set '{calibration_set}' of weights {model.weights_digest[:16]} "
          f"(used by build('{spec.name}') with these weights from now on)")
    others = [r["calibration_set"] for r in list_calibrations(spec.name, model.weights_digest)
              if r["calibration_set"] != calibration_set]
    if others:
        print(f"note: these weights now have {len(others) + 1} calibration sets ({', '.join([calibration_set, *others])}); "
              f"build('{spec.name}', calibration=ID) or `fr verify --calibration ID` chooses one")
    replaced = sorted(set(spec.thresholds) & {r["far"] for r in rows}, reverse=True)
    if replaced:
        print(f"note: this replaces the thresholds at FAR {', '.join(f'{f:g}' for f in replaced)} from "
              f"'{spec.threshold_source}' for these weights; --calibration {PUBLISHED} (or deleting {path}) "
              "restores them")
    return 0


def _verify(args: argparse.Namespace) -> int:
    try:
        spec = get_spec(args.model)
        for p in (args.a, args.b):
            if not Path(p).is_file():
                raise FileNotFoundError(f"image '{p}' not found; give two existing image files")
        if args.align:  # the makers' alignment, and thresholds calibrated with it (experiments/photos/fr_align.py)
            from erasablemask.experiments.fr_tools.verification import decisions
            from erasablemask.experiments.photos.fr_align import AlignedEmbedder, calibrated_for_alignment

            model = build(spec.name, weights=args.weights, calibration=args.calibration or PUBLISHED).to(args.device)
            if args.calibration is None:
                calibrated_for_alignment(model, aligned=True)
            emb = AlignedEmbedder(model).embed([args.a, args.b], progress=False)
            cosine = float((emb[0] * emb[1]).sum())
            result = {"cosine": cosine, "decisions": decisions(model, cosine)}
        else:
            model = build(spec.name, weights=args.weights, calibration=args.calibration).to(args.device)
            result = verify_pair(model, args.a, args.b)
    except _BAD_INPUT as e:
        return _fail(e)
    short = ["/".join(Path(p).parts[-2:]) for p in (args.a, args.b)]
    print(f"{spec.name}: cosine({short[0]}, {short[1]}) = {result['cosine']:.4f}")
    if not result["decisions"]:
        print(f"{spec.name} is uncalibrated for these weights (no thresholds), so no decision. Calibrate it with:\n"
              f"  erasablemask fr calibrate {spec.name} --pairs PAIRS.csv --images DIR")
        return 0
    rows = [[f"{d['far']:g}", f"{d['threshold']:.6f}", "same person" if d["same"] else "different"]
            for d in result["decisions"]]
    print(format_table(rows, ["FAR", "threshold", "decision"]))
    print(f"thresholds: {model.spec.threshold_source}")
    return 0


def _train_mini(args: argparse.Namespace) -> int:
    # Imported here: training code is only needed by this command.
    from erasablemask.experiments.fr_tools.mini_world import MiniZooWorld
    from erasablemask.experiments.fr_tools.mini_zoo import ensure_mini_zoo, mini_calibration

    try:
        given = {k: getattr(args, k) for k in ("seed", "n_identities", "images_per_identity",
                                                "heldout_identities", "image_size", "epochs")}
        world = MiniZooWorld(**{k: v for k, v in given.items() if v is not None})
        paths = ensure_mini_zoo(args.names or None, world, threads=args.threads)
    except _BAD_INPUT as e:
        return _fail(e)
    rows = []
    for name, path in paths.items():
        cal = mini_calibration(name, world) or {"thresholds": {}, "tar": {}}
        tars = " ".join(f"{cal['tar'][f]:.3f}@{f:g}" for f in sorted(cal["tar"], reverse=True)) or "-"
        rows.append([name, f"{cal.get('auc', float('nan')):.4f}", tars, str(path)])
    print(format_table(rows, ["name", "calibration AUC", "TAR@FAR", "weights"]))
    return 0


def _robustify_world(args: argparse.Namespace) -> MiniZooWorld:
    """The mini-world a mini model is robustified on: the ``--config``'s (its ``data.miniworld`` and seed), else
    the schema defaults'; ``--world-seed`` and ``--base-epochs`` override either."""
    from erasablemask.experiments.fr_tools.mini_world import MiniZooWorld

    if args.config is None:
        if args.overrides:
            raise ValueError(f"fr robustify --set {args.overrides[0]!r} needs --config (the experiment config it "
                             f"changes), e.g. --config miniworld_demo")
        return MiniZooWorld(**{k: v for k, v in (("seed", args.world_seed), ("epochs", args.base_epochs))
                               if v is not None})
    from erasablemask.experiments.config.loading import load_config
    from erasablemask.experiments.data.splits import zoo_world

    overrides = [*args.overrides]
    if args.world_seed is not None:
        overrides.append(f"seed={args.world_seed}")
    if args.base_epochs is not None:
        overrides.append(f"data.miniworld.fr_epochs={args.base_epochs}")
    return zoo_world(load_config(args.config, overrides))


def _robustify(args: argparse.Namespace) -> int:
    from erasablemask.experiments.errors import UserError
    from erasablemask.experiments.fr_tools import robustify as rb
    from erasablemask.models.fr.mini_zoo import MINI_RECIPES
    from erasablemask.models.fr.robust_zoo import ROBUST_SUFFIX, check_entry_name, entry_path

    try:
        recipe = rb.AdvRecipe(eps_255=args.eps, steps=args.steps, epochs=args.epochs, batch_size=args.batch_size,
                              lr=args.lr, clean_weight=args.clean_weight, seed=args.adv_seed)
        rb.margin_recipe(args.model)  # refuses unknown models and models without a margin head, before any work
        name = args.name or args.model + ROBUST_SUFFIX
        check_entry_name(name)
        given = [o for o in ("data", "pairs", "images") if getattr(args, o) is not None]
        evaluation = {"far": args.far, "attack_eps_255": args.attack_eps, "attack_steps": args.attack_steps,
                      "n_attack": args.n_attack, "threads": args.threads}
        if given:
            missing = [f"--{o}" for o in ("data", "pairs", "images") if getattr(args, o) is None]
            if missing:
                raise UserError(f"fr robustify on a data set needs --data, --pairs and --images; missing {missing}")
            from erasablemask.experiments.fr_tools.robustify_folder import robustify_folder

            rows = robustify_folder(args.model, name, args.data, args.pairs, args.images, recipe,
                                    weights=args.weights, device=args.device, **evaluation)
        else:
            if args.model not in MINI_RECIPES:
                raise UserError(f"'{args.model}' is not a mini-world model: give its training data with --data DIR "
                                f"(identity subfolders) and calibration pairs with --pairs CSV --images DIR")
            world = _robustify_world(args)
            rows = rb.robustify_mini(name, world, recipe, base=args.model, **evaluation)
    except (UserError, *_BAD_INPUT) as e:
        return _fail(e)

    def ci(r: dict, k: str) -> str:
        return f"{r[k]:.3f} [{r[k + '_lo']:.3f}, {r[k + '_hi']:.3f}]"

    table = [[r["model"], r["weights"], f"{r['threshold']:.4f}", ci(r, "clean_acc"), ci(r, "adv_acc"),
              ci(r, "impersonation"), ci(r, "dodging")] for r in rows]
    print(f"verification at FAR {args.far:g} ({rows[0]['n_pairs']} calibration pairs, clean; "
          f"{rows[0]['n_attacked']} attacked with L-inf PGD {args.attack_eps:g}/255, {args.attack_steps} steps); "
          f"95 % identity-bootstrap intervals")
    print(format_table(table, ["model", "weights", "threshold", "clean acc", "acc under PGD", "impersonation",
                               "dodging"]))
    print(f"saved as '{name}' ({entry_path(name)}); name it in --models or attack.black_box")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``fr`` command group (list, calibrate, verify, train-mini)."""
    group = subparsers.add_parser("fr", help="face-recognition zoo: list, calibrate, verify")
    sub = group.add_subparsers(dest="fr_command", metavar="ACTION", required=True)

    ls = sub.add_parser("list", help="registered FR models, weights and thresholds")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.add_argument("--max-width", type=int, default=48,
                    help="cut table cells to this many characters (default 48; 0: no limit)")
    ls.set_defaults(handler=_list)

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", help="registry name (see `erasablemask fr list`)")
        p.add_argument("--weights", type=Path, default=None, help="weights file instead of the model's default source")
        p.add_argument("--device", default="auto", help="torch device: auto (CUDA if any, else CPU), cpu, cuda, cuda:1")
        p.add_argument("--align", action="store_true",
                       help="detect the face (MTCNN) and align it the model's makers' way (sface, dlib_resnet); "
                            "thresholds from a calibration made with --align")

    cal = sub.add_parser("calibrate", help="thresholds at chosen FARs from genuine/impostor pairs")
    model_args(cal)
    cal.add_argument("--pairs", type=Path, required=True, help="CSV with columns a,b,same (paths relative to --images)")
    cal.add_argument("--images", type=Path, required=True, help="folder the pair paths are relative to")
    cal.add_argument("--far", type=float, nargs="+", default=list(DEFAULT_FARS), help="FARs (default 0.1 0.01 0.001)")
    cal.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    cal.add_argument("--min-false-accepts", type=float, default=10.0,
                     help="refuse a FAR with fewer expected false accepts (FAR x impostor pairs); default 10")
    cal.set_defaults(handler=_calibrate)

    ver = sub.add_parser("verify", help="cosine similarity of two photos and the decision per FAR")
    model_args(ver)
    ver.add_argument("--calibration", default=None, metavar="ID",
                     help="calibration set of these weights to take thresholds from (see `fr list`; "
                          f"'{PUBLISHED}': published thresholds only; default: the only one there is)")
    ver.add_argument("a", help="first image")
    ver.add_argument("b", help="second image")
    ver.set_defaults(handler=_verify)

    mini = sub.add_parser("train-mini", help="train (if not cached) and calibrate mini-world FR models")
    mini.add_argument("names", nargs="*", help="mini_* models (default: all)")
    mini.add_argument("--seed", type=int, help="mini-world seed (default 0)")
    mini.add_argument("--identities", dest="n_identities", type=int, help="identities in the world (default 48)")
    mini.add_argument("--images-per-identity", type=int, help="images per identity (default 24)")
    mini.add_argument("--heldout", dest="heldout_identities", type=int,
                      help="last identities held out for calibration (default 8)")
    mini.add_argument("--image-size", type=int, help="rendered image side in pixels (default 64)")
    mini.add_argument("--epochs", type=int, help="override every recipe's epochs (quick runs)")
    mini.add_argument("--threads", type=int, help="torch threads while training")
    mini.set_defaults(handler=_train_mini)

    rob = sub.add_parser("robustify", help="adversarial fine-tuning (PGD in the loop) saved as a new zoo entry")
    rob.add_argument("model", help="base model with a margin-head recipe (mini_*, arcface_r100, cosface_r100, ...)")
    rob.add_argument("--name", default=None, help="name of the new entry (default MODEL_robust)")
    rob.add_argument("--data", type=Path, default=None, help="training images: one subfolder per identity")
    rob.add_argument("--pairs", type=Path, default=None, help="calibration/test pairs CSV a,b,same (other identities)")
    rob.add_argument("--images", type=Path, default=None, help="folder the pair paths are relative to")
    rob.add_argument("--weights", type=Path, default=None, help="base weights file instead of its default source")
    rob.add_argument("--device", default="auto",
                     help="torch device for fine-tuning a real model: auto (CUDA if any, else CPU), cpu, cuda, cuda:1")
    rob.add_argument("--eps", type=float, default=8.0, help="training PGD L-inf budget in /255 (default 8)")
    rob.add_argument("--steps", type=int, default=5, help="training PGD steps (default 5)")
    rob.add_argument("--epochs", type=int, default=3, help="adversarial epochs (default 3)")
    rob.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
    rob.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (default 1e-3)")
    rob.add_argument("--clean-weight", type=float, default=0.0, help="weight of the clean loss (default 0: Madry)")
    rob.add_argument("--adv-seed", type=int, default=0, help="seed of shuffling, augmentation, PGD starts")
    rob.add_argument("--config", default=None,
                     help="experiment config whose mini-world the mini model belongs to (e.g. miniworld_demo: "
                          "the demo's textured world; default: the schema's default world)")
    rob.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override of --config (repeatable), e.g. --set data.miniworld.skin_texture=0")
    rob.add_argument("--world-seed", type=int, default=None, help="mini-world seed (mini models; default 0)")
    rob.add_argument("--base-epochs", type=int, default=None, help="mini-world epochs override of the base model")
    rob.add_argument("--far", type=float, default=0.01, help="operating point of the table (default 0.01)")
    rob.add_argument("--attack-eps", type=float, default=8.0, help="evaluation PGD budget in /255 (default 8)")
    rob.add_argument("--attack-steps", type=int, default=10, help="evaluation PGD steps (default 10)")
    rob.add_argument("--n-attack", type=int, default=100, help="impostor and genuine pairs attacked, each (default 100)")
    rob.add_argument("--threads", type=int, help="torch threads")
    rob.set_defaults(handler=_robustify)
