"""Shared fixtures: the local MNIST files and a model to test with."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _mnist_dir() -> Path:
    env = os.environ.get("DIGITRECOGNIZER_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    folder = _mnist_dir()
    if not (folder / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(f"MNIST files not found in {folder}: set DIGITRECOGNIZER_DATA to a folder holding them")
    return folder


@pytest.fixture(scope="session")
def mnist_test(mnist_dir):
    from digitrecognizer import data

    return data.load_split(mnist_dir, "test")


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The shipped model (src/digitrecognizer/assets); DIGITRECOGNIZER_TEST_MODEL overrides it."""
    env = os.environ.get("DIGITRECOGNIZER_TEST_MODEL")
    folder = Path(env) if env else REPO / "src" / "digitrecognizer" / "assets"
    if not (folder / "card.json").exists():
        pytest.fail(f"no model in {folder}: export one or set DIGITRECOGNIZER_TEST_MODEL")
    return folder


@pytest.fixture(scope="session")
def recognizer(model_dir):
    from digitrecognizer import Recognizer

    return Recognizer(model_dir)
