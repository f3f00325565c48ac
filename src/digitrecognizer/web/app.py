"""The web service: FastAPI app factory, the REST API, the drawing page, security headers and error shape."""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..preprocess import ImageTooLarge, Limits, PreprocessError, UnsupportedImage
from ..recognizer import Prediction, Recognizer
from ..store import FeedbackStore, StoreUnavailable
from . import schemas
from .redoc import add_redoc

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
ENV_MODEL, ENV_DB = "DIGITRECOGNIZER_MODEL", "DIGITRECOGNIZER_DB"

# The page loads only its own files: no inline scripts or styles, nothing from other origins, no framing.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            "connect-src 'self'; font-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'self'")
# The /docs and /redoc pages (Swagger UI and ReDoc, served from this package by fastapi-offline, so they work
# without internet) start with an inline script and inline styles; they get a CSP that allows exactly that,
# and only on those two paths.
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; worker-src blob:; frame-ancestors 'none'; base-uri 'none'")
DOCS_PATHS = ("/docs", "/redoc")


@dataclass
class Settings:
    """Everything the service needs, passed explicitly (the CLI builds it from its flags)."""

    model: str | os.PathLike | None = None  # model folder; None = the shipped model
    db: str | os.PathLike | None = None  # feedback database path or URL; None = the user's data folder
    max_body_bytes: int = 5_000_000  # a canvas PNG is ~10 kB and a phone photo a few MB
    # A database that couldn't be opened is tried again on a correction, at most this often: a database server
    # started after the app, or back after an outage, is used without restarting every replica.
    store_retry_s: float = 5.0
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def from_env(cls) -> "Settings":
        """For worker processes started by uvicorn, which rebuild the app in each process."""
        return cls(model=os.environ.get(ENV_MODEL) or None, db=os.environ.get(ENV_DB) or None)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


ERROR_RESPONSES = {status: {"model": schemas.ErrorOut, "description": text} for status, text in {
    400: "damaged image or malformed request", 413: "body or image too large", 415: "not a PNG, JPEG or WebP image",
    422: "missing or invalid field", 503: "feedback store unavailable"}.items()}


# ----------------------------------------------------------------------------------------------
# ASGI middleware: a body limit enforced while the body streams in, and headers on every response


class BodyLimitMiddleware:
    """Refuses bodies over the limit with 413 before reading them: by Content-Length when it is given,
    else by counting bytes as they arrive (a 50 MB upload is cut off after 5 MB, not buffered)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        too_large = error_response(413, "too_large", f"the request body is over the limit of "
                                                     f"{self.max_bytes / 1e6:.0f} MB: send a smaller image")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await too_large(scope, receive, send)
        received = 0
        response_started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal response_started
            response_started |= message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await too_large(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


class SecurityHeadersMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        csp = DOCS_CSP if scope["path"] in DOCS_PATHS else PAGE_CSP

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"content-security-policy"]
                headers += [
                    (b"content-security-policy", csp.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# ----------------------------------------------------------------------------------------------
# Reading the image from either request form

IMAGE_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "format": "binary", "description": "PNG, JPEG or WebP file"}}}},
        "application/json": {"schema": schemas.ImageJSON.model_json_schema()},
    },
}
FEEDBACK_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image", "correct"], "properties": {
            "image": {"type": "string", "format": "binary"},
            "predicted": {"type": "integer", "minimum": 0, "maximum": 9},
            "replaces": {"type": "integer", "minimum": 1,
                         "description": "a correction of the same image sent before: change it instead of adding one"},
            "correct": {"type": "integer", "minimum": 0, "maximum": 9}}}},
        "application/json": {"schema": schemas.FeedbackJSON.model_json_schema()},
    },
}


def decode_base64_image(text: str) -> bytes:
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if ";base64" not in header:
            raise ApiError(400, "bad_data_url", "the data URL must be base64-encoded (data:image/png;base64,...)")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_base64", "the image field is not valid base64") from None


async def read_request(request: Request, max_bytes: int) -> tuple[bytes, dict]:
    """The image bytes and the other fields, from multipart/form-data or JSON."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=10, max_part_size=max_bytes)
        except _BodyTooLarge:
            raise
        except Exception as err:  # python-multipart's errors: malformed boundaries, too many parts, ...
            raise ApiError(400, "bad_form", f"the multipart form cannot be read: {err}") from None
        upload = form.get("image")
        if upload is None:
            raise ApiError(422, "missing_field", "send the image in a multipart field named 'image'")
        data = await upload.read() if isinstance(upload, UploadFile) else str(upload).encode()
        fields = {k: v for k, v in form.items() if k != "image" and isinstance(v, str)}
        return data, fields
    if content_type == "application/json":
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "bad_json", "the body is not valid JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("image"), str):
            raise ApiError(422, "missing_field", 'send JSON like {"image": "data:image/png;base64,..."}')
        return decode_base64_image(body["image"]), {k: v for k, v in body.items() if k != "image"}
    raise ApiError(415, "unsupported_content_type",
                   f"content type {content_type or '(none)'} is not accepted: send multipart/form-data with an "
                   "'image' file, or application/json with a data URL")


