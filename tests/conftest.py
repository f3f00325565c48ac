"""Shared fixtures: the local MNIST files, a model to test with, and a feedback database on each backend."""

import contextlib
import glob
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _mnist_dir() -> Path:
    env = os.environ.get("DIGITRECOGNIZER_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    folder = _mnist_dir()
    if not (folder / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(f"MNIST files not found in {folder}: set DIGITRECOGNIZER_DATA to a folder holding them")
    return folder


@pytest.fixture(scope="session")
def mnist_test(mnist_dir):
    from digitrecognizer import data

    return data.load_split(mnist_dir, "test")


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The shipped model (src/digitrecognizer/assets); DIGITRECOGNIZER_TEST_MODEL overrides it."""
    env = os.environ.get("DIGITRECOGNIZER_TEST_MODEL")
    folder = Path(env) if env else REPO / "src" / "digitrecognizer" / "assets"
    if not (folder / "card.json").exists():
        pytest.fail(f"no model in {folder}: export one or set DIGITRECOGNIZER_TEST_MODEL")
    return folder


@pytest.fixture(scope="session")
def recognizer(model_dir):
    from digitrecognizer import Recognizer

    return Recognizer(model_dir)


# -- the feedback store's backends -----------------------------------------------------------------
# CI installs Debian's postgresql package (scripts/test.sh), so a missing server is a failure, not a skip.

ENV_TEST_PG = "DIGITRECOGNIZER_TEST_PG_URL"
NO_POSTGRES = (f"the PostgreSQL tests need a server: install Debian's postgresql package (`bash scripts/test.sh` "
               f"does), or set {ENV_TEST_PG}=postgresql://user:pass@host:port/db for a user who may CREATE DATABASE")


@pytest.fixture(scope="session")
def wait_for_first_epoch():
    """Waits until a training process has logged (and so checkpointed) one epoch, or has ended."""

    def wait(process: subprocess.Popen, out_dir: Path, timeout_s: float) -> None:
        metrics = Path(out_dir) / "metrics.jsonl"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and process.poll() is None:
            if metrics.exists() and metrics.read_text().count("\n") >= 1:
                return
            time.sleep(0.05)

    return wait


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A URL on a PostgreSQL server where tests may create databases: $DIGITRECOGNIZER_TEST_PG_URL, or else a
    throwaway cluster started here from Debian's binaries and deleted at the end of the session."""
    if os.environ.get(ENV_TEST_PG):
        yield os.environ[ENV_TEST_PG]
        return
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not versions:
        pytest.fail(NO_POSTGRES)
    bin_dir = Path(versions[-1]).parent
    # initdb refuses to run as root; Debian's package creates the `postgres` user for exactly this.
    run_as = None
    if os.geteuid() == 0:
        try:
            run_as = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail(f"{NO_POSTGRES} (running as root, and there is no `postgres` user to run the server as)")
    # Not under tmp_path_factory: pytest makes that folder private to root, and the server runs as postgres.
    home = Path(tempfile.mkdtemp(prefix="digitrecognizer-pg-"))
    if run_as:
        os.chown(home, run_as.pw_uid, run_as.pw_gid)
    user = run_as.pw_name if run_as else None
    port = _free_port()
    data_dir, log = home / "data", home / "server.log"

    def pg(*command: str) -> None:
        subprocess.run(command, user=user, cwd=home, check=True, capture_output=True, timeout=120)

    try:
        pg(str(bin_dir / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
           "--locale=C", "--no-sync")
        # fsync off: the tests kill app processes, never this server, so its own durability is not under test.
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {home} -c fsync=off -c full_page_writes=off"
        pg(str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
    except subprocess.CalledProcessError as err:
        server_log = log.read_text() if log.exists() else ""
        shutil.rmtree(home, ignore_errors=True)
        pytest.fail(f"could not start a throwaway PostgreSQL in {home}: {err.stderr.decode()}{server_log}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "stop"], user=user,
                       cwd=home, capture_output=True, timeout=60)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server) -> Iterator[str]:
    """A new, empty database for one test, dropped afterwards: tests can't see each other's rows or schema."""
    import sqlalchemy as sa

    name = f"test_{uuid.uuid4().hex[:12]}"
    server = sa.make_url(postgres_server)
    admin = sa.create_engine(server.set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        yield server.set(database=name).render_as_string(hide_password=False)  # as users write it: postgresql://
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")  # FORCE: a killed server's leftovers
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def feedback_db(request, tmp_path) -> str:
    """An empty feedback database on each backend: a SQLite file that doesn't exist yet (nor does its folder),
    or a new PostgreSQL database. Tests that use it run once per backend with the same assertions."""
    if request.param == "sqlite":
        return str(tmp_path / "data" / "feedback.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def read_only():
    """`with read_only(feedback_db) as url:` the database is read-only, and `url` opens it so."""
    return _read_only


@contextlib.contextmanager
def _read_only(feedback_db: str, create: bool = True) -> Iterator[str]:
    """`create`: open the store first, so that the schema exists (False: the database is left as it is)."""
    import sqlalchemy as sa

    from digitrecognizer.store import FeedbackStore
    from digitrecognizer.store_db import parse_url

    if create:
        FeedbackStore(feedback_db).close()
    if feedback_db.startswith("postgresql://"):
        engine = sa.create_engine(parse_url(feedback_db))
        with engine.begin() as conn:  # what a hot standby does after a failover: every transaction is read-only
            name = conn.exec_driver_sql("SELECT current_database()").scalar()
            conn.exec_driver_sql(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
        engine.dispose()
    if feedback_db.startswith("postgresql://"):
        yield feedback_db
        return
    db = Path(feedback_db)
    folder = db.parent
    db.chmod(0o444)
    folder.chmod(0o555)
    try:
        try:
            with open(db, "ab"):  # root ignores permissions: make SQLite itself open the file read-only instead
                url = f"sqlite:///file:{db}?mode=ro&uri=true"
        except PermissionError:
            url = str(db)
        yield url
    finally:
        folder.chmod(stat.S_IRWXU)
        db.chmod(0o644)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CHROMIUM = Path("/usr/bin/chromium")  # Debian's: a browser download fails on these machines
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium for the browser tests (the served page and the static site)."""
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed: scripts/test.sh installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield b
        b.close()


def open_app(page, url: str) -> None:
    """Load the page and wait until its script has run: the pad shows before app.js has bound its buttons and
    keys, and a key pressed in between does nothing. app.js sets body[data-mode] last."""
    from playwright.sync_api import expect

    page.goto(url)
    expect(page.locator("body")).to_have_attribute("data-mode", "digit")
    expect(page.get_by_test_id("pad")).to_be_visible()
