"""Commercial face-verification services as black-box scorers of an evaluation (Table III).

``evaluation.commercial_apis`` (``erasablemask evaluate|compare --apis facepp tencent aliyun``)
names the services (:mod:`erasablemask.platform.fr_apis`). For a seeded random subset of the
evaluated source images (``max_images``, default 100 as in the paper; the subset depends only on
the config's seed and the images' data-set indices, so every method of a comparison sends the
same faces), each service compares with the target's *evaluation* photo:

- the protected face ``protect(x)`` (Table III's Attack, kind ``protected``);
- the restored face ``erase(protect(x))`` where the scheme erases (Table III's Erasion,
  ``api_confidence_restored`` on the same row);
- the clean source face ``x`` (Table III's Clean row, kind ``clean``).

The faces sent are the 8-bit PNGs of exactly the images the FR models scored (no transform).
Each comparison becomes a per-sample records row of role ``commercial``
(:mod:`erasablemask.experiments.evaluation.records`): the service's confidence in [0, 100] and its
own thresholds at FAR 1e-3 / 1e-4 / 1e-5 (per response for Face++ and Aliyun, documented for
Tencent's FaceModelVersion 3.0). ``rates.csv`` then holds, per service, the mean confidence
(``api_confidence``, ``api_confidence_restored``; stored divided by 100 like the rates) and the ASR at
the service's thresholds (``api_asr_1e-3``, ...) with 95 % identity-bootstrap intervals
(:func:`erasablemask.platform.evaluation_run.rate_table`).

A face the service finds no face in counts as confidence 0 (an impersonation that failed; its
thresholds are the service's from its other answers); such answers are counted in ``api_no_face/<service>``.
Any other service error stops the evaluation with the service's code. Credentials are read by the
adapters from the environment (:func:`build_services` refuses missing ones before any work) and are
never logged, written or tracked: only the service names, ``max_images``, ``qps`` and ``endpoints``
are config.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import pandas as pd

from erasablemask.experiments.errors import UserError
from erasablemask.experiments.seeding import derive_seed
from erasablemask.platform.fr_apis import FRApi, FRApiError, MissingCredentials, NoFaceDetected, encode_image

if TYPE_CHECKING:
    from erasablemask.experiments.config.schema import ErasableMaskConfig
    from erasablemask.experiments.evaluation.targets import ImpersonationTargets
    from erasablemask.experiments.evaluation.validator import ProtectedBatch

__all__ = ["build_services", "with_commercial_apis", "CommercialScoring", "commercial_metrics", "commercial_lines"]

log = logging.getLogger(__name__)

API_FARS = ("1e-3", "1e-4", "1e-5")


def with_commercial_apis(
    cfg: ErasableMaskConfig, services: Sequence[str] | None, max_images: int | None
) -> ErasableMaskConfig:
    """``cfg`` with ``evaluation.commercial_apis.services`` / ``.max_images`` replaced where given (``--apis``,
    ``--api-max-images``), validated like the config file.

    Raises:
        ValueError: an unknown service or a ``max_images`` below 1 (named, with the choices).
    """
    if services is None and max_images is None:
        return cfg
    from pydantic import ValidationError

    from erasablemask.experiments.config.schema import CommercialApisConfig

    tree = cfg.evaluation.commercial_apis.model_dump()
    if services is not None:
        tree["services"] = list(dict.fromkeys(services))
    if max_images is not None:
        tree["max_images"] = max_images
    try:
        apis = CommercialApisConfig.model_validate(tree)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"--apis/--api-max-images: evaluation.commercial_apis.{where}: {first['msg']}") from None
    return cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"commercial_apis": apis})})


def build_services(cfg: ErasableMaskConfig) -> dict[str, FRApi]:
    """The adapters of ``evaluation.commercial_apis`` (none when it names no service).

    Raises:
        MissingCredentials: one line naming every service whose environment variables are missing; raised
            here, before any image is protected.
    """
    from erasablemask.platform.fr_apis import build_fr_api

    conf = cfg.evaluation.commercial_apis
    out: dict[str, FRApi] = {}
    missing: list[str] = []
    for name in conf.services:
        options: dict[str, object] = {}
        if name in conf.endpoints:
            options["endpoint"] = conf.endpoints[name]
        if name in conf.qps:
            options["qps"] = conf.qps[name]
        try:
            out[name] = build_fr_api(name, **options)
        except MissingCredentials as err:
            missing.append(str(err))
    if missing:
        raise MissingCredentials(
            "evaluation.commercial_apis: " + " ".join(missing) + " Or drop the service from --apis."
        )
    return out


@dataclass(order=True)
class _Face:
    neg_key: int  # heap order: the kept face with the largest key is evicted first
    sample: int = field(compare=False)
    identity: int | None = field(compare=False)
    target: int = field(compare=False)
    png: dict[str, bytes] = field(compare=False)  # "protected", "clean" and, where the scheme erases, "restored"


class CommercialScoring:
    """Keeps the faces to send while an evaluation runs (:meth:`add`, its ``on_batch``), then asks each
    service about them (:meth:`score`) and returns their records rows (module docstring).

    Args:
        cfg: the evaluation's config (``evaluation.commercial_apis``, the seed).
        targets: the evaluation's impersonation targets (their evaluation photos are sent).
        services: adapters by name (:func:`build_services`).
    """

    def __init__(self, cfg: ErasableMaskConfig, targets: ImpersonationTargets, services: Mapping[str, FRApi]) -> None:
        self.cfg, self.targets, self.services = cfg, targets, dict(services)
        self.max_images = cfg.evaluation.commercial_apis.max_images
        self._heap: list[_Face] = []
        self._target_png: dict[int, bytes] = {}
        self.no_face: dict[str, int] = {}  # per service: answers without a face (after score)

    def _key(self, sample: int) -> int:
        return derive_seed(self.cfg.seed, "commercial_apis", sample)

    def add(self, out: ProtectedBatch) -> None:
        """Keep the batch's faces that belong to the seeded subset (the ``max_images`` smallest keys so far)."""
        from erasablemask.experiments.evaluation.targets import target_index_for

        b = out.batch
        which = target_index_for(b.index, len(self.targets))
        for i, sample in enumerate(b.index.tolist()):
            key = self._key(int(sample))
            if len(self._heap) >= self.max_images and -self._heap[0].neg_key <= key:
                continue  # not among the smallest keys: never encoded
            png = {"protected": encode_image(out.protected[i]), "clean": encode_image(out.x[i])}
            if out.restored is not None:
                png["restored"] = encode_image(out.restored[i])
            ident = int(b.identity[i])
            face = _Face(-key, int(sample), ident if ident >= 0 else None, 0 if which is None else int(which[i]), png)
            if len(self._heap) >= self.max_images:
                heapq.heapreplace(self._heap, face)
            else:
                heapq.heappush(self._heap, face)

    @property
    def faces(self) -> list[_Face]:
        """The kept faces, by data-set index."""
        return sorted(self._heap, key=lambda f: f.sample)

    def _target(self, t: int) -> bytes:
        if t not in self._target_png:
            self._target_png[t] = encode_image(self.targets.eval_images[t])
        return self._target_png[t]

    def _compare(self, name: str, api: FRApi, image: bytes, target: bytes, sample: int) -> tuple[float, dict, bool]:
        """(confidence, thresholds, no_face) of one pair; another service error is a :class:`UserError`."""
        try:
            res = api.compare(image, target)
        except NoFaceDetected as err:
            log.warning("%s found no face (sample %d): %s; counted as confidence 0", name, sample, err.code)
            return 0.0, {}, True
        except FRApiError as err:
            raise UserError(
                f"evaluation.commercial_apis: {err} (sample {sample}); check the credentials, the endpoint and "
                f"the quota, or run without this service"
            ) from None
        return res.confidence, res.thresholds, False

    def score(self, *, run: str, method: str, stage: int | None, split: str, progress: bool = True) -> pd.DataFrame:
        """Ask every service about every kept face; the records rows (role ``commercial``), by service and sample.

        Args:
            run, method, stage, split: the records' columns, as the evaluation's own rows.
            progress: a progress bar over the requests (they are slow and rate-limited).
        """
        from erasablemask.experiments.evaluation.records import API_FAR_COLUMNS, records_frame
        from erasablemask.experiments.progress import progress_bar

        faces = self.faces
        per_face = sum(len(f.png) for f in faces)
        bar = progress_bar(
            total=per_face * len(self.services), desc="commercial FR APIs", unit="pair", disable=not progress
        )
        rows: list[dict] = []
        try:
            for name, api in self.services.items():
                bar.set_postfix_str(name, refresh=False)
                seen: dict[str, float] = {}
                mine: list[dict] = []
                for f in faces:
                    target = self._target(f.target)
                    for kind in ("protected", "clean"):
                        conf, thr, no_face = self._compare(name, api, f.png[kind], target, f.sample)
                        bar.update(1)
                        restored = None
                        if kind == "protected" and "restored" in f.png:
                            restored, thr_r, nf_r = self._compare(name, api, f.png["restored"], target, f.sample)
                            bar.update(1)
                            no_face, thr = no_face + nf_r, thr or thr_r
                        seen.update({k: v for k, v in thr.items() if k not in seen})
                        mine.append(dict(kind=kind, model=name, sample=f.sample, source_identity=f.identity,
                                         target=self.targets.names[f.target], api_confidence=conf,
                                         api_confidence_restored=restored, no_face=no_face, thresholds=thr))
                for r in mine:  # a no-face answer carries no thresholds: the service's from its other answers
                    r["thresholds"] = r["thresholds"] or seen
                rows += mine
        finally:
            bar.close()
        n = len(rows)
        if n == 0:
            return records_frame({c: [] for c in _FR_COLUMNS + _ROW_COLUMNS})
        columns: dict[str, object] = {c: [None] * n for c in _FR_COLUMNS}
        columns.update(
            run=[run] * n, method=[method] * n, stage=[stage] * n, seed=[self.cfg.seed] * n, split=[split] * n,
            role=["commercial"] * n, transform=["none"] * n,
            **{c: [r[c] for r in rows] for c in ("kind", "model", "sample", "source_identity", "target",
                                                   "api_confidence", "api_confidence_restored")},
            **{col: [r["thresholds"].get(far, np.nan) for r in rows] for far, col in API_FAR_COLUMNS.items()},
        )
        frame = records_frame(columns)
        self.no_face = {name: sum(r["no_face"] for r in rows if r["model"] == name) for name in self.services}
        return frame


