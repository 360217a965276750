"""The web demo: its endpoints, bad uploads, and an end-to-end run in headless Chromium (Playwright)."""

import io
import json
import os
import shutil
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from sca.api import RegionCaptioner
from sca.app.server import serve
from sca.assets import DEFAULT_MODEL
from sca.assets.build import sample_record

CHROMIUM = os.environ.get("SCA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server():
    demo = serve(RegionCaptioner.from_pretrained(DEFAULT_MODEL), port=0)
    thread = threading.Thread(target=demo.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{demo.server_address[1]}"
    demo.shutdown()
    demo.server_close()


def _post(url, body: bytes, content_type="application/json"):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_caption_endpoint_answers_with_captions_and_an_overlay(server):
    status, registered = _post(f"{server}/api/sample", json.dumps({"name": "sample.png"}).encode())
    assert status == 200 and registered["width"] == 256
    record = sample_record()
    status, result = _post(f"{server}/api/caption", json.dumps(
        {"image": registered["image"], "boxes": [list(r.box) for r in record.regions]}).encode())
    assert status == 200
    assert [r["caption"] for r in result["regions"]] == [r.captions[0] for r in record.regions]
    assert result["overlay"].startswith("data:image/png;base64,")


@pytest.mark.parametrize("body, status, message", [
    (b"this is not an image", 400, "not an image"),
    (b"", 400, "empty"),
])
def test_bad_uploads_get_a_message(server, body, status, message):
    code, answer = _post(f"{server}/api/image", body, "application/octet-stream")
    assert code == status and message in answer["error"]


def test_huge_images_are_refused_with_a_message(server):
    buffer = io.BytesIO()
    Image.new("RGB", (6000, 5000)).save(buffer, format="PNG")  # 30 megapixels, a small file
    code, answer = _post(f"{server}/api/image", buffer.getvalue(), "application/octet-stream")
    assert code == 413 and "megapixels" in answer["error"]


def test_prompts_and_images_are_checked(server):
    code, answer = _post(f"{server}/api/caption", json.dumps({"image": "nope", "boxes": [[0, 0, 5, 5]]}).encode())
    assert code == 400 and "upload it again" in answer["error"]
    _, registered = _post(f"{server}/api/sample", json.dumps({"name": "sample.png"}).encode())
    code, answer = _post(f"{server}/api/caption", json.dumps({"image": registered["image"], "boxes": []}).encode())
    assert code == 400 and "no prompt" in answer["error"]
    code, answer = _post(f"{server}/api/caption", json.dumps({"image": registered["image"],
                                                              "boxes": [[0, 0, 900, 5]]}).encode())
    assert code == 400 and "outside" in answer["error"]


@pytest.mark.skipif(os.environ.get("SCA_SKIP_BROWSER") == "1", reason="SCA_SKIP_BROWSER=1")
def test_in_a_real_browser(server, tmp_path):
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM) or os.path.exists(CHROMIUM), f"{CHROMIUM} missing: `make test` installs chromium"
    record = sample_record()
    target = record.regions[1]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(server)
            page.click("#use-sample")
            page.wait_for_function("document.getElementById('canvas').width === 256")
            canvas = page.locator("#canvas").bounding_box()
            scale = canvas["width"] / 256
            x1, y1, x2, y2 = target.box
            page.mouse.move(canvas["x"] + x1 * scale, canvas["y"] + y1 * scale)
            page.mouse.down()
            page.mouse.move(canvas["x"] + x2 * scale, canvas["y"] + y2 * scale, steps=5)
            page.mouse.up()
            page.click("#run-prompt")
            page.wait_for_selector("#captions li.caption")
            caption = page.locator("#captions li.caption").first.inner_text()
            assert caption.startswith(target.captions[0])
            shot = tmp_path / "overlay.png"
            page.locator("#overlay").screenshot(path=str(shot))

            page.set_input_files("#upload", files=[{"name": "notes.txt", "mimeType": "text/plain",
                                                    "buffer": b"not an image"}])
            page.wait_for_function("document.getElementById('error').textContent.length > 0")
            assert "not an image" in page.locator("#error").inner_text()
        finally:
            browser.close()
    # The screenshot shows the overlay: the mask colour over the shape, the image elsewhere.
    with Image.open(shot) as picture:
        shown = np.asarray(picture.convert("RGB").resize((256, 256)), dtype=int)
    original = np.asarray(record.image.convert("RGB"), dtype=int)
    from sca.masks import decode_mask

    inside = decode_mask(target.mask, 256, 256)
    changed = np.abs(shown - original).sum(-1) > 40
    assert changed[inside].mean() > 0.5
    assert changed[~inside].mean() < 0.3
