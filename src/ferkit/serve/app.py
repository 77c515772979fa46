"""The FastAPI app: ``create_app(ServeConfig(...))``. Routes: ``POST /v1/predict`` (multipart field ``file``
or the raw image bytes as the body), ``POST /v1/predict/batch`` (multipart, several ``files``),
``GET /v1/models``, ``GET /healthz``, ``GET /metrics`` (Prometheus text), ``GET /`` (the webcam page) and
``/static/*``. Every error is a JSON ``{"error": code, "reason": "..."}`` with a 4xx (or 503/504 when the
server is saturated / a request timed out), never a 500 for bad input."""

import asyncio
import contextlib
import hmac
import math
import os
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.inference.settings import AnalyzerSettings

STATIC = Path(__file__).parent / "static"
API_KEY_ENV = "FERKIT_API_KEY"
IMAGE_TYPES = (
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/bmp",
    "image/gif",
    "image/tiff",
    "application/octet-stream",
)


@dataclass
class ServeConfig:
    """What ``ferkit serve`` runs: the analyzer's :class:`~ferkit.inference.settings.AnalyzerSettings` (the
    CLI's and the API's, validated there) and the server's own limits, checked in ``__post_init__``."""

    settings: AnalyzerSettings = field(default_factory=AnalyzerSettings)  # or its dict (to_dict)
    api_key: str | None = None  # None: $FERKIT_API_KEY (unset or empty: no key); "" is an error
    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_batch_files: int = 16
    request_timeout_s: float = 30.0
    read_timeout_s: float = 10.0  # each request's headers (first or kept-alive), then its body, within this
    max_connections: int = 256  # open connections at once; past it the longest-idle one is dropped
    max_connections_per_ip: int | None = None  # one client address's share (default: half of max_connections)
    max_inflight_mb: float = 160.0  # decode memory in flight at once (see faces.io.decode_peak_bytes); past it 503
    batch_max: int = 8  # images per micro-batch; 1 = no micro-batching
    batch_wait_ms: float = 5.0
    max_queue: int = 256  # images waiting for the model; beyond it requests get 503 "busy"
    analyzer: Any = None  # a ready Analyzer (tests, embedding); else built from ``settings``

    def __post_init__(self):
        """Every limit checked once, here (the CLI and the Python API both build this): a bad one is one
        ConfigError line naming the ``ferkit serve`` option, before any model is loaded."""
        from ferkit.errors import ConfigError

        if isinstance(self.settings, dict):
            self.settings = AnalyzerSettings.from_dict(self.settings)
        if not isinstance(self.settings, AnalyzerSettings):
            raise ConfigError(f"ServeConfig.settings: give an AnalyzerSettings, got {type(self.settings).__name__}")
        if self.max_connections_per_ip is None and _is_int(self.max_connections):
            self.max_connections_per_ip = max(1, self.max_connections // 2)
        if _is_number(self.max_upload_bytes) and math.isfinite(self.max_upload_bytes):
            self.max_upload_bytes = int(self.max_upload_bytes)  # the CLI's --max-upload-mb x 2**20
        for name, (flag, kind, lo, hi) in _LIMITS.items():
            v = getattr(self, name)
            ok = (_is_int(v) if kind == "int" else _is_number(v) and math.isfinite(v)) and lo <= v <= hi
            if not ok:
                what = "a whole number" if kind == "int" else "a finite number"
                raise ConfigError(f"ferkit serve {flag} ({name}): must be {what} from {lo:,} to {hi:,}, got {v!r}")
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key.strip()):
            raise ConfigError(
                "ferkit serve --api-key: an empty key would turn authentication off; give a key, or "
                f"leave the option out (then ${API_KEY_ENV} is used if set)"
            )
        if self.max_connections_per_ip > self.max_connections:
            raise ConfigError(
                f"ferkit serve: max_connections_per_ip ({self.max_connections_per_ip}) exceeds "
                f"--max-connections ({self.max_connections})"
            )


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


#: ServeConfig field -> (ferkit serve option, int|float, lowest, highest): every limit is finite and in range.
_LIMITS = {
    "max_upload_bytes": ("--max-upload-mb", "int", 1, 1 << 40),
    "max_pixels": ("--max-pixels", "int", 1, 10**10),
    "max_batch_files": ("max_batch_files", "int", 1, 10_000),
    "request_timeout_s": ("--timeout", "float", 1e-3, 86_400),
    "read_timeout_s": ("--read-timeout", "float", 1e-3, 86_400),
    "max_connections": ("--max-connections", "int", 1, 1_000_000),
    "max_connections_per_ip": ("max_connections_per_ip", "int", 1, 1_000_000),
    "max_inflight_mb": ("--max-inflight-mb", "float", 1e-3, 1 << 30),
    "batch_max": ("--batch-max", "int", 1, 4096),
    "batch_wait_ms": ("--batch-wait-ms", "float", 0, 60_000),
    "max_queue": ("max_queue", "int", 1, 1_000_000),
}


