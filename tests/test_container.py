"""The container image's steps, run here without Docker (base images can't be pulled on these machines): the
wheel installed into a fresh virtual environment, then the Dockerfile's command run with its environment as an
unprivileged user (uid 1000 when the tests run as root), answering health checks and storing feedback on the
data volume, with no torch installed."""

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from digitrecognizer import synth

pytestmark = pytest.mark.container
REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
APP_UID = 1000


def dockerfile_env_and_command() -> tuple[dict[str, str], list[str]]:
    """The final stage's ENV settings and its CMD (exec form), as the image would run them."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    final = text.split("\nFROM ")[-1]
    env = {}
    for line in re.findall(r"^ENV (.+)$", final, re.M):
        env.update(dict(part.split("=", 1) for part in shlex.split(line)))
    command = json.loads(re.search(r"^CMD (\[.+\])$", final, re.M).group(1))
    return env, command


def test_the_dockerfile_runs_as_uid_1000_with_a_volume_a_health_check_and_no_torch():
    final = DOCKERFILE.read_text().split("\nFROM ")[-1]
    assert "USER 1000" in final and "VOLUME /data" in final and "/api/health" in final
    assert "torch" not in final.split("HEALTHCHECK")[0]
    env, command = dockerfile_env_and_command()
    assert env["PORT"] == "7860" and env["DIGITRECOGNIZER_DB"].startswith("/data/")
    assert command[-1].endswith("digitrecognizer serve --host 0.0.0.0 --port ${PORT:-7860}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def image_root():
    """A folder uid 1000 can read (pytest's own temporary folders are private to root)."""
    root = Path(tempfile.mkdtemp(prefix="digitrecognizer-image-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def venv(image_root):
    """The image's install step: a fresh virtual environment holding the wheel and its serving dependencies."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--wheel-dir", str(image_root / "dist"),
                    str(REPO)], check=True, timeout=600)
    subprocess.run([system_python(), "-m", "venv", str(image_root / "venv")], check=True, timeout=300)
    python = image_root / "venv" / "bin" / "python"
    wheel = next((image_root / "dist").glob("*.whl"))
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
                   check=True, timeout=900)
    return image_root / "venv"


def system_python() -> str:
    """An interpreter every user may run, as the image's /usr/local/bin/python is (this one may live under a
    home folder only root can enter)."""
    for candidate in ("/usr/local/bin/python3", "/usr/bin/python3"):
        version = subprocess.run([candidate, "-c", "import sys, venv; print(sys.version_info >= (3, 11))"],
                                 capture_output=True, text=True) if Path(candidate).exists() else None
        if version and version.stdout.strip() == "True":
            return candidate
    return sys.executable


def as_app_user() -> list[str]:
    if os.geteuid() != 0:
        return []  # already unprivileged
    return ["setpriv", f"--reuid={APP_UID}", f"--regid={APP_UID}", "--clear-groups"]


def test_the_image_command_serves_as_an_unprivileged_user_and_keeps_feedback_on_the_volume(venv, image_root):
    env, command = dockerfile_env_and_command()
    data = image_root / "data"  # the image's /data volume
    data.mkdir()
    home = image_root / "home"
    home.mkdir()
    if os.geteuid() == 0:
        os.chown(data, APP_UID, APP_UID)
        os.chown(home, APP_UID, APP_UID)
    port = free_port()
    env = {**env, "PORT": str(port), "DIGITRECOGNIZER_DB": str(data / "feedback.db"), "HOME": str(home),
           "PATH": f"{venv / 'bin'}:/usr/bin:/bin"}
    server = subprocess.Popen(as_app_user() + command, env=env, cwd=home, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert server.poll() is None, server.stdout.read()
        assert httpx.get(url + "/api/health", timeout=5).json()["status"] == "ok"
        png = synth.render_digit(np.pad(np.full((20, 4), 255, np.uint8), 4), np.random.default_rng(0), "white_on_black")
        saved = httpx.post(url + "/api/feedback", files={"image": ("d.png", png, "image/png")},
                           data={"correct": "1"}, timeout=30)
        assert saved.status_code == 201, saved.text
    finally:
        server.terminate()
        server.wait(timeout=20)
    database = data / "feedback.db"
    assert database.is_file()
    if os.geteuid() == 0:
        assert database.stat().st_uid == APP_UID
    no_torch = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True)
    assert no_torch.returncode != 0
