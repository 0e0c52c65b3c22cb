"""Draw one mini-world face from identity and image parameters.

Faces are drawn with PIL polygons on a canvas ``supersample`` times larger
than the output and box-downsampled (anti-aliasing), then lit and noised in
numpy at the output size. Coordinates are fractions of the image side, x to
the right, y down; the pose jitter (shift, rotation, scale) is applied to
every face vertex, the background is not posed.

Skin texture (opt-in, :func:`skin_texture_field`): a fine identity-specific
pattern in face coordinates (so it moves with the pose), added to the head's
skin before lighting. Real faces carry such fine, identity-specific texture
and real FR models, trained on large shared data, use it; it is what lets a
perturbation made on one FR model move another (DESIGN.md, "Mini-world
models"). Off by default: a world without it renders as before.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from erasablemask.experiments.data.attributes import ATTRIBUTES
from erasablemask.experiments.data.miniworld_params import (
    IdentityParams,
    ImageParams,
    SexedIdentity,
    hair_colour,
    natural_hair_colour,
    sexed,
)

CX, CY = 0.5, 0.47  # face centre
_A = {name: i for i, name in enumerate(ATTRIBUTES)}
_PALE = np.array([250.0, 238.0, 232.0])
_GREY = np.array([182.0, 182.0, 182.0])


def _rgb(c: np.ndarray | tuple[float, ...]) -> tuple[int, int, int]:
    r, g, b = (int(round(min(255.0, max(0.0, float(v))))) for v in c)
    return (r, g, b)


def _ellipse_pts(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 32) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


class _Painter:
    """PIL drawing in face coordinates with the image's pose applied."""

    def __init__(self, img: Image.Image, p: ImageParams) -> None:
        self.size = img.size[0]
        self.draw = ImageDraw.Draw(img)
        c, s = math.cos(p.rotation), math.sin(p.rotation)
        self.mat = p.scale * np.array([[c, -s], [s, c]])
        self.offset = np.array([CX + p.shift[0], CY + p.shift[1]])
        self.scale = p.scale

    def _tx(self, pts: np.ndarray) -> list[float]:
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        out = (pts - np.array([CX, CY])) @ self.mat.T + self.offset
        return (out * self.size).ravel().tolist()

    def poly(self, pts: np.ndarray, fill: np.ndarray) -> None:
        self.draw.polygon(self._tx(pts), fill=_rgb(fill))

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: np.ndarray, angle: float = 0.0) -> None:
        self.poly(_ellipse_pts(cx, cy, rx, ry, angle), fill)

    def line(self, pts: np.ndarray, fill: np.ndarray, width: float) -> None:
        w = max(1, int(round(width * self.size * self.scale)))
        self.draw.line(self._tx(pts), fill=_rgb(fill), width=w, joint="curve")


