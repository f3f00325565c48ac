"""Benchmark: the validation family of pen letters letter by letter: how often each is refused, and which digit it
is read as when it is not.

    python benchmarks/pen_letters.py [--model DIR ...] [--per-letter 120] [--strokes pen|fonts] [--name NAME]

Each letter of `negatives.PEN_LETTERS` is written by hand (`negatives.hand_drawn`) on canvases in the four canvas
styles and read through `Recognizer.predict_many` at the model's own thresholds. Each letter has its own seeds, so
these are not the drawings `operating_point.py` scores. A validation family, so this is for choosing; the held-out
lowercase letters (font glyphs) are in benchmarks/refusal.py. `--strokes fonts` writes the letters of
`negatives.LOWERCASE` by hand from the single-stroke fonts instead (`negatives.stroke_glyph`, a font drawn at
random for each drawing): the strokes of the candidate training family of stroke letters, from seeds of their own.
Results: benchmarks/results/pen_letters_NAME.{json,txt} (NAME: the models' versions joined, or --name).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import record
from digitrecognizer import Recognizer, negatives

FIRST_SEED = 500  # letter i is drawn from seed FIRST_SEED + i, apart from every family seed of the benchmarks
FONT_SEED = 600  # the same for --strokes fonts


def letter_canvases(index: int, strokes, n: int) -> list[bytes]:
    return negatives.family_canvases(lambda rng: negatives.hand_drawn(strokes(), rng), n, FIRST_SEED + index)


def font_letter_canvases(index: int, letter: str, n: int) -> list[bytes]:
    fonts = negatives.STROKE_FONTS

    def write(rng):
        return negatives.hand_drawn(list(negatives.stroke_glyph(fonts[rng.integers(len(fonts))], letter)), rng)

    return negatives.family_canvases(write, n, FONT_SEED + index)


def read_letter(rec: Recognizer, canvases: list[bytes]) -> dict:
    predictions = rec.predict_many(canvases)
    read_as = Counter(p.digit for p in predictions if p.is_digit)
    return {"refused": sum(not p.is_digit for p in predictions) / len(predictions),
            "read_as": {str(digit): count for digit, count in read_as.most_common()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, action="append", help="model folder (repeatable; default: shipped)")
    parser.add_argument("--per-letter", type=int, default=120)
    parser.add_argument("--strokes", choices=("pen", "fonts"), default="pen",
                        help="the pen-letter family's strokes, or the single-stroke fonts' (negatives.LOWERCASE)")
    parser.add_argument("--name", help="results file name (default: the models' versions)")
    args = parser.parse_args()

    recognizers = [Recognizer(model) for model in args.model or [None]]
    if args.strokes == "pen":
        canvases = {letter: letter_canvases(i, strokes, args.per_letter)
                    for i, (letter, strokes) in enumerate(negatives.PEN_LETTERS.items())}
    else:
        canvases = {letter: font_letter_canvases(i, letter, args.per_letter)
                    for i, letter in enumerate(negatives.LOWERCASE)}
    result = {rec.version: {letter: read_letter(rec, pngs) for letter, pngs in canvases.items()}
              for rec in recognizers}

    kind = "pen" if args.strokes == "pen" else "stroke-font"
    lines = [f"{kind} letters, {args.per_letter} each, refused (most frequent digit read when accepted)",
             *record.by_model(result, "letter", 6, 30,
                              lambda r: f"{r['refused']:6.1%}" + record.most_read_as(r["read_as"]))]
    record.save(f"pen_letters_{args.name or '_'.join(result)}", result, lines)


if __name__ == "__main__":
    main()
