"""The REST API through FastAPI's test client: every endpoint, every kind of bad input, concurrent feedback.
Every test runs with the feedback store on SQLite and on PostgreSQL (`feedback_db`, tests/conftest.py)."""

import base64
import io
import os
import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from PIL import Image

from digitrecognizer import synth
from digitrecognizer.store import FeedbackStore, drawing_png
from digitrecognizer.web.app import Settings, create_app

LOCAL = "http://localhost"  # the server answers to the localhost names unless told others


@pytest.fixture()
def client(model_dir, feedback_db):
    app = create_app(Settings(model=model_dir, db=feedback_db))
    with TestClient(app, base_url=LOCAL) as c:
        yield c


@pytest.fixture(scope="module")
def digit_png(mnist_test):
    return synth.render_digit(mnist_test.images[0], np.random.default_rng(0), "white_on_black"), int(mnist_test.labels[0])


def png_bytes(image: Image.Image, fmt="PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def assert_error(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code and len(body["error"]["message"]) > 10
    return body


# -- the happy paths ------------------------------------------------------------------------------

def test_predict_a_drawn_digit_as_multipart(client, digit_png):
    png, label = digit_png
    r = client.post("/api/predict", files={"image": ("d.png", png, "image/png")})
    assert r.status_code == 200
    body = r.json()
    assert body["digit"] == label and body["is_digit"] and not body["blank"]
    assert len(body["probabilities"]) == 10 and abs(sum(body["probabilities"]) - 1) < 1e-3
    assert body["confidence"] == max(body["probabilities"])
    seen = Image.open(io.BytesIO(base64.b64decode(body["input28"].split(",", 1)[1])))
    assert seen.size == (28, 28)
    assert body["model_version"] and body["elapsed_ms"] > 0


def test_predict_accepts_a_json_data_url_and_bare_base64(client, digit_png):
    png, label = digit_png
    encoded = base64.b64encode(png).decode()
    for image in ("data:image/png;base64," + encoded, encoded):
        r = client.post("/api/predict", json={"image": image})
        assert r.status_code == 200 and r.json()["digit"] == label


def test_blank_canvas_gives_no_digit_and_no_guess(client):
    r = client.post("/api/predict", files={"image": ("b.png", png_bytes(Image.new("L", (280, 280), 0)), "image/png")})
    body = r.json()
    assert r.status_code == 200 and body["digit"] is None and body["blank"] and not body["is_digit"]


def test_read_returns_the_number_and_a_box_per_digit(client, mnist_test):
    number = synth.render_number(list(mnist_test.images[:4]), list(mnist_test.labels[:4]), np.random.default_rng(1))
    r = client.post("/api/read", files={"image": ("n.png", number.png, "image/png")})
    body = r.json()
    assert r.status_code == 200 and body["text"] == number.text
    width = body["input_width"]
    assert [len(d["box"]) for d in body["digits"]] == [4] * 4
    assert all(0 <= d["box"][0] < d["box"][2] <= width for d in body["digits"])


def test_health_and_model_card(client):
    assert client.get("/api/health").json()["status"] == "ok"
    card = client.get("/api/model").json()
    assert card["metrics"]["test"]["accuracy"] > 0.99 and "temperature" in card and "history" not in card["training"]


def test_page_and_its_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and 'data-testid="pad"' in page.text
    for name in ("app.js", "style.css", "favicon.svg"):
        assert client.get(f"/static/{name}").status_code == 200


def test_openapi_documents_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/predict", "/api/read", "/api/feedback", "/api/health", "/api/model"} <= set(paths)
    assert {"multipart/form-data", "application/json"} <= set(paths["/api/predict"]["post"]["requestBody"]["content"])


def test_security_headers_on_every_response(client, digit_png):
    for response in (client.get("/"), client.get("/api/health"), client.post("/api/predict", json={"image": "x"}),
                     client.get("/nope")):
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"


def test_page_has_no_inline_script_or_style(client):
    page = client.get("/").text
    assert "<script>" not in page and "<script src=" in page and "style=" not in page and "onclick" not in page


# -- feedback --------------------------------------------------------------------------------------

def test_feedback_is_stored_with_the_drawing_and_what_the_model_saw(client, digit_png, feedback_db):
    png, label = digit_png
    r = client.post("/api/feedback", files={"image": ("d.png", png, "image/png")},
                    data={"predicted": str(label), "correct": "3"})
    assert r.status_code == 201 and r.json()["stored"]
    with FeedbackStore(feedback_db) as store:
        record = store.get(r.json()["id"])
    assert record.correct == 3 and record.predicted == label and record.image == drawing_png(png)
    assert record.input28.shape == (28, 28) and record.input28.max() > 200
    again = client.post("/api/predict", json={"image": base64.b64encode(record.image).decode()}).json()
    assert again["digit"] == label  # the kept copy can be preprocessed again


def test_feedback_as_json(client, digit_png):
    png, _ = digit_png
    r = client.post("/api/feedback", json={"image": base64.b64encode(png).decode(), "correct": 7, "predicted": None})
    assert r.status_code == 201


@pytest.mark.parametrize("correct", ["10", "-1", "seven", "3.5", "", "1e400", "Infinity", "9" * 5000])
def test_feedback_label_outside_0_to_9_is_refused_and_nothing_stored(client, digit_png, feedback_db, correct):
    png, _ = digit_png
    r = client.post("/api/feedback", files={"image": ("d.png", png, "image/png")}, data={"correct": correct})
    assert_error(r, 422, "invalid_label")
    with FeedbackStore(feedback_db) as store:
        assert store.count() == 0


def test_concurrent_feedback_is_all_stored_with_distinct_ids(model_dir, digit_png, feedback_db):
    png, _ = digit_png
    app = create_app(Settings(model=model_dir, db=feedback_db, feedback_rate="1000/minute"))

    def post(k):
        return client.post("/api/feedback", files={"image": ("d.png", png, "image/png")}, data={"correct": str(k % 10)})

    with TestClient(app, base_url=LOCAL) as client, ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(post, range(50)))
    assert all(r.status_code == 201 for r in responses)
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 50
    with FeedbackStore(feedback_db) as store:
        assert store.count() == 50


