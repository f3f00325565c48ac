"""Feedback store: what people say the model read (corrections, confirmations, whole numbers), each with the
28x28 image the model saw and a bounded copy of the drawing, in SQLite or PostgreSQL, within a quota."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import Connection, Engine

from .data import IMAGE_MAGIC, LABEL_MAGIC
from .files import atomic_write
from .store_db import (CONFIRMATION, CORRECTION, FEEDBACK_COLUMNS_BEFORE_3, INPUT28_BYTES, QUOTA_LOCK_KEY,
                       SCHEMA_VERSION, boxes_json, create_engine, create_schema, drawing_png, feedback, lock,
                       lock_schema, numbers, parse_url, read_version, upgrade, usage)

__all__ = ["FeedbackStore", "FeedbackRecord", "NumberRecord", "Quota", "QuotaReached", "SchemaVersionError",
           "StoreUnavailable", "DigitCut", "kind_of", "drawing_png", "CONFIRMATION", "CORRECTION", "SCHEMA_VERSION",
           "IDX_IMAGES", "IDX_LABELS"]

log = logging.getLogger(__name__)
# How long after it was stored a correction may still be changed by whoever sent it (a second thought on the
# same drawing), so that one drawing makes one correction.
CHANGE_WINDOW = timedelta(minutes=30)
# A read-only transaction (a hot standby after failover, default_transaction_read_only): wait, don't crash.
READ_ONLY_SQLSTATE = "25006"
IDX_IMAGES, IDX_LABELS = "feedback-images-idx3-ubyte", "feedback-labels-idx1-ubyte"


class StoreUnavailable(RuntimeError):
    """The database can't be read or written right now (read-only, disk full, locked too long, server
    down): HTTP 503."""


class QuotaReached(RuntimeError):
    """The store holds as many corrections, or bytes, as its quota allows: HTTP 507."""


class SchemaVersionError(RuntimeError):
    """The database was written by a newer digitrecognizer whose schema this code doesn't know."""


@dataclass(frozen=True)
class Quota:
    """The most corrections a store keeps, in rows and in bytes (the drawings and 28x28 images together)."""

    max_rows: int = 100_000
    max_bytes: int = 1_000_000_000

    @classmethod
    def parse(cls, text: str) -> Quota:
        """'ROWS,SIZE', e.g. '100000,1GB' (SIZE in B, kB, MB or GB)."""
        match = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+(?:\.\d+)?)\s*(B|kB|KB|MB|GB)?\s*", text)
        if not match:
            raise ValueError(f"feedback quota {text!r}: give ROWS,SIZE, e.g. 100000,1GB")
        rows, size, unit = match.groups()
        scale = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}[unit or "B"]
        return cls(int(rows), int(float(size) * scale))

    def __str__(self) -> str:
        return f"{self.max_rows:,} corrections and {self.max_bytes / 1e6:,.0f} MB"


@dataclass(frozen=True)
class FeedbackRecord:
    id: int
    created_at: datetime  # UTC, timezone-aware
    image: bytes = field(repr=False)  # the drawing as a grayscale PNG (drawing_png)
    input28: np.ndarray = field(repr=False, compare=False)  # (28, 28) uint8, read-only
    predicted: int | None
    correct: int
    model_version: str
    kind: str = CORRECTION  # or CONFIRMATION: the person said the model was right
    number_id: int | None = None  # the number (NumberRecord) this digit was cut from


@dataclass(frozen=True)
class NumberRecord:
    id: int
    created_at: datetime
    image: bytes = field(repr=False)
    read_as: str  # what the model read; '?' marks a mark it refused
    correct: str  # what the person says it is
    boxes: list[list[int]]  # [left, top, right, bottom] of each mark, in the drawing's pixels
    model_version: str


@dataclass(frozen=True)
class DigitCut:
    """One digit of a number: the 28x28 image the model saw of its mark, what it read, what it is."""

    input28: np.ndarray
    predicted: int | None
    correct: int


