"""Benchmark: does the recognizer say "not a digit" when it isn't one, and keep the digits?

    python benchmarks/refusal.py [--model DIR | --int8] [--per-family 600] [--digits 2000] [--name NAME]
                                 [--split test|validation]

Non-digits come in families that training never saw (`negatives.HELD_OUT_FAMILIES` and the rendered letters,
symbols, scribbles and shapes of `synth.non_digit_set`), drawn on canvases in the four canvas styles and read
through `Recognizer.predict_many`. For each family: the share refused, and the AUROC of the graph's refusal score
(the "not a digit" output) against MNIST digits drawn in the four styles. Digits: the share of clean MNIST
digits and of scikit-learn's digits (drawn as canvases, as benchmarks/writers.py draws them) accepted.

Letters that are digits in disguise (O o D Q, I l i j, Z z, S s, b G, B, g q) are in no family.
Results: benchmarks/results/refusal_NAME.{json,txt}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

import record
from digitrecognizer import Recognizer, data, negatives, synth, writers
from digitrecognizer.recognizer import softmax
from digitrecognizer.recipes import TrainConfig

FAMILY_SEEDS = {"rendered letters, symbols, scribbles and shapes": 31, "lowercase letters": 32, "doodles": 33,
                "silhouettes": 34}
DIGIT_SEED = 35
SKLEARN_SEED = 14  # the canvases of benchmarks/writers.py


def family_canvases(name: str, n: int) -> list[bytes]:
    if name not in negatives.HELD_OUT_FAMILIES:
        return synth.non_digit_set(n, FAMILY_SEEDS[name])
    return negatives.family_canvases(negatives.HELD_OUT_FAMILIES[name], n, FAMILY_SEEDS[name])


def drawn_digits(split: data.MnistSplit, n: int) -> list[bytes]:
    return synth.drawn_digits(split.images, split.labels, n // len(synth.CANVAS_STYLES), DIGIT_SEED).pngs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    parser.add_argument("--int8", action="store_true", help="the shipped int8 graph")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--split", choices=("test", "validation"), default="test",
                        help="MNIST digits from the test set (final report) or the run's validation split")
    parser.add_argument("--per-family", type=int, default=600)
    parser.add_argument("--digits", type=int, default=2000, help="MNIST digits drawn on canvases (all styles)")
    parser.add_argument("--name", help="results file name (default: the model's version)")
    args = parser.parse_args()

    rec = Recognizer(args.model, precision="int8" if args.int8 else None)
    if args.split == "test":
        split = data.load_split(args.data_dir, "test")
    else:
        split = TrainConfig.from_dict(rec.card.training.config).split(data.load_split(args.data_dir, "train"))[1]
    digits = rec.predict_many(drawn_digits(split, args.digits))
    digit_scores = np.array([p.not_digit for p in digits])
    clean = rec.scores_mnist(split.images)
    clean_accepted = rec.accepts(softmax(clean.logits, rec.temperature).max(1), clean.novelty, clean.not_digit)
    sklearn = writers.load_sklearn_digits()
    sk = rec.predict_many(writers.canvas_pngs(sklearn, SKLEARN_SEED))
    result = {"model": rec.version, "split": args.split,
              "mnist_clean_accepted": float(clean_accepted.mean()),
              "mnist_drawn_accepted": float(np.mean([p.is_digit for p in digits])),
              "sklearn_drawn_accepted": float(np.mean([p.is_digit for p in sk])),
              "families": {}}
    refused_all = []
    for name in FAMILY_SEEDS:
        predictions = rec.predict_many(family_canvases(name, args.per_family))
        refused = np.array([not p.is_digit for p in predictions])
        scores = np.array([1.0 if p.blank else p.not_digit for p in predictions])
        labels = np.r_[np.zeros(len(digit_scores)), np.ones(len(scores))]
        auroc = float(roc_auc_score(labels, np.r_[digit_scores, scores]))
        result["families"][name] = {"images": len(predictions), "refused": float(refused.mean()), "auroc": auroc}
        refused_all.append(refused)
    result["refused_all"] = float(np.concatenate(refused_all).mean())

    lines = [f"model {rec.version} ({args.split} digits)",
             f"MNIST digits accepted: clean {result['mnist_clean_accepted']:.2%}, drawn "
             f"{result['mnist_drawn_accepted']:.2%}; scikit-learn digits drawn: {result['sklearn_drawn_accepted']:.2%}"]
    for name, r in result["families"].items():
        lines.append(f"{name:50s} refused {r['refused']:6.1%} of {r['images']}, AUROC {r['auroc']:.4f}")
    lines.append(f"{'all held-out non-digits':50s} refused {result['refused_all']:6.1%}")
    record.save(f"refusal_{args.name or rec.version}", result, lines)


if __name__ == "__main__":
    main()
