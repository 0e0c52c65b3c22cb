"""FR models in Ray actors: the same embeddings and the same first- and second-order gradients as local ones.

Float64 tiny random FR nets (smooth activations, so second derivatives are
non-zero and central differences accurate) wrapped in the project's
FaceRecognizer; a local Ray instance for the module (actors only).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from functools import partial

import _tiny_nets
import pytest
import torch
from _tiny_nets import TinyGenerator, tiny_fr
from torch import nn
from torch.func import functional_call

from erasablemask.experiments.attacks.meta_auxiliary import TargetEmbeddings, adversarial_loss
from erasablemask.experiments.config.schema import RemoteFRConfig
from erasablemask.models.fr.registry import FaceRecognizer

ray = pytest.importorskip("ray")

NAMES = ("fr_a", "fr_b", "fr_c")
ACTS = {"fr_a": nn.Tanh, "fr_b": nn.Softplus, "fr_c": nn.Sigmoid}


def remote_test_fr(name: str, seed: int) -> FaceRecognizer:
    """The float64 tiny FR net ``name`` (its own smooth activation), with a threshold at FAR 0.01."""
    return tiny_fr(name, ACTS[name](), seed, {0.01: 0.25}).double()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max() / b.detach().abs().max())


@pytest.fixture(scope="module")
def group():
    """Three actors (0.5 CPU each) serving fr_a..fr_c; Ray started and stopped by this module."""
    import ray.cloudpickle

    from erasablemask.platform.fr_actors import start_fr_actors

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the factories live in this test file
    ray.cloudpickle.register_pickle_by_value(_tiny_nets)  # and in tests/_tiny_nets.py
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    settings = RemoteFRConfig(models=list(NAMES), cpus_per_actor=0.5, max_restarts=2)
    g = start_fr_actors({n: partial(remote_test_fr, n, i + 1) for i, n in enumerate(NAMES)}, settings)
    yield g
    g.shutdown()
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def local():
    return {n: remote_test_fr(n, i + 1) for i, n in enumerate(NAMES)}


def _images(seed: int, n: int = 2, size: int = 8) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 1.6 - 0.8


def test_remote_embeddings_and_input_gradients_equal_the_local_model(group, local) -> None:
    remote = group.proxy("fr_b")
    assert remote.spec == local["fr_b"].spec and remote.threshold(0.01) == 0.25
    assert not list(remote.parameters()), "the proxy must hold no parameters (nothing to train or freeze)"
    x = _images(0).requires_grad_(True)
    target = torch.randn(2, 6, dtype=torch.float64)
    emb_r, emb_l = remote(x), local["fr_b"](x)
    assert emb_r.dtype == torch.float64 and _rel(emb_r, emb_l) < 1e-14
    loss_r = (1 - torch.cosine_similarity(emb_r, target)).sum()
    loss_l = (1 - torch.cosine_similarity(emb_l, target)).sum()
    (g_r,), (g_l,) = torch.autograd.grad(loss_r, x), torch.autograd.grad(loss_l, x)
    assert g_l.abs().max() > 1e-3
    assert _rel(g_r, g_l) < 1e-12, f"first-order input gradient: max rel diff {_rel(g_r, g_l):.2e}"


def test_double_backward_through_a_remote_model_equals_local_hessian_vector_products(group, local) -> None:
    x0, target = _images(1), torch.randn(2, 6, dtype=torch.float64)
    w = torch.randn_like(x0)

    def hvp(fr: nn.Module) -> torch.Tensor:
        x = x0.clone().requires_grad_(True)
        loss = (1 - torch.cosine_similarity(fr(x), target)).sum()
        (g,) = torch.autograd.grad(loss, x, create_graph=True)
        (h,) = torch.autograd.grad((g * w).sum(), x)
        return h

    h_r, h_l = hvp(group.proxy("fr_a")), hvp(local["fr_a"])
    assert h_l.abs().max() > 1e-3, "the second-order term is zero: the test would not see it missing"
    assert _rel(h_r, h_l) < 1e-12, f"second-order (HVP): max rel diff {_rel(h_r, h_l):.2e}"


def test_a_third_derivative_is_refused_rather_than_wrong(group) -> None:
    x = _images(2).requires_grad_(True)
    (g,) = torch.autograd.grad(group.proxy("fr_a")(x).sum(), x, create_graph=True)
    (h,) = torch.autograd.grad((g ** 2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="third derivative through the remote FR model 'fr_a'"):
        torch.autograd.grad(h.sum(), x)


def _attack(surrogates, theta, gen, x, targets, method: str) -> torch.Tensor:
    def generate(p):
        return functional_call(gen, theta if p is None else p, (x,))

    return adversarial_loss(generate, theta, surrogates, targets, {"fr_a": 1.2, "fr_b": 0.9, "fr_c": 1.5},
                            method=method, meta_lr=2.0, epsilon=0.0).loss


@pytest.mark.parametrize("method", ["meta_auxiliary", "ensemble"])
def test_attack_gradient_wrt_e_adv_through_remote_surrogates_equals_local_and_finite_differences(
    group, local, method: str
) -> None:
    torch.manual_seed(0)
    gen = TinyGenerator().double()
    x, x_target = _images(3), _images(4, n=1)
    remote = {n: group.proxy(n) for n in NAMES}
    targets_r, targets_l = TargetEmbeddings(remote, x_target), TargetEmbeddings(local, x_target)
    base = {k: p.detach().clone() for k, p in gen.named_parameters()}

    def grad(surrogates, targets) -> torch.Tensor:
        theta = {k: v.clone().requires_grad_(True) for k, v in base.items()}
        loss = _attack(surrogates, theta, gen, x, targets, method)
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(theta.values()))])

    g_r, g_l = grad(remote, targets_r), grad(local, targets_l)
    assert _rel(g_r, g_l) < 1e-12, f"{method} dL_adv/dθ_E: max rel diff remote vs local {_rel(g_r, g_l):.2e}"

    # Central differences of the remote loss along random directions of θ_E (the whole step re-run each time).
    flat = torch.cat([v.flatten() for v in base.values()])

    def at(vec: torch.Tensor) -> float:
        theta, i = {}, 0
        for k, v in base.items():
            theta[k] = vec[i:i + v.numel()].view_as(v).clone().requires_grad_(True)
            i += v.numel()
        return float(_attack(remote, theta, gen, x, targets_r, method).detach())

    dirs = torch.randn(4, flat.numel(), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    h = 1e-5
    fd = torch.tensor([(at(flat + h * v) - at(flat - h * v)) / (2 * h) for v in dirs], dtype=torch.float64)
    rel = float((dirs @ g_r - fd).norm() / fd.norm())
    assert rel < 1e-6, f"{method}: remote gradient vs central differences: relative error {rel:.2e}"


def test_meta_auxiliary_without_the_second_order_term_differs_so_the_comparison_can_fail(group) -> None:
    torch.manual_seed(0)
    gen = TinyGenerator().double()
    x, x_target = _images(3), _images(4, n=1)
    remote = {n: group.proxy(n) for n in NAMES}
    targets = TargetEmbeddings(remote, x_target)
    grads = {}
    for method in ("meta_auxiliary", "first_order"):
        theta = {k: p.detach().clone().requires_grad_(True) for k, p in gen.named_parameters()}
        loss = _attack(remote, theta, gen, x, targets, method)
        grads[method] = torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(theta.values()))])
    assert _rel(grads["first_order"], grads["meta_auxiliary"]) > 1e-6


def test_a_killed_actor_is_restarted_and_the_next_call_returns_the_same_embedding(group) -> None:
    proxy = group.proxy("fr_c")
    x = _images(6)
    before = proxy(x)
    pid = group.pids()["fr_c"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 30
    while time.time() < deadline:  # the process is really gone before the next call
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"actor process {pid} survived SIGKILL")
    after = proxy(x)  # in flight while Ray notices the death: retried on the restarted actor
    assert torch.equal(after, before)
    assert group.pids()["fr_c"] != pid, "the actor was not restarted in a new process"


def test_build_fr_models_takes_the_remote_models_from_the_provider_and_builds_the_rest(group, tmp_path) -> None:
    from _curriculum_tiny import tiny_config

    from erasablemask.experiments.fr_tools.zoo import build_fr_models, fr_model_provider

    cfg = tiny_config()
    with fr_model_provider(lambda name, device: group.proxy("fr_a") if name == "mini_iresnet_arc_s0" else None):
        with pytest.raises(ValueError, match="mini-world models"):  # the other model is still built locally
            build_fr_models(cfg.model_copy(update={"data": cfg.data.model_copy(update={"kind": "folder"})}),
                            ["mini_iresnet_arc_s0", "mini_incept_arc_s0"])
        models = build_fr_models(cfg, ["mini_iresnet_arc_s0"])
    assert models["mini_iresnet_arc_s0"] is group.proxy("fr_a")
    assert not models["mini_iresnet_arc_s0"].training
    stats = group.proxy("fr_a").stats
    assert stats.round_trips > 0 and stats.bytes_sent > 0 and stats.bytes_received > 0
