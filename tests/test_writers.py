"""Other writers' collections: readers, validation and canvas renderings; synthetic styles; non-digit families;
the training corpus built from them."""

import gzip
import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from digitrecognizer import Recognizer, corpus, negatives, preprocess, styles, writers
from digitrecognizer.data import DataError


@pytest.fixture(scope="session")
def writers_dir(mnist_dir) -> Path:
    folder = writers.default_writers_dir(mnist_dir)
    if not (folder / "pendigits.tra.gz").exists():
        pytest.fail(f"the writers' collections are not in {folder}: set DIGITRECOGNIZER_WRITERS")
    return folder


@pytest.mark.parametrize("name, count, shape", [("optdigits", 2880, (32, 32)), ("pendigits", 7494, (8, 2)),
                                                ("usps", 7291, (16, 16))])
def test_each_shared_collection_reads_with_its_published_counts(writers_dir, name, count, shape):
    c = writers.load_collection(name, writers_dir)
    samples = c.bitmaps if c.bitmaps is not None else c.trajectories
    assert len(c) == count and samples.shape == (count, *shape)
    assert set(np.unique(c.labels)) == set(range(10))
    assert samples.min() >= 0 and samples.max() <= 1


def test_pendigits_trajectories_are_turned_to_y_down(writers_dir):
    c = writers.load_collection("pendigits", writers_dir)
    ones = c.trajectories[c.labels == 1]
    # A 1 starts at the top: with y pointing down its first point has the smaller y, for most writers.
    assert np.mean(ones[:, 0, 1] < ones[:, -1, 1]) > 0.8


def _gz(path: Path, text: str) -> Path:
    with gzip.open(path, "wt") as f:
        f.write(text)
    return path


def test_a_truncated_optdigits_bitmap_is_refused_with_its_line(tmp_path):
    path = _gz(tmp_path / "optdigits-orig.cv.gz", "1\n" + "0" * 32 + "\n" * 1 + " 5\n")
    with pytest.raises(DataError, match="expected a label after 32 bitmap rows"):
        writers.read_optdigits(path)


def test_a_collection_with_wrong_counts_is_refused_and_a_changed_file_warned(tmp_path, caplog):
    rows = "".join(f"{d}" + " -1" * 256 + "\n" for d in range(10))
    _gz(tmp_path / "usps-zip.train.gz", rows)
    with caplog.at_level(logging.WARNING), pytest.raises(DataError, match="digit counts"):
        writers.load_collection("usps", tmp_path)
    assert "sha256 differs" in caplog.text


def test_a_missing_collection_file_says_where_to_point(tmp_path):
    with pytest.raises(DataError, match="DIGITRECOGNIZER_WRITERS"):
        writers.load_collection("pendigits", tmp_path)


def test_an_unknown_collection_lists_the_known_ones():
    with pytest.raises(ValueError, match="optdigits, pendigits, usps"):
        writers.load_collection("emnist")


def test_renderings_are_seeded_and_reach_the_model_as_28x28_inputs(writers_dir):
    c = writers.load_collection("pendigits", writers_dir).subset(np.arange(20))
    a, b = writers.canvas_pngs(c, seed=3), writers.canvas_pngs(c, seed=3)
    assert a == b
    inputs = [preprocess.to_mnist(png) for png in a]
    assert all(x is not None and x.shape == (28, 28) and x.max() == 255 for x in inputs)


@pytest.mark.parametrize("name", list(styles.STYLES))
def test_every_synthetic_style_draws_a_digit_sized_input(name):
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = preprocess.to_mnist(styles.render_style(name, rng))
        assert x is not None and x.shape == (28, 28)
        rows, cols = np.flatnonzero(x.max(1) > 64), np.flatnonzero(x.max(0) > 64)
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) >= 14  # scaled to the 20 px box, as MNIST digits


def test_a_tablet_path_is_one_coarse_polyline_through_every_stroke():
    rng = np.random.default_rng(0)
    strokes = styles.hand(styles.STYLES["crossed 7"][1](rng), rng)
    assert len(strokes) == 2
    for _ in range(20):
        (path,) = styles.tablet_path(strokes, rng, points=(6, 13), square=0.0)
        assert 7 <= len(path) <= 13  # 6-12 straight segments
        np.testing.assert_allclose(path[0], strokes[0][0], atol=1e-5)  # from the first stroke's start ...
        np.testing.assert_allclose(path[-1], strokes[-1][-1], atol=1e-5)  # ... to the last stroke's end


