"""Files in and out, once for the whole project: atomic writes and checked state-dict loading.

- :func:`atomic_path` / :func:`write_text_atomic`: every file the project
  writes goes to a temporary name in the destination folder and is renamed
  onto the destination (``os.replace``) only when complete, so a reader (or
  a crash) never sees half a file; on error the temporary file is removed.
  :func:`atomic_dir` does the same for a folder (checkpoints).
- :func:`read_state_dict`: ``.safetensors``, or ``.pt``/``.pth`` read with
  ``torch.load(weights_only=True)`` — never an arbitrary unpickle.
- :func:`load_state_dict_checked`: strict loading that lists every missing,
  unexpected and mis-shaped key and says how to fix it, before touching the
  module.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "atomic_path", "atomic_dir", "write_text_atomic", "read_state_dict", "StateDictMismatch", "load_state_dict_checked",
    "strip_prefix",
]


@contextmanager
def atomic_path(path: str | Path, *, mode: int = 0o644) -> Iterator[Path]:
    """A temporary path beside ``path``; renamed onto ``path`` when the block ends without error.

    The parent folder is created. The file gets permissions ``mode`` (mkstemp
    creates 0600), so cache files stay readable by other users. If the block
    raises, the temporary file is deleted and ``path`` is left as it was.

    Example::

        with atomic_path(out / "grid.png") as tmp:
            image.save(tmp, format="PNG")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """An empty temporary folder beside ``path``; renamed onto ``path`` when the block ends without error.

    An existing ``path`` is first renamed aside and deleted after the new
    folder is in place, so ``path`` is always either the old folder or the
    complete new one. If the block raises, the temporary folder is deleted
    and ``path`` is left as it was. The parent folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if path.exists():
            trash = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, trash)
            os.replace(tmp, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` file, or of a ``torch.save`` file read with ``weights_only=True``.

    Nested dicts of tensors (e.g. AttGAN-PyTorch's ``{'G': ..., 'D': ...}``)
    are returned as they are; callers pick their section.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file cannot be read without unpickling code, or holds
            something other than a mapping.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file '{path}' does not exist; check the path")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
    except Exception as err:  # noqa: BLE001 - re-raised with the file and the fix named
        raise ValueError(
            f"weights file '{path}' could not be read with torch.load(weights_only=True): {err}. "
            "It must hold plain tensors (a state dict) or be a .safetensors file; re-save it as "
            "torch.save(model.state_dict(), ...) in a trusted environment"
        ) from err
    if not isinstance(obj, Mapping):
        raise ValueError(f"weights file '{path}' holds a {type(obj).__name__}, not a state dict; "
                         "extract the model's state_dict() and save that")
    return dict(obj)


def strip_prefix(state: Mapping[str, Tensor], prefix: str = "module.") -> dict[str, Tensor]:
    """``state`` with ``prefix`` removed from the keys that have it (``nn.DataParallel``/DDP's ``module.``)."""
    return {k.removeprefix(prefix): v for k, v in state.items()}


class StateDictMismatch(ValueError):
    """A state dict does not match a module's parameter/buffer names and shapes."""


def _listing(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")


def load_state_dict_checked(
    module: nn.Module,
    state: Mapping[str, Tensor],
    *,
    source: str,
    fix: str,
    keep_missing: Callable[[str], bool] | None = None,
    error: type[StateDictMismatch] = StateDictMismatch,
) -> nn.Module:
    """Load ``state`` into ``module`` strictly, after checking every name and shape.

    Args:
        module: the architecture to fill.
        state: tensors by name (prefixes already stripped).
        source: what ``state`` came from, named in the error (e.g. ``"weights file 'x.pth'"``).
        fix: the sentence that tells the user what to do, appended to the error.
        keep_missing: keys for which a missing entry is tolerated, the module's
            own value kept (e.g. BatchNorm ``num_batches_tracked``).
        error: the exception class raised (a :class:`StateDictMismatch`).

    Returns:
        ``module``, for chaining.

    Raises:
        StateDictMismatch (or ``error``): names the missing, unexpected and
            mis-shaped keys (``key: file (shape) vs model (shape)``) and the fix;
            ``module`` is untouched.
    """
    own = module.state_dict()
    state = dict(state)
    if keep_missing is not None:
        for key, value in own.items():
            if key not in state and keep_missing(key):
                state[key] = value.clone()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshaped = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                 for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or misshaped:
        raise error(
            f"{source} does not fit {type(module).__name__} ({len(own)} entries expected, {len(state)} given): "
            f"{len(missing)} missing [{_listing(missing)}]; {len(unexpected)} unexpected [{_listing(unexpected)}]; "
            f"{len(misshaped)} mis-shaped [{_listing(misshaped)}]. {fix}"
        )
    with torch.no_grad():
        module.load_state_dict(state, strict=True)
    return module
