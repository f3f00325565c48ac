"""Synthetic drawings: digits drawn in every canvas style, reproducible from a seed, as the model sees them."""

import io

import numpy as np
from PIL import Image

from digitrecognizer import preprocess, synth


def test_drawn_digits_come_in_every_canvas_style_reproducibly(mnist_test):
    images, labels = mnist_test.images[:30], mnist_test.labels[:30]
    drawn = synth.drawn_digits(images, labels, per_style=5, seed=10)
    styles = len(synth.CANVAS_STYLES)
    assert len(drawn.pngs) == len(drawn.labels) == len(drawn.styles) == 5 * styles
    assert drawn.styles.tolist() == [k for k in range(styles) for _ in range(5)]
    again = synth.drawn_digits(images, labels, per_style=5, seed=10)
    assert drawn.pngs == again.pngs and np.array_equal(drawn.labels, again.labels)
    # Style k is the style's own digit_set, drawn from seed + k: the helper adds no randomness of its own.
    pngs, style_labels = synth.digit_set(images, labels, 5, seed=11, style=synth.CANVAS_STYLES[1])
    assert drawn.pngs[5:10] == pngs and np.array_equal(drawn.labels[5:10], style_labels)


def test_drawn_digits_preprocess_to_model_inputs(mnist_test):
    drawn = synth.drawn_digits(mnist_test.images[:20], mnist_test.labels[:20], per_style=3, seed=0)
    inputs, blank = drawn.preprocessed()
    assert inputs.shape == (len(drawn.pngs), 28, 28) and inputs.dtype == np.uint8 and not blank.any()
    assert np.array_equal(inputs[0], preprocess.to_mnist(drawn.pngs[0]))


def test_a_blank_drawing_preprocesses_to_zeros_and_is_flagged():
    blank_png = synth.encode_png(Image.new("L", (280, 280), 255))
    inputs, blank = synth.preprocessed([blank_png])
    assert blank.tolist() == [True] and not inputs.any()


def test_non_digits_rotate_through_the_canvas_styles_and_are_seeded():
    first = synth.non_digit_set(8, seed=3)
    assert first == synth.non_digit_set(8, seed=3) and first != synth.non_digit_set(8, seed=4)
    modes = [Image.open(io.BytesIO(png)).mode for png in first[:4]]
    assert modes == ["L", "L", "RGB", "RGBA"]
