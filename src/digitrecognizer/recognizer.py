"""Inference: ONNX Runtime session, calibrated probabilities, the not-a-digit decision, single digits and numbers."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import onnxruntime as ort

from . import preprocess, segment
from .card import SHIPPED_GRAPHS, ModelCard, ModelError, load_card


@dataclass(frozen=True)
class Prediction:
    digit: int | None  # None when the input is blank or not a digit
    probabilities: np.ndarray  # (10,) float32, calibrated, sums to 1
    confidence: float  # probability of the top digit
    is_digit: bool
    input28: np.ndarray  # (28, 28) uint8, white on black: what the model saw
    box: tuple[int, int, int, int] | None = None  # (left, top, right, bottom) in the input's pixels
    blank: bool = False  # no ink at all (the page shows an empty state, not "not a digit")
    novelty: float = 0.0  # distance from every digit class seen in training (higher: less digit-like)
    not_digit: float = 0.0  # the model's probability that the input is not a digit at all

    def to_dict(self) -> dict:
        return {
            "digit": self.digit, "probabilities": [round(float(p), 6) for p in self.probabilities],
            "confidence": round(self.confidence, 6), "is_digit": self.is_digit, "blank": self.blank,
            "novelty": round(self.novelty, 4), "not_digit": round(self.not_digit, 6),
            "box": list(self.box) if self.box else None,
        }


@dataclass(frozen=True)
class NumberReading:
    text: str  # the digits read left to right, '?' where a mark is not a digit
    digits: list[Prediction] = field(default_factory=list)

    @property
    def is_number(self) -> bool:
        return bool(self.digits) and all(d.is_digit for d in self.digits)


@dataclass(frozen=True)
class NumberScoring:
    """How `read_number` weighs candidate digits against each other. A chain of candidates scores the sum of
    `score(p)` over its digits; the highest chain wins. Chosen on numbers rendered from the validation split
    (benchmarks/tune_segmentation.py)."""

    # Each digit's log-confidence counts, but calibrated confidence alone favours merging: strokes of two
    # digits read as one are often still read confidently, and one term beats two. Novelty (distance from
    # every digit class) is what gives a merged "16" away: it sits far from every digit, real digits near one.
    novelty_weight: float = 0.5
    digit_prior_log: float = 0.5  # added per digit; > 0 favours more, smaller digits
    not_digit_log: float = -1.0  # added when a candidate is not digit-like at all
    # In a number a mark counts as a digit up to this multiple of the single-digit novelty limit: the person
    # said they wrote digits, and pieces cut from a number sit further from MNIST than a digit drawn alone.
    # All four values sit inside the plateau of best settings that tune_segmentation.py prints.
    novelty_limit_factor: float = 1.5

    def score(self, p: "Prediction") -> float:
        # The model's own "not a digit" output also says when a candidate is two digits merged or half of one.
        return (float(np.log(max(p.confidence, 1e-6))) + float(np.log(max(1.0 - p.not_digit, 1e-6)))
                - self.novelty_weight * p.novelty + self.digit_prior_log + (0.0 if p.is_digit else self.not_digit_log))


class Scores(NamedTuple):
    """What the model graph computes for a batch of 28x28 inputs."""

    logits: np.ndarray  # (N, 10) the digits' raw logits
    novelty: np.ndarray  # (N,) distance of the features from every digit class seen in training
    not_digit: np.ndarray  # (N,) probability of the "not a digit" output (0 when the network has none)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def serving_session(onnx_path: str | os.PathLike) -> ort.InferenceSession:
    """The graph at `onnx_path` loaded as the product runs it. One thread per model call: single images are
    latency-bound, and one intra-op thread avoids thread hand-off costs; a server gets its parallelism from
    concurrent requests, and `Recognizer(threads=N)` runs that many batches at once (ONNX Runtime releases the GIL).
    On a shared host that beats intra-op threads, which wait at every operator for the slowest of them
    (benchmarks/speed.py)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