def test_a_reordered_tablet_path_starts_and_ends_at_stroke_ends_in_every_order():
    rng = np.random.default_rng(3)
    strokes = styles.hand(styles.STYLES["crossed 7"][1](rng), rng)
    ends = [s[0] for s in strokes] + [s[-1] for s in strokes]
    starts = set()
    for _ in range(40):
        (path,) = styles.tablet_path(strokes, rng, square=0.0, reorder=1.0)
        start = min(range(4), key=lambda i: np.linalg.norm(ends[i] - path[0]))
        assert np.linalg.norm(ends[start] - path[0]) < 1e-5  # still from a stroke's end ...
        assert min(np.linalg.norm(e - path[-1]) for e in ends) < 1e-5  # ... to a stroke's end
        starts.add(start)
    assert starts == {0, 1, 2, 3}  # either stroke first, either way round
    (kept,) = styles.tablet_path(strokes, np.random.default_rng(4), square=0.0, reorder=0.0)
    np.testing.assert_allclose(kept[0], strokes[0][0], atol=1e-5)  # no reordering unless asked


def test_a_tablet_path_stretched_to_a_square_fills_it():
    rng = np.random.default_rng(1)
    one = styles.hand(styles.STYLES["1 with flag"][1](rng), rng)
    extents = []
    for _ in range(50):
        (path,) = styles.tablet_path(one, rng, square=1.0)
        extent = path.max(0) - path.min(0)
        extents.append(extent.min() / extent.max())
    assert min(extents) > 0.2 and max(extents) > 0.9  # narrow 1s widened, some all the way to a square


def test_compositions_are_several_separate_marks():
    rng = np.random.default_rng(2)

    for _ in range(10):
        ink = negatives.composition_ink(rng)
        assert ndimage.label(ink > 0.3)[1] >= 2


def test_letters_that_look_like_digits_are_in_no_non_digit_family():
    disguised = set("OoDQIlijZzSsbGBgq")
    assert not disguised & set(negatives.UPPERCASE + negatives.LOWERCASE + negatives.SYMBOLS)
    # Nor, among other alphabets, what looks like a digit or like a held-out lowercase Latin letter.
    assert not set("ΘΦφθΣεδσБЗЧЭЮ∞⊗∫∂αγηικμνρτυχω∩∪⊂×") & set(negatives.OTHER_ALPHABETS)


def test_a_glyph_no_font_has_is_never_drawn_as_a_box():
    assert all(negatives.fonts_with(c) for c in negatives.OTHER_ALPHABETS)  # the fonts the test setup installs
    assert negatives.fonts_with("A") == negatives.font_files()
    assert not negatives.fonts_with("\ue000")  # a private-use character: no font has it
    for seed in range(5):
        drawn = negatives.glyph_ink("\ue000A", np.random.default_rng(seed))
        assert np.array_equal(drawn, negatives.glyph_ink("A", np.random.default_rng(seed)))


def test_held_out_non_digit_families_are_not_training_families():
    assert not set(negatives.HELD_OUT_FAMILIES) & set(negatives.TRAINING_FAMILIES)
    assert not set(negatives.VALIDATION_FAMILIES) & (set(negatives.TRAINING_FAMILIES) | set(negatives.HELD_OUT_FAMILIES))


def test_filled_blobs_are_solid_shapes_not_bars():
    for ink in (negatives.blob_ink(np.random.default_rng(seed)) for seed in range(20)):
        solid = ink > 0.3
        assert ndimage.binary_fill_holes(solid).sum() == solid.sum()  # filled, not an outline
        rows, cols = np.flatnonzero(solid.any(1)), np.flatnonzero(solid.any(0))
        height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        assert min(height, width) / max(height, width) > 0.3  # not a bar, which could be a thick 1


def test_pen_letters_are_lowercase_letters_that_are_not_digits_in_disguise():
    assert set(negatives.PEN_LETTERS) <= set(negatives.LOWERCASE)
    # The capitals a recipe may train on are none whose lowercase form has the same shape.
    assert set(negatives.PEN_CAPITALS) <= set(negatives.UPPERCASE) - set("CKUVWXY")
    for letter, strokes in (negatives.PEN_LETTERS | negatives.PEN_CAPITALS).items():
        points = np.concatenate(strokes())
        assert points.min() >= -0.05 and points.max() <= 1.05, letter  # drawn in the unit box
    drawn = [negatives.pen_letter_ink(np.random.default_rng(seed)) for seed in range(10)]
    assert all(ink.shape == (negatives.CANVAS_PX,) * 2 and ink.max() > 0.9 for ink in drawn)
    assert not np.array_equal(drawn[0], drawn[1])


