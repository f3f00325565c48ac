"""The feedback database itself: its tables, their schema versions and the upgrades between them, and the
engine settings SQLite and PostgreSQL each need (SQLAlchemy Core)."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import time
import urllib.parse
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from PIL import Image
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url

from . import preprocess

# 2: `image` holds the drawing as an 8-bit grayscale PNG at most DRAWING_MAX_SIDE_PX a side, no longer the
#    upload as received (up to 5 MB, with whatever metadata or trailing bytes it carried).
# 3: `kind` tells a correction from a confirmation ("it was right"); a number is kept whole in `numbers`, with
#    the boxes the model read, and each of its digits in `feedback` with the number's id.
SCHEMA_VERSION = 3
DRAWING_MAX_SIDE_PX = 256  # ten times the model's 20 px digit box: enough to preprocess again later
INPUT28_BYTES = 28 * 28
UPGRADE_BATCH_ROWS = 200
BUSY_TIMEOUT_MS = 5000
SCHEMA_LOCK_KEY = 0x64696769  # PostgreSQL advisory lock ids: constants other apps on the server don't use
QUOTA_LOCK_KEY = SCHEMA_LOCK_KEY + 1
CORRECTION, CONFIRMATION = "correction", "confirmation"

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
    # 'confirmation': the person said the model was right (correct = predicted); 'correction' otherwise.
    sa.Column("kind", sa.Text, nullable=False, server_default=CORRECTION),
    sa.Column("number_id", sa.Integer, nullable=True, index=True),  # the number this digit was cut from
    sa.CheckConstraint("correct BETWEEN 0 AND 9", name="ck_feedback_correct"),
    sa.CheckConstraint("predicted IS NULL OR predicted BETWEEN 0 AND 9", name="ck_feedback_predicted"),
    sa.CheckConstraint("length(input28) = 784", name="ck_feedback_input28"),
    sa.CheckConstraint(f"kind IN ('{CORRECTION}', '{CONFIRMATION}')", name="ck_feedback_kind"),
    sqlite_autoincrement=True,  # ids are quoted in logs and bug reports: never reuse one
)
numbers = sa.Table(
    "numbers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("image", sa.LargeBinary, nullable=False),  # the whole drawing, bounded like a digit's
    sa.Column("read_as", sa.Text, nullable=False),  # what the model read, '?' for a mark it refused
    sa.Column("correct", sa.Text, nullable=False),  # what the person says it is: digits only
    sa.Column("boxes", sa.Text, nullable=False),  # JSON [[left, top, right, bottom], ...] of each mark read
    sa.Column("model_version", sa.Text, nullable=False),
    sqlite_autoincrement=True,
)
# The columns each version's `feedback` table has: a database that can't be upgraded (read-only) is read as is.
FEEDBACK_COLUMNS_BEFORE_3 = ("id", "created_at", "image", "input28", "predicted", "correct", "model_version")


def create_engine(url: URL) -> Engine:
    """An engine for a SQLite file, an in-memory SQLite database shared by all threads, or a PostgreSQL server."""
    if url.get_backend_name() != "sqlite":
        return _create_postgresql_engine(url)
    url = _prepare_sqlite_file(url)
    if url.database in (None, "", ":memory:"):
        # One in-memory database for all threads (each connection would otherwise get its own).
        engine = sa.create_engine(url, poolclass=sa.pool.StaticPool, connect_args={"check_same_thread": False})
    else:
        engine = sa.create_engine(url)
    _configure_sqlite(engine)
    return engine


def create_schema(conn: Connection) -> None:
    metadata.create_all(conn)
    conn.execute(schema_version.insert().values(version=SCHEMA_VERSION))


def upgrade(conn: Connection, version: int) -> str:
    """Brings a database at `version` to SCHEMA_VERSION, one step at a time, in the caller's transaction;
    says what changed."""
    done = []
    if version < 2:
        done.append(f"{_shrink_uploads(conn)} stored uploads replaced by bounded copies of their drawings")
        conn.execute(schema_version.insert().values(version=2))
    if version < 3:
        done.append(f"{_add_kinds_and_numbers(conn)} choices of the digit the model gave marked as confirmations")
        conn.execute(schema_version.insert().values(version=3))
    return "; ".join(done)


def _add_kinds_and_numbers(conn: Connection) -> int:
    conn.execute(sa.text(f"ALTER TABLE feedback ADD COLUMN kind TEXT NOT NULL DEFAULT '{CORRECTION}' "
                         f"CONSTRAINT ck_feedback_kind CHECK (kind IN ('{CORRECTION}', '{CONFIRMATION}'))"))
    conn.execute(sa.text("ALTER TABLE feedback ADD COLUMN number_id INTEGER"))
    conn.execute(sa.text("CREATE INDEX ix_feedback_number_id ON feedback (number_id)"))  # as create_all names it
    numbers.create(conn)
    # Before version 3 the app stored a choice of the digit it had shown as a "correction" of it.
    confirmed = feedback.update().where(feedback.c.predicted == feedback.c.correct).values(kind=CONFIRMATION)
    return conn.execute(confirmed).rowcount


def drawing_png(image) -> bytes:
    """The copy of a drawing the store keeps: 8-bit grayscale, at most DRAWING_MAX_SIDE_PX a side, as PNG.
    Takes what preprocess.decode takes (a luminance array, image bytes, a PIL image)."""
    gray = preprocess.decode(image)[0]
    pixels = Image.fromarray(np.round(np.clip(gray, 0.0, 1.0) * 255).astype(np.uint8))
    pixels.thumbnail((DRAWING_MAX_SIDE_PX, DRAWING_MAX_SIDE_PX), Image.Resampling.BOX)
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def boxes_json(boxes: list) -> str:
    return json.dumps([[int(v) for v in box] for box in boxes])


def lock_schema(conn: Connection) -> None:
    """Serialise schema creation between processes that open a new database at once (the workers of `serve`).
    SQLite's BEGIN IMMEDIATE already holds the database's write lock; PostgreSQL takes a transaction-scoped
    advisory lock, released at commit, after which the others find the tables."""
    lock(conn, SCHEMA_LOCK_KEY)


def parse_url(url: str | os.PathLike) -> URL:
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


def lock(conn: Connection, key: int) -> None:
    """A transaction-scoped lock on `key` between processes (PostgreSQL; SQLite's writers already take turns)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


def usage(conn: Connection, version: int = SCHEMA_VERSION) -> tuple[int, int]:
    """Rows stored (digits and whole numbers), and their bytes (drawings and 28x28 images)."""
    rows, size = conn.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(sa.func.length(
        feedback.c.image)), 0))).one()
    rows, size = int(rows), int(size) + int(rows) * INPUT28_BYTES
    if version >= 3:
        more, more_size = conn.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(
            sa.func.length(numbers.c.image)), 0))).one()
        rows, size = rows + int(more), size + int(more_size)
    return rows, size


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


def read_version(conn: Connection) -> int | None:
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
