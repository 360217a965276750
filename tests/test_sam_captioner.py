"""The SAM-Captioner baseline with each captioner family, on tiny local models."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from sca.api import RegionCaptioner
from sca.geometry import mask_box
from sca.models.captioners import OUTLINE, focal_prompt, outline
from sca.models.sam_captioner import CropCaptioner, SamCaptioner, crop_box

from builders import FAMILIES, build_tiny_captioner, tiny_sam


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def sam():
    torch.manual_seed(0)
    return tiny_sam()


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_gives_one_caption_per_mask_with_iou_scores(family, sam, image):
    torch.manual_seed(0)
    model, processor = build_tiny_captioner(family)
    prompt = "describe the region" if family == "instructblip" else None
    captioner = RegionCaptioner(SamCaptioner(sam, CropCaptioner(model, processor, prompt=prompt, max_new_tokens=4),
                                             chunk_size=2))
    captioner.set_image(image)
    regions = captioner.caption(boxes=[[2, 3, 30, 40], [10, 10, 60, 45], [0, 0, 64, 48]])
    assert len(regions) == 3
    for region in regions:
        assert len(region.candidates) == 3 and len(region.iou_scores) == 3
        assert region.masks.shape == (3, 48, 64)
        assert region.caption == region.candidates[region.best_index]
        assert all(isinstance(c, str) for c in region.candidates)
    points = captioner.caption(points=[[20, 20]])
    assert len(points[0].candidates) == 3


@pytest.mark.parametrize("family", ["blip-2", "instructblip"])
def test_chain_of_thought_asks_then_describes(family, image):
    torch.manual_seed(0)
    model, processor = build_tiny_captioner(family)
    asked = []
    captioner = CropCaptioner(model, processor, chain_of_thought=True, max_new_tokens=3)
    original = captioner._generate

    def spy(crops, prompt):
        asked.append(prompt)
        return original(crops, prompt)

    captioner._generate = spy
    out = captioner([image, image.crop((0, 0, 20, 20))])
    assert len(out) == 2 and asked[0].startswith("Question: What is this?")
    assert all(p.startswith("Question: Describe the") for p in asked[1])


def test_batched_crops_equal_one_at_a_time(image):
    torch.manual_seed(0)
    model, processor = build_tiny_captioner("git")
    crops = [image, image.crop((0, 0, 20, 30)), image.crop((10, 5, 60, 40))]
    batched = CropCaptioner(model, processor, max_new_tokens=4, batch_size=2)
    assert batched(crops) == [batched([c])[0] for c in crops]


def test_crop_box_cuts_the_mask_box(image):
    mask = np.zeros((48, 64), bool)
    mask[5:15, 10:30] = True
    assert crop_box(image, mask).size == (20, 10)
    assert crop_box(image, np.zeros((48, 64), bool)).size == image.size


def test_sweep_over_captioners_writes_one_file_each_and_evaluates(tmp_path, sam, capsys):
    import json

    from sca.cli import main

    sam.save_pretrained(tmp_path / "sam")
    captioners = []
    for family in ("blip", "git"):
        torch.manual_seed(0)
        model, processor = build_tiny_captioner(family)
        model.save_pretrained(tmp_path / family)
        processor.save_pretrained(tmp_path / family)
        captioners.append(str(tmp_path / family))
    out = tmp_path / "sweep"
    code = main(["infer", "-m", "model=sam-captioner", f"model.sam={tmp_path / 'sam'}",
                 f"model.captioner={','.join(captioners)}", f"output_dir={out}", "data.eval.num_images=3",
                 "infer.max_new_tokens=3"])
    assert code == 0
    files = sorted(out.glob("*/infer/infer-shapes-val.json"))
    assert len(files) == 2 and {f.parts[-3] for f in files} == {"captioner=blip", "captioner=git"}
    entries = json.loads(files[0].read_text())
    assert all(len(e["candidates"]) == 3 and len(e["logits"]["iou_scores"]) == 3 for e in entries)
    capsys.readouterr()
    assert main(["eval", *map(str, files), "--out", str(out)]) == 0
    table = (out / "metrics.csv").read_text().splitlines()
    assert len(table) == 3 and "CIDEr-D" in table[0]


def test_caption_command_runs_the_baseline(tmp_path, sam, capsys):
    import json

    from sca.assets import SAMPLE_IMAGE
    from sca.cli import main

    sam.save_pretrained(tmp_path / "sam")
    torch.manual_seed(0)
    model, processor = build_tiny_captioner("blip")
    model.save_pretrained(tmp_path / "blip")
    processor.save_pretrained(tmp_path / "blip")
    code = main(["caption", str(SAMPLE_IMAGE), "--box", "35,97,73,135", "--captioner", str(tmp_path / "blip"),
                 "--sam", str(tmp_path / "sam"), "--json", "--max-new-tokens", "3"])
    assert code == 0
    region = json.loads(capsys.readouterr().out)["regions"][0]
    assert len(region["candidates"]) == 3 and len(region["iou_scores"]) == 3
    assert main(["caption", str(SAMPLE_IMAGE), "--box", "1,1,5,5", "--captioner", str(tmp_path / "nothing"),
                 "--sam", str(tmp_path / "sam")]) == 2


def test_anything_mode_with_the_baseline(sam, image):
    from sca.options import AnythingOptions

    torch.manual_seed(0)
    model, processor = build_tiny_captioner("git")
    captioner = RegionCaptioner(SamCaptioner(sam, CropCaptioner(model, processor, max_new_tokens=3)))
    captioner.set_image(image)
    regions = captioner.anything(AnythingOptions(points_per_side=3, pred_iou_thresh=-1e9, stability_score_thresh=0.0))
    assert regions and all(r.masks.shape == (1, 48, 64) and isinstance(r.caption, str) for r in regions)


def test_full_size_masks_and_box_crops_are_made_when_read(monkeypatch):
    """SAM-Captioner hands a captioner its chunk's masks and crops as sequences made when read, a batch at a time:
    a chunk of a 25-megapixel photo's whole-picture crops held at once was 8 GB."""
    import numpy as np
    import torch
    from PIL import Image

    import sca.models.captioners as captioners
    from sca.data.sam_frame import FramedImage, FullSizeMasks, SamFrame

    frame = SamFrame(image_size=64, embedding_size=8)
    framed = FramedImage(torch.zeros(3, 64, 64), (90, 50), (64, 36))
    logits = torch.randn(5, 32, 32, generator=torch.Generator().manual_seed(3))
    masks = FullSizeMasks(frame, logits, framed)
    expected = frame.masks_to_original(logits[:, None], framed)[:, 0].numpy()
    assert len(masks) == 5 and len(masks[1:4]) == 3
    assert all(np.array_equal(mask, want) for mask, want in zip(masks, expected, strict=True))
    assert np.array_equal(masks[-1], expected[-1]) and np.array_equal(masks[2:][0], expected[2])

    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 50, 3), dtype=np.uint8))
    made = []
    monkeypatch.setattr(captioners, "crop_box", lambda image, mask: made.append(1) or image.crop((0, 0, 5, 5)))
    crops = captioners.BoxCrops(picture, masks)
    assert len(crops) == 5 and not made
    assert [c.size for c in list(crops[:2])] == [(5, 5)] * 2 and len(made) == 2


@settings(max_examples=40, deadline=None)
@given(height=st.integers(1, 70), width=st.integers(1, 70), seed=st.integers(0, 2**31 - 1), empty=st.booleans())
def test_the_focal_prompt_outline_drawn_near_the_mask_is_the_whole_image_outline(height, width, seed, empty):
    """The chat VLM's outlined picture is drawn within the mask's box grown by the outline's width: the same pixels
    as the outline of the whole image (a large photo's 33-pixel outline no longer runs over 25 megapixels)."""
    rng = np.random.default_rng(seed)
    picture = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    mask = np.zeros((height, width), bool)
    if not empty:
        y1, x1 = rng.integers(0, height), rng.integers(0, width)
        mask[y1 : rng.integers(y1, height + 1), x1 : rng.integers(x1, width + 1)] = True
        mask &= rng.random((height, width)) < 0.7
    outlined, crop = focal_prompt(picture, mask)
    expected = np.array(picture)
    expected[outline(mask, max(2, round(min(picture.size) / 150)))] = OUTLINE
    assert np.array_equal(np.asarray(outlined), expected)
    box = mask_box(mask)
    assert crop.size[0] >= 1 and crop.size[1] >= 1
    if box is None:
        assert crop.size == picture.size
