#!/usr/bin/env bash
# Wheels the lent GPU machine lacks (its image has torch, numpy, pandas, pyarrow, safetensors, pyyaml, tqdm,
# but not pydantic or kornia), for its Python 3.12 on x86-64, into .whl/ — run here, where PyPI is reachable,
# then call the device with carry [".whl"]; benchmarks/gpu_check.sh installs them to /tmp/site first.
# Versions: the ones pyproject.toml and this machine's .venv use.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
  -d .whl pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  kornia==0.9.0 kornia-rs==0.2.0
ls -la .whl