def test_read_only_database_gives_503_for_feedback_while_predictions_still_work(model_dir, feedback_db, read_only,
                                                                               digit_png):
    png, label = digit_png
    with read_only(feedback_db) as url, TestClient(create_app(Settings(model=model_dir, db=url)), base_url=LOCAL) as client:
        r = client.post("/api/feedback", files={"image": ("d.png", png, "image/png")}, data={"correct": "1"})
        assert_error(r, 503, "store_unavailable")
        assert client.post("/api/predict", files={"image": ("d.png", png, "image/png")}).json()["digit"] == label


def test_a_database_that_comes_up_after_the_app_is_used_without_a_restart(model_dir, postgres_server, digit_png):
    # Replicas often start before their database server does, or outlive an outage of it.
    png, _ = digit_png
    server = sa.make_url(postgres_server)
    name = f"late_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server.set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    late_db = server.set(database=name).render_as_string(hide_password=False)
    try:
        with TestClient(create_app(Settings(model=model_dir, db=late_db, store_retry_s=0)), base_url=LOCAL) as client:
            r = client.post("/api/feedback", files={"image": ("d.png", png, "image/png")}, data={"correct": "1"})
            assert_error(r, 503, "store_unavailable")
            with admin.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
            r = client.post("/api/feedback", files={"image": ("d.png", png, "image/png")}, data={"correct": "1"})
            assert r.status_code == 201, r.text
        with FeedbackStore(late_db) as store:
            assert store.get(r.json()["id"]).correct == 1
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


# -- bad input -------------------------------------------------------------------------------------

def test_missing_image_field(client):
    assert_error(client.post("/api/predict", files={"picture": ("d.png", b"x", "image/png")}), 422, "missing_field")
    assert_error(client.post("/api/predict", json={"img": "abc"}), 422, "missing_field")


def test_wrong_content_type(client):
    assert_error(client.post("/api/predict", content=b"hello", headers={"content-type": "text/plain"}),
                 415, "unsupported_content_type")


