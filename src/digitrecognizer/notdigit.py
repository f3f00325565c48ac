"""The not-a-digit decision: its threshold, chosen on the validation split, and its measured refusal rate."""

from __future__ import annotations

import numpy as np

from . import synth
from .data import MnistSplit

# Accept this share of validation digits: a margin above the 99.5% the test set must reach.
TARGET_DIGIT_ACCEPTANCE = 0.997
NON_DIGIT_SEED = 20261124  # the rendered non-digits used to report the refusal rate (never to fit anything)


def choose_not_digit_threshold(recognizer, val: MnistSplit, non_digits: int = 400) -> dict:
    """min_confidence = the calibrated top probability below which only 0.3% of validation digits fall.

    The threshold is set by digits alone (what we must keep accepting); the non-digit set then reports how
    much that threshold refuses. Both go into the model card."""
    confidence = recognizer.predict_mnist(val.images).max(axis=1)
    threshold = float(np.quantile(confidence, 1 - TARGET_DIGIT_ACCEPTANCE))
    refused = refusal_rate(recognizer, threshold, non_digits)
    return {
        "signal": "calibrated top probability",
        "min_confidence": round(threshold, 4),
        "validation_digits_accepted": float((confidence >= threshold).mean()),
        "rendered_non_digits_refused": refused,
        "rendered_non_digits": non_digits,
    }


def refusal_rate(recognizer, threshold: float, n: int, seed: int = NON_DIGIT_SEED) -> float:
    """Share of rendered letters, symbols, scribbles and shapes whose top probability is below `threshold`
    (blank results count as refused)."""
    predictions = recognizer.predict_many(synth.non_digit_set(n, seed))
    return float(np.mean([p.blank or p.confidence < threshold for p in predictions]))
