"""``erasablemask protect`` and ``erasablemask erase``: a person's photos, end to end.

- ``protect PHOTO_OR_FOLDER... --run RUN --out DIR [--target ID_OR_PHOTO]
  [--attributes NAME=0|1 ...] [--all-faces | --face N] [--check MODEL ...]``:
  the user's side. Each face is detected (MTCNN by default), aligned the way
  the model was trained, protected at the model's resolution and pasted back
  with a feathered mask; the photo is written without its metadata (ICC
  kept). Per face, each ``--check`` model (default: the run's black-box
  models) says whether the protected face matches the target and still
  matches the person.
- ``erase PHOTO_OR_FOLDER... --run RUN --out DIR [--verify AGAINST]``: the
  trusted authority's side, with the restorer; ``--verify`` checks each
  restored face against a reference photo of the person.

A folder gets a progress bar; a photo that cannot be processed is reported
and skipped (exit code 1 when any was skipped, 0 when all were written).
The logic lives in :mod:`erasablemask.experiments.photos`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from erasablemask.experiments.photos.detect import DETECTORS, build_detector
from erasablemask.experiments.photos.faces import FEATHER
from erasablemask.experiments.photos.protect import (
    PhotoJob,
    PhotoResult,
    Reference,
    list_photos,
    parse_attribute_edits,
    run_photos,
)


def _load_run(run: Path, device):
    from erasablemask.experiments.config.loading import load_config
    from erasablemask.experiments.evaluation.erasablemask_protection import ErasableMaskProtection

    cfg_file = Path(run) / "config.yaml"
    if not cfg_file.is_file():
        raise FileNotFoundError(
            f"run folder '{run}' has no config.yaml; pass the folder `erasablemask train` wrote (--run-dir)"
        )
    cfg = load_config(cfg_file)
    return cfg, ErasableMaskProtection.from_checkpoint(cfg, Path(run), device)


def _fr_models(cfg, names: list[str] | None, device, aligned: bool) -> dict:
    """The models to verify with; sface/dlib_resnet get thresholds calibrated with (or without) alignment."""
    from erasablemask.experiments.fr_tools.zoo import build_fr_models
    from erasablemask.experiments.photos.fr_align import calibrated_for_alignment
    from erasablemask.models.fr.alignment import ALIGNMENTS
    from erasablemask.models.fr.registry import PUBLISHED, build

    names = list(cfg.attack.black_box) if names is None else names
    real = {
        n: calibrated_for_alignment(build(n, calibration=PUBLISHED), aligned=aligned).eval().to(device)
        for n in names
        if n in ALIGNMENTS
    }
    others = build_fr_models(cfg, [n for n in names if n not in real], device, progress=False)
    return {n: real[n] if n in real else others[n] for n in names}


def _job(args: argparse.Namespace):
    from erasablemask.experiments.devices import resolve_device

    torch.set_num_threads(max(1, args.threads))
    photos = list_photos(args.photos)  # refuse missing inputs before loading anything
    device = resolve_device(args.device, announce=False)
    cfg, protection = _load_run(args.run, device)
    fr = _fr_models(cfg, args.check, device, aligned=not args.no_align)
    detector = build_detector(args.detector, min_score=args.min_score, device=args.device)
    judge = None
    if protection.discriminator is not None:
        D = protection.discriminator

        def judge(x: torch.Tensor) -> torch.Tensor:
            return D(x)[1]  # D_att logits

    job = PhotoJob(
        protection,
        detector,
        cfg.data.image_size,
        fr_models=fr,
        far=args.far or cfg.evaluation.asr_far,
        align=not args.no_align,
        feather=args.feather,
        attribute_judge=judge,
        device=device,
    )
    return cfg, job, photos


def _print(results: list[PhotoResult], what: str, reference_word: str) -> int:
    failed = 0
    for r in results:
        if r.error:
            failed += 1
            print(f"skipped {r.source}: {r.error}", file=sys.stderr)
            continue
        print(f"{r.source} -> {r.out} ({len(r.faces)} face(s) {what})")
        for face in r.faces:
            x0, y0, x1, y1 = face["box"]
            print(
                f"  face #{face['index']} at ({x0:.0f},{y0:.0f})-({x1:.0f},{y1:.0f}), detector score {face['score']:.3f}"
            )
            for c in face["checks"]:
                word = reference_word if c.reference != "itself before" else "the person (before)"
                verdict = (
                    "no threshold (uncalibrated)"
                    if c.same is None
                    else (f"{'MATCH' if c.same else 'no match'} (threshold {c.threshold:.4f} at FAR {c.far:g})")
                )
                tag = ", aligned" if c.aligned else ""
                print(f"    {c.model}{tag}: vs {word} [{c.reference}]: cosine {c.cosine:.4f}, {verdict}")
    done = len(results) - failed
    print(f"{done} photo(s) written, {failed} skipped")
    return 1 if failed else 0


def _protect(args: argparse.Namespace) -> int:
    edits = parse_attribute_edits(args.attributes or [])
    cfg, job, _ = _job(args)
    reference = None
    if args.target is not None:
        if Path(args.target).is_file():
            reference = Reference.from_photo(args.target, job.detector, job.size)
        else:
            from erasablemask.experiments.evaluation.targets import build_targets

            targets = build_targets(cfg)
            k = _target_index(args.target, targets.names)
            reference = Reference(targets.names[k], targets.eval_images[k])
    elif job.fr_models:
        from erasablemask.experiments.evaluation.targets import build_targets

        targets = build_targets(cfg)
        reference = Reference(targets.names[0], targets.eval_images[0])
    results = run_photos(
        job,
        args.photos,
        Path(args.out),
        mode="protect",
        edits=edits,
        reference=reference,
        all_faces=args.all_faces,
        face_index=args.face,
        progress=not args.quiet,
    )
    return _print(results, "protected", "the target")


def _target_index(target: str, names: list[str]) -> int:
    if target.isdigit() and int(target) < len(names):
        return int(target)
    if target in names:
        return names.index(target)
    raise ValueError(
        f"--target '{target}' is neither a photo nor one of the run's targets "
        f"({', '.join(f'{i}: {n}' for i, n in enumerate(names))}); pass a file, an index or a name"
    )


def _erase(args: argparse.Namespace) -> int:
    _, job, _ = _job(args)
    if not job.protection.can_erase:
        raise ValueError(
            f"the run's protection '{job.protection.name}' cannot erase; use a run of a scheme with a restorer"
        )
    reference = Reference.from_photo(args.verify, job.detector, job.size) if args.verify else None
    results = run_photos(
        job,
        args.photos,
        Path(args.out),
        mode="erase",
        reference=reference,
        person_check=False,
        all_faces=args.all_faces,
        face_index=args.face,
        progress=not args.quiet,
    )
    return _print(results, "restored", "the reference")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("photos", nargs="+", metavar="PHOTO_OR_FOLDER", help="photos, or folders of photos")
    p.add_argument("--run", type=Path, required=True, help="run folder (or stage-2/3 checkpoint) of a trained model")
    p.add_argument("--out", type=Path, required=True, help="output folder (photos keep their names)")
    faces = p.add_mutually_exclusive_group()
    faces.add_argument("--all-faces", action="store_true", help="process every face of a photo with several")
    faces.add_argument("--face", type=int, default=None, metavar="N", help="process only face N (0 = leftmost)")
    p.add_argument(
        "--check",
        nargs="*",
        default=None,
        metavar="MODEL",
        help="FR models to verify with (default: the run's black-box models; none: --check)",
    )
    p.add_argument("--far", type=float, default=None, help="FAR of the decision threshold (default evaluation.asr_far)")
    p.add_argument("--no-align", action="store_true", help="feed sface/dlib_resnet the model crop, not their alignment")
    p.add_argument("--detector", default="mtcnn", choices=DETECTORS, help="face detector (default mtcnn, the paper's)")
    p.add_argument("--min-score", type=float, default=0.9, help="detector confidence threshold (default 0.9)")
    p.add_argument("--feather", type=float, default=FEATHER, help=f"paste-back soft edge (default {FEATHER})")
    p.add_argument("--device", default="auto", help="torch device: auto (CUDA if available), cpu, cuda:N")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``protect`` and ``erase``."""
    pro = subparsers.add_parser("protect", help="protect the faces in photos (the user's side)")
    _common(pro)
    pro.add_argument(
        "--target",
        default=None,
        metavar="ID_OR_PHOTO",
        help="what 'matches the target' is checked against: a photo of the target, or the run's "
        "target index/name (default: the run's first target)",
    )
    pro.add_argument(
        "--attributes",
        nargs="*",
        default=None,
        metavar="NAME=0|1",
        help="attribute edits, e.g. Eyeglasses=1 (default: keep the face's own attributes)",
    )
    pro.set_defaults(handler=_protect)

    era = subparsers.add_parser("erase", help="remove the protection from photos (the trusted authority's side)")
    _common(era)
    era.add_argument(
        "--verify",
        default=None,
        metavar="AGAINST",
        help="a reference photo of the person: is each restored face verified as them?",
    )
    era.set_defaults(handler=_erase)