class Recognizer:
    """Reads handwritten digits with an exported model; thread-safe (ONNX Runtime sessions are).

    >>> rec = Recognizer()                      # the shipped model
    >>> rec.predict("digit.png").digit          # any image: path, bytes, PIL image or array
    >>> rec.read_number(canvas_png).text        # several digits side by side
    >>> rec.predict_mnist(images)               # (N, 28, 28) uint8 MNIST-format -> (N, 10) probabilities
    >>> Recognizer(precision="int8", threads=2)  # the shipped int8 graph: faster on batches
    """

    def __init__(self, model: str | os.PathLike | None = None, threads: int | None = None,
                 limits: preprocess.Limits | None = None, number_scoring: NumberScoring | None = None,
                 precision: str | None = None):
        if precision is not None:
            if precision not in SHIPPED_GRAPHS:
                raise ValueError(f"precision must be one of {', '.join(SHIPPED_GRAPHS)}, not {precision!r}")
            if model is not None:
                raise ValueError("precision chooses one of the shipped graphs; a model folder holds its own graph")
            model = SHIPPED_GRAPHS[precision]
        self.card: ModelCard
        self.card, onnx_path = load_card(model)
        self.threads = max(1, threads or 1)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="onnx") if self.threads > 1 else None
        try:
            self.session = serving_session(onnx_path)
        except Exception as err:  # onnxruntime raises its own untyped errors for damaged graphs
            raise ModelError(f"{onnx_path}: ONNX Runtime cannot load it ({err})") from err
        self.input_name = self.session.get_inputs()[0].name
        # Images per model call in predict_mnist: float32 runs best on large batches, the int8 kernels on batches
        # that stay in cache (benchmarks/speed.py).
        self.batch_size = 256 if self.card.quantization.precision == "int8" else 1024
        self.temperature = float(self.card.temperature)
        self.limits = limits or preprocess.Limits()
        self.number_scoring = number_scoring or NumberScoring()

    @property
    def version(self) -> str:
        return self.card.version

    # The not-a-digit thresholds, as the card holds them.
    @property
    def min_confidence(self) -> float:
        return self.card.not_digit.min_confidence

    @property
    def max_novelty(self) -> float:
        return self.card.not_digit.novelty_limit()

    @property
    def max_not_digit(self) -> float:
        return self.card.not_digit.max_not_digit

    # -- MNIST-format input ---------------------------------------------------------------------

    def scores_mnist(self, images: np.ndarray, batch_size: int | None = None) -> Scores:
        """The graph's raw outputs for (N, 28, 28) uint8 MNIST-format images."""
        batch_size = batch_size or self.batch_size
        images = np.asarray(images)
        if images.ndim == 2:
            images = images[None]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ValueError(f"predict_mnist takes (N, 28, 28) uint8 images, got shape {images.shape}")
        if len(images) == 0:
            return Scores(np.empty((0, 10), np.float32), np.empty(0, np.float32), np.empty(0, np.float32))
        x = preprocess.to_graph_input(images)
        step = min(batch_size, -(-len(x) // self.threads))  # every thread gets a share of a small input too
        chunks = [x[i : i + step] for i in range(0, len(x), step)]
        runs = self._pool.map(self._run, chunks) if self._pool and len(chunks) > 1 else map(self._run, chunks)
        return Scores(*(np.concatenate(parts) for parts in zip(*runs)))

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        outputs = self.session.run(None, {self.input_name: x})
        # Graphs exported before the "not a digit" output have two outputs, or only logits.
        zeros = np.zeros(len(outputs[0]), np.float32)
        return outputs[0], (outputs[1] if len(outputs) > 1 else zeros), (outputs[2] if len(outputs) > 2 else zeros)

    def accepts(self, confidence: np.ndarray, novelty: np.ndarray, not_digit: np.ndarray,
                max_novelty: float | None = None) -> np.ndarray:
        """Which inputs count as digits: confident, near the digits seen in training, and not called a non-digit."""
        return self.card.not_digit.accepts(confidence, novelty, not_digit, max_novelty)

    def predict_mnist(self, images: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (N, 10) float32 for MNIST-format images (white on black, uint8)."""
        return softmax(self.scores_mnist(images).logits, self.temperature)

    def predict_inputs(self, inputs28: list[np.ndarray], boxes: list | None = None,
                       max_novelty: float | None = None) -> list[Prediction]:
        """Predictions for inputs already preprocessed to 28x28 (uint8, white on black), in one model call."""
        scores = self.scores_mnist(np.stack(inputs28))
        probs = softmax(scores.logits, self.temperature)
        digit = self.accepts(probs.max(1), scores.novelty, scores.not_digit, max_novelty)
        boxes = boxes or [None] * len(inputs28)
        return [self._decide(*row) for row in zip(probs, digit, scores.novelty, scores.not_digit, inputs28, boxes)]

    # -- any image ------------------------------------------------------------------------------

    def _decide(self, probs: np.ndarray, is_digit: bool, novelty: float, not_digit: float, input28: np.ndarray,
                box) -> Prediction:
        top = int(np.argmax(probs))
        return Prediction(top if is_digit else None, probs, float(probs[top]), bool(is_digit), input28, box,
                          novelty=float(novelty), not_digit=float(not_digit))

    def _blank(self, box=None) -> Prediction:
        return Prediction(None, np.full(10, 0.1, np.float32), 0.0, False, np.zeros((28, 28), np.uint8), box, blank=True)

    def predict(self, image) -> Prediction:
        """One digit from any image: path, bytes (PNG/JPEG/WebP), PIL image or numpy array."""
        return self.predict_many([image])[0]

    def predict_many(self, images: list) -> list[Prediction]:
        """Batched `predict`: one model call for all the non-blank inputs."""
        inputs = [preprocess.to_mnist(im, self.limits) for im in images]
        present = [x for x in inputs if x is not None]
        predictions = iter(self.predict_inputs(present) if present else [])
        return [self._blank() if x is None else next(predictions) for x in inputs]

    def read_number(self, image) -> NumberReading:
        """Several digits written side by side, read left to right, each with its box.

        Segmentation proposes candidate digits (strokes merged or split); all are read in one batch, and the
        chain of candidates covering every stroke with the highest total score wins (a small dynamic
        programme, `NumberScoring`), so a 0 drawn in two arcs reads as one 0, not as 1 and 1."""
        atom_count, candidates, readings = self.read_candidates(image)
        return best_chain(atom_count, candidates, readings, self.number_scoring)

    def read_candidates(self, image) -> tuple[int, list[segment.Candidate], list[list[Prediction]]]:
        """Segmentation's candidate digits and the model's reading of each of their pieces, in one batch."""
        gray, scale = preprocess.decode(image, self.limits)
        atom_count, candidates = segment.segment_digits(gray, scale, self.limits.max_marks)
        if not candidates:
            return 0, [], []
        pieces = [piece for c in candidates for piece in c.pieces]
        max_novelty = self.card.not_digit.novelty_limit(self.number_scoring.novelty_limit_factor)
        predictions = iter(self.predict_inputs([p.input28 for p in pieces], [p.box for p in pieces], max_novelty))
        return atom_count, candidates, [[next(predictions) for _ in c.pieces] for c in candidates]


def best_chain(atom_count: int, candidates: list[segment.Candidate], readings: list[list[Prediction]],
               scoring: NumberScoring) -> NumberReading:
    """The chain of candidates that covers atoms 0..atom_count with the highest total score."""
    best = [0.0] + [-np.inf] * atom_count
    chosen: list = [None] * (atom_count + 1)
    for candidate, reading in sorted(zip(candidates, readings), key=lambda cr: cr[0].stop):
        score = best[candidate.start] + sum(scoring.score(p) for p in reading)
        if score > best[candidate.stop]:
            best[candidate.stop], chosen[candidate.stop] = score, (candidate.start, reading)
    digits: list[Prediction] = []
    stop = atom_count
    while stop > 0 and chosen[stop] is not None:
        stop, reading = chosen[stop]
        digits = reading + digits
    return NumberReading("".join(str(d.digit) if d.is_digit else "?" for d in digits), digits)
