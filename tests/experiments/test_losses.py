"""The paper's losses (Eq. 3-5, 8, 11, 13-16): values against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from erasablemask.experiments.config.schema import Stage1Config, Stage2Config, Stage3Config
from erasablemask.experiments.curriculum.losses import (
    AdaptiveWeights,
    attribute_loss,
    discriminator_loss,
    erasion_loss,
    generator_gan_loss,
    gradient_penalty,
    perturbation_loss,
    reconstruction_loss,
    stage1_discriminator_loss,
    stage1_generator_loss,
    stage2_loss,
    stage3_loss,
)

# --- Eq. 11 -------------------------------------------------------------------------------------------------


def test_adaptive_weights_start_equal_per_algorithm1_line1():
    aw = AdaptiveWeights(["a", "b", "c"])
    assert aw.rates() == {"a": 1.0, "b": 1.0, "c": 1.0}
    for w in aw.weights().values():
        assert w == pytest.approx(math.exp(1 / 3), rel=1e-12)


def test_adaptive_weights_match_a_hand_computed_eq11_example():
    aw = AdaptiveWeights(["easy", "hard"])
    for loss in (0.4, 0.6):  # epoch mean 0.5: rate_easy = 0.5 / 1
        aw.record_batch("easy", loss)
    aw.record_batch("hard", torch.tensor(1.0))  # rate_hard = 1.0 / 1
    assert aw.end_epoch() == pytest.approx({"easy": 0.5, "hard": 1.0})
    w = aw.weights()
    z = math.exp(0.5) + math.exp(1.0)
    assert w["easy"] == pytest.approx(math.exp(math.exp(0.5) / z), rel=1e-12)  # ≈ 1.4563
    assert w["hard"] == pytest.approx(math.exp(math.exp(1.0) / z), rel=1e-12)  # ≈ 1.8539
    assert w["easy"] < w["hard"]  # the faster-falling (easier) surrogate is down-weighted
    # Next epoch: easy 0.5 -> 0.25 and hard 1.0 -> 0.5 halve alike: rates 0.5, 0.5, equal weights e^{1/2}.
    aw.record_batch("easy", 0.25, n=4)
    aw.record_batch("hard", 0.5, n=4)
    aw.end_epoch()
    assert aw.rates() == pytest.approx({"easy": 0.5, "hard": 0.5})
    assert aw.weights() == pytest.approx({"easy": math.exp(0.5), "hard": math.exp(0.5)})


def test_adaptive_weights_epoch_mean_is_weighted_by_n():
    aw = AdaptiveWeights(["a"])
    aw.record_batch("a", 1.0, n=3)
    aw.record_batch("a", 0.0, n=1)
    assert aw.end_epoch()["a"] == pytest.approx(0.75)


def test_adaptive_weights_state_roundtrip_mid_epoch_and_mismatch_refused():
    aw = AdaptiveWeights(["a", "b"])
    aw.record_batch("a", 0.3)
    aw.record_batch("b", 0.9)
    aw.end_epoch()
    aw.record_batch("a", 0.2)  # mid-epoch accumulators are part of the state
    state = aw.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    other = AdaptiveWeights(["a", "b"])
    other.load_state_dict(state)
    other.record_batch("b", 0.6)
    aw.record_batch("b", 0.6)
    assert other.end_epoch() == aw.end_epoch()
    assert other.weights() == aw.weights()
    with pytest.raises(ValueError, match="surrogates"):
        AdaptiveWeights(["a", "z"]).load_state_dict(state)


def test_adaptive_weights_disabled_gives_ones_and_errors_name_the_fix():
    aw = AdaptiveWeights(["a", "b"], enabled=False)
    assert aw.weights() == {"a": 1.0, "b": 1.0}
    with pytest.raises(KeyError, match="unknown surrogate"):
        aw.record_batch("c", 1.0)
    aw.record_batch("a", 1.0)
    with pytest.raises(ValueError, match=r"\['b'\]"):
        aw.end_epoch()


# --- Eq. 3 -------------------------------------------------------------------------------------------------


def test_log_gan_losses_match_eq3():
    real, fake = torch.tensor([[0.0], [2.0]]), torch.tensor([[0.0], [-1.0]])
    sig = torch.sigmoid
    want_d = (-torch.log(sig(real)).mean() - torch.log(1 - sig(fake)).mean())
    assert float(discriminator_loss(real, fake, kind="log")) == pytest.approx(float(want_d), rel=1e-6)
    assert float(generator_gan_loss(fake, kind="log")) == pytest.approx(float(-torch.log(sig(fake)).mean()), rel=1e-6)
    assert float(discriminator_loss(torch.zeros(3, 1), torch.zeros(3, 1))) == pytest.approx(2 * math.log(2))


def test_wgan_losses_and_gradient_penalty_of_a_linear_critic():
    real, fake = torch.tensor([[1.0], [3.0]]), torch.tensor([[0.5], [0.5]])
    assert float(discriminator_loss(real, fake, kind="wgan_gp")) == pytest.approx(0.5 - 2.0)
    assert float(generator_gan_loss(fake, kind="wgan_gp")) == pytest.approx(-0.5)
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 1))
    w_norm = float(critic[1].weight.detach().norm())
    x_r, x_f = torch.rand(2, 3, 4, 4) * 2 - 1, torch.rand(2, 3, 4, 4) * 2 - 1
    gp = gradient_penalty(lambda x: (critic(x), None), x_r, x_f)  # tuple output, as AttGAN's D
    assert float(gp.detach()) == pytest.approx((w_norm - 1) ** 2, rel=1e-5)  # ∇ of a linear critic is w everywhere
    gp.backward()
    assert critic[1].weight.grad is not None
    with pytest.raises(ValueError, match="kind"):
        generator_gan_loss(fake, kind="hinge")


# --- Eq. 4, 5 ----------------------------------------------------------------------------------------------


def test_attribute_loss_sums_bce_over_attributes_and_averages_over_the_batch():
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, 0.0, 0.5]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    p = torch.sigmoid(logits)
    bce = -(labels * torch.log(p) + (1 - labels) * torch.log(1 - p))
    assert float(attribute_loss(logits, labels)) == pytest.approx(float(bce.sum(1).mean()), rel=1e-6)
    assert float(attribute_loss(logits, labels, reduction="mean")) == pytest.approx(float(bce.mean()), rel=1e-6)
    with pytest.raises(ValueError, match="0/1"):
        attribute_loss(logits, labels - 0.5)


def test_reconstruction_loss_is_mean_absolute_error():
    x = torch.zeros(1, 3, 2, 2)
    assert float(reconstruction_loss(x + 0.5, x)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same shape"):
        reconstruction_loss(x, torch.zeros(1, 3, 4, 4))


# --- Eq. 8, 13 ---------------------------------------------------------------------------------------------


def test_perturbation_loss_units_hinge_and_size_scaling():
    x_cov = torch.zeros(2, 3, 256, 256, dtype=torch.float64)
    x_adv = x_cov.clone()
    x_adv[0] += 0.1  # ‖·‖₂ = 0.1·√196608 ≈ 44.34 > 30
    x_adv[1] += 0.01  # ≈ 4.43 < 30
    n0, n1 = 0.1 * math.sqrt(196608), 0.01 * math.sqrt(196608)
    got = perturbation_loss(x_adv, x_cov, sigma1=30.0, units="unit_per_image")
    assert float(got) == pytest.approx((n0 + 30.0) / 2, rel=1e-5)  # per-image max, then batch mean
    got = perturbation_loss(x_adv, x_cov, sigma1=30.0, hinge="batch")
    assert float(got) == pytest.approx(max(30.0, (n0 + n1) / 2), rel=1e-5)
    got = perturbation_loss(x_adv, x_cov, sigma1=30.0, units="pixels255_per_image")
    assert float(got) == pytest.approx((n0 + n1) * 127.5 / 2, rel=1e-5)
    small_adv, small_cov = x_adv[:, :, :64, :64], x_cov[:, :, :64, :64]  # σ1 scaled by 64/256
    got = perturbation_loss(small_adv, small_cov, sigma1=30.0, scale_with_size=True)
    assert float(got) == pytest.approx((n0 / 4 + 7.5) / 2, rel=1e-5)
    got = perturbation_loss(small_adv, small_cov, sigma1=30.0, scale_with_size=False)
    assert float(got) == pytest.approx(30.0)


def test_perturbation_loss_has_zero_not_nan_gradient_at_stage2_start():
    x_cov = torch.rand(2, 3, 8, 8) * 2 - 1
    x_adv = x_cov.clone().requires_grad_(True)  # E_adv = G_enc at stage-2 start: x_adv == x_cov_b
    perturbation_loss(x_adv, x_cov, sigma1=0.0).backward()
    assert torch.equal(x_adv.grad, torch.zeros_like(x_adv))


def test_erasion_loss_is_sum_or_mean_of_per_image_l2():
    x = torch.zeros(2, 3, 4, 4)
    x_rec = x.clone()
    x_rec[0] += 0.5  # ‖·‖₂ = 0.5·√48
    want = 0.5 * math.sqrt(48)
    assert float(erasion_loss(x_rec, x, reduction="sum")) == pytest.approx(want, rel=1e-6)
    assert float(erasion_loss(x_rec, x, reduction="mean")) == pytest.approx(want / 2, rel=1e-6)


# --- Eq. 14-16 ---------------------------------------------------------------------------------------------


def test_stage_totals_use_the_config_lambdas():
    t = {k: torch.tensor(v) for k, v in dict(a=0.1, r=0.2, g=0.3, adv=0.4, era=0.5, p=0.6).items()}
    total, logged = stage1_generator_loss(l_rec=t["r"], l_att=t["a"], l_G=t["g"], cfg=Stage1Config())
    assert float(total) == pytest.approx(150 * 0.2 + 10 * 0.1 + 1 * 0.3)
    assert logged == pytest.approx({"L_rec": 0.2, "L_att_G": 0.1, "L_G": 0.3, "L_total": 31.3})
    cfg2 = Stage2Config()
    total, logged = stage2_loss(l_att=t["a"], l_rec=t["r"], l_G=t["g"], l_adv=t["adv"], l_era=t["era"],
                                l_perb=t["p"], cfg=cfg2)
    assert float(total) == pytest.approx(10 * 0.1 + 150 * 0.2 + 0.3 + 200 * 0.4 + 150 * 0.5 + 1 * 0.6)
    assert set(logged) == {"L_att_G", "L_rec", "L_G", "L_adv", "L_era", "L_perb", "L_total"}
    cfg2.lambda_adv = 0.0
    total, _ = stage2_loss(l_att=t["a"], l_rec=t["r"], l_G=t["g"], l_adv=t["adv"], l_era=t["era"],
                           l_perb=t["p"], cfg=cfg2)
    assert float(total) == pytest.approx(10 * 0.1 + 150 * 0.2 + 0.3 + 150 * 0.5 + 0.6)
    total, logged = stage3_loss(l_era=t["era"], cfg=Stage3Config())
    assert float(total) == pytest.approx(0.5) and logged == pytest.approx({"L_era": 0.5, "L_total": 0.5})


def test_stage1_discriminator_total_requires_gp_for_wgan():
    l_d, l_att = torch.tensor(1.0), torch.tensor(2.0)
    total, _ = stage1_discriminator_loss(l_D=l_d, l_att_D=l_att, cfg=Stage1Config())
    assert float(total) == pytest.approx(3.0)
    cfg = Stage1Config(gan_loss="wgan_gp")
    with pytest.raises(ValueError, match="gradient_penalty"):
        stage1_discriminator_loss(l_D=l_d, l_att_D=l_att, cfg=cfg)
    total, logged = stage1_discriminator_loss(l_D=l_d, l_att_D=l_att, cfg=cfg, gp=torch.tensor(0.5))
    assert float(total) == pytest.approx(1 + 2 + 10 * 0.5) and logged["L_gp"] == 0.5
