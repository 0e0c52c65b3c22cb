"""Where and in which precision an experiment computes: ``compute.device`` and ``compute.precision``.

Every part that computes (the three stages, evaluation, threshold
calibration, verification, the mini FR zoo's training, the competitors)
takes its device from :func:`resolve_device` in one process, or from Ray
Train inside a worker (``ray.train.torch.get_device()``), and never names a
device itself; ``tests/experiments/test_devices.py`` fails on a hard-coded
``"cpu"`` in the compute path. The choice is printed once per process.

Precision is autocast for the forward passes: ``bf16`` (CPUs and Ampere+
GPUs: no scaler needed, fp32's exponent range) or ``fp16`` (a
``torch.amp.GradScaler`` scales the loss and skips steps whose gradients
overflowed). Parameters, optimiser states and checkpoints stay in fp32, so a
run can change precision between stages or on resume. The meta-auxiliary
attack's second-order path runs under the same autocast (autograd keeps each
op's dtype in the double backward); the finite-difference tests of that path
stay in float64, where autocast does not apply.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["MixedPrecision", "compile_forward", "describe_device", "resolve_device", "to_memory_format"]

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_announced: set[str] = set()


def resolve_device(spec: str = "auto", *, announce: bool = True) -> torch.device:
    """The torch device for ``compute.device`` (``auto``: CUDA if available, else CPU).

    Raises:
        ValueError: a CUDA/MPS device was asked for and is not available, naming the fix.
    """
    spec = str(spec)
    if spec == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"compute.device={spec}: this machine has no usable CUDA GPU "
                             f"(torch {torch.__version__}); use compute.device=auto or cpu")
        device = torch.device(spec)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"compute.device={spec}: only {torch.cuda.device_count()} CUDA device(s) here; "
                             f"use cuda:0 … cuda:{torch.cuda.device_count() - 1}")
    elif spec == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError("compute.device=mps: MPS is not available here; use compute.device=auto or cpu")
        device = torch.device("mps")
    else:
        device = torch.device(spec)
    if announce:
        _announce(device)
    return device


def describe_device(device: torch.device) -> str:
    """``"cuda:0 (NVIDIA H200)"`` / ``"cpu (2 threads)"``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def _announce(device: torch.device) -> None:
    key = str(device)
    if key not in _announced:
        _announced.add(key)
        print(f"device: {describe_device(device)}", file=sys.stderr, flush=True)


def to_memory_format(x: Any, channels_last: bool) -> Any:
    """``x`` (a module or a 4-D tensor) in channels-last memory format when asked; anything else unchanged."""
    if not channels_last:
        return x
    if isinstance(x, nn.Module):
        return x.to(memory_format=torch.channels_last)
    if isinstance(x, Tensor) and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def compile_forward(module: nn.Module) -> nn.Module:
    """``module`` with its ``forward`` replaced by ``torch.compile(forward)`` (``compute.compile``).

    The module object, its attributes and its state-dict keys stay as they are (``torch.compile(module)``
    would wrap it and prefix every key with ``_orig_mod.``). For inference and first-order gradients only:
    compiled graphs do not support double backward (the meta-auxiliary attack).
    """
    module.forward = torch.compile(module.forward)
    return module


class MixedPrecision:
    """Autocast for forward passes and, for fp16, loss scaling: one object per trainer.

    Use::

        with mp.autocast():
            loss = model(x)
        mp.step(loss, optimizer)   # backward (scaled for fp16) + optimiser step

    Args:
        precision: ``"fp32"`` (autocast off), ``"bf16"`` or ``"fp16"``.
        device: the device the forward passes run on (autocast is per device type).
    """

    def __init__(self, precision: str, device: torch.device | str) -> None:
        if precision not in _DTYPES:
            raise ValueError(f"compute.precision={precision!r}: use one of {sorted(_DTYPES)}")
        self.precision = precision
        self.device_type = torch.device(device).type
        self.dtype = _DTYPES[precision]
        if precision == "fp16" and self.device_type == "cpu":
            raise ValueError("compute.precision=fp16 needs a CUDA GPU (CPU autocast supports bf16 only); "
                             "use compute.precision=bf16 or fp32")
        self.scaler = torch.amp.GradScaler(self.device_type) if precision == "fp16" else None

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Forward passes in the configured dtype (a no-op for fp32)."""
        if self.dtype is None:
            yield
            return
        with torch.autocast(self.device_type, dtype=self.dtype):
            yield

    def step(self, loss: Tensor, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.zero_grad(); loss.backward(); optimizer.step()``, scaled and overflow-checked for fp16."""
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """The fp16 scaler's state (empty otherwise), for checkpoints."""
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
