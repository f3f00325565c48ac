"""What people say about an answer: a second thought on the same drawing changes its row instead of adding one,
"it was right" is a confirmation, and a number is kept whole with its boxes (on SQLite and PostgreSQL)."""

import numpy as np
import pytest
from fastapi.testclient import TestClient

from digitrecognizer import synth
from digitrecognizer.store import CONFIRMATION, CORRECTION, FeedbackStore
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


def test_the_digit_the_app_showed_is_stored_as_a_confirmation(client, drawings, feedback_db):
    response = client.post("/api/feedback", files={"image": ("d.png", drawings[0], "image/png")},
                           data={"correct": "7", "predicted": "7"})
    assert response.status_code == 201 and response.json()["kind"] == "confirmation"
    with FeedbackStore(feedback_db) as store:
        assert store.get(response.json()["id"]).kind == CONFIRMATION and store.count(CORRECTION) == 0


@pytest.fixture(scope="module")
def number(mnist_test):
    return synth.render_number(list(mnist_test.images[:3]), list(mnist_test.labels[:3]), np.random.default_rng(1))


def send_number(client, number, text, replaces=None):
    body = {"number": text, **({"replaces": str(replaces)} if replaces else {})}
    return client.post("/api/feedback/number", files={"image": ("n.png", number.png, "image/png")}, data=body)


def test_a_number_correction_is_kept_whole_with_its_boxes_and_digit_by_digit(client, number, feedback_db):
    wrong_last = number.text[:-1] + str((int(number.text[-1]) + 1) % 10)
    response = send_number(client, number, wrong_last)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["read_as"] == number.text and body["digits_stored"] == len(number.text)
    with FeedbackStore(feedback_db) as store:
        record = store.get_number(body["id"])
        assert (record.read_as, record.correct, len(record.boxes)) == (number.text, wrong_last, len(number.text))
        assert sorted(r.kind for r in store.recent()) == [CONFIRMATION] * (len(number.text) - 1) + [CORRECTION]

    again = send_number(client, number, number.text, replaces=body["id"])  # a second thought replaces it
    assert again.status_code == 201 and again.json()["id"] == body["id"]
    with FeedbackStore(feedback_db) as store:
        assert store.get_number(body["id"]).correct == number.text
        assert store.count() == len(number.text) and store.count(CONFIRMATION) == len(number.text)


def test_a_number_typed_with_more_digits_than_marks_is_kept_whole_only(client, number, feedback_db):
    response = send_number(client, number, number.text + "5")
    assert response.status_code == 201 and response.json()["digits_stored"] == 0
    with FeedbackStore(feedback_db) as store:
        assert store.count() == 0 and store.get_number(response.json()["id"]).correct == number.text + "5"


@pytest.mark.parametrize("text", ["", "12a", "-4", "1" * 33])
def test_a_number_correction_must_be_digits(client, number, text):
    response = send_number(client, number, text)
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_number"
