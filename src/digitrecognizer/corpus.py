"""Training inputs beyond MNIST: other writers' collections, synthetic writing styles and non-digits, each drawn
on a canvas and put through the recognizer's own preprocessing, so training sees what serving sees (numpy)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from . import negatives, preprocess, styles, writers
from .constants import NOT_A_DIGIT
from .data import MnistSplit
from .files import atomic_write

log = logging.getLogger(__name__)

CORPUS_VERSION = 2  # bump when a generator changes: cached inputs of another version are not reused


@dataclass
class CorpusConfig:
    """What is added to MNIST's training digits. Counts are inputs rendered once; the training augmentation then
    distorts them differently in every epoch."""

    collections: list[str] = field(default_factory=lambda: list(writers.COLLECTIONS))
    renderings: int = 2  # canvas renderings of each collection digit (size, place, pen differ)
    smooth_share: float = 0.5  # pen trajectories drawn as a smooth curve instead of a polyline, this often
    styles: int = 12_000  # synthetic-style digits, spread evenly over the styles
    tablet_share: float = 0.0  # of the styles, drawn as a low-rate tablet records them (styles.tablet_path)
    tablet_reorder: float = 0.0  # of those, strokes joined in another order and direction
    negatives: int = 16_000  # non-digits, spread evenly over the training families
    # Names of negatives.OPTIONAL_FAMILIES trained on as well: `negatives` is then spread over those too.
    extra_families: list[str] = field(default_factory=list)
    # MNIST training digits as a small scan keeps them (`coarse_scan`), enlarged and preprocessed like an upload.
    coarse_scans: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.extra_families) - set(negatives.OPTIONAL_FAMILIES))
        if unknown:
            raise ValueError(f"unknown non-digit families {unknown}: choose from {sorted(negatives.OPTIONAL_FAMILIES)}")

    @property
    def enabled(self) -> bool:
        return bool(self.collections or self.styles or self.negatives)


def _until(n: int, make) -> np.ndarray:
    """n preprocessed inputs from `make()` ink maps, skipping the rare one preprocessing finds blank."""
    out = []
    while len(out) < n:
        x = preprocess.to_mnist(make())
        if x is not None:
            out.append(x)
    return np.stack(out) if out else np.zeros((0, 28, 28), np.uint8)


def collection_inputs(name: str, config: CorpusConfig, writers_dir: str | None) -> MnistSplit:
    collection = writers.load_collection(name, writers_dir)
    rng = np.random.default_rng([config.seed, writers.COLLECTIONS.index(name)])
    rendering = writers.CanvasRendering(canvas_px=160, smooth=config.smooth_share)
    images, labels = [], []
    for _ in range(config.renderings):
        for i in range(len(collection)):
            x = preprocess.to_mnist(writers.render_ink(collection, i, rng, rendering))
            if x is not None:
                images.append(x)
                labels.append(collection.labels[i])
    return MnistSplit(np.stack(images), np.asarray(labels, np.int64))


def coarse_scan(image: np.ndarray, cells: int) -> np.ndarray:
    """A 28x28 digit as a low-resolution scan keeps it: its ink box, padded to a square, averaged down to
    `cells` x `cells` (UCI's optdigits keep 8 x 8), ink in [0, 1] with the most inked cell full."""
    rows, cols = np.nonzero(image)
    if len(rows) == 0:
        return np.zeros((cells, cells), np.float32)
    box = image[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1].astype(np.float32)
    side = max(box.shape)
    square = np.zeros((side, side), np.float32)
    top, left = (side - box.shape[0]) // 2, (side - box.shape[1]) // 2
    square[top: top + box.shape[0], left: left + box.shape[1]] = box
    small = np.asarray(Image.fromarray(square, "F").resize((cells, cells), Image.Resampling.BOX))
    return small / max(float(small.max()), 1e-6)


def coarse_scan_inputs(config: CorpusConfig, mnist: MnistSplit) -> MnistSplit:
    """MNIST training digits scanned at 7 to 12 cells a side, then drawn and preprocessed as a collection is: the
    thin, unevenly grey strokes a small scan or a distant photo gives once enlarged."""
    rng = np.random.default_rng([config.seed, 300])
    rendering = writers.CanvasRendering(canvas_px=160)
    images, labels = [], []
    for i in rng.choice(len(mnist.labels), size=min(config.coarse_scans, len(mnist.labels)), replace=False):
        scan = coarse_scan(mnist.images[i], int(rng.integers(7, 13)))
        side = int(rng.uniform(*rendering.side) * rendering.canvas_px)
        x = preprocess.to_mnist(writers.place_on_canvas(writers.bitmap_ink(scan, side), rng, rendering.canvas_px))
        if x is not None:
            images.append(x)
            labels.append(mnist.labels[i])
    return MnistSplit(np.stack(images), np.asarray(labels, np.int64))


def style_inputs(config: CorpusConfig) -> MnistSplit:
    rng = np.random.default_rng([config.seed, 100])
    names = list(styles.STYLES)
    per_style = config.styles // len(names)
    images = [_until(per_style, partial(styles.render_style, name, rng, tablet=config.tablet_share,
                                        reorder=config.tablet_reorder)) for name in names]
    labels = [np.full(per_style, styles.STYLES[name][0], np.int64) for name in names]
    return MnistSplit(np.concatenate(images), np.concatenate(labels))


def negative_inputs(config: CorpusConfig, mnist_images: np.ndarray) -> MnistSplit:
    rng = np.random.default_rng([config.seed, 200])
    families = [*negatives.TRAINING_FAMILIES.values(),
                *(negatives.OPTIONAL_FAMILIES[name] for name in config.extra_families)]
    per_family = config.negatives // len(families)
    images = np.concatenate([_until(per_family, lambda: family(rng, mnist_images)) for family in families])
    return MnistSplit(images, np.full(len(images), NOT_A_DIGIT, np.int64))


def _cache_path(config: CorpusConfig, part: str) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "digitrecognizer" / "corpus"
    settings = asdict(config)
    del settings["collections"]  # each collection is a part of its own: runs that leave one out share the rest
    if part == "negatives":  # an experiment that adds a family gets inputs of its own
        settings["families"] = list(negatives.TRAINING_FAMILIES)
    key = json.dumps({"version": CORPUS_VERSION, "part": part, **settings}, sort_keys=True)
    return cache / f"{part}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def _cached(config: CorpusConfig, part: str, build) -> MnistSplit:
    """Rendering takes a few minutes; a run that resumes or repeats the recipe reads the same inputs back."""
    path = _cache_path(config, part)
    if path.is_file():
        with np.load(path) as npz:
            return MnistSplit(npz["images"], npz["labels"])
    split = build()
    atomic_write(path, lambda f: np.savez_compressed(f, images=split.images, labels=split.labels))
    return split


def build(config: CorpusConfig, mnist_train: MnistSplit, writers_dir: str | None = None) -> MnistSplit:
    """Every added input, in a fixed order: collections, styles, non-digits."""
    parts = []
    for name in config.collections:
        parts.append(_cached(config, f"collection-{name}", lambda: collection_inputs(name, config, writers_dir)))
    if config.coarse_scans:
        parts.append(_cached(config, "coarse-scans", lambda: coarse_scan_inputs(config, mnist_train)))
    if config.styles:
        parts.append(_cached(config, "styles", lambda: style_inputs(config)))
    if config.negatives:
        # Squeezed and scratched-out digits redraw MNIST training digits (never validation ones).
        parts.append(_cached(config, "negatives", lambda: negative_inputs(config, mnist_train.images)))
    for part in parts:
        log.info("corpus part: %d inputs", len(part))
    return MnistSplit(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))
