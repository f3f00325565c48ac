"""Choose the number-reading scores (recognizer.DIGIT_PRIOR_LOG, NOT_DIGIT_LOG) on numbers rendered from the
validation split (never the test set). Prints exact-match rate for each setting.

    python benchmarks/tune_segmentation.py --data-dir ../shared/data/mnist [--numbers 600]
"""

import argparse
import itertools
from pathlib import Path

import numpy as np

from digitrecognizer import Recognizer, data, recognizer, synth
from digitrecognizer.card import load_card
from digitrecognizer.train import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--numbers", type=int, default=600)
    args = parser.parse_args()
    rec = Recognizer(args.model)
    config = TrainConfig.from_dict(load_card(args.model)[0].training["config"])
    _, val = data.train_val_split(data.load_split(args.data_dir, "train"), config.val_fraction, config.seed)
    numbers = synth.number_set(val.images, val.labels, args.numbers, seed=31)
    results = []
    for prior, not_digit in itertools.product([1.0, 0.5, 0.25, 0.0, -0.25, -0.5], [-1.0, -3.0]):
        recognizer.DIGIT_PRIOR_LOG, recognizer.NOT_DIGIT_LOG = prior, not_digit
        exact = np.mean([rec.read_number(n.png).text == n.text for n in numbers])
        results.append((exact, prior, not_digit))
        print(f"DIGIT_PRIOR_LOG {prior:+.2f}  NOT_DIGIT_LOG {not_digit:+.1f}: exact match {exact:.2%}", flush=True)
    best = max(results)
    print(f"best: DIGIT_PRIOR_LOG {best[1]}, NOT_DIGIT_LOG {best[2]} ({best[0]:.2%} on {len(numbers)} validation numbers)")


if __name__ == "__main__":
    main()
