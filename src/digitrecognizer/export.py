"""Export: a training run (or a model folder) -> model folder: the serving graph as ONNX (float32 or int8), the
weights, and a model card with the calibration fitted on validation and the test figures measured on the graph
written (torch)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from torch import nn

from . import __version__, data, graph, notdigit
from .checkpoint import Weights, load, read_weights, save_weights, weights_of
from .card import (CARD_NAME, ONNX_NAME, PRECISIONS, WEIGHTS_NAME, Metrics, ModelCard, ModelError, NotDigit,
                   Quantization, TestFigures, Training, load_card, sha256_file)
from .evaluate import compute_metrics
from .models import create_model
from .recipes import TrainConfig, config_of
from .recognizer import Recognizer, softmax

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """What an export starts from: the network, the config that trained it, and the card's record of the run."""

    network: nn.Module
    config: TrainConfig
    training: Training


@dataclass(frozen=True)
class Calibration:
    """What is fitted on the validation split, on the graph as written."""

    temperature: float
    thresholds: NotDigit  # as fitted: what the card's figures are measured with
    not_digit: NotDigit  # the card's section: the thresholds rounded, with what they measured


def read_source(run_dir: Path, checkpoint_name: str) -> Source:
    """The network of a training run folder (its `checkpoint_name`), or of a model folder (card.json and
    model.pt, as export writes them): a shipped model can be exported again, at another precision say, without
    the run that made it. The card's training record then stands in for the run's checkpoints."""
    if (run_dir / checkpoint_name).is_file() or not (run_dir / CARD_NAME).is_file():
        saved = load(run_dir / checkpoint_name)
        last = load(run_dir / "last.pt") if (run_dir / "last.pt").is_file() else saved
        # The card tells the whole run (the best checkpoint may be from an earlier epoch than the last one).
        history = last["history"]
        training = Training(command=saved["command"], seconds=round(last["train_seconds"], 1), epochs=last["epoch"],
                            epoch_exported=saved["epoch"], best_val_acc=max(h["val_acc"] for h in history),
                            config=saved["config"], environment=environment(), history=history)
        config = config_of(saved, run_dir / checkpoint_name)
        return Source(weights_of(saved).network(), config, training)
    card, _ = load_card(run_dir)
    weights = run_dir / WEIGHTS_NAME
    if not weights.is_file() or sha256_file(weights) != card.weights_sha256:
        raise ModelError(f"{weights}: missing or not the weights its card describes; a model folder is exported "
                         f"again from its {WEIGHTS_NAME}")
    config = TrainConfig.from_dict(card.training.config)
    network = Weights(config.model, config.model_args, read_weights(weights).state_dict)
    return Source(network.network(), config, card.training)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling (Guo et al., 2017): the T that minimises validation negative log-likelihood."""
    logits = logits.astype(np.float64)

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        z -= z.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(labels)), labels]))

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def code_version() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        if out.returncode == 0:
            return f"{__version__}+{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


def environment() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
            "cpus": os.cpu_count(), "threads": torch.get_num_threads()}


def export(run_dir: Path, out_dir: Path, data_dir: Path | None, checkpoint: str = "best.pt",
           version: str | None = None, precision: str = "float32") -> ModelCard:
    """Write model.onnx, model.pt and card.json for the run's best checkpoint; returns the card.

    precision 'int8' writes the graph quantised, checked against the float32 one. Either way everything the card
    holds (temperature, thresholds, test figures) is measured on the graph written."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    source = read_source(run_dir, checkpoint)
    train_split, val = source.config.split(data.load_split(data_dir, "train"))
    test = data.load_split(data_dir, "test")
    # Build in a temporary folder and move the files in at the end: a failed export leaves the old model intact.
    with tempfile.TemporaryDirectory(dir=out_dir.parent if out_dir.parent.exists() else None) as tmp:
        tmp = Path(tmp)
        max_diff, quantization = write_graph(source.network, train_split, val, test, precision, tmp / ONNX_NAME)
        save_weights(Weights(source.config.model, source.config.model_args, source.network.state_dict()),
                     tmp / WEIGHTS_NAME)
        card = describe(source, tmp, version, precision, quantization, data_dir)
        card.temperature = fit_temperature(graph.onnx_logits(tmp / ONNX_NAME, val.images), val.labels)
        log.info("temperature fitted on %d validation images: %.4f", len(val), card.temperature)
        (tmp / CARD_NAME).write_text(card.to_json())  # the recognizer below reads the temperature from it
        # Thresholds and final metrics are measured on the exported graph, exactly as users will run it.
        recognizer = Recognizer(tmp)
        calibration = calibrate(recognizer, card.temperature, val)
        card.not_digit = calibration.not_digit
        card.metrics = measure(recognizer, calibration, test, max_diff)
        (tmp / CARD_NAME).write_text(card.to_json())
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in (ONNX_NAME, WEIGHTS_NAME, CARD_NAME):  # the card last: it vouches for the others
            (tmp / name).replace(out_dir / name)
    return card


