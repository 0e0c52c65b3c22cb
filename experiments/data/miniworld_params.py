"""Random parameters of the synthetic mini-world: identities and images.

An *identity* is a stable set of geometry (head shape, jaw, eye spacing and
size, nose, mouth, ears), skin (tone, rosiness, moles, freckles, a birthmark),
eye colour, hair style and natural hair colour, and per-attribute
*propensities*. An *image* of an identity draws the 13 AttGAN attributes from
those propensities plus nuisance (pose jitter, lighting, background, shirt).

Attribute model (decided here; the prevalences are higher than CelebA's for
rare attributes so that every attribute is learnable in a small world):

* Male: an identity trait, constant over an identity's images (50 % of
  identities). CelebA labels are almost always constant per person, and sex
  changes the face geometry, which is part of identity here.
* Young: mostly an identity trait (75 % of identities are young); 12 % of an
  identity's images show the other age (photos taken years apart).
* Bald: 25 % of male identities are balding (70 % of their images), everyone
  else 1 %. Bald and Bangs never co-occur (AttGAN's conflict rule).
* Hair colour: each identity has a natural colour (black / blond / brown /
  other = red, dyed pink or grey); 55 % of images show it, the rest a dyed
  colour. Black_Hair, Blond_Hair, Brown_Hair are one-hot or all 0 ("other").
* Bangs, Bushy_Eyebrows, Eyeglasses, Mouth_Slightly_Open, Pale_Skin: per
  image, with identity-specific propensities.
* Facial hair (males only): beard with an identity propensity; a mustache
  only together with a beard, so Mustache = 1 implies No_Beard = 0 (AttGAN's
  Mustache/No_Beard conflict rule).

Every draw uses a fixed number of random numbers, so changing one rule never
shifts the random stream of the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from erasablemask.experiments.data.attributes import ATTRIBUTES

HAIR_BLACK, HAIR_BLOND, HAIR_BROWN, HAIR_OTHER = 0, 1, 2, 3
HAIR_RGB: dict[int, tuple[float, float, float]] = {
    HAIR_BLACK: (30.0, 25.0, 25.0),
    HAIR_BLOND: (226.0, 194.0, 122.0),
    HAIR_BROWN: (116.0, 74.0, 42.0),
}
OTHER_HAIR_RGB: tuple[tuple[float, float, float], ...] = (
    (176.0, 66.0, 30.0),  # red
    (206.0, 112.0, 150.0),  # dyed pink
    (168.0, 168.0, 164.0),  # grey
)
IRIS_RGB: tuple[tuple[float, float, float], ...] = (
    (55.0, 32.0, 18.0),
    (105.0, 66.0, 32.0),
    (66.0, 110.0, 170.0),
    (72.0, 124.0, 70.0),
    (120.0, 124.0, 118.0),
    (150.0, 112.0, 48.0),
)
FRAME_RGB: tuple[tuple[float, float, float], ...] = (
    (15.0, 15.0, 18.0),
    (80.0, 45.0, 25.0),
    (140.0, 140.0, 150.0),
    (150.0, 25.0, 30.0),
)
SKIN_DARK = np.array([86.0, 56.0, 40.0])
SKIN_LIGHT = np.array([240.0, 204.0, 180.0])
SKIN_PINK = np.array([16.0, -6.0, 4.0])  # undertone directions: pink x [0, 1], olive x [-0.5, 1] per identity
SKIN_OLIVE = np.array([4.0, 10.0, -14.0])


@dataclass(frozen=True)
class IdentityParams:
    """Stable parameters of one identity; lengths are fractions of the image side.

    Geometry is stored sex-neutral; ``sexed`` applies the Male label (wider
    head, squarer jaw, thicker brows, shorter hair) at render time, so that a
    ground-truth Male edit keeps everything else of the identity.
    """

    male: bool
    young: bool
    skin: np.ndarray  # (3,) RGB 0-255
    rosy: float
    head_rx: float
    head_ry: float
    jaw_n: float  # superellipse exponent of the lower face: 2 oval .. 2.5 (+0.5 when male)
    chin_taper: float
    eye_dx: float
    eye_y: float
    eye_rx: float
    eye_ratio: float
    eye_tilt: float  # radians, outer corner up when positive
    iris: np.ndarray
    brow_gap: float
    brow_thick: float
    brow_arch: float
    brow_tilt: float
    nose_len: float
    nose_w: float
    nose_bulb: float
    mouth_y: float
    mouth_w: float
    lip_thick: float
    lip: np.ndarray
    smile: float
    ear_ry: float
    ear_y: float
    moles: np.ndarray  # (k, 3): x, y in head radii from the face centre, radius
    freckles: np.ndarray  # (m, 2) in head radii; empty when none
    birthmark: np.ndarray  # (4,): x, y, rx, ry; rx == 0 when none
    hair_natural: int
    other_hair: np.ndarray  # (3,) RGB used for HAIR_OTHER
    hairline: float
    part: float
    hair_length_u: float  # long hair when below 0.1 (male) or 0.85 (female); see ``sexed``
    hair_volume: float
    hairline_shape: float  # exponent of the forehead hairline arc: low = rounded, high = flat
    glasses_round: bool
    frame: np.ndarray
    p_bald: float
    p_bangs: float
    p_natural_hair: float
    p_bushy: float
    p_glasses: float
    p_mouth_open: float
    p_beard: float
    p_mustache: float
    p_pale: float


@dataclass(frozen=True)
class ImageParams:
    """Per-image attributes and nuisance."""

    attrs: np.ndarray  # (13,) uint8 in ATTRIBUTES order
    hair_shade: float
    skin_shade: float
    shift: tuple[float, float]
    rotation: float  # radians
    scale: float
    light_angle: float
    light_strength: float
    brightness: float
    cast: np.ndarray  # (3,) multiplicative colour cast around 1
    bg_kind: int
    bg_colors: np.ndarray  # (3, 3) RGB
    bg_geometry: np.ndarray  # (8,) uniform numbers driving the background layout
    shirt: np.ndarray  # (3,)
    noise_seed: int


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    grey = rng.uniform(40, 220)
    tint = rng.normal(0, 35, 3)
    return np.clip(grey + tint, 10, 245)


def sample_identity(rng: np.random.Generator) -> IdentityParams:
    """Draw one identity. The random stream consumed is fixed in length."""
    u = rng.random(64)
    male = bool(u[0] < 0.5)
    skin_t = u[1] ** 0.8
    undertone = SKIN_PINK * u[2] + SKIN_OLIVE * (1.5 * u[49] - 0.5)
    skin = SKIN_DARK + (SKIN_LIGHT - SKIN_DARK) * skin_t + undertone
    n_moles = int(u[3] * 4)  # 0..3
    mole_xy = rng.uniform([-0.65, -0.25], [0.65, 0.75], size=(3, 2))
    mole_r = rng.uniform(0.009, 0.016, size=(3, 1))
    moles = np.concatenate([mole_xy, mole_r], axis=1)[:n_moles]
    freckle_xy = rng.uniform([-0.6, 0.05], [0.6, 0.4], size=(18, 2))
    freckles = freckle_xy if u[4] < 0.3 else np.zeros((0, 2))
    bm = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.5, 0.6), rng.uniform(0.02, 0.035), rng.uniform(0.014, 0.025)])
    birthmark = bm if u[5] < 0.35 else np.zeros(4)
    hair_natural = int(np.searchsorted([0.33, 0.53, 0.83], u[6], side="right"))
    balding = male and u[7] < 0.25
    young = bool(u[8] < 0.75)
    bushy_prone = u[9] < (0.35 if male else 0.15)
    glasses_prone = u[10] < 0.25
    pale_prone = u[11] < 0.2
    lerp = lambda lo, hi, t: lo + (hi - lo) * t  # noqa: E731
    return IdentityParams(
        male=male,
        young=young,
        skin=np.clip(skin, 0, 255),
        rosy=lerp(0.0, 0.45, u[12]),
        head_rx=lerp(0.21, 0.28, u[13]),
        head_ry=lerp(0.29, 0.36, u[14]),
        jaw_n=lerp(2.0, 2.5, u[15]),
        chin_taper=lerp(0.10, 0.35, u[16]),
        eye_dx=lerp(0.08, 0.13, u[17]),
        eye_y=lerp(-0.015, 0.03, u[18]),
        eye_rx=lerp(0.03, 0.05, u[19]),
        eye_ratio=lerp(0.45, 0.7, u[20]),
        eye_tilt=lerp(-0.15, 0.15, u[21]),
        iris=np.array(IRIS_RGB[int(u[22] * len(IRIS_RGB))]),
        brow_gap=lerp(0.035, 0.055, u[23]),
        brow_thick=lerp(0.009, 0.016, u[24]),
        brow_arch=lerp(0.0, 0.02, u[25]),
        brow_tilt=lerp(-0.012, 0.012, u[26]),
        nose_len=lerp(0.075, 0.12, u[27]),
        nose_w=lerp(0.025, 0.045, u[28]),
        nose_bulb=lerp(0.6, 1.3, u[29]),
        mouth_y=lerp(0.15, 0.2, u[30]),
        mouth_w=lerp(0.055, 0.085, u[31]),
        lip_thick=lerp(0.008, 0.016, u[32]),
        lip=np.clip(skin * 0.55 + np.array([190.0, 70.0, 80.0]) * 0.45 * lerp(0.7, 1.2, u[33]), 0, 255),
        smile=lerp(-0.006, 0.012, u[34]),
        ear_ry=lerp(0.045, 0.065, u[35]),
        ear_y=lerp(0.0, 0.03, u[36]),
        moles=moles,
        freckles=freckles,
        birthmark=birthmark,
        hair_natural=hair_natural,
        other_hair=np.array(OTHER_HAIR_RGB[int(u[37] * len(OTHER_HAIR_RGB))]),
        hairline=lerp(0.45, 0.7, u[38]),
        part=lerp(-1.0, 1.0, u[39]),
        hair_length_u=float(u[40]),
        hair_volume=lerp(0.006, 0.025, u[41]),
        hairline_shape=lerp(1.3, 2.6, u[48]),
        glasses_round=bool(u[42] < 0.5),
        frame=np.array(FRAME_RGB[int(u[43] * len(FRAME_RGB))]),
        p_bald=0.7 if balding else 0.01,
        p_bangs=lerp(0.2, 0.7, u[44]) if not male else lerp(0.0, 0.25, u[44]),
        p_natural_hair=0.55,
        p_bushy=0.7 if bushy_prone else 0.08,
        p_glasses=0.6 if glasses_prone else 0.05,
        p_mouth_open=lerp(0.3, 0.6, u[45]),
        p_beard=lerp(0.1, 0.7, u[46]) if male else 0.0,
        p_mustache=lerp(0.2, 0.8, u[47]),
        p_pale=0.35 if pale_prone else 0.05,
    )


def sample_image(rng: np.random.Generator, ident: IdentityParams) -> ImageParams:
    """Draw one image of ``ident``: its 13 attributes and nuisance."""
    u = rng.random(32)
    bald = u[0] < ident.p_bald
    bangs = (not bald) and u[1] < ident.p_bangs
    if u[2] < ident.p_natural_hair:
        hair = ident.hair_natural
    else:
        others = [h for h in range(4) if h != ident.hair_natural]
        hair = others[int(u[3] * 3)]
    beard = u[8] < ident.p_beard
    mustache = beard and u[9] < ident.p_mustache
    young = ident.young if u[11] >= 0.12 else not ident.young
    values = {
        "Bald": bald,
        "Bangs": bangs,
        "Black_Hair": hair == HAIR_BLACK,
        "Blond_Hair": hair == HAIR_BLOND,
        "Brown_Hair": hair == HAIR_BROWN,
        "Bushy_Eyebrows": u[4] < ident.p_bushy,
        "Eyeglasses": u[5] < ident.p_glasses,
        "Male": ident.male,
        "Mouth_Slightly_Open": u[6] < ident.p_mouth_open,
        "Mustache": mustache,
        "No_Beard": not beard,
        "Pale_Skin": u[7] < ident.p_pale,
        "Young": young,
    }
    attrs = np.array([int(values[name]) for name in ATTRIBUTES], dtype=np.uint8)
    bg_colors = np.stack([_muted_colour(rng) for _ in range(3)])
    return ImageParams(
        attrs=attrs,
        hair_shade=0.88 + 0.24 * u[12],
        skin_shade=0.96 + 0.08 * u[13],
        shift=(float(np.clip(rng.normal(0, 0.02), -0.05, 0.05)), float(np.clip(rng.normal(0, 0.015), -0.04, 0.04))),
        rotation=float(np.clip(rng.normal(0, 0.07), -0.17, 0.17)),
        scale=0.94 + 0.12 * u[14],
        light_angle=2 * np.pi * u[15],
        light_strength=0.25 * u[16],
        brightness=0.88 + 0.2 * u[17],
        cast=1 + rng.normal(0, 0.03, 3),
        bg_kind=int(u[18] * 4),
        bg_colors=bg_colors,
        bg_geometry=rng.random(8),
        shirt=_muted_colour(rng),
        noise_seed=int(rng.integers(0, 2**31 - 1)),
    )


def hair_colour(ident: IdentityParams, attrs: np.ndarray) -> np.ndarray:
    """RGB hair colour shown in an image with labels ``attrs`` (before ageing)."""
    a = dict(zip(ATTRIBUTES, np.asarray(attrs).tolist()))
    for flag, key in (("Black_Hair", HAIR_BLACK), ("Blond_Hair", HAIR_BLOND), ("Brown_Hair", HAIR_BROWN)):
        if a[flag]:
            return np.array(HAIR_RGB[key])
    return ident.other_hair.copy()


def natural_hair_colour(ident: IdentityParams) -> np.ndarray:
    """RGB of the identity's natural hair (used for eyebrows)."""
    if ident.hair_natural in HAIR_RGB:
        return np.array(HAIR_RGB[ident.hair_natural])
    return ident.other_hair.copy()


@dataclass(frozen=True)
class SexedIdentity:
    """Identity geometry after applying the Male label (what the renderer draws)."""

    base: IdentityParams
    male: bool
    head_rx: float
    jaw_n: float
    chin_taper: float
    brow_thick: float
    long_hair: bool
    hair_volume: float

    def __getattr__(self, name: str):  # everything else comes from the identity
        if name.startswith("__") or name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)


def sexed(ident: IdentityParams, male: bool) -> SexedIdentity:
    """Apply the Male label to an identity's sex-neutral geometry."""
    return SexedIdentity(
        base=ident,
        male=male,
        head_rx=ident.head_rx + (0.025 if male else 0.0),
        jaw_n=ident.jaw_n + (0.5 if male else 0.0),
        chin_taper=ident.chin_taper - (0.08 if male else 0.0),
        brow_thick=ident.brow_thick + (0.003 if male else 0.0),
        long_hair=ident.hair_length_u < (0.1 if male else 0.85),
        hair_volume=ident.hair_volume + (0.0 if male else 0.02),
    )
