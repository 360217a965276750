"""`sca serve`: the JSON API and the web page, on FastAPI and uvicorn.

Endpoints (OpenAPI schema at `/openapi.json`, interactive docs at `/docs`):
    GET  /                       the page
    GET  /api/health             liveness and the queue's length
    GET  /api/model              the model's kind, settings, video tracker and the server's limits
    GET  /api/samples            the bundled images; GET /samples/{name} serves one
    POST /api/images             upload an image (its bytes as the body) → its id (a hash of its content)
    POST /api/samples/{name}     use a bundled image → its id
    POST /api/caption            {"image", "regions": [{"box"} | {"points", "point_labels"} | {"mask"}]} → regions
    POST /api/anything           {"image", "points_per_side", ...} → every region found
    POST /api/videos             upload a short video (its bytes as the body) → its id, size and frame count
    GET  /api/videos/{id}/frames/{n}  frame n as a PNG
    POST /api/video              {"video", "frame", "regions": [{"box"} | {"points"}]} → each object's track

Bounded by design (each limit a `sca serve` option): upload bytes (counted while streaming, whatever the headers
say), pixels, aspect ratio, regions per request, points per side, frames per video, queue length, request time. Safe by default:
binds 127.0.0.1; an API key, when set, is required on /api/*; cross-origin requests that change state are refused
unless their origin is allowed; client mistakes are 4xx with a message, server faults 500 with a request id (the
traceback goes to the log, never to the client).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..assets import SAMPLE_IMAGE
from ..errors import InputError, one_line
from ..models.region_model import RegionModel
from ..options import AnythingOptions, GenerationOptions, VideoOptions
from ..options import ServerLimits as Limits
from ..video import io as video_io
from ..video.trackers import REPROMPT, load_tracker
from .guard import LOOPBACK_HOSTS, ClientError, Guard, Security, read_bounded
from .schemas import AnythingRequest, CaptionRequest, Error, ImageInfo, ModelInfo, Regions, VideoInfo, VideoRequest, VideoTracks
from .worker import AnythingJob, CaptionJob, Job, LruBytes, ModelWorker, QueueFull, VideoJob

log = logging.getLogger("sca.serve")
REFUSALS = {
    400: "the request is wrong (the message says how)", 401: "an API key is needed", 403: "the origin is not allowed",
    404: "no such image, video, sample or frame", 408: "the body stalled", 413: "past one of the server's limits",
    415: "an upload of another media type", 421: "the Host is not one the server answers to",
    422: "the body does not fit the schema", 499: "the client went away", 500: "a fault of the server's",
    503: "the queue is full: retry after Retry-After seconds", 504: "the request took longer than request_timeout",
}
"""Every status a route can answer besides 200, each with the `Error` body."""
DISCONNECT_POLL = 0.25
"""Seconds between looks at whether a waiting request's client is still there."""
STATIC = Path(__file__).parent / "static"
SAMPLES = {SAMPLE_IMAGE.name: SAMPLE_IMAGE}


