"""Image quality of protection and erasion (Table VI): L1, MSE, PSNR, SSIM, LPIPS per image, FID per set.

Per image (:func:`pixel_metrics`, :class:`Lpips`), in [0, 1] pixel units
(images arrive in [-1, 1]), for three pairs:

- ``protected_vs_attr_only``: the protected face against the scheme's
  attribute-edited face without perturbation (the paper's reference: what
  the perturbation adds on top of the edit; schemes that edit attributes);
- ``protected_vs_source``: the protected face against the clean source;
- ``restored_vs_source``: the restored face against the clean source
  (schemes that erase).

Metrics:

- ``l1``, ``mse``: mean absolute / squared difference over pixels and channels;
- ``psnr``: ``10 log10(1 / mse)`` dB (peak 1; infinite for identical images);
- ``ssim``: Wang et al. 2004 with the usual constants (11x11 Gaussian window,
  σ 1.5, K1 0.01, K2 0.03, data range 1), over the window positions fully
  inside the image ("valid"), averaged over positions and channels (the
  convention of pytorch-msssim and of scikit-image with ``gaussian_weights``);
- ``lpips``: the ``lpips`` package, AlexNet variant (v0.1 linear heads, which
  ship with the package; inputs in [-1, 1]). The AlexNet backbone's ImageNet
  weights are torchvision's ``alexnet-owt-7be5be79.pth``;
- ``fid`` (per set, :class:`Fid`): Fréchet distance between Gaussians fitted to
  Inception-v3 pool features (2048-d), the standard computation
  (pytorch-fid's FID Inception, ``pt_inception-2015-12-05-6726825d.pth``),
  with a percentile bootstrap interval over images (pairs resampled jointly).

Pretrained weights are never downloaded implicitly. They are looked up at an
explicit path, then in torch hub's cache (``$TORCH_HOME/hub/checkpoints``,
default ``~/.cache/torch/hub/checkpoints``), checked against the sha256
prefix in their file name (torch hub's convention; the full digest is not
published), and downloaded from their URL (same check) only when
``download=True``. When absent, the metric is reported as unavailable with the
reason (``"LPIPS: weights not found at ..."``) and no number: a metric from
random weights is never reported.

:class:`ImageQuality` accumulates all of this over an evaluation's batches
(:class:`~erasablemask.experiments.evaluation.validator.ProtectedBatch`) and
keeps the per-image values by sample index for the records' quality columns.
Summary keys: ``quality/<metric>_<pair>`` (means over images), and
``quality/fid_<pair>`` with ``..._lo`` / ``..._hi``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# Records' per-image quality columns q_<metric>_<pair> (rows of kind "protected", transform "none").
from erasablemask.experiments.devices import resolve_device
from erasablemask.experiments.evaluation.records import QUALITY_COLUMNS, QUALITY_PAIRS

if TYPE_CHECKING:
    from erasablemask.experiments.evaluation.validator import ProtectedBatch

__all__ = [
    "PAIRS",
    "PIXEL_METRICS",
    "QUALITY_COLUMNS",
    "WeightsFile",
    "ALEXNET_WEIGHTS",
    "FID_INCEPTION_WEIGHTS",
    "find_weights",
    "pixel_metrics",
    "ssim",
    "psnr",
    "Lpips",
    "Fid",
    "frechet_distance",
    "gaussian_moments",
    "fid_bootstrap",
    "ImageQuality",
]

PAIRS = QUALITY_PAIRS
PIXEL_METRICS = ("l1", "mse", "psnr", "ssim")


def _device(device: torch.device | str) -> torch.device:
    return resolve_device(device, announce=False) if isinstance(device, str) else device


@dataclass(frozen=True)
class WeightsFile:
    """A pretrained weights file: torch hub's cache name (with its sha256 prefix) and where it is published."""

    what: str
    filename: str
    url: str

    @property
    def sha256_prefix(self) -> str:
        m = re.search(r"-([0-9a-f]{8,})\.pth$", self.filename)
        if m is None:
            raise ValueError(f"{self.filename}: no sha256 prefix in the file name")
        return m.group(1)


ALEXNET_WEIGHTS = WeightsFile(
    "LPIPS", "alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
)
FID_INCEPTION_WEIGHTS = WeightsFile(
    "FID",
    "pt_inception-2015-12-05-6726825d.pth",
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
)


def _hub_dir() -> Path:
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch"
    )
    return Path(torch_home) / "hub" / "checkpoints"


