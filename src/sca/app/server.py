"""`sca demo`: a small HTTP server (standard library only) in front of one `RegionCaptioner`.

Why not Gradio: the demo needs four JSON endpoints and one page; the standard library serves them with no
dependency to install or keep compatible, and the page is plain HTML and JavaScript that any browser runs.

Endpoints: `GET /` (the page), `GET /api/samples`, `GET /samples/NAME`, `POST /api/image` (raw image bytes),
`POST /api/sample` (`{"name"}`), `POST /api/caption` (`{"image", "boxes", "points"}`), `POST /api/anything`
(`{"image", "points_per_side"}`). Errors are JSON `{"error": "..."}` with a 4xx status, shown on the page.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
from collections import OrderedDict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..api import RegionCaptioner
from ..assets import SAMPLE_IMAGE
from ..errors import InputError
from ..options import AnythingOptions
from ..visualize import draw_regions

STATIC = Path(__file__).parent / "static"
SAMPLES = {SAMPLE_IMAGE.name: SAMPLE_IMAGE}
MAX_UPLOAD_BYTES = 20_000_000
MAX_PIXELS = 25_000_000
MAX_POINTS_PER_SIDE = 64
KEPT_IMAGES = 8


class DemoError(Exception):
    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = status


class Demo:
    """The model, the uploaded images (the last few, by content hash) and which one is encoded now."""

    def __init__(self, captioner: RegionCaptioner):
        self.captioner = captioner
        self.images: OrderedDict[str, Image.Image] = OrderedDict()
        self.encoded: str | None = None
        self.lock = threading.Lock()  # one model, one request at a time

    def add_image(self, data: bytes) -> dict:
        if not data:
            raise DemoError("the upload is empty: choose an image file")
        if len(data) > MAX_UPLOAD_BYTES:
            raise DemoError(f"the file is {len(data) / 1e6:.0f} MB; the demo takes images up to "
                            f"{MAX_UPLOAD_BYTES / 1e6:.0f} MB", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        try:
            with Image.open(io.BytesIO(data)) as opened:
                if opened.width * opened.height > MAX_PIXELS:
                    raise DemoError(f"the image is {opened.width}x{opened.height}; the demo takes up to "
                                    f"{MAX_PIXELS / 1e6:.0f} megapixels", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
                image = opened.convert("RGB")
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
            raise DemoError(f"this file is not an image the demo can read ({type(error).__name__})") from error
        key = hashlib.sha1(data).hexdigest()[:16]
        with self.lock:
            self.images[key] = image
            self.images.move_to_end(key)
            while len(self.images) > KEPT_IMAGES:
                self.images.popitem(last=False)
        return {"image": key, "width": image.width, "height": image.height}

    def _use(self, key: str) -> Image.Image:
        if key not in self.images:
            raise DemoError("that image is no longer on the server: upload it again")
        if self.encoded != key:
            self.captioner.set_image(self.images[key])
            self.encoded = key
        return self.images[key]

    def caption(self, request: dict) -> dict:
        boxes, points = request.get("boxes") or [], request.get("points") or []
        if not boxes and not points:
            raise DemoError("no prompt: click a point or drag a box on the image first")
        with self.lock:
            image = self._use(str(request.get("image")))
            regions = []
            try:
                if boxes:
                    regions += self.captioner.caption(boxes=boxes)
                if points:
                    regions += self.captioner.caption(points=points)
            except InputError as error:
                raise DemoError(str(error)) from error
        return _response(image, regions)

    def anything(self, request: dict) -> dict:
        side = request.get("points_per_side", 16)
        if not isinstance(side, int) or not 1 <= side <= MAX_POINTS_PER_SIDE:
            raise DemoError(f"points per side must be a whole number from 1 to {MAX_POINTS_PER_SIDE}")
        with self.lock:
            image = self._use(str(request.get("image")))
            regions = self.captioner.anything(AnythingOptions(points_per_side=side))
        return _response(image, regions)


def _response(image: Image.Image, regions) -> dict:
    labels = [f"{r.caption} ({r.best_iou:.2f})" for r in regions]
    picture = draw_regions(image, [r.best_mask for r in regions], labels, [r.box for r in regions])
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return {
        "overlay": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"),
        "regions": [{"caption": r.caption, "iou": round(r.best_iou, 4), "box": [round(v, 1) for v in r.box],
                     "candidates": r.candidates} for r in regions],
    }


def make_handler(demo: Demo):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):
            pass

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, payload: dict, status: HTTPStatus = HTTPStatus.OK) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def do_GET(self):
            if self.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, (STATIC / "index.html").read_bytes(), "text/html; charset=utf-8")
            elif self.path == "/api/samples":
                self._json({"samples": [{"name": name, "url": f"/samples/{name}"} for name in SAMPLES]})
            elif self.path.startswith("/samples/") and self.path[len("/samples/"):] in SAMPLES:
                self._send(HTTPStatus.OK, SAMPLES[self.path[len("/samples/"):]].read_bytes(), "image/png")
            else:
                self._json({"error": f"no page {self.path}"}, HTTPStatus.NOT_FOUND)

        def do_POST(self):
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_UPLOAD_BYTES:
                    raise DemoError(f"the upload is {length / 1e6:.0f} MB; the demo takes up to "
                                    f"{MAX_UPLOAD_BYTES / 1e6:.0f} MB", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
                body = self.rfile.read(length)
                if self.path == "/api/image":
                    self._json(demo.add_image(body))
                    return
                try:
                    request = json.loads(body or b"{}")
                except json.JSONDecodeError as error:
                    raise DemoError(f"the request is not JSON: {error}") from error
                if self.path == "/api/sample":
                    name = request.get("name")
                    if name not in SAMPLES:
                        raise DemoError(f"no bundled image {name!r}")
                    self._json(demo.add_image(SAMPLES[name].read_bytes()))
                elif self.path == "/api/caption":
                    self._json(demo.caption(request))
                elif self.path == "/api/anything":
                    self._json(demo.anything(request))
                else:
                    raise DemoError(f"no endpoint {self.path}", HTTPStatus.NOT_FOUND)
            except DemoError as error:
                self._json({"error": str(error)}, error.status)
            except Exception as error:  # the page shows a message; the server keeps serving
                self._json({"error": f"the model failed on this request: {type(error).__name__}: {error}"},
                           HTTPStatus.INTERNAL_SERVER_ERROR)

    return Handler


def serve(captioner: RegionCaptioner, host: str = "127.0.0.1", port: int = 7860) -> ThreadingHTTPServer:
    """A server bound to host:port (port 0: any free port); call `serve_forever()` on it."""
    return ThreadingHTTPServer((host, port), make_handler(Demo(captioner)))
