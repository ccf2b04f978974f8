"""A small local web app for enhancing photos in the browser: ``mirnet serve``.

The page (``/``) lets one drop a photo, compare it with the enhanced result on a
before/after slider, pick the model and download the result as PNG. Programs use the same
HTTP API (documented in docs/serve.md):

* ``POST /enhance``: multipart field ``file`` (the photo) and optional ``model``; answers
  ``image/png``, or a JSON ``{"detail": "..."}`` with 400 (corrupt image, unknown model, no
  file), 408 (the body did not arrive in time), 411 (no Content-Length), 413 (too many bytes
  or megapixels), 415 (not an image) or 503 (busy, with ``Retry-After``; or stopping).
* ``GET /models``: the models offered and the default.
* ``GET /health``: liveness, version, upload limits and the current load.

Under load the server stays bounded (:class:`Admission`): at most ``queue`` requests are
taken on at once, the rest are refused at once with 503; photos are decoded only inside
that bound, against a budget of pixels; a small fixed pool of worker threads does the work;
work is dropped when its client disconnects or the server stops (one Ctrl-C is enough).

Every asset is served from the package (no CDN), so the page works offline. FastAPI and
uvicorn are imported only when an app is built, so ``mirnet`` works without the ``serve``
extra installed.
"""

# No "from __future__ import annotations": FastAPI reads the route signatures at run time, and
# their types are imported inside create_app.
import argparse
import asyncio
import collections
import contextlib
import io
import math
import re
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image, UnidentifiedImageError

import mirnet
from mirnet.device import OptionError, return_freed_memory
from mirnet.inference import PRECISIONS, Enhancer, load_model
from mirnet.io import ImageReadError, read_image, to_uint
from mirnet.options import integer, number
from mirnet.weights import DEFAULT_MODEL, WeightsError, bundled_models

if TYPE_CHECKING:
    from fastapi import FastAPI

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 25.0
DEFAULT_MAX_MEGAPIXELS = 24.0
DEFAULT_QUEUE = 8  # requests taken on at once (waiting + running); more get a quick 503
DEFAULT_WORKERS = 2  # one decodes/encodes while the other runs the model
DEFAULT_BODY_TIMEOUT = 60.0  # seconds for the whole upload to arrive
DEFAULT_MAX_CONNECTIONS = 100  # open connections; uvicorn answers 503 past this
# Seconds a graceful stop waits for answers to be sent, after in-flight work was cancelled.
GRACEFUL_SHUTDOWN_SECONDS = 5
# How often a waiting or working request looks whether its client has gone.
DISCONNECT_POLL_SECONDS = 0.25
# Room for the multipart boundaries, part headers and the model field around the file.
MULTIPART_SLACK_BYTES = 64 * 1024
STATIC_DIR = Path(str(resources.files("mirnet") / "static"))
# The page may load nothing but its own files: a CDN slip would show up as a blocked request.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
INSTALL_HINT = "mirnet serve needs the serve extra: pip install -c constraints.txt -e '.[serve]'"


class UploadError(Exception):
    """An upload refused with an HTTP status and a message for the user."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class Cancelled(Exception):
    """The request's client went away, or the server is stopping: its work was dropped."""


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled


