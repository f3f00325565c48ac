"""Synthetic handwriting: a pen-stroke generator for ways of writing digits that MNIST's writers rarely used (a 1
with a flag, a crossed 7, a slashed 0, an open 4, ...), each drawn with random slant, proportions, jitter and pen."""

from __future__ import annotations

from math import comb
from typing import Callable

import numpy as np

from . import writers

Strokes = list[np.ndarray]  # each (K, 2): x right, y down, the digit roughly in the unit square


def line(a: tuple[float, float], b: tuple[float, float], n: int = 6) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) * np.asarray(a, np.float32) + t * np.asarray(b, np.float32)


def curve(*controls: tuple[float, float], n: int = 16) -> np.ndarray:
    """A Bezier curve from the first control point to the last (Bernstein form)."""
    p = np.asarray(controls, np.float64)
    k = len(p) - 1
    t = np.linspace(0, 1, n)[:, None]
    weights = [comb(k, i) * t**i * (1 - t) ** (k - i) for i in range(k + 1)]
    return sum(w * p[i] for i, w in enumerate(weights)).astype(np.float32)


def arc(cx: float, cy: float, rx: float, ry: float, start_deg: float, end_deg: float, n: int = 24) -> np.ndarray:
    """Part of an ellipse; angles grow clockwise on screen (y down), 0 at the right."""
    t = np.radians(np.linspace(start_deg, end_deg, n))[:, None]
    return np.hstack([cx + rx * np.cos(t), cy + ry * np.sin(t)]).astype(np.float32)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


# -- the styles: each returns the strokes of one digit ---------------------------------------------


def flag_one(rng, base: bool = False) -> Strokes:
    top = (0.55, 0.0)
    flag = (_u(rng, 0.05, 0.3), _u(rng, 0.2, 0.45))  # a long flag: the European 1 that MNIST reads as 7
    strokes = [np.vstack([line(flag, top), line(top, (0.55 + _u(rng, -0.05, 0.05), 1.0))[1:]])]
    if base:
        w = _u(rng, 0.25, 0.4)
        strokes.append(line((0.55 - w, 1.0), (0.55 + w, 1.0)))
    return strokes


def crossed_seven(rng) -> Strokes:
    bar_y = _u(rng, 0.0, 0.05)
    foot = (_u(rng, 0.25, 0.5), 1.0)
    strokes = [np.vstack([line((0.05, bar_y), (0.9, 0.0)), line((0.9, 0.0), foot)[1:]])]
    mid = 0.5 + _u(rng, -0.08, 0.08)
    x_mid = 0.9 + (foot[0] - 0.9) * mid
    strokes.append(line((x_mid - _u(rng, 0.2, 0.3), mid), (x_mid + _u(rng, 0.15, 0.25), mid - 0.02)))
    return strokes


def curved_seven(rng) -> Strokes:
    bend = _u(rng, 0.1, 0.3)  # the stem bows out to the right, or hooks back at its foot
    stem = curve((0.9, 0.0), (0.55 + bend, 0.45), (_u(rng, 0.3, 0.5), 1.0))
    head = line((0.05, _u(rng, 0.1, 0.2)), (0.05, 0.0), 3) if rng.random() < 0.5 else line((0.05, 0.0), (0.05, 0.0), 2)
    return [np.vstack([head, line((0.05, 0.0), (0.9, 0.0))[1:], stem[1:]])]


def hooked_seven(rng) -> Strokes:
    stem = np.vstack([line((0.9, 0.0), (0.45, 0.85)), curve((0.45, 0.85), (0.38, 1.0), (_u(rng, 0.5, 0.6), 0.98))[1:]])
    return [np.vstack([line((0.05, 0.05), (0.9, 0.0)), stem[1:]])]


def slashed_zero(rng) -> Strokes:
    ring = arc(0.5, 0.5, _u(rng, 0.3, 0.4), 0.5, -80, 290, 40)
    reach = _u(rng, 0.0, 0.15)
    return [ring, line((0.25 - reach, 0.85 + reach), (0.75 + reach, 0.15 - reach))]


def plain_zero(rng) -> Strokes:
    return [arc(0.5, 0.5, _u(rng, 0.25, 0.42), 0.5, _u(rng, -110, -60), _u(rng, 260, 300), 40)]


