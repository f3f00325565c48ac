"""Feedback store: what a correction must be to be kept, and that kept corrections survive and export intact.
Tests that take `feedback_db` run on SQLite and on PostgreSQL (tests/conftest.py) with the same assertions."""

import multiprocessing
import os
import re
import sqlite3
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timezone
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from digitrecognizer.data import IMAGE_MAGIC, LABEL_MAGIC, read_idx
from digitrecognizer.store_db import DRAWING_MAX_SIDE_PX
from digitrecognizer.store import (
    IDX_IMAGES,
    IDX_LABELS,
    SCHEMA_VERSION,
    FeedbackStore,
    Quota,
    QuotaReached,
    SchemaVersionError,
    StoreUnavailable,
    drawing_png,
)
from digitrecognizer.store import CONFIRMATION, CORRECTION, DigitCut

DRAWING = np.full((280, 280), 255, np.uint8)  # a blank canvas: the drawing a correction keeps a copy of


def digit_image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)


@pytest.fixture
def db(tmp_path):
    """For the SQLite-only tests."""
    return tmp_path / "data" / "feedback.db"  # the folder doesn't exist yet: the store creates it


@pytest.fixture
def store(feedback_db):
    with FeedbackStore(feedback_db) as s:
        yield s


def test_a_correction_reads_back_as_it_was_added(store):
    pixels = digit_image(1)
    new_id = store.add(DRAWING, pixels, 3, 8, "ours-v1")

    record = store.get(new_id)
    assert (record.id, record.image, record.predicted, record.correct, record.model_version) == (
        new_id, drawing_png(DRAWING), 3, 8, "ours-v1")
    np.testing.assert_array_equal(record.input28, pixels)
    assert record.created_at.tzinfo == timezone.utc
    assert store.count() == 1
    assert store.get(new_id + 1) is None


def test_a_prediction_of_not_a_digit_is_stored_as_none(store):
    new_id = store.add(DRAWING, digit_image(2), None, 4, "ours-v1")
    assert store.get(new_id).predicted is None


def test_recent_lists_newest_first(store):
    ids = [store.add(DRAWING, digit_image(i), None, i, "v") for i in range(5)]
    assert [r.id for r in store.recent(limit=3)] == ids[::-1][:3]


@pytest.mark.parametrize("correct", [-1, 10, 3.0, True, None, "7"])
def test_correction_outside_0_to_9_is_refused_and_nothing_stored(store, correct):
    with pytest.raises(ValueError, match="correct must be a digit 0..9"):
        store.add(DRAWING, digit_image(3), 1, correct, "v")
    assert store.count() == 0


def test_the_database_itself_refuses_a_label_outside_0_to_9(store):
    # The CHECK constraint guards the table against writers that bypass add().
    row = dict(created_at="2024-01-01 00:00:00", image=b"", input28=bytes(784), correct=12, model_version="v")
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO feedback (created_at, image, input28, correct, model_version) "
                             "VALUES (:created_at, :image, :input28, :correct, :model_version)"), row)
    assert store.count() == 0


@pytest.mark.parametrize("pixels", [np.zeros((28, 27), np.uint8), np.zeros((1, 28, 28), np.uint8),
                                    np.zeros((28, 28), np.float32)])
def test_input28_that_is_not_a_28x28_uint8_image_is_refused(store, pixels):
    with pytest.raises(ValueError, match=r"input28 must be the \(28, 28\) uint8 image"):
        store.add(DRAWING, pixels, 1, 1, "v")
    assert store.count() == 0


def test_schema_version_is_recorded(store):
    with store.engine.begin() as conn:
        assert conn.execute(sa.text("SELECT version FROM schema_version")).all() == [(SCHEMA_VERSION,)]


def test_a_database_from_a_newer_version_is_refused_with_a_clear_message(feedback_db):
    with FeedbackStore(feedback_db) as store, store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE schema_version SET version = :v"), {"v": SCHEMA_VERSION + 1})
        location = store.location
    with pytest.raises(SchemaVersionError, match=rf"{re.escape(location)}.*schema version {SCHEMA_VERSION + 1}"
                                                 r".*upgrade digitrecognizer"):
        FeedbackStore(feedback_db)


def test_postgresql_urls_use_psycopg_3(postgres_url):
    assert postgres_url.startswith("postgresql://")
    with FeedbackStore(postgres_url) as store:
        assert (store.engine.dialect.name, store.engine.dialect.driver) == ("postgresql", "psycopg")


