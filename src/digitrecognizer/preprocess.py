"""Preprocessing: any image -> the MNIST-style 28x28 input (decoded, ink found, cropped, scaled, centred) (numpy, Pillow)."""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

# Decoding is the first step of preprocessing; its names are preprocessing's too.
from .decoding import (ACCEPTED_FORMATS, ImageTooLarge, Limits, PreprocessError, TooManyMarks,  # noqa: F401
                       UnsupportedImage, decode)

DIGIT_BOX_PX = 20  # MNIST: the digit's longer side is scaled to 20 px ...
CANVAS_PX = 28  # ... and placed, centred by mass, in a 28x28 field
DOWNSCALE_FILTER = Image.Resampling.LANCZOS
# MNIST strokes are about 2-3 px in a 20 px box; correct only strokes far outside that band.
STROKE_RATIO_RANGE = (0.06, 0.19)
STROKE_RATIO_TARGET = 0.12


# ----------------------------------------------------------------------------------------------
# Ink


def ink_map(gray: np.ndarray) -> np.ndarray:
    """Luminance -> ink in [0, 1] (1 = full stroke): polarity decided, uneven lighting removed, noise floor cut."""
    return _ink_and_box(gray)[0]


def _ink_and_box(gray: np.ndarray) -> tuple[np.ndarray, tuple[slice, slice] | None]:
    """`ink_map`, and the box outside which the ink is exactly 0 (None: no ink at all). On a canvas the box is
    the drawing's, and every pass after the first few runs on it alone."""
    # float32 throughout, with plain Python floats as scalars: NumPy would promote to float64 (twice the memory
    # traffic) for a NumPy float64 scalar, and these passes over the whole image are most of the work.
    gray = gray.astype(np.float32, copy=False)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    low, level, high = _quantiles(border, (0.1, 0.5, 0.9))
    # The background is what most of the border (and most of the image) is: ink is the minority.
    # (A strided sample gives the same median at a fraction of the cost of sorting every pixel.)
    dark_on_light = 0.5 * (level + _quantiles(gray[::3, ::3], (0.5,))[0]) > 0.5
    if high - low < 0.08 or min(gray.shape) < 16:
        # A flat background (a canvas, a scan): measure ink from its level.
        ink = 1.0 - gray * (1.0 / max(level, 1e-3)) if dark_on_light else gray - level
        np.clip(ink, 0.0, 1.0, out=ink)
    else:
        # Uneven lighting (a photo of paper, shadows): estimate the background with a window much wider than
        # any stroke (a third of the image), from the brightest paper (or darkest board) nearby, smoothed.
        size = max(3, min(gray.shape) // 3)
        if dark_on_light:
            # Ink on paper reflects a share of the light falling there: divide, so a stroke in shadow
            # is as strong as one in full light.
            paper = ndimage.uniform_filter(ndimage.maximum_filter(gray, size=size), size=size)
            ink = np.clip(1.0 - gray / np.maximum(paper, 1e-3), 0.0, 1.0)
        else:
            board = ndimage.uniform_filter(ndimage.minimum_filter(gray, size=size), size=size)
            ink = np.clip(gray - board, 0.0, 1.0)
    box = bounding_box(ink > 0.0)
    inside = ink[box] if box is not None else ink  # a view: what is done to it is done to the ink
    peak = float(inside.max())
    if peak < 0.15:  # no contrast anywhere: a blank page, whatever its colour
        return np.zeros_like(ink), None
    # Otsu on every other pixel in each direction: the same histogram shape at a quarter of the cost. The
    # sampled pixels outside the box are all 0: they are counted, not visited.
    sampled = ink[tuple(slice(s.start + s.start % 2, s.stop, 2) for s in box)]  # the even rows and columns
    zeros_outside = ((ink.shape[0] + 1) // 2) * ((ink.shape[1] + 1) // 2) - sampled.size
    cut = _otsu(sampled / peak, zeros=zeros_outside) * peak
    # Scale so the core of the strokes is full ink (as in MNIST), robust to a few hot pixels.
    strokes = inside[inside > cut]
    core = max(_quantiles(strokes, (0.9,))[0] if len(strokes) else peak, 1e-6)
    # Keep anti-aliased edges (MNIST has them) but drop paper grain and sensor noise below half the Otsu cut:
    # ink / core, with `floor` mapped to 0 and 1 kept at 1, in one pass. (Outside the box the ink stays 0.)
    floor = 0.5 * cut / core
    inside -= floor * core
    inside *= 1.0 / max(core * (1.0 - floor), 1e-6)
    np.clip(inside, 0.0, 1.0, out=inside)
    return ink, box


def _quantiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """np.quantile's default (linear) method, from one partial sort: np.percentile and np.median spend more time
    in their Python set-up than in the sorting, on arrays this small, and this runs for every canvas."""
    values = values.ravel()
    positions = [q * (values.size - 1) for q in qs]
    lows = [int(p) for p in positions]
    part = np.partition(values, sorted({i for lo in lows for i in (lo, min(lo + 1, values.size - 1))}))
    out = []
    for p, lo in zip(positions, lows):
        a, b = float(part[lo]), float(part[min(lo + 1, values.size - 1)])
        out.append(a + (p - lo) * (b - a))
    return out


def _otsu(values: np.ndarray, bins: int = 64, zeros: int = 0) -> float:
    """Otsu's threshold of values in [0, 1], and of `zeros` more zeros (bincount: several times faster than
    np.histogram)."""
    hist = np.bincount(np.minimum((values * bins).astype(np.int32), bins - 1).ravel(), minlength=bins)
    hist[0] += zeros
    weight = hist.astype(np.float64)
    total = weight.sum()
    if total == 0:
        return 0.5
    centers = (np.arange(bins) + 0.5) / bins
    w0 = np.cumsum(weight)
    w1 = total - w0
    m0 = np.cumsum(weight * centers) / np.maximum(w0, 1)
    m1 = ((weight * centers).sum() - np.cumsum(weight * centers)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centers[int(np.argmax(between))])


EIGHT_CONNECTED = np.ones((3, 3), bool)  # diagonal neighbours belong together: thin slanted strokes


def label_in_box(mask: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray, np.ndarray] | None:
    """Components labelled within the ink's bounding box only (the same components, in a fraction of the
    pixels): (box, labels in the box, areas, which are significant), or None without ink. Specks, components
    smaller than 2% of the largest (dust, sensor noise, stray dots), are not significant."""
    box = bounding_box(mask)
    if box is None:
        return None
    labels, count = ndimage.label(mask[box], structure=EIGHT_CONNECTED)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return box, labels, areas, areas >= max(2, 0.02 * areas.max())


def _keep_significant(mask: np.ndarray) -> np.ndarray:
    """The mask without specks."""
    labelled = label_in_box(mask)
    if labelled is None:
        return mask
    box, labels, _, significant = labelled
    if significant.all():
        return mask  # nothing to drop: the usual case for a drawing
    out = np.zeros_like(mask)
    out[box] = np.concatenate([[False], significant])[labels]  # a lookup table: much faster than np.isin
    return out


def bounding_box(mask: np.ndarray) -> tuple[slice, slice] | None:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows) == 0:
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


# Binary dilation and erosion by the 4-neighbour cross (scipy.ndimage's default structure), done with shifted
# slices: the same result as ndimage.binary_dilation / binary_erosion (border_value=0) at a fraction of the
# cost on a digit-sized mask, which matters because it runs for every canvas.
def _dilate_cross(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def _erode_cross(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[0] = out[-1] = False  # outside the image counts as background
    out[:, 0] = out[:, -1] = False
    out[1:] &= mask[:-1]
    out[:-1] &= mask[1:]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    return out


# ----------------------------------------------------------------------------------------------
# MNIST-style normalisation


def _stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width: area / half the perimeter (a stroke of length L and width w has area Lw, perimeter ~2L)."""
    area = mask.sum()
    edge = mask & ~_erode_cross(mask)
    return float(2.0 * area / max(edge.sum(), 1))


def normalize_ink(ink: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """The (28, 28) uint8 input of the ink under `mask`: crop to the mask's box, fix extreme stroke widths, scale the longer side to 20 px, centre by mass in 28x28."""
    box = bounding_box(mask)
    if box is None:
        return None
    crop_mask = mask[box]
    # Only the kept strokes (and their anti-aliased rim): specks and other digits inside the box are dropped.
    crop = np.where(_dilate_cross(crop_mask), ink[box], np.float32(0))
    longer = max(crop.shape)
    ratio = _stroke_width(crop_mask) / longer
    if longer >= 24 and not (STROKE_RATIO_RANGE[0] <= ratio <= STROKE_RATIO_RANGE[1]):
        # A thick brush on a small digit (or a fine pen on a big one) would look nothing like MNIST after scaling.
        steps = int(round((ratio - STROKE_RATIO_TARGET) * longer / 2))
        # Capped: a thick pen that filled a digit's loops looks like a blob to the estimate, and eroding it
        # by the full amount would leave nothing.
        steps = max(-round(0.03 * longer), min(steps, round(0.04 * longer)))
        if steps > 0:
            crop = ndimage.grey_erosion(crop, size=(2 * steps + 1, 2 * steps + 1))
        elif steps < 0:
            crop = ndimage.grey_dilation(crop, size=(1 - 2 * steps, 1 - 2 * steps))
    scale = DIGIT_BOX_PX / longer
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    small = np.asarray(Image.fromarray(crop.astype(np.float32), "F").resize(
        size, DOWNSCALE_FILTER if scale < 1 else Image.Resampling.BICUBIC))
    small = np.clip(small, 0.0, 1.0)
    total = small.sum()
    if total <= 0:
        return None
    # The centre of mass, computed as ndimage.center_of_mass does (the same sums, so the same rounding) without
    # its general-purpose set-up, which costs more than the sums on a 20x20 image.
    cy = float((small * np.arange(small.shape[0], dtype=np.float64)[:, None]).sum() / total)
    cx = float((small * np.arange(small.shape[1], dtype=np.float64)[None, :]).sum() / total)
    top = int(round(CANVAS_PX / 2 - cy))
    left = int(round(CANVAS_PX / 2 - cx))
    # The box is at most 20 px, so the offset keeps it within the 28 px field except for very lopsided mass.
    top = min(max(top, 0), CANVAS_PX - small.shape[0])
    left = min(max(left, 0), CANVAS_PX - small.shape[1])
    out = np.zeros((CANVAS_PX, CANVAS_PX), np.float32)
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return np.round(out * 255).astype(np.uint8)


def near_blank(ink_pixels: int, image_pixels: int) -> bool:
    """A dot or a few pixels of noise is not a drawing."""
    return ink_pixels < max(4, 0.0005 * image_pixels)


def to_mnist(image, limits: Limits = Limits()) -> np.ndarray | None:
    """Any image (path, bytes, PIL image or numpy array, such as an ink map in [0, 1]) -> its (28, 28) uint8
    MNIST-style input, or None when there is no ink."""
    ink, box = _ink_and_box(decode(image, limits)[0])
    if box is None:
        return None
    # Everything from here on sees the ink's box only: the same crop, found in a fraction of the pixels.
    mask = _keep_significant(ink[box] > 0.25)
    if near_blank(int(mask.sum()), ink.size):
        return None
    return normalize_ink(ink[box], mask)


def to_graph_input(images28: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8 inputs -> (N, 1, 28, 28) float32 in [0, 1], what the exported graph takes."""
    return np.asarray(images28).astype(np.float32)[:, None] / 255.0
