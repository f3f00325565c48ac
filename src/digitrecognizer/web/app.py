"""The web service: its settings, the FastAPI app factory (routes in routes.py), security headers, the error
shape, and `serve`."""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..preprocess import Limits
from ..recognizer import Recognizer
from ..store import FeedbackStore, Quota, StoreUnavailable
from . import routes
from .errors import ApiError, error_response
from .guards import LOCAL_HOSTS, BodyGuardMiddleware, OriginGuardMiddleware, RateLimit
from .redoc import add_redoc
from .server import uvicorn_options

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


class StoreOpener:
    """Opens the feedback store on first use, and again after an outage, at most every `retry_s`: a database
    server started after the app, or back after an outage, is used without restarting every replica."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: FeedbackStore | None = None
        self.error = "not opened yet"
        self._retry_at = 0.0
        self._opening = threading.Lock()

    def open(self) -> FeedbackStore | None:
        """The store, or None while its database can't be opened (predictions keep working, feedback gets 503).
        Not waiting for the lock: while one thread waits on an unreachable server, the others answer 503 at once."""
        if self.store is None and self._opening.acquire(blocking=False):
            try:
                if self.store is None and time.monotonic() >= self._retry_at:
                    self.store = FeedbackStore(self.settings.db, quota=self.settings.feedback_quota)
            except (StoreUnavailable, RuntimeError, OSError) as err:
                log.error("feedback store unavailable: %s", err)
                self.error, self._retry_at = str(err), time.monotonic() + self.settings.store_retry_s
            finally:
                self._opening.release()
        return self.store

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


# ----------------------------------------------------------------------------------------------
# The app


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.settings = settings
        app.state.recognizer = Recognizer(settings.model, limits=settings.limits)
        app.state.cpu = anyio.CapacityLimiter(settings.cpu_threads)
        app.state.feedback_rate = RateLimit(settings.feedback_rate)
        app.state.stores = StoreOpener(settings)
        app.state.stores.open()
        yield
        app.state.stores.close()

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
    add_error_handlers(app)
    app.include_router(routes.router)
    app.add_api_route("/", index, include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


async def index():
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def add_error_handlers(app: FastAPI) -> None:
    """Every error is JSON in one shape, `{"error": {"code", "message"}}`, with a message that says what to do."""

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
