"""Faults and load against the real server: a SIGKILL loses no acknowledged correction, a full disk gives 503,
hostile uploads get a fast 4xx, a short burst of concurrent clients sees no error, and corrections posted at
once to two worker processes are each stored exactly once. Tests taking `feedback_db` run on SQLite and on
PostgreSQL."""

import io
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import event

from digitrecognizer import synth
from digitrecognizer.store import FeedbackStore, drawing_png
from digitrecognizer.web.app import Settings, create_app
from digitrecognizer.web.server import ServerLimits, uvicorn_options


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: Path, db: str | Path, workers: int = 1) -> tuple[subprocess.Popen, str]:
    port = free_port()
    # These clients all come from 127.0.0.1: the per-client rate limit (tested in test_api.py) is lifted.
    process = subprocess.Popen([sys.executable, "-m", "digitrecognizer.cli", "serve", "--port", str(port),
                                "--workers", str(workers), "--model", str(model_dir), "--db", str(db),
                                "--feedback-rate", "100000/minute"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # importing the model's libraries takes a minute on a busy machine
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    pytest.fail("server did not start")


def kill(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)  # the whole group: uvicorn's workers die with it, unwarned
    process.wait()


@pytest.fixture(scope="module")
def digit_png(mnist_test):
    return synth.render_digit(mnist_test.images[0], np.random.default_rng(0), "white_on_black")


def test_sigkill_while_clients_post_feedback_loses_no_acknowledged_write(model_dir, feedback_db, digit_png):
    db = feedback_db
    process, url = start_server(model_dir, db, workers=2)
    acknowledged: list[int] = []
    stop = threading.Event()

    def client(k: int) -> None:
        with httpx.Client(timeout=5) as c:
            while not stop.is_set():
                try:
                    r = c.post(url + "/api/feedback", files={"image": ("d.png", digit_png, "image/png")},
                               data={"correct": str(k)})
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 201:
                    acknowledged.append(r.json()["id"])

    threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 40 and time.monotonic() < deadline:
        time.sleep(0.02)
    kill(process)
    stop.set()
    for t in threads:
        t.join()
    assert len(acknowledged) >= 40

    if not db.startswith("postgresql://"):  # the SQLite file the killed workers were writing is intact
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    process, url = start_server(model_dir, db)  # restarts cleanly on the same database
    try:
        with FeedbackStore(db) as store:
            assert all(store.get(i) is not None for i in acknowledged)
        assert httpx.post(url + "/api/feedback", files={"image": ("d.png", digit_png, "image/png")},
                          data={"correct": "1"}).status_code == 201
    finally:
        kill(process)


def test_full_disk_gives_503_for_feedback_and_predictions_carry_on(model_dir, tmp_path, digit_png):
    app = create_app(Settings(model=model_dir, db=tmp_path / "full.db"))
    with TestClient(app, base_url="http://localhost") as client:
        engine = app.state.stores.store.engine
        pages = sqlite3.connect(tmp_path / "full.db").execute("PRAGMA page_count").fetchone()[0]

        @event.listens_for(engine, "connect")
        def disk_full(dbapi_conn, _):  # SQLite's own "database or disk is full" once the file may not grow
            dbapi_conn.execute(f"PRAGMA max_page_count = {pages}")

        engine.dispose()
        noise = io.BytesIO()  # a drawing whose kept copy (tens of kB) needs pages the file may not add
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8)).save(noise, "PNG")
        r = client.post("/api/feedback", files={"image": ("d.png", noise.getvalue(), "image/png")},
                        data={"correct": "2"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
        assert "full" in r.json()["error"]["message"]
        assert client.post("/api/predict", files={"image": ("d.png", digit_png, "image/png")}).status_code == 200


def _huge_jpeg() -> bytes:
    """A real 8x8 JPEG whose header is edited to declare 60000 x 60000 pixels."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    return bytes(data)


def test_hostile_uploads_get_a_fast_4xx_and_the_server_stays_up(model_dir, tmp_path, digit_png):
    process, url = start_server(model_dir, tmp_path / "f.db")
    frames = [Image.new("L", (64, 64), c) for c in (0, 255)]
    gif, tiff, bomb = io.BytesIO(), io.BytesIO(), io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    Image.new("L", (64, 64)).save(tiff, "TIFF")
    Image.new("1", (20000, 20000)).save(bomb, "PNG", optimize=True)
    corpus = {
        "truncated.png": (digit_png[:300], 400), "bomb.png": (bomb.getvalue(), 413), "huge.jpg": (_huge_jpeg(), 413),
        "animated.gif": (gif.getvalue(), 415), "scan.tiff": (tiff.getvalue(), 415),
        "script.svg": (b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", 415),
        "empty.png": (b"", 400), "random.bin": (os.urandom(20_000), 415),
    }
    try:
        with httpx.Client(timeout=10) as c:
            for name, (payload, status) in corpus.items():
                started = time.perf_counter()
                r = c.post(url + "/api/predict", files={"image": (name, payload, "application/octet-stream")})
                assert r.status_code == status, (name, r.text)
                assert r.json()["error"]["message"] and time.perf_counter() - started < 5, name

            # 50 MB streamed without a Content-Length: cut off at the 5 MB limit, not read to the end.
            def body():
                head = b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n\r\n"
                yield head
                for _ in range(50):
                    yield b"\0" * 1_000_000
                yield b"\r\n--b--\r\n"

            r = c.post(url + "/api/predict", content=body(), headers={"content-type": "multipart/form-data; boundary=b"})
            assert r.status_code == 413
            assert c.post(url + "/api/predict", files={"image": ("d.png", digit_png, "image/png")}).status_code == 200
    finally:
        kill(process)


def test_a_burst_of_concurrent_clients_sees_no_error(model_dir, tmp_path, digit_png, mnist_test):
    """The short version of benchmarks/load.py: 16 clients, 400 requests, every one answered right."""
    number = synth.render_number(list(mnist_test.images[:3]), list(mnist_test.labels[:3]), np.random.default_rng(0))
    process, url = start_server(model_dir, tmp_path / "l.db", workers=2)
    try:
        def post(k: int):
            with httpx.Client(timeout=30) as c:
                if k % 5 == 0:
                    return c.post(url + "/api/read", files={"image": ("n.png", number.png, "image/png")}).json()["text"]
                return c.post(url + "/api/predict", files={"image": ("d.png", digit_png, "image/png")}).json()["digit"]

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(post, range(400)))
        assert answers.count(number.text) == 80
        assert answers.count(int(mnist_test.labels[0])) == 320
    finally:
        kill(process)


def test_corrections_posted_at_once_to_two_workers_are_each_stored_exactly_once(model_dir, feedback_db, digit_png,
                                                                                 mnist_test):
    """`serve --workers 2` on a new database: both workers create the schema at once, then take corrections
    from 8 clients; every one is acknowledged, stored once with its own id, and none is lost or doubled."""
    pngs = [synth.render_digit(mnist_test.images[i], np.random.default_rng(i), "white_on_black") for i in range(80)]
    assert len(set(pngs)) == 80  # each correction can be told apart by its image
    process, url = start_server(model_dir, feedback_db, workers=2)
    try:
        def post(k: int) -> int:
            with httpx.Client(timeout=30) as c:  # a connection per request, so both workers take some
                r = c.post(url + "/api/feedback", files={"image": ("d.png", pngs[k], "image/png")},
                           data={"correct": str(k % 10)})
            assert r.status_code == 201, r.text
            return r.json()["id"]

        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(post, range(80)))
        predicted = httpx.post(url + "/api/predict", files={"image": ("d.png", digit_png, "image/png")}, timeout=30)
        assert predicted.status_code == 200 and predicted.json()["digit"] == int(mnist_test.labels[0])
    finally:
        kill(process)
    assert len(set(ids)) == 80
    with FeedbackStore(feedback_db) as store:
        records = store.recent(limit=1000)
    assert sorted(r.id for r in records) == sorted(ids)
    assert sorted((r.image, r.correct) for r in records) == sorted((drawing_png(png), k % 10)
                                                                   for k, png in enumerate(pngs))


# -- slow and oversized clients against the real protocol ------------------------------------------

@pytest.fixture
def live_server(model_dir, tmp_path):
    """The app under uvicorn in this process, with short timeouts so that the tests are quick."""
    import uvicorn

    limits = ServerLimits(max_head_bytes=8 * 1024, head_timeout_s=1.0, keep_alive_s=1, max_connections=64)
    settings = Settings(model=model_dir, db=tmp_path / "s.db", read_timeout_s=1.0)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                                           **uvicorn_options(limits)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 180
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(timeout=10)


def raw_exchange(port: int, request: bytes, wait_s: float = 5.0) -> tuple[bytes, float]:
    """Sends `request` as it is and returns whatever comes back until the server closes, and how long it took."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.settimeout(wait_s)
        started = time.monotonic()
        if request:
            conn.sendall(request)
        answer = b""
        try:
            while chunk := conn.recv(65536):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        return answer, time.monotonic() - started


def test_a_request_head_over_the_limit_is_refused_with_431(live_server):
    request = b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n"
    answer, _ = raw_exchange(live_server, request)
    assert answer.startswith(b"HTTP/1.1 431") and b"header_too_large" in answer


def test_a_body_promised_and_never_sent_gets_408_at_the_read_timeout(live_server):
    request = (b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
               b"Content-Length: 1000\r\n\r\n{\"image\": ")
    answer, took = raw_exchange(live_server, request)
    assert answer.startswith(b"HTTP/1.1 408") and b"read_timeout" in answer
    assert 0.9 < took < 4


def test_connections_that_send_nothing_or_trickle_headers_are_closed(live_server):
    answer, took = raw_exchange(live_server, b"")
    assert answer == b"" and took < 4  # closed by the server, not by the client's 5 s wait
    with socket.create_connection(("127.0.0.1", live_server)) as conn:
        started = time.monotonic()
        conn.settimeout(5)
        closed = False
        try:
            conn.sendall(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            for _ in range(40):  # a header a byte every 0.1 s: never finished within the 1 s head timeout
                time.sleep(0.1)
                conn.sendall(b"a")
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        assert closed and time.monotonic() - started < 3.5


def test_head_and_keep_alive_still_work_within_the_limits(live_server, digit_png):
    with httpx.Client(base_url=f"http://localhost:{live_server}", timeout=10) as client:
        assert client.head("/api/health").status_code == 200
        for _ in range(3):  # one connection, kept alive between requests
            assert client.post("/api/predict", files={"image": ("d.png", digit_png, "image/png")}).status_code == 200
