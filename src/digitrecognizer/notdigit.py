"""The not-a-digit decision: its threshold, chosen on the validation split, and its measured refusal rate."""

from __future__ import annotations

import numpy as np

from . import preprocess, synth
from .data import MnistSplit
from .recognizer import Scores, softmax

# Accept this share of validation digits (clean and drawn): the lowest level at which every canvas style, refusals
# counted as errors, stays within 0.3 points of clean validation accuracy and at least 99.9% of clean validation
# digits are accepted (benchmarks/results/operating_point.txt). A refused digit is an error for the person who
# drew it; a digit given to a scribble costs the person's trust.
TARGET_DIGIT_ACCEPTANCE = 0.999
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


# How the refusals allowed on the fit digits are shared between the three signals. The "not a digit" output is the
# one trained to tell; the confidence and novelty limits only catch what is far out (ten-output networks have no
# such output, and share the refusals between the other two).
SHARES_WITH_OUTPUT = {"max_not_digit": 0.8, "min_confidence": 0.1, "max_novelty": 0.1}
SHARES_WITHOUT_OUTPUT = {"min_confidence": 0.5, "max_novelty": 0.5}


def fit_thresholds(confidence: np.ndarray, novelty: np.ndarray, not_digit: np.ndarray,
                   acceptance: float = TARGET_DIGIT_ACCEPTANCE) -> dict[str, float]:
    """Thresholds accepting about `acceptance` of the fit digits, the refusals shared between the signals."""
    refused = 1 - acceptance
    has_output = bool(np.any(not_digit > 0))
    shares = SHARES_WITH_OUTPUT if has_output else SHARES_WITHOUT_OUTPUT
    thresholds = {"min_confidence": float(np.quantile(confidence, refused * shares["min_confidence"])),
                  "max_novelty": float(np.quantile(novelty, 1 - refused * shares["max_novelty"]))}
    if has_output:
        thresholds["max_not_digit"] = float(np.quantile(not_digit, 1 - refused * shares["max_not_digit"]))
    return thresholds


def accepted(scores: Scores, temperature: float, thresholds: dict[str, float]) -> np.ndarray:
    """Which inputs count as digits under these thresholds (the rule `Recognizer.accepts` applies)."""
    confidence = softmax(scores.logits, temperature).max(1)
    return ((confidence >= thresholds["min_confidence"]) & (scores.novelty <= thresholds["max_novelty"])
            & (scores.not_digit <= thresholds.get("max_not_digit", 1.0)))


def choose_not_digit_threshold(recognizer, val: MnistSplit, non_digits: int = 400) -> dict:
    """Thresholds on the calibrated top probability, the novelty score and the "not a digit" output, refusing
    about 0.05% of validation digits: the clean images and the same digits drawn on canvases (`fit_inputs`).
    Non-digits are not used to fit; they only report how much the thresholds refuse."""
    scores = recognizer.scores_mnist(fit_inputs(val))
    confidence = softmax(scores.logits, recognizer.temperature).max(1)
    thresholds = fit_thresholds(confidence, scores.novelty, scores.not_digit)
    is_digit = accepted(scores, recognizer.temperature, thresholds)
    clean = len(val.images)
    recognizer.min_confidence, recognizer.max_novelty = thresholds["min_confidence"], thresholds["max_novelty"]
    recognizer.max_not_digit = thresholds.get("max_not_digit", 1.0)
    return {
        "signal": "the not-a-digit output, calibrated top probability and feature novelty (Mahalanobis)",
        **{k: round(v, 6) for k, v in thresholds.items()},
        "validation_digits_accepted": float(is_digit[:clean].mean()),
        "validation_drawn_digits_accepted": float(is_digit[clean:].mean()),
        "rendered_non_digits_refused": refusal_rate(recognizer, non_digits),
        "rendered_non_digits": non_digits,
    }


def refusal_rate(recognizer, n: int, seed: int = NON_DIGIT_SEED) -> float:
    """Share of rendered letters, symbols, scribbles and shapes the recognizer calls blank or not a digit."""
    predictions = recognizer.predict_many(synth.non_digit_set(n, seed))
    return float(np.mean([not p.is_digit for p in predictions]))