def _check_prefix(path: Path, spec: WeightsFile) -> None:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if not h.hexdigest().startswith(spec.sha256_prefix):
        raise ValueError(
            f"{spec.what}: '{path}' has sha256 {h.hexdigest()[:16]}..., expected a digest starting "
            f"{spec.sha256_prefix} ({spec.filename}); delete it or pass the right file"
        )


def find_weights(
    spec: WeightsFile, path: str | Path | None = None, *, download: bool = False
) -> tuple[Path | None, str]:
    """Where ``spec``'s weights are, or None and why (module docstring for the order).

    Returns:
        ``(path, "")`` when found (sha256 prefix checked), else ``(None, "<what>: weights not found at ...")``.

    Raises:
        ValueError: a file was found whose sha256 does not fit.
    """
    candidates = [Path(path)] if path is not None else []
    candidates.append(_hub_dir() / spec.filename)
    for c in candidates:
        if c.is_file():
            _check_prefix(c, spec)
            return c, ""
    if download:
        dest = _hub_dir() / spec.filename
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(spec.url, str(dest), hash_prefix=spec.sha256_prefix, progress=True)
        except (OSError, RuntimeError) as err:  # offline, or the digest did not fit (the file is removed)
            return (
                None,
                f"{spec.what}: weights not found at {', '.join(map(str, candidates))}; download from "
                f"{spec.url} failed ({err})",
            )
        return dest, ""
    return None, (
        f"{spec.what}: weights not found at {', '.join(map(str, candidates))} (not downloaded: pass the "
        f"file, put it in torch hub's cache, or allow the download from {spec.url})"
    )


# ---------------------------------------------------------------------------------------------- pixel metrics


def _unit(x: Tensor) -> Tensor:
    return (x.float() + 1) / 2  # [-1, 1] -> [0, 1]


def psnr(mse: Tensor) -> Tensor:
    """PSNR in dB of per-image MSEs in [0, 1] units (peak 1); ``inf`` where ``mse`` is 0."""
    return 10 * torch.log10(1.0 / mse)


def _gaussian_window(size: int, sigma: float) -> Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    a: Tensor,
    b: Tensor,
    *,
    data_range: float = 1.0,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """Per-image SSIM of ``(N, C, H, W)`` images (module docstring for the convention); ``(N,)``.

    Raises:
        ValueError: images smaller than the window, or shapes differ.
    """
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim needs two (N, C, H, W) batches of one shape; got {tuple(a.shape)}, {tuple(b.shape)}")
    if min(a.shape[-2:]) < window:
        raise ValueError(f"ssim: images {tuple(a.shape[-2:])} are smaller than the {window}x{window} window")
    a, b = a.double(), b.double()
    g = _gaussian_window(window, sigma).to(a.device)
    c = a.shape[1]
    gx, gy = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, gx, groups=c), gy, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean(dim=(1, 2, 3)).float()


def pixel_metrics(p: Tensor, q: Tensor) -> dict[str, Tensor]:
    """L1, MSE, PSNR and SSIM of each image of ``p`` against the same row of ``q`` (both in [-1, 1]); ``(N,)``."""
    a, b = _unit(p), _unit(q)
    d = a - b
    mse = d.square().mean(dim=(1, 2, 3))
    return {"l1": d.abs().mean(dim=(1, 2, 3)), "mse": mse, "psnr": psnr(mse), "ssim": ssim(a, b)}


# ---------------------------------------------------------------------------------------------- LPIPS