class Admission:
    """What the server takes on at once, so that load cannot exhaust memory or CPU.

    * At most ``capacity`` requests are admitted (waiting or running). Past that a request is
      refused at once (503 with ``Retry-After``) rather than queued without end.
    * Admitted requests charge their photo's pixels against ``pixel_budget`` before decoding,
      and wait in order until it fits: decoded photos in memory are bounded by the budget,
      not by the number of requests (six 23-megapixel uploads decode one at a time).
    * Each admitted request has a cancel event, set when its client disconnects or the
      server stops; workers check it between stages, tiles and self-ensemble copies.

    Used from the event loop only (``stop`` also from a signal handler on the same thread).
    """

    def __init__(self, capacity: int, pixel_budget: int):
        self.capacity = capacity
        self.pixel_budget = pixel_budget
        self.admitted = 0
        self.pixels = 0
        self.seconds_per_request = 1.0  # running mean of the work, for Retry-After
        self.stopping = threading.Event()
        self._cancels: set[threading.Event] = set()
        self._waiting: collections.deque[tuple[int, asyncio.Future]] = collections.deque()

    def full(self) -> bool:
        """Whether a new request would be refused now."""
        return self.stopping.is_set() or self.admitted >= self.capacity

    def admit(self) -> threading.Event | None:
        """Take a request on: its cancel event, or ``None`` when full or stopping."""
        if self.full():
            return None
        self.admitted += 1
        cancel = threading.Event()
        self._cancels.add(cancel)
        return cancel

    def leave(self, cancel: threading.Event) -> None:
        """A request admitted with :meth:`admit` is done (answered, refused or cancelled)."""
        self.admitted -= 1
        self._cancels.discard(cancel)

    def retry_after(self) -> int:
        """Seconds a refused client should wait: about the time to clear the current queue."""
        return max(1, math.ceil(self.seconds_per_request * max(self.admitted, 1)))

    def record(self, seconds: float) -> None:
        """Note how long one request's work took."""
        self.seconds_per_request = 0.8 * self.seconds_per_request + 0.2 * seconds

    async def reserve(self, pixels: int, cancel: threading.Event) -> None:
        """Wait, first come first served, until ``pixels`` fit in the budget; then charge them.

        A photo larger than the whole budget runs alone. Raises :class:`Cancelled` if
        ``cancel`` is set while waiting.
        """
        if not self._waiting and self._fits(pixels):
            self.pixels += pixels
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiting.append((pixels, granted))
        try:
            while not granted.done():
                _check(cancel)
                await asyncio.wait([granted], timeout=DISCONNECT_POLL_SECONDS)
        except BaseException:
            if granted.done():
                self.release(pixels)
            else:
                granted.cancel()
                self._grant()  # the head of the queue may have been this request
            raise

    def release(self, pixels: int) -> None:
        """Give back pixels charged by :meth:`reserve`, and let waiting requests in."""
        self.pixels -= pixels
        self._grant()

    def stop(self) -> None:
        """Refuse new requests and cancel the work of every admitted one."""
        self.stopping.set()
        for cancel in list(self._cancels):
            cancel.set()

    def _fits(self, pixels: int) -> bool:
        return self.pixels + pixels <= self.pixel_budget or self.pixels == 0

    def _grant(self) -> None:
        while self._waiting:
            pixels, granted = self._waiting[0]
            if granted.done():  # given up while waiting
                self._waiting.popleft()
                continue
            if not self._fits(pixels):
                return
            self._waiting.popleft()
            self.pixels += pixels
            granted.set_result(None)


