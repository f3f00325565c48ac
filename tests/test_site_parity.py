"""The static site's pipeline against the server's, on the same 1,000 drawings: the browser's preprocessing
(web/static/preprocess.js) gives the 28x28 bytes `preprocess.to_mnist` gives, and no drawing where the server
sees none; the model in the page (browser-answers.js on ONNX Runtime Web) gives the digit or refusal
`Recognizer.predict` gives. Runs in headless Chromium, on the site `build-site` writes, served by http.server."""

import base64
import functools
import http.server
import io
import threading
import time
import zlib
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from digitrecognizer import Recognizer, preprocess, site, styles, synth, writers

pytestmark = pytest.mark.browser
BLANK_PAGE = b"<!doctype html><meta charset=utf-8><title>preprocess.js under test</title>"
LOCAL_HOSTS = ("127.0.0.1", "localhost")
N_DRAWINGS = 1000
BATCH = 40  # drawings per page.evaluate: a few hundred kB of compressed pixels
STYLE_NAMES = list(styles.STYLES)

# In the page: each drawing arrives as base64 of its zlib-compressed RGBA bytes, becomes an ImageData-like
# object and goes through window.preprocessCall; the typed array it returns goes back as base64, null as null.
RUN_BATCH = """async (batch) => {
  const unpack = async (b64) => {
    const packed = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const stream = new Blob([packed]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8ClampedArray(await new Response(stream).arrayBuffer());
  };
  const pack = (bytes) => {
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(text);
  };
  const out = [];
  for (const { rgba, width, height } of batch) {
    const result = await window.preprocessCall({ data: await unpack(rgba), width, height });
    out.push(result === null ? null : pack(new Uint8Array(result.buffer, result.byteOffset, result.byteLength)));
  }
  return out;
}"""


class SiteFolder(http.server.SimpleHTTPRequestHandler):
    """The built site as a static host serves it, plus an empty page to import its modules into."""

    def do_GET(self):
        if self.path != "/blank.html":
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(BLANK_PAGE)))
        self.end_headers()
        self.wfile.write(BLANK_PAGE)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def static_url(tmp_path_factory, model_dir):
    built = site.build_site(tmp_path_factory.mktemp("site") / "site", model_dir)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SiteFolder, directory=str(built)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def foreign() -> list[str]:
    """The page's requests for any host but the static server (each one aborted): the module must work
    offline, from its own folder."""
    return []


@pytest.fixture(scope="module")
def page(browser, static_url, foreign):
    """A blank page from the site's server, with preprocess.js imported as window.preprocess and the in-page
    model's answers as window.answers."""
    page = browser.new_page()

    def gate(route):
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    page.route("**/*", gate)
    page.goto(static_url + "/blank.html")
    page.evaluate("async () => { window.preprocess = await import('/static/preprocess.js');"
                  " window.answers = await import('/static/browser-answers.js'); }")
    yield page
    page.close()


def run_in_page(page, call: str, drawings: list[np.ndarray]) -> list[bytes | None]:
    """`call`, a JS function of one ImageData-like object, run on each drawing in the page."""
    page.evaluate(f"() => {{ window.preprocessCall = {call}; }}")
    out = []
    for start in range(0, len(drawings), BATCH):
        batch = [{"rgba": base64.b64encode(zlib.compress(d.tobytes(), 1)).decode(), "width": d.shape[1],
                  "height": d.shape[0]} for d in drawings[start : start + BATCH]]
        out += [None if r is None else base64.b64decode(r) for r in page.evaluate(RUN_BATCH, batch)]
    return out


# -- drawings like the pad's ----------------------------------------------------------------------------------


def rgba(image: Image.Image) -> np.ndarray:
    """What the page's getImageData gives for a canvas showing this image."""
    return np.ascontiguousarray(np.asarray(image.convert("RGBA")))


def stroke_digit(rng, canvas_px=280, side=(0.35, 0.85), pen=(0.05, 0.25)) -> np.ndarray:
    """Ink of a hand-drawn digit (one of the synthetic writing styles) on a square canvas."""
    name = STYLE_NAMES[rng.integers(len(STYLE_NAMES))]
    return styles.render_style(name, rng, writers.CanvasRendering(canvas_px=canvas_px, side=side, pen=pen))


def line(points, size, pen_px) -> np.ndarray:
    return writers.stroke_ink([np.asarray(points, np.float32)], size, pen_px)


