"""The repository root is the package; `platform` must stay Python's stdlib module."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()

PROBE = (
    "import platform, pathlib, erasablemask, erasablemask.platform.cli.main as cli, erasablemask.models.fr as fr;"
    "print(pathlib.Path(platform.__file__).resolve().parent);"
    "print(pathlib.Path(erasablemask.__file__).resolve().parent);"
    "print(callable(cli.main), callable(fr.build))"
)


def _probe(cwd: Path, env_extra: dict[str, str] | None = None) -> list[str]:
    import os

    env = {**os.environ, **(env_extra or {})}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.parametrize("where", ["repo_root", "platform_dir", "elsewhere"])
def test_stdlib_platform_is_not_shadowed_in_editable_install(where: str, tmp_path: Path) -> None:
    cwd = {"repo_root": REPO, "platform_dir": REPO / "platform", "elsewhere": tmp_path}[where]
    stdlib_dir, package_dir, ok = _probe(cwd)[:3]
    assert Path(stdlib_dir) == STDLIB
    assert Path(package_dir) == REPO  # the editable install maps erasablemask -> repo root
    assert ok == "True"


def test_regular_install_keeps_stdlib_platform_and_all_subpackages(tmp_path: Path) -> None:
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(REPO)],
        capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    installed = target / "erasablemask"
    for sub in ("models", "models/fr", "experiments", "experiments/data", "experiments/curriculum", "experiments/evaluation",
                "experiments/attacks", "experiments/fr_tools", "experiments/config", "platform", "platform/cli",
                "platform/runners", "analysis"):
        assert (installed / sub).is_dir(), f"{sub} missing from the regular install"
    assert not (installed / "platform" / "__init__.py").exists()
    assert (installed / "experiments" / "configs").is_dir()
    # From the repository root, with the regular install first on the path.
    stdlib_dir, package_dir, ok = _probe(REPO, {"PYTHONPATH": str(target)})[:3]
    assert Path(stdlib_dir) == STDLIB
    assert Path(package_dir) == installed.resolve()
    assert ok == "True"
