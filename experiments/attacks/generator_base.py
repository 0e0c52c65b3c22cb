"""What the generator-based competitors (AdvFaces, GMAA) share: trained once, then feed-forward.

- :class:`GeneratorAttack`: an :class:`~erasablemask.experiments.attacks.base.Attack`
  whose fields are the competitor's hyper-parameters, training ones included
  (``epochs``, ``batch_size``, ``lr``, loss weights: the stage's ``params``), plus
  the trained networks (not fields). :meth:`GeneratorAttack.resolve_params` checks a
  params dict against the fields and fills the defaults.
- :class:`GeneratorTrainer`: the common part of the competitors' stage trainers
  (the :class:`~erasablemask.experiments.curriculum.loop.StageTrainer` protocol):
  the surrogates of ``attack.surrogates``, the targets of ``attack.target``, the
  training split, a stage RNG, the resolved params (stored in every
  checkpoint and compared on resume), and per-epoch validation with the
  curriculum's :class:`~erasablemask.experiments.evaluation.validator.ProtectionValidator`
  (ASR of the live generator on the val split, surrogates and black-box models).
- :func:`load_generator_attack` / :func:`train_generator_attack`: what the registry
  factories do with ``checkpoint=`` (load a complete stage checkpoint) or ``cfg=``
  (train in this process first: tiny configs and tests; a real run trains through a
  runner, ``platform/competitor_training.py``).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from erasablemask.experiments.attacks.base import Attack
from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.curriculum.checkpoint import CheckpointMismatch, load_checkpoint, read_checkpoint_meta
from erasablemask.experiments.curriculum.context import StageContext
from erasablemask.experiments.data.splits import split_dataset
from erasablemask.experiments.devices import resolve_device
from erasablemask.experiments.evaluation.targets import build_targets, target_index_for
from erasablemask.experiments.evaluation.validator import ProtectionValidator
from erasablemask.experiments.fr_tools.zoo import build_fr_models

__all__ = ["GeneratorAttack", "GeneratorTrainer", "load_generator_attack", "train_generator_attack"]

# Params that may change between a checkpoint and its resumption (more epochs may be asked for).
RESUMABLE_CHANGES = frozenset({"epochs"})


@dataclasses.dataclass(eq=False)
class GeneratorAttack(Attack):
    """Base of a trained-generator competitor (module docstring); subclasses add the fields.

    Attributes:
        checkpoint: where the trained networks came from (set by :func:`load_generator_attack`).
    """

    checkpoint: str | None = dataclasses.field(default=None, init=False)

    @classmethod
    def resolve_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` over the defaults, every hyper-parameter named (JSON-able values).

        Raises:
            ValueError: a key that is not a hyper-parameter (named, with the allowed ones).
        """
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in cls.NOT_HPARAMS}
        unknown = sorted(set(params) - set(fields))
        if unknown:
            raise ValueError(f"{cls.name} has no hyper-parameter {', '.join(unknown)}; allowed: {', '.join(fields)}")
        out = {}
        for name, f in fields.items():
            value = params[name] if name in params else f.default
            out[name] = list(value) if isinstance(value, tuple) else value
        return out

    def hparams(self) -> dict[str, Any]:
        return {**super().hparams(), "checkpoint": self.checkpoint}

    def networks(self) -> dict[str, nn.Module]:
        """The trained networks by checkpoint module name (subclasses)."""
        raise NotImplementedError