class PixelBudget:
    """Bounds the decode memory in flight: a request reserves its image's peak decode bytes (read from the header
    before decoding, :func:`ferkit.faces.io.decode_peak_bytes`: 5-20 B/px by mode and format) or is refused, so
    a burst of big images, float or 16-bit ones included, cannot take the server's memory."""

    def __init__(self, limit_bytes: int):
        import threading

        self.limit, self.used, self._lock = int(limit_bytes), 0, threading.Lock()

    def try_acquire(self, n: int) -> bool:
        with self._lock:
            if self.used + n > self.limit and self.used > 0:
                return False
            self.used += n
            return True

    def release(self, n: int) -> None:
        with self._lock:
            self.used -= n


def _trim_heap() -> None:
    """Give freed decode buffers back to the OS (glibc keeps them in its arenas otherwise)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _same_key(got: str | None, key: str) -> bool:
    """The client's key against ours in constant time (no timing side channel on how much of it matched)."""
    return got is not None and hmac.compare_digest(
        got.encode("utf-8", "surrogatepass"), key.encode("utf-8", "surrogatepass")
    )


class ApiError(Exception):
    def __init__(self, status: int, code: str, reason: str):
        super().__init__(reason)
        self.status, self.code, self.reason = status, code, reason


_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                }
            }
        },
    }
}


