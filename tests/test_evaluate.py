"""Evaluation: metrics are right on a small hand-made example, and the report has every plot it promises."""

import numpy as np
import pytest

from digitrecognizer import evaluate
from digitrecognizer.card import ModelCard, Training


def one_hot_probs(predicted, confidence):
    probs = np.full((len(predicted), 10), 0.0)
    for row, (p, c) in enumerate(zip(predicted, confidence)):
        probs[row] = (1 - c) / 9
        probs[row, p] = c
    return probs


def test_metrics_on_a_hand_made_example():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 0])
    probs = one_hot_probs(predicted, [0.9, 0.6, 0.8, 0.95, 0.7, 0.55])
    probs[1, 0] = 0.3  # the 0 read as 1 has the true class second: a top-3 hit
    probs[1] /= probs[1].sum()
    m = evaluate.compute_metrics(probs, labels)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["errors"] == 2
    # class 0: predicted twice (one right) -> precision 1/2; true twice (one found) -> recall 1/2
    assert m["per_class"]["0"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["0"]["recall"] == pytest.approx(0.5)
    # class 1: predicted 3 times, 2 right; both true 1s found
    assert m["per_class"]["1"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["1"]["recall"] == pytest.approx(1.0)
    assert m["per_class"]["1"]["f1"] == pytest.approx(0.8)
    assert m["per_class"]["2"]["support"] == 2
    assert m["confusion_matrix"][0][:3] == [1, 1, 0] and m["confusion_matrix"][2][:3] == [1, 0, 1]
    # classes 3-9 never occur and are never predicted: they count as 0 in the macro mean (as sklearn's zero_division=0)
    assert m["macro_precision"] == pytest.approx((0.5 + 2 / 3 + 1.0) / 10)


def test_expected_calibration_error_by_hand():
    # Two bins used: confidence 0.95 (2 samples, 1 right -> gap 0.45) and 0.55 (2 samples, both right -> gap 0.45).
    labels = np.array([0, 1, 2, 3])
    probs = one_hot_probs([0, 0, 2, 3], [0.95, 0.95, 0.55, 0.55])
    assert evaluate.expected_calibration_error(probs, labels) == pytest.approx(0.45)


def test_perfectly_calibrated_predictions_have_near_zero_ece():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 50_000)
    labels = np.zeros(50_000, dtype=int)
    predicted = np.where(rng.uniform(size=50_000) < confidence, 0, 1)
    assert evaluate.expected_calibration_error(one_hot_probs(predicted, confidence), labels) < 0.01


def test_report_has_the_table_and_every_plot(tmp_path, mnist_test):
    rng = np.random.default_rng(0)
    images, labels = mnist_test.images[:500], mnist_test.labels[:500]
    predicted = np.where(rng.uniform(size=500) < 0.9, labels, (labels + 1) % 10)
    probs = one_hot_probs(predicted, rng.uniform(0.5, 1, 500))
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_acc": 1 - 0.1 / e, "val_acc": 1 - 0.12 / e}
               for e in range(1, 4)]
    card = ModelCard(name="ours", version="test", model_args={}, onnx_sha256="0",
                     training=Training(history=history, epochs=3, seconds=60, command="x"))
    metrics = evaluate.write_report(tmp_path, card, images, labels, probs, train_labels=labels)
    for name in ("training_curves", "confusion_matrix", "misclassified", "class_distribution", "samples", "reliability"):
        assert (tmp_path / f"{name}.png").stat().st_size > 5_000, name
    report = (tmp_path / "report.md").read_text()
    assert f"{metrics['accuracy']:.2%}" in report and "![confusion matrix](confusion_matrix.png)" in report
