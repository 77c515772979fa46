"""The FastAPI app: ``create_app(ServeConfig(...))``. Routes: ``POST /v1/predict`` (multipart field ``file``
or the raw image bytes as the body), ``POST /v1/predict/batch`` (multipart, several ``files``),
``GET /v1/models``, ``GET /healthz``, ``GET /metrics`` (Prometheus text), ``GET /`` (the webcam page) and
``/static/*``. Every error is a JSON ``{"error": code, "reason": "..."}`` with a 4xx (or 503/504 when the
server is saturated / a request timed out), never a 500 for bad input."""



import asyncio
import contextlib
import os
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ferkit import defaults

STATIC = Path(__file__).parent / "static"
API_KEY_ENV = "FERKIT_API_KEY"
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif", "image/tiff",
               "application/octet-stream")


@dataclass
class ServeConfig:
    models: list = field(default_factory=lambda: list(defaults.MODEL))
    detector: str = defaults.DETECTOR
    det_size: int | None = defaults.DET_SIZE
    crop: str = defaults.CROP
    backend: str = defaults.BACKEND
    device: str = defaults.DEVICE
    gallery: str | None = None
    api_key: str | None = None
    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_batch_files: int = 16
    request_timeout_s: float = 30.0
    read_timeout_s: float = 10.0    # a request (headers and body) must arrive within this, else 408 / dropped
    max_connections: int = 256      # open connections at once; more are closed at once
    max_inflight_mb: float = 160.0  # decoded pixels (RGB bytes) in flight at once (~50 MP); past it 503 busy
    batch_max: int = 8          # images per micro-batch; 1 = no micro-batching
    batch_wait_ms: float = 5.0
    max_queue: int = 256        # images waiting for the model; beyond it requests get 503 "busy"
    analyzer: Any = None        # a ready Analyzer (tests, embedding); else built from the fields above


class PixelBudget:
    """Bounds the decoded image bytes in flight: a request reserves width x height x 3 bytes (read from the
    header, before decoding) or is refused, so a burst of big images cannot take the server's memory."""

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


class ApiError(Exception):
    def __init__(self, status: int, code: str, reason: str):
        super().__init__(reason)
        self.status, self.code, self.reason = status, code, reason


_IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": {"type": "string", "format": "binary"}}}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
_BATCH_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}


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
            raise ApiError(408, "read_timeout", f"the request body did not arrive within {self.cfg.read_timeout_s} s"
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
                form = await request.form(max_files=self.cfg.max_batch_files + 1,
                                          max_fields=self.cfg.max_batch_files + 16)
            except Exception as e:  # noqa: BLE001 - malformed multipart
                raise ApiError(400, "bad_multipart", f"malformed multipart body ({str(e) or type(e).__name__})") from e
            field_name = "files" if many else "file"
            items = [v for k, v in form.multi_items() if k in (field_name, "file", "files") and hasattr(v, "read")]
            if not items:
                raise ApiError(422, "missing_file", f"multipart body has no file field {field_name!r}")
            if not many and len(items) > 1:
                raise ApiError(422, "too_many_files", "POST /v1/predict takes one file; use /v1/predict/batch")
            if len(items) > self.cfg.max_batch_files:
                raise ApiError(413, "too_many_files",
                               f"{len(items)} files exceed the limit of {self.cfg.max_batch_files}")
            out = []
            for i, f in enumerate(items):
                fct = (f.content_type or "application/octet-stream").split(";")[0].strip().lower()
                if not (fct.startswith("image/") or fct == "application/octet-stream"):
                    raise ApiError(415, "unsupported_media_type", f"{f.filename or i}: content type {fct!r} is not "
                                                                  "an image")
                out.append((f.filename or f"upload{i}", await f.read()))
            return out
        if many:
            raise ApiError(415, "unsupported_media_type", "POST /v1/predict/batch takes multipart/form-data "
                                                          "with several 'files' fields")
        if not (ctype.startswith("image/") or ctype == "application/octet-stream"):
            raise ApiError(415, "unsupported_media_type", f"content type {ctype or 'none'!r}: send an image (image/*, "
                                                          "application/octet-stream) or multipart/form-data")
        return [("upload", body)]

    async def analyze(self, name: str, data: bytes) -> dict:
        """One image's FileResult (as a dict), or ApiError."""
        self.inflight += 1
        try:
            return await self._analyze(name, data)
        finally:
            self.inflight -= 1

    async def _analyze(self, name: str, data: bytes) -> dict:
        from ferkit.errors import DataError
        from ferkit.faces.io import ImageTooLargeError, peek_size

        try:
            w, h = peek_size(data, name, max_pixels=self.cfg.max_pixels)
        except ImageTooLargeError as e:
            raise ApiError(413, "too_many_pixels", str(e)) from None
        except DataError as e:
            raise ApiError(400, "bad_image" if data else "empty", str(e)) from None
        need = w * h * 3
        if not self.budget.try_acquire(need):
            raise ApiError(503, "busy", "server busy: too many large images in flight, retry later")
        try:
            return await self._decode_and_run(name, data)
        finally:
            self.budget.release(need)
            if need > 16 << 20:
                _trim_heap()

    async def _decode_and_run(self, name: str, data: bytes) -> dict:
        img = await asyncio.to_thread(decode_image, data, name, self.cfg.max_pixels)
        try:
            fut = self.batcher.submit(img, name)
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
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from ferkit.serve.batching import MicroBatcher
    from ferkit.serve.metrics import Metrics

    PredictResult, BatchResult, ErrorBody, ModelsInfo = _models()
    ERRORS: dict[int | str, dict[str, Any]] = {c: {"model": ErrorBody}
                                               for c in (400, 401, 408, 413, 415, 422, 503, 504)}
    cfg = config or ServeConfig()
    api_key = cfg.api_key if cfg.api_key is not None else (os.environ.get(API_KEY_ENV) or None)
    an = cfg.analyzer
    if an is None:
        from ferkit.inference.pipeline import Analyzer

        ident = None
        if cfg.gallery:
            from ferkit.identity.verify import IdentityAssigner

            ident = IdentityAssigner(cfg.gallery, None)
        an = Analyzer(cfg.models, detector=cfg.detector, device=cfg.device, det_size=cfg.det_size, crop=cfg.crop,
                      backend=cfg.backend, identity=ident)
    metrics = Metrics()
    budget = PixelBudget(int(cfg.max_inflight_mb * 1024 * 1024))

    def on_batch(n, out):
        metrics.observe_batch(n, sum(len(r) for r in out))

    requests: _Requests  # bound below, before the batcher takes a request
    batcher = MicroBatcher(an.process, max_batch=cfg.batch_max, max_wait_ms=cfg.batch_wait_ms, on_batch=on_batch,
                           max_queue=cfg.max_queue, pending=lambda: requests.inflight)
    requests = _Requests(cfg, an, batcher, budget)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        batcher.close()

    app = FastAPI(lifespan=lifespan, title="ferkit", version="1", description=(
        "Facial expression recognition: faces with boxes, landmarks, labels and probabilities. "
        "Errors are JSON {error, reason}."))
    app.state.config, app.state.analyzer, app.state.batcher, app.state.metrics = cfg, an, batcher, metrics

    def err(status: int, code: str, reason: str) -> JSONResponse:
        return JSONResponse({"error": code, "reason": reason}, status_code=status)

    @app.exception_handler(ApiError)
    async def _api_error(_req, e: ApiError):
        return err(e.status, e.code, e.reason)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_req, e):
        resp = err(e.status_code, "http_" + str(e.status_code), str(e.detail))
        resp.headers.update(getattr(e, "headers", None) or {})  # e.g. Allow on 405 (RFC 9110)
        return resp

    @app.exception_handler(RequestValidationError)
    async def _validation(_req, e):
        first = e.errors()[0] if e.errors() else {}
        return err(422, "invalid_request", f"{'.'.join(map(str, first.get('loc', [])))}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def _unexpected(_req, e):  # a bug, but the worker stays alive and the client gets JSON
        return err(500, "internal", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")

    @app.middleware("http")
    async def _auth_and_metrics(request: Request, call_next):
        t0 = time.perf_counter()
        path = request.url.path
        if api_key and path != "/healthz":
            got = request.headers.get("x-api-key") or request.query_params.get("api_key")
            auth = request.headers.get("authorization", "")
            if not got and auth.lower().startswith("bearer "):
                got = auth[7:].strip()
            if got != api_key:
                resp = err(401, "unauthorized", "missing or wrong API key (X-API-Key header, Bearer token or "
                                                "?api_key=)")
                metrics.observe_request(request.method, "unauthorized", 401, time.perf_counter() - t0)
                return resp
        resp = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", None) or ("/static" if path.startswith("/static") else "other")
        metrics.observe_request(request.method, name, resp.status_code, time.perf_counter() - t0)
        return resp

    @app.post("/v1/predict", response_model=PredictResult, responses=ERRORS, openapi_extra=_IMAGE_BODY,
              summary="Faces and expressions of one image (multipart 'file' or raw image bytes)")
    async def predict(request: Request):
        (name, data), = await requests.read_images(request, many=False)
        return JSONResponse(await requests.analyze(name, data))

    @app.post("/v1/predict/batch", response_model=BatchResult, responses=ERRORS, openapi_extra=_BATCH_BODY,
              summary="Several images (multipart 'files'); a bad image is an item with status 'error'")
    async def predict_batch(request: Request):
        items = await requests.read_images(request, many=True)

        async def one(name, data):
            try:
                return await requests.analyze(name, data)
            except ApiError as e:
                if e.status in (503, 504):
                    raise
                return an.file_result(name, error=e.reason).to_dict()

        return JSONResponse({"results": list(await asyncio.gather(*(one(n, d) for n, d in items)))})

    @app.get("/v1/models", response_model=ModelsInfo, responses={401: {"model": ErrorBody}})
    def models():
        return {"models": [{"name": c.name, "classes": list(c.classes), "input_size": list(c.spec.size),
                            "channels": int(c.spec.channels), "task": c.task, "backend": c.backend}
                           for c in an.classifiers],
                "classes": list(an.classes), "model": an.model_name, "detector": an.detector_name,
                "det_size": getattr(an.detector, "max_size", None), "identity": an.identity is not None,
                "micro_batching": {"max_batch": cfg.batch_max, "max_wait_ms": cfg.batch_wait_ms},
                "limits": {"max_upload_bytes": cfg.max_upload_bytes, "max_pixels": cfg.max_pixels,
                           "max_batch_files": cfg.max_batch_files, "request_timeout_s": cfg.request_timeout_s}}

    @app.api_route("/healthz", methods=["GET", "HEAD"], response_model=dict[str, str])
    def healthz():
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse, responses={401: {"model": ErrorBody}})
    def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    return app


def run_server(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000) -> int:
    """Build the app (model loaded once) and serve it with uvicorn until Ctrl-C."""
    from ferkit.errors import ConfigError

    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401
        import uvicorn
    except ImportError:
        raise ConfigError("ferkit serve needs fastapi, uvicorn and python-multipart: pip install 'ferkit[serve]'"
                          ) from None
    app = create_app(config)
    print(f"ferkit serve: http://{host}:{port}/ (API docs at /docs)", flush=True)
    uvicorn.Server(uvicorn_config(app, config, host, port)).run()
    return 0


def uvicorn_config(app, config: ServeConfig, host: str, port: int):
    """uvicorn settings with ferkit's connection limits: a request must arrive whole within
    ``read_timeout_s`` (a half-sent one is dropped), at most ``max_connections`` are open at once."""
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol

    read_timeout, cap = float(config.read_timeout_s), int(config.max_connections)

    class GuardedH11(H11Protocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            if len(self.connections) > cap:
                transport.close()  # over the cap: refuse at once rather than queue
                return
            self._read_deadline = self.loop.call_later(read_timeout, self._drop_if_stalled)

        def _drop_if_stalled(self):
            if self.cycle is None and not self.transport.is_closing():  # headers never completed
                self.transport.close()

        def connection_lost(self, exc):
            deadline = getattr(self, "_read_deadline", None)
            if deadline is not None:
                deadline.cancel()
            super().connection_lost(exc)

    return uvicorn.Config(app, host=host, port=port, log_level="warning", http=GuardedH11, lifespan="on",
                          limit_concurrency=cap, timeout_keep_alive=5)


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
