"""Real photos: geometry of crop and paste-back, metadata, refusals, and protect/erase round trips (``experiments/photos``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _photo_run import make_photo_run
from PIL import Image

from erasablemask.experiments.data.image_io import pil_to_tensor
from erasablemask.experiments.photos.detect import DetectedFace, MTCNNDetector
from erasablemask.experiments.photos.faces import (
    PhotoError,
    face_crop,
    feather_mask,
    find_faces,
    paste_back,
    read_photo,
)
from erasablemask.models.fr.alignment import (
    SFACE_ALIGNMENT,
    ffhq_crop_transform,
    similarity_transform,
    warp_affine,
)

PHOTO = "images/angelina_jolie/deepface_1.jpg"  # 379x512 JPEG with an ICC profile, one face
TWO = "scenes/facerec_two_people.jpg"


@pytest.fixture(scope="module")
def detector() -> MTCNNDetector:
    return MTCNNDetector()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_photo_run(tmp_path_factory.mktemp("photo_run") / "run")


# ---------------------------------------------------------------- geometry (no photos needed)


def test_similarity_transform_recovers_a_known_similarity_and_the_warp_follows_opencvs_pixel_convention():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    m = similarity_transform(src, src @ rot.T + shift)
    assert np.allclose(m[:, :2], rot) and np.allclose(m[:, 2], shift)
    # An integer shift moves pixels exactly; a 2x reduction of a 2x2-constant image keeps its blocks.
    img = torch.rand(3, 20, 30) * 2 - 1
    out = warp_affine(img, np.array([[1.0, 0, -3], [0, 1.0, -2]]), (10, 12))
    assert torch.allclose(out, img[:, 2:12, 3:15], atol=1e-5)
    blocks = torch.rand(3, 8, 8).repeat_interleave(2, 1).repeat_interleave(2, 2) * 2 - 1
    half = warp_affine(blocks, np.array([[0.5, 0, -0.25], [0, 0.5, -0.25]]), (8, 8))
    assert torch.allclose(half, blocks[:, ::2, ::2], atol=1e-5)


def test_paste_back_of_the_unprocessed_crop_gives_the_photo_back_and_touches_nothing_outside_the_mask():
    rng = np.random.default_rng(1)
    # A smooth synthetic photo (bicubic resampling of noise would not round-trip), landmarks of a face in it.
    base = torch.from_numpy(rng.uniform(0, 255, (3, 12, 16))).float()[None]
    pixels = torch.nn.functional.interpolate(base, size=(240, 320), mode="bilinear", align_corners=False)[0]
    pixels = pixels.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    lm = np.array([[140.0, 100.0], [180.0, 100.0], [160.0, 125.0], [145.0, 145.0], [175.0, 145.0]])
    face = DetectedFace((120, 70, 200, 170), 1.0, lm)
    crop, m = face_crop(pil_to_tensor(Image.fromarray(pixels)), face, 128)
    same = paste_back(pixels, crop, m)
    assert np.abs(same.astype(int) - pixels.astype(int)).max() <= 3
    # A crop changed everywhere changes only pixels inside the crop's square, and its centre completely.
    black = paste_back(pixels, torch.full_like(crop, -1.0), m)
    changed = np.argwhere((black != pixels).any(-1))
    side = 4 * 40  # the FFHQ square: max(4 x eye distance, 3.6 x eye-to-mouth) = 160 px here
    centre = lm[:2].mean(0) + 0.1 * (lm[3:].mean(0) - lm[:2].mean(0))
    assert np.all(np.abs(changed[:, ::-1] - centre) <= side / 2 + 1)
    assert (black[115:135, 150:170] == 0).all()
    assert (black[:, :70] == pixels[:, :70]).all() and (black[:5] == pixels[:5]).all()
    mask = feather_mask(64)
    assert mask[32, 32] == 1 and mask[0, 0] == 0 and mask[0, 32] < 0.05 and 0 < mask[32, 2] < 1


def test_the_sface_template_matches_opencvs_aligncrop(faces_dir: Path, detector: MTCNNDetector):
    import cv2

    photo = read_photo(faces_dir / PHOTO)
    face = detector.detect(photo.image)[0]
    ours = warp_affine(photo.tensor(), SFACE_ALIGNMENT.transform(face.landmarks), (112, 112))
    ours = ((ours + 1) * 127.5).permute(1, 2, 0).numpy()
    bgr = np.ascontiguousarray(np.asarray(photo.image)[..., ::-1])
    box = np.array(
        [*face.box[:2], face.box[2] - face.box[0], face.box[3] - face.box[1], *face.landmarks.ravel(), face.score],
        dtype=np.float32,
    )
    from erasablemask.models.fr.real_models import sface_onnx_path

    rec = cv2.FaceRecognizerSF.create(str(sface_onnx_path()), "")
    theirs = rec.alignCrop(bgr, box)[..., ::-1].astype(np.float64)
    assert np.abs(ours - theirs).mean() < 2.0  # grey levels; both bilinear, same template and transform


# ---------------------------------------------------------------- refusals


def test_refusals_name_the_photo_and_the_fix(tmp_path: Path, faces_dir: Path, detector: MTCNNDetector):
    blank = tmp_path / "wall.png"
    Image.new("RGB", (200, 150), (180, 170, 160)).save(blank)
    with pytest.raises(PhotoError, match=r"no face found in 'wall.png'.*visible, frontal"):
        find_faces(read_photo(blank), detector, model_size=64)
    two = read_photo(faces_dir / TWO)
    with pytest.raises(PhotoError, match=r"shows 2 faces.*--all-faces.*--face N"):
        find_faces(two, detector, model_size=64)
    both = find_faces(two, detector, model_size=64, all_faces=True)
    assert len(both) == 2 and both[0].box[0] < both[1].box[0]
    assert find_faces(two, detector, model_size=64, face_index=1)[0].box == both[1].box
    with pytest.raises(PhotoError, match=r"--face 2 is out of range \(use 0..1"):
        find_faces(two, detector, model_size=64, face_index=2)
    # A 40-px face is detected but too small for a 256 model (needs 64 px).
    small = Image.open(faces_dir / PHOTO).convert("RGB").resize((95, 128))
    canvas = Image.new("RGB", (400, 300), (120, 120, 120))
    canvas.paste(small, (150, 80))
    canvas.save(tmp_path / "far.png")
    with pytest.raises(PhotoError, match=r"too small for the 256 px model \(needs >= 64 px\); use a larger"):
        find_faces(read_photo(tmp_path / "far.png"), detector, model_size=256)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(PhotoError, match=r"photo '.*broken.jpg' cannot be read.*re-export it as JPEG or PNG"):
        read_photo(tmp_path / "broken.jpg")


# ---------------------------------------------------------------- round trips through the CLI


def _rotated_with_exif(src: Path, out: Path) -> Image.Image:
    """Save ``src`` rotated 90 degrees with EXIF Orientation=6 (viewers turn it back) and a GPS tag; return the upright."""
    upright = Image.open(src).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    exif[0x010F] = "TestCam"  # Make
    exif.get_ifd(0x8825)[2] = (52.0, 31.0, 12.0)  # GPSLatitude
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # 90 CCW: Orientation 6 turns it back
    stored.save(
        out, format="JPEG", quality=92, exif=exif.tobytes(), icc_profile=Image.open(src).info.get("icc_profile")
    )
    return upright


def test_protect_then_erase_a_photo_round_trip(tmp_path: Path, faces_dir: Path, run: Path, capsys):
    from erasablemask.platform.cli.main import main

    photo = tmp_path / "in" / "me.jpg"
    photo.parent.mkdir()
    upright = _rotated_with_exif(faces_dir / PHOTO, photo)
    png = tmp_path / "in" / "me2.png"
    upright.save(png)
    assert Image.open(photo).getexif()[0x0112] == 6

    rc = main(
        [
            "protect",
            str(photo.parent),
            "--run",
            str(run),
            "--out",
            str(tmp_path / "out"),
            "--check",
            "--quiet",
            "--threads",
            "1",
        ]
    )
    assert rc == 0
    out_jpg, out_png = tmp_path / "out" / "me.jpg", tmp_path / "out" / "me2.png"
    text = capsys.readouterr().out
    assert "2 photo(s) written, 0 skipped" in text and f"-> {out_jpg}" in text
    with Image.open(out_jpg) as im:
        assert im.format == "JPEG" and im.size == upright.size  # upright: the orientation was applied
        assert len(im.getexif()) == 0 and "exif" not in im.info  # no EXIF, so no GPS, maker or orientation
        assert im.info.get("icc_profile") == Image.open(faces_dir / PHOTO).info.get("icc_profile")
        from PIL import JpegImagePlugin

        assert JpegImagePlugin.get_sampling(im) == JpegImagePlugin.get_sampling(Image.open(photo))
        assert im.quantization == Image.open(photo).quantization  # the input's JPEG quality
        got = np.asarray(im.convert("RGB"), dtype=int)
    # Lossless PNG: outside the face's square every byte is the original; the face itself changed.
    orig, prot = np.asarray(upright, dtype=int), np.asarray(Image.open(out_png).convert("RGB"), dtype=int)
    changed = (orig != prot).any(-1)
    ys, xs = np.nonzero(changed)
    face = MTCNNDetector().detect(upright)[0]
    (x0, y0, x1, y1), side = face.box, 2.2 * face.size
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    assert changed.sum() > 0.5 * (x1 - x0) * (y1 - y0)
    assert np.all(np.abs(xs - cx) < side) and np.all(np.abs(ys - cy) < side)
    assert changed[int(cy), int(cx)] and not changed[-20:].any()
    # JPEG (rotated source): the same face region changed, the rest only by re-encoding noise.
    assert np.abs(got - orig)[~changed].mean() < 2.0 and np.abs(got - orig)[changed].mean() > 10

    # Erase (the restorer). The tiny run's networks are untrained, so its protected face is no face any more
    # and a detector finds nothing there: that is the refusal the TA gets. On a photo with a face the
    # restorer's output is pasted into the same region, and --verify checks it against a reference photo.
    rc = main(["erase", str(out_png), "--run", str(run), "--out", str(tmp_path / "erased"), "--check", "--quiet"])
    assert rc == 1 and "no face found in 'me2.png'" in capsys.readouterr().err
    rc = main(
        [
            "erase",
            str(png),
            "--run",
            str(run),
            "--out",
            str(tmp_path / "erased"),
            "--check",
            "dlib_resnet",
            "--verify",
            str(faces_dir / "images/angelina_jolie/deepface_2.jpg"),
            "--quiet",
            "--threads",
            "1",
        ]
    )
    assert rc == 0
    erased = np.asarray(Image.open(tmp_path / "erased" / "me2.png").convert("RGB"), dtype=int)
    restored = (erased != orig).any(-1)
    ys, xs = np.nonzero(restored)
    assert restored.sum() > 0.5 * (x1 - x0) * (y1 - y0) and restored[int(cy), int(cx)]
    assert np.all(np.abs(xs - cx) < side) and np.all(np.abs(ys - cy) < side)
    text = capsys.readouterr().out
    assert "dlib_resnet, aligned: vs the reference [deepface_2.jpg]: cosine" in text and "1 photo(s) written" in text


def test_a_folder_with_a_bad_photo_skips_it_and_says_why(tmp_path: Path, faces_dir: Path, run: Path, capsys):
    from erasablemask.platform.cli.main import main

    folder = tmp_path / "album"
    folder.mkdir()
    Image.open(faces_dir / PHOTO).save(folder / "a.png")
    (folder / "b.jpg").write_bytes(b"garbage")
    Image.open(faces_dir / TWO).save(folder / "c.jpg")
    rc = main(["protect", str(folder), "--run", str(run), "--out", str(tmp_path / "out"), "--check", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "1 photo(s) written, 2 skipped" in captured.out
    assert "skipped" in captured.err and "b.jpg' cannot be read" in captured.err and "shows 2 faces" in captured.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]
    rc = main(
        [
            "protect",
            str(folder / "c.jpg"),
            "--run",
            str(run),
            "--out",
            str(tmp_path / "out"),
            "--check",
            "--all-faces",
            "--quiet",
        ]
    )
    assert rc == 0 and "(2 face(s) protected)" in capsys.readouterr().out
    assert main(["protect", str(tmp_path / "nope.jpg"), "--run", str(run), "--out", str(tmp_path / "o")]) == 2
    assert "'" + str(tmp_path / "nope.jpg") + "' does not exist" in capsys.readouterr().err


def test_attribute_edits_are_checked_and_applied_to_the_discriminators_estimate(
    tmp_path: Path, faces_dir: Path, run: Path
):
    from erasablemask.experiments.config.loading import load_config
    from erasablemask.experiments.evaluation.erasablemask_protection import ErasableMaskProtection
    from erasablemask.experiments.photos.protect import PhotoJob, parse_attribute_edits

    assert parse_attribute_edits(["Eyeglasses=1", "Young=0"]) == {"Eyeglasses": 1, "Young": 0}
    with pytest.raises(ValueError, match="not one of the 13"):
        parse_attribute_edits(["Glasses=1"])
    with pytest.raises(ValueError, match="must be NAME=0 or NAME=1"):
        parse_attribute_edits(["Eyeglasses"])
    cfg = load_config(run / "config.yaml")
    protection = ErasableMaskProtection.from_checkpoint(cfg, run)
    job = PhotoJob(protection, MTCNNDetector(), 64, attribute_judge=lambda x: protection.discriminator(x)[1])
    crops = torch.rand(2, 3, 64, 64) * 2 - 1
    att_a, att_b = job._attributes(crops, {"Eyeglasses": 1})
    expected = (protection.discriminator(crops)[1] > 0).float()
    assert torch.equal(att_a, expected) and (att_b[:, 6] == 1).all()
    assert torch.equal(torch.cat([att_b[:, :6], att_b[:, 7:]], 1), torch.cat([att_a[:, :6], att_a[:, 7:]], 1))


def test_ffhq_crop_is_upright_for_a_level_face_and_turns_with_the_eyes():
    lm = np.array([[40.0, 50.0], [60.0, 50.0], [50.0, 60.0], [42.0, 70.0], [58.0, 70.0]])
    m = ffhq_crop_transform(lm, 100)
    assert abs(m[0, 1]) < 1e-9 and m[0, 0] > 0  # no rotation
    eyes = lm[:2] @ m[:, :2].T + m[:, 2]
    assert np.allclose(eyes[:, 1], eyes[0, 1]) and np.isclose(eyes[1, 0] - eyes[0, 0], 100 / 4)
    turned = lm @ np.array([[0.0, -1.0], [1.0, 0.0]]).T  # the face rotated 90 degrees
    eyes_t = turned[:2] @ ffhq_crop_transform(turned, 100)[:, :2].T + ffhq_crop_transform(turned, 100)[:, 2]
    assert np.allclose(eyes_t, eyes, atol=1e-6)


# ---------------------------------------------------------------- real FR models with their alignment


def test_aligned_calibrations_are_kept_apart_from_whole_image_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from erasablemask.experiments.fr_tools.calibration import save_thresholds
    from erasablemask.experiments.photos.fr_align import aligned_set_id, calibrated_for_alignment
    from erasablemask.models.fr.recognizer import FaceRecognizer
    from erasablemask.models.fr.registry import get_spec

    monkeypatch.setenv("ERASABLEMASK_HOME", str(tmp_path))
    digest = "ab" * 32

    def model() -> FaceRecognizer:
        m = FaceRecognizer(torch.nn.Flatten(), get_spec("dlib_resnet"))
        m.weights_digest = digest
        return m

    row = [{"far": 0.01, "threshold": 0.5, "tar": 0.9, "actual_far": 0.01}]
    assert aligned_set_id("pairs-0123") == "pairs-0123.aligned-mtcnn"
    save_thresholds("dlib_resnet", digest, "pairs-0123", row, "whole")
    save_thresholds("dlib_resnet", digest, "pairs-0123.aligned-mtcnn", [{**row[0], "threshold": 0.7}], "aligned")
    assert calibrated_for_alignment(model(), aligned=True).threshold(0.01) == 0.7
    assert calibrated_for_alignment(model(), aligned=False).threshold(0.01) == 0.5
    save_thresholds("dlib_resnet", digest, "other.aligned-mtcnn", row, "aligned too")
    with pytest.raises(LookupError, match="2 calibration sets with alignment.*pass --calibration ID"):
        calibrated_for_alignment(model(), aligned=True)


def test_fr_verify_with_alignment_separates_people(faces_dir: Path, capsys):
    from erasablemask.platform.cli.main import main

    a, b = faces_dir / PHOTO, faces_dir / "images/angelina_jolie/deepface_2.jpg"
    other = faces_dir / "images/kit_harington/facerec_1.jpg"
    scores = []
    for x, y in ((a, b), (a, other)):
        assert main(["fr", "verify", "dlib_resnet", str(x), str(y), "--align", "--calibration", "published"]) == 0
        line = capsys.readouterr().out.splitlines()[0]
        scores.append(float(line.rsplit("=", 1)[1]))
    assert scores[0] > scores[1] + 0.05, scores  # same person above another person, aligned
