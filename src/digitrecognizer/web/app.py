"""The web service: FastAPI app factory, the REST API, the drawing page, security headers and error shape."""

from __future__ import annotations

import base64
import binascii
import io
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from PIL import Image
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..preprocess import ImageTooLarge, Limits, PreprocessError, TooManyMarks, UnsupportedImage, decode
from ..recognizer import Prediction, Recognizer
from ..store import FeedbackStore, Quota, QuotaReached, StoreUnavailable
from . import schemas
from .redoc import add_redoc
from .errors import ApiError, error_response
from .server import uvicorn_options
from .guards import LOCAL_HOSTS, BodyGuardMiddleware, BodyRejected, OriginGuardMiddleware, RateLimit

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
ENV_MODEL, ENV_DB = "DIGITRECOGNIZER_MODEL", "DIGITRECOGNIZER_DB"
# Read by `serve` and by every worker process: a container image can set them instead of passing flags.
ENV_ALLOWED_HOSTS, ENV_FEEDBACK_QUOTA = "DIGITRECOGNIZER_ALLOWED_HOSTS", "DIGITRECOGNIZER_FEEDBACK_QUOTA"
ENV_FEEDBACK_RATE = "DIGITRECOGNIZER_FEEDBACK_RATE"

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
    # The Host names the server answers to ('*' any): the localhost names unless the operator lists others.
    allowed_hosts: list[str] = field(default_factory=lambda: list(LOCAL_HOSTS))
    feedback_rate: str = "30/minute"  # corrections per client and worker process (the `limits` library's syntax)
    feedback_quota: Quota = field(default_factory=Quota)  # corrections kept in all, rows and bytes
    read_timeout_s: float = 15.0  # the whole body must arrive within this: 5 MB needs about 3 Mbit/s
    # Threads per worker process for decoding, preprocessing and the model, off the event loop so that it
    # keeps answering (health checks, refusals) while a request computes. One: more threads of one process
    # only take turns at the GIL in the Python parts; `serve --workers` adds parallelism.
    cpu_threads: int = 1

    @classmethod
    def from_env(cls) -> "Settings":
        """For worker processes started by uvicorn, which rebuild the app in each process."""
        settings = cls(model=os.environ.get(ENV_MODEL) or None, db=os.environ.get(ENV_DB) or None)
        if os.environ.get(ENV_ALLOWED_HOSTS):
            settings.allowed_hosts = split_names(os.environ[ENV_ALLOWED_HOSTS])
        if os.environ.get(ENV_FEEDBACK_QUOTA):
            settings.feedback_quota = Quota.parse(os.environ[ENV_FEEDBACK_QUOTA])
        if os.environ.get(ENV_FEEDBACK_RATE):
            settings.feedback_rate = os.environ[ENV_FEEDBACK_RATE]
        return settings


def split_names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


ERROR_RESPONSES = {status: {"model": schemas.ErrorOut, "description": text} for status, text in {
    400: "damaged image, malformed request, or a Host name the server does not answer to",
    403: "a write from another site's page", 408: "the body did not arrive within the read timeout",
    413: "body or image too large", 415: "not a PNG, JPEG or WebP image",
    422: "missing or invalid field, or a number of more marks than the limit",
    503: "more connections than the server's cap"}.items()}
FEEDBACK_ERRORS = {**ERROR_RESPONSES, **{status: {"model": schemas.ErrorOut, "description": text} for status, text in {
    429: "this client sent more corrections than the rate limit allows (Retry-After says when to try again)",
    503: "feedback store unavailable, or more connections than the server's cap",
    507: "the feedback store's quota is full"}.items()}}


# ----------------------------------------------------------------------------------------------
# ASGI middleware: headers on every response (the guards are in guards.py)


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

def request_body(json_model: type[schemas.ImageJSON], form_model: type[schemas.ImageForm]) -> dict:
    return {"required": True, "content": {
        "multipart/form-data": {"schema": schemas.multipart_schema(form_model)},
        "application/json": {"schema": json_model.model_json_schema()},
    }}


def decode_base64_image(text: str) -> bytes:
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if ";base64" not in header:
            raise ApiError(400, "bad_data_url", "the data URL must be base64-encoded (data:image/png;base64,...)")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_base64", "the image field is not valid base64") from None


