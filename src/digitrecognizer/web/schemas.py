"""The REST API's request and response models: the OpenAPI document at /docs is generated from these."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ImageJSON(BaseModel):
    image: str = Field(description="the image as a data URL (data:image/png;base64,...) or bare base64; "
                                   "PNG, JPEG or WebP", examples=["data:image/png;base64,iVBORw0KGgo..."])


class FeedbackJSON(ImageJSON):
    predicted: int | None = Field(None, description="the digit the app showed (null: it showed none)")
    correct: int = Field(description="the right digit, 0-9")
    replaces: int | None = Field(None, description="the id of a correction of the same image sent before: it is "
                                                   "changed instead of a new one added")


class DigitOut(BaseModel):
    digit: int | None = Field(description="the digit read, or null when blank or not a digit")
    probabilities: list[float] = Field(description="calibrated probability of each digit 0-9 (sums to 1)")
    confidence: float = Field(description="probability of the top digit")
    is_digit: bool = Field(description="false when the drawing is blank or does not look like a digit")
    blank: bool = Field(description="true when there is no ink at all")
    novelty: float = Field(description="distance from the digits seen in training (higher: less digit-like)")
    box: list[int] | None = Field(None, description="left, top, right, bottom in the input's pixels")
    input28: str | None = Field(None, description="the 28x28 image the model saw, as a PNG data URL (null when blank)")


class PredictOut(DigitOut):
    model_version: str
    elapsed_ms: float = Field(description="server-side time for decoding, preprocessing and the model")


class ReadOut(BaseModel):
    text: str = Field(description="the digits read left to right; '?' marks something that is not a digit")
    digits: list[DigitOut]
    input_width: int
    input_height: int
    model_version: str
    elapsed_ms: float


class FeedbackOut(BaseModel):
    id: int = Field(description="the stored correction's id")
    stored: bool = True


class HealthOut(BaseModel):
    status: str
    model_version: str


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable reason, e.g. not_an_image, too_large, invalid_label")
    message: str = Field(description="what went wrong and how to fix it")


class ErrorOut(BaseModel):
    error: ErrorDetail
