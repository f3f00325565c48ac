"""The serving graph: the network with normalisation inside, its digit logits, a novelty score and the
not-a-digit probability; written to ONNX as float32 or quantised to int8, and checked against PyTorch (torch, onnx)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from . import data, synth
from .card import Quantization
from .constants import DIGITS, NOT_A_DIGIT
from .models import embed, normalize, predict_logits, to_unit_tensor
from .preprocess import to_graph_input
from .recognizer import softmax

PARITY_TOLERANCE = 1e-5  # max |p_onnx - p_torch| over the test images checked
# A quantisation is refused, not shipped, when the int8 graph reads the validation digits less accurately than the
# float32 graph by more than this (3 of 6,000 images).
INT8_MAX_ACCURACY_LOSS = 0.0005
CALIBRATION_SEED = 7


class ServingGraph(nn.Module):
    """What the ONNX file computes: normalisation inside the graph (callers only scale pixels to [0, 1]),
    the ten digits' logits, and two scores for the not-a-digit decision: the probability of the network's
    "not a digit" output (0 for a ten-output network), and a novelty score.

    Novelty is the Mahalanobis distance of the convolutional features (the classifier's flattened input) to the
    nearest digit class (class means and a shared covariance fitted on the training split; Lee et al., 2018),
    divided by the feature count. Letters and scribbles often get a confident softmax but land far from every
    class. On held-out non-digits, at the same digit acceptance, the convolutional features refuse more than the
    units before the last layer do (docs/experiments/not-a-digit.md)."""

    def __init__(self, net: nn.Module, class_means: torch.Tensor, precision: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("means", class_means)  # (DIGITS, D)
        # Kept in float16, and widened when the graph is loaded: the (D, D) matrix is most of the file, and
        # half precision moves the novelty far less than any decision threshold.
        self.register_buffer("precision", precision.half())  # (D, D)
        self.register_buffer("means_term", ((class_means @ self.precision.float()) * class_means).sum(1))  # (10,)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = embed(self.net, normalize(images))
        outputs = self.net.classifier(features)  # its Flatten is a no-op on features that are already flat
        logits = outputs[:, :DIGITS]
        projected = features @ self.precision.float()
        distance = (projected * features).sum(1, keepdim=True) - 2 * projected @ self.means.T + self.means_term
        novelty = distance.min(1).values / features.shape[1]
        if outputs.shape[1] > DIGITS:  # the "not a digit" output's probability, against the ten digits together
            not_digit = torch.softmax(outputs, 1)[:, NOT_A_DIGIT]
        else:
            not_digit = torch.zeros_like(novelty)
        return logits, novelty, not_digit


@torch.no_grad()
def fit_class_gaussians(net: nn.Module, images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means and the shared precision matrix of the convolutional features on clean training images."""
    net.eval()
    feats = torch.cat([embed(net, normalize(to_unit_tensor(images[i : i + 2000]))) for i in range(0, len(images), 2000)])
    feats = feats.double()
    y = torch.from_numpy(labels)
    means = torch.stack([feats[y == c].mean(0) for c in range(DIGITS)])
    centred = feats - means[y]
    covariance = centred.T @ centred / len(centred)
    covariance += 1e-3 * covariance.diagonal().mean() * torch.eye(len(covariance))  # ridge: well-conditioned
    return means.float(), torch.linalg.inv(covariance).float()


def export_onnx(graph: ServingGraph, path: Path) -> None:
    """Write the graph to ONNX with a dynamic batch axis and the outputs logits, novelty and not_digit."""
    example = torch.zeros(2, 1, 28, 28)
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.onnx.export(graph.eval(), (example,), input_names=["images"], output_names=["logits", "novelty", "not_digit"],
                                dynamic_shapes={"images": {0: batch}}, dynamo=True, verbose=False)
    program.optimize()
    program.save(str(path))
    # The exporter annotates each node with the Python stack that made it: file paths of the machine that
    # exported. They mean nothing to users, so the shipped file goes without them.
    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    onnx.save(model, str(path))


def calibration_images(train_split: data.MnistSplit, seed: int = CALIBRATION_SEED) -> np.ndarray:
    """What the int8 graph's activation ranges are measured on: training images (never validation ones) as the
    model meets them in use. Clean digits, the same digits drawn on canvases through the whole pipeline, and
    scribbles from the training-time generator: with only digits, the ranges would clip the larger activations
    that non-digits cause, and clipped features look more digit-like to the novelty score."""
    rng = np.random.default_rng(seed)
    clean = train_split.images[rng.choice(len(train_split), 1000, replace=False)]
    drawn, blank = synth.drawn_digits(train_split.images, train_split.labels, 150, seed * 100).preprocessed()
    return np.concatenate([clean, drawn[~blank], synth.scribble_inputs(200, seed)])


def quantize_int8(float_path: Path, int8_path: Path, images: np.ndarray) -> None:
    """Static int8 quantisation with ONNX Runtime: per-channel int8 weights, uint8 activations, ranges from
    `images`. The convolutions and the classifier run in int8, where VNNI instructions do four times the
    multiply-adds of float32 per cycle; the novelty's matrix products stay in float32, because int8 moves the score
    several times more than the float16 precision matrix does."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"images": to_graph_input(images[i : i + 200])}
                                 for i in range(0, len(images), 200)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    prepared = int8_path.with_suffix(".prepared.onnx")
    quant_pre_process(str(float_path), str(prepared), skip_optimization=True, skip_symbolic_shape=True)
    quantize_static(str(prepared), str(int8_path), Batches(), quant_format=QuantFormat.QOperator, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv", "Relu", "Gemm"])
    prepared.unlink()


def check_int8(float_logits: np.ndarray, int8_logits: np.ndarray, labels: np.ndarray) -> Quantization:
    """The int8 graph's validation figures beside the float32 graph's, for the card; raises if it reads the
    validation digits more than INT8_MAX_ACCURACY_LOSS worse."""
    float_answers, int8_answers = float_logits.argmax(1), int8_logits.argmax(1)
    float_acc, int8_acc = float((float_answers == labels).mean()), float((int8_answers == labels).mean())
    if int8_acc < float_acc - INT8_MAX_ACCURACY_LOSS:
        raise RuntimeError(f"the int8 graph reads {int8_acc:.2%} of validation digits against {float_acc:.2%} "
                           f"for float32 (at most {INT8_MAX_ACCURACY_LOSS:.2%} less allowed); export with "
                           "--precision float32")
    return Quantization("int8", validation_accuracy=int8_acc, validation_accuracy_float32=float_acc,
                        validation_agreement_with_float32=float((int8_answers == float_answers).mean()),
                        weights="int8, per channel", activations="uint8",
                        float32_ops="input normalisation and the novelty score")


def onnx_logits(onnx_path: Path, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = to_graph_input(images)
    return np.concatenate([session.run(["logits"], {"images": x[i : i + 1000]})[0] for i in range(0, len(x), 1000)])


def parity(model: nn.Module, onnx_path: Path, images: np.ndarray, temperature: float) -> float:
    """Max absolute difference of the probabilities at `temperature`, ONNX Runtime vs PyTorch."""
    torch_logits = predict_logits(model, images).numpy()[:, :DIGITS]
    return float(np.abs(softmax(onnx_logits(onnx_path, images), temperature) - softmax(torch_logits, temperature)).max())