def write_graph(network: nn.Module, train_split: data.MnistSplit, val: data.MnistSplit, test: data.MnistSplit,
                precision: str, path: Path) -> tuple[float, Quantization]:
    """Write the serving graph at `precision`, checked against PyTorch (and int8 against float32); returns
    (the float32 graph's max probability difference from PyTorch, the card's quantization section)."""
    serving = graph.ServingGraph(network, *graph.fit_class_gaussians(network, train_split.images, train_split.labels))
    float_path = path.with_name("model.float32.onnx")
    graph.export_onnx(serving, float_path)
    # At temperature 1: the temperature is fitted afterwards, on the graph that is written (float32 or int8).
    max_diff = graph.parity(network, float_path, test.images[:1000], 1.0)
    if max_diff >= graph.PARITY_TOLERANCE:
        raise RuntimeError(f"ONNX and PyTorch disagree: max probability difference {max_diff:.2e} "
                           f"≥ {graph.PARITY_TOLERANCE:.0e}; the export is not trustworthy")
    if precision == "float32":
        float_path.replace(path)
        return max_diff, Quantization("float32")
    images = graph.calibration_images(train_split)
    graph.quantize_int8(float_path, path, images)
    quantization = graph.check_int8(graph.onnx_logits(float_path, val.images), graph.onnx_logits(path, val.images),
                                    val.labels)
    float_path.unlink()
    return max_diff, replace(quantization, calibration_images=len(images))


def describe(source: Source, folder: Path, version: str | None, precision: str, quantization: Quantization,
             data_dir: Path | None) -> ModelCard:
    """The card of the files in `folder`, before calibration."""
    config, onnx_sha256 = source.config, sha256_file(folder / ONNX_NAME)
    data_files = sorted(data.resolve_data_dir(data_dir).glob("*-ubyte*"))
    training = replace(source.training, data_sha256={p.name: sha256_file(p) for p in data_files},
                       environment=source.training.environment or environment())
    return ModelCard(
        name=config.model,
        version=version or (f"{config.model}-{dt.date.today():%Y%m%d}-{onnx_sha256[:8]}"
                            + ("-int8" if precision == "int8" else "")),
        model_args=create_model(config.model, **config.model_args)[1],
        onnx_sha256=onnx_sha256,
        weights_sha256=sha256_file(folder / WEIGHTS_NAME),
        quantization=quantization,
        training=training,
        code_version=code_version(),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )


def calibrate(recognizer: Recognizer, temperature: float, val: data.MnistSplit) -> Calibration:
    """The not-a-digit thresholds of the graph the recognizer serves, at its fitted temperature."""
    thresholds, section = notdigit.choose_thresholds(recognizer, val)
    return Calibration(temperature, thresholds, section)


def measure(recognizer: Recognizer, calibration: Calibration, test: data.MnistSplit, max_diff: float) -> Metrics:
    """The test figures of the graph as written, exactly as users will run it."""
    scores = recognizer.scores_mnist(test.images)
    probs = softmax(scores.logits, calibration.temperature)
    accepted = calibration.thresholds.accepts(probs.max(1), scores.novelty, scores.not_digit)
    return Metrics(test=TestFigures(**compute_metrics(probs, test.labels, summary_only=True)),
                   test_digits_accepted=float(accepted.mean()), onnx_torch_max_prob_diff=max_diff)