def create_app(model: RegionModel, kind: str = "sca", limits: Limits | None = None,
               security: Security | None = None, chunk_size: int = GenerationOptions.chunk_size,
               tracker: str = REPROMPT) -> FastAPI:
    """The ASGI application around one region model (`chunk_size`: regions through the model at a time; `tracker`:
    how the video route follows objects, as `sca video --tracker` takes it, loaded here once)."""
    limits, security = limits or Limits(), security or Security()
    worker = ModelWorker(model, queue_size=limits.queue_size, cache_bytes=limits.cache_bytes, chunk_size=chunk_size,
                         tracker=load_tracker(tracker, model))
    images = LruBytes(limits.cache_bytes, lambda picture: picture.width * picture.height * 3)
    videos = LruBytes(limits.cache_bytes, lambda entry: len(entry[0]))  # (bytes, VideoInfo)
    app = FastAPI(title="SCA — Segment and Caption Anything", version="1", description=__doc__.split("\n\n")[0],
                  responses={status: {"model": Error, "description": meaning} for status, meaning in REFUSALS.items()})
    app.state.worker, app.state.limits = worker, limits
    app.add_middleware(Guard, security=security, limits=limits)
    app.openapi = lambda: app.openapi_schema or _with_limits(app, limits)

    # ------------------------------------------------------------------ guards and errors

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return _error(request, 422, f"{where}: {first.get('msg', 'invalid')}" if where else first.get("msg", "invalid"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):  # FastAPI's own (an unreadable body, 404, 405)
        return _error(request, error.status_code, str(error.detail), getattr(error, "headers", None))

    @app.exception_handler(ClientError)
    async def refused(request: Request, error: ClientError):
        return _error(request, error.status, str(error), error.headers)

    @app.exception_handler(InputError)
    async def wrong_input(request: Request, error: InputError):
        return _error(request, 400, one_line(error))

    # ------------------------------------------------------------------ the page and its files

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/samples/{name}", include_in_schema=False)
    async def sample_file(name: str):
        if name not in SAMPLES:
            raise ClientError(404, f"no bundled image {name!r}")
        return FileResponse(SAMPLES[name], media_type="image/png")

    # ------------------------------------------------------------------ the API

    @app.get("/api/health")
    async def health() -> dict:
        return {"status": "ok", "waiting": worker.waiting}

    @app.get("/api/model", response_model=ModelInfo)
    async def model_info():
        return ModelInfo(kind=kind, settings=model.settings(), image_size=model.frame.image_size, tracker=tracker,
                         limits=asdict(limits))

    @app.get("/api/samples")
    async def samples() -> dict:
        return {"samples": [{"name": name, "url": f"/samples/{name}"} for name in SAMPLES]}

    @app.post("/api/samples/{name}", response_model=ImageInfo)
    async def use_sample(name: str):
        if name not in SAMPLES:
            raise ClientError(404, f"no bundled image {name!r}: GET /api/samples lists them")
        return _register(SAMPLES[name].read_bytes(), images, limits)

    @app.post("/api/images", response_model=ImageInfo,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                  "image/*": {"schema": {"type": "string", "format": "binary"}}}}})
    async def upload(request: Request):
        _require_media(request, "image")
        data = await _read_body(request, limits)
        return await asyncio.to_thread(_register, data, images, limits)

    @app.post("/api/caption", response_model=Regions)
    async def caption(body: CaptionRequest, request: Request):
        if len(body.regions) > limits.max_regions:
            raise ClientError(422, f"{len(body.regions)} regions in one request; the server takes up to "
                                   f"{limits.max_regions} (max_regions): split them over several requests")
        picture = _image(images, body.image)
        regions = [region.prompt() for region in body.regions]
        worker.engine.check((picture.height, picture.width), regions)
        started = time.perf_counter()
        found = await _await_job(request, worker, CaptionJob(image_id=body.image, picture=picture, regions=regions,
                                                                 multimask_output=body.multimask_output), limits)
        return Regions(request_id=request.state.id, image=body.image, seconds=round(time.perf_counter() - started, 4),
                       regions=[region.to_dict() for region in found])

    @app.post("/api/anything", response_model=Regions)
    async def anything(body: AnythingRequest, request: Request):
        if body.points_per_side > limits.max_points_per_side:
            raise ClientError(422, f"points_per_side {body.points_per_side} is over the server's limit of "
                                   f"{limits.max_points_per_side} (max_points_per_side)")
        picture = _image(images, body.image)
        settings = {k: v for k, v in body.model_dump(exclude={"image"}).items() if v is not None}
        options = AnythingOptions(**settings).check()
        started = time.perf_counter()
        found = await _await_job(request, worker, AnythingJob(image_id=body.image, picture=picture, options=options),
                                     limits)
        return Regions(request_id=request.state.id, image=body.image, seconds=round(time.perf_counter() - started, 4),
                       regions=[region.to_dict() for region in found])

    @app.post("/api/videos", response_model=VideoInfo,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                  "video/*": {"schema": {"type": "string", "format": "binary"}}}}})
    async def upload_video(request: Request):
        _require_media(request, "video")
        data = await _read_body(request, limits)
        return await asyncio.to_thread(_register_video, data, videos, limits)

    @app.get("/api/videos/{video}/frames/{index}", response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    async def video_frame(video: str, index: int):
        data, info = _video(videos, video)
        if not 0 <= index < info.frames:
            raise ClientError(404, f"the video has frames 0 to {info.frames - 1}, not {index}")
        return Response(await asyncio.to_thread(_frame_png, data, index), media_type="image/png")

    @app.post("/api/video", response_model=VideoTracks)
    async def track(body: VideoRequest, request: Request):
        data, info = _video(videos, body.video)
        if len(body.regions or []) > limits.max_regions:
            raise ClientError(422, f"{len(body.regions)} objects in one request; the server takes up to "
                                   f"{limits.max_regions} (max_regions)")
        if body.frame >= info.frames:
            raise ClientError(400, f"frame {body.frame} is past the video's end: it has frames 0 to {info.frames - 1}")
        regions, anything = None, None
        if body.regions is not None:
            regions = [region.prompt() for region in body.regions]
            worker.engine.check((info.height, info.width), regions)
        else:
            settings = {k: v for k, v in body.anything.model_dump(exclude={"every"}).items() if v is not None}
            if settings["points_per_side"] > limits.max_points_per_side:
                raise ClientError(422, f"points_per_side {settings['points_per_side']} is over the server's limit of "
                                       f"{limits.max_points_per_side} (max_points_per_side)")
            anything = AnythingOptions(**settings).check()
        options = VideoOptions(keyframe_every=body.keyframe_every,
                               anything_every=body.anything.every if body.anything else None).check()
        started = time.perf_counter()
        objects = await _await_job(request, worker, VideoJob(data=data, regions=regions, anything=anything,
                                                             frame=body.frame, options=options), limits)
        return VideoTracks(request_id=request.state.id, video=body.video, objects=objects,
                           seconds=round(time.perf_counter() - started, 4))

    return app


# ---------------------------------------------------------------------- helpers (request side)


def _error(request: Request, status: int, message: str, headers: dict | None = None) -> JSONResponse:
    request_id = getattr(request.state, "id", "-")
    return JSONResponse({"error": message, "request_id": request_id}, status_code=status, headers=headers)


def _require_media(request: Request, kind: str) -> None:
    """Refuse (415) a body that is not sent as `kind/...` or raw bytes."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/octet-stream" and not content_type.startswith(f"{kind}/"):
        raise ClientError(415, f"send the {kind}'s bytes as the body, with Content-Type {kind}/... or "
                               "application/octet-stream")


async def _read_body(request: Request, limits: Limits) -> bytes:
    """The body, counted while it streams in (a lying or missing Content-Length changes nothing); a client that
    stalls is cut off."""
    too_large = ClientError(413, f"the upload is over {limits.max_upload_bytes / 1e6:g} MB, the server's limit "
                                 "(max_upload_bytes)")
    return await read_bounded(request.stream(), limits.max_upload_bytes, limits.upload_stall_seconds, too_large,
                              "the upload")


def _register(data: bytes, images: LruBytes, limits: Limits) -> ImageInfo:
    """Decode an upload within the limits and keep it under its content hash."""
    if not data:
        raise ClientError(400, "the upload is empty: send an image file's bytes")
    key = hashlib.sha256(data).hexdigest()[:24]
    cached = images.get(key)
    if cached is not None:
        return ImageInfo(image=key, width=cached.width, height=cached.height)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                width, height = opened.size
                _check_size(width, height, limits)
                picture = opened.convert("RGB")
    except ClientError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as error:
        raise ClientError(400, f"this file is not an image the server can read ({type(error).__name__})") from None
    images.put(key, picture)
    return ImageInfo(image=key, width=width, height=height)


def _register_video(data: bytes, videos: LruBytes, limits: Limits) -> VideoInfo:
    """Probe an uploaded video within the limits (without decoding it) and keep it under its content hash."""
    if not data:
        raise ClientError(400, "the upload is empty: send a video file's bytes")
    key = hashlib.sha256(data).hexdigest()[:24]
    cached = videos.get(key)
    if cached is None:
        info = video_io.video_info(data, count_frames=True)
        _check_size(info.width, info.height, limits)
        if info.width * info.height > limits.max_video_pixels:
            raise ClientError(413, f"the video's frames are {info.width}x{info.height}; the server takes frames of up to "
                                   f"{limits.max_video_pixels / 1e6:g} megapixels (max_video_pixels)")
        if not info.frames:
            raise ClientError(400, "the upload holds no frames")
        if info.frames > limits.max_video_frames:
            raise ClientError(413, f"the video has {info.frames} frames; the server takes up to "
                                   f"{limits.max_video_frames} (max_video_frames): cut it shorter")
        cached = (data, info)
        videos.put(key, cached)
    info = cached[1]
    return VideoInfo(video=key, width=info.width, height=info.height, frames=info.frames, fps=info.fps)


def _video(videos: LruBytes, key: str) -> tuple[bytes, video_io.VideoInfo]:
    entry = videos.get(key)
    if entry is None:
        raise ClientError(404, f"no video {key!r} on the server (it keeps the latest ones): upload it again")
    return entry


def _frame_png(data: bytes, index: int) -> bytes:
    for at, picture in video_io.read_frames(data, max_frames=index + 1):
        if at == index:
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG")
            return buffer.getvalue()
    raise ClientError(404, f"frame {index} could not be decoded")


def _check_size(width: int, height: int, limits: Limits) -> None:
    if width * height > limits.max_pixels:
        raise ClientError(413, f"the image is {width}x{height}, {width * height / 1e6:.1f} megapixels; the server "
                               f"takes up to {limits.max_pixels / 1e6:g} megapixels (max_pixels)")
    if max(width, height) > limits.max_aspect_ratio * min(width, height):
        raise ClientError(413, f"the image is {width}x{height}; the server takes aspect ratios up to "
                               f"{limits.max_aspect_ratio:g}:1 (max_aspect_ratio)")


def _image(images: LruBytes, key: str) -> Image.Image:
    picture = images.get(key)
    if picture is None:
        raise ClientError(404, f"no image {key!r} on the server (it keeps the latest ones): upload it again")
    return picture


async def _await_job(request: Request, worker: ModelWorker, job: Job, limits: Limits):
    """Queue a job and wait for its result. A client that goes away (noticed within `DISCONNECT_POLL` s) or waits past
    the timeout cancels it: the worker drops it at its next step, and its outcome is collected, never left orphaned."""
    try:
        worker.submit(job)
    except QueueFull as error:
        job.cancelled.set()
        raise ClientError(503, f"the server is busy ({error}): try again shortly",
                          {"Retry-After": str(max(1, worker.waiting))}) from None
    waiting = asyncio.wrap_future(job.future)
    deadline = time.monotonic() + limits.request_timeout
    try:
        while not waiting.done():
            await asyncio.wait({waiting}, timeout=DISCONNECT_POLL)
            if waiting.done():
                break
            if await request.is_disconnected():
                raise ClientError(499, "the client went away")
            if time.monotonic() > deadline:
                raise ClientError(504, f"the request took longer than {limits.request_timeout:g} s (request_timeout)")
        result = waiting.result()
    except BaseException:
        job.cancelled.set()
        waiting.add_done_callback(_collect)
        waiting.cancel()
        raise
    if result is None:
        raise ClientError(499, "the request was cancelled")
    return result


def _with_limits(app: FastAPI, limits: Limits) -> dict:
    """The OpenAPI schema with the server's own limits in it, so that the schema's bounds are the enforced ones."""
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema["components"]["schemas"]
    components["AnythingRequest"]["properties"]["points_per_side"]["maximum"] = limits.max_points_per_side
    components["CaptionRequest"]["properties"]["regions"]["maxItems"] = limits.max_regions
    for option in components["VideoRequest"]["properties"]["regions"]["anyOf"]:
        if option.get("type") == "array":
            option["maxItems"] = limits.max_regions
    components["VideoAnything"]["properties"]["points_per_side"]["maximum"] = limits.max_points_per_side
    app.openapi_schema = schema
    return schema


def _collect(future: asyncio.Future) -> None:
    """Read an abandoned job's outcome, so that nothing is left 'never retrieved'."""
    if not future.cancelled():
        future.exception()


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 7860, log_level: str = "info") -> None:
    """Run the application (`create_app`) until interrupted (uvicorn: one event loop; the model on its own thread)."""
    import uvicorn

    from .connections import server_config

    uvicorn.Server(server_config(app, host, port, app.state.limits, log_level)).run()


def default_hosts(bind: str, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The names the server answers to: on a loopback address, the loopback names (and `extra`): a page on another
    site whose name resolves to 127.0.0.1 (DNS rebinding) is refused; on another address, any name unless `extra`
    names them."""
    if bind in LOOPBACK_HOSTS or bind.startswith("127."):
        return (*LOOPBACK_HOSTS, bind, *extra)
    return tuple(extra) if extra else ("*",)
