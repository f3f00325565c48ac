"""Inference: ONNX Runtime session, calibrated probabilities, the not-a-digit decision, single digits and numbers."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from . import preprocess
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

    def to_dict(self) -> dict:
        return {
            "digit": self.digit, "probabilities": [round(float(p), 6) for p in self.probabilities],
            "confidence": round(self.confidence, 6), "is_digit": self.is_digit, "blank": self.blank,
            "novelty": round(self.novelty, 4), "box": list(self.box) if self.box else None,
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
    # every digit class) is what gives a merged "16" away: about 3.5 against 0.2-1 for real digits.
    novelty_weight: float = 0.5
    digit_prior_log: float = 0.5  # added per digit; > 0 favours more, smaller digits
    not_digit_log: float = -1.0  # added when a candidate is not digit-like at all
    # In a number a mark counts as a digit up to this multiple of the single-digit novelty limit: the person
    # said they wrote digits, and pieces cut from a number sit further from MNIST than a digit drawn alone
    # (on validation numbers, a factor of 1.25 or more turned 0.7% of numbers from '?' into right readings).
    # All four values sit inside the plateau of best settings that tune_segmentation.py prints.
    novelty_limit_factor: float = 1.5

    def score(self, p: "Prediction") -> float:
        return (float(np.log(max(p.confidence, 1e-6))) - self.novelty_weight * p.novelty
                + self.digit_prior_log + (0.0 if p.is_digit else self.not_digit_log))


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
    >>> Recognizer(precision="int8", threads=2)  # the shipped int8 graph: twice the batch throughput
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
        options = ort.SessionOptions()
        # One thread per model call. Single images are latency-bound, and one intra-op thread avoids thread
        # hand-off costs (measured: faster for batch 1); a server gets its parallelism from concurrent requests,
        # and `threads` > 1 runs that many batches at once (ONNX Runtime releases the GIL). On a shared host
        # that beats intra-op threads, which wait at every operator for the slowest of them: the int8 graph
        # ran 18,100-21,500 images/s that way against 15,800-19,100 with 2 intra-op threads, in alternating rounds.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.threads = max(1, threads or 1)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="onnx") if self.threads > 1 else None
        try:
            self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own untyped errors for damaged graphs
            raise ModelError(f"{onnx_path}: ONNX Runtime cannot load it ({err})") from err
        self.input_name = self.session.get_inputs()[0].name
        # Images per model call in predict_mnist. Measured with 2 threads (benchmarks/README.md): float32 runs best
        # on large batches (11,000 images/s at 1,024, 10,500 at 256), the int8 kernels on batches that stay in
        # cache (24,000 images/s at 256, 21,000 at 1,024).
        self.batch_size = 256 if self.card.quantization.get("precision") == "int8" else 1024
        self.temperature = float(self.card.temperature)
        self.min_confidence = float(self.card.not_digit.get("min_confidence", 0.0))
        self.max_novelty = float(self.card.not_digit.get("max_novelty", np.inf))
        self.limits = limits or preprocess.Limits()
        self.number_scoring = number_scoring or NumberScoring()

    @property
    def version(self) -> str:
        return self.card.version

    # -- MNIST-format input ---------------------------------------------------------------------

    def scores_mnist(self, images: np.ndarray, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw logits (N, 10) and novelty (N,) for (N, 28, 28) uint8 MNIST-format images."""
        batch_size = batch_size or self.batch_size
        images = np.asarray(images)
        if images.ndim == 2:
            images = images[None]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ValueError(f"predict_mnist takes (N, 28, 28) uint8 images, got shape {images.shape}")
        if len(images) == 0:
            return np.empty((0, 10), np.float32), np.empty(0, np.float32)
        x = images.astype(np.float32)[:, None] / 255.0
        step = min(batch_size, -(-len(x) // self.threads))  # every thread gets a share of a small input too
        chunks = [x[i : i + step] for i in range(0, len(x), step)]
        runs = self._pool.map(self._run, chunks) if self._pool and len(chunks) > 1 else map(self._run, chunks)
        logits, novelty = zip(*runs)
        return np.concatenate(logits), np.concatenate(novelty)

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = self.session.run(None, {self.input_name: x})
        return outputs[0], (outputs[1] if len(outputs) > 1 else np.zeros(len(outputs[0]), np.float32))

    def predict_mnist(self, images: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (N, 10) float32 for MNIST-format images (white on black, uint8)."""
        return softmax(self.scores_mnist(images)[0], self.temperature)

    def _predict_inputs(self, inputs28: list[np.ndarray], boxes: list | None = None,
                        max_novelty: float | None = None) -> list[Prediction]:
        logits, novelty = self.scores_mnist(np.stack(inputs28))
        probs = softmax(logits, self.temperature)
        boxes = boxes or [None] * len(inputs28)
        limit = self.max_novelty if max_novelty is None else max_novelty
        return [self._decide(p, float(n), x, b, limit) for p, n, x, b in zip(probs, novelty, inputs28, boxes)]

    # -- any image ------------------------------------------------------------------------------

    def _decide(self, probs: np.ndarray, novelty: float, input28: np.ndarray, box, max_novelty: float) -> Prediction:
        top = int(np.argmax(probs))
        confidence = float(probs[top])
        is_digit = confidence >= self.min_confidence and novelty <= max_novelty
        return Prediction(top if is_digit else None, probs, confidence, is_digit, input28, box, novelty=novelty)

    def _blank(self, box=None) -> Prediction:
        return Prediction(None, np.full(10, 0.1, np.float32), 0.0, False, np.zeros((28, 28), np.uint8), box, blank=True)

    def predict(self, image) -> Prediction:
        """One digit from any image: path, bytes (PNG/JPEG/WebP), PIL image or numpy array."""
        return self.predict_many([image])[0]

    def predict_many(self, images: list) -> list[Prediction]:
        """Batched `predict`: one model call for all the non-blank inputs."""
        inputs = [preprocess.to_mnist(preprocess.load_gray(im, self.limits)) for im in images]
        present = [x for x in inputs if x is not None]
        predictions = iter(self._predict_inputs(present) if present else [])
        return [self._blank() if x is None else next(predictions) for x in inputs]

    def read_number(self, image) -> NumberReading:
        """Several digits written side by side, read left to right, each with its box.

        Segmentation proposes candidate digits (strokes merged or split); all are read in one batch, and the
        chain of candidates covering every stroke with the highest total score wins (a small dynamic
        programme, `NumberScoring`), so a 0 drawn in two arcs reads as one 0, not as 1 and 1."""
        atom_count, candidates, readings = self.read_candidates(image)
        return best_chain(atom_count, candidates, readings, self.number_scoring)

    def read_candidates(self, image) -> tuple[int, list[preprocess.Candidate], list[list[Prediction]]]:
        """Segmentation's candidate digits and the model's reading of each of their pieces, in one batch."""
        gray, scale = preprocess.decode(image, self.limits)
        atom_count, candidates = preprocess.segment_digits(gray, scale, self.limits.max_marks)
        if not candidates:
            return 0, [], []
        pieces = [piece for c in candidates for piece in c.pieces]
        max_novelty = self.max_novelty * self.number_scoring.novelty_limit_factor
        predictions = iter(self._predict_inputs([p.input28 for p in pieces], [p.box for p in pieces], max_novelty))
        return atom_count, candidates, [[next(predictions) for _ in c.pieces] for c in candidates]


def best_chain(atom_count: int, candidates: list[preprocess.Candidate], readings: list[list[Prediction]],
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
