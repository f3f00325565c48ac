"""A second thought on the same drawing changes its correction instead of adding one (on SQLite and PostgreSQL)."""

import numpy as np
import pytest
from fastapi.testclient import TestClient

from digitrecognizer import synth
from digitrecognizer.store import FeedbackStore
from digitrecognizer.web.app import Settings, create_app


@pytest.fixture()
def client(model_dir, feedback_db):
    with TestClient(create_app(Settings(model=model_dir, db=feedback_db)), base_url="http://localhost") as c:
        yield c


@pytest.fixture(scope="module")
def drawings(mnist_test):
    rng = np.random.default_rng(1)
    return [synth.render_digit(mnist_test.images[k], rng, "white_on_black") for k in (0, 1)]


def send(client, image, correct, replaces=None):
    data = {"correct": str(correct), "predicted": "7"}
    if replaces is not None:
        data["replaces"] = str(replaces)
    response = client.post("/api/feedback", files={"image": ("d.png", image, "image/png")}, data=data)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_a_changed_correction_keeps_one_row(client, drawings, feedback_db):
    first = send(client, drawings[0], 1)
    assert send(client, drawings[0], 2, replaces=first) == first
    with FeedbackStore(feedback_db) as store:
        assert store.count() == 1
        assert store.get(first).correct == 2 and store.get(first).predicted == 7


def test_only_the_same_image_can_change_a_correction(client, drawings, feedback_db):
    first = send(client, drawings[0], 1)
    other = send(client, drawings[1], 3, replaces=first)  # another image: a new row, the first one untouched
    assert other != first
    with FeedbackStore(feedback_db) as store:
        assert store.count() == 2 and store.get(first).correct == 1


def test_replaces_must_be_an_id(client, drawings):
    response = client.post("/api/feedback", files={"image": ("d.png", drawings[0], "image/png")},
                           data={"correct": "1", "replaces": "x"})
    assert response.status_code == 422 and response.json()["error"]["message"].startswith("replaces")
