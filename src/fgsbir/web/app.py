"""The search web app: a page to draw on, and a JSON API that ranks gallery photos by a sketch.

* ``GET /``: the drawing page (``static/``: plain HTML, CSS and JavaScript, no external resources);
* ``GET /api/docs``: the API's Swagger UI, from the copy the ``fastapi-offline`` package ships,
  so that it works offline like everything else here;
* ``GET /favicon.ico``: the page's icon (an SVG, also at ``/static/favicon.svg``);
* ``POST /api/search``: ``{"strokes": [[[x, y], ...], ...], "k": 10, "width": W, "height": H}``
  -> ``{"results": [{"rank", "photo", "url", "score", "name"}, ...], "took_ms": T}``;
* ``GET /api/health``: the gallery size, index kind, model identity and whether photos can be
  sketched;
* ``GET /api/sketch/{id}``: how a person would sketch gallery photo ``id``, drawn (greedily) by
  the generator the server was given: ``{"photo", "width", "height", "strokes": [[[x, y], ...],
  ...], "took_ms"}`` in drawing order; 404 when the server has no generator;
* ``GET /photos/{id}``: a gallery photo by its row in the index; nothing else on disk is served.

Malformed requests get a 4xx JSON ``{"error": message}`` (with ``details`` for validation errors):
400 for unparsable JSON, 413 for bodies over :data:`MAX_BODY_BYTES`, 422 for anything that
parses but breaks the schema or limits. The message says what is wrong (``"invalid search request:
too many strokes: 301 > 300"``); the drawing page shows it as it is.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import mimetypes
import socket
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from fgsbir.data.photos import load_photo
from fgsbir.errors import FgsbirError
from fgsbir.index import GalleryIndex, index_info, open_index
from fgsbir.inference import (
    Embedder,
    TrainedGenerator,
    load_gallery_generator,
    load_gallery_model,
)
from fgsbir.limits import MAX_SKETCH_POINTS
from fgsbir.sketch.strokes import Sketch

STATIC_DIR = Path(__file__).resolve().parent / "static"
FAVICON = "favicon.svg"  # in static/
MAX_BODY_BYTES = 1_000_000
MAX_STROKES = 300
MAX_K = 100
MAX_CANVAS = 10_000.0
SHOWN_PROBLEMS = 3  # validation problems named in an error message; ``details`` has them all
SKETCHES_KEPT = 256  # generated sketches of gallery photos remembered (greedy: always the same)
NO_GENERATOR = (
    "this server has no generator to sketch photos with: start it with 'fgsbir serve INDEX_DIR "
    "--generator RUN_DIR' (a generator run, or a semi-supervised run's generator/ folder)"
)

Coordinate = Annotated[float, Field(ge=-MAX_CANVAS, le=2 * MAX_CANVAS)]
Stroke = Annotated[list[tuple[Coordinate, Coordinate]], Field(min_length=1)]


def _check_count(what: str, count: int, limit: int) -> None:
    if count > limit:
        raise PydanticCustomError(
            "too_many",
            "too many {what}: {count} > {limit}",
            {"what": what, "count": count, "limit": limit},
        )


class SearchRequest(BaseModel):
    """A sketch as strokes of absolute ``[x, y]`` points on a ``width x height`` canvas."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    strokes: list[Stroke] = Field(min_length=1, json_schema_extra={"maxItems": MAX_STROKES})
    k: int = Field(10, ge=1, le=MAX_K)
    width: float = Field(256.0, gt=0, le=MAX_CANVAS)
    height: float = Field(256.0, gt=0, le=MAX_CANVAS)

    @model_validator(mode="before")
    @classmethod
    def _limit_size(cls, data: Any) -> Any:
        """Refuse too many strokes or points (at most :data:`MAX_STROKES` and
        :data:`~fgsbir.limits.MAX_SKETCH_POINTS`) before any point is validated."""
        strokes = data.get("strokes") if isinstance(data, dict) else None
        if isinstance(strokes, list):
            _check_count("strokes", len(strokes), MAX_STROKES)
            points = sum(len(stroke) for stroke in strokes if isinstance(stroke, list))
            _check_count("points", points, MAX_SKETCH_POINTS)
        return data

    def sketch(self) -> Sketch:
        return Sketch.from_strokes([np.array(s) for s in self.strokes], self.width, self.height)


class SearchResultOut(BaseModel):
    rank: int
    photo: int
    url: str
    score: float
    name: str


class SearchResponse(BaseModel):
    results: list[SearchResultOut]
    took_ms: float


class GeneratedSketch(BaseModel):
    """A generated sketch of a gallery photo: strokes of absolute ``[x, y]`` points on a
    ``width x height`` canvas (y down), in the order they were drawn."""

    photo: int
    width: float
    height: float
    strokes: list[list[tuple[float, float]]]
    took_ms: float


