"""Derive where MTCNN's five landmarks land inside dlib's 150x150 face chip (padding 0.25).

dlib's ``get_face_chip`` aligns with dlib's own five points (eye corners and
nose base, from ``shape_predictor_5_face_landmarks``); our pipeline has
MTCNN's points (eye centres, nose tip, mouth corners). For each labelled
photo of ``../shared/faces`` this runs both, maps the MTCNN points through
the chip transform dlib would use, and prints the median position of each:
the template ``models/fr/alignment.py`` holds as ``DLIB_ALIGNMENT``.

It also checks that the chip transform is reconstructed right: the chip
warped here matches ``dlib.get_face_chip`` to within a few grey levels.

Run: ``.venv/bin/python benchmarks/derive_dlib_template.py [FACES_DIR]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from erasablemask.experiments.data.image_io import load_rgb, pil_to_tensor
from erasablemask.experiments.photos.detect import MTCNNDetector
from erasablemask.models.fr.alignment import similarity_transform, warp_affine

# dlib/image_transforms/interpolation.h, get_face_chip_details for 5-point shapes: the to-points on the unit square.
DLIB_5PT = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)


def dlib_chip_matrix(points: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """Photo -> chip matrix dlib's get_face_chip uses for five dlib points."""
    # -0.5: dlib's chip puts the template on pixel corners; with it our warp matches get_face_chip to ~1 grey
    # level (without it, ~5), checked below.
    to = (padding + DLIB_5PT) / (2 * padding + 1) * size - 0.5
    return similarity_transform(points, to)


def main(root: Path) -> None:
    import dlib
    import face_recognition_models as frm

    torch.set_num_threads(1)
    det = dlib.get_frontal_face_detector()
    pred = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    mtcnn = MTCNNDetector()
    manifest = pd.read_csv(root / "manifest.csv")
    mapped, errors = [], []
    for rel in manifest.loc[manifest["kind"] != "scene", "path"]:
        im = load_rgb(root / rel)
        arr = np.asarray(im)
        rects = det(arr, 1)
        faces = mtcnn.detect(im)
        if len(rects) != 1 or not faces:
            continue
        shape = pred(arr, rects[0])
        pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], dtype=np.float64)
        m = dlib_chip_matrix(pts)
        lm = faces[0].landmarks
        mapped.append(lm @ m[:, :2].T + m[:, 2])
        chip = np.asarray(dlib.get_face_chip(arr, shape, size=150, padding=0.25), dtype=np.float64)
        ours = (warp_affine(pil_to_tensor(im), m, (150, 150)).permute(1, 2, 0).numpy() + 1) * 127.5
        errors.append(np.abs(chip - ours)[10:-10, 10:-10].mean())
    mapped = np.stack(mapped)
    med = np.median(mapped, axis=0)
    print(
        f"{len(mapped)} photos with one dlib face and an MTCNN face; chip reconstruction: mean |dlib - ours| "
        f"{np.mean(errors):.2f} grey levels (median {np.median(errors):.2f})"
    )
    print("template (x, y) in the 150x150 chip, median; IQR in brackets:")
    for k, name in enumerate(("left eye", "right eye", "nose tip", "left mouth", "right mouth")):
        q1, q3 = np.percentile(mapped[:, k], [25, 75], axis=0)
        print(
            f"  {name:12s} ({med[k, 0]:.2f}, {med[k, 1]:.2f})  [x {q1[0]:.1f}-{q3[0]:.1f}, y {q1[1]:.1f}-{q3[1]:.1f}]"
        )
    print("as code:", tuple((round(float(x), 2), round(float(y), 2)) for x, y in med))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "faces")
