"""ErasableMask generator (Eq. 6-7, injection §IV-C) and restorer: formula extremes, freezing, functional path."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.func import functional_call

from erasablemask.models.attgan import AttGANGenerator
from erasablemask.models.erasablemask import ErasableMaskGenerator, PerturbationEncoder, Restorer

N_ATTRS = 5


def trained_like_generator(seed: int = 0) -> AttGANGenerator:
    """A tiny G with non-trivial BN statistics (as after stage 1), in eval mode."""
    torch.manual_seed(seed)
    g = AttGANGenerator(enc_dim=8, dec_dim=8, enc_layers=3, dec_layers=3, n_attrs=N_ATTRS, img_size=32,
                        shortcut_layers=1, inject_layers=1)
    g.train()
    with torch.no_grad():
        for _ in range(3):
            g(torch.rand(8, 3, 32, 32) * 2 - 1, torch.rand(8, N_ATTRS) - 0.5)
    return g.eval()


def perturbed(model: ErasableMaskGenerator, scale: float = 0.05, seed: int = 1) -> ErasableMaskGenerator:
    """Move E_adv away from G_enc, as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.perturbation_encoder.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model


@pytest.fixture
def data():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=gen) * 2 - 1
    a_b = (torch.rand(4, N_ATTRS, generator=gen) > 0.5).float() - 0.5
    return x, a_b


def test_perturbation_encoder_is_a_trainable_copy_of_g_enc(data):
    x, _ = data
    g = trained_like_generator()
    e = PerturbationEncoder.from_generator(g).eval()
    assert [k for k, _ in e.named_parameters()] == [k for k, _ in g.named_parameters() if k.startswith("enc_layers")]
    assert all(p.requires_grad for p in e.parameters())
    for a, b in zip(e(x), g.encode(x)):
        assert torch.equal(a, b)
    assert e.enc_layers[0].layers[0].weight.data_ptr() != g.enc_layers[0].layers[0].weight.data_ptr()


def test_beta_one_gives_the_attribute_edit(data):
    x, a_b = data
    g = trained_like_generator()
    expected = g(x, a_b)
    for inject in (True, False):
        model = perturbed(ErasableMaskGenerator(g, beta=1.0, gamma=0.3, inject=inject)).train()
        out = model(x, a_b)
        assert torch.allclose(out.x_adv, expected, atol=1e-6)
        assert torch.equal(out.x_cov_b, expected)
    model = perturbed(ErasableMaskGenerator(g, beta=0.5, gamma=0.3))
    assert (model(x, a_b).x_adv - expected).abs().max() > 1e-3  # the perturbation does change the image


def test_fusion_follows_eq6_and_eq7(data):
    x, a_b = data
    g = trained_like_generator()
    model = perturbed(ErasableMaskGenerator(g, beta=0.3, inject=False)).eval()
    ft, perb = g.encode(x), model.perturbation_encoder(x)
    fs = [0.3 * t + 0.7 * p for t, p in zip(ft, perb)]
    assert torch.allclose(model(x, a_b).x_adv, g.decode(fs, a_b), atol=1e-6)


def test_gamma_extremes(data):
    x, a_b = data
    g = trained_like_generator()
    base = perturbed(ErasableMaskGenerator(g, beta=0.5, inject=False))
    no_injection = base(x, a_b).x_adv
    for gamma, weights, expect in ((0.0, "clean", "adv"), (1.0, "clean", "clean"),
                                   (1.0, "adversarial", "adv"), (0.0, "adversarial", "clean")):
        model = ErasableMaskGenerator(g, beta=0.5, gamma=gamma, gamma_weights=weights)
        model.perturbation_encoder.load_state_dict(base.perturbation_encoder.state_dict())
        out = model(x, a_b)
        target = out.x_cov_b if expect == "clean" else no_injection
        assert torch.allclose(out.x_adv, target, atol=1e-6), (gamma, weights)
    # In between, the fused features are the γ-mix of the two branches' block outputs.
    model = ErasableMaskGenerator(g, beta=0.5, gamma=0.25)
    model.perturbation_encoder.load_state_dict(base.perturbation_encoder.state_dict())
    ft, perb = g.encode(x), model.perturbation_encoder(x)
    fs = [0.5 * t + 0.5 * p for t, p in zip(ft, perb)]
    _, h_clean = g.decode_layers(ft, a_b)
    _, h_mixed = g.decode_layers(fs, a_b, fuse=lambda i, h: 0.25 * h_clean[i] + 0.75 * h if i < 2 else h)
    assert torch.allclose(model(x, a_b).x_adv, h_mixed[-1], atol=1e-6)
    assert not torch.allclose(h_mixed[-1], out.x_cov_b, atol=1e-3)


def test_fuse_image_blends_the_output_pixels(data):
    x, a_b = data
    g = trained_like_generator()
    hidden = perturbed(ErasableMaskGenerator(g, gamma=0.4))
    both = ErasableMaskGenerator(g, gamma=0.4, fuse_image=True)
    both.perturbation_encoder.load_state_dict(hidden.perturbation_encoder.state_dict())
    out_h, out_b = hidden(x, a_b), both(x, a_b)
    assert torch.allclose(out_b.x_adv, 0.4 * out_h.x_cov_b + 0.6 * out_h.x_adv, atol=1e-6)


