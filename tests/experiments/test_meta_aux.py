"""The meta-auxiliary attack (Algorithm 1, Eq. 9-12): its gradient, its variants and its caches.

The tiny problem: an E_adv-like two-conv "generator" with smooth activations
(so the second-order term is non-zero and finite differences are accurate in
float64) and three tiny random FR nets of different architectures wrapped in
the project's FaceRecognizer.
"""

from __future__ import annotations

import math

import pytest
import torch
from _tiny_nets import TinyGenerator, tiny_fr
from torch import nn
from torch.func import functional_call

from erasablemask.experiments.attacks.meta_auxiliary import TargetEmbeddings, adversarial_loss, make_generate

NAMES = ("fr_a", "fr_b", "fr_c")


@pytest.fixture()
def problem():
    """A float64 tiny problem: generator, surrogates, sources, target, weights."""
    surrogates = {n: tiny_fr(n, act, s).double() for n, act, s in zip(NAMES, (nn.Tanh(), nn.Softplus(), nn.Sigmoid()),
                                                                   (1, 2, 3))}
    torch.manual_seed(0)
    gen = TinyGenerator().double()
    x = (torch.rand(2, 3, 8, 8, dtype=torch.float64) * 1.6 - 0.8)
    x_target = torch.rand(1, 3, 8, 8, dtype=torch.float64) * 2 - 1
    targets = TargetEmbeddings(surrogates, x_target)
    weights = {"fr_a": 1.2, "fr_b": 0.9, "fr_c": 1.5}
    return gen, surrogates, x, targets, weights


def _loss(theta, problem, **kw):
    gen, surrogates, x, targets, weights = problem

    def generate(p):
        return functional_call(gen, theta if p is None else p, (x,))

    return adversarial_loss(generate, theta, surrogates, targets, weights, **kw)


def _leaf_params(gen):
    return {k: p.detach().clone().requires_grad_(True) for k, p in gen.named_parameters()}


def _autograd_grad(problem, **kw) -> torch.Tensor:
    theta = _leaf_params(problem[0])
    res = _loss(theta, problem, **kw)
    return torch.cat([g.flatten() for g in torch.autograd.grad(res.loss, list(theta.values()))])


