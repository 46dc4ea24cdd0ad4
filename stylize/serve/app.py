"""The web application: the studio page and the HTTP API, on FastAPI.

- ``GET /``: the page (``static/index.html``: one file with its script and styles, no CDN);
- ``GET /v1/models``: the records of ``stylize models --json``, and which models are loaded;
- ``POST /v1/stylize``: multipart, the photo in a part named ``image``, paintings (arbitrary-style models) in parts
  named ``style_image``, ``model`` and the apply settings as form fields (:mod:`stylize.serve.forms`); answers the
  image in ``format`` (default: the photo's own format where stylize writes it, else PNG);
- ``POST /v1/sheet``: the same photo and paintings with the sheet's settings; answers the sheet image (JPEG unless
  ``format`` says otherwise), its tiles as JSON in the ``X-Stylize-Tiles`` header;
- ``GET /v1/health``; ``GET /docs`` and ``/openapi.json``: the schema, generated from the option dataclasses.

Errors are JSON with a 4xx or 5xx status (:mod:`stylize.serve.problems`); a failure in one request never stops the
server. The decoding of each upload goes through the same guard as files (``max_pixels``, on the header, before any
pixel is decoded); :class:`Guard` bounds the bytes of a request and how many requests are worked on at once, before
any body is read. A client never names a file: models are chosen by name, paintings are uploads.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from collections.abc import Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from stylize import __version__, pipeline
from stylize.api import model_records
from stylize.config import ApplyOptions, ServeOptions, SheetOptions
from stylize.errors import StylizeError
from stylize.io import PixelLimitError, encode_image, output_format
from stylize.serve import forms
from stylize.serve.problems import Problem, body, status_of
from stylize.serve.workers import Models, ModelWorker
from stylize.styles import PaintingData

log = logging.getLogger("stylize.serve")
#: The model a request with paintings and no ``model`` uses (as ``stylize apply -p``).
ARBITRARY_MODEL = "arbitrary"
MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "TIFF": "image/tiff", "BMP": "image/bmp"}
_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "TIFF": "tif", "BMP": "bmp"}


def create_app(options: ServeOptions | None = None) -> FastAPI:
    """The application for ``options``; the models in ``options.models`` are loaded now (an unknown name fails here)."""
    options = options or ServeOptions()
    models = Models(options)
    for name in options.models:
        models.worker(name)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await run_in_threadpool(models.close)

    app = FastAPI(
        title="stylize",
        version=__version__,
        summary="Fast feed-forward neural style transfer: the models stay loaded; photos in, stylized photos out.",
        lifespan=lifespan,
    )
    app.state.models = models
    app.state.options = options
    app.add_middleware(Guard, max_bytes=options.max_upload_bytes, max_pending=options.max_pending)
    _add_error_handlers(app)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(resources.files("stylize.serve").joinpath("static/index.html").read_text(encoding="utf-8"))

    @app.get("/v1/health", summary="Whether the server answers; the models loaded, with the batches and photos each has run")
    def health() -> dict[str, Any]:
        runs = {name: {"batches": worker.batches_run, "photos": worker.photos_run} for name, worker in models.workers().items()}
        return {"status": "ok", "version": __version__, "loaded": list(runs), "models": runs}

    @app.get("/v1/models", summary="The models this server can load: the records of `stylize models --json`")
    def list_models() -> dict[str, Any]:
        return {"models": model_records(), "loaded": models.loaded()}

    image_answers = {200: {"content": {media: {} for media in MEDIA_TYPES.values()}, "description": "The image."}}
    routes = [
        ("/v1/stylize", "Stylize one photo", _stylize_endpoint),
        ("/v1/sheet", "The photo in every style of a model, or with each painting, as one labelled grid", _sheet_endpoint),
    ]
    for path, summary, make in routes:
        app.post(path, summary=summary, response_class=Response, responses=image_answers)(make(models, options))
    return app


# -------------------------------------------------------------------------------------------------------- endpoints


def _stylize_endpoint(models: Models, options: ServeOptions) -> Callable[..., Any]:
    async def stylize(**values: Any) -> Response:
        image, paintings = values.pop("image"), await _paintings(values.pop("style_image"))
        worker = await _worker(models, values.pop("model"), paintings)
        settings = ApplyOptions(**values, max_pixels=options.max_pixels, style_image=paintings or None)
        label, data = _label(image.filename, "image"), await image.read()

        def prepare() -> tuple[Any, ...]:  # in a thread: the checks first (as apply_file), then decoding
            fmt = output_format(None, settings.format) if settings.format else None
            weights, run_options, description = worker.stylizer.resolve(settings)
            photo = pipeline.decode(data, run_options, name=label)
            return photo, weights, run_options, description, fmt or _own_format(photo.source_format)

        photo, weights, run_options, description, fmt = await _guarded(options, run_in_threadpool(prepare))
        result = await asyncio.wrap_future(worker.stylize(photo.pixels, weights, run_options))

        def finish() -> bytes:
            return pipeline.encode(pipeline.finish(result, photo, fmt, run_options), photo, fmt, run_options)

        encoded = await run_in_threadpool(finish)
        headers = {"X-Stylize-Model": worker.stylizer.name, "X-Stylize-Style": _ascii(description)}
        return _image_response(encoded, fmt, label, headers)

    uploads = [
        forms.upload("image", "The photo: JPEG, PNG, WebP, TIFF, BMP or GIF."),
        forms.upload("style_image", "Paintings whose style an arbitrary-style model predicts (blended with equal weights).", False, True),
        forms.text_field("model", "A model name from GET /v1/models (default: multistyle26; with style_image: arbitrary)."),
    ]
    return forms.endpoint(_answering(stylize), uploads, [(ApplyOptions, name) for name in forms.apply_fields()])


def _sheet_endpoint(models: Models, options: ServeOptions) -> Callable[..., Any]:
    async def sheet(**values: Any) -> Response:
        image, paintings = values.pop("image"), await _paintings(values.pop("style_image"))
        worker = await _worker(models, values.pop("model"), paintings)
        apply_names = set(forms.apply_fields(forms.SHEET_OWNED_FIELDS))
        apply = ApplyOptions(**{k: v for k, v in values.items() if k in apply_names}, max_pixels=options.max_pixels)
        settings = SheetOptions(**{k: v for k, v in values.items() if k not in apply_names}, paintings=tuple(paintings), apply=apply)
        fmt = output_format(None, apply.format or "jpg")
        tiles = (len(paintings) or len(worker.stylizer.styles)) + settings.original
        if tiles * settings.size**2 > options.max_pixels:
            raise Problem(
                413, f"a sheet of {tiles} tiles of {settings.size} pixels would be larger than this server's {options.max_pixels / 1e6:g} megapixels",
                "ask for smaller tiles (`size`) or fewer `styles`",
            )  # fmt: skip
        label, data = _label(image.filename, "image"), await image.read()
        made = await _guarded(options, asyncio.wrap_future(worker.call(lambda: worker.stylizer.sheet(data, settings))))
        encoded = await run_in_threadpool(encode_image, made.image, fmt, quality=apply.quality)
        tiles_json = json.dumps([tile.to_dict() for tile in made.tiles], separators=(",", ":"), ensure_ascii=True)
        return _image_response(encoded, fmt, f"{label}_sheet", {"X-Stylize-Model": made.model, "X-Stylize-Tiles": tiles_json})

    uploads = [
        forms.upload("image", "The photo: JPEG, PNG, WebP, TIFF, BMP or GIF."),
        forms.upload("style_image", "Paintings, one tile each (arbitrary-style models).", False, True),
        forms.text_field("model", "A model name from GET /v1/models (default: multistyle26; with style_image: arbitrary)."),
    ]
    fields = [(SheetOptions, name) for name in forms.sheet_fields()]
    fields += [(ApplyOptions, name) for name in forms.apply_fields(forms.SHEET_OWNED_FIELDS)]
    return forms.endpoint(_answering(sheet), uploads, fields)


async def _paintings(uploads: list[UploadFile] | None) -> list[PaintingData]:
    return [PaintingData(_label(upload.filename, f"painting {i + 1}"), await upload.read()) for i, upload in enumerate(uploads or [])]


async def _worker(models: Models, name: str | None, paintings: list[PaintingData]) -> ModelWorker:
    """The worker of model ``name``; paintings without a model mean the arbitrary-style model."""
    return await run_in_threadpool(models.worker, name or (ARBITRARY_MODEL if paintings else None))


async def _guarded(options: ServeOptions, work: Any) -> Any:
    """``await work``, with the pixel limit's hint said as a client can act on it."""
    try:
        return await work
    except PixelLimitError as exc:
        raise Problem(413, exc.message, f"this server takes images of at most {options.max_pixels / 1e6:g} megapixels; send a smaller one") from exc


