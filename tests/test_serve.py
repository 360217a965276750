"""`sca serve`: the JSON API (each limit, the queue, disconnects, the API key, the Origin check, hostile input, a
property-based fuzz of the OpenAPI schema) and the page, driven in headless Chromium."""

import contextlib
import io
import json
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

from sca.app.server import Limits, Security, create_app
from sca.app.worker import CaptionJob, Job, ModelWorker
from sca.assets import SAMPLE_IMAGE
from sca.assets.build import sample_record
from sca.masks import decode_mask
from sca.models.prompts import RegionPrompt
from sca.models.registry import build_region_model

CHROMIUM = os.environ.get("SCA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def model():
    return build_region_model("sca")  # the shipped shapes model


@pytest.fixture(scope="module")
def client(model):
    with TestClient(create_app(model)) as client:
        yield client



@dataclass(kw_only=True)
class Blocking(Job):
    """A job that holds the worker until `release` is set (None: returns at once)."""

    release: threading.Event | None

    def run(self, worker, jobs):
        return [self.release is None or self.release.wait(30)]


class _Watched:
    """The model, with `on_caption(prompts)` called before each caption step (to count, record, slow down or
    cancel); `steps` counts them."""

    def __init__(self, inner, on_caption):
        self.inner, self.frame, self.on_caption, self.steps = inner, inner.frame, on_caption, 0

    def caption(self, encoded, prompts, *args, **kwargs):
        self.steps += 1
        self.on_caption(prompts)
        return self.inner.caption(encoded, prompts, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _png(width, height, colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _sample(client) -> str:
    response = client.post("/api/samples/sample.png")
    assert response.status_code == 200, response.text
    return response.json()["image"]


def _upload(client, data: bytes, content_type="application/octet-stream"):
    return client.post("/api/images", content=data, headers={"Content-Type": content_type})


def test_captions_with_rle_masks_for_every_prompt_kind(client):
    image = _sample(client)
    record = sample_record()
    regions = [{"box": list(r.box)} for r in record.regions]
    regions.append({"points": [[55, 115]], "point_labels": [1]})
    response = client.post("/api/caption", json={"image": image, "regions": regions})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert [r["caption"] for r in answer["regions"][:3]] == [r.captions[0] for r in record.regions]
    assert answer["regions"][3]["caption"] == record.regions[0].captions[0]  # the point lies in the circle
    mask = decode_mask(answer["regions"][0]["mask"], 256, 256)
    assert mask.shape == (256, 256) and mask.any()
    assert response.headers["X-Request-ID"] == answer["request_id"]


def test_an_uploaded_image_gets_a_content_id_and_anything_mode(client):
    data = SAMPLE_IMAGE.read_bytes()
    first, second = _upload(client, data), _upload(client, data, "image/png")
    assert first.status_code == 200 and first.json() == second.json() and first.json()["width"] == 256
    response = client.post("/api/anything", json={"image": first.json()["image"], "points_per_side": 8})
    assert response.status_code == 200, response.text
    assert {r["caption"] for r in response.json()["regions"]} >= {"a small red circle", "a large green square"}


def test_model_info_health_and_the_schema(client):
    assert client.get("/api/health").json()["status"] == "ok"
    info = client.get("/api/model").json()
    assert info["kind"] == "sca" and info["limits"]["max_regions"] == 64
    assert "/api/caption" in client.get("/openapi.json").json()["paths"]
    assert client.get("/").headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("data, status, message", [
    (b"this is not an image", 400, "not an image"),
    (b"", 400, "empty"),
    (_png(6000, 5000), 413, "megapixels (max_pixels)"),
    (_png(4000, 100), 413, "aspect ratios up to 20:1 (max_aspect_ratio)"),
])
def test_bad_uploads(client, data, status, message):
    response = _upload(client, data)
    assert response.status_code == status and message in response.json()["error"]
    assert response.json()["request_id"]


def test_uploads_are_counted_while_they_stream_whatever_the_headers_say(model):
    limits = Limits(max_upload_bytes=1000)
    with TestClient(create_app(model, limits=limits)) as small:
        response = _upload(small, b"x" * 5000)
        assert response.status_code == 413 and "max_upload_bytes" in response.json()["error"]

        def chunks():  # no Content-Length at all: chunked transfer
            for _ in range(10):
                yield b"y" * 500

        response = small.post("/api/images", content=chunks(), headers={"Content-Type": "image/png"})
        assert response.status_code == 413
    assert _upload_with_lying_length(model) == 413


def _upload_with_lying_length(model) -> int:
    """Content-Length: -1 and a body past the limit, on a real socket (as a client that lies would send)."""
    with _running(create_app(model, limits=Limits(max_upload_bytes=1000))) as port:
        for length in ("-1", "abc", "10"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
                connection.sendall(f"POST /api/images HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                                   f"Content-Length: {length}\r\n\r\n".encode() + b"z" * 5000)
                status = int(connection.recv(100).split()[1])
                assert status in (400, 413), (length, status)
        return 413


@pytest.mark.parametrize("body, message", [
    ({"image": "nope", "regions": [{"box": [0, 0, 5, 5]}]}, "upload it again"),
    ({"image": "{sample}", "regions": []}, "regions: List should have at least 1 item"),
    ({"image": "{sample}", "regions": [{"box": [0, 0, 900, 5]}]}, "outside"),
    ({"image": "{sample}", "regions": [{"box": [0, 0, 5, 5]}] * 65}, "max_regions"),
    ({"image": "{sample}", "regions": [{}]}, "a region needs a box, points or a mask"),
    ({"image": "{sample}", "regions": 5}, "regions"),
    ({"image": "{sample}", "regions": [{"points": [[]]}]}, "points.0"),
    ({"image": "{sample}", "regions": [{"box": "1234"}]}, "regions.0.box"),
    ({"image": "{sample}", "regions": [{"box": [1, 2, 3, 4]}], "extra": 1}, "extra"),
    ({"image": "{sample}", "regions": [{"points": [[1, 2]], "point_labels": [1, 0]}]}, "one label per point"),
    ({"image": "{sample}", "regions": [{"mask": {"size": [5, 5], "counts": "00"}}]}, "mask"),
])
def test_client_mistakes_are_4xx_with_a_message(client, body, message):
    sample = _sample(client)
    body = json.loads(json.dumps(body).replace("{sample}", sample))
    response = client.post("/api/caption", json=body)
    assert 400 <= response.status_code < 500, response.text
    assert message in response.json()["error"]
    assert "Traceback" not in response.text and "Error:" not in response.json()["error"].split(":")[0]


@pytest.mark.parametrize("raw", [b"[1, 2]", b"\xff\xfe", b'{"image": "x", "regions": [{"box": [NaN, 0, 1, 1]}]}',
                                 b"{" * 10_000, b""])
def test_hostile_bodies_are_4xx(client, raw):
    response = client.post("/api/caption", content=raw, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500 and response.json()["error"]


def test_anything_is_bounded(client):
    sample = _sample(client)
    response = client.post("/api/anything", json={"image": sample, "points_per_side": 100000})
    assert response.status_code == 422 and "max_points_per_side" in response.json()["error"]


def test_the_api_key(model):
    with TestClient(create_app(model, security=Security(api_key="s3cret"))) as guarded:
        assert guarded.get("/api/health").status_code == 401
        assert guarded.get("/api/health", headers={"X-API-Key": "wrong"}).status_code == 401
        assert guarded.get("/api/health", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert guarded.get("/api/health", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert guarded.get("/").status_code == 200  # the page itself is public; its API calls are not


def test_cross_origin_posts_are_refused_unless_allowed(model):
    with TestClient(create_app(model, security=Security(allowed_origins=("https://friend.example",)))) as client:
        evil = client.post("/api/samples/sample.png", headers={"Origin": "https://evil.example"})
        assert evil.status_code == 403 and "--allow-origin https://evil.example" in evil.json()["error"]
        assert client.post("/api/samples/sample.png", headers={"Origin": "https://friend.example"}).status_code == 200
        assert client.post("/api/samples/sample.png", headers={"Origin": "http://testserver"}).status_code == 200


def test_a_full_queue_answers_503_with_retry_after(model):
    with TestClient(create_app(model, limits=Limits(queue_size=1))) as client:
        sample = _sample(client)
        worker = client.app.state.worker
        release = threading.Event()
        worker.submit(Blocking(release=release))
        time.sleep(0.2)  # the worker is now busy with the blocker; the queue is empty
        worker.submit(Blocking(release=None))  # fills the one place
        response = client.post("/api/caption", json={"image": sample, "regions": [{"box": [1, 1, 50, 50]}]})
        release.set()
        assert response.status_code == 503 and "busy" in response.json()["error"]
        assert int(response.headers["Retry-After"]) >= 1


def test_a_slow_request_times_out_and_server_faults_are_500_without_details(model):
    with TestClient(create_app(model, limits=Limits(request_timeout=0.3))) as client:
        sample = _sample(client)
        release = threading.Event()
        client.app.state.worker.submit(Blocking(release=release))
        response = client.post("/api/caption", json={"image": sample, "regions": [{"box": [1, 1, 50, 50]}]})
        release.set()
        assert response.status_code == 504 and "request_timeout" in response.json()["error"]

    class Broken:
        frame = model.frame
        needs_pictures = False
        device, dtype = model.device, model.dtype

        def encode(self, images):
            raise RuntimeError("secret internal detail")

        def settings(self):
            return {}

    with TestClient(create_app(Broken()), raise_server_exceptions=False) as client:
        response = client.post("/api/caption", json={"image": _sample(client), "regions": [{"box": [1, 1, 50, 50]}]})
        assert response.status_code == 500
        assert "secret" not in response.text and response.json()["request_id"] in response.json()["error"]


def test_a_cancelled_job_is_dropped_between_chunks(model):
    calls = []

    def count(prompts):
        calls.append(1)
        job.cancelled.set()  # the client goes away while the first chunk runs

    worker = ModelWorker(_Watched(model, count), chunk_size=1)
    try:
        picture = Image.open(SAMPLE_IMAGE).convert("RGB")
        job = CaptionJob(image_id="sample", picture=picture, regions=[RegionPrompt(box=[1, 1, 50, 50])] * 5)
        assert job.run(worker, [job]) == [None]
        assert len(calls) == 1  # four chunks of the five were never run
    finally:
        worker.stop()


def test_concurrent_requests_share_model_steps(model):
    """Caption requests waiting together are decoded in one batch, each getting its own regions back."""
    steps = []

    with TestClient(create_app(_Watched(model, lambda prompts: steps.append(prompts.batch_size)))) as client:
        sample = _sample(client)
        release = threading.Event()
        client.app.state.worker.submit(Blocking(release=release))
        record = sample_record()
        answers = [None] * 3

        def ask(i):
            answers[i] = client.post("/api/caption", json={"image": sample, "regions": [{"box": list(record.regions[i].box)}]})

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        release.set()
        for thread in threads:
            thread.join(60)
    assert [a.json()["regions"][0]["caption"] for a in answers] == [r.captions[0] for r in record.regions]
    assert max(steps) >= 2  # at least two requests shared a model step


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from sca.data.sources.moving_shapes import MovingShapesWorld
    from sca.video.io import write_video

    truth = MovingShapesWorld.split("test", frames=6, image_size=96).video(1)
    path = write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", [f.image for f in truth], fps=6)
    return path.read_bytes(), truth


def test_video_upload_frames_and_tracks(client, clip):
    from sca.geometry import mask_box

    data, truth = clip
    info = client.post("/api/videos", content=data, headers={"Content-Type": "video/mp4"}).json()
    assert (info["width"], info["height"], info["frames"]) == (truth[0].image.width, truth[0].image.height, len(truth))
    again = client.post("/api/videos", content=data, headers={"Content-Type": "video/mp4"}).json()
    assert again["video"] == info["video"]
    frame = client.get(f"/api/videos/{info['video']}/frames/2")
    assert frame.status_code == 200 and frame.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(frame.content)).size == truth[0].image.size
    object_id = min(truth[0].masks)
    response = client.post("/api/video", json={"video": info["video"], "regions": [
        {"box": mask_box(truth[0].masks[object_id])}], "keyframe_every": 2})
    assert response.status_code == 200, response.text
    (track,) = response.json()["objects"]
    assert sorted(int(i) for i in track["frames"]) == list(range(len(truth)))
    assert [k["frame"] for k in track["keyframes"]][:2] == [0, 2]
    mask = decode_mask(track["frames"]["0"]["mask"], *truth[0].masks[object_id].shape)
    overlap = (mask & truth[0].masks[object_id]).sum() / (mask | truth[0].masks[object_id]).sum()
    assert overlap > 0.7


def test_video_mistakes_are_4xx(model, clip):
    data, truth = clip
    with TestClient(create_app(model, limits=Limits(max_video_frames=3))) as small:
        refused = small.post("/api/videos", content=data, headers={"Content-Type": "video/mp4"})
        assert refused.status_code == 413 and "max_video_frames" in refused.json()["error"]
    with TestClient(create_app(model, limits=Limits(max_video_pixels=1000))) as small:
        refused = small.post("/api/videos", content=data, headers={"Content-Type": "video/mp4"})
        assert refused.status_code == 413 and "max_video_pixels" in refused.json()["error"]
    with TestClient(create_app(model)) as client:
        for body, status in [(b"not a video", 400), (b"", 400), (SAMPLE_IMAGE.read_bytes(), 400)]:
            answer = client.post("/api/videos", content=body, headers={"Content-Type": "video/mp4"})
            assert answer.status_code == status, answer.text
        assert client.post("/api/videos", content=data, headers={"Content-Type": "text/plain"}).status_code == 415
        video = client.post("/api/videos", content=data, headers={"Content-Type": "video/mp4"}).json()["video"]
        assert client.get(f"/api/videos/{video}/frames/{len(truth)}").status_code == 404
        assert client.get("/api/videos/nope/frames/0").status_code == 404
        for body, status, words in [
            ({"video": video, "frame": len(truth), "regions": [{"box": [1, 1, 9, 9]}]}, 400, "past the video's end"),
            ({"video": video, "regions": [{"box": [1, 1, 9000, 9]}]}, 400, "outside"),
            ({"video": video, "regions": [{"box": [1, 1, 9, 9]}, {"points": [[3, 9000]]}]}, 400, "outside"),
            ({"video": "nope", "regions": [{"box": [1, 1, 9, 9]}]}, 404, "no video"),
            ({"video": video, "regions": []}, 422, "regions"),
        ]:
            answer = client.post("/api/video", json=body)
            assert answer.status_code == status and words in answer.json()["error"], answer.text


def test_the_openapi_schema_holds_under_schemathesis_with_every_check(model):
    """Every check schemathesis has, on data that fits the schema and data that does not: no 5xx, every status and
    body documented, the schema's bounds the enforced ones, invalid data refused. Left out: that every schema-valid
    request is accepted, which no schema of this API can promise (random bytes fit `format: binary` but are no
    image; a box that fits the schema can lie outside the image it names)."""
    import schemathesis
    from hypothesis import HealthCheck, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import checks

    app = create_app(model, limits=Limits(max_points_per_side=4, max_regions=8))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures = []
    for operation in schema.get_all_operations():
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
            @_given(operation.ok().as_strategy(generation_mode=mode))
            def check(case):
                try:
                    case.call_and_validate(excluded_checks=[checks.positive_data_acceptance])
                except Exception as failure:  # schemathesis' failure groups: collected, reported together
                    failures.append(" ".join(str(failure).split())[:300])

            with contextlib.suppress(Unsatisfiable):  # an operation without parameters has no invalid form
                check()
    assert not failures, failures[:3]


def _given(strategy):
    from hypothesis import given

    return given(case=strategy)


class _running:
    """A real uvicorn server on a free loopback port, in a thread."""

    def __init__(self, app, limits: Limits | None = None):
        from sca.app.connections import server_config

        self.server = uvicorn.Server(server_config(app, "127.0.0.1", 0, limits or Limits(), log_level="warning"))

    def __enter__(self) -> int:
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return self.server.servers[0].sockets[0].getsockname()[1]

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)



def drag_box(page, canvas: dict, scale: float, box) -> None:
    """Draw a box prompt on the page's canvas with the mouse, the box in image pixels."""
    x1, y1, x2, y2 = box
    page.mouse.move(canvas["x"] + x1 * scale, canvas["y"] + y1 * scale)
    page.mouse.down()
    page.mouse.move(canvas["x"] + x2 * scale, canvas["y"] + y2 * scale, steps=5)
    page.mouse.up()

@pytest.mark.skipif(os.environ.get("SCA_SKIP_BROWSER") == "1", reason="SCA_SKIP_BROWSER=1")
def test_the_page_in_a_real_browser(model, tmp_path, clip):
    from playwright.sync_api import sync_playwright

    from sca.geometry import mask_box

    assert shutil.which(CHROMIUM) or os.path.exists(CHROMIUM), f"{CHROMIUM} missing: `make test` installs chromium"
    record = sample_record()
    target = record.regions[1]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with _running(create_app(model)) as port, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"http://127.0.0.1:{port}")
            page.wait_for_function("document.getElementById('canvas').dataset.imageWidth === '256'")  # the sample, at once
            canvas = page.locator("#canvas").bounding_box()
            assert canvas["width"] > 400  # scaled to the viewport, not shown at 256 px
            scale = canvas["width"] / 256
            drag_box(page, canvas, scale, target.box)
            page.click("#run-prompt")
            page.wait_for_selector("#captions li.caption")
            first = page.locator("#captions li.caption").first
            assert first.locator(".number").inner_text() == "1" and target.captions[0] in first.inner_text()
            page.locator("#captions li.caption").first.hover()
            shot = tmp_path / "result.png"
            page.locator("#canvas").screenshot(path=str(shot))
            with page.expect_download() as download:
                page.click("#download")
            saved = json.loads(Path(download.value.path()).read_text())
            assert saved["regions"][0]["caption"] == target.captions[0] and "mask" in saved["regions"][0]

            page.screenshot(path=str(SCREENSHOTS / "page-desktop-prompts.png"))
            shown, aside = page.locator("#canvas").bounding_box(), page.locator("aside").bounding_box()
            assert 0 < aside["x"] - (shown["x"] + shown["width"]) < 60  # the results beside the image

            page.click("#tab-anything")
            page.fill("#points-per-side", "8")
            page.click("#run-anything")
            page.wait_for_function("document.querySelectorAll('#captions li.caption').length >= 3")
            labels = json.loads(page.locator("#canvas").get_attribute("data-labels"))
            assert len(labels) >= 3 and not any(_overlap(a, b) for i, a in enumerate(labels) for b in labels[i + 1:])
            page.screenshot(path=str(SCREENSHOTS / "page-desktop-anything.png"))

            page.click("#tab-video")
            data, truth = clip
            page.set_input_files("#video-upload", files=[{"name": "clip.mp4", "mimeType": "video/mp4", "buffer": data}])
            width = truth[0].image.width
            page.wait_for_function(f"document.getElementById('canvas').dataset.imageWidth === '{width}'")
            canvas = page.locator("#canvas").bounding_box()
            scale = canvas["width"] / width
            object_id = min(truth[0].masks)
            drag_box(page, canvas, scale, mask_box(truth[0].masks[object_id]))
            page.click("#run-video")
            page.wait_for_selector("#captions li.track")
            track = page.locator("#captions li.track").first
            assert "frames 0–5" in track.inner_text() and track.locator(".number").inner_text() == "1"
            assert "0." not in track.inner_text()  # one number per object
            page.eval_on_selector("#frame", "slider => { slider.value = 5; slider.dispatchEvent(new Event('input')); }")
            page.wait_for_function("document.getElementById('canvas').dataset.frame === '5'")
            page.click("#tab-prompt")
            page.wait_for_function("document.getElementById('canvas').dataset.imageWidth === '256'")

            page.set_input_files("#upload", files=[{"name": "notes.txt", "mimeType": "text/plain",
                                                    "buffer": b"not an image"}])
            page.wait_for_function("document.getElementById('error').textContent.length > 0")
            assert "not an image" in page.locator("#error").inner_text()
        finally:
            browser.close()
    # The screenshot shows the result drawn on the canvas the prompt was made on: the mask's colour over the
    # shape, the image elsewhere.
    with Image.open(shot) as picture:
        shown = np.asarray(picture.convert("RGB").resize((256, 256)), dtype=int)
    original = np.asarray(record.image.convert("RGB"), dtype=int)
    inside = decode_mask(target.mask, 256, 256)
    changed = np.abs(shown - original).sum(-1) > 40
    assert changed[inside].mean() > 0.5
    assert changed[~inside].mean() < 0.35




SCREENSHOTS = Path(__file__).parent.parent / "build" / "screenshots"
"""Where the page's tests leave their screenshots (a person looks at them; CI keeps the folder)."""


def _overlap(a, b) -> bool:
    (ax, ay, aw, ah), (bx, by, bw, bh) = a, b
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


@pytest.mark.skipif(os.environ.get("SCA_SKIP_BROWSER") == "1", reason="SCA_SKIP_BROWSER=1")
def test_the_page_on_a_phone_with_touch_and_with_an_api_key(model):
    """400 x 800 with touch: no sideways scrolling, a box drawn by a finger, a point by a tap; on a server with an
    API key the page asks for it, keeps it for the tab, and works once it is given."""
    from playwright.sync_api import sync_playwright

    target = sample_record().regions[1]
    app = create_app(model, security=Security(api_key="s3cret"))
    with _running(app) as port, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            phone = browser.new_context(viewport={"width": 400, "height": 800}, has_touch=True, is_mobile=True,
                                        device_scale_factor=2)
            page = phone.new_page()
            page.goto(f"http://127.0.0.1:{port}")
            page.wait_for_function("document.getElementById('error').textContent.includes('API key')")
            assert page.locator("#key-box").is_visible()
            page.fill("#api-key", "s3cret")
            page.locator("#api-key").dispatch_event("change")
            page.wait_for_function("document.getElementById('canvas').dataset.imageWidth === '256'")
            assert page.evaluate("document.documentElement.scrollWidth") <= 400
            canvas = page.locator("#canvas").bounding_box()
            assert canvas["x"] >= 0 and canvas["x"] + canvas["width"] <= 400
            scale = canvas["width"] / 256
            x1, y1, x2, y2 = (canvas["x"] + target.box[0] * scale, canvas["y"] + target.box[1] * scale,
                              canvas["x"] + target.box[2] * scale, canvas["y"] + target.box[3] * scale)
            cdp = phone.new_cdp_session(page)
            for kind, at in (("touchStart", (x1, y1)), ("touchMove", ((x1 + x2) / 2, (y1 + y2) / 2)),
                             ("touchMove", (x2, y2)), ("touchEnd", None)):
                points = [] if at is None else [{"x": at[0], "y": at[1]}]
                cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})
            page.touchscreen.tap(canvas["x"] + 50 * scale, canvas["y"] + 110 * scale)  # the small circle
            page.tap("#run-prompt")
            page.wait_for_function("document.querySelectorAll('#captions li.caption').length === 2")
            first = page.locator("#captions li.caption").first.inner_text()
            assert target.captions[0] in first, first
            assert page.evaluate("sessionStorage.getItem('sca-api-key')") == "s3cret"
            assert page.evaluate("document.documentElement.scrollWidth") <= 400
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "page-phone.png"), full_page=True)
        finally:
            browser.close()


def test_one_request_of_many_prompt_kinds_is_one_job_answered_in_order(model):
    """33 regions of 33 kinds (a box or not, 1 to 16 points) on a server whose queue holds 32: one job, the regions
    back in the order sent, each as the same region alone, and the server's chunk size used; a mask prompt, which
    the shipped model was not trained with, is refused with one line before any work."""
    from sca.masks import encode_rle

    steps = []

    mask = np.zeros((256, 256), dtype=bool)
    mask[97:135, 35:73] = True
    regions = [{"box": [35, 97, 73, 135]}]
    for count in range(1, 17):
        points = [[40 + i, 100 + i] for i in range(count)]
        regions += [{"points": points}, {"box": [30, 90, 80, 140], "points": points}]
    with TestClient(create_app(_Watched(model, lambda prompts: steps.append(prompts.num_regions)), limits=Limits(queue_size=32),
                                chunk_size=1)) as client:
        sample = _sample(client)
        answer = client.post("/api/caption", json={"image": sample, "regions": regions})
        assert answer.status_code == 200, answer.text
        results = answer.json()["regions"]
        assert len(results) == len(regions) and max(steps) == 1
        assert [r["prompt"].get("box") for r in results] == [r.get("box") for r in regions]
        assert [len(r["prompt"].get("points", [])) for r in results] == [len(r.get("points", [])) for r in regions]
        refused = client.post("/api/caption", json={"image": sample, "regions": [{"mask": encode_rle(mask)}]})
        assert refused.status_code == 400 and "not masks" in refused.json()["error"]
        for index in (0, 1, 7):
            alone = client.post("/api/caption", json={"image": sample, "regions": [regions[index]]}).json()["regions"][0]
            assert alone["caption"] == results[index]["caption"]
            assert alone["iou_scores"] == pytest.approx(results[index]["iou_scores"], abs=1e-5)


# ---------------------------------------------------------------------- hostile clients (loopback only, bounded)


def test_dns_rebinding_is_refused_by_the_host_allowlist(model):
    from sca.app.server import default_hosts

    assert default_hosts("0.0.0.0") == ("*",) and "localhost" in default_hosts("127.0.0.1")
    security = Security(allowed_hosts=default_hosts("127.0.0.1", ("sca.lan",)))
    with TestClient(create_app(model, security=security), base_url="http://127.0.0.1:7860") as client:
        assert client.get("/api/health").status_code == 200
        for host in ("localhost:7860", "[::1]:7860", "sca.lan"):
            assert client.get("/api/health", headers={"Host": host}).status_code == 200, host
        evil = {"Host": "evil.example:7860", "Origin": "http://evil.example:7860"}
        for answer in (client.get("/api/health", headers=evil), client.post("/api/samples/sample.png", headers=evil)):
            assert answer.status_code == 421 and "--allow-host" in answer.json()["error"]


def test_json_bodies_are_counted_while_they_stream_and_refused_before_parsing(model):
    with TestClient(create_app(model, limits=Limits(max_json_bytes=10_000))) as client:
        flood = json.dumps({"image": "x" * 20, "regions": [{"box": [1, 1, 2, 2]}] * 5000}).encode()
        answer = client.post("/api/caption", content=flood, headers={"Content-Type": "application/json"})
        assert answer.status_code == 413 and "max_json_bytes" in answer.json()["error"]

        def pieces():  # no Content-Length: chunked, counted as it comes
            for start in range(0, len(flood), 4096):
                yield flood[start : start + 4096]

        answer = client.post("/api/caption", content=pieces(), headers={"Content-Type": "application/json"})
        assert answer.status_code == 413 and "x" * 20 not in answer.text
        long_id = client.post("/api/caption", json={"image": "y" * 5000, "regions": [{"box": [1, 1, 2, 2]}]})
        assert long_id.status_code == 422 and "y" * 100 not in long_id.text


def test_a_client_that_leaves_frees_the_worker_within_a_second(model):
    slow = _Watched(model, lambda prompts: time.sleep(0.2))
    app = create_app(slow, chunk_size=1)
    with _running(app) as port:
        import urllib.request

        registered = urllib.request.Request(f"http://127.0.0.1:{port}/api/samples/sample.png", method="POST")
        with urllib.request.urlopen(registered, timeout=30) as answer:
            image = json.loads(answer.read())["image"]
        body = json.dumps({"image": image, "regions": [{"box": [35, 97, 73, 135]}] * 40}).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(b"POST /api/caption HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                               + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            time.sleep(0.5)
        left = time.monotonic()
        while slow.steps and time.monotonic() - left < 5 and app.state.worker.waiting == 0:
            steps = slow.steps
            time.sleep(0.5)
            if slow.steps == steps:
                break
        assert slow.steps < 10, slow.steps  # 40 regions asked; the work stopped soon after the client left
        started = time.monotonic()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/caption", method="POST",
                                         data=json.dumps({"image": image, "regions": [{"box": [35, 97, 73, 135]}]}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200
        assert time.monotonic() - started < 3  # answered as if the abandoned request never came


def test_anything_and_video_jobs_stop_when_cancelled(model):
    from sca.app.worker import AnythingJob
    from sca.options import AnythingOptions

    worker = ModelWorker(model)
    try:
        picture = Image.open(SAMPLE_IMAGE).convert("RGB")
        job = AnythingJob(image_id="sample", picture=picture, options=AnythingOptions(points_per_side=8))
        job.cancelled.set()
        assert job.run(worker, [job]) == [None]
    finally:
        worker.stop()


def test_slow_clients_are_closed_and_health_answers_under_a_flood(model):
    limits = Limits(header_timeout=1.0, max_idle_connections=8, max_connections=64)
    with _running(create_app(model, limits=limits), limits) as port:
        slow = []
        for _ in range(40):  # more than max_connections' worth of idle slots would be, were they kept
            connection = socket.create_connection(("127.0.0.1", port), timeout=10)
            connection.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finished
            slow.append(connection)
        import urllib.request

        started = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=10) as answer:
            assert answer.status == 200
        assert time.monotonic() - started < 2
        time.sleep(1.5)
        closed = 0
        for connection in slow:
            connection.settimeout(2)
            try:
                closed += connection.recv(100) == b""
            except (ConnectionResetError, TimeoutError):
                closed += 1
            connection.close()
        assert closed == len(slow)


def test_the_video_route_finds_objects_in_anything_mode(model):
    from sca.assets import SAMPLE_CLIP

    with TestClient(create_app(model)) as client:
        video = client.post("/api/videos", content=SAMPLE_CLIP.read_bytes(),
                            headers={"Content-Type": "video/mp4"}).json()["video"]
        answer = client.post("/api/video", json={"video": video, "anything": {"every": 8, "points_per_side": 16}})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["objects"]) == 3
        both = client.post("/api/video", json={"video": video, "anything": {}, "regions": [{"box": [1, 1, 9, 9]}]})
        assert both.status_code == 422 and "one of the two" in both.json()["error"]