class Lpips:
    """LPIPS (the ``lpips`` package, AlexNet, v0.1 heads) with the backbone weights from a file.

    Args:
        weights: the AlexNet file (default: :func:`find_weights`' lookup).
        download: allow the download (URL + sha256 prefix) when not found.
        random_backbone: build with a randomly initialised backbone (tests of the arithmetic only:
            never for reporting; ``available`` stays False).
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        download: bool = False,
        random_backbone: bool = False,
        device: torch.device | str = "auto",
    ) -> None:
        self.path, self.why = (
            (None, "LPIPS: random backbone (arithmetic tests only)")
            if random_backbone
            else find_weights(ALEXNET_WEIGHTS, weights, download=download)
        )
        self.available = self.path is not None
        self.net: Any = None
        if self.available or random_backbone:
            import lpips

            # pnet_rand: torchvision's AlexNet without its ImageNet weights (no download); they are loaded below.
            self.net = lpips.LPIPS(pretrained=True, net="alex", pnet_rand=True, verbose=False).eval().to(_device(device))
            if self.available:
                self._load_backbone(self.path)
            for p in self.net.parameters():
                p.requires_grad_(False)

    def _load_backbone(self, path: Path) -> None:
        import torchvision

        alex = torchvision.models.alexnet()
        alex.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))  # device-ok: load, then .to
        # lpips' AlexNet slices hold torchvision's `features` modules under their original indices.
        for sl in (
            self.net.net.slice1,
            self.net.net.slice2,
            self.net.net.slice3,
            self.net.net.slice4,
            self.net.net.slice5,
        ):
            for name, module in sl.named_children():
                module.load_state_dict(alex.features[int(name)].state_dict())

    @torch.no_grad()
    def __call__(self, p: Tensor, q: Tensor) -> Tensor:
        """Per-image LPIPS of ``p`` vs ``q`` (both ``(N, 3, H, W)`` in [-1, 1]); ``(N,)``."""
        if self.net is None:
            raise RuntimeError(self.why)
        dev = next(self.net.parameters()).device
        return self.net(p.float().to(dev), q.float().to(dev), normalize=False).flatten().cpu()


# ---------------------------------------------------------------------------------------------- FID


def gaussian_moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, ``ddof=1``) covariance of ``(N, D)`` features, as pytorch-fid computes them."""
    f = np.asarray(features, dtype=np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance of two Gaussians, ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})`` (pytorch-fid's code)."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    return float(
        calculate_frechet_distance(np.atleast_1d(mu1), np.atleast_2d(sigma1), np.atleast_1d(mu2), np.atleast_2d(sigma2))
    )


def fid_bootstrap(
    f1: np.ndarray, f2: np.ndarray, *, n_boot: int = 200, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """FID of two feature sets with a percentile bootstrap interval (rows resampled jointly: pairs stay pairs).

    Returns:
        ``(fid, lo, hi)``.
    """
    if len(f1) != len(f2) or len(f1) < 2:
        raise ValueError(f"fid_bootstrap needs two paired feature sets of >= 2 rows; got {len(f1)} and {len(f2)}")
    value = frechet_distance(*gaussian_moments(f1), *gaussian_moments(f2))
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(n_boot):
        i = rng.integers(0, len(f1), len(f1))
        reps.append(frechet_distance(*gaussian_moments(f1[i]), *gaussian_moments(f2[i])))
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2]) if reps else (np.nan, np.nan)
    return value, float(lo), float(hi)


