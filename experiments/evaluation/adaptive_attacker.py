"""The adaptive attacker (beyond the paper): a restorer of one's own, trained with the public protector.

The paper's threat model has users run the protector locally, so the
protection generator is public; only the trusted authority (TA) holds the
restorer R. It never asks what an attacker does with the public generator.
The obvious attack, measured here:

1. the attacker takes face images of *other* people (disjoint from the
   protected users: on the mini-world, a second world rendered with another
   seed, :func:`attacker_faces`), protects them with the public protector
   (``protect(x)``, attribute edits drawn as in evaluation) and so has
   (protected, clean) training pairs for free;
2. it trains its own restorer on those pairs (:func:`train_attacker_restorer`):
   ``arch="restorer"`` is R's architecture initialised from the public AttGAN
   G (as the TA's R is), ``arch="unet"`` a plain U-Net
   (:class:`~erasablemask.models.plain_unet.PlainUNet`); loss: R's erasion
   loss against the clean face (Eq. 13), Adam;
3. it applies that restorer to the protected faces of the users (test split)
   and verifies the result against *another* photo of the user with every FR
   model at the FAR-0.01 threshold (the identity-restoration rate, IDR).

:func:`adaptive_attack` does this for several seeds (the attacker's data
order and initialisation) and training budgets (steps; the curve) and
returns per-image rows: ``who`` is ``attacker`` (after the attacker's
restorer, per ``seed`` and ``budget``), ``trusted_authority`` (after the TA's
R), ``protected`` (no restorer) and ``clean`` (the source face itself: the
ceiling); reference rows have ``seed = budget = -1``. Rates and intervals are
computed by the caller over these rows (``erasablemask evaluate
--adaptive-attacker``: identity-bootstrap intervals).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.evaluation.batches import evaluation_batches
from erasablemask.experiments.evaluation.metrics import IDR_FAR, cosine
from erasablemask.experiments.evaluation.protection import Protection
from erasablemask.experiments.seeding import derive_seed

__all__ = ["AttackerData", "attacker_faces", "make_pairs", "train_attacker_restorer", "adaptive_attack"]

Arch = Literal["restorer", "unet"]


@dataclass
class AttackerData:
    """The attacker's own faces: images ``(N, 3, H, W)`` in [-1, 1], 0/1 attributes, identities."""

    x: Tensor
    att: Tensor
    identity: Tensor


def attacker_faces(cfg: ErasableMaskConfig, n_identities: int = 16, images_per_identity: int = 8) -> AttackerData:
    """Faces of people other than the protected users: a mini-world rendered with another seed.

    Raises:
        ValueError: real data (the attacker's face set must then be given: pass ``AttackerData``).
    """
    if cfg.data.kind != "miniworld":
        raise ValueError(
            f"attacker_faces renders a second mini-world; with data.kind={cfg.data.kind!r} pass the "
            f"attacker's own face images as AttackerData (any photos of people other than the users)"
        )
    from erasablemask.experiments.data.miniworld import MiniWorld

    seed = derive_seed(cfg.seed, "adaptive_attacker_world") % (2**31)
    m = cfg.data.miniworld
    world = MiniWorld(
        seed=seed, n_identities=n_identities, images_per_identity=images_per_identity, image_size=cfg.data.image_size,
        skin_texture=m.skin_texture, skin_texture_scale=m.skin_texture_scale,  # the users' kind of faces
    )
    idx = list(range(len(world)))
    return AttackerData(
        x=world.images(idx), att=world.attributes(idx), identity=torch.tensor([i // images_per_identity for i in idx])
    )


@torch.no_grad()
def make_pairs(protection: Protection, data: AttackerData, *, seed: int, batch: int = 32) -> tuple[Tensor, Tensor]:
    """(protected, clean) pairs from the public protector; one attribute flipped per face (as in evaluation)."""
    from erasablemask.experiments.data.attributes import sample_target_attributes

    gen = torch.Generator().manual_seed(seed)
    att_b = sample_target_attributes(data.att, gen, mode="flip_one")
    out = []
    for s in range(0, len(data.x), batch):
        x = data.x[s : s + batch]
        out.append(protection.protect(x, x, att_a=data.att[s : s + batch], att_b=att_b[s : s + batch]))
    return torch.cat(out), data.x


def _new_restorer(arch: Arch, protection: Protection) -> nn.Module:
    if arch == "unet":
        from erasablemask.models.plain_unet import PlainUNet

        return PlainUNet()
    if arch == "restorer":
        from erasablemask.models.erasablemask import Restorer

        generator = getattr(getattr(protection, "protector", None), "generator", None)
        if generator is None:
            raise ValueError(
                f"arch='restorer' needs the scheme's public generator (protection.protector.generator); "
                f"'{protection.name}' has none: use arch='unet'"
            )
        return Restorer.from_generator(generator, attribute_input="neutral")
    raise ValueError(f"arch must be 'restorer' or 'unet'; got {arch!r}")


def train_attacker_restorer(
    protection: Protection,
    pairs: tuple[Tensor, Tensor],
    *,
    arch: Arch,
    budgets: Sequence[int],
    seed: int,
    batch_size: int = 16,
    lr: float = 1e-3,
    on_budget=None,
) -> nn.Module:
    """Train the attacker's restorer on ``pairs``; call ``on_budget(steps, net)`` at each budget (net in eval mode).

    Args:
        protection: the scheme (its public generator initialises ``arch="restorer"``).
        pairs: (protected, clean) images.
        arch: ``"restorer"`` (R's architecture from G) or ``"unet"``.
        budgets: training steps at which to call ``on_budget`` (0: the untrained network), increasing.
        seed: initialisation and data order.
        batch_size, lr: Adam's batch and learning rate.

    Returns:
        The network after ``max(budgets)`` steps.
    """
    from erasablemask.experiments.curriculum.losses import erasion_loss

    budgets = sorted(set(int(b) for b in budgets))
    if not budgets or budgets[0] < 0:
        raise ValueError(f"budgets must be non-negative step counts; got {budgets}")
    torch.manual_seed(derive_seed(seed, "adaptive_attacker_init") % (2**31))
    net = _new_restorer(arch, protection)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.5, 0.999))
    x_adv, x = pairs
    gen = torch.Generator().manual_seed(derive_seed(seed, "adaptive_attacker_order"))
    step, order, pos = 0, torch.randperm(len(x), generator=gen), 0
    for budget in budgets:
        while step < budget:
            if pos + batch_size > len(order):
                order, pos = torch.randperm(len(x), generator=gen), 0
            i = order[pos : pos + batch_size]
            pos += batch_size
            loss = erasion_loss(net(x_adv[i]), x[i], reduction="mean")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if on_budget is not None:
            net.eval()
            with torch.no_grad():
                on_budget(budget, net)
            net.train()
    return net.eval()


