"""Benchmark: accuracy on drawn input. MNIST test digits rendered as people draw them (canvas styles, sizes,
positions, pen widths), numbers of 2-6 digits, non-digits, and calibration, through the public API.

    python benchmarks/robustness.py --data-dir ../shared/data/mnist [--model DIR] [--per-style N] [--numbers 1000]

Every style draws every digit of the split by default (10,000 test digits), each with its own random size,
position and pen. With a sample per style the styles differ mostly by which digits they drew: white on black,
black on white and transparent give the same 28x28 input for the same drawing, and 2,000 digits per style
move a style's accuracy by about 0.2 points from one sample to the next.

`--split validation` renders the training run's validation split instead (10%, seed 0): that is the one to
compare candidate models on; the test set is for the final report.

Targets: every style within 0.3 points of clean test accuracy; numbers exact match >= 97%;
clean test digits accepted >= 99.5%; ECE <= 0.5%.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from digitrecognizer import Recognizer, data, synth
from digitrecognizer.evaluate import expected_calibration_error
from digitrecognizer.notdigit import refusal_rate
from digitrecognizer.recognizer import softmax
from digitrecognizer.recipes import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--per-style", type=int, help="digits drawn per style (default: all of the split)")
    parser.add_argument("--numbers", type=int, default=1000)
    parser.add_argument("--non-digits", type=int, default=1000)
    parser.add_argument("--split", choices=("test", "validation"), default="test")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    rec = Recognizer(args.model)
    if args.split == "test":
        test = data.load_split(args.data_dir, "test")
    else:  # the split the model's training run held out, as its card records it
        test = TrainConfig.from_dict(rec.card.training.config).split(data.load_split(args.data_dir, "train"))[1]
    scores = rec.scores_mnist(test.images)  # one pass over the split gives the answers and the refusals
    probs = softmax(scores.logits, rec.temperature)
    clean_acc = float((probs.argmax(1) == test.labels).mean())
    accepted = float(rec.accepts(probs.max(1), scores.novelty, scores.not_digit).mean())
    result = {"model": rec.version, "split": args.split, "clean_accuracy": clean_acc, "ece": expected_calibration_error(probs, test.labels),
              "clean_digits_accepted": accepted, "styles": {}}
    print(f"model {rec.version}, {args.split} split: clean accuracy {clean_acc:.2%}, ECE {result['ece']:.2%}, "
          f"clean digits accepted {accepted:.2%}")
    for k, style in enumerate(synth.CANVAS_STYLES):
        pngs, labels = synth.digit_set(test.images, test.labels, args.per_style or len(test), 100 + k, style)
        t0 = time.perf_counter()
        digits = [rec.predict(p).digit for p in pngs]
        acc = float(np.mean([d == y for d, y in zip(digits, labels)]))
        refused = sum(d is None for d in digits)  # a refused digit counts as an error: the user gets no answer
        misread = int(sum(d is not None and d != y for d, y in zip(digits, labels)))
        result["styles"][style] = {"accuracy": acc, "drop_points": 100 * (clean_acc - acc), "refused": refused,
                                   "misread": misread, "ms_per_image": 1000 * (time.perf_counter() - t0) / len(pngs)}
        print(f"  {style:15s} accuracy {acc:.2%} (drop {100 * (clean_acc - acc):+.2f} points; "
              f"{misread} misread, {refused} refused)")
    numbers = synth.number_set(test.images, test.labels, args.numbers, 7)
    reads = [rec.read_number(n.png).text for n in numbers]
    result["numbers_exact_match"] = float(np.mean([r == n.text for r, n in zip(reads, numbers)]))
    result["numbers_right_length"] = float(np.mean([len(r) == len(n.text) for r, n in zip(reads, numbers)]))
    print(f"  numbers (2-6 digits) exact match {result['numbers_exact_match']:.2%}, "
          f"right digit count {result['numbers_right_length']:.2%}")
    result["non_digits_refused"] = refusal_rate(rec, args.non_digits, seed=99)
    print(f"  non-digits refused {result['non_digits_refused']:.1%} (thresholds: confidence >= {rec.min_confidence:.3f}, "
          f"novelty <= {rec.max_novelty:.3f}, not-a-digit output <= {rec.max_not_digit:.4f})")
    args.out.mkdir(parents=True, exist_ok=True)
    name = "robustness.json" if args.split == "test" else "robustness_validation.json"
    (args.out / name).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
