"""The model card: everything inference needs (input format, temperature, thresholds, checksums) and the model's
record, as typed sections read and checked once (stdlib only)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .constants import MNIST_MEAN, MNIST_STD
from .files import sha256_file

CARD_NAME, ONNX_NAME, WEIGHTS_NAME = "card.json", "model.onnx", "model.pt"
SHIPPED_DIR = Path(__file__).parent / "assets"
# The shipped network as two graphs of the same weights, each a model folder with its own card (temperature,
# thresholds and test figures are measured on the graph they serve): float32 by default, and int8 for batch work.
SHIPPED_GRAPHS = {"float32": SHIPPED_DIR, "int8": SHIPPED_DIR / "int8"}
PRECISIONS = tuple(SHIPPED_GRAPHS)


class ModelError(RuntimeError):
    """A model file or card is missing, damaged or does not match its checksum."""


@dataclass
class NotDigit:
    """The not-a-digit decision: its thresholds, chosen on held-out data, and what they were measured to do."""

    signal: str = ""  # what the decision looks at, in words
    min_confidence: float = 0.0  # calibrated top probability below this: not a digit
    max_novelty: float | None = None  # distance from the training digits above this: not a digit (None: no limit)
    max_not_digit: float = 1.0  # the "not a digit" output's probability above this: not a digit
    validation_digits_accepted: float | None = None
    validation_drawn_digits_accepted: float | None = None
    rendered_non_digits_refused: float | None = None
    rendered_non_digits: int | None = None

    def novelty_limit(self, factor: float = 1.0) -> float:
        return math.inf if self.max_novelty is None else self.max_novelty * factor

    def accepts(self, confidence, novelty, not_digit, max_novelty: float | None = None):
        """Which inputs count as digits: confident, near the digits seen in training, and not called a non-digit.
        Takes numbers or numpy arrays; `max_novelty` replaces the card's novelty limit."""
        limit = self.novelty_limit() if max_novelty is None else max_novelty
        return (confidence >= self.min_confidence) & (novelty <= limit) & (not_digit <= self.max_not_digit)


@dataclass
class Quantization:
    """How the graph computes; for an int8 graph, what it was checked against."""

    precision: str = "float32"  # one of PRECISIONS
    validation_accuracy: float | None = None
    validation_accuracy_float32: float | None = None
    validation_agreement_with_float32: float | None = None
    weights: str | None = None
    activations: str | None = None
    float32_ops: str | None = None
    calibration_images: int | None = None


@dataclass
class TestFigures:
    """The official test set, read by the exported graph (see evaluate.compute_metrics)."""

    images: int
    accuracy: float
    errors: int
    top3_accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    ece: float
    nll: float


@dataclass
class Metrics:
    test: TestFigures | None = None
    test_digits_accepted: float | None = None  # share of test digits the not-a-digit decision accepts
    onnx_torch_max_prob_diff: float | None = None  # parity of the ONNX graph with PyTorch


@dataclass
class Training:
    """The run that made the weights: enough to repeat it, and its validation history."""

    command: str = ""
    seconds: float = 0.0
    epochs: int = 0  # epochs the run trained
    epoch_exported: int = 0  # the epoch whose weights these are
    best_val_acc: float = 0.0
    config: dict = field(default_factory=dict)  # recipes.TrainConfig as a dict
    data_sha256: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    history: list = field(default_factory=list)  # one record per epoch (train.Trainer)


def _input_format() -> dict:
    # Input contract: (N, 1, 28, 28) float32 in [0, 1], white ink on black, digit box 20 px, centred by mass.
    # The graph normalises with the MNIST mean/std itself, so callers only scale to [0, 1].
    return {"shape": [1, 28, 28], "dtype": "float32", "range": [0.0, 1.0], "polarity": "white-on-black",
            "normalization": "in-graph", "mean": MNIST_MEAN, "std": MNIST_STD}


@dataclass
class ModelCard:
    name: str  # registry name of the architecture ("ours", "seed")
    version: str  # shown in the app and stored with each piece of feedback
    model_args: dict
    onnx_sha256: str
    weights_sha256: str | None = None
    input_format: dict = field(default_factory=_input_format)
    temperature: float = 1.0  # logits are divided by this before softmax (fitted on the validation split)
    not_digit: NotDigit = field(default_factory=NotDigit)
    quantization: Quantization = field(default_factory=Quantization)
    metrics: Metrics = field(default_factory=Metrics)
    training: Training = field(default_factory=Training)
    code_version: str = ""
    created: str = ""

    @classmethod
    def from_dict(cls, raw: dict) -> "ModelCard":
        """A card as card.json holds it; raises TypeError or ValueError when it is not one."""
        raw = dict(raw)
        metrics = dict(raw.get("metrics") or {})
        if metrics.get("test") is not None:
            metrics["test"] = TestFigures(**metrics["test"])
        card = cls(**{**raw, "not_digit": NotDigit(**raw.get("not_digit") or {}),
                      "quantization": Quantization(**raw.get("quantization") or {}), "metrics": Metrics(**metrics),
                      "training": Training(**raw.get("training") or {})})
        card.validate()
        return card

    def validate(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a positive number, not {self.temperature!r}")
        if self.quantization.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.quantization.precision!r}")
        nd = self.not_digit
        if not (0 <= nd.min_confidence <= 1 and 0 <= nd.max_not_digit <= 1):
            raise ValueError("not_digit: min_confidence and max_not_digit are probabilities, between 0 and 1")

    def to_dict(self) -> dict:
        """The card as card.json holds it: a section's figures that were not measured are left out."""
        out = asdict(self)
        for section in ("not_digit", "quantization", "metrics"):
            out[section] = {k: v for k, v in out[section].items() if v is not None}
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)


def model_dir(path: str | os.PathLike | None) -> Path:
    """Accept a model folder, its card.json or its model.onnx; None means the shipped (float32) model."""
    if path is None:
        return SHIPPED_DIR
    path = Path(path).expanduser()
    return path.parent if path.suffix in (".json", ".onnx") else path


def load_card(path: str | os.PathLike | None = None, verify: bool = True) -> tuple[ModelCard, Path]:
    """Read the card of a model folder and check the ONNX file against its sha256; returns (card, onnx path)."""
    folder = model_dir(path)
    card_path, onnx_path = folder / CARD_NAME, folder / ONNX_NAME
    if not card_path.is_file():
        raise ModelError(f"{card_path}: no model card; a model folder holds {CARD_NAME} and {ONNX_NAME} "
                         "(written by `digitrecognizer export`)")
    try:
        card = ModelCard.from_dict(json.loads(card_path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError, UnicodeDecodeError) as err:
        raise ModelError(f"{card_path}: not a valid model card ({err})") from err
    if not onnx_path.is_file():
        raise ModelError(f"{onnx_path}: missing; the card at {card_path} describes it")
    if verify:
        actual = sha256_file(onnx_path)
        if actual != card.onnx_sha256:
            raise ModelError(f"{onnx_path}: sha256 {actual[:12]}… does not match the card's {card.onnx_sha256[:12]}…: "
                             "the file is damaged or was replaced; export the model again")
    return card, onnx_path
