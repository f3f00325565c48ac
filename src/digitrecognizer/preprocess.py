"""Preprocessing: any image -> the MNIST-style 28x28 input (decoded, ink found, cropped, scaled, centred) (numpy, Pillow)."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

# Formats people upload from canvases, phones and scanners. Others (TIFF, GIF, SVG, ...) are refused:
# each extra decoder is extra attack surface for no user benefit.
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
WORK_MAX_SIDE_PX = 512  # ink finding needs no more resolution than this; the model sees 20 px
DIGIT_BOX_PX = 20  # MNIST: the digit's longer side is scaled to 20 px ...
CANVAS_PX = 28  # ... and placed, centred by mass, in a 28x28 field
DOWNSCALE_FILTER = Image.Resampling.LANCZOS
# MNIST strokes are about 2-3 px in a 20 px box; correct only strokes far outside that band.
STROKE_RATIO_RANGE = (0.06, 0.19)
STROKE_RATIO_TARGET = 0.12


class PreprocessError(ValueError):
    """The input cannot be turned into an image of a digit; the message says why."""


class UnsupportedImage(PreprocessError):
    """Not an image in an accepted format (PNG, JPEG, WebP), or an animated one."""


class ImageTooLarge(PreprocessError):
    """More pixels than the limits allow."""


class TooManyMarks(PreprocessError):
    """A number with more separate marks than the limits allow (each mark costs a few ms to read)."""


@dataclass(frozen=True)
class Limits:
    """The work one image may cost: pixels decoded, and separate marks read as a number."""

    max_side_px: int = 4096
    max_pixels: int = 16_000_000
    # A number's reading time grows with its marks: 32 is 16 digits of two strokes each, and stops a comb of
    # hundreds of teeth from holding a worker for a second.
    max_marks: int = 32


# ----------------------------------------------------------------------------------------------
# Decoding to a grayscale ink map


def _check_size(width: int, height: int, limits: Limits) -> None:
    if width < 1 or height < 1:
        raise PreprocessError(f"the image is empty ({width}x{height} px)")
    if max(width, height) > limits.max_side_px or width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} px; the limit is {limits.max_side_px} px a side and "
            f"{limits.max_pixels / 1e6:.0f} megapixels: scale it down first"
        )


def _open_bytes(data: bytes, limits: Limits) -> Image.Image:
    if not data:
        raise PreprocessError("the image is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError:  # Pillow's own guard fires in open() for the very largest headers
        raise ImageTooLarge(f"the image declares more than {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels; "
                            f"the limit is {limits.max_side_px} px a side and {limits.max_pixels / 1e6:.0f} "
                            "megapixels: scale it down first") from None
    except UnidentifiedImageError:
        raise UnsupportedImage(f"not a PNG, JPEG or WebP image ({len(data)} bytes)") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise PreprocessError(f"the image cannot be read: {err}") from None
    # The header's declared size is checked before any pixel is decoded: this is what stops
    # decompression bombs (a tiny file that inflates to gigabytes).
    _check_size(*image.size, limits)
    if getattr(image, "n_frames", 1) > 1:
        raise UnsupportedImage("animated images are not supported: upload a single frame")
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise PreprocessError(f"the image is damaged or truncated: {err}") from None
    return ImageOps.exif_transpose(image)  # phone photos: honour the camera's orientation


def _pil_to_array(image: Image.Image) -> np.ndarray:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return np.asarray(image.convert("RGBA"))
    if image.mode in ("I;16", "I", "F"):
        return np.asarray(image, dtype=np.float32)
    return np.asarray(image.convert("L"))


def _unit_range(array: np.ndarray) -> np.ndarray:
    """Any numeric array -> float32 in [0, 1]: 8-bit or unit ranges kept, anything else stretched."""
    a = array.astype(np.float64)  # float32 would overflow on extreme float64 or int64 input
    if not np.isfinite(a).all():
        raise PreprocessError("the image array contains NaN or infinite values")
    if np.issubdtype(array.dtype, np.integer):
        top = 255.0 if array.max(initial=0) <= 255 and array.min(initial=0) >= 0 else float(np.abs(a).max())
    else:
        top = 1.0 if a.max() <= 1.0 and a.min() >= 0.0 else 255.0 if a.max() <= 255 and a.min() >= 0 else None
    if top is None:  # arbitrary float range: stretch it (scaled first, so hi - lo cannot overflow)
        a = a / float(np.abs(a).max())
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    else:
        a = np.clip(a / max(top, 1e-12), 0.0, 1.0)
    return a.astype(np.float32)


def _array_to_luminance(array: np.ndarray) -> np.ndarray:
    """Any numeric array (H, W), (H, W, 1|3|4) -> float32 luminance in [0, 1]; transparent areas -> alpha ink."""
    if array.dtype == bool:
        array = array.astype(np.float32)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise PreprocessError(f"image arrays must be numeric, got dtype {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise PreprocessError(f"image arrays must be (H, W), (H, W, 3) or (H, W, 4); got shape {array.shape}")
    if array.size == 0:
        raise PreprocessError(f"the image is empty (shape {array.shape})")
    if array.dtype == np.uint8:  # decoded images: the common case needs no range checks
        a = array.astype(np.float32) * np.float32(1 / 255)
    else:
        a = _unit_range(array)
    if a.ndim == 2:
        return a
    gray = a[:, :, :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    if a.shape[2] == 4:
        alpha = a[:, :, 3]
        if alpha.min() < 0.98:
            # Strokes on a transparent canvas: the alpha channel *is* the drawing. A mostly opaque picture
            # with a few transparent pixels is flattened on white instead.
            if (alpha > 0.5).mean() < 0.5:
                return 1.0 - alpha  # dark ink on light, the polarity step sorts it out
            gray = gray * alpha + (1.0 - alpha)
    return gray


def decode(image, limits: Limits = Limits()) -> tuple[np.ndarray, float]:
    """Path, bytes, PIL image or numpy array -> (float32 luminance (H, W) in [0, 1], at most 512 px a side; the
    scale from those working pixels back to the input's pixels)."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise PreprocessError(f"{path}: no such file")
        image = path.read_bytes()
    if isinstance(image, (bytes, bytearray, memoryview)):
        image = _open_bytes(bytes(image), limits)
    scale = 1.0
    if isinstance(image, Image.Image):
        _check_size(*image.size, limits)
        scale = max(image.size) / min(max(image.size), WORK_MAX_SIDE_PX)
        if max(image.size) > WORK_MAX_SIDE_PX:
            # Downscale in Pillow before converting: cheap, anti-aliased, and bounds all later work.
            # Pillow's reduce() has no 16-bit kernels (scans are often 16-bit grayscale): widen those first.
            image = image.convert("I") if image.mode.startswith("I;16") else image.copy()
            image.thumbnail((WORK_MAX_SIDE_PX, WORK_MAX_SIDE_PX), Image.Resampling.BOX)
        image = _pil_to_array(image)
    if not isinstance(image, np.ndarray):
        raise PreprocessError(f"cannot read an image from {type(image).__name__}: give a path, bytes, a PIL image "
                              "or a numpy array")
    if image.ndim >= 2:
        _check_size(image.shape[1], image.shape[0], limits)
    gray = _array_to_luminance(image)
    if max(gray.shape) > WORK_MAX_SIDE_PX:
        shrink = WORK_MAX_SIDE_PX / max(gray.shape)
        scale = 1.0 / shrink
        size = (max(1, round(gray.shape[1] * shrink)), max(1, round(gray.shape[0] * shrink)))
        gray = np.asarray(Image.fromarray(gray, "F").resize(size, Image.Resampling.BOX))
    return gray, scale


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
