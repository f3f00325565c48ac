"""Benchmark: the hostile suite. Over a thousand malformed requests, of every kind below, against the real
server (`digitrecognizer serve`, one worker, on loopback); then checks that it still answers right.

Pass: no 500, and no 5xx other than the documented ones (503: store down or connection cap; 507: quota);
every request that sends its whole body is answered within 10 s; a body promised and never sent is cut off
at the read timeout (408) and a head trickled byte by byte at the head timeout; afterwards a drawn 1 still
reads as 1. Prints the answers of each kind, the slowest answer, and the server's memory before and after.
The server runs with --feedback-quota 10,1GB, so the last kind meets the quota (507) and then the
per-client rate limit (429).

    python benchmarks/hostile.py [--out benchmarks/results/hostile.json]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from load import free_port, tree_rss_mb, wait_healthy  # noqa: E402

ENDPOINTS = ["/api/predict", "/api/read", "/api/feedback"]
DOCUMENTED_5XX = {503, 507}
WHOLE_BODY_LIMIT_S = 10.0
RNG = np.random.default_rng(20)


def encode(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


def one_stroke() -> bytes:
    """A vertical stroke on a white canvas: the model reads it as 1."""
    canvas = np.full((280, 280), 255, np.uint8)
    canvas[50:230, 130:150] = 0
    return encode(Image.fromarray(canvas))


def multipart(parts: list[tuple[str, bytes, str | None]], boundary: str = "hostile") -> tuple[bytes, dict]:
    body = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), {"content-type": f"multipart/form-data; boundary={boundary}"}


def upload(path: str, image: bytes, **fields: str) -> tuple:
    body, headers = multipart([("image", image, "x.png"), *((k, v.encode(), None) for k, v in fields.items())])
    return ("POST", path, headers, body)


def as_json(path: str, text: str | bytes) -> tuple:
    return ("POST", path, {"content-type": "application/json"}, text if isinstance(text, bytes) else text.encode())


# -- the kinds of hostile request -----------------------------------------------------------------

def images() -> dict[str, bytes]:
    canvas = one_stroke()
    frames = [Image.new("L", (64, 64), c) for c in (0, 255)]
    out = {
        "empty": b"", "random 3 kB": RNG.bytes(3000), "random 200 kB": RNG.bytes(200_000),
        "truncated png": canvas[: len(canvas) // 2], "png + 1 MB of junk": canvas + RNG.bytes(1_000_000),
        "pixel bomb 20000x20000": encode(Image.new("1", (20000, 20000)), optimize=True),
        "strip 1x4096": encode(Image.new("L", (1, 4096), 255)), "1x1": encode(Image.new("L", (1, 1))),
        "16-bit 2048": encode(Image.fromarray((RNG.random((2048, 2048)) * 65535).astype(np.uint16))),
        "16-bit 4096": encode(Image.fromarray(np.full((4096, 4096), 60000, np.uint16))),
        "comb 32 marks": comb(32), "comb 256 marks": comb(256),
        "animated gif": encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "tiff": encode(Image.new("L", (64, 64)), "TIFF"),
        "svg": b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
        "cmyk jpeg": encode(Image.new("CMYK", (300, 300), (0, 0, 0, 255)), "JPEG"),
    }
    for mode in ("1", "L", "LA", "I;16", "P", "RGB", "RGBA"):
        out[f"png mode {mode}"] = encode(Image.new(mode, (600, 600)))
    for mode in ("RGB", "RGBA"):
        out[f"webp mode {mode}"] = encode(Image.new(mode, (300, 300)), "WEBP")
    return out


def comb(teeth: int) -> bytes:
    canvas = np.full((512, 512), 255, np.uint8)
    canvas[128:384, :: 512 // teeth] = 0
    return encode(Image.fromarray(canvas), optimize=True)


def mutated_pngs(count: int) -> list[bytes]:
    """A real canvas PNG with a few bytes changed: damaged chunks, bad CRCs, absurd sizes."""
    base = bytearray(one_stroke())
    out = []
    for _ in range(count):
        data = bytearray(base)
        for position in RNG.integers(8, len(data), RNG.integers(1, 6)):
            data[position] = int(RNG.integers(0, 256))
        out.append(bytes(data))
    return out


def kinds() -> dict[str, list[tuple]]:
    deep = {n: "[" * n + "]" * n for n in (100, 1000, 100_000)}
    json_labels = ["Infinity", "-Infinity", "NaN", "1e400", "9" * 5000, "-1", "10", "1.5", '"7"', "true", "null",
                   "[]", "{}", '"' + "7" * 100_000 + '"']
    form_labels = ["", " ", "10", "-1", "seven", "3.5", "1e400", "Infinity", "9" * 5000, "\u0667", "0x7", "\x00",
                   "7" * 100]
    image_b64 = base64.b64encode(one_stroke()).decode()
    shapes = ["", "null", "[]", '"x"', "{}", '{"image": 5}', '{"image": null}', '{"image": ["a"]}',
              '{"image": "data:image/png,abc"}', '{"image": "@@@"}', '{"image": "', b'{"image": "\xff\xfe"}',
              '{"image": "data:image/png;base64,' + "A" * 100_001 + '"}']
    out: dict[str, list[tuple]] = defaultdict(list)
    corpus = images()
    for path in ENDPOINTS:
        for n, text in deep.items():
            out["json nested deep"] += [as_json(path, text), as_json(path, f'{{"image": "x", "a": {text}}}')]
        out["json body shape"] += [as_json(path, text) for text in shapes]
        for name, data in corpus.items():
            out["image files"].append(upload(path, data, correct="1") if path.endswith("feedback") else upload(path, data))
        for data in mutated_pngs(200):
            out["mutated png"].append(upload(path, data, correct="1") if path.endswith("feedback") else upload(path, data))
        for size in RNG.integers(1, 100_000, 30):
            out["random bytes"].append(as_json(path, RNG.bytes(int(size))) if size % 2 else upload(path, RNG.bytes(int(size))))
        out["multipart broken"] += [
            ("POST", path, {"content-type": "multipart/form-data"}, b"--x\r\n"),
            ("POST", path, {"content-type": "multipart/form-data; boundary=a"}, b"--b\r\nnothing\r\n--b--\r\n"),
            ("POST", path, {"content-type": "multipart/form-data; boundary=a"}, b"--a\r\nContent-Disposition: form"),
            ("POST", path, *multipart([(f"f{i}", b"v", None) for i in range(50)])[::-1]),
            ("POST", path, *multipart([("image", b"a", "a.png"), ("image", b"b", "b.png")])[::-1]),
            ("POST", path, *multipart([("x" * 100_000, b"v", None)])[::-1]),
            ("POST", path, *multipart([("image", one_stroke(), None)])[::-1]),
            ("POST", path, *multipart([("picture", one_stroke(), "p.png")])[::-1]),
        ]
        for content_type in ("text/plain", "application/xml", "", "application/x-www-form-urlencoded",
                             "application/json; charset=latin-1", "image/png"):
            out["content types"].append(("POST", path, {"content-type": content_type}, b"image=abc"))
        for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"):
            out["methods"].append((method, path, {}, b""))
        out["bodies over the limit"] += [("POST", path, {"content-type": "application/json"}, b"{" * 6_000_000),
                                         upload(path, b"\0" * 5_100_000)]
    for field in ("correct", "predicted"):
        for label in json_labels:
            other = "predicted" if field == "correct" else "correct"
            out["json labels"].append(as_json("/api/feedback",
                                              f'{{"image": "{image_b64}", "{field}": {label}, "{other}": 1}}'))
        for label in form_labels:
            fields = {"correct": "1", field: label}
            out["form labels"].append(upload("/api/feedback", one_stroke(), **fields))
    for path in ("/static/../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd", "/static/..%2f..%2fetc%2fpasswd",
                 "//etc/passwd", "/api/../api/health", "/static/", "/static/index.html%00.js", "/" + "a" * 5000,
                 "/api/health?" + "x=1&" * 2000, "/docs/../../etc/passwd", "/%ff%fe", "/api/model/..;/health"):
        out["paths"] += [("GET", path, {}, b""), ("HEAD", path, {}, b"")]
    for headers in ({"origin": "http://evil.example"}, {"origin": "null"}, {"origin": "http://localhost:1"},
                    {"sec-fetch-site": "cross-site"}, {"sec-fetch-site": "same-site"},
                    {"origin": "http://127.0.0.1.evil.example"}):
        body, form = multipart([("image", one_stroke(), "d.png"), ("correct", b"1", None)])
        out["cross-site writes"].append(("POST", "/api/feedback", {**form, **headers}, body))
    for host in ("evil.example", "evil.example:5000", "localhost.evil.example", "127.0.0.2", "[::2]", "x" * 300,
                 "localhost:abc", "[::1"):
        out["host names"] += [("GET", path, {"host": host}, b"") for path in ("/", "/api/health", "/api/model")]
    return out


def valid_corrections(count: int) -> list[tuple]:
    return [upload("/api/feedback", one_stroke(), correct="1") for _ in range(count)]


# -- sending ----------------------------------------------------------------------------------------

def send(client: httpx.Client, request: tuple) -> tuple[int, float]:
    method, path, headers, body = request
    started = time.monotonic()
    try:
        status = client.request(method, path, headers=headers, content=body or None).status_code
    except httpx.HTTPError as err:
        status = f"no answer ({type(err).__name__})"
    return status, time.monotonic() - started


def raw(port: int, payload: bytes, trickle: bytes = b"", wait_s: float = 40) -> tuple[str, float]:
    """Sends `payload`, then `trickle` a byte every 0.5 s; returns the status line (or how it ended) and when."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.settimeout(wait_s)
        started = time.monotonic()
        try:
            conn.sendall(payload)
            for byte in trickle:
                time.sleep(0.5)
                conn.sendall(bytes([byte]))
            answer = conn.recv(200)
        except (BrokenPipeError, ConnectionResetError):
            answer = b""
        except TimeoutError:
            return "still open", time.monotonic() - started
        line = answer.split(b"\r\n", 1)[0].decode(errors="replace")
        return (line[9:12] if line.startswith("HTTP/") else "closed"), time.monotonic() - started


