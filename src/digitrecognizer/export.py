"""Export: checkpoint -> ONNX graph (float32 or int8) + weights + model card, with temperature fitted on validation and parity checks (torch)."""

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
from .card import CARD_NAME, ONNX_NAME, WEIGHTS_NAME, ModelCard, ModelError, load_card, sha256_file
from .models import MNIST_MEAN, MNIST_STD, create_model, embed
from .train import TrainConfig, environment, load_checkpoint, normalize, predict_logits, read_weights, to_unit_tensor

log = logging.getLogger(__name__)
PARITY_TOLERANCE = 1e-5  # max |p_onnx - p_torch| over 1,000 test images
PRECISIONS = ("float32", "int8")
# A quantisation is refused, not shipped, when the int8 graph reads the validation digits less accurately than the
# float32 graph by more than this (3 of 6,000 images; on the shipped network it was 1 more error, and the two
# graphs disagreed on 1 image of 5,999).
INT8_MAX_ACCURACY_LOSS = 0.0005


class ServingGraph(nn.Module):
    """What the ONNX file computes: normalisation inside the graph (callers only scale pixels to [0, 1]),
    the ten digits' logits, and two scores for the not-a-digit decision: the probability of the network's
    "not a digit" output (0 for a ten-output network), and a novelty score.

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

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = embed(self.net, (images - MNIST_MEAN) / MNIST_STD)
        outputs = self.net.classifier(features)  # its Flatten is a no-op on features that are already flat
        logits = outputs[:, :10]
        projected = features @ self.precision.float()
        distance = (projected * features).sum(1, keepdim=True) - 2 * projected @ self.means.T + self.means_term
        novelty = distance.min(1).values / features.shape[1]
        if outputs.shape[1] > 10:  # the "not a digit" output's probability, against the ten digits together
            not_digit = torch.softmax(outputs, 1)[:, 10]
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


def read_run(run_dir: Path, checkpoint: str) -> tuple[nn.Module, TrainConfig, dict, dict]:
    """(network, config, exported checkpoint, last checkpoint) of a training run folder, or of a model folder
    (card.json and model.pt, as export writes them): a shipped model can be exported again, at another precision
    say, without the run that made it. The card's training record stands in for the run's checkpoints."""
    if (run_dir / checkpoint).is_file() or not (run_dir / CARD_NAME).is_file():
        model, config, ckpt = model_from_checkpoint(run_dir / checkpoint)
        last = load_checkpoint(run_dir / "last.pt") if (run_dir / "last.pt").is_file() else ckpt
        return model, config, ckpt, last
    card, _ = load_card(run_dir)
    weights = run_dir / WEIGHTS_NAME
    if not weights.is_file() or sha256_file(weights) != card.weights_sha256:
        raise ModelError(f"{weights}: missing or not the weights its card describes; a model folder is exported "
                         f"again from its {WEIGHTS_NAME}")
    training = card.training
    config = TrainConfig.from_dict(training["config"])
    net, _ = create_model(config.model, **config.model_args)
    net.load_state_dict(read_weights(weights)[2])
    ckpt = {"command": training["command"], "epoch": training["epoch_exported"], "config": training["config"]}
    last = {"epoch": training["epochs"], "history": training["history"], "train_seconds": training["seconds"],
            "environment": training["environment"]}
    return net.eval(), config, ckpt, last


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
    program = torch.onnx.export(graph.eval(), (example,), input_names=["images"], output_names=["logits", "novelty", "not_digit"],
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


def calibration_images(train_split: data.MnistSplit, seed: int = 7) -> np.ndarray:
    """What the int8 graph's activation ranges are measured on: training images (never validation ones) as the
    model meets them in use. Clean digits, the same digits drawn on canvases through the whole pipeline, and
    scribbles from the training-time generator: with only digits, the ranges would clip the larger activations
    that non-digits cause, and clipped features look more digit-like to the novelty score."""
    from . import preprocess, synth

    rng = np.random.default_rng(seed)
    clean = train_split.images[rng.choice(len(train_split), 1000, replace=False)]
    drawn = []
    for k, style in enumerate(synth.CANVAS_STYLES):
        pngs, _ = synth.digit_set(train_split.images, train_split.labels, 150, seed=seed * 100 + k, style=style)
        drawn += [x for x in (preprocess.to_mnist_image(png) for png in pngs) if x is not None]
    return np.concatenate([clean, np.stack(drawn), synth.scribble_inputs(200, seed)])


def quantize_int8(float_path: Path, int8_path: Path, images: np.ndarray) -> None:
    """Static int8 quantisation with ONNX Runtime: per-channel int8 weights, uint8 activations, ranges from
    `images`. The convolutions and the classifier run in int8 (VNNI instructions do 4x the multiply-adds of
    float32 per cycle: 1.6-2.2x the batch throughput on the Zen 5 machine); the novelty's matrix products stay in float32, where
    int8 moved the score by 5% (median) instead of 1.6%."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"images": images[i : i + 200].astype(np.float32)[:, None] / 255.0}
                                 for i in range(0, len(images), 200)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    prepared = int8_path.with_suffix(".prepared.onnx")
    quant_pre_process(str(float_path), str(prepared), skip_optimization=True, skip_symbolic_shape=True)
    quantize_static(str(prepared), str(int8_path), Batches(), quant_format=QuantFormat.QOperator, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv", "Relu", "Gemm"])
    prepared.unlink()


def check_int8(float_logits: np.ndarray, int8_logits: np.ndarray, labels: np.ndarray) -> dict:
    """The int8 graph's validation figures beside the float32 graph's, for the card; raises if it reads the
    validation digits more than INT8_MAX_ACCURACY_LOSS worse."""
    float_answers, int8_answers = float_logits.argmax(1), int8_logits.argmax(1)
    float_acc, int8_acc = float((float_answers == labels).mean()), float((int8_answers == labels).mean())
    if int8_acc < float_acc - INT8_MAX_ACCURACY_LOSS:
        raise RuntimeError(f"the int8 graph reads {int8_acc:.2%} of validation digits against {float_acc:.2%} "
                           f"for float32 (at most {INT8_MAX_ACCURACY_LOSS:.2%} less allowed); export with "
                           "--precision float32")
    return {"validation_accuracy": int8_acc, "validation_accuracy_float32": float_acc,
            "validation_agreement_with_float32": float((int8_answers == float_answers).mean()),
            "weights": "int8, per channel", "activations": "uint8",
            "float32_ops": "input normalisation and the novelty score"}


def onnx_logits(onnx_path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = images.astype(np.float32)[:, None] / 255.0
    return np.concatenate([session.run(["logits"], {"images": x[i : i + 1000]})[0] for i in range(0, len(x), 1000)])


def parity(model: nn.Module, onnx_path: Path, images: np.ndarray, temperature: float) -> float:
    """Max absolute difference of the probabilities at `temperature`, ONNX Runtime vs PyTorch."""
    from .recognizer import softmax

    torch_logits = predict_logits(model, images).numpy()[:, :10]
    return float(np.abs(softmax(onnx_logits(onnx_path, images), temperature) - softmax(torch_logits, temperature)).max())


def export(run_dir: Path, out_dir: Path, data_dir: Path | None, checkpoint: str = "best.pt",
           version: str | None = None, precision: str = "float32") -> ModelCard:
    """Write model.onnx, model.pt and card.json for the run's best checkpoint; returns the card.

    precision 'int8' writes the graph quantised, checked against the float32 one. Either way everything the card
    holds (temperature, thresholds, test figures) is measured on the graph written."""
    from .evaluate import compute_metrics
    from .notdigit import choose_not_digit_threshold
    from .recognizer import Recognizer, softmax

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    model, config, ckpt, last = read_run(run_dir, checkpoint)

    train_full = data.load_split(data_dir, "train")
    train_split, val = config.split(train_full)
    graph = ServingGraph(model, *fit_class_gaussians(model, train_split.images, train_split.labels))

    # Build in a temporary folder and move the files in at the end: a failed export leaves the old model intact.
    with tempfile.TemporaryDirectory(dir=out_dir.parent if out_dir.parent.exists() else None) as tmp:
        tmp = Path(tmp)
        float_path = tmp / "model.float32.onnx"
        export_onnx(graph, float_path)
        test = data.load_split(data_dir, "test")
        # At temperature 1: the temperature is fitted below, on the graph that is written (float32 or int8).
        max_diff = parity(model, float_path, test.images[:1000], 1.0)
        if max_diff >= PARITY_TOLERANCE:
            raise RuntimeError(f"ONNX and PyTorch disagree: max probability difference {max_diff:.2e} "
                               f"≥ {PARITY_TOLERANCE:.0e}; the export is not trustworthy")
        served = tmp / ONNX_NAME
        quantization = {"precision": precision}
        if precision == "int8":
            calibration = calibration_images(train_split)
            quantize_int8(float_path, served, calibration)
            val_logits = onnx_logits(served, val.images)
            quantization.update(check_int8(onnx_logits(float_path, val.images), val_logits, val.labels),
                                calibration_images=len(calibration))
            float_path.unlink()
        else:
            float_path.replace(served)
            val_logits = onnx_logits(served, val.images)
        temperature = fit_temperature(val_logits, val.labels)  # on the graph that is written
        log.info("temperature fitted on %d validation images: %.4f", len(val), temperature)
        torch.save({"model": config.model, "model_args": config.model_args, "state_dict": model.state_dict()},
                   tmp / WEIGHTS_NAME)

        data_dir_resolved = data.resolve_data_dir(data_dir)
        # The card tells the whole run (the best checkpoint may be from an earlier epoch than the last one).
        history = last["history"]
        card = ModelCard(
            name=config.model,
            version=version or (f"{config.model}-{dt.date.today():%Y%m%d}-{sha256_file(tmp / ONNX_NAME)[:8]}"
                                + ("-int8" if precision == "int8" else "")),
            model_args=create_model(config.model, **config.model_args)[1],
            onnx_sha256=sha256_file(tmp / ONNX_NAME),
            weights_sha256=sha256_file(tmp / WEIGHTS_NAME),
            temperature=temperature,
            quantization=quantization,
            training={
                "command": ckpt["command"],
                "seconds": round(last["train_seconds"], 1),
                "epochs": last["epoch"],
                "epoch_exported": ckpt["epoch"],
                "best_val_acc": max(h["val_acc"] for h in history),
                "config": ckpt["config"],
                "data_sha256": {p.name: sha256_file(p) for p in sorted(data_dir_resolved.glob("*-ubyte*"))},
                "environment": last.get("environment") or environment(),
                "history": history,
            },
            code_version=code_version(),
            created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        )
        (tmp / CARD_NAME).write_text(card.to_json())

        # Threshold and final metrics are measured on the exported graph, exactly as users will run it.
        recognizer = Recognizer(tmp)
        card.not_digit = choose_not_digit_threshold(recognizer, val)
        scores = recognizer.scores_mnist(test.images)
        probs = softmax(scores.logits, temperature)
        accepted = recognizer.accepts(probs.max(1), scores.novelty, scores.not_digit)
        card.metrics = {"test": compute_metrics(probs, test.labels, summary_only=True),
                        "test_digits_accepted": float(accepted.mean()),
                        "onnx_torch_max_prob_diff": max_diff}
        (tmp / CARD_NAME).write_text(card.to_json())

        out_dir.mkdir(parents=True, exist_ok=True)
        for name in (ONNX_NAME, WEIGHTS_NAME, CARD_NAME):  # the card last: it vouches for the others
            (tmp / name).replace(out_dir / name)
    return card

