"""The static site (`digitrecognizer build-site`): the drawing page with the shipped model running in the browser
on ONNX Runtime Web, in one folder that any static host (a static Hugging Face Space, GitHub Pages, any web
server) can publish as it is."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import tarfile
import urllib.request
from pathlib import Path

from .card import load_card
from .files import atomic_write

STATIC_DIR = Path(__file__).parent / "web" / "static"
# ONNX Runtime Web from the npm registry, pinned by version and by the registry's own integrity hash: fetched
# and checked when the site is built, never committed.
ORT_WEB_VERSION = "1.30.0"
ORT_WEB_TARBALL = f"https://registry.npmjs.org/onnxruntime-web/-/onnxruntime-web-{ORT_WEB_VERSION}.tgz"
ORT_WEB_SHA512 = "q0y+JrrtukXSzsBWEMccVfqX25LRmosXHF+CaRJmg8pZClzcV7svNc4rKY3jL02Vb7QmRMDs1SigqR4CXAfKYQ=="
# The WebAssembly build only: the library, the engine's loader and the engine (it also runs on one thread).
ORT_WEB_FILES = ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
ENV_ORT_WEB = "DIGITRECOGNIZER_ORT_WEB"  # a folder or .tgz of the package, for machines without the registry
BROWSER_SOURCE = 'export { browserAnswers as answers } from "./browser-answers.js";\n'
SPACE_README = """---
title: DigitRecognizer
emoji: ✍️
colorFrom: indigo
colorTo: pink
sdk: static
app_file: index.html
pinned: false
---

# DigitRecognizer

Draw a digit: the model ({version}) reads it in your browser with ONNX Runtime Web. Nothing you draw leaves
the page. Numbers, photos and corrections need the full service (`pip install digitrecognizer`,
`digitrecognizer serve`).
"""


class SiteError(RuntimeError):
    """The site can't be built; the message says why and what to do."""


def build_site(out: str | os.PathLike, model: str | os.PathLike | None = None, ort_web: str | None = None) -> Path:
    """Writes the static site to `out`: the page, the model folder and ONNX Runtime Web. Returns `out`."""
    out = Path(out)
    card, onnx_path = load_card(model)  # the model folder and its card are checked before anything is written
    package = ort_web_package(ort_web or os.environ.get(ENV_ORT_WEB))
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(STATIC_DIR, out / "static")
    (out / "static" / "source.js").write_text(BROWSER_SOURCE)
    shutil.move(out / "static" / "index.html", out / "index.html")
    (out / "static" / "ort").mkdir()
    for name, data in package.items():
        (out / "static" / "ort" / name).write_bytes(data)
    (out / "model").mkdir()
    shutil.copyfile(onnx_path, out / "model" / "model.onnx")
    shutil.copyfile(onnx_path.parent / "card.json", out / "model" / "card.json")
    (out / "README.md").write_text(SPACE_README.format(version=card.version))
    return out


def ort_web_package(source: str | None = None) -> dict[str, bytes]:
    """The ONNX Runtime Web files the site needs, from `source` (a folder or .tgz of the npm package), else from
    the npm registry through a cache; the tarball is checked against the pinned integrity hash."""
    if source and Path(source).is_dir():
        folder = Path(source) / "dist" if (Path(source) / "dist").is_dir() else Path(source)
        return {name: _read(folder / name) for name in ORT_WEB_FILES}
    tarball = Path(source).read_bytes() if source else _cached_tarball()
    _check_integrity(tarball, source or ORT_WEB_TARBALL)
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        return {name: tar.extractfile(f"package/dist/{name}").read() for name in ORT_WEB_FILES}


def _cached_tarball() -> bytes:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "digitrecognizer" / "npm"
    path = cache / f"onnxruntime-web-{ORT_WEB_VERSION}.tgz"
    if not path.is_file():
        try:
            with urllib.request.urlopen(ORT_WEB_TARBALL, timeout=120) as response:
                data = response.read()
        except OSError as err:
            raise SiteError(f"cannot fetch ONNX Runtime Web from {ORT_WEB_TARBALL} ({err}): connect to the npm "
                            f"registry, or point ${ENV_ORT_WEB} at a downloaded onnxruntime-web-{ORT_WEB_VERSION}.tgz") from None
        _check_integrity(data, ORT_WEB_TARBALL)
        atomic_write(path, lambda f: f.write(data))
    return path.read_bytes()


def _check_integrity(tarball: bytes, where: str) -> None:
    digest = base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    if digest != ORT_WEB_SHA512:
        raise SiteError(f"{where}: not onnxruntime-web {ORT_WEB_VERSION} as published (sha512 {digest[:16]}…, "
                        f"expected {ORT_WEB_SHA512[:16]}…)")


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise SiteError(f"{path}: missing; ${ENV_ORT_WEB} must be the onnxruntime-web package (its dist folder)")
    return path.read_bytes()
