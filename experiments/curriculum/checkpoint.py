"""Stage checkpoints: safetensors + JSON, written atomically, refused when they do not fit.

A checkpoint is a directory::

    <name>/
      models.safetensors   every module's state dict, keys "<module>.<param>"
      state.safetensors    every other tensor (optimiser moments, RNG states, ...)
      state.json           meta (format, stage, epoch, step, config, shapes) and
                           the JSON skeleton of the training state, whose
                           tensors point into state.safetensors

Nothing is pickled: tensors go to safetensors, everything else to JSON
(tuples, non-string dict keys and numpy arrays are tagged so they come back
as they were; optimiser state dicts round-trip exactly).

Writes are atomic: the directory is assembled under a temporary name in the
same folder and renamed into place (:func:`erasablemask.models.atomic_files.atomic_dir`), so a
reader sees either no checkpoint or a complete one. The folder is 0755 and
its files 0644 (readable like the rest of a run folder).

Integrity (:mod:`erasablemask.models.integrity`): the last file written is
``manifest.json``, the sha256 and size of the three files above;
:func:`load_checkpoint` verifies it before reading anything (one hash pass
per file) and refuses a damaged file with one line naming it and the
previous checkpoint to resume from. A corrupt or truncated ``state.json`` or
``.safetensors`` file is named too (never a bare ``SafetensorError`` /
``JSONDecodeError``). Checkpoints written before manifests existed (no
``manifest.json``) still load, with a one-line warning on stderr: they were
written atomically, so they are complete, and refusing them would strand
runs that cannot be redone cheaply; their files are still parsed with the
file named on error.

Fit checks (:func:`load_checkpoint`): the config sections that determine a
stage's weights (:data:`STAGE_SECTIONS`; ``compute`` and ``tracking`` never
matter) must equal the current config's, key by key; the mismatching keys
are named with both values. Module state dicts are checked for missing,
unexpected and mis-shaped entries before anything is loaded.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.models.atomic_files import atomic_dir
from erasablemask.models.integrity import read_json, read_safetensors, verify_manifest, write_manifest

__all__ = [
    "FORMAT", "STAGE_SECTIONS", "CheckpointMismatch", "Checkpoint", "save_checkpoint", "load_checkpoint",
    "read_checkpoint_meta",
    "find_latest_checkpoint", "finished_stage_checkpoint", "verify_checkpoint", "resume_mismatches", "CHECKPOINT_FILES", "encode_tree", "decode_tree", "config_mismatches", "capture_rng", "restore_rng",
]

FORMAT = "erasablemask-checkpoint-v1"
# The files of a checkpoint folder, all listed in its manifest.json (written last).
CHECKPOINT_FILES = ("models.safetensors", "state.safetensors", "state.json")

# Config sections that determine the weights after each stage (cumulative).
STAGE_SECTIONS: dict[int, tuple[str, ...]] = {
    1: ("seed", "data", "model", "stage1"),
    2: ("seed", "data", "model", "stage1", "protection", "stage2", "attack", "noise_pool"),
    3: ("seed", "data", "model", "stage1", "protection", "stage2", "attack", "noise_pool", "stage3"),
    # Competitors' generators (competitor_stages.py): their own hyper-parameters are checked by the trainer.
    "advfaces": ("seed", "data", "attack"),
    "gmaa": ("seed", "data", "model", "stage1", "attack"),
}


def _stage_key(stage: int | str) -> int | str:
    """A stage as stored in ``state.json``: 1, 2, 3, or a competitor's name."""
    return stage if isinstance(stage, str) and not stage.isdigit() else int(stage)


class CheckpointMismatch(ValueError):
    """A checkpoint does not fit the current config or models; the message names what differs."""


