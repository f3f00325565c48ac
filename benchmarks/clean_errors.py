"""Benchmark: which clean validation digits each model misreads, and how many of them two models share.

    python benchmarks/clean_errors.py --data-dir ../shared/data/mnist --model DIR --model DIR [...] [--name NAME]

The top guess among the ten digits (`Recognizer.predict_mnist`, no refusal) on the validation split every run of
the default recipe holds out. Two runs of one recipe with different seeds trade some images; a difference in
error counts smaller than that trade is not a difference between recipes.
Results: benchmarks/results/clean_errors_NAME.{json,txt} (NAME: the models' versions joined, or --name).
"""

from __future__ import annotations

import argparse
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np

import record
from digitrecognizer import Recognizer, data
from digitrecognizer.recipes import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--model", type=Path, action="append", required=True, help="model folder (repeatable)")
    parser.add_argument("--name", help="results file name (default: the models' versions)")
    args = parser.parse_args()

    val = TrainConfig().split(data.load_split(args.data_dir, "train"))[1]
    misread = {}
    for model in args.model:
        rec = Recognizer(model)
        guesses = rec.predict_mnist(val.images).argmax(1)
        misread[rec.version] = sorted(np.flatnonzero(guesses != val.labels).tolist())

    lines = [f"clean validation digits misread (of {len(val):,}), by true digit"]
    for version, wrong in misread.items():
        by_digit = Counter(int(val.labels[i]) for i in wrong)
        lines.append(f"{version}: {len(wrong)}  " + " ".join(f"{d}:{by_digit[d]}" for d in range(10)))
    sets = {version: set(wrong) for version, wrong in misread.items()}
    pairs = {}
    for a, b in combinations(sets, 2):
        pair = {"shared": len(sets[a] & sets[b]), "only_first": len(sets[a] - sets[b]),
                "only_second": len(sets[b] - sets[a])}
        pairs[f"{a} {b}"] = pair
        lines.append(f"{a} and {b}: {pair['shared']} shared, "
                     f"{pair['only_first']} and {pair['only_second']} of their own")
    in_all = set.intersection(*sets.values())
    lines.append(f"misread by all {len(misread)}: {len(in_all)}")
    result = {"validation_digits": len(val), "misread": misread, "pairs": pairs, "misread_by_all": len(in_all)}
    record.save(f"clean_errors_{args.name or '_'.join(misread)}", result, lines)


if __name__ == "__main__":
    main()
