"""Benchmark: what a wider `ours` network costs, before any is trained. For each shape: multiply-adds per image,
a training step (batch 128, on the machine's cores, as `train` runs it) and one image through the served ONNX graph
(the network with its novelty score, one thread, as `Recognizer` runs it), in rounds alternating between the
shapes, with ratios to the shipped shape. The weights are random: speed does not depend on them.

    python benchmarks/network_cost.py

Output: benchmarks/results/network_cost.{json,txt}.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

import record
from digitrecognizer import graph, models, recipes
from digitrecognizer.constants import DIGITS
from digitrecognizer.recognizer import serving_session
from speed import timed

SHIPPED = recipes.PRESETS["default"]["model_args"]
SHAPES = {
    "shipped (width 32, second stage 64)": {},
    "second stage 80": {"stage2_width": 80},
    "second stage 96": {"stage2_width": 96},
    "width 40 (second stage 80)": {"width": 40},
    "width 48 (second stage 96)": {"width": 48},
    "hidden layer 256": {"hidden": 256},
}
ROUNDS, STEPS, IMAGES = 3, 12, 1000


def multiply_adds(net: nn.Module) -> int:
    """Multiply-adds of one 28x28 image through the network's convolutions and linear layers, and through the
    novelty's (features x features) precision matrix."""
    total = 0

    def count(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += output[0].numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        net.eval()(torch.zeros(1, 1, 28, 28))
    for hook in hooks:
        hook.remove()
    features = models.embed(net, torch.zeros(1, 1, 28, 28)).shape[1]
    return total + features * features


def served_session(net: nn.Module, folder: Path) -> ort.InferenceSession:
    """The network in the graph the product serves, with a novelty score over its features, loaded as
    `Recognizer` loads it."""
    features = models.embed(net.eval(), torch.zeros(1, 1, 28, 28)).shape[1]
    served = graph.ServingGraph(net, torch.randn(DIGITS, features), torch.eye(features))
    path = folder / "model.onnx"
    graph.export_onnx(served, path)
    return serving_session(path)


def step_ms(net: nn.Module) -> float:
    """Median milliseconds of a training step of 128 images (channels-last, SGD with momentum), after warm-up."""
    net.train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.rand(128, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 11, (128,))

    def step() -> None:
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()

    timed(step, 3)  # warm-up
    return 1000 * statistics.median(timed(step, STEPS))


def image_ms(session: ort.InferenceSession) -> float:
    """Median milliseconds of one image through the served graph."""
    image = np.random.default_rng(0).random((1, 1, 28, 28), np.float32)

    def run() -> None:
        session.run(None, {"images": image})

    timed(run, 100)  # warm-up
    return 1000 * statistics.median(timed(run, IMAGES))


def main() -> None:
    torch.manual_seed(0)
    nets = {name: models.create_model("ours", **{**SHIPPED, **shape})[0].to(memory_format=torch.channels_last)
            for name, shape in SHAPES.items()}
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for i, (name, net) in enumerate(nets.items()):
            (Path(tmp) / str(i)).mkdir()
            sessions[name] = served_session(net, Path(tmp) / str(i))
        steps = {name: [] for name in nets}
        images = {name: [] for name in nets}
        for _ in range(ROUNDS):  # alternating, so that a drift in the machine's speed falls on every shape
            for name, net in nets.items():
                steps[name].append(step_ms(net))
                images[name].append(image_ms(sessions[name]))
    result, base = {}, next(iter(nets))
    for name, net in nets.items():
        result[name] = {"multiply_adds": multiply_adds(net), "train_step_ms": statistics.median(steps[name]),
                        "served_image_ms": statistics.median(images[name]),
                        "train_step_rounds_ms": steps[name], "served_image_rounds_ms": images[name]}
    lines = [f"{torch.get_num_threads()} training threads; served graph on 1 thread; the middle of {ROUNDS} alternating "
             f"rounds",
             f"{'shape':38s}  {'M mult-adds incl. novelty':>26s}  {'train step':>16s}  {'one served image':>22s}"]
    for name, r in result.items():
        b = result[base]
        lines.append(f"{name:38s}  {r['multiply_adds'] / 1e6:26.1f}  "
                     f"{r['train_step_ms']:7.1f} ms {r['train_step_ms'] / b['train_step_ms']:5.2f}x  "
                     f"{r['served_image_ms']:7.3f} ms {r['served_image_ms'] / b['served_image_ms']:5.2f}x "
                     f"{r['served_image_ms'] - b['served_image_ms']:+.3f}")
    record.save("network_cost", result, lines)


if __name__ == "__main__":
    main()