class SketchBatcher:
    """Answers the searches of concurrent requests together.

    Each request thread queues its query; whichever thread holds the model then embeds and
    searches everything queued (up to ``max_batch``) in one batch and hands every thread its
    answer. One request alone is answered at once; under load the CPU runs a few large batches
    instead of many single sketches competing for the same cores.
    """

    def __init__(self, index: GalleryIndex, embedder: Embedder, max_batch: int = 16) -> None:
        self.index = index
        self.embedder = embedder
        self.max_batch = max_batch
        self._queue: list[tuple[SearchRequest, Future[list[tuple[int, float]]]]] = []
        self._queue_lock = threading.Lock()
        self._model_lock = threading.Lock()

    def search(self, query: SearchRequest) -> list[tuple[int, float]]:
        """``(row, score)`` of the ``query.k`` best photos for one request."""
        answer: Future[list[tuple[int, float]]] = Future()
        with self._queue_lock:
            self._queue.append((query, answer))
        while not answer.done():
            with self._model_lock:
                with self._queue_lock:
                    batch = self._queue[: self.max_batch]
                    del self._queue[: self.max_batch]
                if batch:
                    self._run(batch)
        return answer.result()

    def _run(self, batch: list[tuple[SearchRequest, Future[list[tuple[int, float]]]]]) -> None:
        try:
            embeddings = self.embedder.embed_sketches([query.sketch() for query, _ in batch])
            found = self.index.top(embeddings, max(query.k for query, _ in batch))
        except Exception as err:  # goes to the request it belongs to
            if len(batch) == 1:
                batch[0][1].set_exception(err)
            else:  # one bad sketch must not fail the others
                for item in batch:
                    self._run([item])
            return
        for (query, answer), rows in zip(batch, found, strict=True):
            answer.set_result(rows[: query.k])


def _error(status: int, message: str, details: list[dict[str, Any]] | None = None) -> JSONResponse:
    content: dict[str, Any] = {"error": message}
    if details is not None:
        content["details"] = details
    return JSONResponse(content, status_code=status)


def _validation_details(err: ValidationError | RequestValidationError) -> list[dict[str, Any]]:
    """Location and message of each problem (not the offending input, which may be huge)."""
    return [{"loc": list(e["loc"]), "msg": e["msg"]} for e in err.errors()]


def _validation_error(what: str, err: ValidationError | RequestValidationError) -> JSONResponse:
    """422 whose message names the first problems: ``"invalid search request: k: Input should be
    greater than or equal to 1"``; ``details`` lists them all."""
    details = _validation_details(err)
    problems = [_problem(d["loc"], d["msg"]) for d in details[:SHOWN_PROBLEMS]]
    if len(details) > SHOWN_PROBLEMS:
        problems.append(f"{len(details) - SHOWN_PROBLEMS} more")
    return _error(422, f"invalid {what}: " + "; ".join(problems), details)


def _problem(loc: list[str | int], msg: str) -> str:
    """``["strokes", 0, 1]``, ``"..."`` -> ``"strokes[0][1]: ..."``; no location, the message."""
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    return f"{where.lstrip('.')}: {msg}" if where else msg