def open_four(rng) -> Strokes:
    cross = _u(rng, 0.55, 0.7)
    gap = _u(rng, 0.05, 0.2)  # the arm and the stem do not meet at the top
    arm = np.vstack([line((_u(rng, 0.05, 0.2), 0.0), (0.05, cross)), line((0.05, cross), (0.95, cross))[1:]])
    stem = line((0.7, gap), (0.7 + _u(rng, -0.05, 0.05), 1.0))
    return [arm, stem]


def one_stroke_four(rng) -> Strokes:
    cross = _u(rng, 0.55, 0.7)
    stem_x = _u(rng, 0.6, 0.75)
    return [np.vstack([line((stem_x, 1.0), (stem_x, 0.0)), line((stem_x, 0.0), (0.0, cross))[1:],
                       line((0.0, cross), (0.95, cross))[1:]])]


def straight_nine(rng, open_loop: bool = False) -> Strokes:
    r = _u(rng, 0.2, 0.3)
    cy = r + 0.02
    # Drawn from the right side of the loop: round, then the straight stem down.
    loop = arc(0.7 - r, cy, r, r, -10, -10 - 360 + (_u(rng, 60, 100) if open_loop else 0), 28)
    stem = line((0.7, cy), (0.7 + _u(rng, -0.08, 0.02), 1.0))
    return [loop, stem]


def loop_two(rng) -> Strokes:
    top = arc(0.5, 0.28, 0.38, 0.28, 190, 360 + 20, 16)
    diag = line(tuple(top[-1]), (0.12, 0.88))
    loop = arc(0.2, 0.84, 0.1, 0.1, 250, -60, 14)  # the little loop where the diagonal meets the base
    base = line(tuple(loop[-1]), (0.95, 0.95))
    return [np.vstack([top, diag[1:], loop, base[1:]])]


def plain_two(rng) -> Strokes:
    top = arc(0.5, 0.28, 0.38, 0.28, 190, 360 + 30, 16)
    return [np.vstack([top, line(tuple(top[-1]), (0.05, 1.0))[1:], line((0.05, 1.0), (0.95, 0.97))[1:]])]


def open_six(rng) -> Strokes:
    sweep = curve((0.8, 0.0), (0.1, 0.2), (0.1, 0.8))
    loop = arc(0.45, 0.72, 0.35, 0.28, 180, 180 - 300 + _u(rng, 40, 90), 24)  # stops short of closing
    return [np.vstack([sweep, loop[1:]])]


def flat_three(rng) -> Strokes:
    # The continental 3 with a flat top: a bar, a diagonal, then the lower bowl.
    mid = (0.45, _u(rng, 0.38, 0.48))
    bowl = arc(0.48, 0.72, 0.4, 0.28, -100, 150, 20)
    return [np.vstack([line((0.1, 0.0), (0.85, 0.0)), line((0.85, 0.0), mid)[1:], bowl[1:]])]


def plain_three(rng) -> Strokes:
    upper = arc(0.5, 0.25, 0.35, 0.25, 200, 450, 16)
    lower = arc(0.5, 0.73, 0.4, 0.27, 270, 520, 18)
    return [np.vstack([upper, lower[1:]])]


def plain_five(rng) -> Strokes:
    flag = line((0.9, 0.0), (0.2, 0.0))
    stem = line((0.2, 0.0), (0.15, 0.45))
    belly = arc(0.48, 0.7, 0.4, 0.3, -130, 150, 18)
    return [np.vstack([stem[::-1], belly[1:]]), flag] if rng.random() < 0.6 else [np.vstack([flag, stem[1:], belly[1:]])]


def plain_eight(rng) -> Strokes:
    t = np.linspace(0, 2 * np.pi, 48)[:, None]
    w_top, w_bottom = _u(rng, 0.25, 0.35), _u(rng, 0.32, 0.45)
    x = 0.5 + np.where(np.sin(t) > 0, w_top, w_bottom) * np.sin(2 * t) * -1
    y = 0.5 - 0.5 * np.cos(t)
    return [np.hstack([x, y]).astype(np.float32)]


STYLES: dict[str, tuple[int, Callable[[np.random.Generator], Strokes]]] = {
    "slashed 0": (0, slashed_zero),
    "plain 0": (0, plain_zero),
    "1 with flag": (1, flag_one),
    "1 with flag and base": (1, lambda rng: flag_one(rng, base=True)),
    "2 with loop": (2, loop_two),
    "plain 2": (2, plain_two),
    "flat-top 3": (3, flat_three),
    "plain 3": (3, plain_three),
    "open-top 4": (4, open_four),
    "one-stroke 4": (4, one_stroke_four),
    "plain 5": (5, plain_five),
    "open 6": (6, open_six),
    "crossed 7": (7, crossed_seven),
    "curved 7": (7, curved_seven),
    "hooked 7": (7, hooked_seven),
    "plain 8": (8, plain_eight),
    "9 with straight stem": (9, straight_nine),
    "open 9": (9, lambda rng: straight_nine(rng, open_loop=True)),
}