# ---------------------------------------------------------------- tree codec
def encode_tree(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "t") -> Any:
    """Encode nested dicts/lists/tuples of tensors, arrays and scalars as JSON + a tensor table.

    Args:
        obj: the structure to encode.
        tensors: filled with ``key -> tensor`` (contiguous CPU copies).
        prefix: key prefix for this structure's tensors.

    Returns:
        A JSON-serialisable skeleton; :func:`decode_tree` inverts it.
    """
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}#{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"{prefix}#{len(tensors)}"
        wide = obj.astype(np.int64) if obj.dtype == np.uint32 else obj
        tensors[key] = torch.from_numpy(np.ascontiguousarray(wide)).clone()
        return {"__ndarray__": key, "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return {"__tuple__": [encode_tree(v, tensors, prefix) for v in obj]}
    if isinstance(obj, list):
        return [encode_tree(v, tensors, prefix) for v in obj]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: encode_tree(v, tensors, prefix) for k, v in obj.items()}
        return {"__items__": [[encode_tree(k, tensors, prefix), encode_tree(v, tensors, prefix)] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint; convert it to tensors/numbers/strings")


def decode_tree(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode_tree`."""
    if isinstance(obj, list):
        return [decode_tree(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]].clone()
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy().astype(obj["dtype"])
        if "__tuple__" in obj:
            return tuple(decode_tree(v, tensors) for v in obj["__tuple__"])
        if "__items__" in obj:
            return {_hashable(decode_tree(k, tensors)): decode_tree(v, tensors) for k, v in obj["__items__"]}
        return {k: decode_tree(v, tensors) for k, v in obj.items()}
    return obj


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


# ---------------------------------------------------------------- config fit
def _flatten(prefix: str, node: Any, out: dict[str, Any]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = node


def config_mismatches(
    saved: dict[str, Any], current: dict[str, Any], sections: tuple[str, ...], ignore: tuple[str, ...] = ()
) -> list[str]:
    """``"key: checkpoint X, config Y"`` for every differing key under ``sections``.

    A key the checkpoint does not have (added to the schema after it was written) fits when the config
    leaves it at the schema default: a new key's default is the behaviour from before it existed.

    Args:
        saved, current: ``cfg.model_dump(mode="json")`` trees.
        sections: top-level keys to compare.
        ignore: dotted keys not compared (e.g. ``"stage2.epochs"`` when resuming).
    """
    a: dict[str, Any] = {}
    b: dict[str, Any] = {}
    defaults: dict[str, Any] = {}
    default_tree = ErasableMaskConfig().model_dump(mode="json")
    for s in sections:
        _flatten(s, saved.get(s), a)
        _flatten(s, current.get(s), b)
        _flatten(s, default_tree.get(s), defaults)
    out = []
    for key in sorted(set(a) | set(b)):
        if key in ignore:
            continue
        if key not in a and key in defaults and b.get(key) == defaults[key]:
            continue  # added to the schema after the checkpoint, left at its default
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            out.append(f"{key}: checkpoint {a.get(key, '<absent>')!r}, config {b.get(key, '<absent>')!r}")
    return out


def _shape_mismatches(name: str, module: nn.Module, saved: dict[str, list[int]]) -> list[str]:
    own = {k: list(v.shape) for k, v in module.state_dict().items()}
    out = [f"{name}.{k}: missing in checkpoint" for k in sorted(set(own) - set(saved))]
    out += [f"{name}.{k}: not in the model" for k in sorted(set(saved) - set(own))]
    out += [f"{name}.{k}: checkpoint {saved[k]}, model {own[k]}"
            for k in sorted(set(own) & set(saved)) if saved[k] != own[k]]
    return out


# ---------------------------------------------------------------- save / load
def save_checkpoint(
    path: Path,
    *,
    cfg: ErasableMaskConfig,
    stage: int,
    epoch: int,
    global_step: int,
    complete: bool,
    modules: Mapping[str, nn.Module],
    state: Mapping[str, Any],
) -> Path:
    """Write a checkpoint directory atomically.

    Args:
        path: the checkpoint directory to create (its parent is created).
        cfg: the run's config (stored whole; its digest too).
        stage: 1, 2 or 3.
        epoch: epochs completed in this stage.
        global_step: optimisation steps taken in this stage.
        complete: True when the stage has finished (the checkpoint may feed the next stage).
        modules: ``name -> module`` whose state dicts are saved (unwrap DDP first).
        state: the rest of the training state (optimiser state dicts, RNG
            states, adaptive-weight history, metric history, ...), any
            structure :func:`encode_tree` accepts.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model_tensors = {f"{name}.{k}": v.detach().cpu().contiguous().clone()
                     for name, m in modules.items() for k, v in m.state_dict().items()}
    state_tensors: dict[str, torch.Tensor] = {}
    skeleton = encode_tree(dict(state), state_tensors)
    meta = {
        "format": FORMAT,
        "stage": _stage_key(stage),
        "epoch": int(epoch),
        "global_step": int(global_step),
        "complete": bool(complete),
        "config_digest": cfg.digest(),
        "config": cfg.model_dump(mode="json"),
        "shapes": {name: {k: list(v.shape) for k, v in m.state_dict().items()} for name, m in modules.items()},
        "torch": torch.__version__,
    }
    with atomic_dir(path) as tmp:
        save_file(model_tensors, str(tmp / "models.safetensors"))
        save_file(state_tensors, str(tmp / "state.safetensors"))
        with open(tmp / "state.json", "w") as fh:
            json.dump({"meta": meta, "state": skeleton}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        for name in CHECKPOINT_FILES:
            os.chmod(tmp / name, 0o644)
        write_manifest(tmp, CHECKPOINT_FILES)  # last: a checkpoint with a manifest is complete
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700
    return path


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``meta``, decoded ``state`` and the module tensors."""

    path: Path
    meta: dict[str, Any]
    state: dict[str, Any]
    model_tensors: dict[str, torch.Tensor]

    @property
    def stage(self) -> int | str:
        return _stage_key(self.meta["stage"])

    @property
    def epoch(self) -> int:
        return int(self.meta["epoch"])

    @property
    def global_step(self) -> int:
        return int(self.meta["global_step"])

    def has_module(self, name: str) -> bool:
        return name in self.meta["shapes"]

    def load_module(self, name: str, module: nn.Module) -> None:
        """Load the saved state of ``name`` into ``module`` (strict; mismatches named first)."""
        if name not in self.meta["shapes"]:
            raise CheckpointMismatch(
                f"checkpoint '{self.path}' has no module '{name}' (it has {sorted(self.meta['shapes'])}); "
                f"use a checkpoint of a stage that trains '{name}'"
            )
        bad = _shape_mismatches(name, module, self.meta["shapes"][name])
        if bad:
            raise CheckpointMismatch(
                f"checkpoint '{self.path}' does not fit module '{name}' (another architecture; check "
                f"model.* in the config):\n  " + "\n  ".join(bad)
            )
        sd = {k[len(name) + 1:]: v for k, v in self.model_tensors.items() if k.startswith(name + ".")}
        module.load_state_dict(sd, strict=True)


def _damaged_fix(path: Path) -> str:
    """What to do about a damaged checkpoint: the previous checkpoint of its stage, if one is beside it."""
    path = Path(path)
    previous = None
    try:
        meta = json.loads((path / "state.json").read_text())["meta"]
        previous = _latest_in(path.parent, _stage_key(meta["stage"]), False, before=int(meta["global_step"]),
                              exclude=path)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    resume = f"resume from the previous checkpoint (--resume {previous})" if previous else \
        "resume from the previous checkpoint of this stage (--resume DIR)"
    return f"delete '{path}' and {resume}, or train the stage again"


def verify_checkpoint(path: Path) -> bool:
    """Check a checkpoint's files against its ``manifest.json`` (module docstring).

    Returns:
        True when verified; False for a checkpoint written before manifests
        (a one-line warning is printed on stderr).

    Raises:
        FileNotFoundError: not a checkpoint directory.
        IntegrityError: a file is missing, truncated or altered (the message names it and the fix).
    """
    path = Path(path)
    if not (path / "state.json").is_file():
        _read_state_json(path)  # raises the not-a-checkpoint error
    if verify_manifest(path, what=f"checkpoint '{path}'", fix=lambda: _damaged_fix(path)):
        return True
    print(f"warning: checkpoint '{path}' has no manifest.json (written before checkpoints recorded sha256 "
          "digests); its files cannot be verified", file=sys.stderr, flush=True)
    return False


def _read_state_json(path: Path) -> dict[str, Any]:
    meta_file = Path(path) / "state.json"
    if not meta_file.is_file():
        raise FileNotFoundError(
            f"'{path}' is not a checkpoint directory (no state.json); pass a directory written by "
            f"`erasablemask train`, e.g. RUN_DIR/stage1/checkpoints/stage1_epoch0001"
        )
    fix = "the checkpoint is damaged; use another one or train the stage again"
    blob = read_json(meta_file, what=f"checkpoint '{path}'", fix=fix)
    try:
        meta = blob["meta"]
    except (KeyError, TypeError) as err:
        raise CheckpointMismatch(f"checkpoint '{path}': '{meta_file}' has no {err} section; {fix}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointMismatch(f"checkpoint '{path}' has format {meta.get('format')!r}; expected {FORMAT!r}")
    return blob


def read_checkpoint_meta(path: Path) -> dict[str, Any]:
    """The ``meta`` of a checkpoint directory (format, stage, epoch, global_step, complete, config, shapes).

    The one reader of ``state.json`` besides :func:`load_checkpoint` (which also checks the config).

    Raises:
        FileNotFoundError: not a checkpoint directory.
        CheckpointMismatch: ``state.json`` unreadable or of another format.
    """
    return _read_state_json(Path(path))["meta"]


def load_checkpoint(
    path: Path,
    cfg: ErasableMaskConfig,
    *,
    stage: int,
    purpose: Literal["resume", "input"],
) -> Checkpoint:
    """Read a checkpoint and check that it fits ``cfg``.

    Args:
        path: checkpoint directory.
        cfg: the current config.
        stage: for ``purpose="resume"``, the stage being resumed (the
            checkpoint must be of it); for ``"input"``, the stage whose
            output is wanted (the checkpoint must be that stage's final one).
        purpose: ``"resume"`` compares the config sections of stages ≤ ``stage``
            plus ``evaluation`` (its metric history continues), ignoring
            ``stage<k>.epochs`` (more epochs may be asked for);
            ``"input"`` compares the sections of stages ≤ ``stage``.

    Raises:
        FileNotFoundError: not a checkpoint directory.
        IntegrityError: a file differs from the checkpoint's sha256 manifest,
            or is corrupt/truncated (named, with the checkpoint to resume from instead).
        CheckpointMismatch: wrong stage, incomplete input, or config keys
            that differ (all named, with both values).
    """
    path = Path(path)
    verify_checkpoint(path)  # before anything is read: a damaged file is named, never loaded
    blob = _read_state_json(path)
    meta = blob["meta"]
    if _stage_key(meta["stage"]) != stage:
        raise CheckpointMismatch(
            f"checkpoint '{path}' is from stage {meta['stage']}, but stage {stage} "
            f"{'is being resumed' if purpose == 'resume' else 'output is needed'}; pass a stage-{stage} checkpoint"
        )
    if purpose == "input" and not meta.get("complete", False):
        raise CheckpointMismatch(
            f"checkpoint '{path}' is stage {stage} after epoch {meta['epoch']}, not its final one; "
            f"finish stage {stage} first (resume it with --stage {stage} --resume {path})"
        )
    bad = resume_mismatches(meta, cfg, stage, purpose=purpose)
    if bad:
        raise CheckpointMismatch(
            f"checkpoint '{path}' was written with another config (digest {meta['config_digest']}, "
            f"current {cfg.digest()}); differing keys:\n  " + "\n  ".join(bad)
            + "\nuse the checkpoint's config (see its state.json) or start this stage from scratch"
        )
    what, fix = f"checkpoint '{path}'", lambda: _damaged_fix(path)
    state = decode_tree(blob["state"], read_safetensors(path / "state.safetensors", what=what, fix=fix))
    model_tensors = read_safetensors(path / "models.safetensors", what=what, fix=fix)
    return Checkpoint(path=path, meta=meta, state=state, model_tensors=model_tensors)


def resume_mismatches(
    meta: Mapping[str, Any], cfg: ErasableMaskConfig, stage: int | str, *, purpose: Literal["resume", "input"]
) -> list[str]:
    """The config keys (``"key: checkpoint X, config Y"``) that keep a checkpoint's ``meta`` from serving ``purpose``.

    ``"resume"`` compares the sections of stages ≤ ``stage`` plus ``evaluation``
    (stages 2, 3), ignoring ``stage<k>.epochs``; ``"input"`` the sections of stages ≤ ``stage``, ignoring
    ``attack.black_box``: the black-box models only score validation (nothing is selected by them), so a
    protection trained with some black-box models may be evaluated against others (Table IV's robust models).
    """
    sections = STAGE_SECTIONS[stage] + (("evaluation",) if purpose == "resume" and stage in (2, 3) else ())
    ignore = (f"stage{stage}.epochs",) if purpose == "resume" else ("attack.black_box",)
    return config_mismatches(dict(meta["config"]), cfg.model_dump(mode="json"), sections, ignore)


def find_latest_checkpoint(root: Path, *, stage: int, complete: bool = False) -> Path | None:
    """The checkpoint of ``stage`` under ``root`` with the most steps (only complete ones if asked)."""
    return _latest_in(Path(root), stage, complete)


def finished_stage_checkpoint(run_dir: Path, stage: int) -> Path | None:
    """A run folder's finished stage: ``stage<k>/final`` (the Ray runner's copy), else the newest complete checkpoint.

    ``None`` when the stage has no complete checkpoint there.
    """
    final = Path(run_dir) / f"stage{stage}" / "final"
    if (final / "state.json").is_file():
        meta = read_checkpoint_meta(final)
        if _stage_key(meta["stage"]) == stage and meta.get("complete", False):
            return final
    return find_latest_checkpoint(Path(run_dir) / f"stage{stage}", stage=stage, complete=True)


def _latest_in(root: Path, stage: int | str, complete: bool, *, before: int | None = None,
               exclude: Path | None = None) -> Path | None:
    """:func:`find_latest_checkpoint`, optionally among checkpoints with fewer than ``before`` steps."""
    best: tuple[int, Path] | None = None
    if not root.is_dir():
        return None
    for meta_file in root.rglob("state.json"):
        if meta_file.parent.name.startswith("."):
            continue  # a temporary directory being written
        if exclude is not None and meta_file.parent == exclude:
            continue
        try:
            meta = json.loads(meta_file.read_text())["meta"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if meta.get("format") != FORMAT or _stage_key(meta["stage"]) != stage or (complete and not meta.get("complete")):
            continue
        if before is not None and int(meta["global_step"]) >= before:
            continue
        if best is None or int(meta["global_step"]) > best[0]:
            best = (int(meta["global_step"]), meta_file.parent)
    return best[1] if best else None


# ---------------------------------------------------------------- RNG states
def capture_rng(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every RNG state a stage depends on: Python, numpy, torch (CPU, CUDA) and ``generators``."""
    import random

    out: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(saved: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None) -> None:
    """Inverse of :func:`capture_rng` (generators are restored in place)."""
    import random

    random.setstate(_as_tuple(saved["python"]))
    np.random.set_state(saved["numpy"])
    torch.set_rng_state(saved["torch"])
    if "cuda" in saved and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda"])
    for k, g in (generators or {}).items():
        if k not in saved["generators"]:
            raise CheckpointMismatch(f"checkpoint has no state for RNG '{k}' (it has {sorted(saved['generators'])})")
        g.set_state(saved["generators"][k])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x
