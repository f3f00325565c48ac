"""Feedback store: corrections users send, kept in SQLite (or PostgreSQL) through SQLAlchemy Core, each with the
28x28 image the model saw and a bounded grayscale copy of the drawing, within a quota of rows and bytes."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sqlite3
import struct
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from PIL import Image
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection, Engine, make_url

from . import preprocess
from .data import IMAGE_MAGIC, LABEL_MAGIC
from .files import atomic_write

log = logging.getLogger(__name__)
# 2: `image` holds the drawing as an 8-bit grayscale PNG at most DRAWING_MAX_SIDE_PX a side, no longer the
# upload as received (up to 5 MB, with whatever metadata or trailing bytes it carried).
SCHEMA_VERSION = 2
DRAWING_MAX_SIDE_PX = 256  # ten times the model's 20 px digit box: enough to preprocess again later
INPUT28_BYTES = 28 * 28
UPGRADE_BATCH_ROWS = 200
BUSY_TIMEOUT_MS = 5000
# How long after it was stored a correction may still be changed by whoever sent it (a second thought on the
# same drawing), so that one drawing makes one correction.
CHANGE_WINDOW = timedelta(minutes=30)
SCHEMA_LOCK_KEY = 0x64696769  # PostgreSQL advisory lock ids: constants other apps on the server don't use
QUOTA_LOCK_KEY = SCHEMA_LOCK_KEY + 1
# A read-only transaction (a hot standby after failover, default_transaction_read_only): wait, don't crash.
READ_ONLY_SQLSTATE = "25006"
IDX_IMAGES, IDX_LABELS = "feedback-images-idx3-ubyte", "feedback-labels-idx1-ubyte"

metadata = sa.MetaData()
schema_version = sa.Table("schema_version", metadata, sa.Column("version", sa.Integer, nullable=False))
feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("image", sa.LargeBinary, nullable=False),  # the drawing, bounded (drawing_png), to preprocess again
    sa.Column("input28", sa.LargeBinary, nullable=False),  # 784 bytes, row-major: what the model saw
    sa.Column("predicted", sa.Integer, nullable=True),  # NULL: the model said "not a digit"
    sa.Column("correct", sa.Integer, nullable=False),
    sa.Column("model_version", sa.Text, nullable=False),
    sa.CheckConstraint("correct BETWEEN 0 AND 9", name="ck_feedback_correct"),
    sa.CheckConstraint("predicted IS NULL OR predicted BETWEEN 0 AND 9", name="ck_feedback_predicted"),
    sa.CheckConstraint("length(input28) = 784", name="ck_feedback_input28"),
    sqlite_autoincrement=True,  # ids are quoted in logs and bug reports: never reuse one
)


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


def drawing_png(image) -> bytes:
    """The copy of a drawing the store keeps: 8-bit grayscale, at most DRAWING_MAX_SIDE_PX a side, as PNG.
    Takes what preprocess.decode takes (a luminance array, image bytes, a PIL image)."""
    gray = preprocess.decode(image)[0]
    pixels = Image.fromarray(np.round(np.clip(gray, 0.0, 1.0) * 255).astype(np.uint8))
    pixels.thumbnail((DRAWING_MAX_SIDE_PX, DRAWING_MAX_SIDE_PX), Image.Resampling.BOX)
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


@dataclass(frozen=True)
class FeedbackRecord:
    id: int
    created_at: datetime  # UTC, timezone-aware
    image: bytes = field(repr=False)  # the drawing as a grayscale PNG (drawing_png)
    input28: np.ndarray = field(repr=False, compare=False)  # (28, 28) uint8, read-only
    predicted: int | None
    correct: int
    model_version: str


class FeedbackStore:
    """One Engine shared by all threads; every method runs in its own short transaction."""

    def __init__(self, url: str | os.PathLike | None = None, quota: Quota | None = None) -> None:
        self.quota = quota
        if url is None:
            url = self.default_db_path()
        parsed = _parse_url(url)
        # The password never reaches a log line or an error message.
        self.location = parsed.database if parsed.get_backend_name() == "sqlite" else parsed.render_as_string()
        with self._guard("opening"):
            if parsed.get_backend_name() == "sqlite":
                parsed = _prepare_sqlite_file(parsed)
            if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
                # One in-memory database shared by all threads (each connection would otherwise get its own);
                # its single connection takes one transaction at a time, so the store serialises access.
                self.engine: Engine = sa.create_engine(parsed, poolclass=sa.pool.StaticPool,
                                                       connect_args={"check_same_thread": False})
                self._serial = threading.Lock()
            elif parsed.get_backend_name() == "sqlite":
                self.engine = sa.create_engine(parsed)
            else:
                self.engine = _create_postgresql_engine(parsed)
            if self.engine.dialect.name == "sqlite":
                _configure_sqlite(self.engine)
        self._writer = self.engine.execution_options(for_write=True)
        try:
            self._init_schema()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def default_db_path() -> Path:
        data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
        return Path(data_home) / "digitrecognizer" / "feedback.db"

    def add(self, drawing, input28: np.ndarray, predicted: int | None, correct: int, model_version: str) -> int:
        """Stores a correction; `drawing` is anything preprocess.decode reads, kept as `drawing_png` makes it.
        Raises QuotaReached when the store is full, StoreUnavailable when its database can't be written."""
        _check_digit("correct", correct)
        if predicted is not None:
            _check_digit("predicted", predicted)
        pixels = np.asarray(input28)
        if pixels.shape != (28, 28) or pixels.dtype != np.uint8:
            got = f"{pixels.dtype} {pixels.shape}"
            raise ValueError(f"input28 must be the (28, 28) uint8 image the model saw, not {got}")
        row = dict(
            created_at=datetime.now(timezone.utc),
            image=drawing_png(drawing),
            input28=pixels.tobytes(),
            predicted=None if predicted is None else int(predicted),
            correct=int(correct),
            model_version=str(model_version),
        )
        with self._guard("storing a correction"), self._writer.begin() as conn:
            if self.quota is not None:
                self._check_quota(conn, len(row["image"]) + INPUT28_BYTES)
            return conn.execute(feedback.insert().values(**row)).inserted_primary_key[0]

    def change(self, id: int, drawing, correct: int) -> bool:
        """Changes the right digit of correction `id` if it was stored from the same drawing within CHANGE_WINDOW:
        only its sender has that drawing. False (nothing changed) otherwise."""
        _check_digit("correct", correct)
        recent = datetime.now(timezone.utc) - CHANGE_WINDOW
        query = (feedback.update().where(feedback.c.id == int(id), feedback.c.image == drawing_png(drawing),
                                         feedback.c.created_at >= recent).values(correct=int(correct)))
        with self._guard("changing a correction"), self._writer.begin() as conn:
            return conn.execute(query).rowcount == 1

    def usage(self) -> tuple[int, int]:
        """Corrections stored, and their bytes (drawings and 28x28 images)."""
        with self._guard("counting"), self.engine.begin() as conn:
            return _usage(conn)

    def _check_quota(self, conn: Connection, adding_bytes: int) -> None:
        # Counted inside the writing transaction, with writers serialised (SQLite: BEGIN IMMEDIATE holds the
        # write lock; PostgreSQL: an advisory lock), so workers writing at once can't overshoot it together.
        _lock(conn, QUOTA_LOCK_KEY)
        rows, size = _usage(conn)
        if rows + 1 > self.quota.max_rows or size + adding_bytes > self.quota.max_bytes:
            raise QuotaReached(f"it holds {rows:,} corrections ({size / 1e6:,.1f} MB) and its quota is "
                               f"{self.quota}: export them (digitrecognizer feedback export) and start a new "
                               f"database, or raise --feedback-quota")

    def get(self, id: int) -> FeedbackRecord | None:
        with self._guard("reading"), self.engine.begin() as conn:
            row = conn.execute(feedback.select().where(feedback.c.id == id)).first()
        return None if row is None else _record(row)

    def count(self) -> int:
        with self._guard("counting"), self.engine.begin() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(feedback)).scalar_one()

    def recent(self, limit: int = 20) -> list[FeedbackRecord]:
        """Newest first."""
        query = feedback.select().order_by(feedback.c.id.desc()).limit(int(limit))
        with self._guard("reading"), self.engine.begin() as conn:
            return [_record(row) for row in conn.execute(query)]

    def export_npz(self, path: str | os.PathLike) -> int:
        """`images` (N,28,28) uint8, `labels` (N,) uint8 and `predicted` (N,) int8 (-1: not a digit), oldest first."""
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

    def _init_schema(self) -> None:
        # Read first: a read-only database that already has its schema must still open.
        with self._guard("reading the schema version"), self.engine.begin() as conn:
            version = _read_version(conn)
        if version is None:
            with self._guard("creating the schema"), self._writer.begin() as conn:
                _lock_schema(conn)
                version = _read_version(conn)  # another process may have created it meanwhile
                if version is None:
                    metadata.create_all(conn)
                    conn.execute(schema_version.insert().values(version=SCHEMA_VERSION))
                    version = SCHEMA_VERSION
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"the feedback database {self.location} has schema version {version}, but this digitrecognizer "
                f"only knows up to version {SCHEMA_VERSION}: upgrade digitrecognizer or use another --db"
            )
        if version < SCHEMA_VERSION:
            self._upgrade()

    def _upgrade(self) -> None:
        """Version 1 to 2, in place and in one transaction: each stored upload is replaced by its bounded copy.
        A database that can't be written (read-only) is read as it is: its rows have the same columns."""
        try:
            with self._guard("upgrading the schema"), self._writer.begin() as conn:
                _lock_schema(conn)
                if _read_version(conn) >= SCHEMA_VERSION:  # another process upgraded it meanwhile
                    return
                count = _shrink_uploads(conn)
                conn.execute(schema_version.insert().values(version=SCHEMA_VERSION))
            log.warning("feedback database %s upgraded to schema version %d: %d stored uploads replaced by "
                        "bounded copies of their drawings", self.location, SCHEMA_VERSION, count)
        except StoreUnavailable as err:
            log.warning("feedback database %s stays at schema version 1 (%s)", self.location, err)

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