class FeedbackStore:
    """One Engine shared by all threads; every method runs in its own short transaction."""

    def __init__(self, url: str | os.PathLike | None = None, quota: Quota | None = None) -> None:
        self.quota = quota
        parsed = parse_url(url if url is not None else self.default_db_path())
        # The password never reaches a log line or an error message.
        self.location = parsed.database if parsed.get_backend_name() == "sqlite" else parsed.render_as_string()
        with self._guard("opening"):
            self.engine: Engine = create_engine(parsed)
        if isinstance(self.engine.pool, sa.pool.StaticPool):
            self._serial = threading.Lock()  # one shared connection takes one transaction at a time
        self._writer = self.engine.execution_options(for_write=True)
        try:
            self.version = self._init_schema()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def default_db_path() -> Path:
        data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
        return Path(data_home) / "digitrecognizer" / "feedback.db"

    def add(self, drawing, input28: np.ndarray, predicted: int | None, correct: int, model_version: str) -> int:
        """Stores what the person says a drawing is: a correction, or a confirmation when `correct` is what the
        model `predicted`. `drawing` is anything preprocess.decode reads, kept as `drawing_png` makes it.
        Raises QuotaReached when the store is full, StoreUnavailable when its database can't be written."""
        row = _digit_row(drawing_png(drawing), DigitCut(input28, predicted, correct), model_version)
        with self._guard("storing a correction"), self._writer.begin() as conn:
            self._check_quota(conn, len(row["image"]) + INPUT28_BYTES)
            return conn.execute(feedback.insert().values(**row)).inserted_primary_key[0]

    def change(self, id: int, drawing, correct: int) -> bool:
        """Changes the right digit of row `id` if it was stored from the same drawing within CHANGE_WINDOW:
        only its sender has that drawing. False (nothing changed) otherwise."""
        _check_digit("correct", correct)
        kind = sa.case((feedback.c.predicted == int(correct), CONFIRMATION), else_=CORRECTION)
        query = (feedback.update().where(feedback.c.id == int(id), feedback.c.image == drawing_png(drawing),
                                         feedback.c.number_id.is_(None), feedback.c.created_at >= _recent())
                 .values(correct=int(correct), kind=kind))
        with self._guard("changing a correction"), self._writer.begin() as conn:
            return conn.execute(query).rowcount == 1

    def add_number(self, drawing, read_as: str, correct: str, boxes: list, digits: list[DigitCut],
                   model_version: str, replaces: int | None = None) -> int:
        """Stores a whole number with the boxes the model read, and each of its `digits` as a digit row (when
        the person typed as many digits as there were marks). `replaces`: a number stored from the same drawing
        within CHANGE_WINDOW, which this one replaces with its digits. Returns the number's id."""
        if not correct.isascii() or not correct.isdigit():
            raise ValueError(f"correct must be digits 0-9, got {correct!r}")
        image = drawing_png(drawing)
        row = dict(created_at=_now(), image=image, read_as=str(read_as), correct=correct, boxes=boxes_json(boxes),
                   model_version=str(model_version))
        digit_rows = [_digit_row(image, d, model_version) for d in digits]
        with self._guard("storing a number"), self._writer.begin() as conn:
            number_id = self._replaceable(conn, replaces, image)
            if number_id is None:
                self._check_quota(conn, len(image) + len(digits) * (len(image) + INPUT28_BYTES))
                number_id = conn.execute(numbers.insert().values(**row)).inserted_primary_key[0]
            else:
                conn.execute(numbers.update().where(numbers.c.id == number_id).values(**row))
                conn.execute(feedback.delete().where(feedback.c.number_id == number_id))
            for digit_row in digit_rows:
                conn.execute(feedback.insert().values(**digit_row, number_id=number_id))
        return number_id

    def _replaceable(self, conn: Connection, id: int | None, image: bytes) -> int | None:
        if id is None:
            return None
        query = sa.select(numbers.c.id).where(numbers.c.id == int(id), numbers.c.image == image,
                                              numbers.c.created_at >= _recent())
        return conn.execute(query).scalar()

    def usage(self) -> tuple[int, int]:
        """Rows stored, and their bytes (drawings and 28x28 images)."""
        with self._guard("counting"), self.engine.begin() as conn:
            return usage(conn, self.version)

    def _check_quota(self, conn: Connection, adding_bytes: int) -> None:
        # Counted inside the writing transaction, with writers serialised (SQLite: BEGIN IMMEDIATE holds the
        # write lock; PostgreSQL: an advisory lock), so workers writing at once can't overshoot it together.
        if self.quota is None:
            return
        lock(conn, QUOTA_LOCK_KEY)
        rows, size = usage(conn, self.version)
        if rows + 1 > self.quota.max_rows or size + adding_bytes > self.quota.max_bytes:
            raise QuotaReached(f"it holds {rows:,} corrections ({size / 1e6:,.1f} MB) and its quota is "
                               f"{self.quota}: export them (digitrecognizer feedback export) and start a new "
                               f"database, or raise --feedback-quota")

    def get(self, id: int) -> FeedbackRecord | None:
        with self._guard("reading"), self.engine.begin() as conn:
            row = conn.execute(self._select().where(feedback.c.id == id)).first()
        return None if row is None else _record(row)

    def get_number(self, id: int) -> NumberRecord | None:
        with self._guard("reading"), self.engine.begin() as conn:
            row = conn.execute(numbers.select().where(numbers.c.id == id)).first() if self.version >= 3 else None
        return None if row is None else NumberRecord(row.id, _utc(row.created_at), row.image, row.read_as,
                                                     row.correct, json.loads(row.boxes), row.model_version)

    def count(self, kind: str | None = None) -> int:
        """Digit rows stored: all, or those of one kind (CORRECTION or CONFIRMATION)."""
        query = sa.select(sa.func.count()).select_from(feedback)
        if kind is not None and self.version >= 3:
            query = query.where(feedback.c.kind == kind)
        with self._guard("counting"), self.engine.begin() as conn:
            return conn.execute(query).scalar_one()

    def recent(self, limit: int = 20) -> list[FeedbackRecord]:
        """Newest first."""
        query = self._select().order_by(feedback.c.id.desc()).limit(int(limit))
        with self._guard("reading"), self.engine.begin() as conn:
            return [_record(row) for row in conn.execute(query)]

    def _select(self) -> sa.Select:
        """Every column of `feedback` that this database has (an old read-only one has fewer)."""
        if self.version >= 3:
            return feedback.select()
        return sa.select(*(feedback.c[name] for name in FEEDBACK_COLUMNS_BEFORE_3))

    def export_npz(self, path: str | os.PathLike) -> int:
        """`images` (N,28,28) uint8, `labels` (N,) uint8 and `predicted` (N,) int8 (-1: not a digit), oldest
        first: corrections, confirmations and the digits of numbers, all labelled by a person."""
        images, labels, predicted = self._arrays()
        atomic_write(Path(path), lambda f: np.savez(f, images=images, labels=labels, predicted=predicted))
        return len(labels)

    def export_idx(self, folder: str | os.PathLike) -> int:
        """The MNIST IDX format, so anything that reads MNIST reads the corrections."""
        images, labels, _ = self._arrays()
        n, folder = len(labels), Path(folder)
        image_header, label_header = struct.pack(">4I", IMAGE_MAGIC, n, 28, 28), struct.pack(">2I", LABEL_MAGIC, n)
        atomic_write(folder / IDX_IMAGES, lambda f: f.write(image_header + images.tobytes()))
        atomic_write(folder / IDX_LABELS, lambda f: f.write(label_header + labels.tobytes()))
        return n

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        query = sa.select(feedback.c.input28, feedback.c.correct, feedback.c.predicted).order_by(feedback.c.id)
        with self._guard("reading"), self.engine.begin() as conn:  # one snapshot, so images and labels agree
            rows = conn.execute(query).all()
        images = np.frombuffer(b"".join(r.input28 for r in rows), dtype=np.uint8).reshape(-1, 28, 28)
        labels = np.array([r.correct for r in rows], dtype=np.uint8)
        predicted = np.array([-1 if r.predicted is None else r.predicted for r in rows], dtype=np.int8)
        return images, labels, predicted

    def _init_schema(self) -> int:
        """The database's schema version, after creating or upgrading it where it can be written."""
        # Read first: a read-only database that already has its schema must still open.
        with self._guard("reading the schema version"), self.engine.begin() as conn:
            version = read_version(conn)
        if version is None:
            with self._guard("creating the schema"), self._writer.begin() as conn:
                lock_schema(conn)
                version = read_version(conn)  # another process may have created it meanwhile
                if version is None:
                    create_schema(conn)
                    version = SCHEMA_VERSION
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"the feedback database {self.location} has schema version {version}, but this digitrecognizer "
                f"only knows up to version {SCHEMA_VERSION}: upgrade digitrecognizer or use another --db"
            )
        return self._upgrade(version) if version < SCHEMA_VERSION else version

    def _upgrade(self, version: int) -> int:
        """Upgrades in place, in one transaction, nothing lost (store_db.upgrade says how). A database that
        can't be written (read-only) is read as it is, at its own version."""
        try:
            with self._guard("upgrading the schema"), self._writer.begin() as conn:
                lock_schema(conn)
                version = read_version(conn)  # another process may have upgraded it meanwhile
                if version >= SCHEMA_VERSION:
                    return version
                done = upgrade(conn, version)
            log.warning("feedback database %s upgraded from schema version %d to %d: %s", self.location, version,
                        SCHEMA_VERSION, done)
            return SCHEMA_VERSION
        except StoreUnavailable as err:
            log.warning("feedback database %s stays at schema version %d (%s)", self.location, version, err)
            return version

    _serial: contextlib.AbstractContextManager = contextlib.nullcontext()

    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            with self._serial:
                yield
        except (exc.OperationalError, exc.TimeoutError, OSError) as err:
            reason = getattr(err, "orig", None) or err
            raise StoreUnavailable(f"feedback database {self.location}: {action} failed: {reason}") from err
        except exc.DBAPIError as err:
            if getattr(err.orig, "sqlstate", None) != READ_ONLY_SQLSTATE:
                raise
            raise StoreUnavailable(f"feedback database {self.location}: {action} failed: {err.orig}") from err


