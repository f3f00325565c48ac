"""The not-a-digit decision: its threshold, chosen on the validation split, and its measured refusal rate."""

from __future__ import annotations

import numpy as np

from . import preprocess, synth
from .data import MnistSplit
from .recognizer import softmax

# Accept this share of validation digits (clean and drawn). A refused digit is an error for the person who drew it,
# and issue 3 asks that drawn input lose at most 0.3 points against clean digits in every canvas style. On the
# validation split (benchmarks/operating_point.py) the worst style lost 0.40 points at 99.8%, 0.33 at 99.9% and
# 0.27 at 99.95%, the lowest level that meets it; held-out non-digits refused fall from 45% to 32% on the way.
# Splitting the refusals other than half to each signal traced no better trade-off (benchmarks/experiments.md).
TARGET_DIGIT_ACCEPTANCE = 0.9995
NON_DIGIT_SEED = 20261124  # the rendered non-digits used to report the refusal rate (never to fit anything)
DRAWN_PER_STYLE = 300


def fit_inputs(val: MnistSplit) -> np.ndarray:
    """The digits the thresholds are fitted on, as the model sees them: the clean validation images first, then
    DRAWN_PER_STYLE of them drawn on canvases in each style through the whole pipeline (what users send)."""
    inputs = list(val.images)
    for k, style in enumerate(synth.CANVAS_STYLES):
        pngs, _ = synth.digit_set(val.images, val.labels, DRAWN_PER_STYLE, seed=500 + k, style=style)
        inputs += [x for x in (preprocess.to_mnist_image(p) for p in pngs) if x is not None]
    return np.stack(inputs)


def fit_thresholds(confidence: np.ndarray, novelty: np.ndarray,
                   acceptance: float = TARGET_DIGIT_ACCEPTANCE) -> dict[str, float]:
    """Thresholds accepting `acceptance` of the fit digits, half of the refusals left to each signal."""
    share = (1 - acceptance) / 2
    return {"min_confidence": float(np.quantile(confidence, share)),
            "max_novelty": float(np.quantile(novelty, 1 - share))}


def accepted(confidence: np.ndarray, novelty: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    """Which inputs count as digits: confident enough and not too novel (the rule `Recognizer` applies)."""
    return (confidence >= thresholds["min_confidence"]) & (novelty <= thresholds["max_novelty"])


def choose_not_digit_threshold(recognizer, val: MnistSplit, non_digits: int = 400) -> dict:
    """Thresholds on the calibrated top probability and on the novelty score, each refusing at most 0.1% of
    validation digits: the clean images and the same digits drawn on canvases (`fit_inputs`). Non-digits are
    not used to fit; they only report how much the thresholds refuse."""
    logits, novelty = recognizer.scores_mnist(fit_inputs(val))
    confidence = softmax(logits, recognizer.temperature).max(1)
    thresholds = fit_thresholds(confidence, novelty)
    is_digit = accepted(confidence, novelty, thresholds)
    clean = len(val.images)
    recognizer.min_confidence, recognizer.max_novelty = thresholds["min_confidence"], thresholds["max_novelty"]
    return {
        "signal": "calibrated top probability and feature novelty (Mahalanobis)",
        **{k: round(v, 4) for k, v in thresholds.items()},
        "validation_digits_accepted": float(is_digit[:clean].mean()),
        "validation_drawn_digits_accepted": float(is_digit[clean:].mean()),
        "rendered_non_digits_refused": refusal_rate(recognizer, non_digits),
        "rendered_non_digits": non_digits,
    }


def refusal_rate(recognizer, n: int, seed: int = NON_DIGIT_SEED) -> float:
    """Share of rendered letters, symbols, scribbles and shapes the recognizer calls blank or not a digit."""
    predictions = recognizer.predict_many(synth.non_digit_set(n, seed))
    return float(np.mean([not p.is_digit for p in predictions]))