def adaptive_attack(
    cfg: ErasableMaskConfig,
    protection: Protection,
    models: dict[str, nn.Module],
    *,
    budgets: Sequence[int] = (0, 50, 100, 200),
    seeds: Sequence[int] = (0, 1, 2),
    arch: Arch = "restorer",
    data: AttackerData | None = None,
    max_images: int = 0,
    batch_size: int = 16,
    lr: float = 1e-3,
    attacker_identities: int = 16,
    attacker_images_per_identity: int = 8,
    progress: bool = False,
) -> pd.DataFrame:
    """The attack over seeds and budgets (module docstring); per-image rows.

    ``attacker_identities`` × ``attacker_images_per_identity``: the size of the attacker's own face set on the
    mini-world (:func:`attacker_faces`; ignored when ``data`` is given). ``progress``: a line per seed and budget.

    Returns:
        Columns ``who, seed, budget, model, role, sample, source_identity, cos_source, threshold, restored``
        (``restored``: ``cos_source > threshold``, the model's threshold at FAR 0.01).
    """
    data = attacker_faces(cfg, attacker_identities, attacker_images_per_identity) if data is None else data
    victims = [b for b in evaluation_batches(cfg, "test", max_images) if b.x_other is not None]
    if not victims:
        raise ValueError(
            "the test split has no sources with another photo of the same identity; the attack is "
            "verified against the user's other photos"
        )
    thr = {m: fr.threshold(IDR_FAR) for m, fr in models.items()}
    roles = {m: "surrogate" if m in cfg.attack.surrogates else "black_box" for m in models}
    with torch.no_grad():
        other = [{m: fr(b.x_other) for m, fr in models.items()} for b in victims]
        protected = [protection.protect(b.x, b.x, att_a=b.att_a, att_b=b.att_b) for b in victims]
    rows: list[pd.DataFrame] = []

    def score(who: str, images: list[Tensor], seed: int = -1, budget: int = -1) -> None:
        for k, (b, img) in enumerate(zip(victims, images, strict=True)):
            for m, fr in models.items():
                cos = cosine(fr(img), other[k][m]).float().cpu().numpy()
                rows.append(
                    pd.DataFrame(
                        {
                            "who": who,
                            "seed": seed,
                            "budget": budget,
                            "model": m,
                            "role": roles[m],
                            "sample": b.index.numpy(),
                            "source_identity": b.identity.numpy(),
                            "cos_source": cos,
                            "threshold": np.float32(thr[m]),
                            "restored": cos > np.float32(thr[m]),
                        }
                    )
                )

    with torch.no_grad():
        score("clean", [b.x for b in victims])
        score("protected", protected)
        if protection.can_erase:
            score(
                "trusted_authority",
                [protection.erase(p, att_a=b.att_a, att_b=b.att_b) for p, b in zip(protected, victims, strict=True)],
            )
    for seed in seeds:
        pairs = make_pairs(protection, data, seed=derive_seed(cfg.seed, "adaptive_attacker_pairs", seed))

        def at_budget(budget: int, net: nn.Module, seed: int = seed) -> None:
            score("attacker", [net(p).clamp(-1, 1) for p in protected], seed=seed, budget=budget)
            if progress:
                print(f"adaptive attacker: seed {seed}, {budget} steps on {len(data.x)} faces scored", flush=True)

        train_attacker_restorer(
            protection, pairs, arch=arch, budgets=budgets, seed=seed, batch_size=batch_size, lr=lr, on_budget=at_budget
        )
    return pd.concat(rows, ignore_index=True)