def head_contour(ident: SexedIdentity, n: int = 72, grow: float = 0.0) -> np.ndarray:
    """(n, 2) head outline: elliptic cranium, superellipse jaw tapering to the chin."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ct, st = np.cos(t), np.sin(t)
    rx, ry = ident.head_rx + grow, ident.head_ry + grow
    e = 2.0 / ident.jaw_n
    lower = st > 0
    x = np.where(lower, np.sign(ct) * np.abs(ct) ** e, ct) * rx
    y = np.where(lower, np.abs(st) ** e, st) * ry
    x = x * np.where(lower, 1 - ident.chin_taper * (y / ry) ** 2, 1.0)
    return np.stack([CX + x, CY + y], axis=1)


def _background(img: Image.Image, p: ImageParams) -> None:
    draw, s, g = ImageDraw.Draw(img), img.size[0], p.bg_geometry
    c0, c1, c2 = p.bg_colors
    draw.rectangle([0, 0, s, s], fill=_rgb(c0))
    if p.bg_kind == 0:  # vertical two-tone gradient
        bands = 24
        for k in range(bands):
            draw.rectangle([0, k * s / bands, s, (k + 1) * s / bands], fill=_rgb(c0 + (c1 - c0) * k / (bands - 1)))
    elif p.bg_kind == 1:  # diagonal stripes
        period, slope = s * (0.12 + 0.2 * g[0]), (g[1] - 0.5) * 2
        for k in range(-8, 16):
            x0 = k * period
            draw.polygon([x0, 0, x0 + period / 2, 0, x0 + period / 2 + slope * s, s, x0 + slope * s, s], fill=_rgb(c1))
    elif p.bg_kind == 2:  # soft blobs
        for k in range(4):
            cx, cy, r = g[2 * k] * s, g[2 * k + 1] * s, s * (0.15 + 0.15 * g[(k + 3) % 8])
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_rgb(c1 if k % 2 else c2))
    else:  # a window / door frame
        x0, y0 = g[0] * 0.5 * s, g[1] * 0.3 * s
        draw.rectangle([x0, y0, x0 + s * (0.3 + 0.3 * g[2]), y0 + s * (0.4 + 0.4 * g[3])], fill=_rgb(c1))
        draw.line([0, y0 + s * 0.6, s, y0 + s * 0.6], fill=_rgb(c2), width=max(1, s // 40))


def _hair_cap(ident: SexedIdentity, vol: float, hair_side_y: float) -> np.ndarray:
    """Polygon of the hair on top of the head, from temple to temple over the hairline."""
    rx, ry = ident.head_rx + vol, ident.head_ry + vol
    a = math.asin(max(-0.9, min(0.9, (hair_side_y - CY) / ry)))
    t = np.linspace(a, -np.pi - a, 36)
    outer = np.stack([CX + rx * np.cos(t), CY + ry * np.sin(t)], axis=1)
    top = CY - ident.head_ry * ident.hairline
    apex = CX + ident.part * 0.05
    xs = np.linspace(CX - ident.head_rx * 0.97, CX + ident.head_rx * 0.97, 21)
    half = np.where(xs < apex, apex - (CX - ident.head_rx), CX + ident.head_rx - apex)
    inner_y = top + (hair_side_y - top) * (np.abs(xs - apex) / half) ** ident.hairline_shape
    inner = np.stack([xs, inner_y], axis=1)
    return np.concatenate([outer, inner], axis=0)


def _features(pt: _Painter, ident: SexedIdentity, a: dict[str, int], skin: np.ndarray, hair: np.ndarray) -> None:
    """Eyes, brows, nose, mouth, facial hair, marks and wrinkles (drawn over the head)."""
    ey = CY + ident.eye_y
    my = ey + ident.mouth_y
    nose_y = ey + ident.nose_len
    mw = ident.mouth_w
    dark = skin * 0.6
    beard_rgb = hair * 0.85
    for mx, myy, r in ident.moles:
        pt.ellipse(CX + mx * ident.head_rx, CY + myy * ident.head_ry, r, r, np.array([70.0, 42.0, 32.0]))
    for fx, fy in ident.freckles:
        pt.ellipse(CX + fx * ident.head_rx, CY + fy * ident.head_ry, 0.005, 0.005, skin * 0.78)
    if ident.birthmark[2] > 0:
        bx, by, brx, bry = ident.birthmark
        pt.ellipse(CX + bx * ident.head_rx, CY + by * ident.head_ry, brx, bry, skin * 0.6 + np.array([150.0, 60, 60]) * 0.4)
    for side in (-1, 1):
        pt.ellipse(CX + side * ident.head_rx * 0.55, ey + 0.07, 0.035, 0.022, skin * (1 - ident.rosy) + np.array([220.0, 90, 90]) * ident.rosy)
    if not a["Young"]:  # ageing: forehead lines, nasolabial folds, crow's feet, eye bags
        top = CY - ident.head_ry * ident.hairline
        for f in (0.45, 0.7):
            y = top + (ey - ident.brow_gap - top) * f
            pt.line(np.array([[CX - 0.085, y + 0.006], [CX, y], [CX + 0.085, y + 0.006]]), dark, 0.011)
        for side in (-1, 1):
            pt.line(np.array([[CX + side * ident.nose_w * 1.4, nose_y - 0.01], [CX + side * (mw + 0.012), my + 0.01], [CX + side * (mw + 0.008), my + 0.035]]), dark, 0.011)
            ox = CX + side * (ident.eye_dx + ident.eye_rx * 1.3)
            for dy in (-0.012, 0.0, 0.012):
                pt.line(np.array([[ox, ey + dy * 0.5], [ox + side * 0.022, ey + dy * 1.6]]), dark, 0.006)
            pt.line(np.array([[CX + side * (ident.eye_dx - ident.eye_rx * 0.8), ey + 0.022], [CX + side * ident.eye_dx, ey + 0.03], [CX + side * (ident.eye_dx + ident.eye_rx * 0.8), ey + 0.022]]), skin * 0.8, 0.007)
    if not a["No_Beard"]:  # full beard over jaw and chin; the mouth is drawn on top
        contour = head_contour(ident, n=96, grow=0.004)
        y_cut = nose_y + 0.005
        low = contour[contour[:, 1] > y_cut]
        inner = np.array([[CX - ident.head_rx * 0.55, y_cut + 0.035], [CX - mw * 1.25, my - 0.012], [CX + mw * 1.25, my - 0.012], [CX + ident.head_rx * 0.55, y_cut + 0.035]])
        pt.poly(np.concatenate([low, inner], axis=0), beard_rgb)
    # nose: bridge shadow, bulb, nostrils
    pt.line(np.array([[CX - 0.012, ey + 0.01], [CX - ident.nose_w * 0.55, nose_y - 0.012]]), skin * 0.8, 0.009)
    pt.ellipse(CX, nose_y, ident.nose_w * ident.nose_bulb, ident.nose_w * 0.5, skin * 0.88)
    for side in (-1, 1):
        pt.ellipse(CX + side * ident.nose_w * 0.55, nose_y + 0.006, 0.009, 0.006, skin * 0.45)
    # mouth
    if a["Mouth_Slightly_Open"]:
        pt.ellipse(CX, my + 0.012, mw * 0.9, 0.022 + ident.lip_thick * 0.6, ident.lip)
        pt.ellipse(CX, my + 0.012, mw * 0.75, 0.02 + ident.lip_thick * 0.3, np.array([60.0, 16.0, 24.0]))
        pt.poly(np.array([[CX - mw * 0.6, my - 0.004], [CX + mw * 0.6, my - 0.004], [CX + mw * 0.55, my + 0.006], [CX - mw * 0.55, my + 0.006]]), np.array([236.0, 232.0, 222.0]))
    else:
        lt = ident.lip_thick
        upper = np.array([[CX - mw, my - ident.smile], [CX - mw * 0.4, my - lt], [CX, my - lt * 0.7], [CX + mw * 0.4, my - lt], [CX + mw, my - ident.smile], [CX, my + 0.002]])
        lower = np.array([[CX - mw * 0.9, my - ident.smile * 0.8], [CX, my + 0.002], [CX + mw * 0.9, my - ident.smile * 0.8], [CX + mw * 0.5, my + lt * 1.3], [CX - mw * 0.5, my + lt * 1.3]])
        pt.poly(upper, ident.lip * 0.9)
        pt.poly(lower, ident.lip)
        pt.line(np.array([[CX - mw, my - ident.smile], [CX, my + 0.002], [CX + mw, my - ident.smile]]), ident.lip * 0.45, 0.007)
    if a["Mustache"]:
        pt.poly(np.array([[CX - mw * 1.35, my + 0.014], [CX - mw * 1.0, my - 0.028], [CX, my - 0.042], [CX + mw * 1.0, my - 0.028], [CX + mw * 1.35, my + 0.014], [CX + mw * 0.6, my - 0.006], [CX, my - 0.01], [CX - mw * 0.6, my - 0.006]]), beard_rgb * 0.55)
    if a["Eyeglasses"]:
        _glasses(pt, ident, skin, frame=False)
    # eyes
    ery = ident.eye_rx * ident.eye_ratio
    for side in (-1, 1):
        ex, tilt = CX + side * ident.eye_dx, -side * ident.eye_tilt
        pt.ellipse(ex, ey, ident.eye_rx, ery, np.array([240.0, 238.0, 232.0]), angle=tilt)
        r = min(ery * 1.05, ident.eye_rx * 0.55)
        pt.ellipse(ex, ey, r, r, ident.iris)
        pt.ellipse(ex, ey, r * 0.45, r * 0.45, np.array([12.0, 10.0, 10.0]))
        lid = _ellipse_pts(ex, ey, ident.eye_rx, ery, tilt, n=24)[13:24]
        pt.line(lid, np.array([35.0, 25.0, 25.0]), 0.007)
    # eyebrows (natural colour, a little darker; bushy = thicker, longer, darker)
    brow_rgb = natural_hair_colour(ident) * 0.7
    bushy = a["Bushy_Eyebrows"]
    thick = ident.brow_thick * (2.8 if bushy else 1.0)
    for side in (-1, 1):
        x0 = CX + side * (ident.eye_dx - ident.eye_rx * 1.1)
        x1 = CX + side * (ident.eye_dx + ident.eye_rx * (1.5 if bushy else 1.25))
        xs = np.linspace(x0, x1, 6)
        f = np.linspace(0, 1, 6)
        ys = ey - ident.brow_gap - ident.brow_arch * np.sin(np.pi * f ** 0.8) - ident.brow_tilt * f
        pt.line(np.stack([xs, ys], 1), brow_rgb * (0.75 if bushy else 1.0), thick)


def _glasses(pt: _Painter, ident: SexedIdentity, skin: np.ndarray, frame: bool) -> None:
    """Eyeglasses: tinted lenses (``frame=False``, drawn under the eyes) or the frame (over everything)."""
    ey = CY + ident.eye_y
    r = ident.eye_rx * 1.75
    w = 0.022
    for side in (-1, 1):
        ex = CX + side * ident.eye_dx
        if ident.glasses_round:
            ring = _ellipse_pts(ex, ey + 0.003, r, r * 0.9, n=28)
        else:
            ring = np.array([[ex - r, ey - r * 0.7], [ex + r, ey - r * 0.7], [ex + r, ey + r * 0.75], [ex - r, ey + r * 0.75]])
        if not frame:
            pt.poly(ring, skin * 0.4 + np.array([200.0, 225.0, 245.0]) * 0.6)
            continue
        pt.line(np.concatenate([ring, ring[:1]], 0), ident.frame, w)
        pt.line(np.array([[ex + side * r, ey - 0.005], [CX + side * (ident.head_rx + 0.005), ey - 0.003]]), ident.frame, w * 0.8)
    if frame:
        pt.line(np.array([[CX - ident.eye_dx + r, ey - 0.004], [CX, ey - 0.01], [CX + ident.eye_dx - r, ey - 0.004]]), ident.frame, w * 0.8)


TEXTURE_GRID = 128  # samples per face-coordinate unit of a skin texture field


def skin_texture_field(seed: int, identity: int, scale: float) -> np.ndarray:
    """The skin texture of ``identity`` in a world of ``seed``: ``(3, G, G)``, zero mean, unit std per channel.

    White Gaussian noise on a ``G = TEXTURE_GRID`` grid over the face-coordinate
    square ``[0, 1]²``, low-passed by a Gaussian of standard deviation ``scale``
    (face-coordinate units; 0.025 ≈ 1.6 px at 64 px) with circular borders.
    Deterministic in its arguments; its random stream is its own (no other draw moves).
    """
    if scale <= 0:
        raise ValueError(f"skin texture scale must be > 0 (face-coordinate units); got {scale}")
    noise = np.random.default_rng([seed, 5, identity]).standard_normal((3, TEXTURE_GRID, TEXTURE_GRID))
    f = np.fft.fftfreq(TEXTURE_GRID)
    sigma = scale * TEXTURE_GRID
    gain = np.exp(-2 * (math.pi * sigma) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
    field = np.real(np.fft.ifft2(np.fft.fft2(noise) * gain))
    field -= field.mean(axis=(1, 2), keepdims=True)
    return field / field.std(axis=(1, 2), keepdims=True)


def _add_skin_texture(
    img: np.ndarray, ident: SexedIdentity, p: ImageParams, field: np.ndarray, amplitude: float, supersample: int
) -> np.ndarray:
    """``img`` (output size, float RGB) plus ``amplitude`` x ``field`` sampled in face coordinates over the head."""
    n = img.shape[0]
    mask_img = Image.new("L", (n * supersample, n * supersample))
    pt = _Painter(mask_img, p)
    pt.draw.polygon(pt._tx(head_contour(ident, grow=-0.012)), fill=255)
    mask = np.asarray(mask_img.reduce(supersample), dtype=np.float64) / 255.0
    # output pixel centres -> face coordinates (the inverse of _Painter's pose transform)
    centres = (np.arange(n) + 0.5) / n
    gx, gy = np.meshgrid(centres, centres)
    pix = np.stack([gx.ravel(), gy.ravel()], 1) - pt.offset
    face = pix @ np.linalg.inv(pt.mat).T + np.array([CX, CY])
    u = face * TEXTURE_GRID - 0.5
    i0 = np.floor(u).astype(int)
    w = u - i0
    g = TEXTURE_GRID
    x0, y0, x1, y1 = i0[:, 0] % g, i0[:, 1] % g, (i0[:, 0] + 1) % g, (i0[:, 1] + 1) % g
    wx, wy = w[:, 0], w[:, 1]
    tex = (field[:, y0, x0] * (1 - wx) * (1 - wy) + field[:, y0, x1] * wx * (1 - wy)
           + field[:, y1, x0] * (1 - wx) * wy + field[:, y1, x1] * wx * wy)
    return img + amplitude * tex.T.reshape(n, n, 3) * mask[..., None]


def render_face(
    ident: IdentityParams,
    p: ImageParams,
    size: int = 64,
    supersample: int = 4,
    *,
    texture: np.ndarray | None = None,
    texture_amplitude: float = 0.0,
) -> np.ndarray:
    """Render one face.

    Args:
        ident: identity parameters.
        p: image parameters (attributes and nuisance).
        size: output side in pixels.
        supersample: drawing canvas is ``size * supersample`` pixels (anti-aliasing).
        texture: the identity's :func:`skin_texture_field` (``None``: no skin texture).
        texture_amplitude: its standard deviation in 0-255 levels, before lighting.

    Returns:
        (size, size, 3) uint8 RGB array; deterministic in its arguments.
    """
    a = dict(zip(ATTRIBUTES, p.attrs.tolist()))
    ident = sexed(ident, bool(a["Male"]))
    s = size * supersample
    img = Image.new("RGB", (s, s))
    _background(img, p)
    pt = _Painter(img, p)
    skin = ident.skin * p.skin_shade
    if a["Pale_Skin"]:  # lighter and less saturated than the identity's own tone
        skin = skin + 0.5 * (_PALE - skin)
        skin = skin * 0.85 + skin.mean() * 0.15
    hair = hair_colour(ident, p.attrs) * p.hair_shade
    if not a["Young"]:
        hair = hair * 0.6 + _GREY * 0.4
    shirt_y = CY + ident.head_ry + 0.07
    pt.poly(np.array([[CX - 0.5, 1.1], [CX - 0.44, shirt_y + 0.08], [CX - 0.26, shirt_y], [CX - 0.08, shirt_y - 0.01], [CX, shirt_y + 0.07], [CX + 0.08, shirt_y - 0.01], [CX + 0.26, shirt_y], [CX + 0.44, shirt_y + 0.08], [CX + 0.5, 1.1]]), p.shirt)
    neck_w = ident.head_rx * (0.5 if ident.male else 0.42)
    pt.poly(np.array([[CX - neck_w, CY + ident.head_ry * 0.5], [CX + neck_w, CY + ident.head_ry * 0.5], [CX + neck_w, shirt_y + 0.01], [CX, shirt_y + 0.065], [CX - neck_w, shirt_y + 0.01]]), skin * 0.85)
    vol = ident.hair_volume
    long_hair = ident.long_hair and not a["Bald"]
    if long_hair:  # hair behind the head down to the shoulders
        t = np.linspace(0, -np.pi, 30)
        rx, ry = ident.head_rx + vol + 0.02, ident.head_ry + vol
        back = np.stack([CX + rx * np.cos(t), CY + ry * np.sin(t)], 1)
        bottom = CY + ident.head_ry * 1.2
        pt.poly(np.concatenate([back, [[CX - rx - 0.02, bottom], [CX + rx + 0.02, bottom]]]), hair * 0.85)
    ey = CY + ident.eye_y
    for side in (-1, 1):
        ex = CX + side * (ident.head_rx - 0.004)
        pt.ellipse(ex, ey + ident.ear_y, 0.03, ident.ear_ry, skin * 0.95)
        pt.ellipse(ex + side * 0.008, ey + ident.ear_y, 0.014, ident.ear_ry * 0.6, skin * 0.75)
    pt.poly(head_contour(ident), skin * 0.86)  # edge shading
    pt.poly(head_contour(ident, grow=-0.012) + np.array([0.0, -0.004]), skin)
    _features(pt, ident, a, skin, hair)
    if a["Bald"]:  # shiny scalp and a fringe of hair over the ears
        pt.ellipse(CX - 0.04, CY - ident.head_ry * 0.7, 0.07, 0.03, skin + 0.35 * (255 - skin), angle=-0.3)
        for side in (-1, 1):
            t = np.linspace(0.15, -0.55, 10) if side > 0 else np.linspace(np.pi - 0.15, np.pi + 0.55, 10)
            outer = np.stack([CX + (ident.head_rx + 0.012) * np.cos(t), CY + (ident.head_ry + 0.012) * np.sin(t)], 1)
            inner = np.stack([CX + (ident.head_rx - 0.03) * np.cos(t), CY + (ident.head_ry - 0.03) * np.sin(t)], 1)
            pt.poly(np.concatenate([outer, inner[::-1]]), hair)
    else:
        side_y = ey + (0.02 if long_hair else -0.035)
        pt.poly(_hair_cap(ident, vol, side_y), hair)
        if not ident.male or long_hair:
            for side in (-1, 1):
                x_in, x_out = CX + side * (ident.head_rx - 0.015), CX + side * (ident.head_rx + vol + 0.03)
                lock = np.array([[x_in, ey - 0.06], [x_out, ey - 0.06], [x_out, CY + ident.head_ry * (1.15 if long_hair else 0.35)], [x_in + side * 0.02, CY + ident.head_ry * (1.0 if long_hair else 0.3)]])
                pt.poly(lock, hair)
        else:  # sideburns
            for side in (-1, 1):
                x = CX + side * (ident.head_rx - 0.012)
                pt.poly(np.array([[x - 0.012, ey - 0.05], [x + 0.012, ey - 0.05], [x + 0.01, ey + 0.02], [x - 0.008, ey + 0.02]]), hair)
        if not a["Young"]:  # grey streaks
            top = CY - ident.head_ry - vol * 0.5
            for k in (-1.5, 0.2, 1.2):
                x = CX + k * ident.head_rx * 0.35
                pt.line(np.array([[x, top + 0.03 + abs(k) * 0.025], [x + 0.02 * k, CY - ident.head_ry * ident.hairline - 0.02]]), _GREY * 1.2, 0.008)
        if a["Bangs"]:  # fringe over the forehead with a jagged edge
            brow_y = ey - ident.brow_gap - 0.014
            top = CY - ident.head_ry * (ident.hairline + 0.1)
            half = ident.head_rx * 0.97
            teeth = 9
            xs = np.linspace(CX - half, CX + half, 2 * teeth + 1)
            ys = brow_y - np.where(np.arange(2 * teeth + 1) % 2 == 1, 0.016, 0.0) - 0.03 * ((xs - CX) / half) ** 2
            pt.poly(np.concatenate([[[CX - half, top]], np.stack([xs, ys], 1), [[CX + half, top]]]), hair * 0.95)
    if a["Eyeglasses"]:
        _glasses(pt, ident, skin, frame=True)
    small = np.asarray(img.reduce(supersample), dtype=np.float64)
    if texture is not None and texture_amplitude > 0:
        small = _add_skin_texture(small, ident, p, texture, texture_amplitude, supersample)
    return _light_and_noise(small, p)


def _light_and_noise(img: np.ndarray, p: ImageParams) -> np.ndarray:
    """Lighting gradient, brightness, colour cast and sensor noise; returns uint8."""
    n = img.shape[0]
    coords = (np.arange(n) + 0.5) / n - 0.5
    gx, gy = np.meshgrid(coords, coords)
    light = p.brightness * (1 + 2 * p.light_strength * (gx * math.cos(p.light_angle) + gy * math.sin(p.light_angle)))
    out = img * light[..., None] * p.cast[None, None, :]
    out += np.random.default_rng(p.noise_seed).normal(0.0, 2.0, out.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
