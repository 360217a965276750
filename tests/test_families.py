"""Any segmenter × any captioner, on tiny local models of each family built with their real classes and processors:
SAM, SAM-HQ, SAM 2, SAM 3's tracker; crop captioners (BLIP), Florence-2, a chat VLM (LLaVA) with a focal prompt."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from sca.api import RegionCaptioner
from sca.cli import main
from sca.models import cpu_products
from sca.models.captioners import (
    FOCAL_PROMPTS,
    ChatCaptioner,
    CropCaptioner,
    Florence2Captioner,
    captioner_class,
    focal_prompt,
    location_tokens,
)
from sca.models.prompts import Prompts
from sca.models.sam_captioner import SamCaptioner
from sca.models.segmenters import Segmenter
from sca.options import AnythingOptions

from builders import CAPTIONERS, SEGMENTERS

BOXES = [[2, 3, 30, 40], [10, 10, 60, 45], [0, 0, 64, 48]]


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def built():
    """Every tiny model once (random weights, seeded)."""
    models = {}
    for name, build in {**SEGMENTERS, **CAPTIONERS}.items():
        torch.manual_seed(0)
        models[name] = build()
    return models


def _captioner(built, segmenter="sam", captioner="blip", candidates="all", **options):
    model, processor = built[captioner]
    describer = captioner_class(model, processor)(model, processor, max_new_tokens=3,
                                                  generate_options={"min_new_tokens": 3}, **options)
    return RegionCaptioner(SamCaptioner(built[segmenter], describer, chunk_size=2, candidates=candidates))


@pytest.mark.parametrize("segmenter", list(SEGMENTERS))
def test_every_segmenter_gives_three_candidates_with_iou_and_batches_like_one_at_a_time(built, image, segmenter):
    captioner = _captioner(built, segmenter)
    captioner.set_image(image)
    regions = captioner.caption(boxes=BOXES)
    assert len(regions) == 3
    for region in regions:
        assert len(region.candidates) == 3 and len(region.iou_scores) == 3
        assert region.masks.shape == (3, 48, 64)
    for box, together in zip(BOXES, regions):
        alone = captioner.caption(boxes=[box])[0]
        np.testing.assert_allclose(alone.iou_scores, together.iou_scores, atol=1e-5)
        assert (alone.masks != together.masks).mean() < 1e-3
        assert alone.candidates == together.candidates
    assert len(captioner.caption(points=[[20, 20]])[0].candidates) == 3
    found = captioner.anything(AnythingOptions(points_per_side=3, pred_iou_thresh=-1e9, stability_score_thresh=0.0))
    assert found and all(r.masks.shape == (1, 48, 64) for r in found)


@pytest.mark.parametrize("captioner", list(CAPTIONERS))
def test_every_captioner_family_with_sam(built, image, captioner):
    expected = {"blip": CropCaptioner, "florence2": Florence2Captioner, "llava": ChatCaptioner}[captioner]
    assert captioner_class(*built[captioner]) is expected  # chosen by the model's class, not by a name
    every = _captioner(built, "sam", captioner)
    every.set_image(image)
    regions = every.caption(boxes=BOXES[:2])
    assert all(len(r.candidates) == 3 and all(isinstance(c, str) for c in r.candidates) for r in regions)
    best = _captioner(built, "sam", captioner, candidates="best")
    best.set_image(image)
    regions = best.caption(boxes=BOXES[:2])
    assert all(len(r.candidates) == 1 and len(r.iou_scores) == 3 for r in regions)


def test_florence2_gets_the_box_as_location_tokens(built, image, monkeypatch):
    model, processor = built["florence2"]
    seen = []
    original = processor.__call__

    def spy(*args, **kwargs):
        seen.append(kwargs.get("text"))
        return original(*args, **kwargs)

    monkeypatch.setattr(type(processor), "__call__", lambda self, *a, **k: spy(*a, **k))
    mask = np.zeros((48, 64), bool)
    mask[12:24, 16:32] = True
    Florence2Captioner(model, processor, max_new_tokens=2).describe(image, [mask])
    assert seen[0] == ["<REGION_TO_DESCRIPTION>" + location_tokens([16, 12, 32, 24], (64, 48))]
    assert location_tokens([16, 12, 32, 24], (64, 48)) == "<loc_250><loc_250><loc_500><loc_500>"


def test_a_chat_vlm_receives_the_outlined_image_the_crop_and_the_focal_prompt(built, image, monkeypatch):
    model, processor = built["llava"]
    seen = {}
    original = type(processor).__call__

    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(processor), "__call__", spy)
    mask = np.zeros((48, 64), bool)
    mask[12:24, 16:32] = True
    ChatCaptioner(model, processor, max_new_tokens=2, detail="detailed").describe(image, [mask])
    (full, crop), = seen["images"]
    assert FOCAL_PROMPTS["detailed"] in seen["text"][0] and seen["text"][0].count("<image>") == 2
    outline = np.all(np.asarray(full) == (255, 0, 0), axis=-1)
    assert outline[12, 16:32].all() and not outline[30:, :].any()  # the region is outlined, nothing else
    assert full.size == image.size and crop.size == (32, 24)  # the box grown by half its side on each side
    assert np.all(np.asarray(focal_prompt(image, mask)[1]) == np.asarray(crop))


def test_the_command_line_infer_eval_and_a_sweep_of_segmenters_and_captioners(built, tmp_path, capsys):
    from sca.assets import SAMPLE_IMAGE

    folders = {}
    for name in ("sam", "sam2", "blip", "llava"):
        model = built[name][0] if isinstance(built[name], tuple) else built[name]
        model.save_pretrained(tmp_path / name)
        if isinstance(built[name], tuple):
            built[name][1].save_pretrained(tmp_path / name)
        folders[name] = str(tmp_path / name)
    assert main(["caption", str(SAMPLE_IMAGE), "--box", "35,97,73,135", "--sam", folders["sam2"], "--captioner",
                 folders["llava"], "--candidates", "best", "--detail", "detailed", "--json", "--max-new-tokens", "3"]) == 0
    region = json.loads(capsys.readouterr().out)["regions"][0]
    assert len(region["candidates"]) == 1 and len(region["iou_scores"]) == 3
    assert main(["caption", str(SAMPLE_IMAGE), "--box", "1,1,5,5", "--sam", folders["sam"], "--captioner",
                 folders["blip"], "--detail", "brief"]) == 2
    assert "takes no option 'detail'" in capsys.readouterr().err

    out = tmp_path / "sweep"
    assert main(["infer", "-m", "model=sam-captioner", f"model.sam={folders['sam']},{folders['sam2']}",
                 f"model.captioner={folders['blip']},{folders['llava']}", "model.candidates=best",
                 f"output_dir={out}", "data.eval.num_images=2", "infer.max_new_tokens=3"]) == 0
    files = sorted(out.glob("*/infer/infer-shapes-val.json"))
    assert len(files) == 4
    assert main(["eval", *map(str, files), "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert sorted(r["run"] for r in rows) == ["sam=sam,captioner=blip", "sam=sam,captioner=llava",
                                              "sam=sam2,captioner=blip", "sam=sam2,captioner=llava"]


def test_segmenter_frames_map_prompts_and_masks_back(built):
    stretch = Segmenter(built["sam2"]).frame
    picture = Image.new("RGB", (200, 100))
    framed = stretch.frame(picture)
    assert framed.pixel_values.shape == (3, 128, 128) and framed.input_size == (128, 128)
    assert framed.scale(torch.tensor([[200.0, 100.0]])).tolist() == [[128.0, 128.0]]
    masks = stretch.masks_to_original(torch.ones(1, 1, 32, 32), framed)
    assert masks.shape == (1, 1, 100, 200) and masks.all()
    segmenter = Segmenter(built["sam2"])
    embeddings = segmenter.image_embeddings(framed.pixel_values[None])
    scores, logits = segmenter.segment(embeddings, Prompts(masks=torch.zeros(1, 2, 32, 32)))  # one region at a time
    assert scores.shape == (1, 2, 3) and logits.shape == (1, 2, 3, 32, 32)


@pytest.mark.skipif(not cpu_products.available(), reason="this PyTorch build has no oneDNN")
def test_sam_captioner_runs_its_linear_layers_on_onednn_with_the_same_results(built, image, monkeypatch):
    captioner = _captioner(built, "sam", "blip")
    captioner.set_image(image)
    calls, linear = [], cpu_products.linear
    monkeypatch.setattr(cpu_products, "linear", lambda *args: calls.append(1) or linear(*args))
    onednn = captioner.caption(boxes=BOXES)
    assert calls  # the segmenter's and the captioner's layers
    monkeypatch.setattr(cpu_products, "available", lambda: False)
    calls.clear()
    captioner.set_image(image)
    plain = captioner.caption(boxes=BOXES)
    assert not calls
    assert [r.candidates for r in onednn] == [r.candidates for r in plain]
    np.testing.assert_allclose([r.iou_scores for r in onednn], [r.iou_scores for r in plain], atol=1e-5)
