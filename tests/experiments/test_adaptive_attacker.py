"""The adaptive attacker: pairs from the public protector, its own restorer, IDR after it beside the TA's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _curriculum_tiny import tiny_config
from torch import nn

from erasablemask.experiments.evaluation import adaptive_attacker as aa
from erasablemask.experiments.evaluation.protection import Protection


def _checker(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    c = ((torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2).float() * 2 - 1
    return c.expand_as(x)


class CheckerMask(Protection):
    """A public, erasable stand-in: adds a 0.3 checkerboard (the TA subtracts it exactly)."""

    name = "checker"
    can_erase = True

    def _protect(self, x, x_target, *, att_a, att_b):
        return (x * 0.7 + 0.3 * _checker(x)).clamp(-1, 1)

    def _erase(self, x_protected, *, att_a, att_b):
        return ((x_protected - 0.3 * _checker(x_protected)) / 0.7).clamp(-1, 1)


class PixelFR(nn.Module):
    """Mean-centred, unit-norm pixels as an 'embedding', with one threshold."""

    def __init__(self, thr: float) -> None:
        super().__init__()
        self.thr = thr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1) - x.flatten(1).mean(dim=1, keepdim=True)
        return v / v.norm(dim=1, keepdim=True)

    def threshold(self, far: float) -> float:
        return self.thr


def test_the_attackers_restorer_learns_to_remove_a_public_perturbation():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny network: one thread avoids oversubscription on a busy machine
    x = torch.rand(24, 3, 8, 8) * 1.4 - 0.7
    scheme = CheckerMask()
    data = aa.AttackerData(x=x, att=torch.zeros(24, 13), identity=torch.arange(24))
    x_adv, clean = aa.make_pairs(scheme, data, seed=0)
    assert torch.equal(clean, x) and torch.allclose(x_adv, scheme.protect(x, x))
    seen: dict[int, float] = {}

    def at(budget: int, net: nn.Module) -> None:
        seen[budget] = float((net(x_adv) - x).abs().mean())

    aa.train_attacker_restorer(
        scheme, (x_adv, clean), arch="unet", budgets=[0, 80], seed=0, batch_size=8, lr=5e-3, on_budget=at
    )
    before = float((x_adv - x).abs().mean())
    assert seen[0] == pytest.approx(before, rel=1e-6)  # the untrained U-Net is the identity
    torch.set_num_threads(threads)
    assert seen[80] < 0.5 * before  # trained on pairs of other faces, it removes most of the perturbation
    with pytest.raises(ValueError, match="public generator"):
        aa.train_attacker_restorer(scheme, (x_adv, clean), arch="restorer", budgets=[0], seed=0)


def test_adaptive_attack_rows_put_the_attacker_beside_the_trusted_authority_and_the_ceiling():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks on a busy machine (set back below)
    cfg = tiny_config(
        "evaluation.max_images=4",
        "attack.surrogates=[mini_iresnet_arc_s0,mini_incept_arc_s0]",
        "attack.black_box=[mini_mobileface_arc_s0]",
    )
    # Stand-ins under the config's names: the roles come from the config, the thresholds from the stand-ins.
    models = {"mini_iresnet_arc_s0": PixelFR(0.5), "mini_mobileface_arc_s0": PixelFR(0.3)}
    data = aa.attacker_faces(cfg, n_identities=2, images_per_identity=4)
    assert data.x.shape == (8, 3, 64, 64)
    rows = aa.adaptive_attack(
        cfg, CheckerMask(), models, budgets=[0, 2], seeds=[0, 1], arch="unet", data=data, max_images=4, batch_size=4
    )
    torch.set_num_threads(threads)
    assert set(rows["who"]) == {"clean", "protected", "trusted_authority", "attacker"}
    att = rows[rows["who"] == "attacker"]
    assert len(att) == 2 * 2 * 2 * 4  # seeds x budgets x models x images
    assert set(zip(att["seed"], att["budget"])) == {(0, 0), (0, 2), (1, 0), (1, 2)}
    ref = rows[rows["who"] != "attacker"]
    assert (ref["seed"] == -1).all() and (ref["budget"] == -1).all() and len(ref) == 3 * 2 * 4
    # Budget 0: the untrained U-Net is the identity, so the attacker sees exactly the protected faces.
    prot = rows[rows["who"] == "protected"].set_index(["model", "sample"])["cos_source"]
    zero = att[(att["budget"] == 0) & (att["seed"] == 0)].set_index(["model", "sample"])["cos_source"]
    assert torch.allclose(
        torch.tensor(zero.sort_index().to_numpy()), torch.tensor(prot.sort_index().to_numpy()), atol=1e-6
    )
    # The TA's exact inverse restores the clean face (up to the clamp), and every flag is cos > threshold.
    ta = rows[rows["who"] == "trusted_authority"].set_index(["model", "sample"])["cos_source"].sort_index()
    clean = rows[rows["who"] == "clean"].set_index(["model", "sample"])["cos_source"].sort_index()
    assert (ta - clean).abs().max() < 0.05
    assert (rows["restored"] == (rows["cos_source"] > rows["threshold"])).all()
    assert np.allclose(rows.loc[rows["model"] == "mini_iresnet_arc_s0", "threshold"].to_numpy(), 0.5)
    assert set(rows.loc[rows["model"] == "mini_mobileface_arc_s0", "role"]) == {"black_box"}
