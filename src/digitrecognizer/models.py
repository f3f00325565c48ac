"""Network definitions and their registry: `ours` (the shipped CNN) and `seed` (the original Keras architecture)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

# Inputs are MNIST-style 28x28 images scaled to [0, 1] and then normalised with these statistics
# (the MNIST training-set mean and std); the model card carries them so inference never hard-codes them.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass
class OursConfig:
    """A compact VGG-style CNN with batch norm: two 3x3 conv pairs with strided-conv downsampling."""

    width: int = 32  # channels of the first stage; the second stage has 2x
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
        self.features = nn.Sequential(
            _conv_bn(1, w, pad=pad),
            _conv_bn(w, w, pad=pad),
            _conv_bn(w, w, kernel=5, stride=2),  # learned downsampling beats max-pool here (28 -> 14, or 24 -> 12)
            nn.Dropout(config.dropout * 0.5),
            _conv_bn(w, 2 * w, pad=pad),
            _conv_bn(2 * w, 2 * w, pad=pad),
            _conv_bn(2 * w, 2 * w, kernel=5, stride=2),  # 14 -> 7, or 8 -> 4
            nn.Dropout(config.dropout * 0.5),
        )
        side = 7 if pad else 4
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * w * side * side, config.hidden, bias=False),
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
