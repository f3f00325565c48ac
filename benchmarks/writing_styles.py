"""Benchmark: the synthetic writing styles (a 1 with a flag, an open-top 4, a crossed 7, ...) style by style: how
often each is read right, refused, or read as another digit.

    python benchmarks/writing_styles.py [--model DIR ...] [--per-style 120] [--name NAME]

Each style of `styles.STYLES` is drawn as pen strokes (`styles.render_style`) on canvases in the four canvas styles
and read through `Recognizer.predict_many` at the model's own thresholds; a refusal counts as an error. The
training corpus draws the same styles from other seeds, so these are new drawings of taught styles: for choosing,
and for seeing what a family of non-digits costs the digits that look most like letters (an open-top 4 is a u
with a stem, a 1 with a long flag an r).
Results: benchmarks/results/writing_styles_NAME.{json,txt} (NAME: the models' versions joined, or --name).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

import record
from digitrecognizer import Recognizer, negatives, styles

FIRST_SEED = 700  # style i is drawn from seed FIRST_SEED + i, apart from every family seed of the benchmarks


def style_canvases(index: int, name: str, n: int) -> list[bytes]:
    return negatives.family_canvases(lambda rng: styles.render_style(name, rng), n, FIRST_SEED + index)


def read_style(rec: Recognizer, digit: int, canvases: list[bytes]) -> dict:
    predictions = rec.predict_many(canvases)
    wrong = Counter(p.digit for p in predictions if p.is_digit and p.digit != digit)
    return {"right": sum(p.is_digit and p.digit == digit for p in predictions) / len(predictions),
            "refused": sum(not p.is_digit for p in predictions) / len(predictions),
            "read_as": {str(d): count for d, count in wrong.most_common()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, action="append", help="model folder (repeatable; default: shipped)")
    parser.add_argument("--per-style", type=int, default=120)
    parser.add_argument("--name", help="results file name (default: the models' versions)")
    args = parser.parse_args()

    recognizers = [Recognizer(model) for model in args.model or [None]]
    canvases = {name: style_canvases(i, name, args.per_style) for i, name in enumerate(styles.STYLES)}
    result = {rec.version: {name: read_style(rec, styles.STYLES[name][0], pngs) for name, pngs in canvases.items()}
              for rec in recognizers}

    lines = [f"writing styles, {args.per_style} each: read right, refused (most frequent wrong digit)",
             *record.by_model(result, "style", 20, 34,
                              lambda r: f"{r['right']:6.1%}, {r['refused']:5.1%}" + record.most_read_as(r["read_as"]))]
    mean = {version: float(np.mean([r["right"] for r in by_style.values()])) for version, by_style in result.items()}
    lines.append(f"{'mean':20s}  " + "  ".join(f"{value:>34.1%}" for value in mean.values()))
    record.save(f"writing_styles_{args.name or '_'.join(result)}", {"models": result, "mean_right": mean}, lines)


if __name__ == "__main__":
    main()
