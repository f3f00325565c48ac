"""The REST API's routes: reading a digit or a number, storing what people say about an answer, health and the
model card. The recognizer, the store and the settings reach each route through FastAPI dependencies."""

from __future__ import annotations

import base64
import io
import time
from dataclasses import asdict
from typing import Annotated

import anyio
import numpy as np
from fastapi import APIRouter, Depends, Request
from PIL import Image
from starlette.concurrency import run_in_threadpool

from ..preprocess import ImageTooLarge, PreprocessError, TooManyMarks, UnsupportedImage, decode
from ..recognizer import Prediction, Recognizer
from ..store import DigitCut, FeedbackStore, QuotaReached, StoreUnavailable, kind_of
from . import schemas
from .errors import ApiError
from .guards import RateLimit
from .requests import read_request, request_body

router = APIRouter(prefix="/api")

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


# -- dependencies -----------------------------------------------------------------------------------


def get_recognizer(request: Request) -> Recognizer:
    return request.app.state.recognizer


def get_max_body_bytes(request: Request) -> int:
    return request.app.state.settings.max_body_bytes


async def get_store(request: Request) -> FeedbackStore:
    """The feedback store, opened on first use (and again after an outage); 503 while it can't be opened."""
    stores = request.app.state.stores
    store = stores.store or await run_in_threadpool(stores.open)
    if store is None:
        raise ApiError(503, "store_unavailable", f"corrections cannot be stored right now: {stores.error}")
    return store


def within_feedback_rate(request: Request) -> None:
    """Counted once the request is valid (a dependency runs after the body is read), before the work it would
    cost: a client that mistyped a label has not used up its corrections."""
    rate: RateLimit = request.app.state.feedback_rate
    client = request.client.host if request.client else "unknown"
    retry_after = rate.retry_after_s(client)
    if retry_after is not None:
        raise ApiError(429, "too_many_corrections", f"this client sent more than {rate} corrections: try again in "
                                                    f"{retry_after} s", headers={"Retry-After": str(retry_after)})


RecognizerDep = Annotated[Recognizer, Depends(get_recognizer)]
StoreDep = Annotated[FeedbackStore, Depends(get_store)]
MaxBytes = Annotated[int, Depends(get_max_body_bytes)]


# -- helpers ------------------------------------------------------------------------------------------


async def run_recognizer(request: Request, fn, *args):
    """Decode, preprocess and infer in a worker thread, one request at a time per process (`cpu_threads`): the
    event loop stays free to answer health checks and refusals while a worst-case image (a 16 MP photo, a
    number of 32 marks) computes. Parallelism comes from worker processes (`serve --workers`)."""
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


async def store_call(fn, *args):
    """A store write in the thread pool (it waits on disk and on other writers), its failures as API errors."""
    try:
        return await run_in_threadpool(fn, *args)
    except QuotaReached as err:
        raise ApiError(507, "quota_reached", f"the feedback store is full: {err}") from None
    except StoreUnavailable as err:
        raise ApiError(503, "store_unavailable", f"corrections cannot be stored right now: {err}") from None


