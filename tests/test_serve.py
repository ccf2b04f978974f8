"""The ``mirnet serve`` HTTP API: good uploads, refused uploads, models, concurrency."""

from __future__ import annotations

import argparse
import io
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="mirnet serve needs the serve extra (pip install -e '.[serve]')")
try:
    from fastapi.testclient import TestClient
except RuntimeError as err:  # Starlette's TestClient needs httpx2 (or the older httpx)
    pytest.skip(f"FastAPI's TestClient is unusable: {err}", allow_module_level=True)

import mirnet  # noqa: E402
from mirnet import serve  # noqa: E402
from mirnet.io import read_image, to_uint  # noqa: E402
from mirnet.weights import WeightsError, bundled_models  # noqa: E402
from tests.conftest import darken, png_bytes, smooth_image  # noqa: E402

MAX_UPLOAD_MB = 0.2  # 200,000 bytes
MAX_MEGAPIXELS = 0.05  # 50,000 pixels


@pytest.fixture(scope="module")
def client(weights: Path):
    app = serve.create_app(model=str(weights), max_upload_mb=MAX_UPLOAD_MB, max_megapixels=MAX_MEGAPIXELS)
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def dark_png() -> bytes:
    return png_bytes(darken(smooth_image(1, 48, 64)))


def post(client: TestClient, data: bytes, filename: str = "dark.png", **form: str):
    return client.post("/enhance", files={"file": (filename, data, "application/octet-stream")}, data=form)


def test_health_and_models(client: TestClient):
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json() == {
        "status": "ok",
        "version": mirnet.__version__,
        "limits": {"max_upload_bytes": 200_000, "max_megapixels": MAX_MEGAPIXELS},
        "load": {"admitted": 0, "queue": serve.DEFAULT_QUEUE, "megapixels": 0.0},
    }
    models = client.get("/models").json()
    assert models["default"] == "nano"
    assert {"name": "nano", "source": "file", "default": True} in models["models"]
    # Bundled models (if any are shipped yet) are offered too, never as the default here.
    assert {m["name"] for m in models["models"]} == {"nano", *bundled_models()}


def test_enhance_returns_the_models_result_as_png(
    client: TestClient, weights: Path, dark_png: bytes, tmp_path
):
    response = post(client, dark_png, filename="my photo.png")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"] == 'inline; filename="my_photo_enhanced.png"'
    assert response.headers["x-mirnet-model"] == "nano"
    result = np.asarray(Image.open(io.BytesIO(response.content)))
    # The same as enhancing the file directly with the library.
    (tmp_path / "dark.png").write_bytes(dark_png)
    expected = to_uint(mirnet.load_model(weights).enhance_tensor(read_image(tmp_path / "dark.png")))
    np.testing.assert_array_equal(result, expected)


def test_enhance_accepts_jpeg_and_grayscale(client: TestClient):
    jpeg = png_bytes(darken(smooth_image(2, 40, 30)), fmt="JPEG")
    gray = png_bytes(darken(smooth_image(3, 20, 24))[..., 0])
    for data, size in ((jpeg, (30, 40)), (gray, (24, 20))):
        response = post(client, data, filename="x.jpg", model="nano")
        assert response.status_code == 200, response.text
        with Image.open(io.BytesIO(response.content)) as image:
            assert (image.mode, image.size) == ("RGB", size)


def test_upload_far_over_the_byte_limit_is_refused_before_reading(client: TestClient):
    response = post(client, b"\0" * 300_000)
    assert response.status_code == 413
    # The whole request's size: the file plus its multipart wrapping.
    assert re.fullmatch(r"upload of 300,\d{3} bytes is over the limit of 0.2 MB", response.json()["detail"])


def test_upload_just_over_the_byte_limit_is_refused(client: TestClient, dark_png: bytes):
    # Within the multipart slack, so the header check lets it in; the file size check does not.
    response = post(client, dark_png + b"\0" * (200_001 - len(dark_png)))
    assert response.status_code == 413
    assert response.json()["detail"] == "upload of 200,001 bytes is over the limit of 0.2 MB"


