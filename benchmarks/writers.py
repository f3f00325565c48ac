"""Benchmark: handwriting by writers MNIST never saw, drawn as canvases and read through `Recognizer.predict`.

    python benchmarks/writers.py [--model DIR | --int8] [--only optdigits,pendigits,usps,sklearn,optdigits-8x8]
                                 [--numbers 1000] [--name NAME]

Each digit of each collection is put on a 280x280 canvas in one of the four canvas styles in turn, at a random
size (its longer side 35-85% of the canvas) and place; pen trajectories (pendigits) are drawn as the polyline
through their 8 points with a pen 5-25% of the digit's size. Bitmaps (optdigits 32x32 scans, USPS 16x16 grey,
scikit-learn's 8x8 digits) are enlarged smoothly, as a scan at a higher resolution looks. Seeds are fixed: every
model is scored on the same images. Numbers of 2-6 of scikit-learn's digits are put side by side, each enlarged
smoothly as the single digits are, and read with `read_number`; only an exact reading counts.

`optdigits-8x8` is optdigits reduced to 8x8 as UCI reduced the writers of scikit-learn's digits
(`writers.uci_counts`), digits and numbers: with a model trained without optdigits, a validation stand-in for them.

A refusal ("not a digit") counts as an error. scikit-learn's digits are 13 writers that no shared file holds:
read them for a final report, never to choose a model. Results: benchmarks/results/writers_NAME.{json,txt}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import record
from digitrecognizer import Recognizer, writers

SEEDS = {"optdigits": 11, "pendigits": 12, "usps": 13, "sklearn": 14, "optdigits-8x8": 16}
NUMBERED = ("sklearn", "optdigits-8x8")  # collections of 8x8 scans, also read as numbers
NUMBERS_SEED = 15


def score_digits(rec: Recognizer, collection: writers.Collection, seed: int) -> dict:
    predictions = rec.predict_many(writers.canvas_pngs(collection, seed))
    read = np.array([-1 if p.digit is None else p.digit for p in predictions])
    labels = collection.labels
    per_digit = [float(np.mean(read[labels == d] == d)) for d in range(10)]
    return {"digits": len(labels), "accuracy": float(np.mean(read == labels)),
            "errors": int(np.sum(read != labels)), "refused": float(np.mean(read == -1)),
            "accuracy_per_digit": [round(a, 4) for a in per_digit]}


def score_numbers(rec: Recognizer, digits: writers.Collection, count: int) -> dict:
    numbers = writers.number_pngs(digits, count, seed=NUMBERS_SEED)
    texts = [rec.read_number(n.png).text for n in numbers]
    return {"numbers": count, "exact": float(np.mean([t == n.text for t, n in zip(texts, numbers)])),
            "right_length": float(np.mean([len(t) == len(n.text) for t, n in zip(texts, numbers)]))}


def load(name: str, writers_dir: Path | None) -> writers.Collection:
    if name == "sklearn":
        return writers.load_sklearn_digits()
    if name == "optdigits-8x8":
        return writers.uci_counts(writers.load_collection("optdigits", writers_dir))
    return writers.load_collection(name, writers_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    parser.add_argument("--int8", action="store_true", help="the shipped int8 graph")
    parser.add_argument("--only", default="optdigits,pendigits,usps,sklearn",
                        help="comma-separated collections to score")
    parser.add_argument("--numbers", type=int, default=1000,
                        help="numbers of scikit-learn's (and optdigits-8x8) digits (0: none)")
    parser.add_argument("--writers-dir", type=Path)
    parser.add_argument("--name", help="results file name (default: the model's version)")
    args = parser.parse_args()

    rec = Recognizer(args.model, precision="int8" if args.int8 else None)
    names = [n for n in args.only.split(",") if n]
    result = {"model": rec.version, "collections": {}}
    started = time.perf_counter()
    for name in names:
        collection = load(name, args.writers_dir)
        result["collections"][name] = score_digits(rec, collection, SEEDS[name])
        if name in NUMBERED and args.numbers:
            result[f"{name}_numbers"] = score_numbers(rec, collection, args.numbers)
    result["seconds"] = round(time.perf_counter() - started, 1)

    lines = [f"model {rec.version}"]
    for name, r in result["collections"].items():
        lines.append(f"{name:10s} {r['accuracy']:.2%} of {r['digits']:,} ({r['errors']} errors, "
                     f"{r['refused']:.2%} refused)")
    for name in NUMBERED:
        if f"{name}_numbers" in result:
            numbers = result[f"{name}_numbers"]
            label = "numbers" if name == "sklearn" else f"numbers of {name}"
            lines.append(f"{label:10s} {numbers['exact']:.1%} of {args.numbers} read exactly "
                         f"({numbers['right_length']:.1%} with the right digit count)")
    record.save(f"writers_{args.name or rec.version}", result, lines)


if __name__ == "__main__":
    main()
