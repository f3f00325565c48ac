"""Reading a request's image and fields, sent as multipart/form-data or as JSON, validated by the endpoint's
pydantic models; and the OpenAPI description of both forms."""

from __future__ import annotations

import base64
import binascii

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from . import schemas
from .errors import ApiError
from .guards import BodyRejected


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
        return ApiError(422, "invalid_label", f"'{name}' must be a digit 0-9 written as an integer, got "
                                              f"{_short(first['input'])}")
    if name == "number":
        return ApiError(422, "invalid_number", f"'number' must be the right number in digits 0-9 (1 to "
                                               f"{schemas.MAX_NUMBER_DIGITS}), got {_short(first['input'])}")
    if not name:
        return ApiError(422, "missing_field", 'send a JSON object like {"image": "data:image/png;base64,..."}')
    return ApiError(422, "invalid_request", f"{name}: {first['msg']}")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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
