"""The model card: typed sections read and checked once; cards already shipped still load; one accept rule."""

import json
import math

import numpy as np
import pytest

from digitrecognizer import card as card_module
from digitrecognizer.card import ModelCard, ModelError, NotDigit, Quantization, load_card


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_the_shipped_cards_load_into_typed_sections_and_write_back_what_they_hold(precision):
    folder = card_module.SHIPPED_GRAPHS[precision]
    card, onnx_path = load_card(folder)
    assert onnx_path == folder / card_module.ONNX_NAME
    assert isinstance(card.not_digit, NotDigit) and isinstance(card.quantization, Quantization)
    assert card.quantization.precision == precision
    assert 0 < card.not_digit.min_confidence < 1 and card.metrics.test.accuracy > 0.99
    assert card.training.config["model"] == card.name
    written, raw = json.loads(card.to_json()), json.loads((folder / card_module.CARD_NAME).read_text())
    assert written["not_digit"] == {"max_not_digit": 1.0, **raw["not_digit"]}  # a card now always says it
    assert {k: v for k, v in written.items() if k != "not_digit"} == {k: v for k, v in raw.items() if k != "not_digit"}


def _write(folder, **changes):
    raw = json.loads((card_module.SHIPPED_DIR / card_module.CARD_NAME).read_text())
    raw.update(changes)
    folder.mkdir(exist_ok=True)
    (folder / card_module.CARD_NAME).write_text(json.dumps(raw))
    (folder / card_module.ONNX_NAME).write_bytes((card_module.SHIPPED_DIR / card_module.ONNX_NAME).read_bytes())
    return folder


@pytest.mark.parametrize("changes, why", [
    ({"temperature": 0}, "temperature must be a positive number"),
    ({"not_digit": {"min_confidence": 1.5}}, "between 0 and 1"),
    ({"quantization": {"precision": "int4"}}, "precision must be one of float32, int8"),
    ({"quantization": {"precision": "float32", "colour": "blue"}}, "colour"),
], ids=["temperature", "threshold", "precision", "unknown-field"])
def test_a_card_that_is_not_valid_is_refused_with_its_path_and_the_reason(tmp_path, changes, why):
    folder = _write(tmp_path / "model", **changes)
    with pytest.raises(ModelError, match=f"card.json: not a valid model card .*{why}"):
        load_card(folder)


def test_a_card_without_thresholds_or_figures_loads_with_neutral_ones(tmp_path):
    folder = _write(tmp_path / "model", not_digit={}, metrics={}, quantization={})
    card, _ = load_card(folder)
    assert card.not_digit == NotDigit() and card.quantization.precision == "float32" and card.metrics.test is None
    assert card.not_digit.novelty_limit() == math.inf


def test_the_accept_rule_needs_every_signal_within_its_threshold():
    rule = NotDigit(min_confidence=0.5, max_novelty=4.0, max_not_digit=0.3)
    confidence = np.array([0.9, 0.4, 0.9, 0.9, 0.5])
    novelty = np.array([1.0, 1.0, 5.0, 1.0, 4.0])
    not_digit = np.array([0.1, 0.1, 0.1, 0.6, 0.3])
    assert rule.accepts(confidence, novelty, not_digit).tolist() == [True, False, False, False, True]
    # A looser novelty limit (as for marks inside a number) changes that signal only.
    assert rule.accepts(confidence, novelty, not_digit, max_novelty=6.0).tolist() == [True, False, True, False, True]
    assert rule.novelty_limit(1.5) == 6.0


def test_a_new_card_without_measured_figures_leaves_them_out_of_its_json():
    card = ModelCard(name="ours", version="v", model_args={}, onnx_sha256="0")
    written = json.loads(card.to_json())
    assert written["quantization"] == {"precision": "float32"} and written["metrics"] == {}
    assert written["input_format"]["mean"] == 0.1307 and written["input_format"]["std"] == 0.3081