def shifted(ink: np.ndarray, rng) -> np.ndarray:
    """The drawing pushed partly off the canvas, as a digit drawn into a corner is."""
    h, w = ink.shape
    big = np.zeros((3 * h, 3 * w), np.float32)
    big[h : 2 * h, w : 2 * w] = ink
    dy, dx = rng.integers(-h // 3, h // 3 + 1, 2)
    return big[h + dy : 2 * h + dy, w + dx : 2 * w + dx]


def build_drawings(mnist_images: np.ndarray, n: int = N_DRAWINGS, seed: int = 0) -> list[np.ndarray]:
    """RGBA canvases (mostly 280x280, some 560x210 and 640x240) drawn the many ways the pad sees: MNIST digits redrawn with
    a canvas pen, stroke digits at many pen widths and sizes, on every canvas style; plus the edge cases the
    preprocessing branches on: thick pens on small digits and fine pens on big ones (stroke-width correction),
    specks next to digits, strokes along the canvas edge (uneven-background branch), wide number canvases
    (downscaled to 512 px a side), and blanks, dots and faint marks (no drawing)."""
    rng = np.random.default_rng(seed)
    style = lambda: synth.CANVAS_STYLES[rng.integers(len(synth.CANVAS_STYLES))]  # noqa: E731
    on_canvas = lambda ink: rgba(synth.compose(ink, style(), rng))  # noqa: E731
    out = []
    # Nothing to read: blank canvases of each style, dots, specks, faint or tiny marks.
    for s in synth.CANVAS_STYLES:
        out.append(rgba(synth.compose(np.zeros((280, 280), np.float32), s, rng)))
    for _ in range(16):
        x, y = rng.uniform(10, 270, 2)
        dot = line([[x, y]], (280, 280), rng.uniform(1, 5))
        for _ in range(rng.integers(0, 3)):
            dot = np.maximum(dot, line([rng.uniform(10, 270, 2)], (280, 280), rng.uniform(1, 3)))
        out.append(on_canvas(dot))
    for _ in range(8):
        out.append(on_canvas(stroke_digit(rng) * rng.uniform(0.05, 0.2)))  # too faint: peak under 0.15 or near
    for _ in range(8):
        out.append(on_canvas(stroke_digit(rng, side=(0.01, 0.04), pen=(0.1, 0.4))))  # a few pixels
    # MNIST digits redrawn on a canvas (synth's own renderer: random size, place and pen, each canvas style).
    for i in rng.choice(len(mnist_images), 300, replace=False):
        out.append(rgba(Image.open(io.BytesIO(synth.render_digit(mnist_images[i], rng, style())))))
    # Stroke digits: the pad's everyday input, at many sizes and pens.
    for _ in range(330):
        out.append(on_canvas(stroke_digit(rng, side=(0.15, 0.95), pen=(0.03, 0.3))))
    for _ in range(60):  # thick pen, small digit: eroded
        out.append(on_canvas(stroke_digit(rng, side=(0.09, 0.25), pen=(0.25, 0.5))))
    for _ in range(40):  # fine pen, big digit: dilated
        out.append(on_canvas(stroke_digit(rng, side=(0.6, 0.95), pen=(0.005, 0.03))))
    for _ in range(40):  # specks and stray dots beside the digit
        ink = stroke_digit(rng)
        for _ in range(rng.integers(1, 6)):
            ink = np.maximum(ink, line([rng.uniform(0, 280, 2)], (280, 280), rng.uniform(0.5, 4)))
        out.append(on_canvas(ink))
    for _ in range(40):  # partly off the canvas
        out.append(on_canvas(shifted(stroke_digit(rng, side=(0.5, 0.95)), rng)))
    for _ in range(25):  # strokes along the canvas edge: the border is no longer flat
        ink = stroke_digit(rng, side=(0.3, 0.7))
        for _ in range(rng.integers(1, 4)):
            near, far = rng.uniform(0, 6), rng.uniform(274, 280)
            a, b = [([near, 0], [near, 280]), ([far, 0], [far, 280]), ([0, near], [280, near]),
                    ([0, far], [280, far])][rng.integers(4)]
            ink = np.maximum(ink, line([a, b], (280, 280), rng.uniform(4, 20)))
        out.append(on_canvas(ink))
    while len(out) < n:  # wide number canvases (the pad's is 640x240), one to three digits side by side
        width, height = (640, 240) if len(out) % 2 else (560, 210)
        canvas = np.zeros((height, width), np.float32)
        for _ in range(rng.integers(1, 4)):
            ink = stroke_digit(rng, canvas_px=height, side=(0.4, 0.9), pen=(0.04, 0.25))
            x = int(rng.integers(0, width - height))
            canvas[:, x : x + height] = np.maximum(canvas[:, x : x + height], ink)
        out.append(on_canvas(canvas))
    return out[:n]


@pytest.fixture(scope="module")
def drawings(mnist_test) -> list[np.ndarray]:
    return build_drawings(mnist_test.images)


# -- the comparisons ------------------------------------------------------------------------------------------


def test_to_mnist_in_the_browser_matches_the_server(page, foreign, drawings):
    started = time.perf_counter()
    in_python = [preprocess.to_mnist(d) for d in drawings]
    python_s = time.perf_counter() - started
    started = time.perf_counter()
    in_browser = run_in_page(page, "window.preprocess.toMnist", drawings)
    browser_s = time.perf_counter() - started

    disagree = [i for i, (py, js) in enumerate(zip(in_python, in_browser)) if (py is None) != (js is None)]
    pairs = [(py.astype(int).ravel(), np.frombuffer(js, np.uint8).astype(int))
             for py, js in zip(in_python, in_browser) if py is not None and js is not None]
    diff = np.abs(np.concatenate([js - py for py, js in pairs]))
    identical, within_one = float((diff == 0).mean()), float((diff <= 1).mean())
    nulls = sum(py is None for py in in_python)
    print(f"\n{len(drawings)} drawings ({nulls} without a drawing in Python): null decision agrees on "
          f"{len(drawings) - len(disagree)}/{len(drawings)}; of {diff.size} pixels {identical:.4%} identical, "
          f"{within_one:.4%} within 1 grey level, max difference {diff.max()}; "
          f"digits identical: {sum(np.array_equal(py, js) for py, js in pairs)}/{len(pairs)}; "
          f"Python {python_s:.1f} s, browser {browser_s:.1f} s")
    assert not foreign, f"preprocess.js reached outside its own server: {foreign}"
    assert not disagree, "Python and the browser disagree on whether there is a drawing: " + ", ".join(
        f"#{i} ({'None' if in_python[i] is None else 'a digit'} in Python)" for i in disagree[:20])
    assert nulls >= 20 and len(pairs) >= 900, "the drawings no longer exercise both outcomes"
    assert within_one >= 0.99, f"only {within_one:.4%} of pixels within 1 grey level (max difference {diff.max()})"


def test_luminance_in_the_browser_matches_decoding(page, foreign, drawings):
    """The first step on its own, on canvases of each size and style: the gray map the ink is found in."""
    # Blanks of each style, MNIST redrawings (every style: alpha, colour), and number canvases (downscaled).
    picked = drawings[:4] + drawings[60:68] + drawings[-4:]
    in_browser = run_in_page(page, "(input) => window.preprocess.luminance(input).data", picked)
    for drawing, js in zip(picked, in_browser):
        gray = preprocess.decode(drawing)[0]
        assert np.array_equal(np.frombuffer(js, np.float32).reshape(gray.shape), gray)
    assert not foreign


# The answer for each drawing, in the page: 255 when blank, 10 when refused, else the digit.
ANSWER_CALL = """async (input) => { const x = window.preprocess.toMnist(input);
  if (x === null) return new Uint8Array([255]);
  const a = await window.answers.answerFor(x);
  return new Uint8Array([a.is_digit ? a.digit : 10]); }"""


def test_the_model_in_the_page_gives_the_servers_digit_or_refusal(page, foreign, drawings, model_dir):
    rec = Recognizer(model_dir)
    expected = [255 if p.blank else p.digit if p.is_digit else 10 for p in rec.predict_many(drawings)]
    got = [js[0] for js in run_in_page(page, ANSWER_CALL, drawings)]
    same = sum(a == b for a, b in zip(expected, got))
    print(f"\nthe same digit, refusal or blank for {same}/{len(drawings)} drawings")
    assert not foreign
    assert same >= 0.999 * len(drawings), [(i, a, b) for i, (a, b) in enumerate(zip(expected, got)) if a != b][:10]
