"""The MNIST reader: valid files load; damaged, wrong or missing files are refused with a message naming them."""

import gzip
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from digitrecognizer import data


def copy_split(src: Path, dst: Path, split: str = "test", gz: bool = True) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for stem in data.SPLITS[split][:2]:
        if gz:
            shutil.copy(src / f"{stem}.gz", dst / f"{stem}.gz")
        else:
            (dst / stem).write_bytes(gzip.decompress((src / f"{stem}.gz").read_bytes()))
    return dst


def test_official_files_load_with_the_right_shapes(mnist_dir):
    train, test = data.load_split(mnist_dir, "train"), data.load_split(mnist_dir, "test")
    assert train.images.shape == (60_000, 28, 28) and train.images.dtype == np.uint8
    assert test.images.shape == (10_000, 28, 28)
    assert train.labels.shape == (60_000,) and set(np.unique(test.labels)) == set(range(10))


def test_uncompressed_idx_files_load_too(mnist_dir, tmp_path):
    folder = copy_split(mnist_dir, tmp_path, gz=False)
    assert len(data.load_split(folder, "test")) == 10_000


def test_truncated_idx_file_is_refused_with_its_name(mnist_dir, tmp_path):
    folder = copy_split(mnist_dir, tmp_path, gz=False)
    path = folder / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(data.DataError, match="t10k-images-idx3-ubyte.*truncated"):
        data.load_split(folder, "test")


def test_truncated_gzip_is_refused_with_its_name(mnist_dir, tmp_path):
    folder = copy_split(mnist_dir, tmp_path)
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(data.DataError, match="t10k-images-idx3-ubyte.gz"):
        data.load_split(folder, "test")


def test_labels_file_in_place_of_images_names_the_mixup(mnist_dir, tmp_path):
    folder = copy_split(mnist_dir, tmp_path)
    shutil.copy(folder / "t10k-labels-idx1-ubyte.gz", folder / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(data.DataError, match="expected magic 2051, found 2049: is this a labels file"):
        data.load_split(folder, "test")


def test_image_and_label_counts_must_agree(mnist_dir, tmp_path):
    folder = copy_split(mnist_dir, tmp_path, gz=False)
    labels = folder / "t10k-labels-idx1-ubyte"
    raw = bytearray(labels.read_bytes())
    raw[4:8] = (9_999).to_bytes(4, "big")
    labels.write_bytes(bytes(raw[:-1]))
    with pytest.raises(data.DataError, match="10000 images but .* 9999 labels"):
        data.load_split(folder, "test")


def test_label_outside_0_to_9_is_refused(mnist_dir, tmp_path):
    folder = copy_split(mnist_dir, tmp_path, gz=False)
    labels = folder / "t10k-labels-idx1-ubyte"
    raw = bytearray(labels.read_bytes())
    raw[8] = 12
    labels.write_bytes(bytes(raw))
    with pytest.raises(data.DataError, match="label 12 is outside 0..9"):
        data.load_split(folder, "test")


def test_missing_file_is_named_with_how_to_get_it(tmp_path):
    with pytest.raises(data.DataError, match="t10k-images-idx3-ubyte.*not found.*data download"):
        data.load_split(tmp_path, "test")


def test_a_local_copy_with_another_checksum_is_used_with_a_warning(mnist_dir, caplog):
    # The shared train-images file is a lossless rebuild, not the official bytes.
    with caplog.at_level(logging.WARNING):
        train = data.load_split(mnist_dir, "train")
    assert len(train) == 60_000
    assert "train-images-idx3-ubyte.gz: sha256 differs" in caplog.text


def test_environment_variable_chooses_the_data_folder(mnist_dir, monkeypatch):
    monkeypatch.setenv(data.ENV_DATA_DIR, str(mnist_dir))
    assert data.resolve_data_dir(None) == mnist_dir
    assert len(data.load_split(None, "test")) == 10_000


def test_download_verifies_the_official_checksums(mnist_dir, tmp_path):
    # A "mirror" on the local disk serves the test files (official bytes) and the rebuilt train images
    # (not official): the checked files arrive, the mismatching one is refused and leaves nothing behind.
    mirror = "file://" + str(mnist_dir) + "/"
    with pytest.raises(data.DataError, match="(?s)train-images-idx3-ubyte.gz: no mirror.*checksum mismatch"):
        data.download(tmp_path / "dl", mirrors=(mirror,))
    got = sorted(p.name for p in (tmp_path / "dl").iterdir())
    assert "train-images-idx3-ubyte.gz" not in got and not any(name.endswith(".part") for name in got)
    assert {"t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"} <= set(got)


def test_validation_split_is_stratified_seeded_and_disjoint(mnist_dir):
    train = data.load_split(mnist_dir, "train")
    a_train, a_val = data.train_val_split(train, 0.1, seed=3)
    b_train, b_val = data.train_val_split(train, 0.1, seed=3)
    assert abs(len(a_val) - 6_000) <= 5 and len(a_val) + len(a_train) == 60_000
    assert np.array_equal(a_val.labels, b_val.labels) and np.array_equal(a_val.images, b_val.images)
    shares = np.bincount(a_val.labels, minlength=10) / np.bincount(train.labels, minlength=10)
    assert np.allclose(shares, 0.1, atol=0.002)
