"""Digits by writers MNIST never saw: readers for the shared collections and scikit-learn's digits, validated, and
their renderings as ink on a canvas, the way a person's drawing or scan reaches the recognizer (numpy, Pillow)."""

from __future__ import annotations

import gzip
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .card import sha256_file
from .data import DataError, check_labels, resolve_data_dir

log = logging.getLogger(__name__)

ENV_WRITERS_DIR = "DIGITRECOGNIZER_WRITERS"
# Collection -> its files, with the sha256 and digit counts published beside them (../shared/data/writers/README.md).
FILES = {
    "optdigits": {
        "optdigits-orig.tra.gz": ("65d63b93631215453b473d58657d44faabab5b2f5cde4859afb2c9dcc1fb7eae",
                                  (189, 198, 195, 199, 186, 187, 195, 201, 180, 204)),
        "optdigits-orig.cv.gz": ("2a5e1dc2441858ba9ee3a169d570522b2f617be9c862f58b04e25c49894b60f2",
                                 (87, 97, 92, 85, 114, 108, 87, 96, 91, 89)),
    },
    "pendigits": {
        "pendigits.tra.gz": ("48ed17a1740708c0b2fb80620a91878e490ae437c10307fa84701ca284296b38",
                             (780, 779, 780, 719, 780, 720, 720, 778, 719, 719)),
    },
    "usps": {
        "usps-zip.train.gz": ("66ebf231ab51f2cf6ac1a892d0f98ccffee1079d7a5db638c1f11f366046ca16",
                              (1194, 1005, 731, 658, 652, 556, 664, 645, 542, 644)),
    },
}
COLLECTIONS = tuple(FILES)
OPTDIGITS_SIDE = 32
USPS_SIDE = 16
PENDIGITS_POINTS = 8


@dataclass(frozen=True)
class Collection:
    """One collection's digits: bitmaps (ink in [0, 1], 1 = stroke) or pen trajectories, never both."""

    name: str
    labels: np.ndarray  # (N,) int64 in 0..9
    bitmaps: np.ndarray | None = None  # (N, H, W) float32 ink
    trajectories: np.ndarray | None = None  # (N, points, 2) float32, x right and y down, in [0, 1]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> "Collection":
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return Collection(self.name, self.labels[index], pick(self.bitmaps), pick(self.trajectories))


def default_writers_dir(mnist_dir: str | os.PathLike | None = None) -> Path:
    """$DIGITRECOGNIZER_WRITERS, else `writers` beside the MNIST folder (the shared data layout)."""
    env = os.environ.get(ENV_WRITERS_DIR)
    if env:
        return Path(env).expanduser()
    return resolve_data_dir(mnist_dir).parent / "writers"


def _text_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: not found; point --writers-dir or ${ENV_WRITERS_DIR} at the folder holding "
                        f"{', '.join(n for files in FILES.values() for n in files)}")
    try:
        with gzip.open(path, "rt", encoding="ascii") as f:
            return f.read().splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise DataError(f"{path.name}: cannot be read ({err}); the file is damaged") from err


def _check(path: Path, labels: np.ndarray, expected_counts: tuple[int, ...], sha256: str) -> None:
    if sha256_file(path) != sha256:
        log.warning("%s: sha256 differs from the published file; using it as given", path)
    check_labels(labels, path.name)
    counts = tuple(int(c) for c in np.bincount(labels, minlength=10))
    if counts != expected_counts:
        raise DataError(f"{path.name}: digit counts {counts} differ from the collection's {expected_counts}: "
                        "the file is truncated or not this collection")


