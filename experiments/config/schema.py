"""The one typed configuration schema (pydantic v2).

The paper's values are the defaults (§V-A: λ_att 10, λ_rec 150, λ_G 1,
λ_adv 200, λ_era 150, λ_perb 1; β 0.5; σ1 30; 200/100/50 epochs; lr 2e-5;
noise pool JPEG 50 / Gaussian var 0.003 / resize 1/4; 13 attributes; 256²).
Every value the paper leaves open is an explicit field whose comment says
where its default came from. YAML files in ``experiments/configs/`` and the
config-group options they pick (experiments/config/groups.py) override the
defaults; dotted ``key.path=value`` overrides apply on top. Unknown keys,
wrong types and out-of-range values fail before anything runs, naming the
key path and the allowed values.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from erasablemask.experiments.data.attributes import ATTRIBUTES

# Floats are finite: `.inf` / `.nan` in YAML are refused when the config loads, not
# steps later as a NaN loss. A weight of 0 switches its term off (ablations).
NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Unit = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
LR = Annotated[float, Field(ge=0, allow_inf_nan=False)]
FAR = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
# A stage that runs trains at least one epoch (0 used to "finish" with no checkpoint).
Epochs = Annotated[int, Field(ge=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class MiniWorldConfig(_Strict):
    """The synthetic mini-world (experiments/data/miniworld.py)."""

    n_identities: PosInt = 48
    images_per_identity: PosInt = 24
    # Identities reserved as impersonation targets: never seen by the mini FR
    # models or the generator, and not used for calibration either.
    heldout_identities: NonNegInt = 8
    # The mini FR zoo's training population (experiments/fr_tools/mini_zoo.py): FR-only
    # identities the generator never sees (a stand-in for MS1M/CASIA; with the
    # world's 40 identities alone TAR@FAR0.01 was ≈0.5), and how many images of
    # each are used.
    fr_extra_identities: NonNegInt = 160
    fr_extra_images_per_identity: Annotated[int, Field(ge=2)] = 12
    # FR thresholds are calibrated on identities of their own (beyond the FR-only
    # ones; experiments/fr_tools/mini_world.py): 24 x 12 images give 39,744
    # impostor pairs (>= 10,000 so that FAR 0.001 is meaningful).
    fr_calibration_identities: Annotated[int, Field(ge=2)] = 24
    fr_calibration_images_per_identity: Annotated[int, Field(ge=2)] = 12
    # The FR population also holds the source identities' TRAIN-split images
    # (never a val/test image): real FR training sets may hold the protected people.
    fr_source_train_images: bool = True
    # Overrides every mini FR recipe's epochs (tests, quick runs); null: each recipe's own.
    fr_epochs: PosInt | None = None
    # Each identity's fine skin texture (experiments/data/miniworld_render.py): its std in 0-255
    # levels (0: none, the world as before) and correlation length in face-coordinate units.
    # Real FR models, trained on large shared data, use fine identity texture; with it the
    # mini FR zoo's adversarial perturbations transfer between models (benchmarks/mini_fr_zoo.py).
    skin_texture: Annotated[float, Field(ge=0)] = 0.0
    skin_texture_scale: Annotated[float, Field(gt=0)] = 0.025


class DataConfig(_Strict):
    kind: Literal["miniworld", "celebahq", "ffhq", "folder"] = "miniworld"
    root: Path | None = None
    attr_file: Path | None = None
    image_size: Annotated[int, Field(ge=64, le=512)] = 256  # paper §V-A: 256×256
    # Attribute coding at the generator input. Not in the paper; AttGAN-PyTorch
    # (the paper's ref. [40] implementation) codes labels ±0.5.
    attribute_coding: Literal["pm0.5", "pm1", "01"] = "pm0.5"
    mode_policy: Literal["convert", "refuse"] = "convert"
    miniworld: MiniWorldConfig = MiniWorldConfig()

    @model_validator(mode="after")
    def _real_needs_root(self) -> "DataConfig":
        if self.kind != "miniworld" and self.root is None:
            raise ValueError(f"data.root is required for data.kind='{self.kind}'; set it to the image folder")
        return self


def check_attributes(attributes: list[str]) -> None:
    """Raise ValueError unless ``attributes`` are the 13 known names, each once, in ATTRIBUTES order.

    Every data set delivers all 13 labels in ATTRIBUTES order (experiments/data/attributes.py)
    and nothing selects a subset, so G/D built for another list fail at the first step with a
    tensor-shape error; this names the problem when the config loads instead.
    """
    unknown = [a for a in attributes if a not in ATTRIBUTES]
    if unknown:
        raise ValueError(f"model.attributes has unknown names {unknown}; allowed: {list(ATTRIBUTES)}")
    repeated = sorted({a for a in attributes if attributes.count(a) > 1})
    if repeated:
        raise ValueError(f"model.attributes lists {repeated} more than once; name each attribute once")
    if list(attributes) != list(ATTRIBUTES):
        raise ValueError(
            f"model.attributes must be all {len(ATTRIBUTES)} attributes in this order: {list(ATTRIBUTES)} "
            f"(the data sets and the attribute classifier deliver all of them; subsets are not supported); "
            f"got {list(attributes)}: remove the override to use the default"
        )


class ModelConfig(_Strict):
    """AttGAN sizes (AttGAN-PyTorch defaults: width 64, 5 layers, 1 shortcut, 1 inject)."""

    attributes: list[str] = Field(default_factory=lambda: list(ATTRIBUTES))
    enc_dim: PosInt = 64
    enc_layers: Annotated[int, Field(ge=1, le=7)] = 5
    dec_dim: PosInt = 64
    dec_layers: Annotated[int, Field(ge=1, le=7)] = 5
    shortcut_layers: NonNegInt = 1
    inject_layers: NonNegInt = 1
    dis_dim: PosInt = 64
    dis_layers: Annotated[int, Field(ge=1, le=7)] = 5
    dis_fc_dim: PosInt = 1024

    @model_validator(mode="after")
    def _known_attributes(self) -> "ModelConfig":
        check_attributes(self.attributes)
        return self


class ProtectionConfig(_Strict):
    """ErasableMask's generator and restorer (§IV-B, §IV-C)."""

    beta: Unit = 0.5  # Eq. 6, paper §V-G3
    # γ is not given. Reading: γ weights the CLEAN branch (larger γ → better
    # erasion and quality, lower ASR, as the γ ablation describes). The paper's
    # main ASR (FaceNet 64.0) is above its γ=0.1 ablation (56.67), so its
    # default must be below 0.1 under this reading: 0.05 is our choice.
    gamma: Unit = 0.05
    gamma_weights: Literal["clean", "adversarial"] = "clean"
    inject: bool = True
    # A trusted authority sees only x_adv: the restorer gets a neutral (all
    # zero) attribute code by default; "source" is the oracle upper bound.
    restorer_attribute_input: Literal["neutral", "source", "target"] = "neutral"
    # BatchNorm of E_adv in stage 2 (not in the paper): "frozen" (default: the
    # running statistics copied from G_enc are kept, so E_adv == G_enc at the
    # start of stage 2 gives x_adv == x_cov_b, "E_adv initialised as G_enc",
    # and training and use normalise alike) or "batch" (a trainable module in
    # train mode normalises with batch statistics, while the frozen G_enc uses
    # running statistics: x_adv != x_cov_b at the start of stage 2).
    perturbation_bn: Literal["batch", "frozen"] = "frozen"


