"""Export: checkpoint -> ONNX graph + weights + model card, with temperature fitted on validation and a parity check (torch)."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from torch import nn

from . import __version__, data
from .card import CARD_NAME, ONNX_NAME, WEIGHTS_NAME, ModelCard, sha256_file
from .models import MNIST_MEAN, MNIST_STD, create_model, embed
from .train import TrainConfig, environment, load_checkpoint, normalize, predict_logits, to_unit_tensor

log = logging.getLogger(__name__)
PARITY_TOLERANCE = 1e-5  # max |p_onnx - p_torch| over 1,000 test images


class ServingGraph(nn.Module):
    """What the ONNX file computes: normalisation inside the graph (callers only scale pixels to [0, 1]),
    the logits, and a novelty score for the not-a-digit decision.

    Novelty is the Mahalanobis distance of the convolutional features (the classifier's flattened input) to the
    nearest digit class (class means and a shared covariance fitted on the training split; Lee et al., 2018),
    divided by the feature count. Letters and scribbles often get a confident softmax but land far from every
    class. Measured on held-out non-digits at the same digit acceptance, the convolutional features refused
    49-50%, against 26-42% for the 128 units before the last layer (benchmarks/experiments.md)."""

    def __init__(self, net: nn.Module, class_means: torch.Tensor, precision: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("means", class_means)  # (10, D)
        # Kept in float16, and widened when the graph is loaded: the (D, D) matrix is most of the file (4 MB in
        # float32 for D = 1,024), and the novelty moves by about 1e-4 of its value, far below any decision.
        self.register_buffer("precision", precision.half())  # (D, D)
        self.register_buffer("means_term", ((class_means @ self.precision.float()) * class_means).sum(1))  # (10,)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = embed(self.net, (images - MNIST_MEAN) / MNIST_STD)
        logits = self.net.classifier(features)  # its Flatten is a no-op on features that are already flat
        projected = features @ self.precision.float()
        distance = (projected * features).sum(1, keepdim=True) - 2 * projected @ self.means.T + self.means_term
        novelty = distance.min(1).values / features.shape[1]
        return logits, novelty


@torch.no_grad()
def fit_class_gaussians(net: nn.Module, images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means and the shared precision matrix of the convolutional features on clean training images."""
    net.eval()
    feats = torch.cat([embed(net, normalize(to_unit_tensor(images[i : i + 2000]))) for i in range(0, len(images), 2000)])
    feats = feats.double()
    y = torch.from_numpy(labels)
    means = torch.stack([feats[y == c].mean(0) for c in range(10)])
    centred = feats - means[y]
    covariance = centred.T @ centred / len(centred)
    covariance += 1e-3 * covariance.diagonal().mean() * torch.eye(len(covariance))  # ridge: well-conditioned
    return means.float(), torch.linalg.inv(covariance).float()


def model_from_checkpoint(path: Path) -> tuple[nn.Module, TrainConfig, dict]:
    """The network of a checkpoint in eval mode, with its averaged (EMA) weights when it has them."""
    ckpt = load_checkpoint(path)
    config = TrainConfig.from_dict(ckpt["config"])
    net, _ = create_model(config.model, **config.model_args)
    net.load_state_dict(ckpt["ema"] if ckpt.get("ema") else ckpt["model"])
    return net.eval(), config, ckpt


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


def export_onnx(graph: ServingGraph, path: Path) -> None:
    example = torch.zeros(2, 1, 28, 28)
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.onnx.export(graph.eval(), (example,), input_names=["images"], output_names=["logits", "novelty"],
                                dynamic_shapes={"images": {0: batch}}, dynamo=True, verbose=False)
    program.optimize()
    program.save(str(path))
    # The exporter annotates each node with the Python stack that made it: file paths of the machine that
    # exported. They mean nothing to users, so the shipped file goes without them.
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    onnx.save(model, str(path))


def parity(model: nn.Module, onnx_path: Path, images: np.ndarray, temperature: float) -> float:
    """Max absolute difference of calibrated probabilities, ONNX Runtime vs PyTorch."""
    import onnxruntime as ort

    from .recognizer import softmax

    torch_logits = predict_logits(model, images).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(["logits"], {"images": images.astype(np.float32)[:, None] / 255.0})[0]
    return float(np.abs(softmax(onnx_logits, temperature) - softmax(torch_logits, temperature)).max())


def export(run_dir: Path, out_dir: Path, data_dir: Path | None, checkpoint: str = "best.pt",
           version: str | None = None) -> ModelCard:
    """Write model.onnx, model.pt and card.json for the run's best checkpoint; returns the card."""
    from .evaluate import compute_metrics
    from .notdigit import choose_not_digit_threshold
    from .recognizer import Recognizer, softmax

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    model, config, ckpt = model_from_checkpoint(run_dir / checkpoint)

    train_full = data.load_split(data_dir, "train")
    train_split, val = config.split(train_full)
    temperature = fit_temperature(predict_logits(model, val.images).numpy(), val.labels)
    log.info("temperature fitted on %d validation images: %.4f", len(val), temperature)
    graph = ServingGraph(model, *fit_class_gaussians(model, train_split.images, train_split.labels))

    # Build in a temporary folder and move the files in at the end: a failed export leaves the old model intact.
    with tempfile.TemporaryDirectory(dir=out_dir.parent if out_dir.parent.exists() else None) as tmp:
        tmp = Path(tmp)
        export_onnx(graph, tmp / ONNX_NAME)
        test = data.load_split(data_dir, "test")
        max_diff = parity(model, tmp / ONNX_NAME, test.images[:1000], temperature)
        if max_diff >= PARITY_TOLERANCE:
            raise RuntimeError(f"ONNX and PyTorch disagree: max probability difference {max_diff:.2e} "
                               f"≥ {PARITY_TOLERANCE:.0e}; the export is not trustworthy")
        torch.save({"model": config.model, "model_args": config.model_args, "state_dict": model.state_dict()},
                   tmp / WEIGHTS_NAME)

        data_dir_resolved = data.resolve_data_dir(data_dir)
        # The card tells the whole run (the best checkpoint may be from an earlier epoch than the last one).
        last = load_checkpoint(run_dir / "last.pt") if (run_dir / "last.pt").is_file() else ckpt
        history = last["history"]
        card = ModelCard(
            name=config.model,
            version=version or f"{config.model}-{dt.date.today():%Y%m%d}-{sha256_file(tmp / ONNX_NAME)[:8]}",
            model_args=create_model(config.model, **config.model_args)[1],
            onnx_sha256=sha256_file(tmp / ONNX_NAME),
            weights_sha256=sha256_file(tmp / WEIGHTS_NAME),
            temperature=temperature,
            training={
                "command": ckpt["command"],
                "seconds": round(last["train_seconds"], 1),
                "epochs": last["epoch"],
                "epoch_exported": ckpt["epoch"],
                "best_val_acc": max(h["val_acc"] for h in history),
                "config": ckpt["config"],
                "data_sha256": {p.name: sha256_file(p) for p in sorted(data_dir_resolved.glob("*-ubyte*"))},
                "environment": environment(),
                "history": history,
            },
            code_version=code_version(),
            created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        )
        (tmp / CARD_NAME).write_text(card.to_json())

        # Threshold and final metrics are measured on the exported graph, exactly as users will run it.
        recognizer = Recognizer(tmp)
        card.not_digit = choose_not_digit_threshold(recognizer, val)
        logits, novelty = recognizer.scores_mnist(test.images)
        probs = softmax(logits, temperature)
        accepted = (probs.max(1) >= recognizer.min_confidence) & (novelty <= recognizer.max_novelty)
        card.metrics = {"test": compute_metrics(probs, test.labels, summary_only=True),
                        "test_digits_accepted": float(accepted.mean()),
                        "onnx_torch_max_prob_diff": max_diff}
        (tmp / CARD_NAME).write_text(card.to_json())

        out_dir.mkdir(parents=True, exist_ok=True)
        for name in (ONNX_NAME, WEIGHTS_NAME, CARD_NAME):  # the card last: it vouches for the others
            (tmp / name).replace(out_dir / name)
    return card