# FR-model columns that are null on commercial rows, and the rest a commercial row sets.
_FR_COLUMNS = ["cos_target", "cos_source", "cos_restored_target", "cos_restored_source", "cos_target_pair",
               "thr_far_0p1", "thr_far_0p01", "thr_far_0p001", "tau1", "tau2", "attack_success",
               "erasion_success", "identity_restored"]
_ROW_COLUMNS = ["run", "method", "kind", "stage", "seed", "split", "model", "role", "transform", "sample",
                "source_identity", "target", "api_confidence", "api_confidence_restored"]


def commercial_metrics(records: pd.DataFrame, no_face: Mapping[str, int] | None = None) -> dict[str, float]:
    """Summary keys of the commercial rows, per service ``s``: ``api_confidence/s`` (protected faces, mean in
    [0, 100]), ``api_confidence_restored/s``, ``api_confidence_clean/s``, ``api_asr_<far>/s`` (protected faces
    above the service's threshold at FAR 1e-3 / 1e-4 / 1e-5), ``api_n/s`` and ``api_no_face/s``."""
    from erasablemask.experiments.evaluation.records import API_FAR_COLUMNS

    out: dict[str, float] = {}
    rows = records[records["role"] == "commercial"]
    for s, sub in rows.groupby("model", sort=False):
        prot, clean = sub[sub["kind"] == "protected"], sub[sub["kind"] == "clean"]
        out[f"api_n/{s}"] = float(len(prot))
        out[f"api_confidence/{s}"] = float(prot["api_confidence"].mean())
        out[f"api_confidence_clean/{s}"] = float(clean["api_confidence"].mean())
        if prot["api_confidence_restored"].notna().all() and len(prot):
            out[f"api_confidence_restored/{s}"] = float(prot["api_confidence_restored"].mean())
        for far, col in API_FAR_COLUMNS.items():
            if prot[col].notna().all() and len(prot):
                conf = prot["api_confidence"].to_numpy(np.float32)
                out[f"api_asr_{far}/{s}"] = float((conf > prot[col].to_numpy(np.float32)).mean())
        if no_face is not None:
            out[f"api_no_face/{s}"] = float(no_face.get(str(s), 0))
    return out


