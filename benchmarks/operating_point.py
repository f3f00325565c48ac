"""Benchmark: the not-a-digit trade-off on the validation split, at several shares of digits accepted.

    python benchmarks/operating_point.py --data-dir ../shared/data/mnist [--model DIR ...]
                                         [--shares OUTPUT,CONFIDENCE,NOVELTY ...] [--acceptance LEVEL ...]

For each model and each acceptance level, the two thresholds are fitted exactly as the export fits them
(`notdigit.fit_inputs` and `notdigit.fit_thresholds`: the same 6,000 clean and 1,200 drawn validation digits, the
refusals shared between the signals), then measured on what they were not fitted on: all 6,000 validation digits
drawn in each of the four canvas styles (the drawings of `robustness.py --split validation`), rendered non-digits
(seeds 1 and 99), and the validation families of `negatives.VALIDATION_FAMILIES` (filled blobs, which the rendered
non-digits lack; lowercase letters drawn as pen strokes; round outlines with marks inside or around). A refused
digit counts as an error, as for the person who drew it. Each level also prints how far each style's drawn accuracy
falls below clean validation accuracy (the target is at most 0.3 points in every style). This is where
`notdigit.TARGET_DIGIT_ACCEPTANCE` is chosen; the test set is not read. `--shares` splits the refusals between the
not-a-digit output, the confidence and the novelty otherwise than the export does (`notdigit.SHARES_WITH_OUTPUT`),
one line per split.

Preprocessing does not depend on the model, so every drawing is preprocessed once and all models are
measured on the same inputs.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from digitrecognizer import Recognizer, data, negatives, notdigit, synth
from digitrecognizer.recognizer import Scores, softmax
from digitrecognizer.recipes import TrainConfig

ACCEPTANCE_LEVELS = (0.997, 0.998, 0.9985, 0.999, 0.9995)
# Each validation family's seed: fixed, so every result file measures the same drawings.
FAMILY_SEEDS, FAMILY_SIZE = dict(zip(negatives.VALIDATION_FAMILIES, (41, 42, 43))), 600


def parse_shares(text: str) -> dict[str, float]:
    values = [float(v) for v in text.split(",")]
    if len(values) != 3 or min(values) < 0 or abs(sum(values) - 1) > 1e-6:
        raise argparse.ArgumentTypeError(f"{text!r}: three shares (output, confidence, novelty) that sum to 1")
    return dict(zip(notdigit.SHARES_WITH_OUTPUT, values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--model", type=Path, action="append", help="model folder (repeatable; default: shipped)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--shares", type=parse_shares, action="append",
                        help="refusal shares of the output, confidence and novelty, e.g. 0.8,0.1,0.1 (repeatable; "
                             "default: the export's)")
    parser.add_argument("--acceptance", type=float, action="append",
                        help=f"share of fit digits accepted (repeatable; default: {ACCEPTANCE_LEVELS})")
    args = parser.parse_args()
    levels, splits = args.acceptance or ACCEPTANCE_LEVELS, args.shares or [None]
    # The split every run of the default recipe holds out (the validation split has its own fixed seed).
    val = TrainConfig().split(data.load_split(args.data_dir, "train"))[1]

    fit_inputs = notdigit.fit_inputs(val)  # the clean validation digits first, then the drawn ones
    drawn_digits = synth.drawn_digits(val.images, val.labels, len(val), 100)  # as robustness.py
    (drawn, drawn_blank), drawn_labels, drawn_style = drawn_digits.preprocessed(), drawn_digits.labels, drawn_digits.styles
    non_digits = {seed: synth.preprocessed(synth.non_digit_set(n, seed)) for seed, n in ((1, 1000), (99, 400))}
    for family, make in negatives.VALIDATION_FAMILIES.items():
        non_digits[family] = synth.preprocessed(negatives.family_canvases(make, FAMILY_SIZE, FAMILY_SEEDS[family]))

    results, lines = [], []
    for model in args.model or [None]:
        rec = Recognizer(model)

        def scores(images: np.ndarray) -> tuple[np.ndarray, Scores]:
            s = rec.scores_mnist(images)
            return softmax(s.logits, rec.temperature), s

        fit_p, fit_n = scores(fit_inputs)
        clean_p, clean_n = fit_p[: len(val)], Scores(*(a[: len(val)] for a in fit_n))
        drawn_p, drawn_n = scores(drawn)
        nd_scores = {seed: scores(inputs) for seed, (inputs, _) in non_digits.items()}
        clean_errors = int(np.sum(clean_p.argmax(1) != val.labels))
        clean_acc = 1 - clean_errors / len(val)
        lines.append(f"{rec.version} ({model or 'shipped'}): clean validation accuracy "
                     f"{clean_acc:.2%} ({clean_errors} errors of {len(val):,}); drawn: "
                     f"{len(drawn_labels):,} digits, non-digits: seed 1 x {len(non_digits[1][1])}, seed 99 x "
                     f"{len(non_digits[99][1])}, {', '.join(negatives.VALIDATION_FAMILIES)} x {FAMILY_SIZE} each")
        for acceptance, shares in itertools.product(levels, splits):
            thresholds = notdigit.fit_thresholds(fit_p.max(1), fit_n.novelty, fit_n.not_digit, acceptance, shares)
            min_conf, max_nov = thresholds.min_confidence, thresholds.max_novelty

            def accepted(p: np.ndarray, s: Scores) -> np.ndarray:
                return notdigit.accepted(s, rec.temperature, thresholds)

            drawn_ok = accepted(drawn_p, drawn_n) & ~drawn_blank
            misread = int(np.sum(drawn_ok & (drawn_p.argmax(1) != drawn_labels)))
            refused = int(np.sum(~drawn_ok))
            right = drawn_ok & (drawn_p.argmax(1) == drawn_labels)
            drops = [100 * (clean_acc - right[drawn_style == k].mean()) for k in range(len(synth.CANVAS_STYLES))]
            refused_nd = {seed: float(np.mean(~(accepted(*nd_scores[seed]) & ~blank)))
                          for seed, (_, blank) in non_digits.items()}
            row = {"model": rec.version, "acceptance": acceptance, "shares": shares,
                   "min_confidence": min_conf, "max_novelty": max_nov,
                   "max_not_digit": thresholds.max_not_digit,
                   "clean_errors": clean_errors, "clean_accepted": float(accepted(clean_p, clean_n).mean()),
                   "drawn_misread": misread, "drawn_refused": refused,
                   "style_drop_points": dict(zip(synth.CANVAS_STYLES, drops)),
                   "non_digits_refused_seed1": refused_nd[1], "non_digits_refused_seed99": refused_nd[99],
                   **{f"{family.replace(' ', '_')}_refused": refused_nd[family] for family in negatives.VALIDATION_FAMILIES}}
            results.append(row)
            split = f" shares {'/'.join(f'{v:g}' for v in shares.values())}" if shares else ""
            lines.append(f"  accept {acceptance:.2%}{split}: confidence >= {min_conf:.3f}, novelty <= {max_nov:.2f} | clean "
                         f"accepted {row['clean_accepted']:.2%} | drawn errors {misread} misread + {refused} refused "
                         f"= {misread + refused} (style drops {' / '.join(f'{d:.2f}' for d in drops)} points) | "
                         f"non-digits refused {refused_nd[1]:.1%} (seed 1), {refused_nd[99]:.1%} (seed 99) | "
                         + ", ".join(f"{family} {refused_nd[family]:.1%}" for family in negatives.VALIDATION_FAMILIES)
                         + " refused")
        print("\n".join(lines[-1 - len(levels) * len(splits):]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "operating_point.txt").write_text("\n".join(lines) + "\n")
    (args.out / "operating_point.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