def test_frozen_generator_stays_frozen_and_g_enc_runs_once(data):
    x, a_b = data
    g = trained_like_generator()
    model = perturbed(ErasableMaskGenerator(g)).train()
    assert not g.training and not any(p.requires_grad for p in g.parameters())
    assert model.perturbation_encoder.training
    calls = {"g_enc": 0, "e_adv": 0}
    g.enc_layers[0].register_forward_hook(lambda *a: calls.__setitem__("g_enc", calls["g_enc"] + 1))
    model.perturbation_encoder.enc_layers[0].register_forward_hook(
        lambda *a: calls.__setitem__("e_adv", calls["e_adv"] + 1))
    stats = g.enc_layers[1].layers[1].running_mean.clone()
    out = model(x, a_b)
    assert calls == {"g_enc": 1, "e_adv": 1}
    assert torch.equal(g.enc_layers[1].layers[1].running_mean, stats)  # frozen BN statistics untouched
    out.x_adv.square().mean().backward()
    assert all(p.grad is None for p in g.parameters())
    grads = [p.grad for p in model.perturbation_encoder.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    assert sum(float(gr.abs().sum()) for gr in grads) > 0
    assert not out.x_cov_b.requires_grad


def test_frozen_perturbation_bn_keeps_running_statistics(data):
    x, a_b = data
    g = trained_like_generator()
    model = ErasableMaskGenerator(g, beta=0.5, gamma=0.0, perturbation_bn="frozen").train()
    assert torch.allclose(model(x, a_b).x_adv, g(x, a_b), atol=1e-6)  # E_adv == G_enc at init
    model_batch = ErasableMaskGenerator(g, beta=0.5, gamma=0.0, perturbation_bn="batch").train()
    assert not torch.allclose(model_batch(x, a_b).x_adv, g(x, a_b), atol=1e-4)


def test_functional_parameters_replace_e_adv_without_copying(data):
    x, a_b = data
    g = trained_like_generator()
    model = perturbed(ErasableMaskGenerator(g)).eval()
    params = {k: v + 0.01 * torch.randn_like(v) for k, v in model.perturbation_encoder.named_parameters()}
    twin = copy.deepcopy(model)
    twin.perturbation_encoder.load_state_dict(params, strict=False)
    assert torch.allclose(model.protect(x, a_b, e_adv_params=params).x_adv, twin(x, a_b).x_adv, atol=1e-6)
    assert torch.equal(functional_call(model.perturbation_encoder, params, (x,))[-1],
                       twin.perturbation_encoder(x)[-1])


def test_meta_step_gradient_reaches_theta_through_theta_prime(data):
    x, a_b = data
    model = perturbed(ErasableMaskGenerator(trained_like_generator())).train()
    theta = dict(model.perturbation_encoder.named_parameters())
    loss_pri = model.protect(x, a_b).x_adv.mean()
    grads = torch.autograd.grad(loss_pri, list(theta.values()), create_graph=True)
    theta_prime = {k: v - 10.0 * gr for (k, v), gr in zip(theta.items(), grads)}  # Alg. 1 line 7
    loss_aux = model.protect(x, a_b, e_adv_params=theta_prime).x_adv.square().mean()
    second = torch.autograd.grad(loss_aux, list(theta.values()))
    # First-order approximation: θ' as a leaf; the exact gradient adds the -lr·H·g' term.
    leaves = {k: v.detach().requires_grad_() for k, v in theta_prime.items()}
    first = torch.autograd.grad(model.protect(x, a_b, e_adv_params=leaves).x_adv.square().mean(),
                                list(leaves.values()))
    assert all(torch.isfinite(s).all() for s in second)
    assert sum(float(s.abs().sum()) for s in second) > 0
    diff = max(float((s - f).abs().max()) for s, f in zip(second, first))
    assert diff > 1e-3 * max(float(f.abs().max()) for f in first)


def test_restorer_initialised_from_g_reproduces_g(data):
    x, a_b = data
    g = trained_like_generator()
    r = Restorer.from_generator(g).eval()
    assert torch.equal(r(x), g(x, torch.zeros_like(a_b)))  # neutral code
    r_src = Restorer.from_generator(g, attribute_input="source").eval()
    assert torch.equal(r_src(x, a_b), g(x, a_b))
    assert all(p.requires_grad for p in r.parameters())
    assert r.net.enc_layers[0].layers[0].weight.data_ptr() != g.enc_layers[0].layers[0].weight.data_ptr()


def test_restorer_attribute_input_is_enforced(data):
    x, a_b = data
    g = trained_like_generator()
    with pytest.raises(ValueError, match="takes no `a`"):
        Restorer.from_generator(g)(x, a_b)
    with pytest.raises(ValueError, match="pass `a`"):
        Restorer.from_generator(g, attribute_input="target")(x)
    with pytest.raises(ValueError, match="`x_adv` must be"):
        Restorer.from_generator(g)(x * 3)


def test_protect_checks_inputs(data):
    x, a_b = data
    model = ErasableMaskGenerator(trained_like_generator())
    with pytest.raises(ValueError, match="`x` must be .*in \\[-1, 1\\]"):
        model(x * 200, a_b)
    with pytest.raises(ValueError, match="`a_b` must be"):
        model(x, a_b[:, :2])
    with pytest.raises(ValueError, match="`beta` must be in"):
        ErasableMaskGenerator(trained_like_generator(), beta=1.5)
    with pytest.raises(ValueError, match="gamma_weights"):
        ErasableMaskGenerator(trained_like_generator(), gamma_weights="both")