class ModelRegistry:
    """The models the app offers: the bundled ones plus one named on the command line.

    Each model is loaded on first use and kept. A lock per model serialises its use (two
    inferences at once would only share the same cores), while other models and other
    routes stay free.
    """

    def __init__(
        self,
        model: str | None = None,
        device: str | None = None,
        tile: int | None = None,
        precision: str = "auto",
    ):
        self.device = device
        self.tile = tile
        self.precision = precision
        self.sources: dict[str, str] = {name: name for name in sorted(bundled_models())}
        self.kinds: dict[str, str] = dict.fromkeys(self.sources, "bundled")
        if model is None:
            self.default = DEFAULT_MODEL if DEFAULT_MODEL in self.sources else next(iter(self.sources), None)
        elif model in self.sources:
            self.default = model
        else:
            path = Path(model)
            if not path.is_file():
                known = ", ".join(self.sources) or "none"
                raise WeightsError(f"{model}: neither a bundled model (bundled: {known}) nor a weights file")
            # Offer the file under its stem; the full path only when the stem is taken.
            name = path.stem if path.stem not in self.sources else str(path)
            self.sources[name] = str(path)
            self.kinds[name] = "file"
            self.default = name
        self._enhancers: dict[str, Enhancer] = {}
        self._locks = {name: threading.Lock() for name in self.sources}

    def describe(self) -> list[dict[str, Any]]:
        """The offered models as JSON-ready dicts: ``name``, ``source`` and ``default``."""
        return [
            {"name": name, "source": self.kinds[name], "default": name == self.default}
            for name in self.sources
        ]

    def pick(self, name: str | None) -> str:
        """The model to use for a request asking for ``name`` (``None``/empty: the default)."""
        if not name:
            if self.default is None:
                raise UploadError(503, "no model available: start the server with --model NAME_OR_FILE")
            return self.default
        if name not in self.sources:
            raise UploadError(400, f"unknown model {name!r}; available: {', '.join(self.sources) or 'none'}")
        return name

    def enhance(self, name: str, image: torch.Tensor, cancel: threading.Event | None = None) -> torch.Tensor:
        """Enhance a (3, H, W) tensor with a model, loading it first if needed. Blocking.

        Raises :class:`Cancelled` when ``cancel`` is set while waiting for the model or
        between tiles and between the copies of a self-ensemble (a photo enhanced in one pass
        runs to its end).
        """
        lock = self._locks[name]
        while not lock.acquire(timeout=DISCONNECT_POLL_SECONDS):
            _check(cancel)
        try:
            _check(cancel)
            if name not in self._enhancers:
                self._enhancers[name] = load_model(
                    self.sources[name], device=self.device, tile=self.tile, precision=self.precision
                )
            return self._enhancers[name].enhance_tensor(image, progress=lambda done, total: _check(cancel))
        finally:
            lock.release()


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height from an upload's image header, without decoding the pixels.

    Raises:
        UploadError: 400 empty or corrupt, 413 a decompression bomb, 415 not an image.
    """
    if not data:
        raise UploadError(400, "the upload is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            return image.size
    except UnidentifiedImageError:
        raise UploadError(415, "not an image file (PNG, JPEG, TIFF, WebP or BMP expected)") from None
    except Image.DecompressionBombError:
        raise UploadError(413, "too many pixels (refused by the decompression-bomb guard)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise UploadError(400, f"corrupt image ({err})") from None


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Raise a 413 :class:`UploadError` for a photo over ``max_pixels``."""
    if width * height > max_pixels:
        raise UploadError(
            413,
            f"{width} x {height} is {width * height / 1e6:.1f} megapixels, "
            f"over the limit of {max_pixels / 1e6:g}",
        )


def decode_upload(data: bytes, max_pixels: int) -> torch.Tensor:
    """Decode uploaded bytes into a (3, H, W) tensor, checking the pixel count before decoding.

    Raises:
        UploadError: 400 empty or corrupt, 413 too many pixels, 415 not an image.
    """
    check_pixels(*image_size(data), max_pixels)
    # read_image takes a path (it handles EXIF orientation, 16-bit PNG, alpha...), so the
    # bytes go through a private temporary file.
    with tempfile.TemporaryDirectory(prefix="mirnet-serve-") as folder:
        path = Path(folder) / "upload"
        path.write_bytes(data)
        try:
            return read_image(path)
        except ImageReadError as err:
            # The message starts with our temporary path, which means nothing to the user.
            raise UploadError(400, str(err).removeprefix(f"{path}: ")) from None


def encode_png(image: torch.Tensor) -> bytes:
    """A (3, H, W) tensor in [0, 1] as 8-bit PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(to_uint(image, 8)).save(buffer, format="PNG")
    return buffer.getvalue()


def result_filename(upload_name: str | None) -> str:
    """``NAME_enhanced.png`` for an upload, with only safe characters (it goes in a header)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(upload_name or "photo").stem).strip("._")[:100]
    return f"{stem or 'photo'}_enhanced.png"


def _enhance_bytes(
    registry: ModelRegistry, name: str, data: bytes, max_pixels: int, cancel: threading.Event
) -> bytes:
    """Decode, enhance and encode one upload (in a worker thread), checking ``cancel`` between."""
    try:
        return encode_png(_enhance_upload(registry, name, data, max_pixels, cancel))
    finally:
        # The photo's tensors are unreferenced by now; without this, after one 20-megapixel
        # photo the server would stay gigabytes large.
        return_freed_memory()


def _enhance_upload(
    registry: ModelRegistry, name: str, data: bytes, max_pixels: int, cancel: threading.Event
) -> torch.Tensor:
    _check(cancel)
    out = registry.enhance(name, decode_upload(data, max_pixels), cancel)
    _check(cancel)
    return out


def _too_large(size: int, max_bytes: int) -> str:
    return f"upload of {size:,} bytes is over the limit of {max_bytes / 1e6:g} MB"