def _record(row: sa.Row) -> FeedbackRecord:
    pixels = np.frombuffer(row.input28, dtype=np.uint8).reshape(28, 28)  # frombuffer of bytes: already read-only
    # SQLite hands back the naive UTC time that was stored; PostgreSQL the instant in the session's time zone.
    created = row.created_at
    created = created.astimezone(timezone.utc) if created.tzinfo else created.replace(tzinfo=timezone.utc)
    return FeedbackRecord(row.id, created, row.image, pixels, row.predicted, row.correct, row.model_version)


def _parse_url(url: str | os.PathLike) -> URL:
    """A path means a SQLite file; plain postgresql:// URLs get psycopg 3, the driver the `postgres` extra installs."""
    if "://" not in str(url):
        return URL.create("sqlite", database=str(url))
    parsed = make_url(str(url))
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres") and "+" not in parsed.drivername:
        return parsed.set(drivername="postgresql+psycopg")  # "postgres://" too: Heroku and others hand those out
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"feedback database {parsed.render_as_string()}: {backend} is not supported: "
                         f"give a file path, sqlite:///path or postgresql://user:pass@host/db")
    return parsed


def _create_postgresql_engine(url: URL) -> Engine:
    try:
        # pre-ping: after the server restarts or fails over, pooled connections are dead; without the check
        # each one would fail a correction with 503 once before the pool replaced it. It costs a round trip.
        return sa.create_engine(url, pool_pre_ping=True)
    except ImportError as err:
        raise RuntimeError(f"feedback database {url.render_as_string()}: the PostgreSQL driver is not installed "
                           f"({err}): pip install \"digitrecognizer[postgres]\"") from err


