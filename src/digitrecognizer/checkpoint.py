"""Checkpoints and weight files: every read and write of them (torch).

A training checkpoint (last.pt, best.pt) holds a run's whole state, as `train.Run.state` lays it out; an exported
model.pt holds the network alone: its registry name, its settings and its weights. Both are read with
weights_only=True, so loading a file never runs pickled code."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .files import atomic_write
from .models import create_model


class CheckpointError(RuntimeError):
    """A checkpoint or weight file is missing, damaged or not ours; the message names the file and the fix."""


@dataclass(frozen=True)
class Weights:
    """A network as a file holds it: enough to build it by name and load its weights."""

    model: str  # registry name ("ours", "seed")
    model_args: dict
    state_dict: dict

    def network(self) -> nn.Module:
        """The network with these weights, in eval mode."""
        net, _ = create_model(self.model, **self.model_args)
        net.load_state_dict(self.state_dict)
        return net.eval()


def save(state: dict, path: Path) -> None:
    """Write a training checkpoint atomically: a run killed while saving resumes from the previous one."""
    atomic_write(Path(path), lambda f: torch.save(state, f))


def load(path: Path) -> dict:
    """A training checkpoint, checked to be one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there; train first or check the --out folder")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for damaged files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err}); "
                              "it may be truncated: delete it to start over") from err
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a digitrecognizer checkpoint (missing model or config)")
    return state


def weights_of(saved: dict) -> Weights:
    """The network of an exported model.pt or of a training checkpoint (its averaged weights when it has them)."""
    if "state_dict" in saved:  # model.pt, written by export
        return Weights(saved["model"], saved["model_args"], saved["state_dict"])
    return Weights(saved["config"]["model"], saved["config"]["model_args"], saved.get("ema") or saved["model"])


def read_weights(path: Path) -> Weights:
    """The network of a model.pt or a training checkpoint: the two files fine-tuning and export start from."""
    return weights_of(torch.load(path, map_location="cpu", weights_only=True))


def save_weights(weights: Weights, path: Path) -> None:
    """Write model.pt. Saved by path (torch names the archive inside after the file), so that exporting the same
    network again gives the same bytes; export makes the write atomic by building in a temporary folder."""
    torch.save({"model": weights.model, "model_args": weights.model_args, "state_dict": weights.state_dict}, path)