def commercial_lines(rates: pd.DataFrame) -> list[str]:
    """Table III's lines from ``rate_table`` rows: per service, the clean faces (from the first method) and each
    method's mean confidence for the protected (Attack) and restored (Erasion) faces, and the ASR at the service's
    thresholds, with 95 % identity-bootstrap intervals; none without commercial rows."""
    from erasablemask.platform.evaluation_run import rate_cell

    com = rates[rates["role"] == "commercial"] if len(rates) else rates
    if com.empty:
        return []
    lines = [
        "commercial FR services (Table III): mean confidence in [0, 100] and ASR (%) at the service's own "
        "thresholds, [95 % identity-bootstrap interval]:",
        f"  {'service':9s} {'method':14s} {'Attack conf.':>17s} {'Erasion conf.':>17s}"
        + "".join(f" {'ASR FAR ' + far:>17s}" for far in API_FARS) + f" {'n':>5s}",
    ]
    methods = list(dict.fromkeys(com["method"]))
    for s in dict.fromkeys(com["model"]):
        sub = com[com["model"] == s]

        def row(label: str, sel: pd.DataFrame, kind: str) -> str:
            cells = [rate_cell(sel, kind=kind, rate="api_confidence"),
                     rate_cell(sel, kind=kind, rate="api_confidence_restored")]
            cells += [rate_cell(sel, kind=kind, rate=f"api_asr_{far}") for far in API_FARS]
            n = sel[(sel["kind"] == kind) & (sel["rate"] == "api_confidence")]["n"]
            return f"  {str(s):9s} {label:14.14s} " + " ".join(cells) + f" {int(n.max()) if len(n) else 0:5d}"

        lines.append(row("clean", sub[sub["method"] == methods[0]], "clean"))
        lines += [row(m, sub[sub["method"] == m], "protected") for m in methods]
    return lines