@pytest.mark.parametrize("data, status, code", [
    (b"", 400, "bad_image"),
    (b"definitely not an image", 415, "not_an_image"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", 415, "not_an_image"),
    (os.urandom(3000), 415, "not_an_image"),
])
def test_not_an_image(client, data, status, code):
    assert_error(client.post("/api/predict", files={"image": ("x.png", data, "image/png")}), status, code)


def test_corrupt_png(client, digit_png):
    png, _ = digit_png
    assert_error(client.post("/api/predict", files={"image": ("t.png", png[: len(png) // 2], "image/png")}),
                 400, "bad_image")


def test_bad_base64_and_bad_json(client):
    assert_error(client.post("/api/predict", json={"image": "data:image/png;base64,@@@"}), 400, "bad_base64")
    assert_error(client.post("/api/predict", content=b"{not json", headers={"content-type": "application/json"}),
                 400, "bad_json")


def test_pixel_bomb_is_refused_with_413(client):
    bomb = png_bytes(Image.new("1", (5000, 5000), 0), optimize=True)  # ~3 kB that would decode to 25 MP
    assert len(bomb) < 100_000
    assert_error(client.post("/api/predict", files={"image": ("b.png", bomb, "image/png")}), 413, "too_large")


def test_body_over_the_limit_is_refused_with_413(client):
    big = b"\0" * 6_000_000
    assert_error(client.post("/api/predict", files={"image": ("big.png", big, "image/png")}), 413, "too_large")


def test_animated_gif_and_tiff_are_refused(client):
    frames = [Image.new("L", (40, 40), c) for c in (0, 255)]
    gif = png_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])
    tiff = png_bytes(Image.new("L", (40, 40), 255), "TIFF")
    for data in (gif, tiff):
        assert_error(client.post("/api/predict", files={"image": ("x", data, "image/png")}), 415, "not_an_image")


def test_unknown_route_and_method_get_json_errors(client):
    assert_error(client.get("/api/nothing"), 404, "not_found")
    assert_error(client.get("/api/predict"), 405, "method_not_allowed")


def test_server_keeps_serving_after_bad_input(client, digit_png):
    png, label = digit_png
    for data in (b"", b"junk", png[:100]):
        client.post("/api/predict", files={"image": ("x.png", data, "image/png")})
    assert client.post("/api/predict", files={"image": ("d.png", png, "image/png")}).json()["digit"] == label


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_docs_work_offline_from_the_package(client, page):
    html = client.get(page).text
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
    assert assets, "the docs page loads its viewer"
    for url in assets:
        assert url.startswith("/"), f"{page} loads {url} from another site"
        response = client.get(url)
        assert response.status_code == 200 and len(response.content) > 10_000
    csp = client.get(page).headers["content-security-policy"]
    assert "http" not in csp


# -- hostile input: each of these once answered 500, or was accepted when it should not have been ----------

ENDPOINTS = ["/api/predict", "/api/read", "/api/feedback"]


def sixteen_bit_scan(mnist_test, side=2048) -> bytes:
    digit = np.asarray(Image.open(io.BytesIO(synth.render_digit(mnist_test.images[0], np.random.default_rng(0),
                                                                "black_on_white"))).convert("L"))
    scan = Image.fromarray(np.asarray(Image.fromarray(digit).resize((side, side))).astype(np.uint16) * 257)
    assert scan.mode == "I;16"
    return png_bytes(scan)


def test_a_16_bit_scan_of_2048_px_is_read(client, mnist_test):
    scan = sixteen_bit_scan(mnist_test)
    r = client.post("/api/predict", files={"image": ("scan.png", scan, "image/png")})
    assert r.status_code == 200 and r.json()["digit"] == int(mnist_test.labels[0])
    r = client.post("/api/read", files={"image": ("scan.png", scan, "image/png")})
    assert r.status_code == 200 and r.json()["text"] == str(mnist_test.labels[0])


@pytest.mark.parametrize("label", ["Infinity", "-Infinity", "NaN", "1e400", '"7"', "7.0", "true", "[7]", "{}"])
def test_a_json_label_must_be_an_integer(client, digit_png, label):
    png, _ = digit_png
    body = f'{{"image": "{base64.b64encode(png).decode()}", "correct": {label}}}'
    r = client.post("/api/feedback", content=body, headers={"content-type": "application/json"})
    assert_error(r, 422, "invalid_label")
    body = f'{{"image": "{base64.b64encode(png).decode()}", "correct": 1, "predicted": {label}}}'
    r = client.post("/api/feedback", content=body, headers={"content-type": "application/json"})
    assert_error(r, 422, "invalid_label")


def test_an_empty_predicted_field_is_refused_not_taken_for_none(client, digit_png, feedback_db):
    png, _ = digit_png
    r = client.post("/api/feedback", files={"image": ("d.png", png, "image/png")},
                    data={"correct": "7", "predicted": ""})
    assert_error(r, 422, "invalid_label")
    with FeedbackStore(feedback_db) as store:
        assert store.count() == 0


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("body", ["[" * 1000 + "]" * 1000, '{"image": "x", "deep": ' + "[" * 1000 + "]" * 1000 + "}",
                                  '{"image": "x", "correct": ' + "9" * 5000 + "}", '{"image": "x"'])
def test_json_too_deep_too_long_or_unfinished_is_a_400(client, path, body):
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    assert_error(r, 400, "bad_json")


def test_a_number_of_too_many_marks_is_refused_with_422(client):
    comb = np.full((512, 512), 255, np.uint8)
    comb[128:384, ::4] = 0  # 128 bars, each its own mark: a 1 kB PNG that once took a second to read
    png = png_bytes(Image.fromarray(comb), optimize=True)
    assert len(png) < 2_000
    r = client.post("/api/read", files={"image": ("comb.png", png, "image/png")})
    assert "128 separate marks" in assert_error(r, 422, "too_many_marks")["error"]["message"]


def test_health_answers_head_probes(client):
    r = client.head("/api/health")
    assert r.status_code == 200 and r.content == b""


def test_openapi_says_labels_are_integers_0_to_9_in_both_forms(client):
    body = client.get("/openapi.json").json()["paths"]["/api/feedback"]["post"]["requestBody"]["content"]
    for content_type in ("multipart/form-data", "application/json"):
        schema = body[content_type]["schema"]
        assert set(schema["required"]) == {"image", "correct"}
        assert {k: schema["properties"]["correct"][k] for k in ("type", "minimum", "maximum")} == {
            "type": "integer", "minimum": 0, "maximum": 9}
    responses = client.get("/openapi.json").json()["paths"]["/api/feedback"]["post"]["responses"]
    assert {"403", "413", "422", "429", "503", "507"} <= set(responses)


# -- who may write ---------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{"origin": "http://evil.example"}, {"origin": "null"},
                                     {"origin": "http://localhost:8080"}, {"sec-fetch-site": "cross-site"},
                                     {"sec-fetch-site": "same-site", "origin": "http://localhost"}])
def test_writes_from_other_sites_pages_are_refused(client, digit_png, feedback_db, headers):
    png, _ = digit_png
    r = client.post("/api/feedback", files={"image": ("d.png", png, "image/png")}, data={"correct": "1"},
                    headers=headers)
    assert_error(r, 403, "cross_site")
    with FeedbackStore(feedback_db) as store:
        assert store.count() == 0


def test_the_page_itself_and_clients_that_are_not_browsers_may_write(client, digit_png):
    png, _ = digit_png
    for headers in ({"origin": "http://localhost", "sec-fetch-site": "same-origin"}, {}):
        r = client.post("/api/feedback", files={"image": ("d.png", png, "image/png")}, data={"correct": "1"},
                        headers=headers)
        assert r.status_code == 201, r.text


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "localhost.evil.example", "", "[::1"])
def test_a_host_name_the_server_does_not_answer_to_is_refused(client, host):
    # DNS rebinding: a page at evil.example whose name now points at 127.0.0.1 reaches the server with its own Host.
    for path in ("/", "/api/health", "/api/model"):
        assert_error(client.get(path, headers={"host": host}), 400, "unknown_host")


