"""TAR at FAR 0.1 / 0.01 / 0.001 of the real FR models with and without their makers' alignment.

On ``../shared/faces`` (``pairs.csv``: 377 genuine, 10,354 impostor pairs of
147 photos, 39 identities): each model scores every pair once on the whole
photo resized to its input (the wrapper's default) and once on the face
detected by MTCNN and aligned with the model's template
(:mod:`erasablemask.experiments.photos.fr_align`). The threshold at each FAR
is read off that setting's own impostor scores; the TAR's 95% interval
resamples identities (genuine pairs are clustered by person). Nothing is
saved as a calibration.

Run: ``.venv/bin/python benchmarks/fr_alignment.py [FACES_DIR]``.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import torch

from erasablemask.experiments.evaluation.metrics import identity_bootstrap_interval
from erasablemask.experiments.fr_tools.calibration import read_pairs, roc_auc, score_pairs, thresholds_at_far
from erasablemask.experiments.photos.detect import MTCNNDetector
from erasablemask.experiments.photos.fr_align import AlignedEmbedder
from erasablemask.models.fr.registry import PUBLISHED, build

FARS = (0.1, 0.01, 0.001)


class _Memo:
    """A detector that remembers its answer per image (by pixel digest)."""

    def __init__(self, detector: MTCNNDetector) -> None:
        self.detector, self.name, self.seen = detector, detector.name, {}

    def detect(self, image):
        key = hashlib.sha256(image.tobytes()).hexdigest()
        if key not in self.seen:
            self.seen[key] = self.detector.detect(image)
        return self.seen[key]


def main(root: Path) -> None:
    torch.set_num_threads(2)
    pairs = read_pairs(root / "pairs.csv", root)
    genuine_ids = pairs.loc[pairs["same"] == 1, "a"].map(lambda p: Path(p).parent.name).to_numpy()
    n_gen, n_imp = int((pairs["same"] == 1).sum()), int((pairs["same"] == 0).sum())
    print(f"{root}: {n_gen} genuine / {n_imp} impostor pairs, {len(set(pairs['a']) | set(pairs['b']))} images\n")
    detector = _Memo(MTCNNDetector())  # each photo is detected once for both models
    rows = []
    for name in ("sface", "dlib_resnet"):
        model = build(name, calibration=PUBLISHED).eval()
        for setting in ("whole photo", "aligned"):
            start = time.perf_counter()
            embedder = AlignedEmbedder(model, detector) if setting == "aligned" else None
            gen, imp = score_pairs(model, pairs, root, progress=False, embed=embedder.embed if embedder else None)
            seconds = time.perf_counter() - start
            cells = []
            for r in thresholds_at_far(gen, imp, FARS):
                lo, hi = identity_bootstrap_interval(gen > r["threshold"], genuine_ids)
                cells.append(f"{r['tar']:.3f} [{lo:.3f}, {hi:.3f}]")
            whole = len(embedder.whole) if embedder else "-"
            rows.append([name, setting, f"{roc_auc(gen, imp):.4f}", *cells, str(whole), f"{seconds:.0f}"])
            print(" | ".join(rows[-1]), flush=True)
    head = ["model", "input", "ROC AUC", *[f"TAR@FAR {f:g} [95% CI]" for f in FARS], "no face (whole)", "s"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(
        f"\nTAR over {n_gen} genuine pairs (intervals: identity bootstrap, 2000 resamples); thresholds from "
        f"{n_imp} impostor pairs (FAR 0.001: {int(0.001 * n_imp)} false accepts allowed)."
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "faces")
