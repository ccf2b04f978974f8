"""A small local web app for enhancing photos in the browser: ``mirnet serve``.

The page (``/``) lets one drop a photo, compare it with the enhanced result on a
before/after slider, pick the model and download the result as PNG. Programs use the same
HTTP API (documented in docs/serve.md):

* ``POST /enhance``: multipart field ``file`` (the photo) and optional ``model``; answers
  ``image/png``, or a JSON ``{"detail": ...}`` with 400 (corrupt image, unknown model),
  411 (no Content-Length), 413 (too many bytes or megapixels) or 415 (not an image).
* ``GET /models``: the models offered and the default.
* ``GET /health``: liveness, version and upload limits.

Every asset is served from the package (no CDN), so the page works offline. FastAPI and
uvicorn are imported only when an app is built, so ``mirnet`` works without the ``serve``
extra installed.
"""

# No "from __future__ import annotations": FastAPI reads the route signatures at run time, and
# their types are imported inside create_app.
import argparse
import io
import re
import sys
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import torch
from PIL import Image, UnidentifiedImageError

import mirnet
from mirnet.device import OptionError
from mirnet.inference import Enhancer, load_model
from mirnet.io import ImageReadError, read_image, to_uint
from mirnet.weights import DEFAULT_MODEL, WeightsError, bundled_models

if TYPE_CHECKING:
    from fastapi import FastAPI

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 25.0
DEFAULT_MAX_MEGAPIXELS = 24.0
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


class ModelRegistry:
    """The models the app offers: the bundled ones plus one named on the command line.

    Each model is loaded on first use and kept. A lock per model serialises its use, which
    bounds memory to one photo per model, while other models and other routes stay free.
    """

    def __init__(self, model: str | None = None, device: str | None = None, tile: int | None = None):
        self.device = device
        self.tile = tile
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

    def enhance(self, name: str, image: torch.Tensor) -> torch.Tensor:
        """Enhance a (3, H, W) tensor with a model, loading it first if needed. Blocking."""
        with self._locks[name]:
            if name not in self._enhancers:
                self._enhancers[name] = load_model(self.sources[name], device=self.device, tile=self.tile)
            return self._enhancers[name].enhance_tensor(image)


def decode_upload(data: bytes, max_pixels: int) -> torch.Tensor:
    """Decode uploaded bytes into a (3, H, W) tensor, checking the pixel count before decoding.

    Raises:
        UploadError: 400 empty or corrupt, 413 too many pixels, 415 not an image.
    """
    if not data:
        raise UploadError(400, "the upload is empty")
    # read_image takes a path (it handles EXIF orientation, 16-bit PNG, alpha...), so the
    # bytes go through a private temporary file.
    with tempfile.TemporaryDirectory(prefix="mirnet-serve-") as folder:
        path = Path(folder) / "upload"
        path.write_bytes(data)
        try:
            with Image.open(path) as image:  # reads the header only
                width, height = image.size
        except UnidentifiedImageError:
            raise UploadError(415, "not an image file (PNG, JPEG, TIFF, WebP or BMP expected)") from None
        except Image.DecompressionBombError:
            raise UploadError(413, "too many pixels (refused by the decompression-bomb guard)") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise UploadError(400, f"corrupt image ({err})") from None
        if width * height > max_pixels:
            raise UploadError(
                413,
                f"{width} x {height} is {width * height / 1e6:.1f} megapixels, over the limit of "
                f"{max_pixels / 1e6:g}",
            )
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