def test_listed_host_names_and_wildcards_are_answered(model_dir):
    app = create_app(Settings(model=model_dir, db="sqlite:///:memory:", allowed_hosts=["digits.example.org",
                                                                                        "*.example.net"]))
    with TestClient(app, base_url="http://digits.example.org") as client:
        assert client.get("/api/health").status_code == 200
        assert client.get("/api/health", headers={"host": "a.example.net:8080"}).status_code == 200
        assert_error(client.get("/api/health", headers={"host": "localhost"}), 400, "unknown_host")


def test_corrections_beyond_the_rate_limit_get_429_with_retry_after(model_dir, digit_png, feedback_db):
    png, _ = digit_png
    app = create_app(Settings(model=model_dir, db=feedback_db, feedback_rate="3/minute"))
    with TestClient(app, base_url=LOCAL) as client:
        for _ in range(3):  # a mistyped label is refused without using up the client's corrections
            assert_error(client.post("/api/feedback", files={"image": ("d.png", png, "image/png")},
                                     data={"correct": "x"}), 422, "invalid_label")
        statuses = [client.post("/api/feedback", files={"image": ("d.png", png, "image/png")},
                                data={"correct": "1"}) for _ in range(5)]
        assert [r.status_code for r in statuses] == [201, 201, 201, 429, 429]
        assert_error(statuses[-1], 429, "too_many_corrections")
        assert 1 <= int(statuses[-1].headers["retry-after"]) <= 60
        assert client.post("/api/predict", files={"image": ("d.png", png, "image/png")}).status_code == 200
    with FeedbackStore(feedback_db) as store:
        assert store.count() == 3


def test_a_full_store_answers_507_and_predictions_carry_on(model_dir, digit_png, feedback_db):
    from digitrecognizer.store import Quota

    png, _ = digit_png
    app = create_app(Settings(model=model_dir, db=feedback_db, feedback_quota=Quota(max_rows=2)))
    with TestClient(app, base_url=LOCAL) as client:
        statuses = [client.post("/api/feedback", files={"image": ("d.png", png, "image/png")},
                                data={"correct": "1"}).status_code for _ in range(2)]
        r = client.post("/api/feedback", files={"image": ("d.png", png, "image/png")}, data={"correct": "1"})
        assert statuses == [201, 201]
        assert "quota" in assert_error(r, 507, "quota_reached")["error"]["message"]
        assert client.post("/api/predict", files={"image": ("d.png", png, "image/png")}).status_code == 200
