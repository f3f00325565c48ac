"""Network definitions and their registry, `ours` (the shipped CNN) and `seed` (the original Keras architecture),
and how a batch of images goes into them (torch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from .constants import DIGITS, MNIST_MEAN, MNIST_STD


@dataclass
class OursConfig:
    """A compact VGG-style CNN with batch norm: two 3x3 conv pairs with strided-conv downsampling."""

    width: int = 32  # channels of the first stage
    # Channels of the second stage; None: twice the first's. Its maps have a quarter ('same') to a ninth ('valid')
    # of the first stage's area, so channels there cost less per image than in the first.
    stage2_width: int | None = None
    hidden: int = 128  # units of the classifier's hidden layer
    dropout: float = 0.25
    # 'same' keeps 28x28 through the first pair of 3x3 convolutions; 'valid' lets them shrink the map
    # (28 -> 26 -> 24, then 12 -> 10 -> 8), as in Deotte's Kaggle MNIST CNN: about half the work per image.
    padding: str = "same"
    # 11: the ten digits and "not a digit", an output trained on non-digits (letters, shapes, scribbles).
    classes: int = 10


def _conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, pad: bool = True) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2 if pad else 0, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class OursNet(nn.Module):
    def __init__(self, config: OursConfig):
        super().__init__()
        if config.padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', not {config.padding!r}")
        w, pad = config.width, config.padding == "same"
        w2 = 2 * w if config.stage2_width is None else config.stage2_width
        self.features = nn.Sequential(
            _conv_bn(1, w, pad=pad),
            _conv_bn(w, w, pad=pad),
            _conv_bn(w, w, kernel=5, stride=2),  # learned downsampling beats max-pool here (28 -> 14, or 24 -> 12)
            nn.Dropout(config.dropout * 0.5),
            _conv_bn(w, w2, pad=pad),
            _conv_bn(w2, w2, pad=pad),
            _conv_bn(w2, w2, kernel=5, stride=2),  # 14 -> 7, or 8 -> 4
            nn.Dropout(config.dropout * 0.5),
        )
        side = 7 if pad else 4
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(w2 * side * side, config.hidden, bias=False),
            nn.BatchNorm1d(config.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@dataclass
class SeedConfig:
    """The original project's Keras model: Conv16-Pool-Conv64-Pool-Dense128-Dense64-Dense10, dropout 0.2."""

    dropout: float = 0.2


class SeedNet(nn.Module):
    def __init__(self, config: SeedConfig):
        super().__init__()
        # Keras defaults: 3x3 'valid' convolutions, 2x2 max-pooling, ReLU.
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2),  # 28 -> 26 -> 13
            nn.Conv2d(16, 64, 3), nn.ReLU(), nn.MaxPool2d(2),  # 13 -> 11 -> 5
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 5 * 5, 128), nn.ReLU(), nn.Dropout(config.dropout),
            nn.Linear(128, 64), nn.ReLU(), nn.Dropout(config.dropout),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# name -> (config class, network class): models are built by name from a card or a CLI flag.
MODELS: dict[str, tuple[type, Callable[..., nn.Module]]] = {
    "ours": (OursConfig, OursNet),
    "seed": (SeedConfig, SeedNet),
}


def embed(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The convolutional features (the classifier's flattened input) of either registered network: what the
    not-a-digit novelty is measured on."""
    return net.features(x).flatten(1)


def create_model(name: str, **overrides) -> tuple[nn.Module, dict]:
    """Build a registered network; returns it with the full config (defaults plus overrides) as a dict."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    config_cls, net_cls = MODELS[name]
    config = config_cls(**overrides)
    return net_cls(config), asdict(config)


def unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float in [0, 1]."""
    return images.float().div_(255)


def to_unit_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28) in [0, 1]."""
    return unit_range(torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1))


def normalize(x: torch.Tensor) -> torch.Tensor:
    """What the networks take: pixels in [0, 1] standardised with MNIST's statistics."""
    return (x - MNIST_MEAN) / MNIST_STD


def recompute_batch_norm(model: nn.Module, images: np.ndarray, batch_size: int = 128) -> None:
    """Set the batch-norm statistics of these weights to the mean over uint8 (N, 28, 28) `images` (a cumulative
    mean, not momentum). An exponential average of weights averages their statistics along with them, and those
    need not fit the averaged weights: they made a run's validation accuracy dip by up to 15 points.
    Dropout is on while they are gathered, as in training; its own seeded stream makes them reproducible and leaves
    the caller's random stream where it was."""
    x = normalize(to_unit_tensor(images)).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        update_bn([x[i : i + batch_size] for i in range(0, len(x), batch_size)], model)


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray, batch_size: int = 1000) -> torch.Tensor:
    """Logits for uint8 (N, 28, 28) images, in eval mode."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = normalize(to_unit_tensor(images[i : i + batch_size])).contiguous(memory_format=torch.channels_last)
        out.append(model(x))
    return torch.cat(out) if out else torch.empty(0, DIGITS)
