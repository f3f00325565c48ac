"""Preprocessing: any image becomes the MNIST-style 28x28 input, or a clear error; blank stays blank."""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from scipy import ndimage

from digitrecognizer import preprocess, segment, synth
from digitrecognizer.preprocess import PreprocessError


def png(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def draw_digit(mnist_test, index=0, style="black_on_white", seed=0) -> bytes:
    return synth.render_digit(mnist_test.images[index], np.random.default_rng(seed), style)


@pytest.mark.parametrize("colour", [0, 255])
def test_blank_canvas_has_no_digit(colour):
    assert preprocess.to_mnist(Image.new("L", (280, 280), colour)) is None


def test_transparent_empty_canvas_has_no_digit():
    assert preprocess.to_mnist(png(Image.new("RGBA", (280, 280), (0, 0, 0, 0)))) is None


def test_a_single_dot_is_not_a_drawing():
    canvas = np.full((280, 280), 255, np.uint8)
    canvas[100:102, 100:102] = 0
    assert preprocess.to_mnist(canvas) is None


def test_output_is_mnist_style_box_20_and_centred_by_mass(mnist_test):
    for style in synth.CANVAS_STYLES:
        x = preprocess.to_mnist(draw_digit(mnist_test, 3, style))
        assert x.shape == (28, 28) and x.dtype == np.uint8
        rows, cols = np.flatnonzero(x.max(1) > 30), np.flatnonzero(x.max(0) > 30)
        assert 18 <= max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 22, style
        cy, cx = ndimage.center_of_mass(x.astype(float))
        assert abs(cy - 14) < 1.5 and abs(cx - 14) < 1.5, style


def test_polarity_and_transparency_do_not_change_what_the_model_sees(mnist_test):
    digit = mnist_test.images[7]
    ink = synth.pen_ink(digit, 150, 0.0)
    variants = [synth.compose(ink, style, np.random.default_rng(1)) for style in synth.CANVAS_STYLES]
    inputs = [preprocess.to_mnist(v).astype(float) for v in variants]
    for other in inputs[1:]:
        assert np.abs(inputs[0] - other).mean() < 6  # gray levels out of 255


def test_a_small_digit_in_a_corner_is_found_and_centred(mnist_test):
    canvas = np.zeros((400, 400), np.float32)
    canvas[10:60, 330:380] = synth.pen_ink(mnist_test.images[0], 36, 0)[:50, :50]
    x = preprocess.to_mnist((canvas * 255).astype(np.uint8))
    cy, cx = ndimage.center_of_mass(x.astype(float))
    assert abs(cy - 14) < 1.5 and abs(cx - 14) < 1.5


def test_uneven_lighting_of_a_photo_is_removed(mnist_test):
    # Dark ink on paper with a strong shadow gradient across the page and sensor noise.
    ink = synth.pen_ink(mnist_test.images[1], 200, 0.3)
    h, w = ink.shape
    lighting = np.linspace(0.35, 0.95, w)[None, :] * np.ones((h, 1))
    photo = lighting * (1 - 0.8 * ink) + np.random.default_rng(0).normal(0, 0.02, (h, w))
    clean = preprocess.to_mnist((np.clip(1 - ink, 0, 1) * 255).astype(np.uint8)).astype(float)
    seen = preprocess.to_mnist((np.clip(photo, 0, 1) * 255).astype(np.uint8)).astype(float)
    assert np.abs(clean - seen).mean() < 12


def test_jpeg_and_webp_are_read(mnist_test):
    image = Image.open(io.BytesIO(draw_digit(mnist_test))).convert("RGB")
    for fmt in ("JPEG", "WEBP"):
        assert preprocess.to_mnist(png(image, fmt)) is not None


@pytest.mark.parametrize("size", [(4097, 10), (10, 4097), (4001, 4001), (20000, 20000)])
def test_images_over_the_size_limit_are_refused_before_decoding(size):
    bomb = png(Image.new("1", size, 0), optimize=True)  # a few kilobytes that would inflate to megapixels
    with pytest.raises(PreprocessError, match="limit is 4096 px a side and 16 megapixels"):
        preprocess.decode(bomb)


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"not an image at all", "not a PNG, JPEG or WebP"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", "not a PNG, JPEG or WebP"),
])
def test_unreadable_bytes_get_a_clear_error(data, message):
    with pytest.raises(PreprocessError, match=message):
        preprocess.decode(data)


def test_truncated_png_is_refused(mnist_test):
    data = draw_digit(mnist_test)
    with pytest.raises(PreprocessError, match="damaged or truncated|cannot be read"):
        preprocess.decode(data[: len(data) // 2])


def test_tiff_and_gif_are_refused():
    for fmt in ("TIFF", "GIF"):
        with pytest.raises(PreprocessError, match="not a PNG, JPEG or WebP"):
            preprocess.decode(png(Image.new("L", (50, 50), 255), fmt))


def test_animated_png_is_refused():
    frames = [Image.new("L", (40, 40), c) for c in (0, 255)]
    data = png(frames[0], save_all=True, append_images=frames[1:])
    with pytest.raises(PreprocessError, match="animated"):
        preprocess.decode(data)


def test_missing_path_is_named(tmp_path):
    with pytest.raises(PreprocessError, match="nope.png: no such file"):
        preprocess.decode(tmp_path / "nope.png")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_]),
    shape=st.one_of(
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=64),
        st.tuples(st.integers(0, 40), st.integers(0, 40), st.sampled_from([1, 2, 3, 4, 5])),
        hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6),
    ),
))  # float elements include NaN, infinities and extremes by default
def test_any_array_gives_an_input_or_a_clear_error(array):
    try:
        out = preprocess.to_mnist(array)
    except PreprocessError:
        return
    assert out is None or (out.shape == (28, 28) and out.dtype == np.uint8)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=4, max_size=64))