class Fid:
    """Inception-v3 pool features (pytorch-fid's FID Inception) for FID, with the weights from a file.

    Args:
        weights: the ``pt_inception-2015-12-05-6726825d.pth`` file (default: :func:`find_weights`' lookup).
        download: allow the download (URL + sha256 prefix) when not found.
    """

    def __init__(
        self, weights: str | Path | None = None, *, download: bool = False, device: torch.device | str = "auto"
    ) -> None:
        self.path, self.why = find_weights(FID_INCEPTION_WEIGHTS, weights, download=download)
        self.available = self.path is not None
        self.model: Any = None
        if self.available:
            from unittest import mock

            import pytorch_fid.inception as inc

            def load_fid_inception() -> torch.nn.Module:
                # pytorch-fid's fid_inception_v3 with the state dict read by torch.load(weights_only=True)
                # from the file found above (its own loader downloads and unpickles).
                net = inc._inception_v3(num_classes=1008, aux_logits=False, weights=None)
                net.Mixed_5b = inc.FIDInceptionA(192, pool_features=32)
                net.Mixed_5c = inc.FIDInceptionA(256, pool_features=64)
                net.Mixed_5d = inc.FIDInceptionA(288, pool_features=64)
                net.Mixed_6b = inc.FIDInceptionC(768, channels_7x7=128)
                net.Mixed_6c = inc.FIDInceptionC(768, channels_7x7=160)
                net.Mixed_6d = inc.FIDInceptionC(768, channels_7x7=160)
                net.Mixed_6e = inc.FIDInceptionC(768, channels_7x7=192)
                net.Mixed_7b = inc.FIDInceptionE_1(1280)
                net.Mixed_7c = inc.FIDInceptionE_2(2048)
                net.load_state_dict(torch.load(self.path, map_location="cpu", weights_only=True))  # device-ok: load, then .to
                return net

            with mock.patch.object(inc, "fid_inception_v3", load_fid_inception):
                self.model = inc.InceptionV3([inc.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval().to(_device(device))

    @torch.no_grad()
    def features(self, x: Tensor) -> np.ndarray:
        """``(N, 2048)`` pool features of images in [-1, 1] (resized to 299 inside the model)."""
        if self.model is None:
            raise RuntimeError(self.why)
        dev = next(self.model.parameters()).device
        return self.model(_unit(x).to(dev))[0].flatten(1).cpu().numpy().astype(np.float64)


# ---------------------------------------------------------------------------------------------- accumulation


class ImageQuality:
    """Per-image quality of every batch, by sample; means, FID and what was unavailable in :meth:`result`.

    Args:
        lpips: an :class:`Lpips` (default: built with the lookup; unavailable without weights).
        fid: a :class:`Fid` (likewise).
        n_boot: bootstrap replicates of FID's interval.
        seed: the bootstrap's seed.
    """

    def __init__(self, lpips: Lpips | None = None, fid: Fid | None = None, *, n_boot: int = 200, seed: int = 0) -> None:
        self.lpips = Lpips() if lpips is None else lpips
        self.fid = Fid() if fid is None else fid
        self.n_boot, self.seed = n_boot, seed
        self.per_image: dict[str, dict[int, float]] = {}
        self.features: dict[str, list[np.ndarray]] = {}

    @property
    def unavailable(self) -> list[str]:
        """Why LPIPS / FID were not computed (empty when they were)."""
        return [m.why for m in (self.lpips, self.fid) if not m.available]

    def add(self, out: ProtectedBatch) -> None:
        """Accumulate one batch (the pairs that exist for the scheme)."""
        samples = [int(i) for i in out.batch.index]
        pairs = {
            "protected_vs_attr_only": (out.protected, out.attribute_only),
            "protected_vs_source": (out.protected, out.x),
            "restored_vs_source": (out.restored, out.x),
        }
        for pair, (p, q) in pairs.items():
            if p is None or q is None:
                continue
            values = pixel_metrics(p, q)
            if self.lpips.available:
                values["lpips"] = self.lpips(p, q)
            for metric, v in values.items():
                column = self.per_image.setdefault(f"q_{metric}_{pair}", {})
                column.update(zip(samples, v.double().cpu().tolist(), strict=True))
        if self.fid.available:
            for name, img in (
                ("protected", out.protected),
                ("attr_only", out.attribute_only),
                ("source", out.x),
                ("restored", out.restored),
            ):
                if img is not None:
                    self.features.setdefault(name, []).append(self.fid.features(img))

    def columns(self) -> dict[str, dict[int, float]]:
        """Per-image values by column name (``q_<metric>_<pair>``) and sample index."""
        return self.per_image

    def result(self) -> dict[str, float]:
        """Means over images per ``quality/<metric>_<pair>``; ``quality/fid_<pair>`` with its interval."""
        out: dict[str, float] = {}
        for column, values in self.per_image.items():
            arr = np.array(list(values.values()), dtype=np.float64)
            finite = arr[np.isfinite(arr)]  # PSNR of an identical pair is infinite: averaged over the rest
            out[f"quality/{column[2:]}"] = float(finite.mean()) if finite.size else float("inf")
        feats = {k: np.concatenate(v) for k, v in self.features.items()}
        for pair, (a, b) in {
            "protected_vs_attr_only": ("protected", "attr_only"),
            "protected_vs_source": ("protected", "source"),
            "restored_vs_source": ("restored", "source"),
        }.items():
            if a in feats and b in feats and len(feats[a]) >= 2:
                v, lo, hi = fid_bootstrap(feats[a], feats[b], n_boot=self.n_boot, seed=self.seed)
                out.update({f"quality/fid_{pair}": v, f"quality/fid_{pair}_lo": lo, f"quality/fid_{pair}_hi": hi})
        return out

    def fill_records(self, records: Any) -> Any:
        """``records`` with the per-image quality columns set on the rows of kind ``protected`` and transform
        ``none`` (by sample index); other rows, and metrics not computed, stay null."""
        import pandas as pd

        out = records.copy()
        rows = (out["kind"] == "protected") & (out["transform"] == "none")
        for column in QUALITY_COLUMNS:
            values = self.per_image.get(column)
            filled = pd.Series(np.nan, index=out.index, dtype="float32")
            if values:
                filled[rows] = out.loc[rows, "sample"].astype("int64").map(values).astype("float32")
            out[column] = filled
        return out
