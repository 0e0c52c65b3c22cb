"""Expected failures of the CLI print one line and exit 2; a traceback only with --debug or for a bug (issue 19)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from erasablemask.experiments.data.attributes import ATTRIBUTES
from erasablemask.platform.cli import main as cli

# Runs each case in a child forked from one process that imported the CLI once (a fresh interpreter per
# case costs seconds); the child runs main() as the console script does and prints what Python would.
_DRIVER = r"""
import json, os, sys, traceback
from erasablemask.platform.cli.main import build_parser, main
build_parser()  # import every command group once, before forking
results = []
for argv in json.loads(sys.argv[1]):
    err_path = sys.argv[2] + f"/{len(results)}.err"
    closed_pipe = argv[0] == "CLOSED-PIPE"  # stdout is a pipe whose reader is gone (`| head -1`)
    argv = argv[1:] if closed_pipe else argv
    pid = os.fork()
    if pid == 0:
        fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 2)
        if closed_pipe:
            read, out = os.pipe()
            os.close(read)
        else:
            out = os.open(os.devnull, os.O_WRONLY)
        os.dup2(out, 1)
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    results.append({"argv": argv, "rc": os.waitstatus_to_exitcode(status), "stderr": open(err_path).read()})
print(json.dumps(results))
"""


def _run_cases(cases: list[list[str]], tmp: Path, env: dict | None = None) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(cases), str(tmp)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli_errors")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / "a.png")
    (d / "text.jpg").write_text("hello, not an image\n")
    (d / "corrupt.png").write_bytes((d / "a.png").read_bytes()[:60] + b"\x00" * 40)
    (d / "empty.csv").write_text("")
    (d / "empty.yaml").write_text("")
    (d / "binary.yaml").write_bytes(bytes(range(256)))
    (d / "faces").mkdir()
    (d / "corrupt.png").rename(d / "faces" / "corrupt.png")
    pd.DataFrame([{"path": "corrupt.png", **{a: 0 for a in ATTRIBUTES}}]).to_csv(d / "faces.csv", index=False)
    return d


def test_expected_failures_print_one_line_and_exit_2(inputs: Path) -> None:
    d = str(inputs)
    cases = {
        "empty config": (["config", "show", f"{d}/empty.yaml"], "empty.yaml' is empty"),
        "binary config": (["config", "show", f"{d}/binary.yaml"], "binary.yaml' is not UTF-8 text"),
        "infinite weight": (
            ["config", "show", "miniworld_demo", "--set", "stage2.lambda_adv=.inf"],
            "stage2.lambda_adv: Input should be a finite number",
        ),
        "unknown surrogate": (
            ["config", "show", "miniworld_demo", "--set", "attack.surrogates=[nope]"],
            "unknown FR model(s) ['nope']",
        ),
        "device banana": (
            ["fr", "verify", "mini_irse_cos_s0", f"{d}/a.png", f"{d}/a.png", "--device", "banana"],
            "--device banana: 'banana' is not a torch device",
        ),
        "weights not a state dict": (
            ["fr", "verify", "ir152", f"{d}/a.png", f"{d}/a.png", "--weights", f"{d}/text.jpg"],
            "text.jpg",
        ),
        "mini model without weights": (
            ["fr", "verify", "mini_irse_cos_s0", f"{d}/a.png", f"{d}/a.png"],
            "pass --weights FILE",
        ),
        "empty pairs file": (
            ["fr", "calibrate", "mini_irse_cos_s0", "--pairs", f"{d}/empty.csv", "--images", d],
            "empty.csv' is empty",
        ),
        "negative threads (fr)": (["fr", "train-mini", "--threads", "-1"], "--threads -1: give a number"),
        "negative threads (train)": (
            ["train", "miniworld_demo", "--in-process", "--threads", "-1"],
            "--threads -1: give a number",
        ),
        # a summary line, then one line per file that failed (here one)
        "corrupt image": (
            ["data", "check", "folder", f"{d}/faces", f"{d}/faces.csv", "--decode"],
            "1 of 1 images failed to load",
            "corrupt.png' cannot be decoded",
        ),
        "world too large": (["data", "miniworld", "--out", f"{d}/world", "--size", "100000", "--quiet"], "needs about"),
    }
    if not torch.cuda.is_available():
        cases["device cuda"] = (
            ["fr", "verify", "mini_irse_cos_s0", f"{d}/a.png", f"{d}/a.png", "--device", "cuda"],
            "no usable CUDA GPU",
        )
    pipe = ["CLOSED-PIPE", "config", "show", "miniworld_demo"]
    results = _run_cases([argv for argv, *_ in cases.values()] + [pipe], inputs)
    for (name, (argv, *expected)), r in zip(cases.items(), results):
        lines = r["stderr"].strip().splitlines()
        assert "Traceback" not in r["stderr"], f"{name}: {r['stderr']}"
        assert r["rc"] == 2, f"{name}: rc {r['rc']}: {r['stderr']}"
        assert len(lines) == len(expected) and lines[0].startswith(f"erasablemask {argv[0]}: error: "), name
        assert all(e in line for e, line in zip(expected, lines)), f"{name}: {lines}"
    assert not (inputs / "world").exists()  # refused before a folder was made
    # `config show X | head -1`: a closed pipe ends quietly, with SIGPIPE's status
    assert "Traceback" not in results[-1]["stderr"] and "BrokenPipe" not in results[-1]["stderr"], results[-1]
    assert results[-1]["rc"] == 141


def _raising(exc: BaseException):
    def handler(args):
        raise exc

    return handler


@pytest.mark.parametrize(
    ("exc", "code", "line"),
    [
        (
            __import__("erasablemask.platform.tracking", fromlist=["x"]).TrackingUnavailable(
                "cannot reach the MLflow tracking server 'http://127.0.0.1:9'"
            ),
            2,
            "erasablemask config: error: cannot reach the MLflow tracking server 'http://127.0.0.1:9'",
        ),
        (KeyError("no run 'x'; list them with ..."), 2, "erasablemask config: error: no run 'x'; list them with ..."),
        (PermissionError(13, "Permission denied", "/root/x"), 2, "Permission denied: '/root/x'"),
        (KeyboardInterrupt(), 130, "erasablemask config: interrupted"),
    ],
)
def test_expected_failures_and_ctrl_c_are_one_line(
    monkeypatch, capsys, exc: BaseException, code: int, line: str
) -> None:
    monkeypatch.setattr("erasablemask.platform.cli.config._show", _raising(exc))
    assert cli.main(["config", "show", "x"]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and line in err, err


def test_a_bug_keeps_its_traceback_and_debug_shows_expected_ones(monkeypatch) -> None:
    monkeypatch.setattr("erasablemask.platform.cli.config._show", _raising(ZeroDivisionError("a bug")))
    with pytest.raises(ZeroDivisionError):
        cli.main(["config", "show", "x"])
    monkeypatch.setattr("erasablemask.platform.cli.config._show", _raising(ValueError("bad input")))
    with pytest.raises(ValueError, match="bad input"):
        cli.main(["--debug", "config", "show", "x"])


def test_unknown_tracking_schemes_are_refused_before_any_work() -> None:
    from erasablemask.platform.tracking import TrackingUnavailable, check_tracking_uri

    with pytest.raises(TrackingUnavailable, match=r"tracking URI 'foo://bar' has the scheme 'foo'.*sqlite:///"):
        check_tracking_uri("foo://bar")
    check_tracking_uri("sqlite:////tmp/x/mlflow.db")  # accepted without touching it
    check_tracking_uri("postgresql+psycopg2://u@h/db")
