"""Every registered FR model, tested the moment it is registered (timm-style).

Weights used: the model's default offline source (``build(name)``); for
``url`` and ``trained_here`` weights, and whenever the default source raises
``WeightsUnavailable``, the random initialisation (``weights="random"``), so
the architecture and wrapper are tested without downloads or training. A
model that cannot be built either way is skipped with the factory's reason.
"""

from __future__ import annotations

import json

import pytest
import torch

from erasablemask.models.fr import registry
from erasablemask.models.fr.registry import (
    RANDOM_INIT,
    FaceRecognizer,
    FRSpec,
    Preprocessing,
    WeightsUnavailable,
    available,
    build,
    get_spec,
    register,
    weights_digest,
)

# Models whose build + batch-1 forward/backward takes ~10 s on 2 busy CPU cores (measured).
SLOW: set[str] = {"arcface_r100", "cosface_r100"}  # IResNet-100; arcface_r50 covers the code fast

_BUILT: dict[str, FaceRecognizer | str] = {}  # name -> model, or the skip reason


def _params() -> list:
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in available()]


def _build(name: str) -> FaceRecognizer:
    """Build once per session (offline); skip with the factory's reason if impossible."""
    if name not in _BUILT:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("ERASABLEMASK_OFFLINE", "1")  # a fast test never downloads
            kind = get_spec(name).weights.kind
            attempts = [RANDOM_INIT] if kind in ("url", "trained_here") else [None, RANDOM_INIT]
            reasons = []
            for weights in attempts:
                try:
                    _BUILT[name] = build(name, weights=weights)
                    break
                except WeightsUnavailable as e:
                    reasons.append(f"weights={weights!r}: {e}")
            else:
                _BUILT[name] = "; ".join(reasons)
    model = _BUILT[name]
    if isinstance(model, str):
        pytest.skip(f"FR model '{name}' cannot be built here: {model}")
    return model


@pytest.mark.parametrize("name", _params())
def test_spec_is_complete_and_consistent(name):
    spec = get_spec(name)
    assert spec.name == name and spec.family
    assert spec.embedding_size > 0
    h, w = spec.preprocessing.size
    assert h > 0 and w > 0 and spec.preprocessing.channel_order in ("RGB", "BGR")
    assert spec.weights.kind in ("none", "path", "url", "package", "trained_here")
    if spec.weights.kind == "url":
        assert spec.weights.sha256 and len(spec.weights.sha256) == 64
    for far, thr in spec.thresholds.items():
        assert 0 < far < 1 and -1 <= thr <= 1, (far, thr)
    if spec.thresholds:
        assert "none" not in spec.threshold_source.split(":")[0], "thresholds need their provenance"


@pytest.mark.parametrize("name", _params())
def test_embeddings_have_spec_shape_unit_norm_and_input_gradients(name):
    model = _build(name)
    spec = model.spec
    assert isinstance(model, FaceRecognizer) and isinstance(model.backbone, torch.nn.Module)
    assert not model.training, "build must return the model in eval mode"
    h, w = spec.preprocessing.size
    gen = torch.Generator().manual_seed(0)
    # A size other than the model's own, so the wrapper's resize is exercised too.
    x = (torch.rand(1, 3, h + 16, w + 8, generator=gen) * 2 - 1).requires_grad_(True)
    emb = model(x)
    assert emb.shape == (1, spec.embedding_size)
    assert torch.isfinite(emb).all()
    assert torch.allclose(emb.norm(dim=1), torch.ones(1), atol=1e-4)
    direction = torch.randn(spec.embedding_size, generator=gen)
    (emb @ direction).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0, "embedding does not depend differentiably on the input"


@pytest.mark.parametrize("name", _params())
def test_input_in_0_255_is_refused(name):
    model = _build(name)
    h, w = model.spec.preprocessing.size
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        model(torch.full((1, 3, h, w), 200.0))


def test_build_records_the_digest_of_the_weights_it_loaded():
    name = "mini_iresnet_arc_s0"  # small; random weights under a fixed seed
    torch.manual_seed(0)
    a = build(name, weights=RANDOM_INIT)
    torch.manual_seed(0)
    b = build(name, weights=RANDOM_INIT)
    assert a.weights_digest == b.weights_digest == weights_digest(a.backbone)
    assert len(a.weights_digest) == 64 and a.calibration_set is None
    with torch.no_grad():
        next(b.backbone.parameters()).view(-1)[0] += 1e-6  # one value changed: other weights
    assert weights_digest(b.backbone) != a.weights_digest


def test_unknown_model_lists_available_names():
    with pytest.raises(KeyError, match="unknown FR model 'no_such_model'; available:"):
        build("no_such_model")


def test_registering_a_name_twice_is_refused(monkeypatch):
    registry._load_all()
    spec = FRSpec(name="twice_fr", family="toy", embedding_size=4, preprocessing=Preprocessing())
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_SPECS", dict(registry._SPECS))
    register(spec)(lambda weights=None: None)
    with pytest.raises(ValueError, match="registered twice"):
        register(spec)(lambda weights=None: None)


def _cli(argv: list[str]) -> int:
    """The real `erasablemask` command line, in-process."""
    from erasablemask.platform.cli.main import main

    return main(argv)


def test_fr_list_json_describes_every_registered_model(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ERASABLEMASK_HOME", str(tmp_path))  # no calibrations from elsewhere
    assert _cli(["fr", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == available()
    for r in rows:
        spec = get_spec(r["name"])
        assert r["embedding_size"] == spec.embedding_size
        assert r["weights"]["kind"] == spec.weights.kind
        assert {float(k): v for k, v in r["thresholds"].items()} == spec.thresholds


def test_fr_list_table_has_a_row_per_model_with_thresholds(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ERASABLEMASK_HOME", str(tmp_path))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_SPECS", dict(registry._SPECS))
    spec = FRSpec(
        name="aaa_listed_fr", family="toy", embedding_size=7, preprocessing=Preprocessing(size=(9, 9)),
        thresholds={0.1: 0.25, 0.01: 0.5}, threshold_source="published: unit test",
    )
    register(spec)(lambda weights=None: None)
    assert _cli(["fr", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["name", "family", "emb", "input"]
    assert len(lines) == 2 + len(available())
    row = next(line for line in lines if line.startswith("aaa_listed_fr"))
    assert "9x9" in row and "0.250000" in row and "0.500000" in row and "published: unit test" in row
