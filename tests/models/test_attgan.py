"""AttGAN generator/discriminator: shapes, exact parameter counts, AttGAN-PyTorch checkpoint compatibility."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from erasablemask.models.attgan import AttGANDiscriminator, AttGANGenerator, load_attgan_checkpoint


def reference_shapes(img_size: int = 128) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """Names and shapes of AttGAN-PyTorch's G and D state dicts (shortcut 1, inject 1, 13 attributes).

    Transcribed from elvisyjlin/AttGAN-PyTorch attgan.py/nn.py, independently of our
    code: Conv2dBlock/ConvTranspose2dBlock = Sequential 'layers' [conv (bias only
    without norm), norm, acti]; decoder input after a shortcut is n + n//2, plus 13
    after an inject; D's heads take 1024 * (img_size/32)**2 and end in 1 and 13.
    """
    g: dict[str, tuple] = {}
    n_in = 3
    for i in range(5):
        n_out = min(64 * 2**i, 1024)
        g[f"enc_layers.{i}.layers.0.weight"] = (n_out, n_in, 4, 4)
        for k in ("weight", "bias", "running_mean", "running_var"):
            g[f"enc_layers.{i}.layers.1.{k}"] = (n_out,)
        g[f"enc_layers.{i}.layers.1.num_batches_tracked"] = ()
        n_in = n_out
    n_in = 1024 + 13
    for i in range(5):
        if i < 4:
            n_out = min(64 * 2 ** (5 - i - 1), 1024)
            g[f"dec_layers.{i}.layers.0.weight"] = (n_in, n_out, 4, 4)  # ConvTranspose2d: (in, out, k, k)
            for k in ("weight", "bias", "running_mean", "running_var"):
                g[f"dec_layers.{i}.layers.1.{k}"] = (n_out,)
            g[f"dec_layers.{i}.layers.1.num_batches_tracked"] = ()
            n_in = n_out + n_out // 2 if i < 1 else n_out
            n_in = n_in + 13 if i < 1 else n_in
        else:
            g[f"dec_layers.{i}.layers.0.weight"] = (n_in, 3, 4, 4)
            g[f"dec_layers.{i}.layers.0.bias"] = (3,)
    d: dict[str, tuple] = {}
    n_in = 3
    for i in range(5):
        n_out = min(64 * 2**i, 1024)
        d[f"conv.{i}.layers.0.weight"] = (n_out, n_in, 4, 4)
        d[f"conv.{i}.layers.1.weight"] = (n_out,)  # InstanceNorm2d(affine=True), no running stats
        d[f"conv.{i}.layers.1.bias"] = (n_out,)
        n_in = n_out
    f = img_size // 32
    for head, n_last in (("fc_adv", 1), ("fc_cls", 13)):
        d[f"{head}.0.layers.0.weight"] = (1024, 1024 * f * f)
        d[f"{head}.0.layers.0.bias"] = (1024,)
        d[f"{head}.1.layers.0.weight"] = (n_last, 1024)
        d[f"{head}.1.layers.0.bias"] = (n_last,)
    return g, d


def random_state(shapes: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: (torch.tensor(7) if k.endswith("num_batches_tracked") else torch.randn(s, generator=gen) * 0.02)
            for k, s in shapes.items()}


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# Exact counts of AttGAN-PyTorch's public configuration, by hand from the definitions:
# encoder convs 3*64*16 + 64*128*16 + 128*256*16 + 256*512*16 + 512*1024*16 = 11,144,192, BN 2*1984 = 3,968;
# decoder 1037*1024*16 + 1549*512*16 + 512*256*16 + 256*128*16 + (128*3*16 + 3) = 32,307,203, BN 2*1920 = 3,840.
G_PARAMS = 11_144_192 + 3_968 + 32_307_203 + 3_840  # 43,459,203 at every image size
# D: convs 11,144,192 + InstanceNorm affine 3,968; heads 2*(1024*f*f*1024 + 1024) + (1024 + 1) + (1024*13 + 13).
D_PARAMS = {64: 19_553_166, 128: 44_718_990, 256: 145_382_286}


def test_hand_counts_follow_the_reference_formulas():
    g_ref, _ = reference_shapes(128)
    trainable = [k for k in g_ref if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert sum(torch.Size(g_ref[k]).numel() for k in trainable) == G_PARAMS == 43_459_203
    for size, expected in D_PARAMS.items():
        f = size // 32
        assert expected == 11_144_192 + 3_968 + 2 * (1024 * f * f * 1024 + 1024) + 1025 + 13 * 1024 + 13


@pytest.mark.parametrize("size", [64, 128, 256])
def test_parameter_counts_are_attgan_pytorchs(size):
    assert n_params(AttGANGenerator(img_size=size)) == G_PARAMS  # the generator does not depend on size
    assert n_params(AttGANDiscriminator(img_size=size)) == D_PARAMS[size]


def test_state_dict_names_and_shapes_are_attgan_pytorchs():
    g_ref, d_ref = reference_shapes(128)
    g_own = {k: tuple(v.shape) for k, v in AttGANGenerator().state_dict().items()}
    d_own = {k: tuple(v.shape) for k, v in AttGANDiscriminator().state_dict().items()}
    assert g_own == g_ref
    assert d_own == d_ref


def test_tiny_generator_shapes():
    g = AttGANGenerator(enc_dim=8, dec_dim=8, enc_layers=3, dec_layers=3, n_attrs=5, img_size=32).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    zs = g.encode(x)
    assert [tuple(z.shape) for z in zs] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4)]
    y = g(x, torch.full((2, 5), 0.5))
    assert y.shape == x.shape and y.abs().max() <= 1
    image, hs = g.decode_layers(zs, torch.zeros(2, 5))
    assert [h.shape[1] for h in hs] == [32, 16, 3] and hs[-1] is image


def test_generator_decodes_other_image_sizes_and_attribute_changes_output():
    g = AttGANGenerator(enc_dim=8, dec_dim=8, enc_layers=3, dec_layers=3, n_attrs=5, img_size=32).eval()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    assert g(x, torch.zeros(1, 5)).shape == (1, 3, 64, 64)
    assert not torch.allclose(g(x, torch.zeros(1, 5)), g(x, torch.full((1, 5), 0.5)))


def test_discriminator_outputs():
    d = AttGANDiscriminator(dim=8, n_layers=3, n_attrs=5, img_size=32, fc_dim=16)
    real_fake, att = d(torch.zeros(3, 3, 32, 32))
    assert real_fake.shape == (3, 1) and att.shape == (3, 5)
    with pytest.raises(ValueError, match="32x32"):
        d(torch.zeros(1, 3, 64, 64))


def test_range_and_attribute_errors_name_the_input():
    g = AttGANGenerator(enc_dim=8, dec_dim=8, enc_layers=3, dec_layers=3, n_attrs=5, img_size=32)
    with pytest.raises(ValueError, match=r"`x` must be .*x/127.5-1"):
        g(torch.full((1, 3, 32, 32), 255.0), torch.zeros(1, 5))
    with pytest.raises(ValueError, match=r"`a` must be .*n_attrs=5"):
        g(torch.zeros(1, 3, 32, 32), torch.zeros(1, 13))
    with pytest.raises(ValueError, match="multiple of"):
        AttGANGenerator(img_size=100)


def test_strict_load_of_attgan_pytorch_checkpoint_file(tmp_path):
    g_ref, d_ref = reference_shapes(128)
    sd_g, sd_d = random_state(g_ref, 1), random_state(d_ref, 2)
    path = tmp_path / "weights.199.pth"
    # What AttGAN-PyTorch's AttGAN.save writes, trained with --multi_gpu (DataParallel 'module.' prefix).
    torch.save({"G": {"module." + k: v for k, v in sd_g.items()}, "D": sd_d,
                "optim_G": {"state": {}, "param_groups": [{"lr": 2e-4, "params": [0]}]}, "optim_D": {}}, path)
    g, d = AttGANGenerator(img_size=256), AttGANDiscriminator(img_size=128)  # G is size-independent
    load_attgan_checkpoint(path, generator=g, discriminator=d)
    for k, v in g.state_dict().items():
        assert torch.equal(v, sd_g[k]), k
    for k, v in d.state_dict().items():
        assert torch.equal(v, sd_d[k]), k


def test_load_bare_and_safetensors_state_dicts(tmp_path):
    g_ref, d_ref = reference_shapes(64)
    sd_g = random_state(g_ref, 3)
    g = AttGANGenerator(img_size=64)
    load_attgan_checkpoint(sd_g, generator=g)  # bare generator state dict
    assert torch.equal(g.enc_layers[2].layers[0].weight, sd_g["enc_layers.2.layers.0.weight"])
    sd_d = random_state(d_ref, 4)
    path = tmp_path / "attgan.safetensors"
    save_file({**{"G." + k: v for k, v in sd_g.items()}, **{"D." + k: v for k, v in sd_d.items()}}, str(path))
    g2, d2 = AttGANGenerator(img_size=64), AttGANDiscriminator(img_size=64)
    load_attgan_checkpoint(path, generator=g2, discriminator=d2)
    assert torch.equal(d2.fc_cls[1].layers[0].bias, sd_d["fc_cls.1.layers.0.bias"])


def test_loader_lists_missing_unexpected_and_misshaped_keys():
    g_ref, d_ref = reference_shapes(128)
    sd = random_state(g_ref)
    del sd["enc_layers.0.layers.0.weight"]
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as err:
        load_attgan_checkpoint({"G": sd}, generator=AttGANGenerator(inject_layers=0))
    msg = str(err.value)
    assert "1 missing [enc_layers.0.layers.0.weight]" in msg
    assert "1 unexpected [extra.weight]" in msg
    assert "dec_layers.1.layers.0.weight: file (1549, 512, 4, 4) vs model (1536, 512, 4, 4)" in msg
    assert "inject layers" in msg  # the fix
    with pytest.raises(ValueError, match="fc_adv.0.layers.0.weight: file"):  # D depends on image size
        load_attgan_checkpoint({"D": random_state(d_ref)}, discriminator=AttGANDiscriminator(img_size=256))
    with pytest.raises(ValueError, match="has no D weights"):
        load_attgan_checkpoint({"G": random_state(g_ref)}, discriminator=AttGANDiscriminator())


def test_loader_rejects_pickled_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"G": object()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_attgan_checkpoint(path, generator=AttGANGenerator())
