"""The REST API's request and response models: requests are validated by these, and the OpenAPI document at
/docs is generated from them."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt

# JSON labels must be JSON integers ("7", 7.0 and true are refused); form fields arrive as text and are parsed
# as integers ("7" is 7; "", "seven" and "3.5" are refused).
JsonDigit = Annotated[StrictInt, Field(ge=0, le=9)]
FormDigit = Annotated[int, Field(ge=0, le=9)]
LABEL_FIELDS = ("correct", "predicted")
MAX_NUMBER_DIGITS = 32  # as many as the marks a number may have (preprocess.Limits.max_marks)
NumberText = Annotated[str, Field(pattern=rf"^[0-9]{{1,{MAX_NUMBER_DIGITS}}}$")]


class ImageJSON(BaseModel):
    image: str = Field(description="the image as a data URL (data:image/png;base64,...) or bare base64; "
                                   "PNG, JPEG or WebP", examples=["data:image/png;base64,iVBORw0KGgo..."])


class FeedbackJSON(ImageJSON):
    predicted: JsonDigit | None = Field(None, description="the digit the app showed, 0-9 (null or absent: it "
                                                          "showed none)")
    correct: JsonDigit = Field(description="the right digit, 0-9")
    replaces: Annotated[StrictInt, Field(ge=1)] | None = Field(
        None, description="the id of a correction of the same drawing sent before: it is changed instead of a new "
                          "one added")


class NumberFeedbackJSON(ImageJSON):
    number: NumberText = Field(description="the right number, in digits", examples=["2024"])
    replaces: Annotated[StrictInt, Field(ge=1)] | None = Field(
        None, description="the id of a number correction of the same drawing sent before: it is replaced")


class ImageForm(BaseModel):
    """The multipart fields besides the `image` file: none for reading."""

    model_config = ConfigDict(extra="ignore")


class FeedbackForm(ImageForm):
    predicted: FormDigit | None = Field(None, description="the digit the app showed, 0-9 (absent: it showed none)")
    correct: FormDigit = Field(description="the right digit, 0-9")
    replaces: Annotated[int, Field(ge=1)] | None = Field(
        None, description="the id of a correction of the same drawing sent before: it is changed instead of a new "
                          "one added")


class NumberFeedbackForm(ImageForm):
    number: NumberText = Field(description="the right number, in digits")
    replaces: Annotated[int, Field(ge=1)] | None = Field(
        None, description="the id of a number correction of the same drawing sent before: it is replaced")


def multipart_schema(form: type[ImageForm]) -> dict:
    """The OpenAPI schema of a multipart body: the `image` file and the form model's fields."""
    schema = form.model_json_schema()
    schema.pop("title", None)
    schema.pop("description", None)
    schema["properties"] = {"image": {"type": "string", "format": "binary", "description": "PNG, JPEG or WebP file"},
                            **schema.get("properties", {})}
    schema["required"] = ["image", *schema.get("required", [])]
    return schema


class DigitOut(BaseModel):
    digit: int | None = Field(description="the digit read, or null when blank or not a digit")
    probabilities: list[float] = Field(description="calibrated probability of each digit 0-9 (sums to 1)")
    confidence: float = Field(description="probability of the top digit")
    is_digit: bool = Field(description="false when the drawing is blank or does not look like a digit")
    blank: bool = Field(description="true when there is no ink at all")
    novelty: float = Field(description="distance from the digits seen in training (higher: less digit-like)")
    not_digit: float = Field(0.0, description="the model's probability that the input is not a digit at all")
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
    id: int = Field(description="the stored row's id: send it as `replaces` to change it")
    stored: bool = True
    kind: str = Field("correction", description="'correction', or 'confirmation' when the right digit is the "
                                                "one the app showed")


class NumberFeedbackOut(BaseModel):
    id: int = Field(description="the stored number's id: send it as `replaces` to change it")
    stored: bool = True
    read_as: str = Field(description="what the model read in the drawing ('?' for a mark it refused)")
    digits_stored: int = Field(description="digits stored one by one, each cut out by its box: as many as the "
                                           "marks when the number has that many digits, otherwise none")


class HealthOut(BaseModel):
    status: str
    model_version: str


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable reason, e.g. not_an_image, too_large, invalid_label")
    message: str = Field(description="what went wrong and how to fix it")


class ErrorOut(BaseModel):
    error: ErrorDetail
