"""Shared fixtures: a real MLflow server on 127.0.0.1, real-face corpus location."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FACES = REPO.parent / "shared" / "faces"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real `mlflow server` (sqlite backend, local artifact root) on 127.0.0.1."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    exe = Path(sys.executable).with_name("mlflow")
    if not exe.exists():
        pytest.skip(f"mlflow executable not found next to {sys.executable}")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [str(exe), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("mlflow server did not start within 90 s")
    yield uri
    os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
    log.close()


@pytest.fixture
def faces_dir() -> Path:
    if not (FACES / "pairs.csv").is_file():
        pytest.skip(f"real-face corpus not found at {FACES} (tests-only data, outside the repo)")
    return FACES


# MLflow's deprecated file store must never appear: a run logged to an experiment created without an
# artifact location falls back to ./mlruns in the working directory. Fail the session if a test did that.
_MLRUNS = REPO / "mlruns"
_MLRUNS_EXISTED = _MLRUNS.exists()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _MLRUNS.exists() and not _MLRUNS_EXISTED:
        print(f"\nerror: a test wrote MLflow artifacts to '{_MLRUNS}' (an experiment created without "
              "artifact_location); give it one under tmp_path")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