class AdamConfig(_Strict):
    lr: LR = 2e-5  # paper §V-A
    # Not given in the paper; AttGAN-PyTorch uses (0.5, 0.999).
    betas: tuple[Unit, Unit] = (0.5, 0.999)


class Stage1Config(_Strict):
    """Eq. 14: L1 = λ_rec L_rec + λ_att L_att^G + λ_G L_G (D: L_D + λ_att_D L_att^D)."""

    epochs: Epochs = 200
    batch_size: PosInt = 32  # not given in the paper; AttGAN-PyTorch uses 32
    optimizer: AdamConfig = AdamConfig()
    lambda_rec: NonNeg = 150.0
    lambda_att: NonNeg = 10.0
    lambda_G: NonNeg = 1.0
    lambda_att_D: NonNeg = 1.0  # weight of L_att^D in D's loss; AttGAN-PyTorch: 1
    gan_loss: Literal["log", "wgan_gp"] = "log"  # Eq. 3 is the log loss; AttGAN uses WGAN-GP
    gradient_penalty: NonNeg = 10.0  # only for wgan_gp (AttGAN-PyTorch: 10)
    d_steps_per_g_step: PosInt = 1  # AttGAN-PyTorch: 5 with WGAN-GP; the paper is silent
    # How training att_b is drawn from att_a (paper silent): "shuffle"
    # permutes att_a across the batch (AttGAN-PyTorch); "flip" flips each
    # attribute with probability att_b_flip_prob, then resolves conflicts.
    att_b_sampling: Literal["shuffle", "flip"] = "shuffle"
    att_b_flip_prob: Unit = 0.25


