"""A real HTTP bundle server for tests (uvicorn on 127.0.0.1, strong ETags, 304s) and the archive
helpers the bundle-source tests share: build one with `pdp bundle build`, read one back."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import tarfile
import threading
import time
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response
from starlette.routing import Route

from pdp.cli import main as pdp_main


def _wait_until_started(server: uvicorn.Server, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline:
            raise AssertionError(f"the bundle server did not start within {timeout}s")
        time.sleep(0.01)


class BundleServer:
    """Static files from `root` on 127.0.0.1 (a real HTTP server: uvicorn), with a strong ETag (the
    SHA-256 of the file) and 304 for a matching If-None-Match; `failing` turns every answer into a
    503. `stop()` closes it: the port then refuses connections."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.failing = False
        self.answers: list[int] = []  # every status sent, in order
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        app = Starlette(routes=[Route("/{name}", self._get)])
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self._thread.start()
        _wait_until_started(self._server)

    async def _get(self, request: StarletteRequest) -> Response:
        status, body, etag = self.answer(
            request.path_params["name"], request.headers.get("if-none-match")
        )
        self.answers.append(status)
        return Response(body, status_code=status, headers={"etag": etag} if etag else {})

    def answer(self, name: str, if_none_match: str | None) -> tuple[int, bytes, str]:
        if self.failing:
            return 503, b"unavailable", ""
        file = self.root / name
        if "/" in name or not file.is_file():
            return 404, b"not found", ""
        data = file.read_bytes()
        etag = f'"{hashlib.sha256(data).hexdigest()[:32]}"'
        if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
            return 304, b"", etag
        return 200, data, etag

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}/{name}"

    def publish(self, name: str, data: bytes) -> None:
        """Replace the served file atomically."""
        tmp = self.root / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.root / name)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()


def build_archive(bundle: Path, out: Path, sign_key: Path | None) -> bytes:
    """`pdp bundle build BUNDLE -o OUT [--sign-key KEY]`, in process: the archive's bytes."""
    argv = ["bundle", "build", str(bundle), "-o", str(out)]
    assert pdp_main([*argv, *(["--sign-key", str(sign_key)] if sign_key else [])]) == 0
    return out.read_bytes()


def archive_files(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        out: dict[str, bytes] = {}
        for m in tar:
            f = tar.extractfile(m)
            assert f is not None
            out[m.name] = f.read()
        return out