async def _read_body(request: Request) -> bytes:
    """The request body, refusing (413) anything over :data:`MAX_BODY_BYTES` without reading it."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise HTTPException(413, f"request body over {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, f"request body over {MAX_BODY_BYTES} bytes")
    return bytes(body)


_SEARCH_BODY_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": SearchRequest.model_json_schema()}},
    }
}


def create_app(
    index_dir: str | Path, embedder: Embedder, generator: TrainedGenerator | None = None
) -> FastAPI:
    """The app serving the index in ``index_dir``; sketches are embedded with ``embedder``, which
    must be the model that made the index (see :func:`fgsbir.inference.load_gallery_model`), and
    gallery photos are sketched by ``generator`` (none: no sketches)."""
    index = open_index(index_dir, embedder)
    index.prepare()
    batcher = SketchBatcher(index, embedder)
    drawing = threading.Lock()  # one sketch at a time: the generator is not thread-safe

    @functools.lru_cache(maxsize=SKETCHES_KEPT)
    def generated(photo_id: int) -> GeneratedSketch:
        assert generator is not None
        start = time.perf_counter()
        with drawing:
            sketch = generator.draw([load_photo(index.photos[photo_id])], temperature=0.0)[0]
        return GeneratedSketch(
            photo=photo_id,
            width=sketch.width,
            height=sketch.height,
            strokes=[stroke.tolist() for stroke in sketch.strokes],
            took_ms=1000 * (time.perf_counter() - start),
        )

    app = FastAPIOffline(
        title="fgsbir search",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        static_url="/api/docs/assets",
        favicon_url=f"/static/{FAVICON}",
        swagger_ui_oauth2_redirect_url="/api/docs/oauth2-redirect",
        swagger_ui_parameters={"validatorUrl": None},  # no spec sent to swagger.io's validator
    )
    app.state.index = index
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def request_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error("request", exc)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC_DIR / FAVICON, media_type="image/svg+xml")

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        info = index_info(index)
        shown = {key: info[key] for key in ("photos", "kind", "dim", "model")}
        return {"status": "ok", **shown, "generator": generator is not None}

    def run_search(query: SearchRequest) -> SearchResponse:
        start = time.perf_counter()
        found = batcher.search(query)
        results = [
            SearchResultOut(
                rank=rank, photo=i, url=f"/photos/{i}", score=score, name=index.photos[i].name
            )
            for rank, (i, score) in enumerate(found, start=1)
        ]
        return SearchResponse(results=results, took_ms=1000 * (time.perf_counter() - start))

    @app.post("/api/search", response_model=SearchResponse, openapi_extra=_SEARCH_BODY_SCHEMA)
    async def search(request: Request) -> SearchResponse | JSONResponse:
        body = await _read_body(request)
        try:
            query = SearchRequest.model_validate_json(body)
        except ValidationError as err:
            if any(e["type"] == "json_invalid" for e in err.errors()):
                return _error(400, "request body is not valid JSON")
            return _validation_error("search request", err)
        try:
            return await run_in_threadpool(run_search, query)
        except FgsbirError as err:  # e.g. a sketch the model cannot embed
            return _error(422, str(err))

    def photo_path(photo_id: int) -> Path:
        """The file of a gallery photo, or 404."""
        if not 0 <= photo_id < len(index):
            raise HTTPException(404, f"no photo {photo_id} in this gallery")
        path = index.photos[photo_id]
        if not path.is_file():
            raise HTTPException(404, f"photo {photo_id} is no longer on disk")
        return path

    @app.get("/api/sketch/{photo_id}", response_model=GeneratedSketch)
    def sketch(photo_id: int) -> GeneratedSketch | JSONResponse:
        if generator is None:
            raise HTTPException(404, NO_GENERATOR)
        photo_path(photo_id)
        try:
            return generated(photo_id)
        except FgsbirError as err:  # e.g. a photo that is no longer readable
            return _error(422, str(err))

    @app.get("/photos/{photo_id}")
    def photo(photo_id: int) -> FileResponse:
        path = photo_path(photo_id)
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        headers = {"Cache-Control": "public, max-age=3600"}
        return FileResponse(path, media_type=media_type, headers=headers)

    return app


def serve(
    index_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    run_dir: str | Path | None = None,
    device: str | None = None,
    threads: int | None = None,
    generator_dir: str | Path | None = None,
    copy_bias: float = 0.0,
) -> None:
    """Serve the search page for ``index_dir`` until interrupted (Ctrl+C).

    Gallery photos are sketched by the generator of ``generator_dir``, else by the one a
    semi-supervised retrieval run holds (see :func:`~fgsbir.inference.load_gallery_generator`),
    drawing with ``copy_bias`` (see :attr:`~fgsbir.inference.TrainedGenerator.copy_bias`).
    The index and models are loaded and ``host:port`` is bound before anything is printed, so a
    busy port, a bad index or a bad generator is one :class:`~fgsbir.errors.FgsbirError`, not a
    server that starts and then fails. ``threads`` sets PyTorch's CPU threads for embedding
    sketches. On a machine whose cores are busy with other work, 1 is much faster than several:
    each operation of a multi-threaded forward pass waits for its slowest thread, which the OS
    may have paused.
    """
    if not 1 <= port <= 65535:
        raise FgsbirError(f"--port must be between 1 and 65535, not {port}")
    if threads is not None:
        if threads < 1:
            raise FgsbirError(f"--threads must be at least 1, not {threads}")
        torch.set_num_threads(threads)
    try:
        generator = load_gallery_generator(index_dir, run_dir, generator_dir, device, copy_bias)
    except FgsbirError as err:
        if generator_dir is None:
            raise
        raise FgsbirError(f"--generator {err}") from None
    app = create_app(index_dir, load_gallery_model(index_dir, run_dir, device), generator)
    index: GalleryIndex = app.state.index
    with listen(host, port) as sock:
        url = f"http://{host}:{port}/"
        sketched = " (sketched by a generator)" if generator is not None else ""
        print(
            f"fgsbir: serving {len(index)} photos{sketched} at {url} (Ctrl+C to stop)", flush=True
        )
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C is the way to stop
            server.run(sockets=[sock])


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host:port``, or an error naming ``--host`` or ``--port``."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as err:
        raise FgsbirError(f"--host {host}: {err.strerror}") from None
    try:
        return socket.create_server((host, port), family=family)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            problem = f"port {port} on {host} is in use; choose another with --port"
        elif err.errno == errno.EADDRNOTAVAIL:
            problem = f"--host {host} is not an address of this machine"
        else:
            problem = f"cannot listen on port {port} of {host} (--host, --port): {err.strerror}"
        raise FgsbirError(problem) from None