class GeneratorTrainer:
    """Common part of a competitor's stage trainer (module docstring).

    Subclasses set :attr:`attack_class` and :attr:`stage`, build their networks and
    optimisers, and implement ``train_step``.
    """

    attack_class: ClassVar[type[GeneratorAttack]]
    stage: ClassVar[str]

    def __init__(self, cfg: ErasableMaskConfig, ctx: StageContext, params: dict[str, Any], inputs: Path | None) -> None:
        self.cfg, self.ctx, self.inputs = cfg, ctx, inputs
        self.params = self.attack_class.resolve_params(params)
        dev = ctx.device
        self.surrogates = build_fr_models(cfg, list(cfg.attack.surrogates), dev, progress=ctx.progress)
        self.targets = build_targets(cfg)
        self.target_train = self.targets.train_images.to(dev)
        with torch.no_grad():
            self.target_emb = {n: fr(self.target_train) for n, fr in self.surrogates.items()}
        self.dataset = split_dataset(cfg, "train")
        self.batch_size = int(self.params["batch_size"])
        self.rng = torch.Generator()
        self.generators = {f"{self.stage}_rng": self.rng}
        self.attack = self.attack_class(surrogates=list(self.surrogates.values()), **self.params)
        self._validator: ProtectionValidator | None = None

    def target_index(self, batch: dict[str, Any]) -> Tensor:
        """``(N,)`` target of each sample (``index mod count``, as ErasableMask's stage 2)."""
        idx = target_index_for(batch["index"], len(self.targets))
        return torch.zeros(batch["index"].shape[0], dtype=torch.long) if idx is None else idx

    def end_epoch(self, epoch: int) -> dict[str, float]:
        """ASR etc. of the live generator on the val split (the curriculum's validator)."""
        if self._validator is None:
            black_box = build_fr_models(
                self.cfg, list(self.cfg.attack.black_box), self.ctx.device, progress=self.ctx.progress
            )
            self._validator = ProtectionValidator(
                self.cfg, {**self.surrogates, **black_box}, self.targets, self.ctx.device
            )
        modes = {k: m.training for k, m in self.attack.networks().items()}
        try:
            for m in self.attack.networks().values():
                m.eval()
            return self._validator.validate(self.attack, prefix="val/")
        finally:
            for k, m in self.attack.networks().items():
                m.train(modes[k])

    def extra_state(self) -> dict[str, Any]:
        return {"params": dict(self.params), "trainer": self.trainer_state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        saved = state["params"]
        bad = [
            f"{k}: checkpoint {saved.get(k)!r}, now {v!r}"
            for k, v in self.params.items()
            if k not in RESUMABLE_CHANGES and _plain(saved.get(k)) != _plain(v)
        ]
        if bad:
            raise CheckpointMismatch(
                f"{self.stage} checkpoint was trained with other hyper-parameters:\n  "
                + "\n  ".join(bad)
                + "\nresume with the checkpoint's params or start afresh"
            )
        self.load_trainer_state(state.get("trainer", {}))

    def trainer_state(self) -> dict[str, Any]:
        """Trainer state beyond weights, optimisers and RNGs (subclasses)."""
        return {}

    def load_trainer_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`trainer_state`."""


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def load_generator_attack(
    name: str,
    surrogates: list[nn.Module],
    checkpoint: str | Path,
    overrides: dict[str, Any],
    device: str | torch.device = "auto",
) -> GeneratorAttack:
    """The attack ``name`` with its networks from a complete ``name`` stage checkpoint.

    The hyper-parameters are the checkpoint's; ``overrides`` may only repeat them
    (or change ``epochs``) — anything else describes another generator.

    Raises:
        FileNotFoundError: ``checkpoint`` is not a checkpoint directory.
        CheckpointMismatch: it is another stage's, not complete, or ``overrides`` contradict it.
    """
    from erasablemask.experiments.curriculum.competitor_stages import competitor_trainer_class

    device = resolve_device(device, announce=False) if isinstance(device, str) else device
    path = Path(checkpoint)
    meta = read_checkpoint_meta(path)
    cfg = ErasableMaskConfig.model_validate(meta["config"])
    ckpt = load_checkpoint(path, cfg, stage=name, purpose="input")
    params = ckpt.state["extra"]["params"]
    cls = competitor_trainer_class(name).attack_class
    resolved = cls.resolve_params(overrides)
    bad = [
        f"{k}: checkpoint {params[k]!r}, asked {overrides[k]!r}"
        for k in overrides
        if k not in RESUMABLE_CHANGES and _plain(resolved[k]) != _plain(params[k])
    ]
    if bad:
        raise CheckpointMismatch(
            f"{name} checkpoint '{path}' was trained with other hyper-parameters:\n  "
            + "\n  ".join(bad)
            + "\ndrop them (the checkpoint's are used) or train anew"
        )
    attack = cls.with_networks(list(surrogates), params, cfg)
    for module_name, module in attack.networks().items():
        ckpt.load_module(module_name, module)
        module.to(device).eval().requires_grad_(False)
    attack.checkpoint = str(path)
    return attack


def train_generator_attack(
    name: str,
    surrogates: list[nn.Module],
    cfg: ErasableMaskConfig,
    params: dict[str, Any],
    *,
    train_dir: str | Path | None = None,
    max_steps_per_epoch: int | None = None,
    inputs: Path | None = None,
) -> GeneratorAttack:
    """Train ``name``'s generator here (the curriculum loop, in-process context), then load it.

    For tiny configs and tests; a real run trains through a runner
    (``erasablemask.platform.competitor_training``) and builds the attack from its checkpoint.
    """
    from erasablemask.experiments.curriculum.context import in_process_context
    from erasablemask.experiments.curriculum.loop import run_stage

    run_dir = Path(train_dir) if train_dir is not None else Path(tempfile.mkdtemp(prefix=f"{name}-train-"))
    ctx = in_process_context(
        run_dir, name, progress=False, max_steps_per_epoch=max_steps_per_epoch, device=cfg.compute.device
    )
    result = run_stage(cfg, name, ctx, inputs=inputs, params=params)
    return load_generator_attack(name, surrogates, result.final_checkpoint, {}, device=ctx.device)


def build_generator_attack(
    name: str,
    surrogates: list[nn.Module],
    hparams: dict[str, Any],
    *,
    checkpoint: str | Path | None = None,
    cfg: ErasableMaskConfig | None = None,
    train_dir: str | Path | None = None,
    inputs: str | Path | None = None,
    max_steps_per_epoch: int | None = None,
    device: str | torch.device = "auto",
) -> GeneratorAttack:
    """A generator competitor from a complete ``name`` stage checkpoint, or trained here on ``cfg`` first.

    The one body of the registered factories (``build_advfaces``, ``build_gmaa``): ``hparams``
    are checked against the attack class before anything is loaded or trained.

    Raises:
        ValueError: neither ``checkpoint`` nor ``cfg``, or an unknown hyper-parameter.
    """
    from erasablemask.experiments.curriculum.competitor_stages import competitor_trainer_class

    competitor_trainer_class(name).attack_class.resolve_params(hparams)
    if checkpoint is not None:
        return load_generator_attack(name, list(surrogates), checkpoint, hparams, device=device)
    if cfg is None:
        raise ValueError(
            f"{name} needs a trained generator: pass checkpoint=DIR (a '{name}' stage checkpoint) "
            "or cfg=CONFIG to train one in this process"
        )
    return train_generator_attack(
        name, list(surrogates), cfg, hparams, train_dir=train_dir, max_steps_per_epoch=max_steps_per_epoch,
        inputs=Path(inputs) if inputs is not None else None,
    )
