"""State dicts in: read from files without unpickling, loaded into modules with errors that name the keys.

- :func:`read_state_dict`: ``.safetensors``, or ``.pt``/``.pth`` read with
  ``torch.load(weights_only=True)`` — never an arbitrary unpickle.
- :func:`load_state_dict_checked`: strict loading that lists every missing,
  unexpected and mis-shaped key and says how to fix it, before touching the
  module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["read_state_dict", "strip_prefix", "StateDictMismatch", "load_state_dict_checked"]


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
