"""Decoding what a person sends (a path, bytes, a PIL image or an array) into a grayscale luminance map within
the limits of the work one image may cost; refusing, with a reason, what is not an accepted image (Pillow)."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Formats people upload from canvases, phones and scanners. Others (TIFF, GIF, SVG, ...) are refused:
# each extra decoder is extra attack surface for no user benefit.
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
WORK_MAX_SIDE_PX = 512  # ink finding needs no more resolution than this; the model sees 20 px
LUMA_WEIGHTS = tuple(np.float32(w) for w in (0.299, 0.587, 0.114))  # ITU-R BT.601, as Pillow's "L"


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
    # Three products and two sums, each rounded once, in this order: a matrix product would hand the sum to BLAS,
    # whose kernel (and so the last bit) depends on the CPU, and the page's preprocess.js does the same sums.
    red, green, blue = (a[:, :, channel] * weight for channel, weight in enumerate(LUMA_WEIGHTS))
    gray = (red + green) + blue
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
