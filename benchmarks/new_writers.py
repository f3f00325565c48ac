"""Benchmark: handwriting from people MNIST never saw. The UCI optical digits (scikit-learn's `load_digits`):
1,797 digits by the 13 writers of the UCI set's test part (Bogazici University, 1998), none of them MNIST's,
read through `predict`.

    python benchmarks/new_writers.py [--model DIR ...]

Every other figure of this project comes from MNIST's own writers, whose digits the synthetic canvases only
redraw. These are other hands: other ways of writing a 1, a 4, a 7 or a 9. They are also degraded: the
dataset keeps each digit only as 8x8 counts of the ink in 4x4 blocks of a 32x32 bitmap whose digit NIST
stretched to fill the box. Each is scaled back up to a 64x64 grey image (what an upload of a small, blurry
scan looks like) and read like any other image, so expect a few points below MNIST: the figure to watch is
how one model compares with another, not the level.

Several --model folders are measured on the same images one after the other (default: the shipped model).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits  # bundled with scikit-learn: nothing is downloaded

from digitrecognizer import Recognizer

UPSCALED_PX = 64


def uci_images() -> tuple[list[np.ndarray], np.ndarray]:
    """The 1,797 UCI digits as 64x64 uint8 images (white ink on black), and their labels."""
    digits = load_digits()
    images = []
    for block_counts in digits.images:  # (8, 8), 0..16 pixels of ink in each 4x4 block
        grey = Image.fromarray((block_counts * (255 / 16)).astype(np.float32), "F")
        up = grey.resize((UPSCALED_PX, UPSCALED_PX), Image.Resampling.BICUBIC)
        images.append(np.clip(np.asarray(up), 0, 255).astype(np.uint8))
    return images, digits.target.astype(int)


def measure(rec: Recognizer, images: list[np.ndarray], labels: np.ndarray) -> dict:
    predictions = rec.predict_many(images)
    read = np.array([-1 if p.digit is None else p.digit for p in predictions])
    best_guess = np.array([int(np.argmax(p.probabilities)) for p in predictions])
    confusion = np.zeros((10, 10), int)
    np.add.at(confusion, (labels, best_guess), 1)
    return {
        "model": rec.version,
        "images": len(labels),
        "read_right": float(np.mean(read == labels)),  # accepted as a digit, and the right one
        "refused": float(np.mean(read == -1)),
        "misread": float(np.mean((read != -1) & (read != labels))),
        "top_guess_right": float(np.mean(best_guess == labels)),  # ignoring the not-a-digit decision
        "recall_per_digit": [float(confusion[d, d] / confusion[d].sum()) for d in range(10)],
        "confusion_true_by_guess": confusion.tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, action="append", help="model folder (repeatable; default: shipped)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    images, labels = uci_images()
    results = []
    for model in args.model or [None]:
        r = measure(Recognizer(model), images, labels)
        results.append(r)
        worst = sorted(range(10), key=lambda d: r["recall_per_digit"][d])[:3]
        print(f"{r['model']}: {r['images']:,} UCI digits (13 writers MNIST never saw): read right {r['read_right']:.2%}, "
              f"refused {r['refused']:.2%}, misread {r['misread']:.2%}; top guess right {r['top_guess_right']:.2%}; "
              "weakest digits " + ", ".join(f"{d} ({r['recall_per_digit'][d]:.1%})" for d in worst))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "new_writers.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