def _directional_checks(problem, n_dirs: int = 10, h: float = 1e-5, **kw) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(directions v, autograd g·v, central-difference dL/dv) along ``n_dirs`` random unit directions v of θ_E.

    Each finite-difference evaluation re-runs the whole step, inner gradient included.
    """
    base = _leaf_params(problem[0])
    flat = torch.cat([p.detach().flatten() for p in base.values()])
    shapes = [(k, p.shape, p.numel()) for k, p in base.items()]

    def unflatten(vec: torch.Tensor) -> dict[str, torch.Tensor]:
        theta, i = {}, 0
        for k, shape, n in shapes:
            theta[k] = vec[i:i + n].view(shape).clone().requires_grad_(True)
            i += n
        return theta

    def at(vec: torch.Tensor) -> float:
        return float(_loss(unflatten(vec), problem, **kw).loss.detach())

    theta = unflatten(flat)
    g = torch.cat([d.flatten() for d in torch.autograd.grad(_loss(theta, problem, **kw).loss, list(theta.values()))])
    gen = torch.Generator().manual_seed(123)
    dirs = torch.randn(n_dirs, flat.numel(), generator=gen, dtype=flat.dtype)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    fd = torch.tensor([(at(flat + h * v) - at(flat - h * v)) / (2 * h) for v in dirs], dtype=flat.dtype)
    return dirs, dirs @ g, fd


KW = dict(meta_lr=2.0, epsilon=0.0)


def test_meta_gradient_matches_finite_differences_so_the_second_order_term_is_present(problem):
    dirs, g_v, fd = _directional_checks(problem, method="meta_auxiliary", **KW)
    rel = float((g_v - fd).norm() / fd.norm())
    assert rel < 1e-6, f"meta gradient vs finite differences: relative error {rel:.2e}"
    g = _autograd_grad(problem, method="meta_auxiliary", **KW)
    g_fo = _autograd_grad(problem, method="first_order", **KW)
    rel_fo_fd = float((dirs @ g_fo - fd).norm() / fd.norm())
    rel_fo_meta = float((g_fo - g).norm() / g.norm())
    # The first-order variant drops −lr·H_pri·∇L_aux: it misses the true gradient by far more than FD's error.
    assert rel_fo_fd > 1e-2 and rel_fo_fd > 1e4 * rel, (rel_fo_fd, rel)
    assert rel_fo_meta > 1e-2, rel_fo_meta


def test_first_order_equals_meta_when_the_inner_step_is_zero(problem):
    g = _autograd_grad(problem, method="meta_auxiliary", meta_lr=0.0, epsilon=0.0)
    g_fo = _autograd_grad(problem, method="first_order", meta_lr=0.0, epsilon=0.0)
    torch.testing.assert_close(g_fo, g, rtol=1e-12, atol=1e-14)


def test_ensemble_gradient_matches_finite_differences_and_differs_from_meta(problem):
    _, g_v, fd = _directional_checks(problem, n_dirs=4, method="ensemble", **KW)
    assert float((g_v - fd).norm() / fd.norm()) < 1e-6
    g = _autograd_grad(problem, method="ensemble", **KW)
    g_meta = _autograd_grad(problem, method="meta_auxiliary", **KW)
    assert float((g - g_meta).norm() / g_meta.norm()) > 1e-2


def test_eq12_is_the_literal_mean_of_2k_terms_with_weighted_aux(problem):
    theta = _leaf_params(problem[0])
    weights = problem[4]
    res = _loss(theta, problem, method="meta_auxiliary", meta_lr=0.0, epsilon=0.0)
    pri = res.per_surrogate_pri
    k = len(NAMES)
    # With meta_lr = 0, θ' = θ and x'_adv = x_adv, so L_aux_p = Σ_{q≠p} w_q L_pri_q / (K−1) (Eq. 10).
    aux = {p: sum(weights[q] * pri[q] for q in NAMES if q != p) / (k - 1) for p in NAMES}
    for p in NAMES:
        assert res.per_surrogate_aux[p] == pytest.approx(aux[p], rel=1e-12)
    expected = (sum(pri.values()) + sum(aux.values())) / (2 * k)
    assert float(res.loss.detach()) == pytest.approx(expected, rel=1e-12)
    ens = _loss(theta, problem, method="ensemble", meta_lr=0.0, epsilon=0.0)
    assert float(ens.loss.detach()) == pytest.approx(sum(ens.per_surrogate_pri.values()) / k, rel=1e-12)
    assert ens.per_surrogate_aux == {}


def test_eq9_is_one_minus_cosine_to_the_target(problem):
    gen, surrogates, x, targets, _ = problem
    theta = _leaf_params(gen)
    res = _loss(theta, problem, method="ensemble", meta_lr=0.0, epsilon=0.0)
    with torch.no_grad():
        x_adv = gen(x)
        for n in NAMES:
            cos = torch.nn.functional.cosine_similarity(surrogates[n](x_adv), targets.get(n).expand(2, -1), dim=1)
            assert res.per_surrogate_pri[n] == pytest.approx(float(1 - cos.mean()), rel=1e-12)


def test_epsilon_clamp_zeroes_the_gradient_below_epsilon(problem):
    theta = _leaf_params(problem[0])
    res = _loss(theta, problem, method="meta_auxiliary", meta_lr=0.5, epsilon=10.0)  # 1 − cos ≤ 2 < ε·...
    assert res.clamped and float(res.loss.detach()) == 10.0 and res.mean < 10.0
    res.loss.backward()
    assert all(float(p.grad.abs().max()) == 0.0 for p in theta.values())
    theta = _leaf_params(problem[0])
    res = _loss(theta, problem, method="meta_auxiliary", meta_lr=0.5, epsilon=res.mean - 1e-3)
    assert not res.clamped
    res.loss.backward()
    assert max(float(p.grad.abs().max()) for p in theta.values()) > 1e-6


def test_target_embeddings_are_computed_once_not_per_step(problem):
    gen, surrogates, x, _, weights = problem
    calls = {n: 0 for n in NAMES}
    for n, fr in surrogates.items():
        fr.register_forward_hook(lambda m, i, o, n=n: calls.__setitem__(n, calls[n] + 1))
    targets = TargetEmbeddings(surrogates, torch.zeros(1, 3, 8, 8, dtype=torch.float64))
    assert calls == {n: 1 for n in NAMES}
    steps, k = 3, len(NAMES)
    theta = _leaf_params(gen)
    for _ in range(steps):
        _loss(theta, (gen, surrogates, x, targets, weights), method="meta_auxiliary", **KW)
    # Per step each FR embeds x_adv once (as primary) and x'_adv K−1 times (as auxiliary); never the target.
    assert calls == {n: 1 + steps * k for n in NAMES}
    for _ in range(steps):
        _loss(theta, (gen, surrogates, x, targets, weights), method="ensemble", **KW)
    assert calls == {n: 1 + steps * k + steps for n in NAMES}


def test_per_sample_targets_select_rows_of_the_cache(problem):
    gen, surrogates, x, _, weights = problem
    x_t = torch.rand(2, 3, 8, 8, dtype=torch.float64) * 2 - 1
    targets = TargetEmbeddings(surrogates, x_t)
    theta = _leaf_params(gen)
    with pytest.raises(ValueError, match="target_index"):
        _loss(theta, (gen, surrogates, x, targets, weights), method="ensemble", **KW)
    idx = torch.tensor([1, 0])
    res = _loss(theta, (gen, surrogates, x, targets, weights), method="ensemble", target_index=idx, **KW)
    with torch.no_grad():
        emb = surrogates["fr_a"](gen(x))
        tgt = surrogates["fr_a"](x_t)[idx]
        want = 1 - torch.nn.functional.cosine_similarity(emb, tgt, dim=1).mean()
    assert res.per_surrogate_pri["fr_a"] == pytest.approx(float(want), rel=1e-12)


def test_bad_inputs_are_refused_before_any_work(problem):
    gen, surrogates, x, targets, weights = problem
    theta = _leaf_params(gen)
    with pytest.raises(ValueError, match="method"):
        _loss(theta, problem, method="pgd", **KW)
    with pytest.raises(ValueError, match="weights"):
        adversarial_loss(lambda p: gen(x), theta, surrogates, targets, {"fr_a": 1.0}, method="meta_auxiliary")
    with pytest.raises(ValueError, match="≥ 2 surrogates"):
        adversarial_loss(lambda p: gen(x), theta, {"fr_a": surrogates["fr_a"]}, targets, weights)
    surrogates["fr_b"].requires_grad_(True)
    with pytest.raises(ValueError, match="requires_grad_"):
        _loss(theta, problem, method="ensemble", **KW)
    surrogates["fr_b"].requires_grad_(False)
    with pytest.raises(ValueError, match="x_target"):
        TargetEmbeddings(surrogates, torch.full((1, 3, 8, 8), 3.0))


def test_make_generate_with_the_real_generator_keeps_bn_stats_and_noise_fixed():
    from erasablemask.models.attgan import AttGANGenerator

    ErasableMaskGenerator = pytest.importorskip(  # written in parallel; skip only while the module is absent
        "erasablemask.models.erasablemask", reason="models/erasablemask.py not committed yet").ErasableMaskGenerator

    torch.manual_seed(0)
    g = AttGANGenerator(enc_dim=4, enc_layers=3, dec_dim=4, dec_layers=3, n_attrs=13, img_size=16)
    model = ErasableMaskGenerator(g, beta=0.5, gamma=0.05).train()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    a_b = (torch.randint(0, 2, (2, 13)).float() - 0.5)

    def noise(img, generator):
        return (img + 0.05 * torch.randn(img.shape, generator=generator)).clamp(-1, 1)

    generate = make_generate(model, x, a_b, noise=noise, noise_seed=7)
    params = dict(model.perturbation_encoder.named_parameters())
    x1 = generate(None)
    stats = {k: b.clone() for k, b in model.perturbation_encoder.named_buffers()}
    x2 = generate({k: p + 0.0 for k, p in params.items()})  # θ' = θ: same image, same noise draw
    torch.testing.assert_close(x2, x1)
    for k, b in model.perturbation_encoder.named_buffers():
        assert torch.equal(b, stats[k]), f"meta-test forward moved E_adv buffer {k}"
    surrogates = {n: tiny_fr(n, act, s) for n, act, s in zip(NAMES[:2], (nn.Tanh(), nn.Softplus()), (1, 2))}
    targets = TargetEmbeddings(surrogates, torch.zeros(1, 3, 16, 16))
    res = adversarial_loss(generate, params, surrogates, targets, {n: math.e ** 0.5 for n in NAMES[:2]},
                           method="meta_auxiliary", meta_lr=0.1, epsilon=0.0, x_adv=x1)
    res.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params.values())
    assert max(float(p.grad.abs().max()) for p in params.values()) > 0
    assert all(p.grad is None for p in model.generator.parameters())  # G stays frozen
    with pytest.raises(ValueError, match="noise_seed"):
        make_generate(model, x, a_b, noise=noise)


def _benchmarks():
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    return importlib.import_module("meta_aux"), importlib.import_module("gpu_check")


def test_benchmark_prediction_and_gpu_hours_formulas():
    bench, gpu = _benchmarks()
    comp = {"g": 1.0, "r": 0.0, "d": 0.0, "f": {"a": 1.0, "b": 1.0}, "bg": 2.0, "br": 0.0, "bd": 0.0,
            "bf": {"a": 2.0, "b": 2.0}, "dd": {"a": 4.0, "b": 4.0}}
    pred = bench.predicted_cost(comp)["measured passes"]
    # ensemble: G 1 + FR 2 + bwd 2 + 4, plus protect(att_a) 1 + 2 (R, D free here) = 12;
    # each primary adds inner bwd 2+2, θ' fwd 1+1, its outer bwd 2+2: 10 → 32; meta adds 4+4 → 40.
    assert pred == {"ensemble": 12.0, "first_order": 32.0, "meta_auxiliary": 40.0}
    assert gpu.gpu_hours(8, 1.0, 2.0, 3.0) == pytest.approx(3500 * (200 + 200 + 150) / 3600)


@pytest.mark.slow
def test_gpu_check_dry_run_times_every_stage(tmp_path):
    _, gpu = _benchmarks()
    assert gpu.main(["--dry-run", "--repeats", "1", "--dtypes", "fp32", "--out", str(tmp_path)]) == 0
    import json

    rows = json.loads((tmp_path / "gpu_check.json").read_text())["rows"]
    assert [(r["dtype"], r["batch"]) for r in rows] == [("fp32", 2)]
    for key in ("stage2_ensemble", "stage2_meta_auxiliary", "stage1", "stage3"):
        assert 0 < rows[0][key]["min_s"] < 120 and rows[0][key]["peak_total_bytes"] > 0


def test_meta_step_size_and_aux_change_are_reported_and_match_a_recomputation(problem):
    gen, surrogates, x, targets, weights = problem
    theta = _leaf_params(gen)
    res = _loss(theta, problem, method="meta_auxiliary", meta_lr=0.5, epsilon=0.0)
    norm = math.sqrt(sum(float(t.detach().square().sum()) for t in theta.values()))

    def fr_loss(name, image):
        emb = surrogates[name](image)
        return float(1 - torch.nn.functional.cosine_similarity(emb, targets.for_batch(name, 2), dim=1).mean())

    for p in NAMES:
        l_pri = 1 - torch.nn.functional.cosine_similarity(surrogates[p](functional_call(gen, theta, (x,))),
                                                         targets.for_batch(p, 2), dim=1).mean()
        grads = torch.autograd.grad(l_pri, list(theta.values()))
        step = 0.5 * math.sqrt(sum(float(g.square().sum()) for g in grads))
        assert res.meta_step_rel[p] == pytest.approx(step / norm, rel=1e-9)
        prime = {k: t - 0.5 * g for (k, t), g in zip(theta.items(), grads)}
        x_prime = functional_call(gen, prime, (x,))
        others = [q for q in NAMES if q != p]
        aux_prime = sum(weights[q] * fr_loss(q, x_prime) for q in others) / 2
        aux_theta = sum(weights[q] * fr_loss(q, functional_call(gen, theta, (x,))) for q in others) / 2
        assert res.aux_change[p] == pytest.approx(aux_prime - aux_theta, rel=1e-9, abs=1e-12)
        assert res.aux_change[p] < 0  # a step down L_pri of one surrogate also helps the others here
    logs = res.meta_logs()
    assert logs["meta/step_rel"] == pytest.approx(sum(res.meta_step_rel.values()) / 3)
    assert set(logs) == {"meta/step_rel", "meta/aux_change"} | {f"meta/{k}/{p}" for k in ("step_rel", "aux_change")
                                                                for p in NAMES}
    still = _loss(_leaf_params(gen), problem, method="first_order", meta_lr=0.0, epsilon=0.0)
    assert all(v == 0 for v in still.meta_step_rel.values()) and max(map(abs, still.aux_change.values())) < 1e-12
    assert _loss(_leaf_params(gen), problem, method="ensemble").meta_logs() == {}
