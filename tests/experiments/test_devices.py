"""compute.device and compute.precision: the compute path follows the device it is given; bf16 stays close to fp32.

There is no second device on the CPU test machines, so "follows the device" is checked two ways that a
hard-coded CPU would fail: a scan of the compute path's source for device literals (each legitimate one
carries a ``# device-ok: reason`` comment), and the stage trainers built on PyTorch's ``meta`` device (every
parameter must land there). benchmarks/gpu_check.sh runs the real pipeline on a GPU.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from _curriculum_tiny import tiny_config, tiny_zoo

from erasablemask.experiments.curriculum.context import StageContext, in_process_context
from erasablemask.experiments.curriculum.loop import run_stage
from erasablemask.experiments.devices import MixedPrecision, resolve_device

ROOT = Path(__file__).resolve().parents[2]
COMPUTE_PATH = ["experiments", "platform"]
ALLOWED_FILES = {"experiments/devices.py"}  # the one place that names devices
MARKER = "# device-ok:"


def _is_device_literal(node: ast.AST) -> bool:
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return False
    v = node.value
    return v in ("cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit())


def hard_coded_devices(source: str) -> list[int]:
    """Lines that choose a device with a literal (``torch.device("cpu")``, ``device="cpu"``, ``.to("cuda")``,
    a ``device="cpu"`` parameter default), unless marked ``# device-ok: reason``."""
    lines = source.splitlines()
    literals: list[ast.AST] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("device", "to"):
                literals += node.args
            literals += [k.value for k in node.keywords if k.arg in ("device", "map_location")]
            if name == "add_argument" and any("device" in str(getattr(a, "value", "")) for a in node.args):
                literals += [k.value for k in node.keywords if k.arg == "default"]  # a CLI's --device default
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            positional = a.posonlyargs + a.args
            pairs = list(zip(positional[len(positional) - len(a.defaults):], a.defaults))
            pairs += [(arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
            literals += [d for arg, d in pairs if "device" in arg.arg]
    found = set()
    for lit in filter(_is_device_literal, literals):
        span = lines[lit.lineno - 1 : (lit.end_lineno or lit.lineno)]
        if not any(MARKER in line for line in span):
            found.add(lit.lineno)
    return sorted(found)


def test_the_scan_finds_a_hard_coded_device_and_accepts_a_marked_one():
    assert hard_coded_devices('def f(device="cpu"):\n    return torch.zeros(1, device="cuda:0")\n') == [1, 2]
    assert hard_coded_devices('g = torch.Generator(device="cpu")  # device-ok: CPU RNG for determinism\n') == []
    assert hard_coded_devices('doc = "runs on cpu"\nok = x.device.type == "cuda"\nkeys = {"cuda": 1}\n') == []
    assert hard_coded_devices('m.to("cpu")\nd = torch.device("cuda")\np.add_argument("--device", default="cpu")\n'
                              ) == [1, 2, 3]


def test_no_device_is_hard_coded_in_the_compute_path():
    offenders = []
    for folder in COMPUTE_PATH:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in ALLOWED_FILES or "/configs/" in rel:
                continue
            offenders += [f"{rel}:{n}" for n in hard_coded_devices(path.read_text())]
    assert not offenders, (
        f"hard-coded devices in the compute path: {offenders}; take the device from compute.device "
        f"(experiments/devices.resolve_device) or the runner, or mark a legitimate one '{MARKER} reason'"
    )


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory):
    with tiny_zoo(tmp_path_factory.getbasetemp() / "erasablemask_home"):
        yield


@pytest.fixture(scope="module")
def stage1_final(zoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("stage1")
    return run_stage(tiny_config(), 1, in_process_context(run, 1, progress=False, max_steps_per_epoch=1)
                     ).final_checkpoint


def _devices(modules: dict[str, torch.nn.Module]) -> set[str]:
    return {t.device.type for m in modules.values() for t in [*m.parameters(), *m.buffers()]}


def test_stage1_trainer_and_fr_models_go_to_the_device_they_are_given(zoo):
    """On ``meta``: a module left on (or moved to) the CPU anywhere in construction fails this.

    Stages 2-3 load stage 1's weights, which a meta tensor cannot hold; their device comes from the same
    ``ctx.device`` and ``build_fr_models(..., device)`` (the scan above and benchmarks/gpu_check.sh cover them).
    """
    from erasablemask.experiments.curriculum.stage1 import Stage1Trainer
    from erasablemask.experiments.fr_tools.zoo import build_fr_models

    cfg = tiny_config()
    meta = StageContext(progress=False, device=torch.device("meta"))
    assert _devices(Stage1Trainer(cfg, meta).modules) == {"meta"}
    names = list(cfg.attack.surrogates) + list(cfg.attack.black_box)
    assert _devices(build_fr_models(cfg, names, torch.device("meta"), progress=False)) == {"meta"}


def test_bf16_stage2_step_gives_losses_close_to_fp32(stage1_final: Path, tmp_path: Path):
    losses = {}
    for precision in ("fp32", "bf16"):
        cfg = tiny_config("stage2.epochs=1", f"compute.precision={precision}")
        result = run_stage(cfg, 2, in_process_context(tmp_path / precision, 2, progress=False,
                                                      max_steps_per_epoch=1), inputs=stage1_final)
        losses[precision] = {k: v for k, v in result.history[-1].items() if k.startswith("train/")}
    assert set(losses["fp32"]) == set(losses["bf16"])
    for key in ("train/L_adv", "train/L_era", "train/L_perb", "train/L_total"):
        fp32, bf16 = losses["fp32"][key], losses["bf16"][key]
        # bf16 keeps 8 mantissa bits (rel. step 2^-8 = 0.4 %); errors accumulate over the nets' layers.
        assert bf16 == pytest.approx(fp32, rel=0.05, abs=1e-3), key
    assert losses["fp32"]["train/L_total"] != losses["bf16"]["train/L_total"]  # autocast did run in bf16


def test_fp16_on_a_cpu_is_refused_naming_the_fix():
    with pytest.raises(ValueError, match="compute.precision=fp16 needs a CUDA GPU"):
        MixedPrecision("fp16", "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="compute.device=cuda: this machine has no usable CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto", announce=False) == torch.device("cpu")


def test_bf16_autocast_step_updates_parameters_in_fp32():
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mp = MixedPrecision("bf16", "cpu")
    before = model.weight.detach().clone()
    with mp.autocast():
        out = model(torch.randn(3, 4))
        assert out.dtype == torch.bfloat16
    mp.step(out.float().pow(2).mean(), opt)
    assert model.weight.dtype == torch.float32 and not torch.equal(model.weight, before)