def test_stroke_letters_are_pen_strokes_of_letters_that_are_not_digits_in_disguise():
    for font in negatives.STROKE_FONTS:
        for letter in negatives.UPPERCASE + negatives.LOWERCASE:
            points = np.concatenate(negatives.stroke_glyph(font, letter))
            assert points.min() >= -1e-6 and points.max() <= 1 + 1e-6, (font, letter)  # in the unit box
            assert np.isclose(np.ptp(points, 0).max(), 1), (font, letter)  # its longer side fills it
    # The script hand is not the sans hand: the same letter is drawn differently.
    assert not np.array_equal(np.concatenate(negatives.stroke_glyph("futural", "a")),
                              np.concatenate(negatives.stroke_glyph("scripts", "a")))
    drawn = [negatives.stroke_letter_ink(np.random.default_rng(seed)) for seed in range(10)]
    assert all(ink.shape == (negatives.CANVAS_PX,) * 2 and ink.max() > 0.9 for ink in drawn)


def test_stroke_symbols_are_drawn_signs_never_the_letters_or_digits_of_the_fonts_that_hold_both():
    for font, char in negatives.STROKE_SYMBOL_GLYPHS:
        points = np.concatenate(negatives.stroke_glyph(font, char))
        assert len(points) >= 2 and np.isclose(np.ptp(points, 0).max(), 1), (font, char)  # drawn, filling the box
        if font in ("astrology", "meteorology", "music"):  # these hold Latin letters and digits at those characters
            assert not char.isalnum(), (font, char)
    assert len(set(negatives.STROKE_SYMBOL_GLYPHS)) == len(negatives.STROKE_SYMBOL_GLYPHS)
    drawn = [negatives.OPTIONAL_FAMILIES["stroke symbols"](np.random.default_rng(seed), None) for seed in range(10)]
    assert all(ink.shape == (negatives.CANVAS_PX,) * 2 and ink.max() > 0.9 for ink in drawn)


def test_pictures_never_have_a_single_mark_which_is_how_some_people_write_a_zero():
    for seed in range(200):
        assert len(negatives.picture_details(np.random.default_rng(seed), 0.3, reach=0.5)) >= 2
        ring, round_ = (make(np.random.default_rng(seed))
                        for make in (negatives.ring_picture_strokes, negatives.round_picture_strokes))
        for outline in (ring[0], round_[0]):
            assert np.allclose(outline[0], outline[-1], atol=1e-6)  # a closed outline
        assert len(round_) >= 3  # an outline and two marks at least
    for name in ("framed pictures", "round pictures"):
        assert negatives.OPTIONAL_FAMILIES[name](np.random.default_rng(0), None).shape == (negatives.CANVAS_PX,) * 2


def test_family_canvases_are_seeded_and_take_the_canvas_styles_in_turn():
    make = negatives.VALIDATION_FAMILIES["filled blobs"]
    first, again = negatives.family_canvases(make, 8, seed=5), negatives.family_canvases(make, 8, seed=5)
    assert first == again and first != negatives.family_canvases(make, 8, seed=6)
    modes = [Image.open(io.BytesIO(png)).mode for png in first]
    assert modes == ["L", "L", "RGB", "RGBA"] * 2  # white on black, black on white, colour on dark, transparent


