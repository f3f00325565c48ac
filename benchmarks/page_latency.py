"""How long a person waits for the page's answer, measured in headless Chromium against a real server.

Three figures, each the median of 10 drawings (digits 7, 1, 0 and 4 in turn):
  pen still -> answer   the pen stops partway through the first stroke and stays down
  mouse-up -> answer    the last stroke ends (mouse)
  touch-end -> answer   the last stroke ends (a finger, through Chromium's touch input)
Each is split in two: input -> request sent (the page's own part: encoding the drawing, no waiting), and the
request's round trip (the server). Both ends are read by the page's own clock: the input event's timestamp, and the animation frame in which the
answer for that very drawing (result[data-answer-for] = pad[data-ink-version]) is painted. An answer already on
screen when the pen lifts counts as 0 ms.

    python benchmarks/page_latency.py [--runs 10] [--json benchmarks/results/page_latency.json]
    python benchmarks/page_latency.py --site site [--json benchmarks/results/page_latency_site.json]

Needs Debian's chromium (/usr/bin/chromium) and Playwright; starts `digitrecognizer serve` on a free port, or
with --site serves a folder written by `digitrecognizer build-site` (the model runs in the page: no request,
so the goal for the pen lifting is 30 ms).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import math
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
GOALS_MS = {"pen still -> answer": 250, "mouse-up -> answer": 150, "touch-end -> answer": 150}
SITE_GOALS_MS = {"pen still -> answer": 250, "mouse-up -> answer": 30, "touch-end -> answer": 30}

ELLIPSE = [(0.5 + 0.22 * math.sin(2 * math.pi * k / 27), 0.5 - 0.34 * math.cos(2 * math.pi * k / 27)) for k in range(28)]
DIGITS = [
    [[(0.25, 0.18), (0.75, 0.18), (0.45, 0.88)]],
    [[(0.45, 0.22), (0.55, 0.12), (0.55, 0.88)]],
    [ELLIPSE],
    [[(0.58, 0.12), (0.22, 0.6), (0.78, 0.6)], [(0.6, 0.35), (0.6, 0.9)]],
]

# In the page: when did the last input event happen, and when was the answer for each drawing painted.
TIMING_SCRIPT = """
window.__input = {};
window.__painted = {};
for (const type of ["pointermove", "pointerup"]) {
  window.addEventListener(type, (e) => {   // bubbling: the pad has counted this event's ink already
    const pad = document.getElementById("pad");
    window.__input[type] = { at: e.timeStamp, version: Number(pad.dataset.inkVersion || 0) };
  });
}
document.addEventListener("DOMContentLoaded", () => {
  const result = document.getElementById("result");
  new MutationObserver(() => {
    const version = Number(result.dataset.answerFor);
    if (!(version in window.__painted)) requestAnimationFrame((t) => { window.__painted[version] = t; });
  }).observe(result, { attributes: true, attributeFilter: ["data-answer-for"] });
});
"""
WAIT_JS = "(v) => Object.keys(window.__painted).some((k) => Number(k) >= v)"
# [input -> answer painted, input -> its request sent, the request's round trip]; the request is the first one
# to /api/ that started after the input (none: the answer was already on its way, and 0 is reported).
LATENCY_JS = """(type) => { const i = window.__input[type];
  const k = Object.keys(window.__painted).map(Number).filter((v) => v >= i.version).sort((a, b) => a - b)[0];
  const request = performance.getEntriesByType("resource").find((e) => e.name.includes("/api/") && e.fetchStart >= i.at);
  return [Math.max(0, window.__painted[k] - i.at), request ? request.fetchStart - i.at : 0,
          request ? request.responseEnd - request.fetchStart : 0]; }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "digitrecognizer.cli", "serve", "--port", str(port), "--db", str(db)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def static_server(folder: Path):
    """The folder on a free port, as `python -m http.server -d FOLDER` serves it."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()),
                                             functools.partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


@contextlib.contextmanager
def served_page(site: Path | None):
    if site is not None:
        with static_server(site) as url:
            yield url
        return
    with tempfile.TemporaryDirectory() as tmp:
        server, url = start_server(Path(tmp) / "feedback.db")
        try:
            yield url
        finally:
            server.terminate()
            server.wait(timeout=10)


def points(page, stroke):
    pad = page.get_by_test_id("pad").bounding_box()
    out = []
    for (x0, y0), (x1, y1) in zip(stroke, stroke[1:]):   # 6 samples per segment, like a hand at ~60 Hz
        out += [(pad["x"] + (x0 + (x1 - x0) * t / 6) * pad["width"], pad["y"] + (y0 + (y1 - y0) * t / 6) * pad["height"])
                for t in range(1, 7)]
    return [(pad["x"] + stroke[0][0] * pad["width"], pad["y"] + stroke[0][1] * pad["height"])] + out


class Mouse:
    def __init__(self, page):
        self.page = page

    def down(self, x, y):
        self.page.mouse.move(x, y)
        self.page.mouse.down()

    def move(self, x, y):
        self.page.mouse.move(x, y)

    def up(self, x, y):
        self.page.mouse.up()


class Touch:
    def __init__(self, page):
        self.page, self.cdp = page, page.context.new_cdp_session(page)

    def _send(self, kind, x=None, y=None):
        touch_points = [] if x is None else [{"x": x, "y": y}]
        self.cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": touch_points})

    def down(self, x, y):
        self._send("touchStart", x, y)

    def move(self, x, y):
        self._send("touchMove", x, y)

    def up(self, x, y):
        self._send("touchEnd")


def draw(page, device, strokes, hold_after=None):
    """Draws `strokes`; with hold_after=k the first stroke stops after k samples with the pen down."""
    for stroke in strokes:
        pts = points(page, stroke)
        device.down(*pts[0])
        for n, p in enumerate(pts[1:], 1):
            device.move(*p)
            page.wait_for_timeout(16)
            if hold_after == n:
                return
        device.up(*pts[-1])


def wait_and_read(page, event_type) -> list[float]:
    version = page.evaluate(f"window.__input['{event_type}'].version")
    page.wait_for_function(WAIT_JS, arg=version, timeout=20_000)
    return page.evaluate(LATENCY_JS, event_type)


def measure(browser, url, runs) -> dict[str, list[float]]:
    results = {name: [] for name in GOALS_MS}
    for name, touch in (("mouse-up -> answer", False), ("touch-end -> answer", True), ("pen still -> answer", False)):
        context = browser.new_context(viewport={"width": 1280, "height": 800}, has_touch=touch)
        context.add_init_script(TIMING_SCRIPT)
        page = context.new_page()
        page.goto(url)
        device = Touch(page) if touch else Mouse(page)
        draw(page, device, DIGITS[0])   # warm-up: the first answer includes the page's first-use costs
        page.wait_for_timeout(300)
        for run in range(runs):
            page.keyboard.press("Escape")
            page.evaluate("performance.clearResourceTimings()")
            strokes = DIGITS[run % len(DIGITS)]
            if name == "pen still -> answer":
                draw(page, device, strokes[:1], hold_after=8)
                results[name].append(wait_and_read(page, "pointermove"))
                device.up(0, 0)
            else:
                draw(page, device, strokes)
                results[name].append(wait_and_read(page, "pointerup"))
            page.wait_for_timeout(150)
        context.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--site", type=Path, help="measure the static site in this folder (digitrecognizer build-site)")
    args = parser.parse_args()
    goals = SITE_GOALS_MS if args.site else GOALS_MS
    with served_page(args.site) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        results = measure(browser, url, args.runs)
        browser.close()
    where = "the static site, the model in the page" if args.site else "the served page"
    print(f"page latency of {where} in headless Chromium, median of {args.runs} (min-max); of which: input -> "
          "request sent, and the request's round trip (medians)")
    summary = {}
    for name, runs in results.items():
        values, sent, trip = ([r[k] for r in runs] for k in range(3))
        median = statistics.median(values)
        summary[name] = {"median_ms": round(median, 1), "min_ms": round(min(values), 1), "max_ms": round(max(values), 1),
                         "goal_ms": goals[name], "request_sent_ms": round(statistics.median(sent), 1),
                         "round_trip_ms": round(statistics.median(trip), 1), "runs_ms": [[round(v, 1) for v in r] for r in runs]}
        print(f"  {name:22s} {median:6.0f} ms  ({min(values):.0f}-{max(values):.0f})  goal <= {goals[name]} ms"
              f"  {'ok' if median <= goals[name] else 'MISSED'}   sent after {statistics.median(sent):.0f} ms,"
              f" round trip {statistics.median(trip):.0f} ms")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