# ------------------------------------------------------------------ decoding with limits
def decode_image(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """Bytes -> RGB uint8 through ferkit's one decoder, or ApiError 400 (not an image in an accepted format,
    truncated, corrupt) / 413 (too many pixels)."""
    from ferkit.errors import DataError
    from ferkit.faces.io import ImageTooLargeError
    from ferkit.faces.io import decode_image as _decode

    try:
        return _decode(data, name, max_pixels=max_pixels)
    except ImageTooLargeError as e:
        raise ApiError(413, "too_many_pixels", str(e)) from None
    except DataError as e:
        raise ApiError(400, "bad_image" if data else "empty", str(e)) from None


def _models():
    """The OpenAPI response models, built from ferkit.schema's field tables (imported with the serve extra)."""
    from pydantic import BaseModel

    from ferkit.schema import openapi_models

    _face, file_result, batch = openapi_models()

    class ErrorBody(BaseModel):
        error: str
        reason: str

    class ModelInfo(BaseModel):
        name: str
        classes: list[str]
        input_size: list[int]
        channels: int
        task: str
        backend: str

    class ModelsInfo(BaseModel):
        models: list[ModelInfo]
        classes: list[str]
        model: str
        detector: str
        det_size: int | None
        identity: bool
        micro_batching: dict[str, float]
        limits: dict[str, float]

    return file_result, batch, ErrorBody, ModelsInfo


class _Requests:
    """Reading uploads and running them through the analyzer, with every limit of :class:`ServeConfig`:
    upload size, read timeout, formats, pixels, the decoded-pixel budget, the queue and the inference timeout."""

    def __init__(self, cfg: ServeConfig, analyzer, batcher, budget: PixelBudget):
        self.cfg, self.an, self.batcher, self.budget = cfg, analyzer, batcher, budget
        self.inflight = 0  # predict requests between body read and result (only touched on the event loop)

    async def read_body(self, request) -> bytes:
        cl = request.headers.get("content-length")
        if cl and cl.isdigit() and int(cl) > self.cfg.max_upload_bytes:
            raise ApiError(413, "too_large", f"upload of {cl} bytes exceeds the limit of {self.cfg.max_upload_bytes}")
        chunks, n = [], 0

        async def read():
            nonlocal n
            async for c in request.stream():
                n += len(c)
                if n > self.cfg.max_upload_bytes:
                    raise ApiError(413, "too_large", f"upload exceeds the limit of {self.cfg.max_upload_bytes} bytes")
                chunks.append(c)

        try:
            await asyncio.wait_for(read(), self.cfg.read_timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(
                408, "read_timeout", f"the request body did not arrive within {self.cfg.read_timeout_s} s"
            ) from None
        except ApiError:
            raise
        except Exception as e:  # noqa: BLE001 - client disconnected mid-body
            raise ApiError(400, "bad_body", f"could not read the request body ({type(e).__name__})") from e
        body = b"".join(chunks)
        request._body = body  # starlette re-uses it for .form()
        return body

    async def read_images(self, request, many: bool) -> list[tuple[str, bytes]]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await self.read_body(request)
        if ctype == "multipart/form-data":
            try:
                form = await request.form(
                    max_files=self.cfg.max_batch_files + 1, max_fields=self.cfg.max_batch_files + 16
                )
            except Exception as e:  # noqa: BLE001 - malformed multipart
                raise ApiError(400, "bad_multipart", f"malformed multipart body ({str(e) or type(e).__name__})") from e
            field_name = "files" if many else "file"
            items = [v for k, v in form.multi_items() if k in (field_name, "file", "files") and hasattr(v, "read")]
            if not items:
                raise ApiError(422, "missing_file", f"multipart body has no file field {field_name!r}")
            if not many and len(items) > 1:
                raise ApiError(422, "too_many_files", "POST /v1/predict takes one file; use /v1/predict/batch")
            if len(items) > self.cfg.max_batch_files:
                raise ApiError(
                    413, "too_many_files", f"{len(items)} files exceed the limit of {self.cfg.max_batch_files}"
                )
            out = []
            for i, f in enumerate(items):
                fct = (f.content_type or "application/octet-stream").split(";")[0].strip().lower()
                if not (fct.startswith("image/") or fct == "application/octet-stream"):
                    raise ApiError(
                        415, "unsupported_media_type", f"{f.filename or i}: content type {fct!r} is not an image"
                    )
                out.append((f.filename or f"upload{i}", await f.read()))
            return out
        if many:
            raise ApiError(
                415,
                "unsupported_media_type",
                "POST /v1/predict/batch takes multipart/form-data with several 'files' fields",
            )
        if not (ctype.startswith("image/") or ctype == "application/octet-stream"):
            raise ApiError(
                415,
                "unsupported_media_type",
                f"content type {ctype or 'none'!r}: send an image (image/*, "
                "application/octet-stream) or multipart/form-data",
            )
        return [("upload", body)]

    async def analyze(self, name: str, data: bytes, attributes: tuple[str, ...] | None = None) -> dict:
        """One image's FileResult (as a dict), or ApiError. ``attributes``: the request's own (else the server's)."""
        self.inflight += 1
        try:
            return await self._analyze(name, data, attributes)
        finally:
            self.inflight -= 1

    async def _analyze(self, name: str, data: bytes, attributes: tuple[str, ...] | None) -> dict:
        from ferkit.errors import DataError
        from ferkit.faces.io import ImageTooLargeError, decode_peak_bytes

        try:
            need = decode_peak_bytes(data, name, max_pixels=self.cfg.max_pixels)
        except ImageTooLargeError as e:
            raise ApiError(413, "too_many_pixels", str(e)) from None
        except DataError as e:
            raise ApiError(400, "bad_image" if data else "empty", str(e)) from None
        if not self.budget.try_acquire(need):
            raise ApiError(503, "busy", "server busy: too many large images in flight, retry later")
        held = need
        try:
            img = await asyncio.to_thread(decode_image, data, name, self.cfg.max_pixels)
            self.budget.release(need - img.nbytes)  # the decode's scratch is freed; the RGB image stays till the end
            held = img.nbytes
            return await self._run(name, img, attributes)
        finally:
            self.budget.release(held)
            if need > 16 << 20:
                _trim_heap()

    async def _run(self, name: str, img: np.ndarray, attributes: tuple[str, ...] | None) -> dict:
        try:
            fut = self.batcher.submit(img, name, attributes)
        except queue.Full as e:
            raise ApiError(503, "busy", "server saturated: too many queued images, retry later") from e
        try:
            faces = await asyncio.wait_for(asyncio.wrap_future(fut), self.cfg.request_timeout_s)
        except asyncio.TimeoutError as e:
            fut.cancel()
            raise ApiError(504, "timeout", f"inference took longer than {self.cfg.request_timeout_s} s") from e
        except Exception as e:  # noqa: BLE001 - a model/detector failure on this image
            from ferkit.errors import FerkitError

            if isinstance(e, FerkitError):
                raise ApiError(400, "bad_image", str(e)) from e
            raise
        return self.an.file_result(name, img, faces).to_dict()


def create_app(config: ServeConfig | None = None):
    """The FastAPI app over one analyzer (``config.analyzer``, else built from ``config.settings``) and one
    micro-batcher; its limits are ``config``'s."""
    from fastapi import FastAPI

    from ferkit.inference.pipeline import build_analyzer
    from ferkit.serve.batching import MicroBatcher
    from ferkit.serve.metrics import Metrics

    cfg = config or ServeConfig()
    an = cfg.analyzer if cfg.analyzer is not None else build_analyzer(cfg.settings)
    metrics = Metrics()

    def on_batch(n, out):
        metrics.observe_batch(n, sum(len(r) for r in out))

    requests: _Requests  # bound below, before the batcher takes a request
    batcher = MicroBatcher(
        an.process,
        max_batch=cfg.batch_max,
        max_wait_ms=cfg.batch_wait_ms,
        on_batch=on_batch,
        max_queue=cfg.max_queue,
        pending=lambda: requests.inflight,
    )
    requests = _Requests(cfg, an, batcher, PixelBudget(int(cfg.max_inflight_mb * 1024 * 1024)))

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        batcher.close()

    # docs_url/redoc_url off: FastAPI's pages load Swagger UI / ReDoc from a CDN; /docs is ferkit's own page
    app = FastAPI(
        lifespan=lifespan,
        title="ferkit",
        version="1",
        docs_url=None,
        redoc_url=None,
        description=(
            "Facial expression recognition: faces with boxes, landmarks, labels and probabilities. "
            "Errors are JSON {error, reason}."
        ),
    )
    app.state.config, app.state.analyzer, app.state.batcher, app.state.metrics = cfg, an, batcher, metrics
    _add_error_handlers(app)
    _add_auth_and_metrics(
        app, cfg.api_key if cfg.api_key is not None else (os.environ.get(API_KEY_ENV) or None), metrics
    )
    _add_routes(app, cfg, an, requests, metrics)
    return app


def _error(status: int, code: str, reason: str, headers: dict | None = None):
    """The JSON error body every route and handler answers with."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": code, "reason": reason}, status_code=status, headers=headers)


def _add_error_handlers(app) -> None:
    """Every error as ``{"error", "reason"}``: ours, Starlette's HTTP errors, validation, and (a bug) the rest."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(ApiError)
    async def _api_error(_req, e: ApiError):
        return _error(e.status, e.code, e.reason)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_req, e):
        resp = _error(e.status_code, "http_" + str(e.status_code), str(e.detail))
        resp.headers.update(getattr(e, "headers", None) or {})  # e.g. Allow on 405 (RFC 9110)
        return resp

    @app.exception_handler(RequestValidationError)
    async def _validation(_req, e):
        first = e.errors()[0] if e.errors() else {}
        return _error(
            422, "invalid_request", f"{'.'.join(map(str, first.get('loc', [])))}: {first.get('msg', 'invalid')}"
        )

    @app.exception_handler(Exception)
    async def _unexpected(_req, e):  # a bug, but the worker stays alive and the client gets JSON
        return _error(500, "internal", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def _add_auth_and_metrics(app, api_key: str | None, metrics) -> None:
    """The middleware every request passes: ambiguous framing refused, the API key checked (all but
    ``/healthz``), and each request counted in ``metrics`` by route."""
    from fastapi import Request

    @app.middleware("http")
    async def _auth_and_metrics(request: Request, call_next):
        t0 = time.perf_counter()
        path = request.url.path
        if "transfer-encoding" in request.headers and "content-length" in request.headers:
            # Two framings: a proxy in front may read the body by the other one (request smuggling, RFC 9112
            # 6.3). Refuse, and close the connection: where this request ends is not known.
            metrics.observe_request(request.method, "other", 400, time.perf_counter() - t0)
            return _error(
                400,
                "ambiguous_framing",
                "both Transfer-Encoding and Content-Length: send one",
                headers={"connection": "close"},
            )
        if api_key and path != "/healthz":
            got = request.headers.get("x-api-key") or request.query_params.get("api_key")
            auth = request.headers.get("authorization", "")
            if not got and auth.lower().startswith("bearer "):
                got = auth[7:].strip()
            if not _same_key(got, api_key):
                resp = _error(
                    401, "unauthorized", "missing or wrong API key (X-API-Key header, Bearer token or ?api_key=)"
                )
                metrics.observe_request(request.method, "unauthorized", 401, time.perf_counter() - t0)
                return resp
        resp = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", None) or ("/static" if path.startswith("/static") else "other")
        metrics.observe_request(request.method, name, resp.status_code, time.perf_counter() - t0)
        return resp


def _request_attributes(request, an) -> tuple[str, ...] | None:
    """A request's ``?attributes=`` (names, comma-separated, all or none) as the one field of the server's
    settings it may change, checked by AnalyzerSettings; None when not given. A bad value: HTTP 422, one line."""
    from ferkit.errors import ConfigError

    given = request.query_params.get("attributes")
    if given is None:
        return None
    try:
        return tuple(an.settings.replace(attributes=given).attributes)
    except ConfigError as e:
        raise ApiError(422, "bad_attributes", str(e)) from None


def _add_routes(app, cfg: ServeConfig, an, requests: _Requests, metrics) -> None:
    """The routes: predict (one image, a batch), models, health, metrics, the webcam page, docs and static."""
    from fastapi import Request
    from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
    from fastapi.staticfiles import StaticFiles

    PredictResult, BatchResult, ErrorBody, ModelsInfo = _models()
    ERRORS: dict[int | str, dict[str, Any]] = {
        c: {"model": ErrorBody} for c in (400, 401, 408, 413, 415, 422, 503, 504)
    }

    @app.post(
        "/v1/predict",
        response_model=PredictResult,
        responses=ERRORS,
        openapi_extra=_IMAGE_BODY,
        summary="Faces and expressions of one image (multipart 'file' or raw image bytes)",
    )
    async def predict(request: Request):
        attrs = _request_attributes(request, an)
        ((name, data),) = await requests.read_images(request, many=False)
        return JSONResponse(await requests.analyze(name, data, attrs))

    @app.post(
        "/v1/predict/batch",
        response_model=BatchResult,
        responses=ERRORS,
        openapi_extra=_BATCH_BODY,
        summary="Several images (multipart 'files'); a bad image is an item with status 'error'",
    )
    async def predict_batch(request: Request):
        attrs = _request_attributes(request, an)
        items = await requests.read_images(request, many=True)

        async def one(name, data):
            try:
                return await requests.analyze(name, data, attrs)
            except ApiError as e:
                if e.status in (503, 504):
                    raise
                return an.file_result(name, error=e.reason).to_dict()

        return JSONResponse({"results": list(await asyncio.gather(*(one(n, d) for n, d in items)))})

    @app.get("/v1/models", response_model=ModelsInfo, responses={401: {"model": ErrorBody}})
    def models():
        return {
            "models": [
                {
                    "name": c.name,
                    "classes": list(c.classes),
                    "input_size": list(c.spec.size),
                    "channels": int(c.spec.channels),
                    "task": c.task,
                    "backend": c.backend,
                }
                for c in an.classifiers
            ],
            "classes": list(an.classes),
            "model": an.model_name,
            "detector": an.detector_name,
            "det_size": an.det_size,
            "identity": an.identity is not None,
            "micro_batching": {"max_batch": cfg.batch_max, "max_wait_ms": cfg.batch_wait_ms},
            "limits": {
                "max_upload_bytes": cfg.max_upload_bytes,
                "max_pixels": cfg.max_pixels,
                "max_batch_files": cfg.max_batch_files,
                "request_timeout_s": cfg.request_timeout_s,
            },
        }

    @app.api_route("/healthz", methods=["GET", "HEAD"], response_model=dict[str, str])
    def healthz():
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse, responses={401: {"model": ErrorBody}})
    def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    def docs():  # the OpenAPI document rendered by static/docs.js: nothing fetched from outside this server
        return FileResponse(STATIC / "docs.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def run_server(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000) -> int:
    """Build the app (model loaded once) and serve it with uvicorn until Ctrl-C."""
    from ferkit.errors import ConfigError

    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401
        import uvicorn
    except ImportError:
        raise ConfigError(
            "ferkit serve needs fastapi, uvicorn and python-multipart: pip install 'ferkit[serve]'"
        ) from None
    if not _is_int(port) or not 1 <= port <= 65535:
        raise ConfigError(f"ferkit serve --port: must be a TCP port from 1 to 65535, got {port!r}")
    app = create_app(config)
    print(f"ferkit serve: http://{host}:{port}/ (API docs at /docs)", flush=True)
    uvicorn.Server(uvicorn_config(app, config, host, port)).run()
    return 0


def uvicorn_config(app, config: ServeConfig, host: str, port: int):
    """uvicorn settings with ferkit's connection limits (see :class:`_ConnectionGuard`): every request on a
    connection, the first or a later kept-alive one, must have its headers in within ``read_timeout_s`` of the
    connection opening or the previous response (else the connection is dropped; idle keep-alive ends sooner,
    at min(5 s, the read timeout)), and its body within ``read_timeout_s`` more (else 408, in the app);
    at most ``max_connections`` are open at once and ``max_connections_per_ip`` from one address; a new
    connection past either cap takes the place of the longest-idle one there (a busy one is never dropped)."""
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol

    read_timeout = float(config.read_timeout_s)
    assert config.max_connections_per_ip is not None  # ServeConfig.__post_init__ fills it in
    guard = _ConnectionGuard(int(config.max_connections), int(config.max_connections_per_ip))

    class GuardedH11(H11Protocol):
        _deadline = None

        def connection_made(self, transport):
            super().connection_made(transport)
            self._wait_for_request()
            if not guard.admit(self):
                transport.close()  # every connection there is busy: refuse at once rather than queue

        def _wait_for_request(self):
            """From now on the next request must arrive whole within the read timeout."""
            if self._deadline is not None:
                self._deadline.cancel()
            self.awaited, self.idle_since, self.sent_partial = self.cycle, self.loop.time(), False
            self._deadline = self.loop.call_later(read_timeout, self._drop_if_idle)

        @property
        def idle(self) -> bool:
            """No request under way: waiting for one (kept alive, or half-sent headers)."""
            return self.cycle is self.awaited

        def _drop_if_idle(self):
            if self.idle:
                self.drop()

        def drop(self):
            guard.forget(self)
            if not self.transport.is_closing():
                self.transport.close()

        def data_received(self, data):
            if self.idle:
                self.sent_partial = True
            super().data_received(data)

        def on_response_complete(self):
            self._wait_for_request()  # before super(): a pipelined request it starts is not idle
            super().on_response_complete()

        def connection_lost(self, exc):
            if self._deadline is not None:
                self._deadline.cancel()
            guard.forget(self)
            super().connection_lost(exc)

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        http=GuardedH11,
        lifespan="on",
        timeout_keep_alive=max(1, min(5, int(read_timeout))),
    )


class _ConnectionGuard:
    """Which connections stay open, shared by one server's connections (all on its event loop, so no lock).

    A client holding connections without sending requests (slowloris, or kept-alive connections dribbling
    their next request) cannot starve the others: at a cap, the longest-idle connection there makes room,
    those with a half-sent request first; each address holds at most its share of the total."""

    def __init__(self, cap: int, per_ip: int):
        self.cap, self.per_ip = cap, per_ip
        self.open: set = set()
        self.by_ip: dict[str, set] = {}

    @staticmethod
    def _ip(conn) -> str:
        return conn.client[0] if conn.client else ""

    def admit(self, conn) -> bool:
        ip = self._ip(conn)
        for pool, limit in ((self.by_ip.get(ip, ()), self.per_ip), (self.open, self.cap)):
            if len(pool) >= limit:
                idle = [c for c in pool if c.idle]
                if not idle:
                    return False
                min(idle, key=lambda c: (not c.sent_partial, c.idle_since)).drop()
        self.open.add(conn)
        self.by_ip.setdefault(ip, set()).add(conn)  # an address is only kept while it has connections
        return True

    def forget(self, conn) -> None:
        self.open.discard(conn)
        ip = self._ip(conn)
        pool = self.by_ip.get(ip)
        if pool is not None:
            pool.discard(conn)
            if not pool:
                del self.by_ip[ip]


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BackgroundServer:
    """uvicorn in a daemon thread on loopback (tests, benchmarks): ``with BackgroundServer(cfg) as url: ...``."""

    def __init__(self, config: ServeConfig, host: str = "127.0.0.1", port: int | None = None):
        self.config, self.host, self.port = config, host, port or free_port(host)
        self.url = f"http://{host}:{self.port}"

    def __enter__(self) -> str:
        import threading

        import uvicorn

        self.app = create_app(self.config)
        self.server = uvicorn.Server(uvicorn_config(self.app, self.config, self.host, self.port))
        self.thread = threading.Thread(target=self.server.run, name="ferkit-serve", daemon=True)
        self.thread.start()
        t0 = time.perf_counter()
        while not self.server.started:
            if not self.thread.is_alive() or time.perf_counter() - t0 > 60:
                raise RuntimeError(f"ferkit serve did not start on {self.url}")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.app.state.batcher.close()
