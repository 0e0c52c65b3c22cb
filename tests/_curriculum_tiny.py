"""Tiny real configs for the curriculum tests (shared by test_curriculum.py and test_checkpoint.py).

The demo config is loaded and shrunk (lightning-hydra-template style): a
10-identity 64x64 world, 3-layer width-8 AttGAN, batch 4-8, two surrogates and one black-box model, mini FR
models trained for one epoch in a private cache (``ERASABLEMASK_HOME``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import torch

from erasablemask.experiments.config.loading import load_config
from erasablemask.experiments.config.schema import ErasableMaskConfig

SURROGATES = ["mini_iresnet_arc_s0", "mini_incept_arc_s0"]  # two: the meta-auxiliary attack's minimum
BLACK_BOX = ["mini_mobileface_arc_s0"]

TINY = [
    "data.image_size=64", "data.miniworld.n_identities=10", "data.miniworld.images_per_identity=16",
    "data.miniworld.heldout_identities=4", "data.miniworld.fr_epochs=1",
    "model.enc_dim=8", "model.dec_dim=8", "model.dis_dim=8", "model.dis_fc_dim=16",
    "model.enc_layers=3", "model.dec_layers=3", "model.dis_layers=3",
    "stage1.epochs=2", "stage2.epochs=2", "stage3.epochs=1",
    "stage1.batch_size=8", "stage2.batch_size=4", "stage3.batch_size=8",
    f"attack.surrogates=[{','.join(SURROGATES)}]", f"attack.black_box=[{','.join(BLACK_BOX)}]",
    "evaluation.transforms=[none,jpeg]",
]


def tiny_config(*extra: str) -> ErasableMaskConfig:
    return load_config("miniworld_demo", [*TINY, *extra])


@contextlib.contextmanager
def tiny_zoo(home: Path) -> Iterator[None]:
    """Private FR cache in ``home`` (TINY trains the mini models for 1 epoch); torch threads restored after.

    The mini models are built from each config's world (``build_fr_models``), so nothing else needs restoring.
    """
    import pytest

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ERASABLEMASK_HOME", str(home))
        old_threads = torch.get_num_threads()
        try:
            yield
        finally:
            torch.set_num_threads(old_threads)


def state_tensors(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint (models and training state), by key."""
    from safetensors.torch import load_file

    return {**{f"models:{k}": v for k, v in load_file(str(ckpt_dir / "models.safetensors")).items()},
            **{f"state:{k}": v for k, v in load_file(str(ckpt_dir / "state.safetensors")).items()}}


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different[:10]}"


def strip_times(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if not k.startswith("time/")} for h in history]
