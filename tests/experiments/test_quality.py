"""Image quality (Table VI): the arithmetic of PSNR, SSIM, LPIPS and FID, and honesty when weights are absent."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from erasablemask.experiments.evaluation import quality as q


@pytest.fixture
def no_hub_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_psnr_and_l1_mse_of_a_constant_shift_have_their_known_values():
    x = torch.rand(2, 3, 16, 16) * 1.6 - 0.8  # [-1, 1], away from the clamp
    m = q.pixel_metrics(x + 0.2, x)  # +0.2 in [-1, 1] = +0.1 in [0, 1]
    assert torch.allclose(m["l1"], torch.full((2,), 0.1), atol=1e-6)
    assert torch.allclose(m["mse"], torch.full((2,), 0.01), atol=1e-6)
    assert torch.allclose(m["psnr"], torch.full((2,), 20.0), atol=1e-3)  # 10 log10(1 / 0.01)
    assert math.isinf(float(q.pixel_metrics(x, x)["psnr"][0]))


def test_ssim_is_one_for_equal_images_and_the_luminance_formula_for_flat_ones():
    a = torch.rand(1, 3, 16, 16)
    assert float(q.ssim(a, a)[0]) == pytest.approx(1.0, abs=1e-6)
    # Flat images: no variance, so SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1) at every window.
    fa, fb = torch.full((1, 1, 12, 12), 0.3), torch.full((1, 1, 12, 12), 0.7)
    c1 = 0.01**2
    expected = (2 * 0.3 * 0.7 + c1) / (0.3**2 + 0.7**2 + c1)
    assert float(q.ssim(fa, fb)[0]) == pytest.approx(expected, rel=1e-6)
    # A noisy copy scores below a lightly noisy one, and both below 1.
    g = torch.Generator().manual_seed(0)
    light = (a + 0.02 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    heavy = (a + 0.2 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    assert 1.0 > float(q.ssim(a, light)[0]) > float(q.ssim(a, heavy)[0])
    with pytest.raises(ValueError, match="smaller than the 11x11 window"):
        q.ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))


def test_frechet_distance_equals_the_closed_form_for_gaussians_with_known_moments():
    rng = np.random.default_rng(0)
    d = 5
    r, _ = np.linalg.qr(rng.normal(size=(d, d)))  # a rotation shared by both covariances: they commute
    d1, d2 = rng.uniform(0.5, 2.0, d), rng.uniform(0.5, 2.0, d)
    s1, s2 = r @ np.diag(d1) @ r.T, r @ np.diag(d2) @ r.T
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    # Commuting covariances: Tr(S1 + S2 - 2 sqrt(S1 S2)) = sum (sqrt(d1) - sqrt(d2))^2.
    expected = float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2))
    assert q.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)
    assert q.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-6)
    # From samples: the moments are estimated, and the distance converges to the same value.
    f1 = rng.multivariate_normal(mu1, s1, size=4000)
    f2 = rng.multivariate_normal(mu2, s2, size=4000)
    assert q.frechet_distance(*q.gaussian_moments(f1), *q.gaussian_moments(f2)) == pytest.approx(expected, rel=0.1)


def test_fid_bootstrap_interval_brackets_the_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    f1, f2 = rng.normal(size=(60, 3)), rng.normal(loc=1.0, size=(60, 3))
    v, lo, hi = q.fid_bootstrap(f1, f2, n_boot=100, seed=0)
    assert lo <= v <= hi and hi > lo
    assert q.fid_bootstrap(f1, f2, n_boot=100, seed=0) == (v, lo, hi)
    with pytest.raises(ValueError, match="paired"):
        q.fid_bootstrap(f1, f2[:10])


def test_lpips_wrapper_is_the_normalised_spatially_averaged_feature_distance_on_a_random_backbone():
    torch.manual_seed(0)
    metric = q.Lpips(random_backbone=True)
    assert not metric.available  # a random backbone is never reported
    x, y = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    got = metric(x, y)
    net = metric.net
    with torch.no_grad():  # the definition: inputs in [-1, 1], scaled, unit-normalised channels, heads, mean
        fx, fy = net.net(net.scaling_layer(x)), net.net(net.scaling_layer(y))
        total = torch.zeros(2)
        for k, lin in enumerate(net.lins):
            nx = fx[k] / (fx[k].pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            ny = fy[k] / (fy[k].pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total += lin((nx - ny) ** 2).mean(dim=(2, 3)).flatten()
    assert torch.allclose(got, total, rtol=1e-5, atol=1e-7)
    assert torch.allclose(metric(x, x), torch.zeros(2), atol=1e-7)
    # [-1, 1] inputs, not [0, 1]: treating them as [0, 1] gives another number.
    assert not torch.allclose(got, net(x, y, normalize=True).flatten(), rtol=1e-3)


def test_absent_weights_are_reported_and_never_become_numbers(no_hub_weights: Path, tmp_path: Path):
    from erasablemask.experiments.evaluation.batches import EvalBatch
    from erasablemask.experiments.evaluation.validator import ProtectedBatch

    lp, fid = q.Lpips(weights=tmp_path / "missing.pth"), q.Fid()
    assert not lp.available and not fid.available
    assert lp.why.startswith("LPIPS: weights not found at ") and str(no_hub_weights) in lp.why
    assert fid.why.startswith("FID: weights not found at ")
    quality = q.ImageQuality(lpips=lp, fid=fid)
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    batch = EvalBatch(
        index=torch.tensor([4, 7, 9]),
        x=x,
        att_a=torch.zeros(3, 13),
        att_b=torch.zeros(3, 13),
        identity=torch.tensor([1, 2, 3]),
        x_other=None,
    )
    quality.add(ProtectedBatch(batch=batch, x=x, protected=(x + 0.2).clamp(-1, 1), attribute_only=x, restored=None))
    res = quality.result()
    assert not any("lpips" in k or "fid" in k for k in res)
    assert res["quality/l1_protected_vs_attr_only"] == pytest.approx(
        float(((x + 0.2).clamp(-1, 1) - x).abs().mean() / 2), rel=1e-5
    )
    assert set(quality.columns()["q_ssim_protected_vs_source"]) == {4, 7, 9}
    assert quality.unavailable == [lp.why, fid.why]


def test_a_weights_file_with_the_wrong_digest_is_refused(no_hub_weights: Path):
    no_hub_weights.mkdir(parents=True)
    (no_hub_weights / q.ALEXNET_WEIGHTS.filename).write_bytes(b"not alexnet")
    with pytest.raises(ValueError, match="expected a digest starting 7be5be79"):
        q.Lpips()
