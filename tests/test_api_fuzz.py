"""API fuzzing: from the OpenAPI schema (schemathesis), and with any JSON or form values hypothesis can make;
whatever is sent, the answer is never a 5xx, and every error has the API's JSON shape."""

import json

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digitrecognizer.web.app import Settings, create_app

# The schema is generated from the app itself; an in-memory database keeps fuzzed feedback out of real data.
# schemathesis' in-process client calls the server "testserver"; the rate limit would only hide the store.
app = create_app(Settings(model=None, db="sqlite:///:memory:", allowed_hosts=["testserver"],
                          feedback_rate="1000000/minute"))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
ENDPOINTS = ["/api/predict", "/api/read", "/api/feedback"]
TINY_PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg==")


@pytest.fixture(scope="module", autouse=True)
def running_app():
    with TestClient(app):  # runs the app's startup: the recognizer and the store exist while fuzzing
        yield


@pytest.fixture(scope="module")
def client():
    with TestClient(app) as c:
        yield c


def assert_no_server_error(response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        assert set(response.json()) == {"error"}


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_makes_the_server_fail(case):
    assert_no_server_error(case.call(), f"{case.method} {case.path}")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


@given(path=st.sampled_from(ENDPOINTS), correct=json_values, predicted=json_values, image=json_values | st.just(TINY_PNG))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_json_fields_get_an_answer_not_a_failure(client, path, correct, predicted, image):
    body = json.dumps({"image": image, "correct": correct, "predicted": predicted}, allow_nan=True)
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert_no_server_error(response, f"{path} {body[:200]}")


@given(path=st.sampled_from(ENDPOINTS), fields=st.dictionaries(st.sampled_from(["correct", "predicted", "image", "x"]),
                                                                st.text(max_size=30), max_size=4))
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_form_fields_get_an_answer_not_a_failure(client, path, fields):
    response = client.post(path, data=fields, files={"image": ("d.png", b"\x89PNG\r\n\x1a\n", "image/png")})
    assert_no_server_error(response, f"{path} {fields}")