def _check_digit(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= 9:
        raise ValueError(f"{name} must be a digit 0..9, got {value!r}")


def _digit_row(image: bytes, digit: DigitCut, model_version: str) -> dict:
    _check_digit("correct", digit.correct)
    if digit.predicted is not None:
        _check_digit("predicted", digit.predicted)
    pixels = np.asarray(digit.input28)
    if pixels.shape != (28, 28) or pixels.dtype != np.uint8:
        raise ValueError(f"input28 must be the (28, 28) uint8 image the model saw, not {pixels.dtype} {pixels.shape}")
    predicted = None if digit.predicted is None else int(digit.predicted)
    return dict(created_at=_now(), image=image, input28=pixels.tobytes(), predicted=predicted,
                correct=int(digit.correct), model_version=str(model_version),
                kind=kind_of(predicted, int(digit.correct)))


def kind_of(predicted: int | None, correct: int) -> str:
    """A confirmation when the person chose the digit the model gave, else a correction."""
    return CONFIRMATION if predicted == correct else CORRECTION


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _recent() -> datetime:
    return _now() - CHANGE_WINDOW


def _utc(created: datetime) -> datetime:
    # SQLite hands back the naive UTC time that was stored; PostgreSQL the instant in the session's time zone.
    return created.astimezone(timezone.utc) if created.tzinfo else created.replace(tzinfo=timezone.utc)


def _record(row: sa.Row) -> FeedbackRecord:
    pixels = np.frombuffer(row.input28, dtype=np.uint8).reshape(28, 28)  # frombuffer of bytes: already read-only
    extra = row._mapping
    return FeedbackRecord(row.id, _utc(row.created_at), row.image, pixels, row.predicted, row.correct,
                          row.model_version, extra.get("kind", CORRECTION), extra.get("number_id"))
