"""MNIST data: locate, download (with checksums), read and validate IDX files, and split train/validation (numpy only)."""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import sha256_file

log = logging.getLogger(__name__)

# The official files and their sha256 (http://yann.lecun.com/exdb/mnist/, as mirrored).
OFFICIAL_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
# Public mirrors tried in order; the first that serves a file with the right checksum wins.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
ENV_DATA_DIR = "DIGITRECOGNIZER_DATA"


class DataError(ValueError):
    """A data file is missing or malformed; the message names the file and the fix."""


def default_data_dir() -> Path:
    """--data-dir is resolved by the caller; this is the fallback: $DIGITRECOGNIZER_DATA, else ~/.cache."""
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "digitrecognizer" / "mnist"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir).expanduser() if data_dir else default_data_dir()


def _find(data_dir: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (data_dir / name).is_file():
            return data_dir / name
    raise DataError(
        f"{stem}(.gz) not found in {data_dir}: run `digitrecognizer data download --data-dir {data_dir}` "
        f"or point --data-dir / ${ENV_DATA_DIR} at a folder holding the four MNIST files"
    )


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{path.name}: cannot be read ({err}); the file is damaged: download it again") from err


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Parse one IDX file, checking magic number, dimensions and length before numpy sees it."""
    raw = _read_bytes(path)
    kind = {IMAGE_MAGIC: "images", LABEL_MAGIC: "labels"}
    if len(raw) < 8:
        raise DataError(f"{path.name}: only {len(raw)} bytes, too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        hint = f": is this a {kind[magic]} file?" if magic in kind else ""
        raise DataError(f"{path.name}: expected magic {expected_magic}, found {magic}{hint}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path.name}: header truncated ({len(raw)} bytes)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape)) + header
    if len(raw) != expected:
        raise DataError(
            f"{path.name}: header declares shape {shape} ({expected} bytes) but the file has {len(raw)} bytes: "
            "it is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()  # writable, owns its memory


@dataclass(frozen=True)
class MnistSplit:
    images: np.ndarray  # (N, 28, 28) uint8, white ink on black as in MNIST
    labels: np.ndarray  # (N,) int64 in 0..9

    def __len__(self) -> int:
        return len(self.labels)


def load_split(data_dir: str | os.PathLike | None, split: str, verify: bool = True) -> MnistSplit:
    """Load 'train' or 'test' from a directory holding the standard file names (gzip or raw)."""
    data_dir = resolve_data_dir(data_dir)
    image_stem, label_stem, count = SPLITS[split]
    image_path, label_path = _find(data_dir, image_stem), _find(data_dir, label_stem)
    if verify:
        warn_on_checksum_mismatch(image_path, label_path)
    images = read_idx(image_path, IMAGE_MAGIC)
    labels = read_idx(label_path, LABEL_MAGIC)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{image_path.name}: expected images of 28x28, found shape {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{label_path.name}: expected a 1-D label vector, found shape {labels.shape}")
    if len(images) != len(labels):
        raise DataError(
            f"{image_path.name} has {len(images)} images but {label_path.name} has {len(labels)} labels: "
            "the files are from different sets"
        )
    if len(images) != count:
        log.warning("%s: %d images, the standard %s split has %d", image_path.name, len(images), split, count)
    check_labels(labels, label_path.name)
    return MnistSplit(images=images, labels=labels.astype(np.int64))


def check_labels(labels: np.ndarray, source: str) -> None:
    """Refuse labels outside 0..9, naming where they came from."""
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
        raise DataError(f"{source}: label {bad} is outside 0..9 (labels must be 0..9)")


def concatenate(splits: list[MnistSplit]) -> MnistSplit:
    return MnistSplit(np.concatenate([s.images for s in splits]), np.concatenate([s.labels for s in splits]))


def load_extra_data(path: Path) -> MnistSplit:
    """Extra training examples from an NPZ with `images` (N, 28, 28) uint8 and `labels` (N,) in 0..9."""
    try:
        with np.load(path) as npz:
            images, labels = npz["images"], npz["labels"].astype(np.int64)
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"{path}: not an NPZ with 'images' and 'labels' ({err}); "
                        "write one with `digitrecognizer feedback export`") from err
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8 or len(images) != len(labels):
        raise DataError(f"{path}: expected images (N, 28, 28) uint8 and N labels, got {images.shape} "
                        f"{images.dtype} and {labels.shape}")
    check_labels(labels, str(path))
    return MnistSplit(images, labels)


def warn_on_checksum_mismatch(*paths: Path) -> None:
    """A user's own copy is trusted, with a warning, when it differs from the official bytes."""
    for path in paths:
        official = OFFICIAL_SHA256.get(path.name if path.suffix == ".gz" else path.name + ".gz")
        if path.suffix == ".gz" and official and sha256_file(path) != official:
            log.warning("%s: sha256 differs from the official file; using it as given", path)


def train_val_split(train: MnistSplit, val_fraction: float, seed: int) -> tuple[MnistSplit, MnistSplit]:
    """A seeded, stratified hold-out: the validation split chooses models and thresholds, never the test set."""
    rng = np.random.default_rng(seed)
    val_idx = []
    for digit in range(10):
        idx = np.flatnonzero(train.labels == digit)
        val_idx.append(rng.choice(idx, size=int(round(len(idx) * val_fraction)), replace=False))
    val_mask = np.zeros(len(train), dtype=bool)
    val_mask[np.concatenate(val_idx)] = True
    return (
        MnistSplit(train.images[~val_mask], train.labels[~val_mask]),
        MnistSplit(train.images[val_mask], train.labels[val_mask]),
    )


def download(data_dir: str | os.PathLike | None, mirrors: tuple[str, ...] = MIRRORS) -> Path:
    """Fetch the four official files, verifying each sha256; files already present and correct are kept."""
    data_dir = resolve_data_dir(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    for name, official in OFFICIAL_SHA256.items():
        target = data_dir / name
        if target.is_file() and sha256_file(target) == official:
            log.info("%s: present, checksum ok", name)
            continue
        errors = []
        for mirror in mirrors:
            try:
                _fetch_verified(mirror + name, target, official)
                log.info("%s: downloaded from %s", name, mirror)
                break
            except (OSError, DataError) as err:
                errors.append(f"{mirror}: {err}")
        else:
            failures.append(f"{name}: no mirror served a valid copy:\n  " + "\n  ".join(errors))
    if failures:
        raise DataError("\n".join(failures))
    return data_dir


def _fetch_verified(url: str, target: Path, sha256: str) -> None:
    # Download beside the target, verify, then rename: a failed download never leaves a half file behind.
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, tmp)
            tmp.close()
            got = sha256_file(Path(tmp.name))
            if got != sha256:
                raise DataError(f"checksum mismatch (got {got[:12]}…, expected {sha256[:12]}…)")
            os.replace(tmp.name, target)
        finally:
            if os.path.exists(tmp.name):
                os.unlink(tmp.name)
