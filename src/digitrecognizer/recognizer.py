"""Inference: ONNX Runtime session, calibrated probabilities, the not-a-digit decision, single digits and numbers."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from . import preprocess
from .card import ModelCard, ModelError, load_card


# log-prior per extra digit when splitting a wide group of touching ink (chosen on validation renderings).
SPLIT_PRIOR_LOG = -1.0


@dataclass(frozen=True)
class Prediction:
    digit: int | None  # None when the input is blank or not a digit
    probabilities: np.ndarray  # (10,) float32, calibrated, sums to 1
    confidence: float  # probability of the top digit
    is_digit: bool
    input28: np.ndarray  # (28, 28) uint8, white on black: what the model saw
    box: tuple[int, int, int, int] | None = None  # (left, top, right, bottom) in the input's pixels
    blank: bool = False  # no ink at all (the page shows an empty state, not "not a digit")

    def to_dict(self) -> dict:
        return {
            "digit": self.digit, "probabilities": [round(float(p), 6) for p in self.probabilities],
            "confidence": round(self.confidence, 6), "is_digit": self.is_digit, "blank": self.blank,
            "box": list(self.box) if self.box else None,
        }


@dataclass(frozen=True)
class NumberReading:
    text: str  # the digits read left to right, '?' where a mark is not a digit
    digits: list[Prediction] = field(default_factory=list)

    @property
    def is_number(self) -> bool:
        return bool(self.digits) and all(d.is_digit for d in self.digits)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


class Recognizer:
    """Reads handwritten digits with an exported model; thread-safe (ONNX Runtime sessions are).

    >>> rec = Recognizer()                      # the shipped model
    >>> rec.predict("digit.png").digit          # any image: path, bytes, PIL image or array
    >>> rec.read_number(canvas_png).text        # several digits side by side
    >>> rec.predict_mnist(images)               # (N, 28, 28) uint8 MNIST-format -> (N, 10) probabilities
    """

    def __init__(self, model: str | os.PathLike | None = None, threads: int | None = None,
                 limits: preprocess.Limits | None = None):
        self.card: ModelCard
        self.card, onnx_path = load_card(model)
        options = ort.SessionOptions()
        # Single images are latency-bound; one intra-op thread avoids thread hand-off costs (measured: faster
        # for batch 1) while a server gets its parallelism from concurrent requests.
        options.intra_op_num_threads = threads or 1
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own untyped errors for damaged graphs
            raise ModelError(f"{onnx_path}: ONNX Runtime cannot load it ({err})") from err
        self.input_name = self.session.get_inputs()[0].name
        self.temperature = float(self.card.temperature)
        self.min_confidence = float(self.card.not_digit.get("min_confidence", 0.0))
        self.limits = limits or preprocess.Limits()

    @property
    def version(self) -> str:
        return self.card.version

    # -- MNIST-format input ---------------------------------------------------------------------

    def logits_mnist(self, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim == 2:
            images = images[None]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ValueError(f"predict_mnist takes (N, 28, 28) uint8 images, got shape {images.shape}")
        x = images.astype(np.float32)[:, None] / 255.0
        out = [self.session.run(None, {self.input_name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.empty((0, 10), np.float32)

    def predict_mnist(self, images: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (N, 10) float32 for MNIST-format images (white on black, uint8)."""
        return softmax(self.logits_mnist(images), self.temperature)

    # -- any image ------------------------------------------------------------------------------

    def _decide(self, probs: np.ndarray, input28: np.ndarray, box=None) -> Prediction:
        top = int(np.argmax(probs))
        confidence = float(probs[top])
        is_digit = confidence >= self.min_confidence
        return Prediction(top if is_digit else None, probs, confidence, is_digit, input28, box)

    def _blank(self, box=None) -> Prediction:
        return Prediction(None, np.full(10, 0.1, np.float32), 0.0, False, np.zeros((28, 28), np.uint8), box, blank=True)

    def predict(self, image) -> Prediction:
        """One digit from any image: path, bytes (PNG/JPEG/WebP), PIL image or numpy array."""
        gray = preprocess.load_gray(image, self.limits)
        input28 = preprocess.to_mnist(gray)
        if input28 is None:
            return self._blank()
        return self._decide(self.predict_mnist(input28[None])[0], input28)

    def predict_many(self, images: list) -> list[Prediction]:
        """Batched `predict`: one model call for all the non-blank inputs."""
        inputs = [preprocess.to_mnist(preprocess.load_gray(im, self.limits)) for im in images]
        present = [x for x in inputs if x is not None]
        probs = iter(self.predict_mnist(np.stack(present)) if present else [])
        return [self._blank() if x is None else self._decide(next(probs), x) for x in inputs]

    def read_number(self, image) -> NumberReading:
        """Several digits written side by side, read left to right, each with its box."""
        gray, scale = preprocess.decode(image, self.limits)
        groups = preprocess.segment_digits(gray, scale)
        candidates = [piece for group in groups for option in group.options for piece in option]
        if not candidates:
            return NumberReading("", [])
        probs = iter(self.predict_mnist(np.stack([p.input28 for p in candidates])))
        digits: list[Prediction] = []
        for group in groups:
            scored = []
            for option in group.options:
                predictions = [self._decide(next(probs), p.input28, p.box) for p in option]
                # Product of confidences, each extra piece also paying a prior cost: splitting one wide digit
                # into two confident halves must beat reading it whole by a clear margin.
                score = sum(np.log(max(p.confidence, 1e-6)) for p in predictions) + SPLIT_PRIOR_LOG * (len(option) - 1)
                scored.append((score, predictions))
            digits += max(scored, key=lambda item: item[0])[1]
        return NumberReading("".join(str(d.digit) if d.is_digit else "?" for d in digits), digits)
