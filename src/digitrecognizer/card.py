"""The model card: everything inference needs (input format, temperature, thresholds, checksums) and the model's record."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

CARD_NAME, ONNX_NAME, WEIGHTS_NAME = "card.json", "model.onnx", "model.pt"
SHIPPED_DIR = Path(__file__).parent / "assets"
# The shipped network as two graphs of the same weights, each a model folder with its own card (temperature,
# thresholds and test figures are measured on the graph they serve): float32 by default, and int8 for batch work,
# at twice the throughput (benchmarks/README.md, speed.py).
SHIPPED_GRAPHS = {"float32": SHIPPED_DIR, "int8": SHIPPED_DIR / "int8"}


class ModelError(RuntimeError):
    """A model file or card is missing, damaged or does not match its checksum."""


@dataclass
class ModelCard:
    name: str  # registry name of the architecture ("ours", "seed")
    version: str  # shown in the app and stored with each piece of feedback
    model_args: dict
    onnx_sha256: str
    weights_sha256: str | None = None
    # Input contract: (N, 1, 28, 28) float32 in [0, 1], white ink on black, digit box 20 px, centred by mass.
    # The graph normalises with the MNIST mean/std itself, so callers only scale to [0, 1].
    input_format: dict = field(default_factory=lambda: {
        "shape": [1, 28, 28], "dtype": "float32", "range": [0.0, 1.0], "polarity": "white-on-black",
        "normalization": "in-graph", "mean": 0.1307, "std": 0.3081,
    })
    temperature: float = 1.0  # logits are divided by this before softmax (fitted on the validation split)
    not_digit: dict = field(default_factory=dict)  # thresholds of the not-a-digit decision, chosen on held-out data
    # How the graph computes: {"precision": "int8", ...} for a quantised graph and what it was checked against.
    quantization: dict = field(default_factory=lambda: {"precision": "float32"})
    metrics: dict = field(default_factory=dict)  # official-test-set figures, measured on the exported ONNX model
    training: dict = field(default_factory=dict)  # command, seconds, epochs, data checksums, environment, history
    code_version: str = ""
    created: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
        raw = json.loads(card_path.read_text())
        card = ModelCard(**raw)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as err:
        raise ModelError(f"{card_path}: not a valid model card ({err})") from err
    if not onnx_path.is_file():
        raise ModelError(f"{onnx_path}: missing; the card at {card_path} describes it")
    if verify:
        actual = sha256_file(onnx_path)
        if actual != card.onnx_sha256:
            raise ModelError(f"{onnx_path}: sha256 {actual[:12]}… does not match the card's {card.onnx_sha256[:12]}…: "
                             "the file is damaged or was replaced; export the model again")
    return card, onnx_path