def create_app(
    model: str | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    device: str | None = None,
    tile: int | None = None,
) -> "FastAPI":
    """Build the web app.

    Args:
        model: a bundled model name or a weights file, offered first and used by default;
            ``None``: the bundled default.
        max_upload_mb: largest accepted upload, in megabytes (10**6 bytes).
        max_megapixels: largest accepted photo, in millions of pixels.
        device: where models run (``None``: CUDA when present, else the CPU).
        tile: tile size for large photos (see :class:`mirnet.Enhancer`).
    """
    try:
        from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
        from fastapi.concurrency import run_in_threadpool
        from fastapi.responses import FileResponse, JSONResponse, Response
        from fastapi.staticfiles import StaticFiles
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({err})") from err

    registry = ModelRegistry(model, device=device, tile=tile)
    max_bytes = int(max_upload_mb * 1_000_000)
    max_pixels = int(max_megapixels * 1_000_000)
    limits = {"max_upload_bytes": max_bytes, "max_megapixels": max_megapixels}
    # Swagger/ReDoc pages load their scripts from a CDN: off, to stay offline.
    app = FastAPI(title="mirnet", version=mirnet.__version__, docs_url=None, redoc_url=None)
    app.state.registry = registry

    @app.middleware("http")
    async def guard(request: Request, call_next):
        # Refuse oversized bodies from the header, before they are received and spooled.
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                return JSONResponse({"detail": "a Content-Length header is required"}, status_code=411)
            if int(length) > max_bytes + MULTIPART_SLACK_BYTES:
                return JSONResponse({"detail": _too_large(int(length), max_bytes)}, status_code=413)
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness, version and upload limits."""
        return {"status": "ok", "version": mirnet.__version__, "limits": limits}

    @app.get("/models")
    def models() -> dict[str, Any]:
        """The models offered and the default one."""
        return {"default": registry.default, "models": registry.describe()}

    @app.post("/enhance", response_class=Response, responses={200: {"content": {"image/png": {}}}})
    async def enhance(
        file: Annotated[UploadFile, File()], model: Annotated[str | None, Form()] = None
    ) -> Response:
        """Enhance one photo; answers the result as PNG."""
        try:
            name = registry.pick(model)
            data = await file.read()
            if len(data) > max_bytes:
                raise UploadError(413, _too_large(len(data), max_bytes))
            started = time.perf_counter()
            # Decoding and inference block for seconds: a worker thread keeps the server
            # answering other requests meanwhile.
            png = await run_in_threadpool(_enhance_bytes, registry, name, data, max_pixels)
        except UploadError as err:
            raise HTTPException(err.status, err.message) from None
        except WeightsError as err:
            raise HTTPException(500, f"model {name!r} could not be loaded: {err}") from None
        except RuntimeError as err:  # e.g. out of memory: still a JSON answer the page can show
            raise HTTPException(500, f"enhancement failed: {err}") from None
        headers = {
            "Content-Disposition": f'inline; filename="{result_filename(file.filename)}"',
            "X-Mirnet-Model": name,
            "X-Mirnet-Seconds": f"{time.perf_counter() - started:.3f}",
        }
        return Response(png, media_type="image/png", headers=headers)

    return app


def _enhance_bytes(registry: ModelRegistry, name: str, data: bytes, max_pixels: int) -> bytes:
    return encode_png(registry.enhance(name, decode_upload(data, max_pixels)))


def _too_large(size: int, max_bytes: int) -> str:
    return f"upload of {size:,} bytes is over the limit of {max_bytes / 1e6:g} MB"


def run_server(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    model: str | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    device: str | None = None,
    tile: int | None = None,
) -> None:
    """Serve the app with uvicorn until interrupted. The default model is loaded first, so
    a bad ``model`` fails here rather than on the first photo. Arguments as :func:`create_app`."""
    try:
        import uvicorn
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({err})") from err
    app = create_app(model, max_upload_mb, max_megapixels, device, tile)
    registry: ModelRegistry = app.state.registry
    if registry.default is not None:
        registry.enhance(registry.default, torch.zeros(3, 8, 8))  # load it (and warm it up)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"mirnet serve: warning: listening on {host}: anyone who can reach it can use it.",
            file=sys.stderr,
        )
    shown = "localhost" if host == DEFAULT_HOST else host
    print(f"mirnet serve: open http://{shown}:{port}/", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="info")


def _serve_command(args: argparse.Namespace) -> int:
    try:
        run_server(
            args.host, args.port, args.model, args.max_upload_mb, args.max_megapixels, args.device, args.tile
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
        "unless --host says otherwise. Needs the serve extra: pip install -c constraints.txt -e '.[serve]'.",
    )
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    serve.add_argument(
        "--model",
        help="bundled model name or weights file, offered as the default (default: the bundled default)",
    )
    serve.add_argument(
        "--max-upload-mb",
        type=float,
        default=DEFAULT_MAX_UPLOAD_MB,
        metavar="MB",
        help=f"largest upload accepted (default {DEFAULT_MAX_UPLOAD_MB:g})",
    )
    serve.add_argument(
        "--max-megapixels",
        type=float,
        default=DEFAULT_MAX_MEGAPIXELS,
        metavar="MP",
        help=f"largest photo accepted, in megapixels (default {DEFAULT_MAX_MEGAPIXELS:g})",
    )
    serve.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    serve.add_argument(
        "--tile",
        type=int,
        default=None,
        metavar="SIZE",
        help="process in SIZE x SIZE tiles; default: automatic for large photos, 0: never",
    )
    serve.set_defaults(func=_serve_command)
    return serve