class Stage2Config(_Strict):
    """Eq. 15: λ_att L_att^G + λ_rec L_rec + λ_G L_G + λ_adv L_adv + λ_era L_era + λ_perb L_perb."""

    epochs: Epochs = 100
    batch_size: PosInt = 8  # not given in the paper; fits a 24 GB GPU at 256² with 3 surrogates
    optimizer: AdamConfig = AdamConfig()
    lambda_att: NonNeg = 10.0
    lambda_rec: NonNeg = 150.0
    lambda_G: NonNeg = 1.0
    lambda_adv: NonNeg = 200.0
    lambda_era: NonNeg = 150.0
    lambda_perb: NonNeg = 1.0
    sigma1: NonNeg = 30.0  # Eq. 8
    # Units of ‖x_adv − x_cov‖₂ in Eq. 8 (not given in the paper).
    # "unit_per_image" (default): L2 over one image's values in [-1, 1],
    # averaged over the batch. At 256² (196,608 values) σ1 = 30 is an RMS
    # deviation of 30/√196608 ≈ 0.068, i.e. ≈ 8.7/255 grey levels: a
    # plausible perturbation budget, which no other reading gives
    # ("pixels255_per_image" would make σ1 = 30 a 0.07-grey-level budget).
    perb_units: Literal["unit_per_image", "pixels255_per_image"] = "unit_per_image"
    # σ1 is stated for 256² images; when true it is scaled by √(H·W)/256 so the
    # RMS budget is the same at other sizes (the mini-world runs at 64²).
    sigma1_scale_with_size: bool = True
    # Eq. 13's sum over samples of per-sample L2; "mean" divides by N.
    era_reduction: Literal["sum", "mean"] = "mean"
    # Eq. 15 lists L_rec although G is fixed in stage 2 (paper silent on what it
    # constrains). "frozen_generator" (default): Eq. 5 as written on the frozen
    # G, a constant logged only; "adversarial_att_a": Eq. 5 with the fused
    # encoder of Eq. 6 in place of G_enc, ‖G_dec(z_adv(x), att_a) − x‖₁, which
    # constrains E_adv; "none": dropped.
    rec_on: Literal["frozen_generator", "adversarial_att_a", "none"] = "frozen_generator"
    # The paper fixes only G_enc, G_dec in stage 2; D keeps training on
    # L_D + λ_att_D L_att^D with x_adv as the fake (true) or stays fixed (false).
    train_discriminator: bool = True


class Stage3Config(_Strict):
    """Eq. 16: L3 = L_era, R alone on noised protected faces."""

    epochs: Epochs = 50
    batch_size: PosInt = 8
    optimizer: AdamConfig = AdamConfig()


class TargetConfig(_Strict):
    """Impersonation target(s).

    ``miniworld_heldout``: ``count`` held-out mini-world identities, one image
    each for training and a different image of the same identity for
    evaluation (the AMT-GAN convention). ``images``: explicit image paths.
    """

    mode: Literal["miniworld_heldout", "images"] = "miniworld_heldout"
    count: PosInt = 1
    # miniworld_heldout only. "seeded": identities drawn with a seed derived
    # from cfg.seed, each one's first train-split image. "typical": the
    # attacker's choice with white-box knowledge only — the held-out identities
    # whose train-split images the surrogates verify most consistently, and each
    # one's most typical train image (experiments/evaluation/targets.py).
    selection: Literal["seeded", "typical"] = "seeded"
    train_images: list[Path] = Field(default_factory=list)
    eval_images: list[Path] = Field(default_factory=list)

    @model_validator(mode="after")
    def _paired(self) -> "TargetConfig":
        if self.mode == "images":
            if not self.train_images or len(self.train_images) != len(self.eval_images):
                raise ValueError(
                    "attack.target.train_images and eval_images must be non-empty and the same length "
                    "(one training and one evaluation image per target identity)"
                )
        return self


