"""``mirnet serve`` under load and misuse: admission (503), the pixel budget, clients that go
away, uploads that stall, and one Ctrl-C stopping a busy server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi", reason="mirnet serve needs the serve extra (pip install -e '.[serve]')")
uvicorn = pytest.importorskip("uvicorn", reason="mirnet serve needs the serve extra")
try:
    from fastapi.testclient import TestClient
except RuntimeError as err:  # Starlette's TestClient needs httpx2 (or the older httpx)
    pytest.skip(f"FastAPI's TestClient is unusable: {err}", allow_module_level=True)

from mirnet import serve  # noqa: E402
from tests.conftest import darken, png_bytes, smooth_image  # noqa: E402


@pytest.fixture(scope="module")
def dark_png() -> bytes:
    return png_bytes(darken(smooth_image(1, 48, 64)))


def post(client: TestClient, data: bytes):
    return client.post("/enhance", files={"file": ("dark.png", data, "application/octet-stream")})


class BlockingEnhancer:
    """A model whose photo takes until released, reporting progress like tiles do, so that
    the server's cancellation (raised from the progress callback) can be observed."""

    def __init__(self, seconds: float = 20.0):
        self.seconds = seconds
        self.started = threading.Event()
        self.release = threading.Event()
        self.cancelled = threading.Event()

    def enhance_tensor(self, image: torch.Tensor, progress=None) -> torch.Tensor:
        self.started.set()
        deadline = time.monotonic() + self.seconds
        step = 0
        while not self.release.is_set() and time.monotonic() < deadline:
            step += 1
            try:
                if progress:
                    progress(step, 10**6)
            except serve.Cancelled:
                self.cancelled.set()
                raise
            time.sleep(0.02)
        return image


def test_past_the_queue_a_quick_503_with_retry_after(
    monkeypatch: pytest.MonkeyPatch, weights: Path, dark_png: bytes
):
    slow = BlockingEnhancer()
    monkeypatch.setattr(serve, "load_model", lambda *args, **kwargs: slow)
    responses = {}
    with TestClient(serve.create_app(model=str(weights), queue=1)) as client:
        worker = threading.Thread(target=lambda: responses.update(first=post(client, dark_png)))
        worker.start()
        try:
            assert slow.started.wait(timeout=10)
            started = time.monotonic()
            refused = post(client, dark_png)
            assert time.monotonic() - started < 2  # at once, not after the first photo
            assert client.get("/health").json()["load"]["admitted"] == 1
        finally:
            slow.release.set()
            worker.join(timeout=10)
        assert refused.status_code == 503
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["detail"].startswith("busy:")
        assert responses["first"].status_code == 200
        assert post(client, dark_png).status_code == 200  # the slot was given back


def test_pixel_budget_decodes_photos_in_turn():
    async def scenario() -> list[str]:
        admission = serve.Admission(capacity=10, pixel_budget=100)
        order = []
        first, second, third = (admission.admit() for _ in range(3))
        await admission.reserve(80, first)
        order.append("first")

        async def wait(name: str, pixels: int, cancel) -> None:
            await admission.reserve(pixels, cancel)
            order.append(name)

        blocked = asyncio.create_task(wait("second", 50, second))
        small = asyncio.create_task(wait("third", 10, third))  # fits, but waits its turn
        await asyncio.sleep(0.1)
        assert order == ["first"] and admission.pixels == 80
        admission.release(80)
        await asyncio.gather(blocked, small)
        assert admission.pixels == 60
        # A request cancelled while waiting gives its place up and charges nothing.
        fourth = admission.admit()
        admission.pixels = 100
        waiting = asyncio.create_task(admission.reserve(30, fourth))
        await asyncio.sleep(0.05)
        fourth.set()
        with pytest.raises(serve.Cancelled):
            await waiting
        assert admission.pixels == 100 and not admission._waiting
        # A photo over the whole budget runs alone rather than never.
        admission.pixels = 0
        await admission.reserve(500, fourth)
        assert admission.pixels == 500
        return order

    assert asyncio.run(scenario()) == ["first", "second", "third"]


@contextlib.contextmanager
def live_server(app):
    """The app under a real uvicorn server on a free port, in a thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def multipart_request(port: int, data: bytes) -> bytes:
    boundary = "mirnet-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="dark.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /enhance HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
    ).encode()
    return head + body


def read_answer(client: socket.socket) -> str:
    """An HTTP answer, headers and body (it may arrive in several packets)."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _content_length(data):
        chunk = client.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def _content_length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def test_work_is_cancelled_when_the_client_goes(
    monkeypatch: pytest.MonkeyPatch, weights: Path, dark_png: bytes
):
    slow = BlockingEnhancer(seconds=30)
    monkeypatch.setattr(serve, "load_model", lambda *args, **kwargs: slow)
    app = serve.create_app(model=str(weights))
    with live_server(app) as port:
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(multipart_request(port, dark_png))
        assert slow.started.wait(timeout=10)
        client.close()
        assert slow.cancelled.wait(timeout=5), "the work went on after its client left"
        deadline = time.monotonic() + 5
        while app.state.admission.admitted and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.admission.admitted == 0 and app.state.admission.pixels == 0


def test_an_upload_that_stalls_gets_a_408(weights: Path):
    app = serve.create_app(model=str(weights), body_timeout=1.0)
    with live_server(app) as port:
        request = multipart_request(port, b"\x89PNG" + bytes(5000))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(request[: len(request) // 2])  # then nothing more
            started = time.monotonic()
            answer = read_answer(client)
        assert answer.startswith("HTTP/1.1 408")
        assert "did not arrive within 1 s" in answer
        assert time.monotonic() - started < 5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_one_sigint_stops_a_busy_server(weights: Path, tmp_path: Path):
    # A 2400 x 2400 photo in 160-pixel tiles takes the nano model about 40 s on one core.
    photo = png_bytes(darken(smooth_image(2, 2400, 2400)))
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "mirnet", "serve", "--port", str(port), "--model", str(weights)]
    server = subprocess.Popen(
        [*command, "--tile", "160"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.2)
        client = socket.create_connection(("127.0.0.1", port), timeout=60)
        client.sendall(multipart_request(port, photo))
        time.sleep(3)  # decoded, and well into its tiles
        assert server.poll() is None
        server.send_signal(signal.SIGINT)
        started = time.monotonic()
        code = server.wait(timeout=15)
        stopped_after = time.monotonic() - started
        answer = read_answer(client)
        client.close()
    finally:
        if server.poll() is None:
            server.kill()
    log = server.stdout.read()
    assert code == 130, log
    assert stopped_after < 10, log
    assert answer.startswith("HTTP/1.1 503") and "stopping" in answer, answer