def slow_clients(port: int) -> dict[str, list]:
    promise = (b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
               b"Content-Length: 100000\r\n\r\n{\"image\": \"")
    trickled_head = b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
    big_head = b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n"
    with ThreadPoolExecutor(64) as pool:
        bodies = pool.map(lambda _: raw(port, promise), range(50))
        heads = pool.map(lambda _: raw(port, trickled_head, b"a" * 60), range(20))
        big = pool.map(lambda _: raw(port, big_head), range(5))
        return {"body promised, never sent": list(bodies), "head trickled a byte per 0.5 s": list(heads),
                "1 MB header": list(big)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    requests = kinds()
    report: dict = {"kinds": {}, "failures": []}
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen([sys.executable, "-m", "digitrecognizer.cli", "serve", "--port", str(port),
                                   "--db", str(Path(tmp) / "f.db"), "--feedback-quota", "10,1GB"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_healthy(url, "/api/health", timeout_s=300)
            rss_start = tree_rss_mb(server.pid)
            slowest = (0.0, "")
            with httpx.Client(base_url=url, timeout=60) as client, ThreadPoolExecutor(2) as pool:
                for kind, batch in [*requests.items(), ("valid corrections: quota, then rate", valid_corrections(40))]:
                    answers = list(pool.map(lambda r: send(client, r), batch)) if not kind.startswith("valid") \
                        else [send(client, r) for r in batch]  # in order: 10 stored, then 507, then 429
                    report["kinds"][kind] = dict(Counter(str(status) for status, _ in answers))
                    for (status, took), request in zip(answers, batch):
                        slowest = max(slowest, (took, f"{kind}: {request[0]} {request[1][:60]}"))
                        if not isinstance(status, int) or status == 500 or (status >= 500 and status not in DOCUMENTED_5XX):
                            report["failures"].append(f"{kind}: {request[0]} {request[1][:60]} -> {status}")
                        if took > WHOLE_BODY_LIMIT_S:
                            report["failures"].append(f"{kind}: {request[0]} {request[1][:60]} took {took:.1f} s")
            slow = slow_clients(port)
            for kind, answers in slow.items():
                report["kinds"][kind] = dict(Counter(status for status, _ in answers))
                report[f"{kind}: seconds to the answer"] = [round(min(t for _, t in answers), 1),
                                                           round(max(t for _, t in answers), 1)]
            expected = {"body promised, never sent": "408", "head trickled a byte per 0.5 s": "closed",
                        "1 MB header": "431"}
            for kind, status in expected.items():
                if set(report["kinds"][kind]) != {status}:
                    report["failures"].append(f"{kind}: expected {status} for all, got {report['kinds'][kind]}")
            after = httpx.post(url + "/api/predict", files={"image": ("d.png", one_stroke(), "image/png")}, timeout=60)
            report["afterwards: a drawn 1 reads as"] = after.json().get("digit")
            if after.json().get("digit") != 1:
                report["failures"].append(f"afterwards the server read a 1 as {after.text[:200]}")
            rss_end = tree_rss_mb(server.pid)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait()
    total = sum(sum(c.values()) for c in report["kinds"].values())
    report.update(requests=total, slowest_whole_body_s=round(slowest[0], 2), slowest_request=slowest[1],
                  server_rss_mb=[round(rss_start), round(rss_end)], load_average_1min=round(os.getloadavg()[0], 2))
    for kind, counts in report["kinds"].items():
        print(f"{kind:40} {sum(counts.values()):5}  {dict(sorted(counts.items()))}")
    print(f"{total} requests; slowest answer to a whole body {slowest[0]:.2f} s ({slowest[1]}); "
          f"slow clients cut off after {report['body promised, never sent: seconds to the answer']} s (body) and "
          f"{report['head trickled a byte per 0.5 s: seconds to the answer']} s (head)")
    print(f"server memory {rss_start:.0f} MB -> {rss_end:.0f} MB; afterwards a drawn 1 reads as "
          f"{report['afterwards: a drawn 1 reads as']}; load average {report['load_average_1min']}")
    print("PASS" if not report["failures"] else "FAIL:\n  " + "\n  ".join(report["failures"][:50]))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    sys.exit(1 if report["failures"] else 0)


if __name__ == "__main__":
    main()
