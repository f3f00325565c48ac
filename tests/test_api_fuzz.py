"""API fuzzing from the OpenAPI schema (schemathesis): whatever is sent, the answer is never a 5xx."""

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from digitrecognizer.web.app import Settings, create_app

# The schema is generated from the app itself; an in-memory database keeps fuzzed feedback out of real data.
app = create_app(Settings(model=None, db="sqlite:///:memory:"))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module", autouse=True)
def running_app():
    with TestClient(app):  # runs the app's startup: the recognizer and the store exist while fuzzing
        yield


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_makes_the_server_fail(case):
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        assert set(response.json()) == {"error"}