def _own_format(source_format: str | None) -> str:
    """The format a result is sent in when none is asked for: the photo's own where stylize writes it, else PNG."""
    source_format = "JPEG" if source_format == "MPO" else source_format
    return source_format if source_format in MEDIA_TYPES else "PNG"


def _label(filename: str | None, default: str) -> str:
    """How messages name an upload: its file name without any folder, printable, at most 80 characters. Never a path
    the server opens."""
    name = re.split(r"[/\\]", filename or "")[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:80].strip()
    return name or default


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def _image_response(encoded: bytes, fmt: str, label: str, headers: dict[str, str]) -> Response:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", label.rsplit(".", 1)[0])[:60] or "image"
    disposition = f'inline; filename="{stem}_stylized.{_EXTENSIONS[fmt]}"'
    return Response(encoded, media_type=MEDIA_TYPES[fmt], headers={**headers, "Content-Disposition": disposition})


# ------------------------------------------------------------------------------------------------------------ errors


def _problem_response(error: StylizeError) -> JSONResponse:
    status = status_of(error)
    return JSONResponse(body(error, status), status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StylizeError)
    async def stylize_error(_request: Request, exc: StylizeError) -> JSONResponse:
        return _problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _problem_response(_validation_problem(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        hints = {404: "see /docs for the API", 405: "see /docs for the methods of each path", 413: "send a smaller image"}
        response = _problem_response(Problem(exc.status_code, str(exc.detail), hints.get(exc.status_code)))
        response.headers.update(exc.headers or {})
        return response



def _answering(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """``endpoint`` with any unexpected exception answered as a 500 problem and logged in one line (with its traceback
    at log level DEBUG, ``stylize --debug serve``): the server goes on."""

    @functools.wraps(endpoint)
    async def answer(**values: Any) -> Response:
        try:
            return await endpoint(**values)
        except (StylizeError, HTTPException):
            raise
        except Exception as exc:  # noqa: BLE001 - one request's failure, not the server's
            log.error("unexpected %s: %s", type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            raise Problem(500, f"unexpected {type(exc).__name__}: {exc}", "the server's log has the details; please report it") from exc

    return answer


def _validation_problem(errors: list[dict[str, Any]]) -> Problem:
    """One line for FastAPI's validation errors, naming the first field that is wrong."""
    first = errors[0] if errors else {"loc": (), "msg": "bad request", "type": ""}
    name = str(first["loc"][-1]) if first.get("loc") else "request"
    if name == "image" and first.get("type") == "missing":
        return Problem(400, "no photo in the request", "send it as a multipart/form-data part named `image`")
    if first.get("type") == "missing":
        return Problem(400, f"`{name}` is missing", "see /docs for the fields")
    return Problem(400, f"bad `{name}`: {first['msg']}", "see /docs for the fields and their types")


class Guard:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413 (at once when its Content-Length says so,
    else as soon as the bytes received pass it), and a POST arriving while ``max_pending`` are being worked on is
    answered 503 before its body is read."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_pending: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_pending = max_pending
        self.pending = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        too_large = Problem(413, f"the request is larger than this server's limit of {self.max_bytes / 1e6:g} MB", "send a smaller image")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _problem_response(too_large)(scope, receive, send)
            return
        if self.pending >= self.max_pending:
            busy = Problem(503, f"the server is busy: {self.pending} requests are being worked on", "try again in a moment")
            response = _problem_response(busy)
            response.headers["Retry-After"] = "1"
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Any:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                # an HTTPException passes through FastAPI's form parsing as it is, to the handler above
                raise HTTPException(413, too_large.message)
            return message

        self.pending += 1
        try:
            await self.app(scope, limited, send)
        finally:
            self.pending -= 1