def png_data_url(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def parse_digit(value, name: str, required: bool) -> int | None:
    if value is None or value == "":
        if required:
            raise ApiError(422, "missing_field", f"'{name}' is required: the right digit, 0-9")
        return None
    try:
        digit = int(value)
    except (TypeError, ValueError):
        digit = None
    if digit is None or isinstance(value, bool) or str(digit) != str(value).strip() or not 0 <= digit <= 9:
        raise ApiError(422, "invalid_label", f"'{name}' must be a digit 0-9, got {value!r}")
    return digit


def parse_id(value) -> int | None:
    """An optional correction id (`replaces`): a positive integer, or absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not str(value).strip().isdigit():
        raise ApiError(422, "invalid_id", f"'replaces' must be the id of a correction, got {value!r}")
    return int(value)


def digit_out(p: Prediction) -> dict:
    return {**p.to_dict(), "input28": None if p.blank else png_data_url(p.input28)}


# ----------------------------------------------------------------------------------------------
# The app


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    opening_store = threading.Lock()

    def open_store(app: FastAPI) -> FeedbackStore | None:
        """The store, or None while its database can't be opened; predictions keep working, feedback answers 503."""
        # Not waiting for the lock: while one thread waits on an unreachable server, the others answer 503 at once.
        if app.state.store is None and opening_store.acquire(blocking=False):
            try:
                if app.state.store is None and time.monotonic() >= app.state.store_retry_at:
                    app.state.store = FeedbackStore(settings.db)
            except (StoreUnavailable, RuntimeError, OSError) as err:
                log.error("feedback store unavailable: %s", err)
                app.state.store_error = str(err)
                app.state.store_retry_at = time.monotonic() + settings.store_retry_s
            finally:
                opening_store.release()
        return app.state.store

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.recognizer = Recognizer(settings.model, limits=settings.limits)
        app.state.store, app.state.store_error, app.state.store_retry_at = None, "not opened yet", 0.0
        open_store(app)
        yield
        if app.state.store is not None:
            app.state.store.close()

    app = FastAPIOffline(
        title="DigitRecognizer", version=__version__, lifespan=lifespan, redoc_url=None,
        description="Handwritten digit recognition. Send a PNG, JPEG or WebP image as multipart field `image` or "
                    "as JSON `{\"image\": \"data:image/png;base64,...\"}`. Errors are JSON: "
                    "`{\"error\": {\"code\", \"message\"}}`.",
    )
    add_redoc(app)  # ReDoc from the package, its logo included
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeadersMiddleware)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return error_response(err.status, err.code, err.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        code, message = {
            404: ("not_found", f"nothing at {request.url.path}: the API is under /api (see /docs)"),
            405: ("method_not_allowed", f"{request.method} is not allowed on {request.url.path} (see /docs)"),
        }.get(err.status_code, ("http_error", str(err.detail)))
        return error_response(err.status_code, code, message, headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, err: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return error_response(500, "internal_error", "something went wrong on our side; the error was logged")

    def run_recognizer(fn, data: bytes):
        """Decode, preprocess and infer *in the event loop*, on purpose: it is 2-10 ms of CPU work, and handing
        it to the thread pool made threads of one process fight over the GIL (measured with benchmarks/load.py
        at 16 clients, 2 workers: 696 requests/s with p99 58 ms in the pool, 749/s with p99 30 ms inline).
        Parallelism comes from worker processes (`serve --workers`); the body and pixel limits bound the
        longest a request can hold its worker."""
        try:
            return fn(data)
        except ImageTooLarge as err:
            raise ApiError(413, "too_large", str(err)) from None
        except UnsupportedImage as err:
            raise ApiError(415, "not_an_image", str(err)) from None
        except PreprocessError as err:
            raise ApiError(400, "bad_image", str(err)) from None

    @app.post("/api/predict", response_model=schemas.PredictOut, responses=ERROR_RESPONSES,
              openapi_extra={"requestBody": IMAGE_BODY}, summary="Read one digit")
    async def predict(request: Request):
        data, _ = await read_request(request, settings.max_body_bytes)
        rec: Recognizer = request.app.state.recognizer
        started = time.perf_counter()
        p = run_recognizer(rec.predict, data)
        return {**digit_out(p), "model_version": rec.version, "elapsed_ms": round(1000 * (time.perf_counter() - started), 2)}

    @app.post("/api/read", response_model=schemas.ReadOut, responses=ERROR_RESPONSES,
              openapi_extra={"requestBody": IMAGE_BODY}, summary="Read a number written as digits side by side")
    async def read(request: Request):
        data, _ = await read_request(request, settings.max_body_bytes)
        rec: Recognizer = request.app.state.recognizer
        started = time.perf_counter()

        def work(payload: bytes):
            reading = rec.read_number(payload)
            with Image.open(io.BytesIO(payload)) as image:  # already validated by read_number
                size = image.size
            return reading, size

        reading, (width, height) = run_recognizer(work, data)
        return {"text": reading.text, "digits": [digit_out(d) for d in reading.digits], "input_width": width,
                "input_height": height, "model_version": rec.version,
                "elapsed_ms": round(1000 * (time.perf_counter() - started), 2)}

    @app.post("/api/feedback", status_code=201, response_model=schemas.FeedbackOut, responses=ERROR_RESPONSES,
              openapi_extra={"requestBody": FEEDBACK_BODY}, summary="Store a correction")
    async def feedback(request: Request):
        data, fields = await read_request(request, settings.max_body_bytes)
        correct = parse_digit(fields.get("correct"), "correct", required=True)
        predicted = parse_digit(fields.get("predicted"), "predicted", required=False)
        replaces = parse_id(fields.get("replaces"))
        rec: Recognizer = request.app.state.recognizer
        p = run_recognizer(rec.predict, data)
        store: FeedbackStore | None = request.app.state.store or await run_in_threadpool(open_store, request.app)
        if store is None:
            raise ApiError(503, "store_unavailable", f"corrections cannot be stored right now: "
                                                     f"{request.app.state.store_error}")
        try:  # the write waits on disk (fsync) and on other writers: that belongs in the thread pool
            if replaces is not None and await run_in_threadpool(store.change, replaces, data, correct):
                return {"id": replaces, "stored": True}
            row_id = await run_in_threadpool(store.add, data, p.input28, predicted, correct, rec.version)
        except StoreUnavailable as err:
            raise ApiError(503, "store_unavailable", f"corrections cannot be stored right now: {err}") from None
        return {"id": row_id, "stored": True}

    @app.get("/api/health", response_model=schemas.HealthOut, summary="Liveness and the model version")
    async def health(request: Request):
        return {"status": "ok", "model_version": request.app.state.recognizer.version}

    @app.get("/api/model", summary="The model card: metrics, calibration, thresholds, provenance")
    async def model_card(request: Request):
        from dataclasses import asdict

        card = asdict(request.app.state.recognizer.card)
        card["training"] = {k: v for k, v in card["training"].items() if k != "history"}
        return card

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes (`--workers N`): settings come through the environment."""
    return create_app(Settings.from_env())


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 5000, workers: int = 1,
          access_log: bool = False) -> None:
    """Run the app with uvicorn. One line per request (access_log) costs about a tenth of the throughput
    under load, so it is off unless asked for; errors are always logged."""
    import uvicorn

    print(f"DigitRecognizer on http://{host}:{port}  (API docs: http://{host}:{port}/docs)", flush=True)
    options = dict(host=host, port=port, log_level="info", access_log=access_log)
    if workers > 1:
        # Each worker process builds its own app (and ONNX session); state lives only in files and the database.
        if settings.model:
            os.environ[ENV_MODEL] = str(settings.model)
        if settings.db:
            os.environ[ENV_DB] = str(settings.db)
        uvicorn.run("digitrecognizer.web.app:app_from_env", factory=True, workers=workers, **options)
    else:
        uvicorn.run(create_app(settings), **options)