def read_optdigits(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """32x32 binary bitmaps (`0`/`1` rows) each followed by a label line, after a header of any length."""
    lines = _text_lines(path)
    bitmaps, labels, rows = [], [], []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if len(text) == OPTDIGITS_SIDE and set(text) <= {"0", "1"}:
            rows.append([c == "1" for c in text])
        elif rows:
            if len(rows) != OPTDIGITS_SIDE or not text.isdigit():
                raise DataError(f"{path.name}:{number}: expected a label after {OPTDIGITS_SIDE} bitmap rows, "
                                f"found {len(rows)} rows and {text[:20]!r}")
            bitmaps.append(rows)
            labels.append(int(text))
            rows = []
    if rows:
        raise DataError(f"{path.name}: ends inside a bitmap ({len(rows)} rows): the file is truncated")
    return np.asarray(bitmaps, np.float32).reshape(-1, OPTDIGITS_SIDE, OPTDIGITS_SIDE), np.asarray(labels, np.int64)


def read_pendigits(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """CSV of 8 (x, y) points in 0-100 with y up, then the label; returned with y down, scaled to [0, 1]."""
    lines = [line for line in _text_lines(path) if line.strip()]
    try:
        values = np.asarray([[int(v) for v in line.split(",")] for line in lines[1:]], np.int64)
    except ValueError as err:
        raise DataError(f"{path.name}: a row is not 17 integers ({err})") from err
    if values.ndim != 2 or values.shape[1] != 2 * PENDIGITS_POINTS + 1:
        raise DataError(f"{path.name}: expected rows of {2 * PENDIGITS_POINTS + 1} integers, found shape {values.shape}")
    points = values[:, :-1].reshape(-1, PENDIGITS_POINTS, 2).astype(np.float32) / 100.0
    if points.min() < 0 or points.max() > 1:
        raise DataError(f"{path.name}: coordinates outside 0-100")
    points[..., 1] = 1.0 - points[..., 1]
    return points, values[:, -1]


def read_usps(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One digit a line: the label, then 256 grey levels in [-1, 1] (-1 background); returned as ink in [0, 1]."""
    rows = [line.split() for line in _text_lines(path) if line.strip()]
    try:
        values = np.asarray(rows, np.float32)
    except ValueError as err:
        raise DataError(f"{path.name}: rows of unequal length or not numbers ({err})") from err
    if values.ndim != 2 or values.shape[1] != USPS_SIDE * USPS_SIDE + 1:
        raise DataError(f"{path.name}: expected rows of {USPS_SIDE * USPS_SIDE + 1} numbers, found {values.shape}")
    ink = np.clip((values[:, 1:] + 1) / 2, 0, 1).reshape(-1, USPS_SIDE, USPS_SIDE)
    return ink, values[:, 0].astype(np.int64)


def load_collection(name: str, writers_dir: str | os.PathLike | None = None) -> Collection:
    """'optdigits' (both of its files), 'pendigits' or 'usps', validated against the published counts."""
    if name not in FILES:
        raise ValueError(f"unknown collection {name!r}: one of {', '.join(COLLECTIONS)}")
    folder = Path(writers_dir).expanduser() if writers_dir else default_writers_dir()
    reader = {"optdigits": read_optdigits, "pendigits": read_pendigits, "usps": read_usps}[name]
    arrays, labels = [], []
    for file_name, (sha256, counts) in FILES[name].items():
        a, y = reader(folder / file_name)
        _check(folder / file_name, y, counts, sha256)
        arrays.append(a)
        labels.append(y)
    data, y = np.concatenate(arrays), np.concatenate(labels)
    if name == "pendigits":
        return Collection(name, y, trajectories=data)
    return Collection(name, y, bitmaps=data)


def load_sklearn_digits() -> Collection:
    """scikit-learn's `load_digits`: 1,797 8x8 digits by 13 optdigits writers that no shared file holds."""
    from sklearn.datasets import load_digits  # a benchmark and report dependency only

    d = load_digits()
    return Collection("sklearn", d.target.astype(np.int64), bitmaps=(d.images / 16.0).astype(np.float32))


def uci_counts(collection: Collection, block: int = 4) -> Collection:
    """Binary bitmaps as UCI reduced optdigits for scikit-learn's 8x8 digits: ink counted in `block` x `block`
    blocks (0 to 16 for 32x32 bitmaps), scaled to [0, 1]. Optdigits so reduced are a validation stand-in for those
    13 writers, whose figures are only read for a final report."""
    n, h, w = collection.bitmaps.shape
    counts = collection.bitmaps.reshape(n, h // block, block, w // block, block).sum(axis=(2, 4)) / block**2
    return Collection(f"{collection.name}-8x8", collection.labels, bitmaps=counts.astype(np.float32))


# ----------------------------------------------------------------------------------------------
# Rendering on a canvas


@dataclass(frozen=True)
class CanvasRendering:
    """How a digit is placed on a square canvas: its longer side as a share of the canvas, and the pen width of
    drawn trajectories as a share of that side (1-5 px at the model's 20 px digit box)."""

    canvas_px: int = 280
    side: tuple[float, float] = (0.35, 0.85)
    pen: tuple[float, float] = (0.05, 0.25)
    smooth: float = 0.0  # share of trajectories drawn as a smooth curve through their points instead of a polyline


def place_on_canvas(ink: np.ndarray, rng: np.random.Generator, canvas_px: int) -> np.ndarray:
    """Ink put at a random place on a blank square canvas of `canvas_px` (cut at its edges if larger)."""
    canvas = np.zeros((canvas_px, canvas_px), np.float32)
    h, w = min(ink.shape[0], canvas_px), min(ink.shape[1], canvas_px)
    top, left = rng.integers(0, canvas_px - h + 1), rng.integers(0, canvas_px - w + 1)
    canvas[top : top + h, left : left + w] = ink[:h, :w]
    return canvas


def bitmap_ink(bitmap: np.ndarray, side_px: int) -> np.ndarray:
    """A small scanned bitmap enlarged so its longer side is `side_px`, as a scan at a higher resolution looks:
    smooth edges, the grey levels kept."""
    h, w = bitmap.shape
    scale = side_px / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    up = Image.fromarray(bitmap.astype(np.float32), "F").resize(size, Image.Resampling.BICUBIC)
    return np.clip(np.asarray(up), 0, 1)


def catmull_rom(points: np.ndarray, per_segment: int = 8) -> np.ndarray:
    """A smooth curve through the points (centripetal spacing is not needed at 8 points): the pen's path between
    samples, which a polyline cuts straight."""
    p = np.concatenate([points[:1], points, points[-1:]])
    t = np.linspace(0, 1, per_segment, endpoint=False)[:, None]
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3))
    return np.concatenate(out + [points[-1:]])


def stroke_ink(strokes: list[np.ndarray], size_px: tuple[int, int], pen_px: float) -> np.ndarray:
    """Pen strokes (lists of (x, y) pixel points) drawn with round joints and caps, as a canvas brush draws them.
    Drawn at 2x and averaged down for anti-aliased edges."""
    w, h = size_px
    image = Image.new("L", (2 * w, 2 * h), 0)
    draw = ImageDraw.Draw(image)
    width = max(1, int(round(2 * pen_px)))
    for stroke in strokes:
        pts = [tuple(map(float, p * 2)) for p in stroke]
        if len(pts) > 1:
            draw.line(pts, fill=255, width=width, joint="curve")
        r = width / 2
        for x, y in (pts[0], pts[-1]):
            draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    return np.asarray(image.reduce(2), np.float32) / 255


def trajectory_ink(strokes: list[np.ndarray], side_px: int, pen_px: float) -> np.ndarray:
    """Strokes in unit coordinates (y down) scaled so the drawing's longer side is `side_px`, aspect kept."""
    allpts = np.concatenate(strokes)
    lo, hi = allpts.min(0), allpts.max(0)
    extent = max(float((hi - lo).max()), 1e-6)
    scale = side_px / extent
    margin = pen_px + 2
    size = tuple(int(v) for v in np.ceil((hi - lo) * scale + 2 * margin))
    return stroke_ink([(s - lo) * scale + margin for s in strokes], size, pen_px)


def render_ink(collection: Collection, i: int, rng: np.random.Generator,
               rendering: CanvasRendering = CanvasRendering()) -> np.ndarray:
    """Sample i of the collection on a canvas: a random size and place, and for trajectories a random pen."""
    side = int(rng.uniform(*rendering.side) * rendering.canvas_px)
    if collection.trajectories is not None:
        points = collection.trajectories[i]
        if rng.random() < rendering.smooth:
            points = catmull_rom(points)
        ink = trajectory_ink([points], side, rng.uniform(*rendering.pen) * side)
    else:
        ink = bitmap_ink(collection.bitmaps[i], side)
    return place_on_canvas(ink, rng, rendering.canvas_px)


def canvas_pngs(collection: Collection, seed: int, rendering: CanvasRendering = CanvasRendering()) -> list[bytes]:
    """Every digit of the collection drawn on a canvas as PNG bytes, the canvas styles taken in turn (what a
    benchmark sends through `Recognizer.predict`)."""
    from . import synth

    rng = np.random.default_rng(seed)
    styles = synth.CANVAS_STYLES
    return [synth.encode_png(synth.compose(render_ink(collection, i, rng, rendering), styles[i % len(styles)], rng))
            for i in range(len(collection))]


def number_pngs(collection: Collection, count: int, seed: int, height_px: int = 120) -> list["synth.RenderedNumber"]:
    """`count` numbers of 2-6 of the collection's bitmaps side by side, each enlarged smoothly as `canvas_pngs`
    enlarges a single one (a scan is not redrawn with a pen), the canvas styles taken in turn."""
    from . import synth

    rng = np.random.default_rng(seed)
    styles = synth.CANVAS_STYLES
    numbers = []
    for k in range(count):
        idx = rng.choice(len(collection), size=int(rng.integers(2, 7)), replace=False)
        side = int(height_px * rng.uniform(0.55, 0.8))
        inks = [bitmap_ink(collection.bitmaps[i], side) for i in idx]
        numbers.append(synth.compose_number(inks, collection.labels[idx].tolist(), rng, styles[k % len(styles)],
                                            side, height_px))
    return numbers
