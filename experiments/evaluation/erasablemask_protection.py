"""ErasableMask as a :class:`~erasablemask.experiments.evaluation.protection.Protection`.

``protect`` is the protection generator of §IV-C (E_adv with β-fusion and
γ-injection around the frozen AttGAN G): ``x_adv^{att_b}`` (Eq. 6-7);
``attribute_only`` is ``x_cov^{att_b} = G_dec(G_enc(x), att_b)`` (the
frozen G, the same operations as the clean branch inside ``protect``); ``erase`` is the restorer R (Eq. 13) with the attribute
code ``protection.restorer_attribute_input`` asks for. The generator is not
conditioned on the target: it was trained against the run's fixed targets
(``attack.target``), so ``x_target`` is accepted and ignored.

Networks run in eval mode (BatchNorm on running statistics) without
gradients; a live protector/restorer (per-epoch validation in stages 2 and 3)
gets its training mode back after each call.

Loading (:meth:`ErasableMaskProtection.from_checkpoint`) takes a checkpoint
directory or a run folder. In a run folder the checkpoint is, for stage 3 and
then stage 2, ``stage<k>/final`` (written by the Ray runner) if it is
complete, else the complete checkpoint with the most steps under
``stage<k>/`` (the in-process runner's ``stage<k>/checkpoints/...``). The
checkpoint format is read only through
:mod:`erasablemask.experiments.curriculum.checkpoint` and the networks are
built only by :func:`erasablemask.experiments.curriculum.build.load_protection_models`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor, nn

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.data.attribute_codes import code_attributes
from erasablemask.experiments.devices import resolve_device
from erasablemask.experiments.evaluation.protection import Protection
from erasablemask.models.erasablemask import restorer_code

__all__ = ["ErasableMaskProtection", "resolve_protection_checkpoint"]

PROTECTION_STAGES = (3, 2)  # a run folder's checkpoint: the last complete stage-3, else stage-2


def resolve_protection_checkpoint(path: Path) -> Path:
    """The checkpoint directory that ``path`` (a checkpoint directory or a run folder) stands for.

    Raises:
        FileNotFoundError: ``path`` does not exist, or is a folder with no
            complete stage-2 or stage-3 checkpoint.
    """
    from erasablemask.experiments.curriculum.checkpoint import finished_stage_checkpoint

    path = Path(path)
    if (path / "state.json").is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"'{path}' does not exist; pass a run folder or a stage-2/3 checkpoint directory")
    for stage in PROTECTION_STAGES:
        latest = finished_stage_checkpoint(path, stage)
        if latest is not None:
            return latest
    raise FileNotFoundError(
        f"'{path}' holds no complete stage-3 or stage-2 checkpoint (looked in stage3/ and stage2/); "
        f"finish stage 2 or 3 (`erasablemask train --stage 2-3 --run-dir {path}`) or pass a checkpoint directory"
    )


def _run_dir_of(checkpoint: Path, stage: int) -> Path | None:
    """The run folder above ``.../stage<k>/...``, if the checkpoint lies in one."""
    for parent in checkpoint.parents:
        if parent.name == f"stage{stage}":
            return parent.parent
    return None


class ErasableMaskProtection(Protection):
    """ErasableMask's protector and restorer behind the :class:`Protection` interface.

    Args:
        cfg: the config the networks were built with (attribute coding, restorer input).
        protector: the :class:`~erasablemask.models.erasablemask.ErasableMaskGenerator`.
        restorer: the :class:`~erasablemask.models.erasablemask.Restorer`.
        discriminator: AttGAN D, kept for the D_att attribute judge (optional).
        checkpoint: where the networks were loaded from (None for live networks).
        stage: the curriculum stage of ``checkpoint`` (None for live networks).
        run_dir: the run folder of ``checkpoint``, if it lies in one.
    """

    name = "erasablemask"
    can_erase = True

    def __init__(self, cfg: ErasableMaskConfig, protector: nn.Module, restorer: nn.Module, *,
                 discriminator: nn.Module | None = None, checkpoint: Path | None = None, stage: int | None = None,
                 run_dir: Path | None = None) -> None:
        self.cfg, self.protector, self.restorer, self.discriminator = cfg, protector, restorer, discriminator
        self.checkpoint, self.stage, self.run_dir = checkpoint, stage, run_dir

    @classmethod
    def from_checkpoint(cls, cfg: ErasableMaskConfig, path: Path, device: torch.device | str | None = None
                        ) -> ErasableMaskProtection:
        """Load from a stage-2/3 checkpoint directory or a run folder (module docstring for which checkpoint).

        The networks go to ``device`` (default ``compute.device``).

        Raises:
            FileNotFoundError: no checkpoint there.
            ValueError: the checkpoint is of stage 1 (no protector yet).
            CheckpointMismatch: the checkpoint is incomplete or was written with another config.
        """
        from erasablemask.experiments.curriculum.build import freeze, load_protection_models
        from erasablemask.experiments.curriculum.checkpoint import load_checkpoint, read_checkpoint_meta

        ckpt_dir = resolve_protection_checkpoint(Path(path))
        stage = int(read_checkpoint_meta(ckpt_dir)["stage"])
        if stage not in PROTECTION_STAGES:
            raise ValueError(f"checkpoint '{ckpt_dir}' is from stage {stage}; ErasableMask protects from a "
                             f"stage-2 or stage-3 checkpoint")
        ckpt = load_checkpoint(ckpt_dir, cfg, stage=stage, purpose="input")
        device = resolve_device(cfg.compute.device) if device is None else torch.device(device)
        _, D, protector, restorer = load_protection_models(cfg, ckpt, device)
        return cls(cfg, freeze(protector), freeze(restorer), discriminator=freeze(D), checkpoint=ckpt_dir,
                   stage=stage, run_dir=_run_dir_of(ckpt_dir, stage))

    # ------------------------------------------------------------------ Protection

    def _protect(self, x: Tensor, x_target: Tensor, *, att_a: Tensor | None, att_b: Tensor | None) -> Tensor:
        with self._inference(self.protector):
            return self.protector.protect(x, self._code(att_b, "att_b", "protect")).x_adv  # Eq. 6-7

    def _attribute_only(self, x: Tensor, *, att_a: Tensor | None, att_b: Tensor | None) -> Tensor:
        with self._inference(self.protector):
            # G_dec(G_enc(x), att_b) on the frozen G: the same operations as protect's clean branch.
            return self.protector.generator(x, self._code(att_b, "att_b", "attribute_only"))

    def _erase(self, x_protected: Tensor, *, att_a: Tensor | None, att_b: Tensor | None) -> Tensor:
        mode = self.cfg.protection.restorer_attribute_input
        a_a = None if mode != "source" else self._code(att_a, "att_a", "erase")
        a_b = None if mode != "target" else self._code(att_b, "att_b", "erase")
        with self._inference(self.restorer):
            return self.restorer(x_protected, restorer_code(mode, a_a, a_b))  # Eq. 13

    def _code(self, att: Tensor | None, key: str, what: str) -> Tensor:
        if att is None:
            raise ValueError(f"{self._label}: {what} needs {key} (0/1 attributes); pass {key}=...")
        return code_attributes(att, self.cfg).to(att.device)

    @staticmethod
    @contextlib.contextmanager
    def _inference(module: nn.Module) -> Iterator[None]:
        """Eval mode and no gradients for the block; the module's mode is restored after."""
        was = module.training
        module.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            module.train(was)
