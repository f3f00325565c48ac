"""The static site (`digitrecognizer build-site`) in real headless Chromium, served by Python's http.server as
any static host would: digits drawn with the mouse are read by the model in the page, nothing is asked of any
other host, the page keeps working once the server is gone, and its answers are the server's."""

import functools
import http.server
import json
import re
import threading
from urllib.parse import urlsplit

import numpy as np
import pytest

from digitrecognizer import site, styles
from digitrecognizer.card import load_card

from conftest import open_app
from playwright.sync_api import expect

pytestmark = pytest.mark.browser
# One way of writing each digit, as strokes in a unit box (the stroke generator's plain styles, unslanted).
DIGIT_STYLES = {0: "plain 0", 1: "1 with flag", 2: "plain 2", 3: "plain 3", 4: "open-top 4", 5: "plain 5",
                6: "open 6", 7: "crossed 7", 8: "plain 8", 9: "9 with straight stem"}


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def built(tmp_path_factory, model_dir):
    out = site.build_site(tmp_path_factory.mktemp("site") / "site", model_dir)
    return out


@pytest.fixture(scope="module")
def static_host(built):
    """`python -m http.server -d site`, on a free port; `.shutdown()` stops it mid-test."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(built)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def open_site(browser, url):
    """The site's page, with every request to another host refused and recorded."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    outside = []

    def only_this_host(route):
        if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost") or route.request.url.startswith("data:"):
            return route.continue_()
        outside.append(route.request.url)
        return route.abort()

    context.route("**/*", only_this_host)
    page = context.new_page()
    open_app(page, url)
    return context, page, outside


def draw(page, strokes):
    pad = page.get_by_test_id("pad").bounding_box()
    for stroke in strokes:
        points = [(pad["x"] + (0.2 + 0.6 * float(x)) * pad["width"], pad["y"] + (0.15 + 0.7 * float(y)) * pad["height"])
                  for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for p in points[1::2]:
            page.mouse.move(*p, steps=2)
        page.mouse.move(*points[-1])
        page.mouse.up()


def test_the_site_is_one_folder_with_the_model_ort_web_and_space_metadata(built, model_dir):
    card, _ = load_card(model_dir)
    assert json.loads((built / "model" / "card.json").read_text())["version"] == card.version
    assert {p.name for p in (built / "static" / "ort").iterdir()} == set(site.ORT_WEB_FILES)
    assert "sdk: static" in (built / "README.md").read_text()
    index = (built / "index.html").read_text()
    assert 'src="static/app.js"' in index and 'src="/' not in index and 'href="/' not in index  # no absolute paths
    assert "browserAnswers" in (built / "static" / "source.js").read_text()


def test_drawn_digits_are_read_in_the_page_with_no_other_host_and_after_the_server_stops(browser, static_host):
    server, url = static_host
    context, page, outside = open_site(browser, url)
    rng = np.random.default_rng(0)
    for digit, style in DIGIT_STYLES.items():
        draw(page, styles.STYLES[style][1](rng))
        expect(page.get_by_test_id("prediction")).to_have_text(str(digit), timeout=20_000)
        expect(page.get_by_test_id("preview")).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
        page.keyboard.press("Escape")
    expect(page.get_by_test_id("source-note")).to_contain_text("full service")
    expect(page.get_by_test_id("mode-number")).to_be_hidden()
    server.shutdown()  # everything the page needs is loaded: it goes on without the server
    draw(page, styles.STYLES["plain 3"][1](rng))
    expect(page.get_by_test_id("prediction")).to_have_text("3", timeout=20_000)
    assert outside == []
    context.close()