def png_data_url(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def digit_out(p: Prediction) -> dict:
    return {**p.to_dict(), "input28": None if p.blank else png_data_url(p.input28)}


def elapsed_ms(started: float) -> float:
    return round(1000 * (time.perf_counter() - started), 2)


def read_with_size(rec: Recognizer, payload: bytes):
    reading = rec.read_number(payload)
    with Image.open(io.BytesIO(payload)) as image:  # already validated by read_number
        return reading, image.size


# -- routes -------------------------------------------------------------------------------------------


@router.post("/predict", response_model=schemas.PredictOut, responses=ERROR_RESPONSES, summary="Read one digit",
             openapi_extra={"requestBody": request_body(schemas.ImageJSON, schemas.ImageForm)})
async def predict(request: Request, rec: RecognizerDep, max_bytes: MaxBytes):
    data, _ = await read_request(request, max_bytes, schemas.ImageJSON, schemas.ImageForm)
    started = time.perf_counter()
    p = await run_recognizer(request, rec.predict, data)
    return {**digit_out(p), "model_version": rec.version, "elapsed_ms": elapsed_ms(started)}


@router.post("/read", response_model=schemas.ReadOut, responses=ERROR_RESPONSES,
             summary="Read a number written as digits side by side",
             openapi_extra={"requestBody": request_body(schemas.ImageJSON, schemas.ImageForm)})
async def read(request: Request, rec: RecognizerDep, max_bytes: MaxBytes):
    data, _ = await read_request(request, max_bytes, schemas.ImageJSON, schemas.ImageForm)
    started = time.perf_counter()
    reading, (width, height) = await run_recognizer(request, read_with_size, rec, data)
    return {"text": reading.text, "digits": [digit_out(d) for d in reading.digits], "input_width": width,
            "input_height": height, "model_version": rec.version, "elapsed_ms": elapsed_ms(started)}


@router.post("/feedback", status_code=201, response_model=schemas.FeedbackOut, responses=FEEDBACK_ERRORS,
             summary="Store the right digit for a drawing: a correction, or a confirmation when the app was right",
             openapi_extra={"requestBody": request_body(schemas.FeedbackJSON, schemas.FeedbackForm)})
async def feedback(request: Request, rec: RecognizerDep, max_bytes: MaxBytes):
    data, fields = await read_request(request, max_bytes, schemas.FeedbackJSON, schemas.FeedbackForm)
    within_feedback_rate(request)

    def work(payload: bytes):
        drawing = decode(payload, rec.limits)[0]  # decoded once: the model reads it and the store keeps it
        return drawing, rec.predict(drawing)

    drawing, p = await run_recognizer(request, work, data)
    store = await get_store(request)
    kind = kind_of(fields.predicted, fields.correct)
    if fields.replaces is not None and await store_call(store.change, fields.replaces, drawing, fields.correct):
        return {"id": fields.replaces, "stored": True, "kind": kind}
    row_id = await store_call(store.add, drawing, p.input28, fields.predicted, fields.correct, rec.version)
    return {"id": row_id, "stored": True, "kind": kind}


@router.post("/feedback/number", status_code=201, response_model=schemas.NumberFeedbackOut,
             responses=FEEDBACK_ERRORS, summary="Store the right number for a drawing of a number, with its boxes",
             openapi_extra={"requestBody": request_body(schemas.NumberFeedbackJSON, schemas.NumberFeedbackForm)})
async def number_feedback(request: Request, rec: RecognizerDep, max_bytes: MaxBytes):
    data, fields = await read_request(request, max_bytes, schemas.NumberFeedbackJSON, schemas.NumberFeedbackForm)
    within_feedback_rate(request)

    def work(payload: bytes):
        drawing = decode(payload, rec.limits)[0]
        return drawing, rec.read_number(drawing)

    drawing, reading = await run_recognizer(request, work, data)
    store = await get_store(request)
    marks = reading.digits
    # Each digit is kept on its own only when the person typed one digit per mark the model found.
    cuts = [DigitCut(d.input28, d.digit if d.is_digit else None, int(c)) for d, c in zip(marks, fields.number)
            ] if len(marks) == len(fields.number) else []
    number_id = await store_call(store.add_number, drawing, reading.text, fields.number,
                                 [d.box for d in marks], cuts, rec.version, fields.replaces)
    return {"id": number_id, "stored": True, "read_as": reading.text, "digits_stored": len(cuts)}


async def health(rec: RecognizerDep):
    return {"status": "ok", "model_version": rec.version}


router.add_api_route("/health", health, methods=["GET"], response_model=schemas.HealthOut,
                     summary="Liveness and the model version")
router.add_api_route("/health", health, methods=["HEAD"], operation_id="health_head",
                     summary="Liveness, for load balancers that probe with HEAD (no body)")


@router.get("/model", summary="The model card: metrics, calibration, thresholds, provenance")
async def model_card(rec: RecognizerDep):
    card = asdict(rec.card)
    card["training"] = {k: v for k, v in card["training"].items() if k != "history"}
    return card
