"""Benchmark: the real server under load, driven by wrk from a separate process on loopback.

Starts `digitrecognizer serve --workers N` (uvicorn, N worker processes), then sends real canvas PNGs to
/api/predict, /api/read and /api/feedback from C concurrent connections for a bounded time, and reports
requests/s, latency percentiles, errors, and the server's memory (all its processes) at start and end. The
feedback run writes to the database (--db: a temporary SQLite file unless given, or postgresql://...), and
the rows it added are counted against the corrections the server acknowledged.
With --flask it does the same against a minimal Flask app serving the original architecture the way the
original project did (Flask's own threaded server, one request per prediction).

Why wrk: it is a C load generator using a few threads, so on a 2-core machine it takes far less CPU away
from the server than a Python client would, and it measures latency with HDR histograms. A Lua script
posts the multipart body and prints the percentiles as JSON.

    python benchmarks/load.py --data-dir ../shared/data/mnist [--seconds 100] [--connections 16] [--workers 2]
    python benchmarks/load.py --data-dir ../shared/data/mnist --db postgresql://user:pass@127.0.0.1/feedback
    python benchmarks/load.py --data-dir ../shared/data/mnist --flask --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from digitrecognizer import data, synth

BOUNDARY = "digitrecognizerloadtest"
LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=BOUNDARY"
local f = io.open("BODY", "rb"); wrk.body = f:read("*all"); f:close()
done = function(summary, latency, requests)
  io.write(string.format('{"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d}, "p50_ms": %.3f, "p95_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (uvicorn's workers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total_kb, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            pass
        stack += children.get(p, [])
    return total_kb / 1024


def multipart(png: bytes, fields: dict[str, str] | None = None) -> bytes:
    parts = [f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n".encode()
             for name, value in (fields or {}).items()]
    parts.append((f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"canvas.png\"\r\n"
                  f"Content-Type: image/png\r\n\r\n").encode() + png + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def count_feedback(db: str) -> int:
    from digitrecognizer.store import FeedbackStore

    with FeedbackStore(db) as store:
        return store.count()


def wait_healthy(url: str, path: str, timeout_s: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout_s} s")


def run_wrk(url: str, body: Path, seconds: int, connections: int, threads: int, workdir: Path) -> dict:
    script = workdir / "post.lua"
    script.write_text(LUA.replace("BOUNDARY", BOUNDARY).replace("BODY", str(body)))
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s",
                          str(script), url], capture_output=True, text=True, timeout=seconds + 60)
    line = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if not line:
        raise RuntimeError(f"wrk failed: {out.stdout}\n{out.stderr}")
    result = json.loads(line[-1])
    result["requests_per_s"] = result["requests"] / (result["duration_us"] / 1e6)
    result["error_count"] = sum(result["errors"].values())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--seconds", type=int, default=100, help="duration of the /api/predict run (read: a fifth)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="server worker processes (2 cores: 2)")
    parser.add_argument("--db", help="feedback database for the server: a path or sqlite:/// or postgresql:// URL "
                                     "(default: a temporary SQLite file); the results' name then says which")
    parser.add_argument("--flask", action="store_true", help="load the original-style Flask app instead")
    parser.add_argument("--flask-model", type=Path, default=Path("benchmarks/results/runs/seed/best.pt"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk")

    test = data.load_split(args.data_dir, "test")
    png = synth.render_digit(test.images[0], np.random.default_rng(0), "white_on_black")
    number = synth.render_number(list(test.images[:4]), list(test.labels[:4]), np.random.default_rng(0)).png
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "digit.body").write_bytes(multipart(png))
        (tmp / "number.body").write_bytes(multipart(number))
        (tmp / "feedback.body").write_bytes(multipart(png, {"predicted": str(test.labels[0]), "correct": "7"}))
        db = args.db or str(tmp / "feedback.db")
        if args.flask:
            command = [sys.executable, str(Path(__file__).parent / "flask_original.py"), "--port", str(port),
                       "--weights", str(args.flask_model)]
            name, endpoints = "flask-original", [("/predict", "digit.body", args.seconds)]
        else:
            # One load generator is one client: the per-client rate limit and the quota would refuse most of
            # its corrections, so both are lifted for the measurement.
            command = [sys.executable, "-m", "digitrecognizer.cli", "serve", "--port", str(port),
                       "--workers", str(args.workers), "--db", db, "--feedback-rate", "1000000/minute",
                       "--feedback-quota", "100000000,1000GB"]
            name = f"digitrecognizer-{args.workers}-workers"
            if args.db:
                name += "-postgresql" if args.db.startswith(("postgresql", "postgres:")) else "-sqlite"
            endpoints = [("/api/predict", "digit.body", args.seconds),
                         ("/api/read", "number.body", max(1, args.seconds // 5)),
                         ("/api/feedback", "feedback.body", max(1, args.seconds // 5))]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            wait_healthy(url, "/health" if args.flask else "/api/health")
            # Warm up every worker (ONNX sessions, lazy imports) before measuring memory and latency.
            run_wrk(url + endpoints[0][0], tmp / endpoints[0][1], 2, args.connections, 2, tmp)
            result = {"server": name, "connections": args.connections, "memory_start_mb": tree_rss_mb(server.pid)}
            rows_before = None if args.flask else count_feedback(db)
            for path, body, seconds in endpoints:
                r = run_wrk(url + path, tmp / body, seconds, args.connections, 2, tmp)
                result[path] = r
                print(f"{name} {path}: {r['requests']} requests at {r['requests_per_s']:.0f}/s, p50 {r['p50_ms']:.1f} ms, "
                      f"p95 {r['p95_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, errors {r['error_count']}", flush=True)
            if rows_before is not None:
                # wrk counts the answers it read; requests still in flight when it stops may be stored unanswered,
                # so up to one per connection more rows than acknowledged corrections is expected, and fewer is a loss.
                feedback = result["/api/feedback"]
                acknowledged = feedback["requests"] - feedback["errors"]["status"]
                stored = count_feedback(db) - rows_before
                result["feedback_rows"] = {"acknowledged": acknowledged, "stored": stored}
                verdict = "ok" if acknowledged <= stored <= acknowledged + args.connections else "MISMATCH"
                print(f"{name} feedback: {acknowledged} corrections acknowledged, {stored} rows stored ({verdict})")
            result["memory_end_mb"] = tree_rss_mb(server.pid)
            print(f"{name} memory (all processes): {result['memory_start_mb']:.0f} MB at start, "
                  f"{result['memory_end_mb']:.0f} MB at end")
        finally:
            server.terminate()
            server.wait(timeout=20)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"load_{name}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
