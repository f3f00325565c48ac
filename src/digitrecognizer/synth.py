"""Synthetic drawings: canvas digits, numbers and non-digits (calibration, tests, benchmarks); scribbles for training."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from .preprocess import to_mnist

CANVAS_STYLES = ("white_on_black", "black_on_white", "colour_on_dark", "transparent")
# Letters and symbols that no reader would take for a digit (O, I, l, S, Z, B, G, b, g, q, ... are left out).
NON_DIGIT_GLYPHS = "ACEFHKMNPRVWXYacefhkmnprvwx#%&@*+=?!<>~"


def encode_png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def pen_ink(digit28: np.ndarray, side_px: int, pen: float) -> np.ndarray:
    """Upscale an MNIST digit so its 20 px box becomes `side_px`, then re-draw its strokes with a pen of
    relative width `pen` (-1 thin .. +1 thick): float ink in [0, 1]."""
    size = max(8, int(round(side_px * 28 / 20)))
    up = np.asarray(Image.fromarray(digit28).resize((size, size), Image.Resampling.BICUBIC), np.float32) / 255
    ink = np.clip((up - 0.35) / 0.3, 0, 1)  # crisp edges like a canvas brush
    # Thick: up to one MNIST pixel of extra width on each side. Thin: up to a third of that, since MNIST
    # strokes are only 2-3 px wide and eroding more would break them apart, which no real pen does.
    steps = int(round(abs(pen) * size / 28 * (1.0 if pen > 0 else 0.35)))
    if steps:
        footprint = ndimage.generate_binary_structure(2, 1)
        op = ndimage.grey_dilation if pen > 0 else ndimage.grey_erosion
        ink = op(ink, footprint=ndimage.iterate_structure(footprint, steps))
    return ink


def compose(ink: np.ndarray, style: str, rng: np.random.Generator) -> Image.Image:
    """Colour an ink map (1 = stroke) the way a canvas or a scan would."""
    a = ink[..., None]
    if style == "white_on_black":
        return Image.fromarray(np.uint8(np.round(255 * ink)), "L")
    if style == "black_on_white":
        return Image.fromarray(np.uint8(np.round(255 * (1 - ink))), "L")
    if style == "colour_on_dark":
        ink_rgb = rng.uniform(0.45, 1.0, 3) ** 0.5 * 255
        bg_rgb = rng.uniform(0, 60, 3)
        return Image.fromarray(np.uint8(np.round(a * ink_rgb + (1 - a) * bg_rgb)), "RGB")
    if style == "transparent":
        colour = rng.uniform(0, 255, 3)
        rgba = np.concatenate([np.broadcast_to(colour, ink.shape + (3,)), 255 * a], axis=2)
        return Image.fromarray(np.uint8(np.round(rgba)), "RGBA")
    raise ValueError(f"unknown style {style!r}: one of {CANVAS_STYLES}")


def render_digit(digit28: np.ndarray, rng: np.random.Generator, style: str, canvas_px: int = 280) -> bytes:
    """One MNIST digit drawn on a canvas at 35-85% of its size, anywhere on it, with a random pen; PNG bytes."""
    side = int(rng.uniform(0.35, 0.85) * canvas_px)
    ink = pen_ink(digit28, side, rng.uniform(-1, 1))
    ink = ink[: canvas_px, : canvas_px]
    canvas = np.zeros((canvas_px, canvas_px), np.float32)
    top = rng.integers(0, canvas_px - ink.shape[0] + 1)
    left = rng.integers(0, canvas_px - ink.shape[1] + 1)
    canvas[top : top + ink.shape[0], left : left + ink.shape[1]] = ink
    return encode_png(compose(canvas, style, rng))


@dataclass(frozen=True)
class RenderedNumber:
    png: bytes
    text: str


def render_number(digits28: list[np.ndarray], labels: list[int], rng: np.random.Generator,
                  style: str = "black_on_white", height_px: int = 120,
                  gap_range: tuple[float, float] = (0.08, 0.45)) -> RenderedNumber:
    """MNIST digits side by side, redrawn with one random pen, as someone writes a number."""
    side = int(height_px * rng.uniform(0.55, 0.8))
    pen = rng.uniform(-0.6, 0.6)
    return compose_number([pen_ink(d, side, pen) for d in digits28], labels, rng, style, side, height_px,
                          gap_range)


def compose_number(inks: list[np.ndarray], labels: list[int], rng: np.random.Generator, style: str, side: int,
                   height_px: int = 120, gap_range: tuple[float, float] = (0.08, 0.45)) -> RenderedNumber:
    """Digit inks side by side with random gaps (a share of `side`, the digits' size; slight vertical jitter)."""
    trimmed = []
    for ink in inks:
        cols = np.flatnonzero(ink.max(0) > 0.1)
        trimmed.append(ink[:, cols[0] : cols[-1] + 1] if len(cols) else ink)
    gaps = [int(rng.uniform(*gap_range) * side) for _ in trimmed]
    width = sum(i.shape[1] for i in trimmed) + sum(gaps) + side
    canvas = np.zeros((height_px + side // 2, width), np.float32)
    x = side // 2
    for ink, gap in zip(trimmed, gaps):
        y = int((canvas.shape[0] - ink.shape[0]) / 2 + rng.uniform(-0.06, 0.06) * side)
        y = min(max(y, 0), canvas.shape[0] - ink.shape[0])
        region = canvas[y : y + ink.shape[0], x : x + ink.shape[1]]
        np.maximum(region, ink[: region.shape[0], : region.shape[1]], out=region)
        x += ink.shape[1] + gap
    return RenderedNumber(encode_png(compose(canvas, style, rng)), "".join(str(int(v)) for v in labels))


def render_non_digit(rng: np.random.Generator, canvas_px: int = 280, style: str = "black_on_white") -> bytes:
    """A letter, a symbol, a scribble or a shape: things people draw that are not digits."""
    kind = rng.choice(["glyph", "glyph", "scribble", "shape"])
    image = Image.new("L", (canvas_px, canvas_px), 0)
    draw = ImageDraw.Draw(image)
    width = int(rng.uniform(0.03, 0.08) * canvas_px)
    if kind == "glyph":
        glyph = NON_DIGIT_GLYPHS[rng.integers(len(NON_DIGIT_GLYPHS))]
        font = ImageFont.load_default(size=int(rng.uniform(0.4, 0.8) * canvas_px))
        draw.text((canvas_px / 2, canvas_px / 2), glyph, fill=255, font=font, anchor="mm",
                  stroke_width=max(1, width // 4), stroke_fill=255)
    elif kind == "scribble":
        points = [tuple(rng.uniform(0.15, 0.85, 2) * canvas_px) for _ in range(rng.integers(6, 14))]
        draw.line(points, fill=255, width=width, joint="curve")
    else:
        c = canvas_px / 2
        r = rng.uniform(0.2, 0.4) * canvas_px
        shape = rng.choice(["square", "triangle", "star", "cross_hatch", "spiral"])
        if shape == "square":
            draw.rectangle([c - r, c - r, c + r, c + r], outline=255, width=width)
        elif shape == "triangle":
            draw.polygon([(c, c - r), (c - r, c + r), (c + r, c + r)], outline=255, width=width)
        elif shape == "star":
            angles = np.linspace(-np.pi / 2, 3.5 * np.pi, 6)[:-1]
            pts = [(c + r * np.cos(a), c + r * np.sin(a)) for a in angles]
            draw.line([pts[i % 5] for i in (0, 2, 4, 1, 3, 0)], fill=255, width=width)
        elif shape == "cross_hatch":
            for t in np.linspace(-r, r, 4):
                draw.line([(c + t, c - r), (c + t, c + r)], fill=255, width=width)
                draw.line([(c - r, c + t), (c + r, c + t)], fill=255, width=width)
        else:
            t = np.linspace(0, 5 * np.pi, 120)
            draw.line([(c + r * s / (5 * np.pi) * np.cos(s), c + r * s / (5 * np.pi) * np.sin(s)) for s in t],
                      fill=255, width=width)
    ink = np.asarray(image, np.float32) / 255
    return encode_png(compose(ink, style, rng))


def render_scribble_ink(rng: np.random.Generator, canvas_px: int = 112) -> np.ndarray:
    """Random pen work that is not a digit, as an ink map (1 = stroke): tangles, scattered strokes, arcs, hatching
    and blobs. Training shows these to the model as things to be unsure of (outlier exposure). It is deliberately
    another generator than `render_non_digit`, whose letters, symbols and shapes stay unseen in training, so the
    refusal rate measured on them is not flattered by having trained on them."""
    image = Image.new("L", (canvas_px, canvas_px), 0)
    draw = ImageDraw.Draw(image)
    width = max(2, int(rng.uniform(0.04, 0.10) * canvas_px))

    def point() -> tuple[float, float]:
        return tuple(rng.uniform(0.1, 0.9, 2) * canvas_px)

    kind = rng.choice(["tangle", "strokes", "arcs", "hatch", "blob"])
    if kind == "tangle":
        draw.line([point() for _ in range(rng.integers(8, 15))], fill=255, width=width, joint="curve")
    elif kind == "strokes":
        for _ in range(rng.integers(3, 7)):
            draw.line([point() for _ in range(rng.integers(2, 4))], fill=255, width=width, joint="curve")
    elif kind == "arcs":
        for _ in range(rng.integers(3, 6)):
            (x0, y0), (x1, y1) = sorted([point(), point()])
            start = rng.uniform(0, 360)
            draw.arc([x0, min(y0, y1), x1 + 8, max(y0, y1) + 8], start, start + rng.uniform(90, 300),
                     fill=255, width=width)
    elif kind == "hatch":
        angle, r, c = rng.uniform(0, np.pi), rng.uniform(0.25, 0.4) * canvas_px, canvas_px / 2
        d, n = np.array([np.cos(angle), np.sin(angle)]), np.array([-np.sin(angle), np.cos(angle)])
        for t in np.linspace(-r, r, rng.integers(3, 7)):
            a, b = c + t * n - r * d, c + t * n + r * d
            draw.line([tuple(a), tuple(b)], fill=255, width=width)
    else:
        draw.polygon([point() for _ in range(rng.integers(5, 9))], fill=255)
    return np.asarray(image, np.float32) / 255


def scribble_inputs(n: int, seed: int) -> np.ndarray:
    """n scribbles from `render_scribble_ink` as the model sees them: (n, 28, 28) uint8 from our preprocessing."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        x = to_mnist(render_scribble_ink(rng))
        if x is not None:
            out.append(x)
    return np.stack(out) if out else np.zeros((0, 28, 28), np.uint8)


def digit_set(images: np.ndarray, labels: np.ndarray, n: int, seed: int, style: str) -> tuple[list[bytes], np.ndarray]:
    """n MNIST digits rendered on canvases in one style (reproducible from the seed)."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(images), size=min(n, len(images)), replace=False)
    return [render_digit(images[i], rng, style) for i in idx], labels[idx]


@dataclass(frozen=True)
class DrawnDigits:
    """MNIST digits drawn on canvases, the same number in each canvas style (style k drawn from seed + k)."""

    pngs: list[bytes]
    labels: np.ndarray  # (N,)
    styles: np.ndarray  # (N,) index into CANVAS_STYLES

    def preprocessed(self) -> tuple[np.ndarray, np.ndarray]:
        """(inputs (N, 28, 28) uint8, which preprocessing found blank): a blank drawing's input is zeros."""
        return preprocessed(self.pngs)


def drawn_digits(images: np.ndarray, labels: np.ndarray, per_style: int, seed: int) -> DrawnDigits:
    """`per_style` of the digits drawn in each canvas style: what users send, for calibration, tests and benchmarks."""
    pngs, drawn_labels = [], []
    for k, style in enumerate(CANVAS_STYLES):
        style_pngs, style_labels = digit_set(images, labels, per_style, seed + k, style)
        pngs += style_pngs
        drawn_labels.append(style_labels)
    styles = np.concatenate([np.full(len(lab), k) for k, lab in enumerate(drawn_labels)])
    return DrawnDigits(pngs, np.concatenate(drawn_labels), styles)


def preprocessed(pngs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Drawings as the model sees them: (inputs (N, 28, 28) uint8, zeros where blank; which ones are blank)."""
    inputs = [to_mnist(p) for p in pngs]
    blank = np.array([x is None for x in inputs], bool)
    return np.stack([np.zeros((28, 28), np.uint8) if x is None else x for x in inputs]), blank


def non_digit_set(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [render_non_digit(rng, style=CANVAS_STYLES[i % len(CANVAS_STYLES)]) for i in range(n)]


def number_set(images: np.ndarray, labels: np.ndarray, n: int, seed: int) -> list[RenderedNumber]:
    """n numbers of 2-6 digits composed from MNIST digits, in rotating styles."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        count = int(rng.integers(2, 7))
        idx = rng.choice(len(images), size=count, replace=False)
        out.append(render_number([images[i] for i in idx], [int(labels[i]) for i in idx], rng,
                                 CANVAS_STYLES[k % len(CANVAS_STYLES)]))
    return out

