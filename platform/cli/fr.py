"""``erasablemask fr list | calibrate | verify``: the face-recognition zoo from the shell.

- ``fr list [--json]``: every registered model with its input convention,
  weights source and thresholds per FAR (with their provenance).
- ``fr calibrate MODEL --pairs PAIRS.csv --images DIR``: thresholds at the
  requested FARs from impostor scores, the TAR at each; saved where
  ``erasablemask.models.fr.build`` picks them up.
- ``fr verify MODEL A.jpg B.jpg``: cosine similarity and the decision at
  each FAR the model has a threshold for.
- ``fr train-mini [NAMES]``: train (or load from the cache) and calibrate
  the mini-world models (:mod:`erasablemask.experiments.fr_tools.mini_zoo`).

Handlers return 0 on success and 2 on bad input (after printing the error).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
from pathlib import Path

from erasablemask.experiments.fr_tools.calibration import (
    DEFAULT_FARS,
    check_fars,
    read_pairs,
    roc_auc,
    save_thresholds,
    score_pairs,
    thresholds_at_far,
)
from erasablemask.experiments.fr_tools.verification import verify_pair
from erasablemask.models.fr.download import sha256_file
from erasablemask.models.fr.registry import (
    FRSpec,
    WeightsUnavailable,
    available,
    build,
    get_spec,
    read_calibration,
)

_BAD_INPUT = (ValueError, OSError, KeyError, LookupError, WeightsUnavailable)


def _fail(exc: BaseException) -> int:
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    print(f"erasablemask fr: error: {msg}", file=sys.stderr)
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


def _thr(spec: FRSpec, far: float) -> str:
    return f"{spec.thresholds[far]:.6f}" if far in spec.thresholds else "-"


def _list(args: argparse.Namespace) -> int:
    names = available()
    specs, errors = {}, {}
    for name in names:
        try:
            specs[name] = get_spec(name)
        except ValueError as e:  # unreadable calibration file: show it, keep listing
            errors[name] = str(e)
    if args.json:
        out = []
        for name in names:
            if name in errors:
                out.append({"name": name, "error": errors[name]})
                continue
            d = dataclasses.asdict(specs[name])
            d["thresholds"] = {repr(k): v for k, v in sorted(specs[name].thresholds.items())}
            cal = read_calibration(name)
            if cal is not None:  # JSON keys must be strings
                for key in ("thresholds", "tar"):
                    cal[key] = {repr(f): x for f, x in cal[key].items()}
            d["calibration"] = cal
            out.append(d)
        print(json.dumps(out, indent=2))
        return 0
    fars = sorted({f for s in specs.values() for f in s.thresholds} | set(DEFAULT_FARS), reverse=True)
    headers = ["name", "family", "emb", "input", "preprocessing", "weights",
               *[f"thr@{f:g}" for f in fars], "thresholds source"]
    rows = []
    for name in names:
        if name in errors:
            rows.append([name, *["?"] * (5 + len(fars)), f"ERROR: {errors[name]}"])
            continue
        s = specs[name]
        size = f"{s.preprocessing.size[0]}x{s.preprocessing.size[1]}"
        source = s.threshold_source if s.thresholds else "none: calibrate with `erasablemask fr calibrate`"
        rows.append([name, s.family, str(s.embedding_size), size, _preprocessing(s), _weights(s),
                     *[_thr(s, f) for f in fars], source])
    print(format_table(rows, headers, max_width=args.max_width) if rows else "no FR models registered")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    try:
        spec = get_spec(args.model)
        pairs = read_pairs(args.pairs, args.images)
        n_gen, n_imp = int((pairs["same"] == 1).sum()), int((pairs["same"] == 0).sum())
        check_fars(args.far, n_imp, min_false_accepts=args.min_false_accepts)  # before embedding
        if n_gen == 0:
            raise ValueError(f"pairs file '{args.pairs}' has no genuine pairs (same=1); TAR needs some")
        model = build(spec.name, weights=args.weights).to(args.device)
        genuine, impostor = score_pairs(model, pairs, args.images, batch_size=args.batch_size)
        rows = thresholds_at_far(genuine, impostor, args.far, min_false_accepts=args.min_false_accepts)
    except _BAD_INPUT as e:
        return _fail(e)
    auc = roc_auc(genuine, impostor)
    weights = {"weights": str(args.weights), "weights_sha256": sha256_file(Path(args.weights))} if args.weights else {}
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    source = f"{args.pairs} ({n_gen} genuine / {n_imp} impostor pairs), {today}"
    if args.weights:
        source += f", weights {args.weights}"
    path = save_thresholds(
        spec.name, rows, source, n_genuine=n_gen, n_impostor=n_imp,
        extra={"auc": auc, "images": str(args.images), "mean_genuine": float(genuine.mean()),
               "mean_impostor": float(impostor.mean()), **weights},
    )
    table = [[f"{r['far']:g}", f"{r['threshold']:.6f}", f"{r['tar']:.4f}", f"{r['actual_far']:.5f}"] for r in rows]
    print(f"{spec.name}: {n_gen} genuine, {n_imp} impostor pairs; ROC AUC {auc:.4f}; "
          f"mean cosine genuine {genuine.mean():.4f}, impostor {impostor.mean():.4f}")
    print(format_table(table, ["FAR", "threshold", "TAR", "actual FAR"]))
    print(f"saved to {path} (used by build('{spec.name}') from now on)")
    replaced = sorted(set(spec.thresholds) & {r["far"] for r in rows}, reverse=True)
    if replaced and not spec.threshold_source.startswith("calibrated here"):
        print(f"note: this replaces the thresholds at FAR {', '.join(f'{f:g}' for f in replaced)} from "
              f"'{spec.threshold_source}'; delete {path} to restore them")
    return 0


def _verify(args: argparse.Namespace) -> int:
    try:
        spec = get_spec(args.model)
        for p in (args.a, args.b):
            if not Path(p).is_file():
                raise FileNotFoundError(f"image '{p}' not found; give two existing image files")
        model = build(spec.name, weights=args.weights).to(args.device)
        result = verify_pair(model, args.a, args.b)
    except _BAD_INPUT as e:
        return _fail(e)
    short = ["/".join(Path(p).parts[-2:]) for p in (args.a, args.b)]
    print(f"{spec.name}: cosine({short[0]}, {short[1]}) = {result['cosine']:.4f}")
    if not result["decisions"]:
        print(f"{spec.name} is uncalibrated (no thresholds), so no decision. Calibrate it with:\n"
              f"  erasablemask fr calibrate {spec.name} --pairs PAIRS.csv --images DIR")
        return 0
    rows = [[f"{d['far']:g}", f"{d['threshold']:.6f}", "same person" if d["same"] else "different"]
            for d in result["decisions"]]
    print(format_table(rows, ["FAR", "threshold", "decision"]))
    print(f"thresholds: {model.spec.threshold_source}")
    return 0


def _train_mini(args: argparse.Namespace) -> int:
    # Imported here: training code is only needed by this command.
    from erasablemask.experiments.fr_tools.mini_zoo import MiniZooWorld, ensure_mini_zoo

    try:
        given = {k: getattr(args, k) for k in ("seed", "n_identities", "images_per_identity",
                                                "heldout_identities", "image_size", "epochs")}
        world = MiniZooWorld(**{k: v for k, v in given.items() if v is not None})
        paths = ensure_mini_zoo(args.names or None, world, threads=args.threads)
    except _BAD_INPUT as e:
        return _fail(e)
    rows = []
    for name, path in paths.items():
        cal = read_calibration(name) or {"thresholds": {}, "tar": {}}
        tars = " ".join(f"{cal['tar'][f]:.3f}@{f:g}" for f in sorted(cal["tar"], reverse=True)) or "-"
        rows.append([name, f"{cal.get('auc', float('nan')):.4f}", tars, str(path)])
    print(format_table(rows, ["name", "held-out AUC", "TAR@FAR", "weights"]))
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
        p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")

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