def _lock_schema(conn: Connection) -> None:
    """Serialise schema creation between processes that open a new database at once (the workers of `serve`).
    SQLite's BEGIN IMMEDIATE already holds the database's write lock; PostgreSQL takes a transaction-scoped
    advisory lock, released at commit, after which the others find the tables."""
    _lock(conn, SCHEMA_LOCK_KEY)


def _lock(conn: Connection, key: int) -> None:
    """A transaction-scoped lock on `key` between processes (PostgreSQL; SQLite's writers already take turns)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


def _usage(conn: Connection) -> tuple[int, int]:
    rows, size = conn.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(sa.func.length(
        feedback.c.image)), 0))).one()
    return int(rows), int(size) + int(rows) * INPUT28_BYTES


def _shrink_uploads(conn: Connection) -> int:
    """Replaces every row's stored upload by drawing_png of it, a batch of rows at a time (the uploads may be
    megabytes each). An upload that can't be decoded any more keeps the 28x28 image the model saw instead."""
    last_id, count = 0, 0
    while True:
        query = (sa.select(feedback.c.id, feedback.c.image, feedback.c.input28).where(feedback.c.id > last_id)
                 .order_by(feedback.c.id).limit(UPGRADE_BATCH_ROWS))
        rows = conn.execute(query).all()
        if not rows:
            return count
        for row in rows:
            try:
                drawing = drawing_png(bytes(row.image))
            except preprocess.PreprocessError:
                drawing = drawing_png(np.frombuffer(row.input28, np.uint8).reshape(28, 28))
            conn.execute(feedback.update().where(feedback.c.id == row.id).values(image=drawing))
        last_id, count = rows[-1].id, count + len(rows)


def _read_version(conn: Connection) -> int | None:
    if not sa.inspect(conn).has_table(schema_version.name):
        return None
    return conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()


def _prepare_sqlite_file(url: URL) -> URL:
    db = url.database
    if not db or db == ":memory:" or db.startswith("file:"):  # in memory, or a URI the caller spelled out
        return url
    path = Path(db).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.stat().st_mode & 0o222 and not Path(f"{path}-wal").exists():
        # SQLite can't create the WAL index beside a file in a read-only folder, so even reads would fail.
        # No one may write this file and no WAL holds unmerged commits, so reading it as immutable is safe.
        uri = "file:" + urllib.parse.quote(str(path.resolve()))
        return url.set(database=uri, query={"mode": "ro", "immutable": "1", "uri": "true"})
    return url.set(database=str(path))


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        # pysqlite opens transactions itself but not before DDL, so two processes creating the schema would race;
        # with isolation_level None it stays out of the way and _on_begin emits BEGIN.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")  # concurrent writers wait instead of failing
        cursor.execute("PRAGMA synchronous = FULL")  # an acknowledged correction survives a crash
        _use_wal(cursor)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A deferred transaction that reads and then writes gets SQLITE_BUSY at once, without the busy timeout;
        # IMMEDIATE takes the write lock up front, waiting for it.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("for_write") else "BEGIN")


def _use_wal(cursor) -> None:
    """WAL journal: readers don't block the writer. The mode is stored in the file, so only a new database
    needs the switch, and it takes an exclusive lock for which SQLite may answer "locked" at once, without the
    busy timeout, when several processes open a new database together (serve --workers): so wait and retry."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
