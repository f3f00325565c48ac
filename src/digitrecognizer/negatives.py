"""Things people draw that are not digits, in families: those the model learns to refuse, those that choose models
on validation, and those held out to measure whether it learned the idea "not a digit" rather than a list (numpy,
Pillow, fontTools)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import styles, synth, writers

CANVAS_PX = 160
# Letters that are digits in disguise are in no family: O o D Q against 0, I l i j against 1, Z z against 2,
# S s against 5, b G against 6, B against 8, g q against 9.
UPPERCASE = "ACEFHJKLMNPRTUVWXY"
LOWERCASE = "acdefhkmnprtuvwxy"
# ASCII only: a glyph missing from a font is drawn as a box, which is a 0 to a reader.
SYMBOLS = "#%&@*+=?<>~$^{}"
# Greek and Cyrillic capitals and signs: letters and symbols beyond the Latin alphabet, so that the idea learned is
# "a letter or a sign", not a list of 26. Left out: what is shaped like a digit (Θ Φ φ θ Σ ε δ σ Б З Ч Э Ю ∞ ⊗ ∫ ∂),
# like a lowercase Latin letter, the held-out family (α γ η ι κ μ ν ρ τ υ χ ω, ∩ ∪ ⊂ ×; Cyrillic lowercase, whose
# italic forms are Latin ones), or like a held-out doodle (arrows, hearts, a house). Drawn only from fonts that have
# the glyph.
OTHER_ALPHABETS = "ΓΔΛΞΠΨΩλπψДЖИЙЛПЦШЩЫЯ±÷√≈≠≤≥∇∠⊕€¥¶✓"
# Debian's fonts-dejavu and fonts-liberation, which scripts/test.sh installs; other installed fonts are not used, so
# that every machine with these packages renders the same corpus.
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/liberation"))


@functools.cache
def font_files() -> tuple[str, ...]:
    """The installed fonts of FONT_DIRS."""
    found = sorted(str(p) for d in FONT_DIRS if d.is_dir() for p in d.rglob("*.ttf"))
    return tuple(found)


@functools.cache
def fonts_with(char: str) -> tuple[str, ...]:
    """The installed fonts that have a glyph for `char` (all of them for ASCII)."""
    if char.isascii():
        return font_files()
    return tuple(f for f in font_files() if ord(char) in _characters(f))


@functools.cache
def _characters(font_file: str) -> frozenset[int]:
    from fontTools.ttLib import TTFont  # in the train extra: only training draws glyphs beyond ASCII

    with TTFont(font_file, lazy=True) as font:
        return frozenset(font.getBestCmap())


def _font(rng: np.random.Generator, size: int, char: str) -> ImageFont.FreeTypeFont:
    files = fonts_with(char)
    if not files:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(files[rng.integers(len(files))], size)


@functools.cache
def _drawable(chars: str) -> str:
    """The characters of `chars` some installed font has: a missing glyph is drawn as a box, which is a 0."""
    return "".join(c for c in chars if c.isascii() or fonts_with(c)) or SYMBOLS


def glyph_ink(chars: str, rng: np.random.Generator) -> np.ndarray:
    """One character from a random installed font that has it, with a random pen outline, as ink."""
    chars = _drawable(chars)
    image = Image.new("L", (CANVAS_PX, CANVAS_PX), 0)
    draw = ImageDraw.Draw(image)
    size = int(rng.uniform(0.35, 0.75) * CANVAS_PX)
    char = chars[rng.integers(len(chars))]
    draw.text((CANVAS_PX / 2, CANVAS_PX / 2), char, fill=255, font=_font(rng, size, char),
              anchor="mm", stroke_width=int(rng.integers(0, max(2, size // 12))), stroke_fill=255)
    return np.asarray(image, np.float32) / 255


def _pen(rng: np.random.Generator) -> int:
    return max(2, int(rng.uniform(0.02, 0.07) * CANVAS_PX))


def _pt(rng: np.random.Generator, lo: float = 0.15, hi: float = 0.85) -> tuple[float, float]:
    return tuple(rng.uniform(lo, hi, 2) * CANVAS_PX)


def polygon_ink(rng: np.random.Generator) -> np.ndarray:
    """Outlines with corners: triangles and boxes, zigzags, filled shapes. No outline has five or more corners:
    drawn with straight strokes, that is how a low-rate tablet records a 0."""
    image = Image.new("L", (CANVAS_PX, CANVAS_PX), 0)
    draw = ImageDraw.Draw(image)
    c, r = CANVAS_PX / 2, rng.uniform(0.2, 0.4) * CANVAS_PX
    kind = rng.integers(3)
    sides = int(rng.integers(3, 5 if kind == 0 else 7))
    turn = rng.uniform(0, 2 * np.pi)
    pts = [(c + r * np.cos(turn + 2 * np.pi * k / sides) * rng.uniform(0.8, 1.2),
            c + r * np.sin(turn + 2 * np.pi * k / sides) * rng.uniform(0.8, 1.2)) for k in range(sides)]
    if kind == 0:
        draw.line(pts + pts[:1], fill=255, width=_pen(rng), joint="curve")
    elif kind == 1:  # zigzag
        xs = np.linspace(0.15, 0.85, int(rng.integers(4, 8))) * CANVAS_PX
        ys = [c + (-1) ** k * r * rng.uniform(0.3, 1) for k in range(len(xs))]
        draw.line(list(zip(xs, ys)), fill=255, width=_pen(rng), joint="curve")
    else:
        draw.polygon(pts, fill=255)  # a filled shape
    return np.asarray(image, np.float32) / 255


def speck_ink(rng: np.random.Generator) -> np.ndarray:
    """A tap, a dot, a few dots or a short tick: too little to be a digit."""
    image = Image.new("L", (CANVAS_PX, CANVAS_PX), 0)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.choice([1, 1, 1, 2, 3]))):
        x, y = _pt(rng)
        r = rng.uniform(0.01, 0.06) * CANVAS_PX
        if rng.random() < 0.5:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
        else:
            dx, dy = rng.normal(0, 1, 2) * r
            draw.line([(x, y), (x + dx, y + dy)], fill=255, width=max(2, int(r)))
    return np.asarray(image, np.float32) / 255


def hand_drawn(strokes: list[np.ndarray], rng: np.random.Generator, pen: tuple[float, float] = (0.03, 0.1)) -> np.ndarray:
    """Strokes in the unit box as a person draws them (`styles.hand`), at a random size and pen width (a share of
    the drawing's size), placed at a random spot of a blank canvas."""
    strokes = styles.hand(strokes, rng)
    side = int(rng.uniform(0.4, 0.85) * CANVAS_PX)
    ink = writers.trajectory_ink(strokes, side, rng.uniform(*pen) * side)
    return writers.place_on_canvas(ink, rng, CANVAS_PX)


def composition_ink(rng: np.random.Generator) -> np.ndarray:
    """A picture of four to seven simple marks (a ring, arcs, strokes, dots) scattered over one box: what a
    drawing is made of, put together in no digit's shape. One ring at most: two rings and a stroke make an 8."""
    strokes: list[np.ndarray] = []
    kinds = ["ring"] * (rng.random() < 0.6) + list(rng.choice(["arc", "stroke", "dot"], int(rng.integers(3, 7)),
                                                            p=[0.4, 0.4, 0.2]))
    for kind in kinds:
        cx, cy = rng.uniform(0.1, 0.9, 2)
        r = rng.uniform(0.05, 0.35)
        if kind == "ring":
            strokes.append(styles.arc(cx, cy, r, r * rng.uniform(0.5, 1.5), 0, 360, 24))
        elif kind == "arc":
            start = rng.uniform(0, 360)
            strokes.append(styles.arc(cx, cy, r, r, start, start + rng.uniform(90, 240), 12))
        elif kind == "stroke":
            a = rng.uniform(0, 2 * np.pi)
            strokes.append(styles.line((cx, cy), (cx + r * np.cos(a), cy + r * np.sin(a)), 4))
        else:
            strokes.append(styles.arc(cx, cy, 0.02, 0.02, 0, 360, 6))
    return hand_drawn(strokes, rng)


def _digit_ink(mnist: np.ndarray, rng: np.random.Generator, side_px: int) -> np.ndarray:
    return synth.pen_ink(mnist[rng.integers(len(mnist))], side_px, rng.uniform(-0.6, 0.6))


def squeezed_digits_ink(mnist: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two or three digits pushed together into one mark: a number, not a digit."""
    inks = [_digit_ink(mnist, rng, int(CANVAS_PX * 0.45)) for _ in range(int(rng.choice([2, 2, 3])))]
    h = max(i.shape[0] for i in inks)
    overlap = int(rng.uniform(0.25, 0.45) * inks[0].shape[1])
    width = sum(i.shape[1] for i in inks) - overlap * (len(inks) - 1)
    out = np.zeros((h, width), np.float32)
    x = 0
    for ink in inks:
        region = out[: ink.shape[0], x : x + ink.shape[1]]
        np.maximum(region, ink[:, : region.shape[1]], out=region)
        x += ink.shape[1] - overlap
    return out


def scratched_digit_ink(mnist: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A digit crossed out with a scribble, as people do with a mistake."""
    ink = _digit_ink(mnist, rng, int(CANVAS_PX * 0.7))
    image = Image.fromarray(np.uint8(ink * 255))
    draw = ImageDraw.Draw(image)
    h, w = ink.shape
    n = int(rng.integers(4, 9))
    xs = np.linspace(0.05, 0.95, n) * w
    ys = [(0.2 if k % 2 else 0.8) * h + rng.normal(0, 0.08 * h) for k in range(n)]
    if rng.random() < 0.5:
        xs, ys = ys, xs
    draw.line(list(zip(xs, ys)), fill=255, width=max(2, int(rng.uniform(0.05, 0.12) * w)), joint="curve")
    return np.asarray(image, np.float32) / 255


# -- held-out families: never trained on --------------------------------------------------------------


def doodle_ink(rng: np.random.Generator) -> np.ndarray:
    """Little drawings: a smiley, a heart, a house, a sun, an arrow, a flower, a fish, a tree, a cloud."""
    kind = rng.choice(["smiley", "heart", "house", "sun", "arrow", "flower", "fish", "tree", "cloud"])
    strokes: list[np.ndarray] = []
    if kind == "smiley":
        strokes = [styles.arc(0.5, 0.5, 0.5, 0.5, 0, 360, 40), styles.arc(0.35, 0.38, 0.04, 0.04, 0, 360, 8),
                   styles.arc(0.65, 0.38, 0.04, 0.04, 0, 360, 8), styles.arc(0.5, 0.55, 0.25, 0.2, 20, 160, 12)]
    elif kind == "heart":
        t = np.linspace(0, 2 * np.pi, 48)[:, None]
        x, y = 16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        strokes = [np.hstack([x, y]).astype(np.float32) / 32]
    elif kind == "house":
        strokes = [np.array([[0, 0.45], [0.5, 0], [1, 0.45], [0.85, 0.45], [0.85, 1], [0.15, 1], [0.15, 0.45],
                             [0, 0.45]], np.float32), np.array([[0.42, 1], [0.42, 0.7], [0.58, 0.7], [0.58, 1]])]
    elif kind == "sun":
        strokes = [styles.arc(0.5, 0.5, 0.22, 0.22, 0, 360, 28)]
        for a in np.linspace(0, 2 * np.pi, int(rng.integers(6, 11)), endpoint=False):
            strokes.append(styles.line((0.5 + 0.3 * np.cos(a), 0.5 + 0.3 * np.sin(a)),
                                       (0.5 + 0.5 * np.cos(a), 0.5 + 0.5 * np.sin(a)), 3))
    elif kind == "arrow":
        strokes = [styles.line((0, 0.5), (1, 0.5)), np.array([[0.7, 0.25], [1, 0.5], [0.7, 0.75]], np.float32)]
    elif kind == "flower":
        strokes = [styles.arc(0.5, 0.35, 0.1, 0.1, 0, 360, 12), styles.line((0.5, 0.45), (0.5, 1))]
        for a in np.linspace(0, 2 * np.pi, 6, endpoint=False):
            strokes.append(styles.arc(0.5 + 0.2 * np.cos(a), 0.35 + 0.2 * np.sin(a), 0.1, 0.1, 0, 360, 12))
    elif kind == "fish":
        strokes = [np.vstack([styles.arc(0.45, 0.5, 0.4, 0.25, 200, 520, 30)]),
                   np.array([[0.8, 0.5], [1, 0.3], [1, 0.7], [0.8, 0.5]], np.float32),
                   styles.arc(0.25, 0.45, 0.03, 0.03, 0, 360, 6)]
    elif kind == "tree":
        strokes = [np.array([[0.45, 1], [0.45, 0.6], [0.1, 0.6], [0.5, 0], [0.9, 0.6], [0.55, 0.6], [0.55, 1]],
                            np.float32)]
    else:
        strokes = [np.vstack([styles.arc(0.25, 0.6, 0.2, 0.2, 90, 270, 10), styles.arc(0.5, 0.4, 0.25, 0.25, 180, 360, 12),
                              styles.arc(0.78, 0.6, 0.2, 0.2, 270, 450, 10), styles.line((0.78, 0.8), (0.25, 0.8))])]
    return hand_drawn(strokes, rng)


def silhouette_ink(rng: np.random.Generator) -> np.ndarray:
    """Filled outlines of everyday things, like small pictures of clothing: a shirt, trousers, a dress, a bag,
    a shoe, a hat."""
    kind = rng.choice(["shirt", "trousers", "dress", "bag", "shoe", "hat"])
    w = rng.uniform(0.8, 1.2)
    shapes = {
        "shirt": [(0.3, 0), (0.7, 0), (1, 0.25), (0.85, 0.4), (0.78, 0.3), (0.78, 1), (0.22, 1), (0.22, 0.3),
                  (0.15, 0.4), (0, 0.25)],
        "trousers": [(0.2, 0), (0.8, 0), (0.9, 1), (0.6, 1), (0.5, 0.35), (0.4, 1), (0.1, 1)],
        "dress": [(0.38, 0), (0.62, 0), (0.6, 0.35), (0.95, 1), (0.05, 1), (0.4, 0.35)],
        "bag": [(0.05, 0.35), (0.95, 0.35), (0.9, 1), (0.1, 1)],
        "shoe": [(0, 0.45), (0.35, 0.45), (0.55, 0.65), (1, 0.75), (1, 0.95), (0, 0.95)],
        "hat": [(0, 0.8), (0.2, 0.75), (0.25, 0.3), (0.5, 0.2), (0.75, 0.3), (0.8, 0.75), (1, 0.8), (0.5, 0.9)],
    }
    side = rng.uniform(0.5, 0.9) * CANVAS_PX
    x0, y0 = (CANVAS_PX - side * min(w, 1)) / 2, (CANVAS_PX - side) / 2
    image = Image.new("L", (CANVAS_PX, CANVAS_PX), 0)
    draw = ImageDraw.Draw(image)
    pts = [(x0 + x * side * w * rng.uniform(0.95, 1.05), y0 + y * side * rng.uniform(0.97, 1.03)) for x, y in shapes[kind]]
    draw.polygon(pts, fill=int(rng.uniform(160, 255)))
    if kind == "bag":  # the handle
        draw.arc([x0 + 0.3 * side * w, y0, x0 + 0.7 * side * w, y0 + 0.6 * side], 180, 360, fill=255,
                 width=max(2, int(0.05 * side)))
    return np.asarray(image, np.float32) / 255


# -- validation families (never trained on) and candidate training families ------------------------


def blob_ink(rng: np.random.Generator) -> np.ndarray:
    """One or two filled blobs with wavy outlines, in a shade of grey: a smudge, a stain, a coloured-in shape.
    Not a training family: filled shapes for validation, whose rendered non-digits are strokes and outlines."""
    image = Image.new("L", (CANVAS_PX, CANVAS_PX), 0)
    draw = ImageDraw.Draw(image)
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    for _ in range(int(rng.choice([1, 1, 2]))):
        r = rng.uniform(0.15, 0.35) * CANVAS_PX * (1 + sum(rng.uniform(0, 0.2) * np.cos(k * angles + rng.uniform(0, 7))
                                                          for k in range(2, 6)))
        stretch = rng.uniform(0.75, 1.33)  # never so thin that it is a thick stroke: a bar can be a 1
        cx, cy = _pt(rng, 0.4, 0.6)
        draw.polygon(list(zip(cx + r * stretch * np.cos(angles), cy + r / stretch * np.sin(angles))),
                     fill=int(rng.uniform(140, 255)))
    return np.asarray(image, np.float32) / 255


# Lowercase letters as pen strokes, in the unit box (y down); those that are digits in disguise are left out, as in
# LOWERCASE.
PEN_LETTERS: dict[str, Callable[[], list[np.ndarray]]] = {
    "a": lambda: [styles.arc(0.45, 0.55, 0.35, 0.4, -20, 340, 28), styles.line((0.8, 0.2), (0.85, 1))],
    "c": lambda: [styles.arc(0.55, 0.5, 0.4, 0.45, -40, -320, 24)],
    "e": lambda: [styles.line((0.15, 0.5), (0.85, 0.5), 4), styles.arc(0.5, 0.5, 0.35, 0.45, 0, -310, 24)],
    "h": lambda: [styles.line((0.2, 0), (0.2, 1)), styles.arc(0.5, 0.65, 0.3, 0.25, 180, 360, 12),
                  styles.line((0.8, 0.65), (0.8, 1), 4)],
    "k": lambda: [styles.line((0.2, 0), (0.2, 1)), np.array([[0.75, 0.4], [0.2, 0.72], [0.8, 1]], np.float32)],
    "m": lambda: [styles.line((0.1, 0.2), (0.1, 1)), styles.arc(0.3, 0.45, 0.2, 0.25, 180, 360, 10),
                  styles.line((0.5, 0.45), (0.5, 1), 4), styles.arc(0.7, 0.45, 0.2, 0.25, 180, 360, 10),
                  styles.line((0.9, 0.45), (0.9, 1), 4)],
    "n": lambda: [styles.line((0.2, 0.15), (0.2, 1)), styles.arc(0.5, 0.45, 0.3, 0.3, 180, 360, 12),
                  styles.line((0.8, 0.45), (0.8, 1), 4)],
    "r": lambda: [styles.line((0.3, 0.1), (0.3, 1)), styles.arc(0.6, 0.45, 0.3, 0.3, 180, 300, 10)],
    "t": lambda: [np.vstack([styles.line((0.45, 0), (0.45, 0.8)), styles.arc(0.6, 0.8, 0.15, 0.2, 180, 60, 8)]),
                  styles.line((0.15, 0.3), (0.8, 0.3), 4)],
    "u": lambda: [np.vstack([styles.line((0.2, 0.05), (0.2, 0.6)), styles.arc(0.5, 0.6, 0.3, 0.35, 180, 0, 12)]),
                  styles.line((0.8, 0.05), (0.85, 1))],
    "v": lambda: [np.array([[0.1, 0.05], [0.5, 1], [0.9, 0.05]], np.float32)],
    "w": lambda: [np.array([[0, 0.05], [0.25, 1], [0.5, 0.35], [0.75, 1], [1, 0.05]], np.float32)],
    "x": lambda: [styles.line((0.1, 0.05), (0.9, 1)), styles.line((0.9, 0.05), (0.1, 1))],
    "y": lambda: [styles.line((0.1, 0), (0.5, 0.55)), styles.line((0.9, 0), (0.3, 1))],
    "f": lambda: [np.vstack([styles.arc(0.6, 0.2, 0.2, 0.2, 0, -180, 10), styles.line((0.4, 0.2), (0.4, 1))]),
                  styles.line((0.15, 0.45), (0.7, 0.45), 4)],
}

# Capitals as pen strokes, for training: those whose lowercase form has the same shape (C K U V W X Y: that is the
# pen-letter validation family) are left out, as are the digits in disguise.
PEN_CAPITALS: dict[str, Callable[[], list[np.ndarray]]] = {
    "A": lambda: [np.array([[0.05, 1], [0.5, 0], [0.95, 1]], np.float32), styles.line((0.25, 0.6), (0.75, 0.6), 4)],
    "E": lambda: [np.array([[0.85, 0], [0.15, 0], [0.15, 1], [0.85, 1]], np.float32),
                  styles.line((0.15, 0.5), (0.7, 0.5), 4)],
    "F": lambda: [np.array([[0.85, 0], [0.2, 0], [0.2, 1]], np.float32), styles.line((0.2, 0.45), (0.7, 0.45), 4)],
    "H": lambda: [styles.line((0.15, 0), (0.15, 1)), styles.line((0.85, 0), (0.85, 1)),
                  styles.line((0.15, 0.5), (0.85, 0.5), 4)],
    "J": lambda: [np.vstack([styles.line((0.7, 0), (0.7, 0.7)), styles.arc(0.45, 0.7, 0.25, 0.3, 0, 160, 10)]),
                  styles.line((0.4, 0), (0.95, 0), 4)],
    "L": lambda: [np.array([[0.2, 0], [0.2, 1], [0.85, 1]], np.float32)],
    "M": lambda: [np.array([[0.05, 1], [0.1, 0], [0.5, 0.6], [0.9, 0], [0.95, 1]], np.float32)],
    "N": lambda: [np.array([[0.15, 1], [0.15, 0], [0.85, 1], [0.85, 0]], np.float32)],
    "P": lambda: [styles.line((0.2, 0), (0.2, 1)),
                  np.vstack([styles.line((0.2, 0), (0.55, 0), 3), styles.arc(0.55, 0.25, 0.3, 0.25, -90, 90, 10),
                             styles.line((0.55, 0.5), (0.2, 0.5), 3)])],
    "R": lambda: [styles.line((0.2, 0), (0.2, 1)),
                  np.vstack([styles.line((0.2, 0), (0.55, 0), 3), styles.arc(0.55, 0.25, 0.3, 0.25, -90, 90, 10),
                             np.array([[0.55, 0.5], [0.2, 0.5], [0.85, 1]], np.float32)])],
    "T": lambda: [styles.line((0.05, 0), (0.95, 0)), styles.line((0.5, 0), (0.5, 1))],
}


def written_letter_ink(letters: dict[str, Callable[[], list[np.ndarray]]], rng: np.random.Generator) -> np.ndarray:
    """One of `letters` (pen strokes in the unit box) written by hand."""
    return hand_drawn(letters[rng.choice(list(letters))](), rng)


def pen_letter_ink(rng: np.random.Generator) -> np.ndarray:
    """A lowercase letter drawn by hand as pen strokes. Not a training family: it tracks the held-out lowercase
    letters (which are rendered from fonts) on the validation side, through a generator no family uses."""
    return written_letter_ink(PEN_LETTERS, rng)


# Single-stroke fonts of the Hershey collection (the Hershey-Fonts package, in the train extra): a sans, a roman, a
# script and a cursive hand, each letter one or a few pen strokes, as people write them.
STROKE_FONTS = ("futural", "rowmans", "scripts", "cursive")


@functools.cache
def _stroke_font(font: str):
    from HersheyFonts import HersheyFonts  # in the train extra: only training draws these letters

    hershey = HersheyFonts()
    hershey.load_default_font(font)
    return hershey


@functools.cache
def stroke_glyph(font: str, char: str) -> tuple[np.ndarray, ...]:
    """`char` of a single-stroke font as pen strokes, centred in the unit box (y down), its longer side 1."""
    strokes = [np.array(list(stroke), np.float32) for stroke in _stroke_font(font).strokes_for_text(char)]
    points = np.concatenate(strokes)
    low, high = points.min(0), points.max(0)
    return tuple((s - (low + high) / 2) / max(high - low) + 0.5 for s in strokes)


def stroke_letter_ink(rng: np.random.Generator) -> np.ndarray:
    """A letter of UPPERCASE or LOWERCASE from a single-stroke font, written by hand (`hand_drawn`). A candidate
    training family: with it, the held-out lowercase letters are letters trained on in another hand (font glyphs
    against pen strokes), and the pen letters of validation come from another generator of strokes."""
    chars = UPPERCASE + LOWERCASE
    char, font = chars[rng.integers(len(chars))], STROKE_FONTS[rng.integers(len(STROKE_FONTS))]
    return hand_drawn(list(stroke_glyph(font, char)), rng)


# Signs and pictograms of the Hershey collection's symbol fonts, and Japanese kana and kanji, written as pen
# strokes: (font, the characters that hold them in it). Left out: digits and letters, single lines, arcs and dots,
# circles, and every sign a person could take for a digit or a digit for it: a flag on a pole, a cross, し, じ, 一
# and 上 (a 1); ♀ and ☿ (a 9 with a bar); ♃ (a 4); ♋ (69); ♌ (a 2); ∞ (an 8); a double bar and い (11); う, ら, ち
# and 五 (a 5); る and ろ (a 3); and つ, て, と, そ, の, す, よ, わ, ね and 七, whose strokes come close to a 2, 4, 6, 7
# or 9.
STROKE_SYMBOLS = {
    "symbolic": "CDEFGIJKLMNOPQRSTUWXZ[^_`abcdfghlmnop~",
    "astrology": "!#&/;<=>?@[`{|~",
    "meteorology": "#$&|",
    "music": "';?",
    "japanese": "#$%&'()*+,-.013479:ADEFGHIJNPUVWZ[\\]^_`abcdfloqrs{|}",
}
STROKE_SYMBOL_GLYPHS = tuple((font, char) for font, chars in STROKE_SYMBOLS.items() for char in chars)


def stroke_symbol_ink(rng: np.random.Generator) -> np.ndarray:
    """A sign, pictogram or Japanese character of STROKE_SYMBOLS, written by hand (`hand_drawn`). A candidate
    training family: pictures and signs people draw that are neither digits nor Latin letters."""
    font, char = STROKE_SYMBOL_GLYPHS[rng.integers(len(STROKE_SYMBOL_GLYPHS))]
    return hand_drawn(list(stroke_glyph(font, char)), rng)


# Pictures are drawn with a finer pen than letters (a share of the drawing's size): their details are small marks.
PICTURE_PEN = (0.03, 0.08)


def ring_picture_ink(rng: np.random.Generator) -> np.ndarray:
    """A round outline with marks inside or around it (`ring_picture_strokes`), drawn by hand. Not a training
    family: it tracks the held-out doodles on the validation side."""
    return hand_drawn(ring_picture_strokes(rng), rng, pen=PICTURE_PEN)


def ring_picture_strokes(rng: np.random.Generator) -> list[np.ndarray]:
    """A round outline with details (`picture_details`): a face, a sun, a flower, made up anew each time."""
    r = 0.3
    return [styles.arc(0.5, 0.5, r, r * rng.uniform(0.8, 1.25), 0, 360, 32), *picture_details(rng, r, reach=0.55)]


def framed_picture_ink(rng: np.random.Generator) -> np.ndarray:
    """An outline of three or four corners (a box, a triangle, a diamond) with details (`picture_details`), drawn
    by hand: a picture is an outline and what is drawn in or around it. A candidate training family, with corners
    only, so that the round pictures of validation measure whether the idea carries over."""
    r, corners, turn = 0.3, int(rng.integers(3, 5)), rng.uniform(0, 2 * np.pi)
    angles = turn + 2 * np.pi * np.arange(corners) / corners
    outline = np.stack([0.5 + r * np.cos(angles), 0.5 + r * np.sin(angles)], 1) * rng.uniform(0.85, 1.15, (corners, 1))
    outline = np.vstack([outline, outline[:1]]).astype(np.float32)
    # The inside of a triangle is narrower than a box's.
    details = picture_details(rng, r, reach=0.3 if corners == 3 else 0.45)
    return hand_drawn([outline, *details], rng, pen=PICTURE_PEN)


def round_picture_ink(rng: np.random.Generator) -> np.ndarray:
    """A round outline with details (`round_picture_strokes`), drawn by hand. A candidate training family; its
    outlines vary more than the ring pictures' of validation, which it also teaches, so with it in training those
    no longer measure how the idea carries over."""
    return hand_drawn(round_picture_strokes(rng), rng, pen=PICTURE_PEN)


def round_picture_strokes(rng: np.random.Generator) -> list[np.ndarray]:
    """A closed round outline, an ellipse of any proportions with a slightly wavy edge, and details
    (`picture_details`): a face, a sun, a ball with stripes."""
    r, aspect = 0.3, rng.uniform(0.6, 1.6)
    angles = np.linspace(0, 2 * np.pi, 40) + rng.uniform(0, 2 * np.pi)
    wave = 1 + sum(rng.uniform(0, 0.06) * np.cos(k * angles + rng.uniform(0, 7)) for k in range(2, 5))
    outline = np.stack([0.5 + r * wave * np.sqrt(aspect) * np.cos(angles),
                        0.5 + r * wave / np.sqrt(aspect) * np.sin(angles)], 1).astype(np.float32)
    return [outline, *picture_details(rng, r, reach=0.5)]


def picture_details(rng: np.random.Generator, r: float, reach: float) -> list[np.ndarray]:
    """Two to five marks (dots, dashes, small rings, little arcs) inside an outline of radius `r` around the unit
    box's centre, within `reach` of `r`, or four to nine around it (rays, petals). Never a single mark inside,
    which is how some people write a 0."""
    cx, cy = 0.5, 0.5
    strokes = []
    if rng.random() < 0.6:
        for _ in range(int(rng.integers(2, 6))):
            x, y = cx + rng.uniform(-reach, reach) * r, cy + rng.uniform(-reach, reach) * r
            s = rng.uniform(0.1, 0.3) * r
            kind = rng.choice(["dot", "dash", "ring", "arc"])
            if kind == "dot":
                strokes.append(styles.arc(x, y, 0.015, 0.015, 0, 360, 6))
            elif kind == "dash":
                a = rng.uniform(0, np.pi)
                strokes.append(styles.line((x - s * np.cos(a), y - s * np.sin(a)), (x + s * np.cos(a), y + s * np.sin(a)), 3))
            elif kind == "ring":
                strokes.append(styles.arc(x, y, s, s, 0, 360, 10))
            else:
                start = rng.uniform(0, 360)
                strokes.append(styles.arc(x, y, 2 * s, 1.5 * s, start, start + rng.uniform(90, 180), 8))
    else:
        petals = rng.random() < 0.5
        for a in np.linspace(0, 2 * np.pi, int(rng.integers(4, 10)), endpoint=False) + rng.uniform(0, 1):
            inner, outer = r * 1.2, r * rng.uniform(1.5, 1.9)
            if petals:
                mid = (inner + outer) / 2
                strokes.append(styles.arc(cx + mid * np.cos(a), cy + mid * np.sin(a), (outer - inner) / 2,
                                          (outer - inner) / 2, 0, 360, 10))
            else:
                strokes.append(styles.line((cx + inner * np.cos(a), cy + inner * np.sin(a)),
                                           (cx + outer * np.cos(a), cy + outer * np.sin(a)), 3))
    return strokes


# Families as generators of ink maps; those that redraw digits take the MNIST training images they may use.
Family = Callable[[np.random.Generator, np.ndarray], np.ndarray]
TRAINING_FAMILIES: dict[str, Family] = {
    "uppercase letters": lambda rng, _: glyph_ink(UPPERCASE, rng),
    "symbols": lambda rng, _: glyph_ink(SYMBOLS, rng),
    "scribbles": lambda rng, _: synth.render_scribble_ink(rng, CANVAS_PX),
    "polygons": lambda rng, _: polygon_ink(rng),
    "specks": lambda rng, _: speck_ink(rng),
    "compositions": lambda rng, _: composition_ink(rng),
    "squeezed digits": lambda rng, mnist: squeezed_digits_ink(mnist, rng),
    "scratched digits": lambda rng, mnist: scratched_digit_ink(mnist, rng),
}
# Families a recipe may add (`CorpusConfig.extra_families`), in no preset; the experiments with them are in
# docs/experiments/not-a-digit.md.
OPTIONAL_FAMILIES: dict[str, Family] = {
    "other alphabets": lambda rng, _: glyph_ink(OTHER_ALPHABETS, rng),
    "framed pictures": lambda rng, _: framed_picture_ink(rng),
    "pen capitals": lambda rng, _: written_letter_ink(PEN_CAPITALS, rng),
    "round pictures": lambda rng, _: round_picture_ink(rng),
    "stroke letters": lambda rng, _: stroke_letter_ink(rng),
    "stroke symbols": lambda rng, _: stroke_symbol_ink(rng),
}
HELD_OUT_FAMILIES: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "lowercase letters": lambda rng: glyph_ink(LOWERCASE, rng),
    "doodles": doodle_ink,
    "silhouettes": silhouette_ink,
}
# Non-digits that choose models on the validation side (benchmarks/operating_point.py), never trained on.
VALIDATION_FAMILIES: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "filled blobs": blob_ink,
    "pen letters": pen_letter_ink,
    "ring pictures": ring_picture_ink,
}


def family_canvases(make: Callable[[np.random.Generator], np.ndarray], n: int, seed: int) -> list[bytes]:
    """n drawings of one family as PNG canvases, the four canvas styles in turn."""
    rng = np.random.default_rng(seed)
    styles_ = synth.CANVAS_STYLES
    return [synth.encode_png(synth.compose(make(rng), styles_[i % len(styles_)], rng)) for i in range(n)]
