"""Validation and evaluation of protection (ASR) and erasion (ESR), every FR model, every transform.

For each source image ``x`` (val or test split of the source identities),
``att_b`` is a single-attribute edit (AttGAN's test-time editing: one
attribute flipped, conflicts resolved) drawn with a fixed seed, and:

- ``clean``: ``x`` itself — the clean baseline of Table II;
- ``attr_only``: ``x_cov^{att_b} = G_dec(G_enc(x), att_b)`` — the
  "Attributes Modified" baseline;
- ``protected@t``: ``t(x_adv)`` for each evaluation transform ``t`` (Table V;
  ``none`` is the identity);
- ``restored@t``: ``R(t(x_adv))``.

Scores are cosines to the target's *evaluation* image (a different image of
the target identity than the one the attack was trained on) and, for the
restored faces, to another image of the source identity. Rates
(:mod:`erasablemask.experiments.evaluation.metrics`): ASR at τ1 = threshold at
``evaluation.asr_far``; ESR (Eq. 18, literal) at τ2 = threshold at
``evaluation.esr_far``; identity restoration at the FAR-0.01 threshold
(``IDR_FAR``). Metric keys: ``asr/<model>`` (none) and ``asr@<t>/<model>``,
``esr...``, ``esr_unrestored...`` (Eq. 18 on the protected face without R),
``idr...``, ``asr_clean/<model>``, ``asr_attr_only/<model>``,
``idr_clean/<model>`` (clean pairs of the source identity: the ceiling for
identity restoration), ``target_pair_cos/<model>`` and
``target_pair_verified/<model>`` (the target's training photo against its
evaluation photo: whether impersonating the training photo can succeed at
all), and means over ``surrogates`` and ``black_box``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from torch import Tensor, nn

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.data.attribute_codes import code_attributes
from erasablemask.experiments.data.attributes import sample_target_attributes
from erasablemask.experiments.data.splits import build_world, split_dataset
from erasablemask.experiments.evaluation.metrics import ScoreTally, cosine
from erasablemask.experiments.evaluation.targets import ImpersonationTargets, target_index_for
from erasablemask.experiments.seeding import derive_seed
from erasablemask.models.noise_pool import build_eval_transform

__all__ = ["IDR_FAR", "EvalBatch", "evaluation_batches", "ProtectionValidator", "evaluate_checkpoint"]

IDR_FAR = 0.01  # identity restoration: verified as the source at the FAR-0.01 threshold
EVAL_BATCH = 64


@dataclass
class EvalBatch:
    """A fixed evaluation batch: sources, their attributes, edits and another image of each source."""

    x: Tensor  # (N, 3, H, W) in [-1, 1]
    att_a: Tensor  # (N, n) 0/1
    att_b: Tensor  # (N, n) 0/1, one attribute flipped
    index: Tensor  # (N,) data-set indices (target assignment)
    x_other: Tensor | None  # (N, 3, H, W): another image of the same identity (None: identities unknown)


def evaluation_batches(cfg: ErasableMaskConfig, split: Literal["val", "test"], max_images: int = 0
                       ) -> list[EvalBatch]:
    """The source images of ``split`` (first ``max_images``; 0 = all) in fixed batches.

    ``x_other`` is another image of each source identity (mini-world: the
    identity's first other image, any split); None for real data sets, whose
    identities are not known here (no identity-restoration rate then).
    """
    world = build_world(cfg) if cfg.data.kind == "miniworld" else None
    ds = split_dataset(cfg, split)
    n = len(ds) if max_images == 0 else min(max_images, len(ds))
    if n == 0:
        raise ValueError(f"the {split} split has no source images; raise data.miniworld.images_per_identity")
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "eval_att_b", split))
    batches = []
    for start in range(0, n, EVAL_BATCH):
        items = [ds[i] for i in range(start, min(start + EVAL_BATCH, n))]
        att_a = torch.stack([it["attrs"] for it in items])
        x_other = None
        if world is not None:
            others = []
            for it in items:  # the identity's first other image, from any split
                same = world.indices(None, [it["identity"]])
                others.append(next(i for i in same if i != it["index"]))
            x_other = world.images(others)
        batches.append(EvalBatch(
            x=torch.stack([it["image"] for it in items]), att_a=att_a,
            att_b=sample_target_attributes(att_a, gen, mode="flip_one"),
            index=torch.tensor([it["index"] for it in items]), x_other=x_other,
        ))
    return batches


class ProtectionValidator:
    """Scores a protector/restorer pair on fixed batches with fixed FR models and targets.

    Args:
        cfg: the config (thresholds' FARs, attribute coding, restorer input, model roles).
        models: name -> frozen FR model (surrogates and black-box).
        targets: the run's impersonation targets (their *evaluation* images are used).
        device: where to compute.
        split: "val" (per-epoch validation) or "test" (evaluation).
        max_images: cap on the number of source images (0 = all).

    Raises:
        UncalibratedError: a model has no threshold at a needed FAR (before any work).
    """

    def __init__(self, cfg: ErasableMaskConfig, models: dict[str, nn.Module], targets: ImpersonationTargets,
                 device: torch.device | str, *, split: Literal["val", "test"] = "val", max_images: int = 0) -> None:
        self.cfg, self.models, self.targets, self.device = cfg, models, targets, torch.device(device)
        e = cfg.evaluation
        self.tau = {m: {"asr": fr.threshold(e.asr_far), "esr": fr.threshold(e.esr_far), "idr": fr.threshold(IDR_FAR)}
                    for m, fr in models.items()}
        self.batches = evaluation_batches(cfg, split, max_images)
        with torch.no_grad():
            self.target_emb = {m: fr(targets.eval_images.to(self.device)) for m, fr in models.items()}
            # The ceiling the protocol sets: does the target's training photo itself verify against its
            # evaluation photo? (Mean over targets of the cosine, and of the decision at τ1.)
            self.target_pair = {m: cosine(fr(targets.train_images.to(self.device)), self.target_emb[m])
                                for m, fr in models.items()}
            self.clean = ScoreTally()
            for b in self.batches:
                x = b.x.to(self.device)
                for m, fr in models.items():
                    emb = fr(x)
                    self.clean.add(m, "clean", cosine(emb, self._target(m, b)))
                    if b.x_other is not None:
                        self.clean.add(m, "clean_source", cosine(emb, fr(b.x_other.to(self.device))))

    def _target(self, m: str, b: EvalBatch) -> Tensor:
        idx = target_index_for(b.index, len(self.targets))
        emb = self.target_emb[m]
        return emb if idx is None else emb[idx.to(emb.device)]

    @torch.no_grad()
    def score(self, protector: nn.Module, restorer: nn.Module, transforms: Sequence[str] = ("none",)) -> ScoreTally:
        """Cosine scores of attr_only, protected@t and restored@t (to target / to source) per model."""
        from erasablemask.models.erasablemask import restorer_code

        was = (protector.training, restorer.training)
        protector.eval()
        restorer.eval()
        tally = ScoreTally(scores=dict(self.clean.scores))
        fns = {t: build_eval_transform(t) for t in transforms}
        try:
            for k, b in enumerate(self.batches):
                x = b.x.to(self.device)
                a_a = code_attributes(b.att_a, self.cfg).to(self.device)
                a_b = code_attributes(b.att_b, self.cfg).to(self.device)
                out = protector.protect(x, a_b)
                source_emb = ({m: fr(b.x_other.to(self.device)) for m, fr in self.models.items()}
                              if b.x_other is not None else None)
                for m, fr in self.models.items():
                    tally.add(m, "attr_only", cosine(fr(out.x_cov_b), self._target(m, b)))
                for t, fn in fns.items():
                    x_t = fn(out.x_adv, seed=derive_seed(self.cfg.seed, "eval_transform", t, k))
                    x_rec = restorer(x_t, restorer_code(self.cfg.protection.restorer_attribute_input, a_a, a_b))
                    for m, fr in self.models.items():
                        tally.add(m, f"protected@{t}", cosine(fr(x_t), self._target(m, b)))
                        emb_rec = fr(x_rec)
                        tally.add(m, f"restored_target@{t}", cosine(emb_rec, self._target(m, b)))
                        if source_emb is not None:
                            tally.add(m, f"restored_source@{t}", cosine(emb_rec, source_emb[m]))
        finally:
            protector.train(was[0])
            restorer.train(was[1])
        return tally

    def summarize(self, tally: ScoreTally, transforms: Sequence[str] = ("none",), prefix: str = "") -> dict[str, float]:
        """Rates per model and group means (module docstring for the keys)."""
        a = self.cfg.attack
        has_source = (next(iter(self.models)), "clean_source") in tally.scores
        out: dict[str, float] = {}
        for m in self.models:
            tau = self.tau[m]
            out[f"asr_clean/{m}"] = tally.rate_above(m, "clean", tau["asr"])
            out[f"asr_attr_only/{m}"] = tally.rate_above(m, "attr_only", tau["asr"])
            out[f"target_pair_cos/{m}"] = float(self.target_pair[m].mean())
            out[f"target_pair_verified/{m}"] = float((self.target_pair[m] > tau["asr"]).float().mean())
            if has_source:
                out[f"idr_clean/{m}"] = tally.rate_above(m, "clean_source", tau["idr"])
            for t in transforms:
                sfx = "" if t == "none" else f"@{t}"
                out[f"asr{sfx}/{m}"] = tally.rate_above(m, f"protected@{t}", tau["asr"])
                out[f"esr{sfx}/{m}"] = tally.rate_below(m, f"restored_target@{t}", tau["esr"])
                # Eq. 18 on the protected face itself, without R: what erasion has to improve on.
                out[f"esr_unrestored{sfx}/{m}"] = tally.rate_below(m, f"protected@{t}", tau["esr"])
                if has_source:
                    out[f"idr{sfx}/{m}"] = tally.rate_above(m, f"restored_source@{t}", tau["idr"])
                out[f"cos{sfx}/{m}"] = tally.mean(m, f"protected@{t}")
        for group, names in (("surrogates", a.surrogates), ("black_box", a.black_box)):
            names = [n for n in names if n in self.models]
            if not names:
                continue
            for key in sorted({k.split("/")[0] for k in out}):
                vals = [out[f"{key}/{n}"] for n in names if f"{key}/{n}" in out]
                if vals and not key.endswith("_mean"):
                    out[f"{key}/{group}_mean"] = sum(vals) / len(vals)
        return {f"{prefix}{k}": v for k, v in out.items()}

    def validate(self, protector: nn.Module, restorer: nn.Module, prefix: str = "val/") -> dict[str, float]:
        """Per-epoch validation: no transform."""
        return self.summarize(self.score(protector, restorer), prefix=prefix)


def evaluate_checkpoint(
    cfg: ErasableMaskConfig,
    checkpoint: Path,
    *,
    split: Literal["val", "test"] = "test",
    transforms: Sequence[str] | None = None,
    max_images: int | None = None,
    attribute_accuracy: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Full evaluation of a stage-2 or stage-3 checkpoint (module docstring).

    Args:
        cfg: the run's config (must fit the checkpoint).
        checkpoint: a complete stage-2 or stage-3 checkpoint directory.
        split: source images to protect.
        transforms: evaluation transforms (default ``evaluation.transforms``).
        max_images: cap on source images (default ``evaluation.max_images``; 0 = all).
        attribute_accuracy: also measure attribute accuracy of the edits with
            a separately trained attribute classifier (and D_att, for reference).

    Returns:
        ``{"metrics": {...}, "n_images": int, "targets": [...], "checkpoint": str, "stage": int}``.
    """

    from erasablemask.experiments.curriculum.build import load_protection_models
    from erasablemask.experiments.curriculum.checkpoint import load_checkpoint, read_checkpoint_meta
    from erasablemask.experiments.evaluation.targets import build_targets
    from erasablemask.experiments.fr_tools.zoo import build_fr_models

    stage = int(read_checkpoint_meta(Path(checkpoint))["stage"])
    if stage not in (2, 3):
        raise ValueError(f"checkpoint '{checkpoint}' is from stage {stage}; evaluate a stage-2 or stage-3 checkpoint")
    ckpt = load_checkpoint(checkpoint, cfg, stage=stage, purpose="input")
    device = torch.device("cpu")
    _, D, protector, restorer = load_protection_models(cfg, ckpt, device)
    a = cfg.attack
    models = build_fr_models(cfg, list(a.surrogates) + list(a.black_box), device, progress=progress)
    targets = build_targets(cfg)
    transforms = list(cfg.evaluation.transforms if transforms is None else transforms)
    if "none" not in transforms:
        transforms.insert(0, "none")
    max_images = cfg.evaluation.max_images if max_images is None else max_images
    validator = ProtectionValidator(cfg, models, targets, device, split=split, max_images=max_images)
    metrics = validator.summarize(validator.score(protector, restorer, transforms), transforms)
    metrics.update(_quality(cfg, validator, protector, restorer))
    if attribute_accuracy:
        from erasablemask.experiments.evaluation.attribute_classifier import edit_accuracy

        metrics.update(edit_accuracy(cfg, validator.batches, protector, D, progress=progress))
    return {"metrics": metrics, "n_images": sum(b.x.shape[0] for b in validator.batches),
            "targets": targets.names, "checkpoint": str(checkpoint), "stage": stage}


@torch.no_grad()
def _quality(cfg: ErasableMaskConfig, validator: ProtectionValidator, protector: nn.Module, restorer: nn.Module
             ) -> dict[str, float]:
    """Mean L1 / MSE (in [0, 1] pixel units, as Table VI) of x_adv vs x_cov^{att_b} and of x_rec vs x."""
    from erasablemask.models.erasablemask import restorer_code

    protector.eval()
    restorer.eval()
    sums = {"quality/l1_protected_vs_attr_only": 0.0, "quality/mse_protected_vs_attr_only": 0.0,
            "quality/l1_restored_vs_source": 0.0, "quality/mse_restored_vs_source": 0.0}
    n = 0
    for b in validator.batches:
        x = b.x.to(validator.device)
        a_a = code_attributes(b.att_a, cfg).to(validator.device)
        a_b = code_attributes(b.att_b, cfg).to(validator.device)
        out = protector.protect(x, a_b)
        x_rec = restorer(out.x_adv, restorer_code(cfg.protection.restorer_attribute_input, a_a, a_b))
        for key, (p, q) in {"protected_vs_attr_only": (out.x_adv, out.x_cov_b),
                            "restored_vs_source": (x_rec, x)}.items():
            d = (p - q) / 2  # [0, 1] units
            sums[f"quality/l1_{key}"] += float(d.abs().mean(dim=(1, 2, 3)).sum())
            sums[f"quality/mse_{key}"] += float(d.square().mean(dim=(1, 2, 3)).sum())
        n += x.shape[0]
    return {k: v / n for k, v in sums.items()}