class AttackConfig(_Strict):
    """The meta-auxiliary attack (Algorithm 1, Eq. 9–12)."""

    method: Literal["meta_auxiliary", "first_order", "ensemble"] = "meta_auxiliary"
    surrogates: list[str] = Field(default_factory=lambda: ["ir152", "irse50", "facenet"])
    black_box: list[str] = Field(default_factory=lambda: ["mobile_face", "arcface_r100", "cosface_r100"])
    # Alg. 1's inner "lr" is not given; MAML-style inner steps are larger than
    # the outer lr. Our choice, to sweep.
    meta_lr: LR = 1e-2
    # ε of Eq. 12 is not given: L_adv stops pushing once the mean loss is
    # below ε (1 − cos); 0.2 is our choice, to sweep.
    epsilon: NonNeg = 0.2
    adaptive_weights: bool = True  # Eq. 11
    target: TargetConfig = TargetConfig()

    @model_validator(mode="after")
    def _disjoint(self) -> "AttackConfig":
        from erasablemask.models.fr.registry import available, is_registered

        known = set(available())  # names first: a typo is named as such, not counted as "too few surrogates"
        for key in ("surrogates", "black_box"):
            bad = [m for m in getattr(self, key) if m not in known and not is_registered(m)]  # robust entries
            if bad:
                raise ValueError(f"attack.{key}: unknown FR model(s) {bad}; registered: {sorted(known)} "
                                 f"(`erasablemask fr list`)")
            repeated = sorted({m for m in getattr(self, key) if getattr(self, key).count(m) > 1})
            if repeated:
                raise ValueError(f"attack.{key} lists {repeated} more than once; name each FR model once")
        both = sorted(set(self.surrogates) & set(self.black_box))
        if both:
            raise ValueError(f"attack: model(s) {both} listed as both surrogate and black-box; a model is one or the other")
        if not self.surrogates:
            raise ValueError("attack.surrogates is empty; list at least one FR model name")
        if self.method != "ensemble" and len(self.surrogates) < 2:
            raise ValueError("attack.method meta_auxiliary/first_order needs ≥ 2 surrogates (one primary, ≥ 1 auxiliary)")
        return self


class NoisePoolConfig(_Strict):
    """Training noise pool (§IV-D)."""

    layers: list[Literal["identity", "jpeg", "gaussian", "resize"]] = Field(
        default_factory=lambda: ["identity", "jpeg", "gaussian", "resize"]
    )
    jpeg_quality: Annotated[int, Field(ge=1, le=100)] = 50
    jpeg_mode: Literal["kornia", "straight_through"] = "kornia"
    gaussian_variance: NonNeg = 0.003  # on images in [0, 1] (the usual reading)
    resize_factor: Annotated[float, Field(gt=0, le=1)] = 0.25
    per: Literal["batch", "image"] = "batch"


# The commercial face-verification services of platform/fr_apis.py (FR_APIS; a test keeps the two equal).
COMMERCIAL_APIS = ("facepp", "tencent", "aliyun")


class CommercialApisConfig(_Strict):
    """Commercial services as black-box scorers (Table III; ``platform/commercial_scoring.py``).

    Each of ``services`` compares the protected face (and the restored one, where the scheme erases) and the
    clean source face with the target's evaluation photo. Credentials come from the environment only
    (``platform/fr_apis.py``), never from here.
    """

    services: list[Literal["facepp", "tencent", "aliyun"]] = []  # none: no request is sent
    # Source images sent to each service (the paper: 100 examples per scheme); each costs up to 3 requests
    # (protected, restored, clean). A seeded random subset of the evaluated images, the same for every method.
    max_images: PosInt = 100
    qps: dict[str, Annotated[float, Field(gt=0, allow_inf_nan=False)]] = {}  # requests/s by service (absent: default)
    endpoints: dict[str, str] = {}  # URL by service (absent: the service's own; a proxy or a test server)

    @model_validator(mode="after")
    def _known_services(self) -> CommercialApisConfig:
        for key in ("qps", "endpoints"):
            unknown = sorted(set(getattr(self, key)) - set(COMMERCIAL_APIS))
            if unknown:
                raise ValueError(f"evaluation.commercial_apis.{key}: unknown services {unknown}; "
                                 f"choose from {list(COMMERCIAL_APIS)}")
        return self


