"""The not-a-digit decision: thresholds fitted to accept a set share of digits, returned as values, never
written into the recognizer they were measured with."""

import numpy as np
import pytest

from digitrecognizer import notdigit
from digitrecognizer.card import NotDigit
from digitrecognizer.data import MnistSplit
from digitrecognizer.recognizer import Scores, softmax


def _signals(n: int, with_output: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    not_digit = rng.uniform(0, 0.2, n) if with_output else np.zeros(n)
    return rng.uniform(0.3, 1.0, n), rng.gamma(2.0, 1.0, n), not_digit


@pytest.mark.parametrize("with_output", [True, False], ids=["eleven-outputs", "ten-outputs"])
def test_thresholds_accept_about_the_target_share_of_the_fit_digits(with_output):
    confidence, novelty, not_digit = _signals(200_000, with_output)
    thresholds = notdigit.fit_thresholds(confidence, novelty, not_digit, acceptance=0.99)
    assert isinstance(thresholds, NotDigit)
    accepted = thresholds.accepts(confidence, novelty, not_digit).mean()
    assert 0.988 <= accepted <= 0.992
    # A network without the eleventh output leaves that signal out of the decision.
    assert (thresholds.max_not_digit < 1.0) == with_output


def test_shares_say_which_signal_refuses_the_fit_digits():
    confidence, novelty, not_digit = _signals(200_000, with_output=True)
    only_output = notdigit.fit_thresholds(confidence, novelty, not_digit, acceptance=0.99,
                                          shares={"max_not_digit": 1.0, "min_confidence": 0.0, "max_novelty": 0.0})
    assert only_output.min_confidence == confidence.min() and only_output.max_novelty == novelty.max()
    assert 0.988 <= np.mean(not_digit <= only_output.max_not_digit) <= 0.992
    default = notdigit.fit_thresholds(confidence, novelty, not_digit, acceptance=0.99)
    assert default.max_not_digit > only_output.max_not_digit  # the default leaves a fifth of the refusals to the others


def test_accepted_applies_the_cards_rule_to_calibrated_probabilities():
    rng = np.random.default_rng(1)
    scores = Scores(rng.normal(0, 3, (50, 10)), rng.gamma(2.0, 1.0, 50), rng.uniform(0, 0.5, 50))
    thresholds = NotDigit(min_confidence=0.6, max_novelty=2.5, max_not_digit=0.25)
    expected = thresholds.accepts(softmax(scores.logits, 0.7).max(1), scores.novelty, scores.not_digit)
    assert np.array_equal(notdigit.accepted(scores, 0.7, thresholds), expected)


def test_choosing_thresholds_leaves_the_recognizer_as_it_was(recognizer, mnist_test):
    before = (recognizer.card.not_digit, recognizer.temperature)
    val = MnistSplit(mnist_test.images[:40], mnist_test.labels[:40])
    thresholds, section = notdigit.choose_thresholds(recognizer, val, non_digits=12)
    assert (recognizer.card.not_digit, recognizer.temperature) == before
    assert section.min_confidence == round(thresholds.min_confidence, 6)
    assert section.rendered_non_digits == 12 and 0 <= section.rendered_non_digits_refused <= 1
    assert 0.9 <= section.validation_digits_accepted <= 1