def create_app(
    model: str | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    device: str | None = None,
    tile: int | None = None,
    queue: int = DEFAULT_QUEUE,
    workers: int = DEFAULT_WORKERS,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    pixel_budget_mp: float | None = None,
    precision: str = "auto",
) -> "FastAPI":
    """Build the web app.

    Args:
        model: a bundled model name or a weights file, offered first and used by default;
            ``None``: the bundled default.
        max_upload_mb: largest accepted upload, in megabytes (10**6 bytes).
        max_megapixels: largest accepted photo, in millions of pixels.
        device: where models run (``None``: CUDA when present, else the CPU).
        tile: tile size for large photos (see :class:`mirnet.Enhancer`).
        queue: most requests taken on at once (waiting + running); more get a quick 503.
        workers: threads that decode, enhance and encode (the model itself runs one photo
            at a time; a second worker overlaps decoding and encoding with it).
        body_timeout: seconds an upload may take to arrive (408 after that).
        pixel_budget_mp: megapixels of photos decoded at once (``None``: ``max_megapixels``,
            so one largest photo, or many small ones).
        precision: ``"auto"`` (bf16 where the hardware has it), ``"fp32"`` or ``"bf16"``.
    """
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import FileResponse, JSONResponse, Response
        from fastapi.staticfiles import StaticFiles
        from starlette.datastructures import Headers, MutableHeaders, UploadFile
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({err})") from err

    registry = ModelRegistry(model, device=device, tile=tile, precision=precision)
    max_bytes = int(max_upload_mb * 1_000_000)
    max_pixels = int(max_megapixels * 1_000_000)
    budget = int((pixel_budget_mp if pixel_budget_mp is not None else max_megapixels) * 1_000_000)
    admission = Admission(queue, budget)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mirnet-serve")
    limits = {"max_upload_bytes": max_bytes, "max_megapixels": max_megapixels}

    @contextlib.asynccontextmanager
    async def lifespan(app: "FastAPI"):
        yield
        admission.stop()
        pool.shutdown(wait=False, cancel_futures=True)

    # Swagger/ReDoc pages load their scripts from a CDN: off, to stay offline.
    app = FastAPI(
        title="mirnet", version=mirnet.__version__, docs_url=None, redoc_url=None, lifespan=lifespan
    )
    app.state.registry = registry
    app.state.admission = admission

    def refuse(status: int, message: str, **headers: str) -> JSONResponse:
        return JSONResponse({"detail": message}, status_code=status, headers=headers or None)

    def busy() -> JSONResponse:
        if admission.stopping.is_set():
            return refuse(503, "the server is stopping")
        return refuse(
            503,
            f"busy: {admission.admitted} photos in progress; try again shortly",
            **{"Retry-After": str(admission.retry_after())},
        )

    @app.exception_handler(RequestValidationError)
    async def one_line_validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        # FastAPI's default is a list of dicts; the API promises one string.
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in err.errors()]
        return refuse(422, "; ".join(parts) or "invalid request")

    class Guard:
        """Refuses oversized or unsized bodies from the headers, before they are received and
        spooled, and adds the security headers. Plain ASGI (not ``@app.middleware``, whose
        wrapped ``receive`` hides a client's disconnect from the route)."""

        def __init__(self, app: Any):
            self.app = app

        async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return await self.app(scope, receive, send)
            if scope["method"] == "POST":
                length = Headers(scope=scope).get("content-length")
                refusal = None
                if length is None or not length.isdigit():
                    refusal = refuse(411, "a Content-Length header is required")
                elif int(length) > max_bytes + MULTIPART_SLACK_BYTES:
                    refusal = refuse(413, _too_large(int(length), max_bytes))
                if refusal is not None:
                    return await refusal(scope, receive, send)

            async def send_with_headers(message: dict) -> None:
                if message["type"] == "http.response.start":
                    headers = MutableHeaders(scope=message)
                    headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
                    headers["X-Content-Type-Options"] = "nosniff"
                await send(message)

            await self.app(scope, receive, send_with_headers)

    app.add_middleware(Guard)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # Async routes: answered on the event loop, not in extra threads (each would grow its own
    # allocator arena).
    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness, version, upload limits and the current load."""
        load = {
            "admitted": admission.admitted,
            "queue": admission.capacity,
            "megapixels": admission.pixels / 1e6,
        }
        return {"status": "ok", "version": mirnet.__version__, "limits": limits, "load": load}

    @app.get("/models")
    async def models() -> dict[str, Any]:
        """The models offered and the default one."""
        return {"default": registry.default, "models": registry.describe()}

    async def watch_disconnect(request: Request, cancel: threading.Event) -> None:
        while not cancel.is_set():
            if await request.is_disconnected():
                cancel.set()
                return
            await asyncio.sleep(DISCONNECT_POLL_SECONDS)

    @app.post("/enhance", response_class=Response, responses={200: {"content": {"image/png": {}}}})
    async def enhance(request: Request) -> Response:
        """Enhance one photo (multipart field ``file``, optional ``model``); answers PNG."""
        if admission.full():  # refuse before receiving the body
            return busy()
        try:
            form = await asyncio.wait_for(request.form(max_files=1, max_fields=4), body_timeout)
        except TimeoutError:
            return refuse(408, f"the upload did not arrive within {body_timeout:g} s")
        except Exception as err:  # noqa: BLE001 - a malformed multipart body, in any of its forms
            return refuse(400, f"not a readable multipart form ({err})")
        try:
            upload, model_name = form.get("file"), form.get("model")
            if not isinstance(upload, UploadFile):
                return refuse(400, "no photo: send it in the multipart field 'file'")
            if model_name is not None and not isinstance(model_name, str):
                return refuse(400, "the 'model' field must be a name")
            filename = upload.filename
            data = await upload.read()
        finally:
            await form.close()  # removes the spooled file
        try:
            name = registry.pick(model_name)
            if len(data) > max_bytes:
                raise UploadError(413, _too_large(len(data), max_bytes))
            width, height = image_size(data)
            check_pixels(width, height, max_pixels)
        except UploadError as err:
            return refuse(err.status, err.message)
        cancel = admission.admit()
        if cancel is None:
            return busy()
        watcher = asyncio.create_task(watch_disconnect(request, cancel))
        started = time.perf_counter()
        try:
            await admission.reserve(width * height, cancel)
            try:
                work = asyncio.get_running_loop().run_in_executor(
                    pool, _enhance_bytes, registry, name, data, max_pixels, cancel
                )
                png = await work
            finally:
                admission.release(width * height)
            admission.record(time.perf_counter() - started)
        except UploadError as err:
            return refuse(err.status, err.message)
        except Cancelled:
            # The client has gone (nobody reads this) or the server is stopping.
            return refuse(503, "cancelled: the server is stopping")
        except WeightsError as err:
            return refuse(500, f"model {name!r} could not be loaded: {err}")
        except RuntimeError as err:  # e.g. out of memory: still a JSON answer the page can show
            return refuse(500, f"enhancement failed: {err}")
        finally:
            cancel.set()  # stops the watcher, and the work if this task itself was cancelled
            watcher.cancel()
            admission.leave(cancel)
        headers = {
            "Content-Disposition": f'inline; filename="{result_filename(filename)}"',
            "X-Mirnet-Model": name,
            "X-Mirnet-Seconds": f"{time.perf_counter() - started:.3f}",
        }
        return Response(png, media_type="image/png", headers=headers)

    return app


def run_server(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    model: str | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    device: str | None = None,
    tile: int | None = None,
    queue: int = DEFAULT_QUEUE,
    workers: int = DEFAULT_WORKERS,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    pixel_budget_mp: float | None = None,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    precision: str = "auto",
) -> None:
    """Serve the app with uvicorn until interrupted. The default model is loaded first, so
    a bad ``model`` fails here rather than on the first photo. Arguments as :func:`create_app`;
    ``max_connections``: open connections held at once (uvicorn answers 503 past it).

    The first SIGINT or SIGTERM stops accepting connections, cancels the work in progress
    (at its next tile or stage), answers what is waiting with 503 and returns.
    """
    try:
        import uvicorn
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({err})") from err
    app = create_app(
        model,
        max_upload_mb,
        max_megapixels,
        device,
        tile,
        queue,
        workers,
        body_timeout,
        pixel_budget_mp,
        precision,
    )
    registry: ModelRegistry = app.state.registry
    admission: Admission = app.state.admission
    if registry.default is not None:
        registry.enhance(registry.default, torch.zeros(3, 8, 8))  # load it (and warm it up)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            admission.stop()  # running work ends at its next check instead of finishing
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        limit_concurrency=max_connections,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"mirnet serve: warning: listening on {host}: anyone who can reach it can use it.",
            file=sys.stderr,
        )
    shown = "localhost" if host == DEFAULT_HOST else host
    print(f"mirnet serve: open http://{shown}:{port}/", file=sys.stderr)
    server = Server(config)
    server.run()
    if not server.started and not server.should_exit:  # e.g. the port is taken (uvicorn logged why)
        raise OSError(f"could not listen on {host}:{port}")


def _serve_command(args: argparse.Namespace) -> int:
    try:
        run_server(
            args.host,
            args.port,
            args.model,
            args.max_upload_mb,
            args.max_megapixels,
            args.device,
            args.tile,
            args.queue,
            args.workers,
            args.body_timeout,
            args.pixel_budget,
            args.max_connections,
            args.precision,
        )
    except (ImportError, WeightsError, OptionError) as err:
        print(f"mirnet serve: error: {err}", file=sys.stderr)
        return 1
    return 0


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``serve`` subcommand on an ``add_subparsers()`` object; returns its parser."""
    serve = subparsers.add_parser(
        "serve",
        help="enhance photos in the browser (local web app and HTTP API)",
        description="Serve a web page for enhancing photos (drop a photo, compare before/after, download "
        "the PNG) and an HTTP API (POST /enhance, GET /models, GET /health). Listens on localhost only "
        "unless --host says otherwise. Under load it takes on at most --queue photos at once and "
        "answers 503 with Retry-After past that. Needs the serve extra: "
        "pip install -c constraints.txt -e '.[serve]'.",
    )
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    serve.add_argument(
        "--port", type=integer(1, 65535), default=DEFAULT_PORT, help=f"port, 1-65535 (default {DEFAULT_PORT})"
    )
    serve.add_argument(
        "--model",
        help="bundled model name or weights file, offered as the default (default: the bundled default)",
    )
    serve.add_argument(
        "--max-upload-mb",
        type=number(above=0, high=10_000),
        default=DEFAULT_MAX_UPLOAD_MB,
        metavar="MB",
        help=f"largest upload accepted (default {DEFAULT_MAX_UPLOAD_MB:g})",
    )
    serve.add_argument(
        "--max-megapixels",
        type=number(above=0, high=10_000),
        default=DEFAULT_MAX_MEGAPIXELS,
        metavar="MP",
        help=f"largest photo accepted, in megapixels (default {DEFAULT_MAX_MEGAPIXELS:g})",
    )
    serve.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    serve.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto (default): bf16 where the CPU or GPU has it natively, else fp32",
    )
    serve.add_argument(
        "--tile",
        type=integer(0),
        default=None,
        metavar="SIZE",
        help="process in SIZE x SIZE tiles (a cancel then waits one tile at most); default: whole when "
        "the photo fits in memory, else 512-pixel tiles; 0: always whole",
    )
    serve.add_argument(
        "--queue",
        type=integer(1, 10_000),
        default=DEFAULT_QUEUE,
        metavar="N",
        help=f"photos taken on at once, waiting or running; more get 503 at once (default {DEFAULT_QUEUE})",
    )
    serve.add_argument(
        "--workers",
        type=integer(1, 64),
        default=DEFAULT_WORKERS,
        metavar="N",
        help=f"worker threads for decoding, enhancing and encoding (default {DEFAULT_WORKERS})",
    )
    serve.add_argument(
        "--pixel-budget",
        type=number(above=0, high=100_000),
        default=None,
        metavar="MP",
        help="megapixels of photos held decoded at once; others wait (default: --max-megapixels)",
    )
    serve.add_argument(
        "--body-timeout",
        type=number(above=0, high=86_400),
        default=DEFAULT_BODY_TIMEOUT,
        metavar="S",
        help=f"seconds an upload may take to arrive; 408 after (default {DEFAULT_BODY_TIMEOUT:g})",
    )
    serve.add_argument(
        "--max-connections",
        type=integer(1, 100_000),
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help=f"open connections at once; 503 past it (default {DEFAULT_MAX_CONNECTIONS})",
    )
    serve.set_defaults(func=_serve_command)
    return serve