class EvaluationConfig(_Strict):
    fars: list[FAR] = Field(default_factory=lambda: [0.1, 0.01, 0.001])
    asr_far: FAR = 0.01  # τ1: "0.01 times the FAR" = the field's threshold at FAR 0.01
    esr_far: FAR = 0.1  # τ2 (Eq. 18): threshold at FAR 0.1
    transforms: list[str] = Field(
        default_factory=lambda: ["none", "jpeg", "gaussian", "resize", "median", "rotate", "center_crop"]
    )
    max_images: NonNegInt = 0  # 0 = the whole test split
    # Table V's transforms' parameters, by transform name (models/eval_transforms.py; absent: its defaults, the
    # paper's: jpeg quality 50, gaussian variance 0.003 in [0,1] units, resize factor 0.5, median kernel 5,
    # rotate max_degrees 30, center_crop 224 of 256), e.g. {jpeg: {quality: 75}, rotate: {max_degrees: 10}}.
    transform_options: dict[str, dict[str, float | int | str]] = {}
    commercial_apis: CommercialApisConfig = CommercialApisConfig()

    @model_validator(mode="after")
    def _transform_options_build(self) -> EvaluationConfig:
        import inspect

        from erasablemask.models.eval_transforms import EVAL_TRANSFORMS, build_eval_transform

        for name, opts in self.transform_options.items():
            where = f"evaluation.transform_options.{name}"
            if name not in EVAL_TRANSFORMS:
                raise ValueError(f"{where}: unknown evaluation transform; choose from {sorted(EVAL_TRANSFORMS)}")
            allowed = [p for p in inspect.signature(EVAL_TRANSFORMS[name]).parameters]
            unknown = sorted(set(opts) - set(allowed))
            if unknown:
                raise ValueError(f"{where}: unknown options {unknown}; '{name}' takes {allowed}")
            try:
                build_eval_transform(name, **opts)
            except (ValueError, TypeError) as err:
                raise ValueError(f"{where}: {err}") from None
        return self


class TrackingConfig(_Strict):
    # None: $MLFLOW_TRACKING_URI, else sqlite:///<run_dir>/mlflow.db (never ./mlruns).
    tracking_uri: str | None = None
    experiment_name: str = "erasablemask"
    run_dir: Path = Path("runs")


class FaultInjectionConfig(_Strict):
    """For tests only: make a worker fail once at (stage, step)."""

    stage: Literal[0, 1, 2, 3] = 0  # 0 = off
    step: NonNegInt = 0


def _custom_resources(resources: dict[str, float], where: str) -> dict[str, float]:
    """Custom Ray resource labels only: CPUs and GPUs have their own fields."""
    builtin = sorted(k for k in resources if k in ("CPU", "GPU", "memory", "object_store_memory"))
    if builtin:
        raise ValueError(f"{where} names Ray's built-in resources {builtin}; set them with the CPU/GPU fields "
                         f"and keep only custom labels (e.g. fr_node) here")
    return resources


class RemoteFRConfig(_Strict):
    """FR models hosted in Ray actors (platform/remote_fr.py); the Ray runner only, same results as local."""

    models: list[str] = []  # registry names served by actors; every other FR model stays in the worker
    cpus_per_actor: Annotated[float, Field(gt=0)] = 1.0
    gpus_per_actor: Annotated[float, Field(ge=0, le=1)] = 0.0  # fractional: 0.25 packs four actors on one GPU
    max_restarts: NonNegInt = 3  # a dead actor is restarted and its in-flight call retried (max_task_retries)
    placement: Literal["pack", "spread"] = "pack"  # the actors' placement group strategy
    # Custom Ray resources each actor needs, e.g. {fr_node: 0.5} to pin the actors to nodes started with
    # `ray start --resources '{"fr_node": 1}'` (README "Remote FR models (Ray actors)").
    resources: dict[str, Annotated[float, Field(gt=0)]] = {}

    @model_validator(mode="after")
    def _resources_are_custom(self) -> RemoteFRConfig:
        _custom_resources(self.resources, "compute.remote_fr.resources")
        return self