def test_after_the_server_drops_every_connection_the_next_correction_is_stored(postgres_url, postgres_server):
    # What a restart or failover looks like to the pool: each pooled connection is dead.
    with FeedbackStore(postgres_url) as store:
        store.add(DRAWING, digit_image(7), 1, 1, "v")
        admin = sa.create_engine(sa.make_url(postgres_server).set(drivername="postgresql+psycopg"))
        with admin.begin() as conn:
            dropped = conn.execute(sa.text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                           "WHERE datname = :db"), {"db": sa.make_url(postgres_url).database})
            assert dropped.scalar() >= 1
        admin.dispose()
        store.add(DRAWING, digit_image(8), 2, 2, "v")
        assert store.count() == 2


def test_without_the_postgresql_driver_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` now fails as if it weren't installed
    with pytest.raises(RuntimeError, match=r'driver is not installed.*pip install "digitrecognizer\[postgres\]"'):
        FeedbackStore("postgresql://someone@127.0.0.1/feedback")


def test_an_unreachable_server_is_unavailable_and_the_message_hides_the_password():
    with pytest.raises(StoreUnavailable, match=r"feedback database postgresql\+psycopg://someone:\*\*\*@") as err:
        FeedbackStore("postgresql://someone:s3cret@127.0.0.1:1/feedback?connect_timeout=5")  # nothing listens on 1
    assert "s3cret" not in str(err.value)


def test_a_database_url_other_than_sqlite_or_postgresql_is_refused():
    with pytest.raises(ValueError, match=r"mysql is not supported: give a file path, sqlite:///path or postgresql://"):
        FeedbackStore("mysql://someone@127.0.0.1/feedback")


def test_sqlite_files_use_wal_full_sync_and_a_busy_timeout(db):
    with FeedbackStore(db) as store, store.engine.connect() as conn:
        pragmas = [conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in ("journal_mode", "synchronous",
                                                                                 "busy_timeout")]
    assert pragmas == ["wal", 2, 5000]  # synchronous 2 is FULL
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone() == ("wal",)  # persisted in the file


def test_a_sqlite_url_and_a_plain_path_open_the_same_database(db):
    with FeedbackStore(db) as by_path:
        by_path.add(DRAWING, digit_image(4), 2, 2, "v")
    with FeedbackStore(f"sqlite:///{db}") as by_url:
        assert by_url.count() == 1


def test_the_default_database_lives_in_the_users_data_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert FeedbackStore.default_db_path() == tmp_path / "xdg" / "digitrecognizer" / "feedback.db"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert FeedbackStore.default_db_path() == tmp_path / "home" / ".local" / "share" / "digitrecognizer" / "feedback.db"
    assert not (tmp_path / "home").exists()  # computing the path creates nothing


def test_eight_threads_adding_at_once_lose_nothing(store):
    def add_25(worker):
        return [store.add(DRAWING, digit_image(worker * 100 + i), None, i % 10, f"t{worker}") for i in range(25)]

    with ThreadPoolExecutor(8) as pool:
        ids = [i for batch in pool.map(add_25, range(8)) for i in batch]
    assert len(set(ids)) == 200
    assert store.count() == 200


def test_stores_opening_a_new_database_at_once_create_its_schema_exactly_once(feedback_db):
    # Each `serve` worker opens the store at start-up; on a new database they all find no schema.
    barrier = threading.Barrier(8)

    def open_store(_):
        barrier.wait(timeout=30)
        with FeedbackStore(feedback_db) as store:
            return store.count()

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(open_store, range(8))) == [0] * 8
    with FeedbackStore(feedback_db) as store, store.engine.begin() as conn:
        assert conn.execute(sa.text("SELECT version FROM schema_version")).all() == [(SCHEMA_VERSION,)]


def _add_from_another_process(feedback_db, worker, start, added):
    start.wait(timeout=60)
    with FeedbackStore(feedback_db) as store:  # all open a database that has no schema yet: creating it races too
        added.put([store.add(DRAWING, digit_image(worker * 100 + i), None, worker, f"p{worker}-{i}")
                   for i in range(50)])


def test_several_processes_adding_at_once_lose_nothing_and_duplicate_nothing(feedback_db):
    ctx = multiprocessing.get_context("spawn")
    start, added = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_add_from_another_process, args=(feedback_db, w, start, added)) for w in range(4)]
    for p in procs:
        p.start()
    start.set()
    ids = [i for _ in procs for i in added.get(timeout=120)]
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert len(ids) == len(set(ids)) == 200
    with FeedbackStore(feedback_db) as store:
        assert store.count() == 200
        records = store.recent(limit=1000)
    assert sorted(r.id for r in records) == sorted(ids)
    assert sorted(r.model_version for r in records) == sorted(f"p{w}-{i}" for w in range(4) for i in range(50))


@pytest.fixture
def three_corrections(store):
    added = [(digit_image(10), 7, 1), (digit_image(11), None, 0), (digit_image(12), 9, 9)]
    for pixels, predicted, correct in added:
        store.add(DRAWING, pixels, predicted, correct, "v")
    return added


def test_export_npz_writes_exactly_what_was_added(store, three_corrections, tmp_path):
    assert store.export_npz(tmp_path / "out" / "feedback.npz") == 3
    with np.load(tmp_path / "out" / "feedback.npz") as npz:
        np.testing.assert_array_equal(npz["images"], np.stack([p for p, _, _ in three_corrections]))
        assert npz["images"].dtype == np.uint8 and npz["labels"].dtype == np.uint8
        assert npz["labels"].tolist() == [1, 0, 9]
        assert npz["predicted"].tolist() == [7, -1, 9]
    assert os.listdir(tmp_path / "out") == ["feedback.npz"]  # no temporary file left behind


def test_export_idx_writes_mnist_format_files_with_what_was_added(store, three_corrections, tmp_path):
    out = tmp_path / "idx"
    assert store.export_idx(out) == 3
    images, labels = read_idx(out / IDX_IMAGES, IMAGE_MAGIC), read_idx(out / IDX_LABELS, LABEL_MAGIC)
    np.testing.assert_array_equal(images, np.stack([p for p, _, _ in three_corrections]))
    assert labels.tolist() == [1, 0, 9]
    assert (out / IDX_IMAGES).read_bytes()[:16] == bytes.fromhex("00000803 00000003 0000001c 0000001c")
    assert sorted(os.listdir(out)) == sorted([IDX_IMAGES, IDX_LABELS])


def test_exporting_an_empty_store_writes_empty_arrays(store, tmp_path):
    assert store.export_npz(tmp_path / "empty.npz") == 0
    with np.load(tmp_path / "empty.npz") as npz:
        assert npz["images"].shape == (0, 28, 28) and npz["labels"].shape == (0,)
    assert store.export_idx(tmp_path) == 0
    assert read_idx(tmp_path / IDX_IMAGES, IMAGE_MAGIC).shape == (0, 28, 28)


def test_a_read_only_database_refuses_writes_as_unavailable_but_still_reads(feedback_db, read_only):
    with FeedbackStore(feedback_db) as store:
        kept = store.add(DRAWING, digit_image(5), 2, 3, "v")
        location = store.location
    with read_only(feedback_db) as url, FeedbackStore(url) as store:
        database_name = Path(location).name  # feedback.db, or the PostgreSQL database's
        with pytest.raises(StoreUnavailable, match=rf"feedback database .*{database_name}.*storing a correction failed"):
            store.add(DRAWING, digit_image(6), 1, 1, "v")
        assert store.count() == 1
        assert store.get(kept).correct == 3


def test_an_in_memory_database_is_shared_by_threads():
    store = FeedbackStore("sqlite:///:memory:")
    threads = [threading.Thread(target=store.add, args=(DRAWING, np.zeros((28, 28), np.uint8), None, 4, "t"))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count() == 4
    store.close()


# -- what a correction costs the store ------------------------------------------------------------

def test_the_store_keeps_a_bounded_grayscale_copy_of_the_drawing_not_the_upload(store):
    from PIL import Image
    import io

    photo = np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)  # a noisy 12 MP photo
    upload = io.BytesIO()
    Image.fromarray(photo).save(upload, "PNG")
    upload = upload.getvalue() + b"trailing bytes after the PNG's end" * 1000
    record = store.get(store.add(upload, digit_image(1), 1, 2, "v"))
    kept = Image.open(io.BytesIO(record.image))
    assert kept.format == "PNG" and kept.mode == "L" and max(kept.size) == DRAWING_MAX_SIDE_PX
    assert kept.size == (256, 192) and len(record.image) < 70_000 < len(upload)


def test_a_store_at_its_quota_of_rows_refuses_more_and_keeps_what_it_has(feedback_db):
    with FeedbackStore(feedback_db, quota=Quota(max_rows=3)) as store:
        ids = [store.add(DRAWING, digit_image(i), None, i, "v") for i in range(3)]
        with pytest.raises(QuotaReached, match="3 corrections"):
            store.add(DRAWING, digit_image(9), None, 9, "v")
        assert store.count() == 3 and all(store.get(i) for i in ids)


def test_a_store_at_its_quota_of_bytes_refuses_more(feedback_db):
    one_row = len(drawing_png(DRAWING)) + 28 * 28
    with FeedbackStore(feedback_db, quota=Quota(max_rows=100, max_bytes=2 * one_row)) as store:
        store.add(DRAWING, digit_image(1), None, 1, "v")
        store.add(DRAWING, digit_image(2), None, 2, "v")
        with pytest.raises(QuotaReached, match="MB"):
            store.add(DRAWING, digit_image(3), None, 3, "v")
        assert store.usage() == (2, 2 * one_row)


@pytest.mark.parametrize("text, quota", [("100000,1GB", Quota(100_000, 10**9)), ("5,250kB", Quota(5, 250_000)),
                                         (" 10 , 2.5MB ", Quota(10, 2_500_000)), ("7,4096", Quota(7, 4096))])
def test_quota_is_written_rows_comma_size(text, quota):
    assert Quota.parse(text) == quota


@pytest.mark.parametrize("text", ["", "1GB", "10,", "ten,1GB", "10,1TB", "-1,1GB"])
def test_a_malformed_quota_is_refused(text):
    with pytest.raises(ValueError, match="ROWS,SIZE"):
        Quota.parse(text)


# The tables as schema versions 1 and 2 wrote them (2 only changed what `image` holds).
OLD_SCHEMA = sa.MetaData()
sa.Table("schema_version", OLD_SCHEMA, sa.Column("version", sa.Integer, nullable=False))
OLD_FEEDBACK = sa.Table(
    "feedback", OLD_SCHEMA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("image", sa.LargeBinary, nullable=False), sa.Column("input28", sa.LargeBinary, nullable=False),
    sa.Column("predicted", sa.Integer), sa.Column("correct", sa.Integer, nullable=False),
    sa.Column("model_version", sa.Text, nullable=False), sqlite_autoincrement=True)


def old_database(feedback_db, version: int, rows: list[dict]) -> list[int]:
    """A database as an older digitrecognizer left it, holding `rows`; their ids."""
    from datetime import datetime

    from digitrecognizer.store_db import parse_url

    url = parse_url(feedback_db)
    if url.get_backend_name() == "sqlite":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    if url.get_backend_name() == "sqlite":
        with engine.connect() as conn:  # older versions wrote WAL databases too
            conn.exec_driver_sql("PRAGMA journal_mode = WAL")
    with engine.begin() as conn:
        OLD_SCHEMA.create_all(conn)
        conn.execute(OLD_SCHEMA.tables["schema_version"].insert().values(version=version))
        ids = [conn.execute(OLD_FEEDBACK.insert().values(created_at=datetime.now(timezone.utc), model_version="old",
                                                         **row)).inserted_primary_key[0] for row in rows]
    engine.dispose()
    return ids


def schema_versions(store) -> list[int]:
    with store.engine.begin() as conn:
        return conn.execute(sa.text("SELECT version FROM schema_version ORDER BY version")).scalars().all()


def test_a_version_1_database_is_upgraded_in_place(feedback_db):
    """Version 1 kept each upload as received (up to 5 MB); opening such a database replaces every upload by
    the bounded copy of its drawing, and keeps everything else."""
    from PIL import Image
    import io

    big = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (1500, 1500), dtype=np.uint8)).save(big, "PNG")
    uploads = [big.getvalue() + b"junk" * 10_000, b"not an image at all"]
    ids = old_database(feedback_db, 1, [dict(image=upload, input28=digit_image(i).tobytes(), predicted=i,
                                             correct=i + 1) for i, upload in enumerate(uploads)])

    with FeedbackStore(feedback_db) as store:
        upgraded = [store.get(i) for i in ids]
        versions = schema_versions(store)
    assert versions == [1, 2, 3]
    assert upgraded[0].image == drawing_png(uploads[0])
    assert upgraded[1].image == drawing_png(digit_image(1))  # undecodable: the 28x28 image the model saw
    assert [(r.predicted, r.correct, r.model_version) for r in upgraded] == [(0, 1, "old"), (1, 2, "old")]
    np.testing.assert_array_equal(upgraded[0].input28, digit_image(0))


def test_a_version_2_database_is_upgraded_and_its_choices_of_the_shown_digit_become_confirmations(feedback_db):
    png = drawing_png(DRAWING)
    rows = [dict(image=png, input28=digit_image(i).tobytes(), predicted=p, correct=c)
            for i, (p, c) in enumerate([(3, 8), (5, 5), (None, 1)])]
    ids = old_database(feedback_db, 2, rows)

    with FeedbackStore(feedback_db) as store:
        assert schema_versions(store) == [2, 3]
        assert [store.get(i).kind for i in ids] == [CORRECTION, CONFIRMATION, CORRECTION]
        assert [(store.get(i).predicted, store.get(i).correct) for i in ids] == [(3, 8), (5, 5), (None, 1)]
        assert store.count() == 3 and store.count(CONFIRMATION) == 1
        new = store.add(DRAWING, digit_image(9), 2, 7, "new")  # and the upgraded tables take new rows
        assert store.get(new).kind == CORRECTION and new > max(ids)


def test_a_read_only_version_2_database_is_read_as_it_is(feedback_db, read_only):
    ids = old_database(feedback_db, 2, [dict(image=drawing_png(DRAWING), input28=digit_image(0).tobytes(),
                                             predicted=4, correct=9)])
    with read_only(feedback_db, create=False) as url, FeedbackStore(url) as store:
        assert store.version == 2
        assert (store.get(ids[0]).correct, store.get(ids[0]).kind) == (9, CORRECTION)
        assert store.count() == 1 and len(store.recent()) == 1


def test_choosing_the_digit_the_model_gave_is_a_confirmation_and_changing_it_makes_a_correction(store):
    row = store.add(DRAWING, digit_image(1), 4, 4, "v")
    assert store.get(row).kind == CONFIRMATION
    assert store.change(row, DRAWING, 9)
    assert (store.get(row).correct, store.get(row).kind) == (9, CORRECTION)
    assert store.change(row, DRAWING, 4) and store.get(row).kind == CONFIRMATION
    assert store.count() == 1


def test_a_number_is_kept_whole_with_its_boxes_and_each_digit_as_a_row(store):
    boxes = [[10, 20, 60, 90], [70, 22, 120, 95]]
    digits = [DigitCut(digit_image(0), 3, 3), DigitCut(digit_image(1), 8, 6)]
    number = store.add_number(DRAWING, "38", "36", boxes, digits, "v")

    record = store.get_number(number)
    assert (record.read_as, record.correct, record.boxes) == ("38", "36", boxes)
    rows = sorted(store.recent(), key=lambda r: r.id)
    assert [(r.predicted, r.correct, r.kind, r.number_id) for r in rows] == [
        (3, 3, CONFIRMATION, number), (8, 6, CORRECTION, number)]


def test_a_number_changed_from_the_same_drawing_replaces_its_digits(store):
    boxes = [[0, 0, 5, 5], [6, 0, 9, 5]]
    first = store.add_number(DRAWING, "17", "11", boxes, [DigitCut(digit_image(0), 1, 1),
                                                          DigitCut(digit_image(1), 7, 1)], "v")
    again = store.add_number(DRAWING, "17", "17", boxes, [DigitCut(digit_image(0), 1, 1),
                                                          DigitCut(digit_image(1), 7, 7)], "v", replaces=first)
    assert again == first and store.get_number(first).correct == "17"
    assert sorted(r.correct for r in store.recent()) == [1, 7] and store.count() == 2
    other = store.add_number(np.zeros((9, 9), np.uint8), "17", "17", boxes, [], "v", replaces=first)
    assert other != first  # another drawing can't replace it: a new number


@pytest.mark.parametrize("correct", ["", "3a", "１２", "-1"])
def test_a_number_correction_must_be_digits(store, correct):
    with pytest.raises(ValueError, match="digits"):
        store.add_number(DRAWING, "12", correct, [], [], "v")
