"""Benchmark: does /api/health stay fast while one client floods /api/read with worst-case images?

Starts `digitrecognizer serve` (one worker) on loopback, measures /api/health latency for a few quiet seconds,
then again while 4 connections (from 4 other processes, so that the client's own GIL doesn't colour the probe)
post the costliest images /api/read accepts or refuses, back to back, for a bounded time: a comb of exactly
the mark limit (read in full), a comb of 256 marks (refused), and 16-megapixel 8- and 16-bit scans. Prints
the probe's p50/p99/max and what the flood got.

    python benchmarks/health_flood.py [--seconds 30] [--connections 4] [--out benchmarks/results/health_flood.json]
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from load import free_port, tree_rss_mb, wait_healthy  # noqa: E402

from digitrecognizer.preprocess import Limits  # noqa: E402


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def comb(teeth: int, size: int = 512) -> bytes:
    canvas = np.full((size, size), 255, np.uint8)
    pitch = size // teeth
    for k in range(teeth):
        canvas[size // 4 : 3 * size // 4, k * pitch : k * pitch + max(1, pitch // 2)] = 0
    return png(Image.fromarray(canvas))


def scan(side: int, bits: int) -> bytes:
    """A page of `side` px with a few dark strokes on a lighting gradient: every pixel decoded, then shrunk."""
    y, x = np.mgrid[0:side, 0:side]
    page = 0.75 + 0.2 * x / side
    for k in range(3):
        page[side // 3 : 2 * side // 3, side // 4 + k * side // 5 : side // 4 + k * side // 5 + side // 40] = 0.1
    if bits == 16:
        return png(Image.fromarray((page * 65535).astype(np.uint16)))
    return png(Image.fromarray((page * 255).astype(np.uint8)))


def worst_cases() -> dict[str, bytes]:
    return {f"comb of {Limits().max_marks} marks": comb(Limits().max_marks), "comb of 256 marks": comb(256),
            "16 MP 8-bit scan": scan(4000, 8), "16 MP 16-bit scan": scan(4000, 16)}


def flood(url: str, images: dict[str, bytes], until: float, results) -> None:
    import httpx

    statuses: Counter = Counter()
    with httpx.Client(base_url=url, timeout=60) as client:
        while time.time() < until:
            for name, data in images.items():
                if time.time() >= until:
                    break
                r = client.post("/api/read", files={"image": ("x.png", data, "image/png")})
                statuses[f"{name}: {r.status_code}"] += 1
    results.put(dict(statuses))


def probe(url: str, seconds: float, every_s: float = 0.02) -> list[float]:
    """Health latencies in ms, one request at a time on one kept-alive connection, for `seconds`."""
    import httpx

    latencies = []
    with httpx.Client(base_url=url, timeout=30) as client:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            started = time.perf_counter()
            assert client.get("/api/health").status_code == 200
            latencies.append(1000 * (time.perf_counter() - started))
            time.sleep(every_s)
    return latencies


def summary(latencies: list[float]) -> dict:
    a = np.array(latencies)
    return {"requests": len(a), "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2), "max_ms": round(float(a.max()), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    images = worst_cases()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen([sys.executable, "-m", "digitrecognizer.cli", "serve", "--port", str(port),
                                   "--db", str(Path(tmp) / "f.db")], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_healthy(url, "/api/health", timeout_s=300)
            rss_start = tree_rss_mb(server.pid)
            quiet = probe(url, 5)
            results: multiprocessing.Queue = multiprocessing.Queue()
            until = time.time() + args.seconds
            flooders = [multiprocessing.Process(target=flood, args=(url, images, until, results))
                        for _ in range(args.connections)]
            for f in flooders:
                f.start()
            loaded = probe(url, args.seconds)
            statuses: Counter = Counter()
            for _ in flooders:
                statuses.update(results.get(timeout=120))
            for f in flooders:
                f.join()
            rss_end = tree_rss_mb(server.pid)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait()

    report = {"seconds": args.seconds, "connections": args.connections, "cpus": os.cpu_count(),
              "load_average_1min": round(os.getloadavg()[0], 2),
              "images_bytes": {name: len(data) for name, data in images.items()},
              "health_quiet": summary(quiet), "health_under_flood": summary(loaded),
              "flood_answers": dict(sorted(statuses.items())), "server_rss_mb": [round(rss_start), round(rss_end)]}
    print(f"/api/health alone:         {report['health_quiet']}")
    print(f"/api/health under a flood: {report['health_under_flood']}")
    print(f"flood of /api/read from {args.connections} connections for {args.seconds:g} s: "
          f"{sum(statuses.values())} answers {dict(sorted(statuses.items()))}")
    print(f"server memory {rss_start:.0f} MB -> {rss_end:.0f} MB; {os.cpu_count()} CPUs, load average "
          f"{report['load_average_1min']} at the end")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
