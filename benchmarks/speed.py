"""Benchmark: inference speed on this machine, printed side by side in one run.

- `predict` on a 280x280 canvas PNG including decoding and preprocessing (p50, p95);
- `predict_mnist` throughput on batches of 1,000 MNIST-format images;
- single-image model latency, ONNX Runtime vs the same model in PyTorch eager (if torch is installed).

    python benchmarks/speed.py --data-dir ../shared/data/mnist [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from digitrecognizer import Recognizer, data, synth


ROUNDS = 5


def percentiles(samples_s: list[float]) -> dict:
    ms = np.array(samples_s) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99))}


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    test = data.load_split(args.data_dir, "test")
    rng = np.random.default_rng(0)
    canvases = [synth.render_digit(test.images[i], rng, "white_on_black") for i in range(300)]
    result = {}

    rec = Recognizer(args.model)
    for png in canvases[:20]:
        rec.predict(png)  # warm-up
    # Shared cloud machines vary by up to 2x from one minute to the next (neighbours on the host), so the
    # canvas latency is measured in several rounds, and the round in the middle is the figure reported.
    rounds = []
    for _ in range(ROUNDS):
        samples = []
        for png in canvases:
            t0 = time.perf_counter()
            rec.predict(png)
            samples.append(time.perf_counter() - t0)
        rounds.append(percentiles(samples))
    rounds.sort(key=lambda r: r["p50_ms"])
    result["predict_canvas_png"] = {**rounds[len(rounds) // 2], "rounds_p50_ms": [r["p50_ms"] for r in rounds]}
    print(f"predict(280x280 canvas PNG), decode+preprocess+model: p50 {result['predict_canvas_png']['p50_ms']:.2f} ms, "
          f"p95 {result['predict_canvas_png']['p95_ms']:.2f} ms (the middle of {ROUNDS} rounds, whose p50s ranged "
          f"{rounds[0]['p50_ms']:.2f}-{rounds[-1]['p50_ms']:.2f} ms; original project: ~40 ms)")

    batch_rec = Recognizer(args.model, threads=2)
    batch = test.images[:1000]
    batch_rec.predict_mnist(batch)
    t = min(timed(lambda: batch_rec.predict_mnist(test.images), 3))
    result["predict_mnist_images_per_s"] = len(test.images) / t
    print(f"predict_mnist throughput (10,000 images, batches of 1,024, 2 threads): "
          f"{result['predict_mnist_images_per_s']:,.0f} images/s")

    one = test.images[:1]
    onnx_single = percentiles(timed(lambda: rec.predict_mnist(one), 500))
    result["onnx_single_image"] = onnx_single
    print(f"model only, one image: ONNX Runtime p50 {onnx_single['p50_ms']:.3f} ms")
    try:
        import torch

        from digitrecognizer.card import model_dir
        from digitrecognizer.models import create_model
        from digitrecognizer.train import normalize, to_unit_tensor

        weights = torch.load(model_dir(args.model) / "model.pt", map_location="cpu")
        net, _ = create_model(weights["model"], **weights["model_args"])
        net.load_state_dict(weights["state_dict"])
        net.eval()
        torch.set_num_threads(1)
        x1 = normalize(to_unit_tensor(one))
        xb = normalize(to_unit_tensor(test.images))
        with torch.inference_mode():
            net(x1)
            torch_single = percentiles(timed(lambda: net(x1), 500))
            torch.set_num_threads(2)
            t_torch = min(timed(lambda: [net(xb[i:i + 1024]) for i in range(0, len(xb), 1024)], 3))
        result["torch_single_image"] = torch_single
        result["torch_images_per_s"] = len(xb) / t_torch
        result["onnx_vs_torch_single_speedup"] = torch_single["p50_ms"] / onnx_single["p50_ms"]
        result["onnx_vs_torch_batch_speedup"] = result["predict_mnist_images_per_s"] / result["torch_images_per_s"]
        print(f"model only, one image: PyTorch eager p50 {torch_single['p50_ms']:.3f} ms -> ONNX Runtime is "
              f"{result['onnx_vs_torch_single_speedup']:.1f}x faster; batches: PyTorch {result['torch_images_per_s']:,.0f} "
              f"images/s -> ONNX Runtime {result['onnx_vs_torch_batch_speedup']:.1f}x")
    except ImportError:
        print("PyTorch not installed: ONNX Runtime vs PyTorch comparison skipped (pip install '.[train]')")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