def test_body_without_content_length_is_refused(client: TestClient):
    # A generator body goes out chunked, with no Content-Length to check.
    body = iter([b"--x\r\n", b"data\r\n--x--\r\n"])
    response = client.post(
        "/enhance", content=body, headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert response.status_code == 411


def test_too_many_megapixels_is_refused(client: TestClient):
    # 300 x 200 = 60,000 pixels; few bytes, since it is flat.
    response = post(client, png_bytes(np.zeros((200, 300, 3), np.uint8)))
    assert response.status_code == 413
    assert response.json()["detail"] == "300 x 200 is 0.1 megapixels, over the limit of 0.05"


def test_corrupt_image_is_a_400(client: TestClient, dark_png: bytes):
    response = post(client, dark_png[: len(dark_png) // 2])  # header fine, pixel data cut
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "corrupt or truncated" in detail and "mirnet-serve-" not in detail  # no server path leaks


def test_text_file_is_a_415(client: TestClient):
    response = post(client, b"these are not the pixels you are looking for\n", filename="notes.png")
    assert response.status_code == 415
    assert "not an image" in response.json()["detail"]


def test_empty_upload_is_a_400(client: TestClient):
    response = post(client, b"")
    assert response.status_code == 400
    assert response.json()["detail"] == "the upload is empty"


def test_unknown_model_is_a_400_naming_the_available_ones(client: TestClient, dark_png: bytes):
    response = post(client, dark_png, model="../../etc/passwd")
    assert response.status_code == 400
    assert "unknown model" in response.json()["detail"] and "nano" in response.json()["detail"]


def test_missing_file_field_is_a_400_with_one_line(client: TestClient):
    response = client.post("/enhance", data={"model": "nano"})
    assert response.status_code == 400
    assert response.json() == {"detail": "no photo: send it in the multipart field 'file'"}


def test_no_model_available_is_a_503(monkeypatch: pytest.MonkeyPatch, dark_png: bytes):
    monkeypatch.setattr(serve, "bundled_models", dict)
    with TestClient(serve.create_app()) as client:
        assert client.get("/models").json() == {"default": None, "models": []}
        response = post(client, dark_png)
    assert response.status_code == 503
    assert "--model" in response.json()["detail"]


def test_missing_weights_file_fails_at_startup(tmp_path: Path):
    with pytest.raises(WeightsError, match="neither a bundled model"):
        serve.create_app(model=str(tmp_path / "missing.safetensors"))


def test_each_model_is_loaded_once(monkeypatch: pytest.MonkeyPatch, weights: Path, dark_png: bytes):
    loads = []

    def counting_load(*args, **kwargs):
        loads.append(args)
        return mirnet.load_model(*args, **kwargs)

    monkeypatch.setattr(serve, "load_model", counting_load)
    with TestClient(serve.create_app(model=str(weights))) as client:
        for _ in range(3):
            assert post(client, dark_png).status_code == 200
    assert loads == [(str(weights),)]


class SlowEnhancer:
    """Stands in for a model whose inference takes until the test releases it."""

    def __init__(self):
        self.started = threading.Event()
        self.release = threading.Event()

    def enhance_tensor(self, image: torch.Tensor, progress=None) -> torch.Tensor:
        self.started.set()
        self.release.wait(timeout=10)
        return image


def test_slow_request_does_not_block_others(monkeypatch: pytest.MonkeyPatch, weights: Path, dark_png: bytes):
    slow = SlowEnhancer()
    monkeypatch.setattr(serve, "load_model", lambda *args, **kwargs: slow)
    responses = {}
    with TestClient(serve.create_app(model=str(weights))) as client:
        worker = threading.Thread(target=lambda: responses.update(slow=post(client, dark_png)))
        worker.start()
        try:
            assert slow.started.wait(timeout=10)
            # Were inference on the event loop, these would wait the 10 s out behind it.
            assert client.get("/health").status_code == 200
            assert client.get("/models").status_code == 200
            assert worker.is_alive(), "the slow request ended before the others were answered"
        finally:
            slow.release.set()
            worker.join(timeout=10)
    assert responses["slow"].status_code == 200


def test_page_and_assets_are_served_locally(client: TestClient):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    # Offline: no asset may come from anywhere but this server.
    for path in serve.STATIC_DIR.iterdir():
        text = path.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path.name
    assert client.get("/docs").status_code == 404  # Swagger UI would load from a CDN


def test_result_filename_is_safe_for_a_header():
    assert serve.result_filename('a"b\r\nc.jpg') == "a_b_c_enhanced.png"
    assert serve.result_filename(None) == "photo_enhanced.png"
    assert serve.result_filename("...") == "photo_enhanced.png"


def test_serve_subcommand_arguments():
    parser = argparse.ArgumentParser()
    serve.add_serve_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve"])
    assert (args.host, args.port, args.model, args.func) == ("127.0.0.1", 8000, None, serve._serve_command)
    args = parser.parse_args(
        "serve --port 9001 --model w.safetensors --max-upload-mb 5 --max-megapixels 2".split()
    )
    assert (args.port, args.model, args.max_upload_mb, args.max_megapixels) == (9001, "w.safetensors", 5, 2)