def invalid_fields(err: ValidationError) -> ApiError:
    """Pydantic's first complaint as the API's error: malformed JSON, a missing field or a bad label."""
    first = err.errors(include_url=False)[0]
    name = ".".join(str(part) for part in first["loc"])
    if first["type"] == "json_invalid":
        return ApiError(400, "bad_json", f"the body is not valid JSON: {first['msg']}")
    if first["type"] == "missing" and name == "image":
        return ApiError(422, "missing_field", 'send JSON like {"image": "data:image/png;base64,..."}')
    if first["type"] == "missing":
        return ApiError(422, "missing_field", f"'{name}' is required: the right digit, 0-9")
    if name in schemas.LABEL_FIELDS:
        got = repr(first["input"])
        got = got if len(got) <= 40 else got[:37] + "..."
        return ApiError(422, "invalid_label", f"'{name}' must be a digit 0-9 written as an integer, got {got}")
    if not name:
        return ApiError(422, "missing_field", 'send a JSON object like {"image": "data:image/png;base64,..."}')
    return ApiError(422, "invalid_request", f"{name}: {first['msg']}")


async def read_request(request: Request, max_bytes: int, json_model: type[schemas.ImageJSON],
                       form_model: type[schemas.ImageForm]) -> tuple[bytes, BaseModel]:
    """The image bytes and the other fields, validated by the endpoint's models, from multipart/form-data or JSON."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=10, max_part_size=max_bytes)
        except BodyRejected:
            raise
        except Exception as err:  # python-multipart's errors: malformed boundaries, too many parts, ...
            raise ApiError(400, "bad_form", f"the multipart form cannot be read: {err}") from None
        upload = form.get("image")
        if upload is None:
            raise ApiError(422, "missing_field", "send the image in a multipart field named 'image'")
        try:
            fields = form_model.model_validate({k: v for k, v in form.items() if isinstance(v, str) and k != "image"})
        except ValidationError as err:
            raise invalid_fields(err) from None
        data = await upload.read() if isinstance(upload, UploadFile) else str(upload).encode()
        return data, fields
    if content_type == "application/json":
        try:  # pydantic's own JSON parser: it bounds nesting depth and number size
            body = json_model.model_validate_json(await request.body())
        except ValidationError as err:
            raise invalid_fields(err) from None
        return decode_base64_image(body.image), body
    raise ApiError(415, "unsupported_content_type",
                   f"content type {content_type or '(none)'} is not accepted: send multipart/form-data with an "
                   "'image' file, or application/json with a data URL")


def png_data_url(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


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
                    app.state.store = FeedbackStore(settings.db, quota=settings.feedback_quota)
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
        app.state.cpu = anyio.CapacityLimiter(settings.cpu_threads)
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
    # The last added runs first: unknown hosts and cross-site writes are refused before any body is read.
    app.add_middleware(BodyGuardMiddleware, max_bytes=settings.max_body_bytes, read_timeout_s=settings.read_timeout_s)
    app.add_middleware(OriginGuardMiddleware, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(SecurityHeadersMiddleware)
    feedback_rate = RateLimit(settings.feedback_rate)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return error_response(err.status, err.code, err.message, headers=err.headers)

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

    async def run_recognizer(request: Request, fn, *args):
        """Decode, preprocess and infer in a worker thread, one request at a time per process (`cpu_threads`):
        the event loop stays free to answer health checks and refusals while a worst-case image (a 16 MP photo,
        a number of 32 marks) computes. Parallelism comes from worker processes (`serve --workers`)."""
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=request.app.state.cpu)
        except ImageTooLarge as err:
            raise ApiError(413, "too_large", str(err)) from None
        except UnsupportedImage as err:
            raise ApiError(415, "not_an_image", str(err)) from None
        except TooManyMarks as err:
            raise ApiError(422, "too_many_marks", str(err)) from None
        except PreprocessError as err:
            raise ApiError(400, "bad_image", str(err)) from None

    def elapsed_ms(started: float) -> float:
        return round(1000 * (time.perf_counter() - started), 2)

    @app.post("/api/predict", response_model=schemas.PredictOut, responses=ERROR_RESPONSES,
              openapi_extra={"requestBody": request_body(schemas.ImageJSON, schemas.ImageForm)},
              summary="Read one digit")
    async def predict(request: Request):
        data, _ = await read_request(request, settings.max_body_bytes, schemas.ImageJSON, schemas.ImageForm)
        rec: Recognizer = request.app.state.recognizer
        started = time.perf_counter()
        p = await run_recognizer(request, rec.predict, data)
        return {**digit_out(p), "model_version": rec.version, "elapsed_ms": elapsed_ms(started)}

    @app.post("/api/read", response_model=schemas.ReadOut, responses=ERROR_RESPONSES,
              openapi_extra={"requestBody": request_body(schemas.ImageJSON, schemas.ImageForm)},
              summary="Read a number written as digits side by side")
    async def read(request: Request):
        data, _ = await read_request(request, settings.max_body_bytes, schemas.ImageJSON, schemas.ImageForm)
        rec: Recognizer = request.app.state.recognizer
        started = time.perf_counter()

        def work(payload: bytes):
            reading = rec.read_number(payload)
            with Image.open(io.BytesIO(payload)) as image:  # already validated by read_number
                size = image.size
            return reading, size

        reading, (width, height) = await run_recognizer(request, work, data)
        return {"text": reading.text, "digits": [digit_out(d) for d in reading.digits], "input_width": width,
                "input_height": height, "model_version": rec.version, "elapsed_ms": elapsed_ms(started)}

    @app.post("/api/feedback", status_code=201, response_model=schemas.FeedbackOut, responses=FEEDBACK_ERRORS,
              openapi_extra={"requestBody": request_body(schemas.FeedbackJSON, schemas.FeedbackForm)},
              summary="Store a correction")
    async def feedback(request: Request):
        data, fields = await read_request(request, settings.max_body_bytes, schemas.FeedbackJSON,
                                          schemas.FeedbackForm)
        # Counted once the request is valid, before the work it would cost: malformed requests are cheap to
        # refuse, and a client that mistyped a label has not used up its corrections.
        client = request.client.host if request.client else "unknown"
        retry_after = feedback_rate.retry_after_s(client)
        if retry_after is not None:
            raise ApiError(429, "too_many_corrections", f"this client sent more than {feedback_rate} corrections: "
                                                         f"try again in {retry_after} s",
                           headers={"Retry-After": str(retry_after)})
        rec: Recognizer = request.app.state.recognizer

        def work(payload: bytes):
            drawing = decode(payload, rec.limits)[0]  # decoded once: the model reads it and the store keeps it
            return drawing, rec.predict(drawing)

        drawing, p = await run_recognizer(request, work, data)
        store: FeedbackStore | None = request.app.state.store or await run_in_threadpool(open_store, request.app)
        if store is None:
            raise ApiError(503, "store_unavailable", f"corrections cannot be stored right now: "
                                                     f"{request.app.state.store_error}")
        try:  # the write waits on disk (fsync) and on other writers: that belongs in the thread pool
            if fields.replaces is not None and await run_in_threadpool(store.change, fields.replaces, drawing,
                                                                       fields.correct):
                return {"id": fields.replaces, "stored": True}
            row_id = await run_in_threadpool(store.add, drawing, p.input28, fields.predicted, fields.correct,
                                             rec.version)
        except QuotaReached as err:
            raise ApiError(507, "quota_reached", f"the feedback store is full: {err}") from None
        except StoreUnavailable as err:
            raise ApiError(503, "store_unavailable", f"corrections cannot be stored right now: {err}") from None
        return {"id": row_id, "stored": True}

    async def health(request: Request):
        return {"status": "ok", "model_version": request.app.state.recognizer.version}

    app.add_api_route("/api/health", health, methods=["GET"], response_model=schemas.HealthOut,
                      summary="Liveness and the model version")
    app.add_api_route("/api/health", health, methods=["HEAD"], operation_id="health_head",
                      summary="Liveness, for load balancers that probe with HEAD (no body)")

    @app.get("/api/model", summary="The model card: metrics, calibration, thresholds, provenance")
    async def model_card(request: Request):
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
    """Run the app with uvicorn, within the server's limits (server.py). One line per request (access_log)
    costs about a tenth of the throughput under load, so it is off unless asked for; errors are always logged."""
    import uvicorn

    print(f"DigitRecognizer on http://{host}:{port}  (API docs: http://{host}:{port}/docs), answering to "
          f"{', '.join(settings.allowed_hosts)}", flush=True)
    options = dict(host=host, port=port, log_level="info", access_log=access_log, **uvicorn_options())
    if workers > 1:
        # Each worker process builds its own app (and ONNX session); state lives only in files and the database.
        os.environ.update({ENV_ALLOWED_HOSTS: ",".join(settings.allowed_hosts), ENV_FEEDBACK_RATE: settings.feedback_rate,
                           ENV_FEEDBACK_QUOTA: f"{settings.feedback_quota.max_rows},{settings.feedback_quota.max_bytes}"})
        if settings.model:
            os.environ[ENV_MODEL] = str(settings.model)
        if settings.db:
            os.environ[ENV_DB] = str(settings.db)
        uvicorn.run("digitrecognizer.web.app:app_from_env", factory=True, workers=workers, **options)
    else:
        uvicorn.run(create_app(settings), **options)