def test_nan_and_infinity_are_refused_not_propagated(values):
    array = np.array(values + [np.nan], np.float32)[: (len(values) + 1) // 2 * 2].reshape(2, -1)
    if not np.isfinite(array).all():
        with pytest.raises(PreprocessError, match="NaN or infinite"):
            preprocess.to_mnist(array)


def test_touching_slanted_digits_are_split_round_their_strokes_not_through_them():
    # Two parallel strokes slanting right, like "11" written in italics: every vertical line through the
    # middle slices one of them, but a path between them crosses no ink.
    from PIL import ImageDraw

    image = Image.new("L", (140, 120), 0)
    draw = ImageDraw.Draw(image)
    draw.line([(40, 110), (80, 10)], fill=255, width=7)
    draw.line([(70, 110), (110, 10)], fill=255, width=7)
    mask = np.asarray(image) > 127
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    assert not any(ndimage.label(box[:, :c])[1] == 1 and ndimage.label(box[:, c:])[1] == 1
                   for c in range(1, box.shape[1])), "no straight cut separates them"
    bounds = segment._cut_paths(box, 2)
    columns = np.arange(box.shape[1])[None, :]
    left = box & (columns < bounds[1][:, None])
    right = box & (columns >= bounds[1][:, None])
    assert ndimage.label(left, structure=np.ones((3, 3)))[1] == 1
    assert ndimage.label(right, structure=np.ones((3, 3)))[1] == 1
    assert abs(int(left.sum()) - int(right.sum())) < 0.1 * box.sum()


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(bool, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12)))
def test_fast_morphology_matches_scipy(mask):
    # The shifted-slice dilation and erosion stand in for scipy's on the hot path: they must agree exactly,
    # borders and one-pixel-wide masks included.
    assert np.array_equal(preprocess._dilate_cross(mask), ndimage.binary_dilation(mask))
    assert np.array_equal(preprocess._erode_cross(mask), ndimage.binary_erosion(mask))


@settings(max_examples=80, deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 300), elements=st.floats(0, 1, width=32)),
       st.lists(st.floats(0, 1), min_size=1, max_size=3))
def test_fast_quantiles_match_numpy(values, qs):
    assert np.allclose(preprocess._quantiles(values, tuple(qs)), np.quantile(values, qs), rtol=0, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, st.tuples(st.integers(16, 40), st.integers(16, 40)), elements=st.floats(0, 1, width=32)))
def test_ink_outside_the_reported_box_is_zero(gray):
    # Everything after the first passes looks inside the box only; that is exact only if nothing lies outside.
    ink, box = preprocess._ink_and_box(gray)
    outside = np.ones(ink.shape, bool)
    if box is not None:
        outside[box] = False
    assert not ink[outside].any()


def test_the_number_path_and_the_digit_path_keep_the_same_strokes():
    mask = np.zeros((60, 80), bool)
    mask[10:40, 10:14] = mask[10:40, 50:56] = True  # two strokes
    mask[50, 75] = True  # a speck
    labels, slices, areas = segment._significant_components(mask)
    assert np.array_equal(labels > 0, preprocess._keep_significant(mask))
    assert list(areas) == [30 * 4, 30 * 6] and [s[1].start for s in slices] == [10, 50]


def test_specks_are_dropped_wherever_the_ink_lies():
    mask = np.zeros((60, 80), bool)
    mask[10:40, 30:34] = True  # a stroke
    mask[50, 75] = True  # a speck far from it, outside the stroke's box
    mask[12, 36] = True  # a speck beside it
    kept = preprocess._keep_significant(mask)
    assert kept.shape == mask.shape
    assert kept[10:40, 30:34].all() and kept.sum() == 30 * 4


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_a_16_bit_scan_larger_than_the_working_size_is_read(mnist_test, mode):
    # Pillow's reduce(), behind thumbnail(), has no 16-bit kernels: such scans used to fail with a ValueError.
    digit = np.asarray(Image.open(io.BytesIO(draw_digit(mnist_test))).convert("L").resize((2048, 2048)))
    scan = Image.fromarray(digit.astype(np.uint16) * 257).convert(mode) if mode != "I" else \
        Image.fromarray(digit.astype(np.int32) * 257)
    gray = preprocess.decode(scan)[0]
    assert gray.shape == (512, 512) and gray.min() < 0.1 and gray.max() > 0.9
    assert preprocess.to_mnist(png(Image.fromarray(digit.astype(np.uint16) * 257))) is not None


def comb(teeth: int, size: int = 512) -> np.ndarray:
    """Dark vertical bars on white, each a separate mark: the costliest kind of 'number' per byte."""
    canvas = np.full((size, size), 255, np.uint8)
    pitch = size // teeth
    for k in range(teeth):
        canvas[size // 4 : 3 * size // 4, k * pitch : k * pitch + max(1, pitch // 2)] = 0
    return canvas


def test_a_number_with_more_marks_than_the_limit_is_refused_before_it_is_read():
    limits = preprocess.Limits()
    gray = preprocess.decode(comb(limits.max_marks + 1))[0]
    with pytest.raises(preprocess.TooManyMarks, match=f"{limits.max_marks + 1} separate marks"):
        segment.segment_digits(gray, max_marks=limits.max_marks)
    atoms, candidates = segment.segment_digits(preprocess.decode(comb(limits.max_marks))[0],
                                                  max_marks=limits.max_marks)
    assert atoms == limits.max_marks and candidates