def test_the_corpus_labels_non_digits_with_the_eleventh_output_and_is_cached(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    from digitrecognizer import data

    mnist = data.load_split(mnist_dir, "test")
    families = len(negatives.TRAINING_FAMILIES)
    config = corpus.CorpusConfig(collections=[], styles=len(styles.STYLES) * 2, negatives=2 * families)
    first = corpus.build(config, mnist)
    assert first.images.shape[1:] == (28, 28) and first.images.dtype == np.uint8
    assert np.sum(first.labels == corpus.NOT_A_DIGIT) == 2 * families
    assert set(first.labels[first.labels < 10]) == {d for d, _ in styles.STYLES.values()}
    assert len(list((tmp_path / "digitrecognizer" / "corpus").glob("*.npz"))) == 2
    again = corpus.build(config, mnist)
    assert np.array_equal(first.images, again.images) and np.array_equal(first.labels, again.labels)
    # A family added (as an experiment does) renders non-digits of its own instead of reading the cached ones.
    monkeypatch.setitem(negatives.TRAINING_FAMILIES, "dots", lambda rng, _: negatives.speck_ink(rng))
    corpus.build(config, mnist)
    assert len(list((tmp_path / "digitrecognizer" / "corpus").glob("negatives-*.npz"))) == 2


def test_an_optional_family_adds_its_own_non_digits_and_an_unknown_one_is_refused(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    from digitrecognizer import data

    mnist = data.load_split(mnist_dir, "test")
    per_family, families = 2, len(negatives.TRAINING_FAMILIES)
    count = per_family * (families + 1)
    plain = corpus.build(corpus.CorpusConfig(collections=[], styles=0, negatives=count), mnist)
    more = corpus.build(corpus.CorpusConfig(collections=[], styles=0, negatives=count,
                                            extra_families=["other alphabets"]), mnist)
    assert len(plain.images) == per_family * families and len(more.images) == count
    assert np.array_equal(more.images[: len(plain.images)], plain.images)  # the same families first, then the new one
    assert np.all(more.labels == corpus.NOT_A_DIGIT)
    with pytest.raises(ValueError, match="other alphabets"):
        corpus.CorpusConfig(extra_families=["runes"])


def test_numbers_of_scans_are_seeded_and_read_digit_by_digit(writers_dir):
    c = writers.load_collection("optdigits", writers_dir).subset(np.arange(200))
    numbers = writers.number_pngs(c, 12, seed=3)
    assert [n.png for n in numbers] == [n.png for n in writers.number_pngs(c, 12, seed=3)]
    assert all(2 <= len(n.text) <= 6 for n in numbers)
    recognizer = Recognizer()
    readings = [recognizer.read_number(n.png).text for n in numbers]
    assert [len(r) for r in readings] == [len(n.text) for n in numbers]  # one mark per scan, none split or merged
    assert sum(r == n.text for r, n in zip(readings, numbers)) >= 10


def test_uci_counts_reduce_32x32_bitmaps_to_8x8_counts_of_ink():
    bitmaps = np.zeros((2, 32, 32), np.float32)
    bitmaps[0, :4, :4] = 1  # one full block
    bitmaps[1, 4:8, 0:2] = 1  # half a block
    reduced = writers.uci_counts(writers.Collection("optdigits", np.array([1, 7]), bitmaps=bitmaps))
    assert reduced.bitmaps.shape == (2, 8, 8) and reduced.name == "optdigits-8x8"
    assert reduced.bitmaps[0, 0, 0] == 1.0 and reduced.bitmaps[0].sum() == 1.0
    assert reduced.bitmaps[1, 1, 0] == 0.5 and reduced.bitmaps[1].sum() == 0.5
    assert list(reduced.labels) == [1, 7]


def test_a_coarse_scan_keeps_the_digits_shape_on_a_small_grid(mnist_dir):
    from digitrecognizer import data

    mnist = data.load_split(mnist_dir, "test")
    one = mnist.images[np.flatnonzero(mnist.labels == 1)[0]]
    scan = corpus.coarse_scan(one, 8)
    assert scan.shape == (8, 8) and scan.max() == 1.0 and scan.min() >= 0.0
    inked_columns = np.flatnonzero(scan.max(axis=0) > 0.25)
    assert len(inked_columns) <= 5  # a 1 stays narrow: its box is padded to a square, not stretched
    assert not corpus.coarse_scan(np.zeros((28, 28), np.uint8), 8).any()


def test_coarse_scans_reach_the_model_as_digit_inputs_and_are_cached(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    from digitrecognizer import data

    mnist = data.load_split(mnist_dir, "test")
    config = corpus.CorpusConfig(collections=[], styles=0, negatives=0, coarse_scans=40)
    scans = corpus.build(config, mnist)
    assert scans.images.shape == (40, 28, 28) and set(scans.labels) <= set(range(10))
    assert list((tmp_path / "digitrecognizer" / "corpus").glob("coarse-scans-*.npz"))
    boxes = [preprocess.bounding_box(x > 0) for x in scans.images]
    assert all(max(b[0].stop - b[0].start, b[1].stop - b[1].start) == 20 for b in boxes)  # preprocessed like an upload
    recognizer = Recognizer()
    read = [p.digit for p in recognizer.predict_inputs(list(scans.images))]
    assert np.mean(np.array(read) == scans.labels) >= 0.8  # still the digits they were
