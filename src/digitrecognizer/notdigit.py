"""The not-a-digit decision: its thresholds, chosen on the validation split, and its measured refusal rate (numpy)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from . import synth
from .card import NotDigit
from .data import MnistSplit
from .preprocess import to_mnist
from .recognizer import Scores, softmax

# Accept this share of validation digits (clean and drawn): the lowest level at which every canvas style, refusals
# counted as errors, stays within 0.3 points of clean validation accuracy and at least 99.9% of clean validation
# digits are accepted (benchmarks/results/operating_point.txt). A refused digit is an error for the person who
# drew it; a digit given to a scribble costs the person's trust.
TARGET_DIGIT_ACCEPTANCE = 0.999
NON_DIGIT_SEED = 20261124  # the rendered non-digits used to report the refusal rate (never to fit anything)
DRAWN_PER_STYLE = 300
DRAWN_SEED = 500
SIGNAL = "the not-a-digit output, calibrated top probability and feature novelty (Mahalanobis)"

# How the refusals allowed on the fit digits are shared between the three signals. The "not a digit" output is the
# one trained to tell; the confidence and novelty limits only catch what is far out (ten-output networks have no
# such output, and share the refusals between the other two).
SHARES_WITH_OUTPUT = {"max_not_digit": 0.8, "min_confidence": 0.1, "max_novelty": 0.1}
SHARES_WITHOUT_OUTPUT = {"min_confidence": 0.5, "max_novelty": 0.5}


def fit_inputs(val: MnistSplit) -> np.ndarray:
    """The digits the thresholds are fitted on, as the model sees them: the clean validation images first, then
    DRAWN_PER_STYLE of them drawn on canvases in each style through the whole pipeline (what users send)."""
    inputs, blank = synth.drawn_digits(val.images, val.labels, DRAWN_PER_STYLE, DRAWN_SEED).preprocessed()
    return np.concatenate([val.images, inputs[~blank]])


def fit_thresholds(confidence: np.ndarray, novelty: np.ndarray, not_digit: np.ndarray,
                   acceptance: float = TARGET_DIGIT_ACCEPTANCE, shares: dict[str, float] | None = None) -> NotDigit:
    """Thresholds accepting about `acceptance` of the fit digits, the refusals shared between the signals
    (`shares`, keyed like SHARES_WITH_OUTPUT; default: that, or SHARES_WITHOUT_OUTPUT for ten-output networks)."""
    refused = 1 - acceptance
    has_output = bool(np.any(not_digit > 0))
    shares = shares or (SHARES_WITH_OUTPUT if has_output else SHARES_WITHOUT_OUTPUT)
    max_not_digit = float(np.quantile(not_digit, 1 - refused * shares["max_not_digit"])) if has_output else 1.0
    return NotDigit(signal=SIGNAL,
                    min_confidence=float(np.quantile(confidence, refused * shares["min_confidence"])),
                    max_novelty=float(np.quantile(novelty, 1 - refused * shares["max_novelty"])),
                    max_not_digit=max_not_digit)


def accepted(scores: Scores, temperature: float, thresholds: NotDigit) -> np.ndarray:
    """Which inputs count as digits under these thresholds."""
    return thresholds.accepts(softmax(scores.logits, temperature).max(1), scores.novelty, scores.not_digit)


def choose_thresholds(recognizer, val: MnistSplit, non_digits: int = 400) -> tuple[NotDigit, NotDigit]:
    """Thresholds on the calibrated top probability, the novelty score and the "not a digit" output, refusing
    about 0.05% of validation digits: the clean images and the same digits drawn on canvases (`fit_inputs`).
    Non-digits are not used to fit; they only report how much the thresholds refuse.

    Returns (the thresholds as fitted, the card's section: the thresholds rounded, with what they measured)."""
    scores = recognizer.scores_mnist(fit_inputs(val))
    thresholds = fit_thresholds(softmax(scores.logits, recognizer.temperature).max(1), scores.novelty,
                                scores.not_digit)
    is_digit = accepted(scores, recognizer.temperature, thresholds)
    clean = len(val.images)
    section = replace(
        thresholds, min_confidence=round(thresholds.min_confidence, 6), max_novelty=round(thresholds.max_novelty, 6),
        max_not_digit=round(thresholds.max_not_digit, 6),
        validation_digits_accepted=float(is_digit[:clean].mean()),
        validation_drawn_digits_accepted=float(is_digit[clean:].mean()),
        rendered_non_digits_refused=refusal_rate(recognizer, non_digits, thresholds=thresholds),
        rendered_non_digits=non_digits)
    return thresholds, section


def refusal_rate(recognizer, n: int, seed: int = NON_DIGIT_SEED, thresholds: NotDigit | None = None) -> float:
    """Share of rendered letters, symbols, scribbles and shapes called blank or not a digit, under `thresholds`
    (default: the recognizer's card)."""
    thresholds = thresholds or recognizer.card.not_digit
    inputs = [to_mnist(png, recognizer.limits) for png in synth.non_digit_set(n, seed)]
    present = [x for x in inputs if x is not None]
    if not present:
        return 1.0
    is_digit = accepted(recognizer.scores_mnist(np.stack(present)), recognizer.temperature, thresholds)
    return float((len(inputs) - is_digit.sum()) / len(inputs))