# -- the hand: slant, proportions, jitter ------------------------------------------------------------


def _resample(stroke: np.ndarray, step: float = 0.02) -> np.ndarray:
    seg = np.linalg.norm(np.diff(stroke, axis=0), axis=1)
    length = np.concatenate([[0], np.cumsum(seg)])
    if length[-1] <= 0:
        return stroke
    t = np.linspace(0, length[-1], max(2, int(length[-1] / step) + 1))
    return np.stack([np.interp(t, length, stroke[:, k]) for k in range(2)], axis=1).astype(np.float32)


def _wobble(n: int, rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """Smooth random displacement along a stroke: a few random knots, interpolated."""
    knots = rng.normal(0, amplitude, (max(2, n // 12 + 2), 2))
    t = np.linspace(0, len(knots) - 1, n)
    return np.stack([np.interp(t, np.arange(len(knots)), knots[:, k]) for k in range(2)], axis=1)


def hand(strokes: Strokes, rng: np.random.Generator) -> Strokes:
    """The strokes as a person's hand would draw them: slanted, stretched, turned and unsteady."""
    slant, width = _u(rng, -0.35, 0.35), _u(rng, 0.65, 1.25)
    angle = np.radians(_u(rng, -10, 10))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    jitter = _u(rng, 0.0, 0.025)
    out = []
    for s in strokes:
        s = _resample(np.asarray(s, np.float32))
        s = s + _wobble(len(s), rng, jitter)
        x, y = (s[:, 0] - 0.5) * width, s[:, 1] - 0.5
        x = x - slant * y  # a forward slant leans the top to the right (y grows downward)
        out.append((np.stack([x, y], 1) @ rot.T).astype(np.float32))
    return out


def tablet_path(strokes: Strokes, rng: np.random.Generator, points: tuple[int, int] = (6, 13),
                square: float = 0.5, reorder: float = 0.0) -> Strokes:
    """The strokes as a low-rate tablet records them: one path (the moves between strokes drawn too), a few
    points spaced evenly along it joined by straight lines, and, `square` of the time, each axis stretched
    to fill a square box, as devices that normalise their coordinates do. `reorder` of the time the strokes
    are joined in another order and direction first: people draw a 5's bar or a 7's cross first or last, and
    the drawn move between them changes the shape."""
    if len(strokes) > 1 and reorder and rng.random() < reorder:
        strokes = [strokes[i][::-1] if rng.random() < 0.5 else strokes[i] for i in rng.permutation(len(strokes))]
    path = np.concatenate(strokes)
    path = _resample(path, 1.0 / int(rng.integers(*points)) * _length(path)) if _length(path) > 0 else path
    if rng.random() < square:
        lo, hi = path.min(0), path.max(0)
        extent = np.maximum(hi - lo, 1e-6)
        narrow = extent.argmin()
        stretch = np.ones(2, np.float32)
        stretch[narrow] = rng.uniform(1, extent.max() / extent[narrow]) if extent.max() / extent[narrow] < 20 else 1
        path = (path - lo) * stretch
    return [path.astype(np.float32)]


def _length(path: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum())


def render_style(name: str, rng: np.random.Generator,
                 rendering: writers.CanvasRendering = writers.CanvasRendering(canvas_px=160),
                 tablet: float = 0.0, reorder: float = 0.0) -> np.ndarray:
    """One digit of the named style as ink on a canvas, at a random size, place and pen; `tablet` of the time
    recorded as a low-rate tablet path (`tablet_path`, strokes reordered `reorder` of those times)."""
    strokes = hand(STYLES[name][1](rng), rng)
    if tablet and rng.random() < tablet:
        strokes = tablet_path(strokes, rng, reorder=reorder)
    side = int(rng.uniform(*rendering.side) * rendering.canvas_px)
    ink = writers.trajectory_ink(strokes, side, rng.uniform(*rendering.pen) * side)
    return writers.place_on_canvas(ink, rng, rendering.canvas_px)