class ComputeConfig(_Strict):
    num_workers: PosInt = 1
    use_gpu: bool = False
    cpus_per_worker: Annotated[float, Field(gt=0)] = 1.0
    # Custom Ray resources each training worker needs, e.g. {trainer_node: 1} (a node label from `ray start`).
    worker_resources: dict[str, Annotated[float, Field(gt=0)]] = {}
    storage_path: Path | None = None  # Ray storage; default <run_dir>/ray
    max_failures: NonNegInt = 1
    num_to_keep: PosInt = 2
    checkpoint_every_epochs: PosInt = 1
    fault_injection: FaultInjectionConfig = FaultInjectionConfig()
    remote_fr: RemoteFRConfig = RemoteFRConfig()
    # Where an in-process run computes (stages, evaluation, calibration, the mini zoo's training):
    # "auto" = the first CUDA GPU if there is one, else the CPU; or "cpu", "cuda", "cuda:1", "mps".
    # A Ray Train worker uses the device Ray gives it (compute.use_gpu); experiments/devices.py.
    device: Annotated[str, Field(pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")] = "auto"
    # Autocast dtype of the forward passes (experiments/devices.py): bf16 on CPUs and Ampere+ GPUs; fp16 adds a
    # gradient scaler. Not in the digest (like all of compute): a bf16 run resumes an fp32 checkpoint.
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False  # NHWC memory format for the conv nets and their inputs (faster on GPUs)
    # torch.compile of stage 1's G/D and of the FR models used without second-order gradients (evaluation,
    # first-order and ensemble attacks). Off by default: compilation costs minutes and cannot double-backward.
    compile: bool = False
    data_workers: NonNegInt = 0  # DataLoader worker processes (0: load in the training process)
    pin_memory: Literal["auto", "on", "off"] = "auto"  # auto: pinned host memory when training on CUDA

    @model_validator(mode="after")
    def _worker_resources_are_custom(self) -> ComputeConfig:
        _custom_resources(self.worker_resources, "compute.worker_resources")
        return self


# Sections that say where and how a run executes or is recorded, not what it
# computes (test-only switches such as compute.fault_injection included):
# they do not enter the config digest.
NOT_IN_DIGEST: tuple[str, ...] = ("compute", "tracking")


class ErasableMaskConfig(_Strict):
    seed: NonNegInt = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    protection: ProtectionConfig = ProtectionConfig()
    stage1: Stage1Config = Stage1Config()
    stage2: Stage2Config = Stage2Config()
    stage3: Stage3Config = Stage3Config()
    attack: AttackConfig = AttackConfig()
    noise_pool: NoisePoolConfig = NoisePoolConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    tracking: TrackingConfig = TrackingConfig()
    compute: ComputeConfig = ComputeConfig()
    # The config-group options it was composed from (experiments/config/groups.py),
    # set by load_config; informational, not part of the config or its digest.
    _groups: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def groups(self) -> dict[str, str]:
        """The chosen group options, ``{"data": "miniworld", ...}`` (empty when none or not loaded from a file)."""
        return dict(self._groups)

    @groups.setter
    def groups(self, chosen: dict[str, str]) -> None:
        self._groups = dict(chosen)

    @model_validator(mode="after")
    def _registered_models(self) -> "ErasableMaskConfig":
        # attack.surrogates / black_box name registered models (AttackConfig checks that first).
        size, layers = self.data.image_size, max(self.model.enc_layers, self.model.dis_layers)
        if size % 2**layers:  # models/attgan.py _check_size: G and D halve the image once per layer
            ok = [s for s in range(64, 513) if s % 2**layers == 0]
            raise ValueError(
                f"data.image_size={size} does not suit model.enc_layers={self.model.enc_layers} / "
                f"model.dis_layers={self.model.dis_layers}: AttGAN halves the image once per layer, so the size must "
                f"be a multiple of 2**{layers}={2**layers} (e.g. {', '.join(map(str, ok[:4]))}, ...); "
                f"change data.image_size or the layer counts"
            )
        used = [*self.attack.surrogates, *self.attack.black_box]
        bad = [m for m in self.compute.remote_fr.models if m not in used]
        if bad:
            raise ValueError(f"compute.remote_fr.models: {bad} are not FR models of this experiment; "
                             f"name some of attack.surrogates / attack.black_box: {used}")
        from erasablemask.models.noise_pool import EVAL_TRANSFORMS

        bad = [t for t in self.evaluation.transforms if t not in EVAL_TRANSFORMS]
        if bad:
            raise ValueError(f"evaluation.transforms: unknown {bad}; allowed: {sorted(EVAL_TRANSFORMS)}")
        return self

    def digest(self) -> str:
        """Stable hash of what the experiment computes (run folders, checkpoint and cache keys).

        The :data:`NOT_IN_DIGEST` sections (compute, tracking) are hashed at
        their schema defaults: changing them leaves the digest alone, and a
        config that never changed them keeps the digest it had before they
        were left out.
        """
        tree = self.model_dump(mode="json")
        for section in NOT_IN_DIGEST:
            tree[section] = type(getattr(self, section))().model_dump(mode="json")
        blob = json.dumps(tree, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def flat(self) -> dict[str, Any]:
        """Dotted key → value, e.g. ``{"stage2.lambda_adv": 200.0}`` (for MLflow params)."""
        out: dict[str, Any] = {}

        def walk(prefix: str, node: Any) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = node

        walk("", self.model_dump(mode="json"))
        return out


