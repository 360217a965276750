"""Anything mode: the grid, stability score and NMS in plain torch, one encoder run per image, captions for survivors."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sca.api import InputError, RegionCaptioner
from sca.cli import main
from sca.geometry import box_iou, masks_to_boxes, nms, point_grid, remove_small_regions, stability_score
from sca.models.prompts import Prompts
from sca.models.sca_region import ScaRegionModel
from sca.options import AnythingOptions, GenerationOptions


def test_point_grid_covers_cell_centres():
    grid = point_grid(2, width=100, height=50)
    assert grid.tolist() == [[25, 12.5], [75, 12.5], [25, 37.5], [75, 37.5]]


def test_stability_score_by_hand():
    logits = torch.tensor([[[3.0, 0.5, -0.5, -3.0]]])  # > +1: 1 pixel; > -1: 3 pixels
    assert stability_score(logits, 0.0, 1.0).item() == pytest.approx(1 / 3)


def test_mask_nms_drops_a_copy_whose_box_has_a_tail():
    """Two masks of one square, one with a one-pixel tail across the image: their boxes differ (box NMS keeps both),
    their masks do not."""
    from sca.geometry import mask_nms

    masks = torch.zeros(3, 20, 20, dtype=torch.bool)
    masks[0, 2:8, 2:8] = True
    masks[1] = masks[0]
    masks[1, 7, 8:20] = True  # the tail
    masks[2, 12:18, 12:18] = True
    scores = torch.tensor([0.8, 0.9, 0.7])
    assert nms(masks_to_boxes(masks).float(), scores, 0.7).tolist() == [1, 0, 2]
    assert mask_nms(masks, scores, 0.7).tolist() == [1, 2]
    assert mask_nms(masks, scores, 1.0).tolist() == [1, 0, 2]


def test_masks_to_boxes_and_nms():
    masks = torch.zeros(3, 10, 10, dtype=torch.bool)
    masks[0, 2:5, 3:8] = True
    masks[1, 2:5, 3:7] = True
    assert masks_to_boxes(masks).tolist() == [[3, 2, 8, 5], [3, 2, 7, 5], [0, 0, 0, 0]]
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 9, 10.0]])
    scores = torch.tensor([0.5, 0.9, 0.8, 0.1])
    assert box_iou(boxes[:1], boxes[1:2]).item() == pytest.approx(81 / 100)
    assert nms(boxes, scores, 0.7).tolist() == [1, 2]  # 0 and 3 overlap box 1 at > 0.7
    assert nms(boxes, scores, 0.95).tolist() == [1, 2, 0, 3]


def test_anything_runs_the_encoder_once_and_captions_only_survivors(tiny_model, bpe_tokenizer):
    captioner = RegionCaptioner(ScaRegionModel(tiny_model, bpe_tokenizer, GenerationOptions(max_new_tokens=4)))
    image = torch.randint(0, 255, (96, 128, 3), dtype=torch.uint8).numpy()
    encoder_calls, prompts_captioned = [], []
    hook = tiny_model.vision_encoder.register_forward_hook(lambda *_: encoder_calls.append(1))
    original_generate = tiny_model.generate

    def counting_generate(*args, **kwargs):
        prompts_captioned.append(kwargs["input_points"].shape[1])
        return original_generate(*args, **kwargs)

    tiny_model.generate = counting_generate
    try:
        captioner.set_image(image)
        options = AnythingOptions(points_per_side=8, points_per_batch=10, pred_iou_thresh=-1e9,
                                  stability_score_thresh=0.0, box_nms_thresh=0.5)
        regions = captioner.anything(options)
    finally:
        hook.remove()
        del tiny_model.generate
    assert len(encoder_calls) == 1  # 64 points in 7 batches, one image encoding
    assert 0 < len(regions) < 64 * 3
    assert sum(prompts_captioned) == len(regions)  # only the masks that survived were captioned
    boxes = torch.tensor([r.box for r in regions])
    overlaps = box_iou(boxes, boxes).fill_diagonal_(0)
    assert overlaps.max() <= 0.5 + 1e-6
    scores = [r.best_iou for r in regions]
    assert scores == sorted(scores, reverse=True)
    assert all(r.masks.shape == (1, 96, 128) for r in regions)


def test_max_masks_keeps_the_best(tiny_model, bpe_tokenizer):
    captioner = RegionCaptioner(ScaRegionModel(tiny_model, bpe_tokenizer, GenerationOptions(max_new_tokens=3)))
    captioner.set_image(torch.randint(0, 255, (64, 64, 3), dtype=torch.uint8).numpy())
    options = AnythingOptions(points_per_side=3, pred_iou_thresh=-1e9, stability_score_thresh=0.0, box_nms_thresh=1.0)
    every = captioner.anything(options)
    assert len(every) > 2
    options.max_masks = 2
    best = captioner.anything(options)
    assert [r.best_iou for r in best] == [r.best_iou for r in every[:2]]
    options.max_masks = 0
    with pytest.raises(InputError, match="max_masks"):
        captioner.anything(options)


@pytest.mark.parametrize("min_region_area", [0, 20])
def test_max_masks_counts_the_masks_that_survive_post_processing(tiny_model, bpe_tokenizer, min_region_area):
    """Mask NMS and small-region removal drop masks after box NMS: the best `max_masks` of what survives them are
    returned, as many as asked for while enough survive."""
    captioner = RegionCaptioner(ScaRegionModel(tiny_model, bpe_tokenizer, GenerationOptions(max_new_tokens=2)))
    captioner.set_image(torch.randint(0, 255, (64, 64, 3), dtype=torch.uint8).numpy())
    options = AnythingOptions(points_per_side=4, pred_iou_thresh=-1e9, stability_score_thresh=0.0, box_nms_thresh=1.0,
                              mask_nms_thresh=0.7, min_region_area=min_region_area)
    every = captioner.anything(options)
    assert 3 < len(every) < options.points_per_side**2 * 3  # mask NMS dropped some of the grid's masks
    for count in (1, 3, len(every), len(every) + 5):
        options.max_masks = count
        best = captioner.anything(options)
        assert [(r.prompt, r.best_iou) for r in best] == [(r.prompt, r.best_iou) for r in every[:count]]


def test_masks_that_vanish_at_the_image_size_are_dropped(tiny_model, bpe_tokenizer):
    """A low-res speck passes the filters but is empty once resized to a small image: it is no region."""
    model = ScaRegionModel(tiny_model, bpe_tokenizer, GenerationOptions(max_new_tokens=2))
    captioner = RegionCaptioner(model)
    captioner.set_image(torch.zeros(16, 16, 3, dtype=torch.uint8).numpy())
    size = model.frame.mask_size

    def segment(encoded, prompts, min_iou=None):
        regions = prompts.points.shape[1]
        logits = torch.full((1, regions, 2, size, size), -20.0)
        logits[:, :, 0, 0, 0] = 20.0  # one low-res pixel in a corner: no image pixel samples it
        logits[:, :, 1, : size // 2, : size // 2] = 20.0  # a quarter of the image
        return torch.tensor([0.99, 0.9]).expand(1, regions, 2), logits

    model.segment = segment
    regions = captioner.anything(AnythingOptions(points_per_side=1, pred_iou_thresh=0.5, stability_score_thresh=0.9,
                                                 min_region_area=0))
    assert [r.best_iou for r in regions] == [pytest.approx(0.9)]
    assert regions[0].best_mask.sum() > 0


def test_small_regions_by_hand():
    mask = np.zeros((12, 12), bool)
    mask[1:7, 1:7] = True  # 36 pixels, with a 1-pixel hole
    mask[3, 3] = False
    mask[10, 10] = True  # a 1-pixel island
    cleaned = remove_small_regions(mask, min_area=4)
    assert cleaned[3, 3] and not cleaned[10, 10] and cleaned[1:7, 1:7].all() and cleaned.sum() == 36
    assert np.array_equal(remove_small_regions(mask, min_area=1), mask)
    for bad in (-1, 2.5, True):
        with pytest.raises(InputError, match="min_region_area"):
            AnythingOptions(min_region_area=bad).check()


def _small_regions_removed_over_the_whole_image(mask: np.ndarray, min_area: int) -> np.ndarray:
    from scipy import ndimage

    cleaned = mask.copy()
    for fill, region in ((False, cleaned), (True, ~cleaned)):
        labels, count = ndimage.label(region)
        if count == 0:
            continue
        small = np.bincount(labels.ravel(), minlength=count + 1) < min_area
        small[0] = False
        cleaned[small[labels]] = fill
    return cleaned


@settings(max_examples=300, deadline=None)
@given(height=st.integers(1, 40), width=st.integers(1, 40), seed=st.integers(0, 2**31 - 1),
       density=st.floats(0, 1), min_area=st.integers(0, 60), layout=st.sampled_from(["box", "noise", "band"]))
def test_small_regions_removed_within_the_box_are_those_of_the_whole_image(height, width, seed, density, min_area,
                                                                           layout):
    """Within the mask's box, with the background outside it carried by a ring of padding: the whole image's
    answer, for masks touching any border, spanning the image's width or height, strips of background outside."""
    rng = np.random.default_rng(seed)
    mask = rng.random((height, width)) < density
    if layout == "box":
        y1, x1 = rng.integers(0, height), rng.integers(0, width)
        y2, x2 = rng.integers(y1, height + 1), rng.integers(x1, width + 1)
        mask[:y1], mask[y2:], mask[:, :x1], mask[:, x2:] = False, False, False, False
    elif layout == "band":  # across the whole width or height, leaving thin strips of background
        band = np.zeros_like(mask)
        if rng.random() < 0.5:
            band[rng.integers(0, 3) : height - rng.integers(0, 3)] = True
        else:
            band[:, rng.integers(0, 3) : width - rng.integers(0, 3)] = True
        mask &= band
    assert np.array_equal(remove_small_regions(mask, min_area), _small_regions_removed_over_the_whole_image(mask, min_area))


@pytest.mark.parametrize("min_region_area", [0, 100])
def test_a_copy_whose_speck_stretches_its_box_is_dropped(tiny_model, bpe_tokenizer, min_region_area):
    """SAM's small-region removal: without it a copy of a mask with a far speck passes box NMS."""
    model = ScaRegionModel(tiny_model, bpe_tokenizer, GenerationOptions(max_new_tokens=2))
    captioner = RegionCaptioner(model)
    captioner.set_image(np.zeros(model.frame.image_size * np.array([1, 1, 0]) + [0, 0, 3], dtype=np.uint8))
    size = model.frame.mask_size

    def segment(encoded, prompts, min_iou=None):
        regions = prompts.points.shape[1]
        logits = torch.full((1, regions, 1, size, size), -20.0)
        logits[:, :, 0, size // 4 : size // 2, size // 4 : size // 2] = 20.0
        logits[:, 1::2, 0, -1, -1] = 20.0  # every other point: the same square and a one-pixel speck far off
        scores = torch.tensor([0.95, 0.99]).repeat(regions)[:regions]
        return scores[None, :, None], logits

    model.segment = segment
    options = AnythingOptions(points_per_side=2, pred_iou_thresh=0.5, stability_score_thresh=0.9,
                              min_region_area=min_region_area)
    regions = captioner.anything(options)
    if min_region_area:
        assert len(regions) == 1 and regions[0].best_iou == pytest.approx(0.99)
        assert not regions[0].best_mask[-4:, -4:].any()  # the kept copy is cleaned too
    else:
        assert len(regions) == 2


@pytest.mark.parametrize("min_region_area, kept", [(None, 1), (25, 2)])
def test_by_default_a_speck_is_judged_at_the_masks_resolution(tiny_model, bpe_tokenizer, min_region_area, kept):
    """In a photo 8x the model's frame a speck of one low-res mask pixel upsamples to ~(8 x frame / mask side)²
    pixels: a fixed 25 keeps it (and the copy it stretches past NMS), the default scales with the image and removes
    it."""
    model = ScaRegionModel(tiny_model, bpe_tokenizer, GenerationOptions(max_new_tokens=2))
    captioner = RegionCaptioner(model)
    side = 8 * model.frame.image_size
    captioner.set_image(np.zeros((side, side, 3), dtype=np.uint8))
    size = model.frame.mask_size
    speck_pixels = (side / size) ** 2
    assert speck_pixels > 25  # the fixed threshold cannot see it

    def segment(encoded, prompts, min_iou=None):
        regions = prompts.points.shape[1]
        logits = torch.full((1, regions, 1, size, size), -20.0)
        logits[:, :, 0, size // 4 : size // 2, size // 4 : size // 2] = 20.0
        logits[:, 1::2, 0, -2, -2] = 20.0
        return torch.tensor([0.95, 0.99]).repeat(regions)[:regions][None, :, None], logits

    model.segment = segment
    options = AnythingOptions(points_per_side=2, pred_iou_thresh=0.5, stability_score_thresh=0.9,
                              min_region_area=min_region_area)
    assert len(captioner.anything(options)) == kept


def test_full_size_masks_in_bounded_pieces_change_nothing(tiny_model, bpe_tokenizer, monkeypatch):
    """Candidates are upsampled to the image's size a byte budget at a time (one a time for a 25-megapixel photo):
    a budget of one mask gives what the default gives."""
    import sca.data.sam_frame

    captioner = RegionCaptioner(ScaRegionModel(tiny_model, bpe_tokenizer, GenerationOptions(max_new_tokens=2)))
    captioner.set_image(np.random.default_rng(1).integers(0, 255, (70, 110, 3), dtype=np.uint8))
    options = AnythingOptions(points_per_side=4, pred_iou_thresh=-1e9, stability_score_thresh=0.0)
    default = [r.to_dict() for r in captioner.anything(options)]
    monkeypatch.setattr(sca.data.sam_frame, "FULL_SIZE_BYTES", 1)
    assert [r.to_dict() for r in captioner.anything(options)] == default and default


def test_strict_thresholds_keep_nothing(tiny_model, bpe_tokenizer):
    captioner = RegionCaptioner(ScaRegionModel(tiny_model, bpe_tokenizer))
    captioner.set_image(torch.zeros(32, 32, 3, dtype=torch.uint8).numpy())
    assert captioner.anything(AnythingOptions(points_per_side=4, pred_iou_thresh=1e9)) == []


def test_cli_anything_json_and_picture(tiny_model_dir, tmp_path, capsys):
    from sca.assets import SAMPLE_IMAGE

    out = tmp_path / "anything.png"
    code = main(["anything", str(SAMPLE_IMAGE), "--model", str(tiny_model_dir), "--points-per-side", "4",
                 "--pred-iou-thresh", "-1000", "--stability-thresh", "0", "--json", "--out", str(out),
                 "--max-new-tokens", "3"])
    assert code == 0 and out.is_file()
    regions = json.loads(capsys.readouterr().out)["regions"]
    assert regions and {"caption", "mask", "box", "best_iou"} <= regions[0].keys()
    assert main(["anything", str(SAMPLE_IMAGE), "--model", str(tiny_model_dir), "--points-per-side", "0"]) == 2
    capsys.readouterr()


def test_cli_anything_max_masks(tiny_model_dir, capsys):
    from sca.assets import SAMPLE_IMAGE

    args = ["anything", str(SAMPLE_IMAGE), "--model", str(tiny_model_dir), "--points-per-side", "3",
            "--pred-iou-thresh", "-1000", "--stability-thresh", "0", "--nms-thresh", "1", "--json",
            "--max-new-tokens", "2"]
    assert main(args + ["--max-masks", "2"]) == 0
    assert len(json.loads(capsys.readouterr().out)["regions"]) == 2
    assert main(args + ["--max-masks", "0"]) == 2
    error = capsys.readouterr().err.strip()
    assert "max_masks" in error and len(error.splitlines()) == 1


def test_anything_dataset_inference_is_scored_with_dense_map(tiny_model_dir, tmp_path, capsys):
    code = main(["infer", f"model.path={tiny_model_dir}", f"output_dir={tmp_path}", "infer.mode=anything",
                 "data.eval.num_images=3", "infer.anything.points_per_side=4", "infer.anything.pred_iou_thresh=-1000",
                 "infer.anything.stability_score_thresh=0", "infer.max_new_tokens=3"])
    assert code == 0
    path = tmp_path / "infer" / "infer-shapes-anything-val.json"
    entries = json.loads(path.read_text())
    assert len(entries) == 3 and all(e["predictions"] and e["references"] for e in entries)
    assert {"box", "caption", "score", "mask"} <= entries[0]["predictions"][0].keys()
    capsys.readouterr()
    assert main(["eval", str(path)]) == 0
    metrics = json.loads((tmp_path / "infer" / "metrics" / path.stem / "metrics.json").read_text())
    assert metrics["kind"] == "dense" and 0 <= metrics["mAP"] <= 1 and metrics["images"] == 3


def test_masks_are_upscaled_only_where_a_candidate_passes_the_iou_filter(tiny_model, bpe_tokenizer):
    """SAM's IoU head reads tokens, not masks: with `min_iou` the regions none of whose candidates scores above it
    skip the upscaling (-inf logits), and the others' masks are the very same."""
    model = ScaRegionModel(tiny_model, bpe_tokenizer, GenerationOptions(max_new_tokens=2))
    encoded = model.encode([torch.randint(0, 255, (64, 80, 3), dtype=torch.uint8).numpy()])
    prompts = Prompts(points=torch.rand(1, 12, 1, 2) * model.frame.image_size)
    scores, every_mask = model.segment(encoded, prompts)
    floor = scores.amax(-1).median().item()
    floored_scores, masks = model.segment(encoded, prompts, min_iou=floor)
    wanted = scores.amax(-1) > floor
    assert 0 < wanted.sum() < prompts.num_regions
    assert torch.equal(floored_scores, scores)
    assert torch.equal(masks[wanted], every_mask[wanted])
    assert torch.isneginf(masks[~wanted]).all()


def test_the_iou_filter_before_the_upscaling_changes_nothing_in_anything_mode(tiny_model, bpe_tokenizer, monkeypatch):
    import sca.models.mask_caption_decoder as decoder

    upscaled, upscale = [], decoder.upscaled_masks
    monkeypatch.setattr(decoder, "upscaled_masks",
                        lambda d, image, hyper: upscaled.append(len(image)) or upscale(d, image, hyper))
    model = ScaRegionModel(tiny_model, bpe_tokenizer, GenerationOptions(max_new_tokens=2))
    captioner = RegionCaptioner(model)
    image = torch.randint(0, 255, (72, 96, 3), dtype=torch.uint8).numpy()
    captioner.set_image(image)
    scores, _ = model.segment(model.encode([image]), Prompts(points=torch.rand(1, 64, 1, 2) * model.frame.image_size))
    options = AnythingOptions(points_per_side=6, pred_iou_thresh=scores.quantile(0.7).item(), stability_score_thresh=0.0,
                              box_nms_thresh=0.9, min_region_area=0)
    upscaled.clear()
    filtered = captioner.anything(options)
    filtered_upscaled, upscaled[:] = sum(upscaled), []
    segment = model.segment
    model.segment = lambda encoded, prompts, min_iou=None: segment(encoded, prompts)  # every mask made
    every = captioner.anything(options)
    assert len(filtered) > 0
    assert filtered_upscaled < sum(upscaled)
    assert [r.to_dict() for r in filtered] == [r.to_dict() for r in every]


def test_sca_describes_the_survivors_without_making_their_masks_again(tiny_model, bpe_tokenizer, monkeypatch):
    import sca.models.mask_caption_decoder as decoder

    model = ScaRegionModel(tiny_model, bpe_tokenizer, GenerationOptions(max_new_tokens=3))
    encoded = model.encode([torch.randint(0, 255, (64, 80, 3), dtype=torch.uint8).numpy()])
    prompts = Prompts(points=torch.rand(1, 5, 1, 2) * model.frame.image_size)
    captions = [[texts[0] for texts in image] for image in model.caption(encoded, prompts).candidates]
    upscaled, upscale = [], decoder.upscaled_masks
    monkeypatch.setattr(decoder, "upscaled_masks",
                        lambda d, image, hyper: upscaled.append(len(image)) or upscale(d, image, hyper))
    assert model.describe(encoded, prompts, torch.zeros(1, 5, 8, 8)) == captions
    assert upscaled == []


def test_filters_are_the_models_unless_given():
    """A filter left None is the model's declared value, else SAM's; one given is kept; an unknown name is refused."""
    sam = AnythingOptions().for_model({})
    assert (sam.pred_iou_thresh, sam.stability_score_thresh) == (0.88, 0.95)
    declared = AnythingOptions(stability_score_thresh=0.5).for_model({"pred_iou_thresh": 0.7,
                                                                      "stability_score_thresh": 0.8})
    assert (declared.pred_iou_thresh, declared.stability_score_thresh) == (0.7, 0.5)
    with pytest.raises(InputError, match="'box_nms_thresh' is none of them"):
        AnythingOptions().for_model({"box_nms_thresh": 0.5})


def test_a_model_declares_its_filters_in_its_config(tiny_model_dir, tmp_path, capsys):
    """`anything_filters` in config.json become every door's defaults (here, filters nothing passes: no region);
    a bad declaration is named when the model loads."""
    import shutil

    folder = tmp_path / "declared"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["anything_filters"] = {"pred_iou_thresh": 1e9, "stability_score_thresh": 0.0}
    (folder / "config.json").write_text(json.dumps(config))
    captioner = RegionCaptioner.from_pretrained(folder, max_new_tokens=2)
    assert dict(captioner.model.anything_filters) == config["anything_filters"]
    captioner.set_image(np.zeros((32, 32, 3), dtype=np.uint8))
    assert captioner.anything(AnythingOptions(points_per_side=2)) == []
    assert captioner.anything(AnythingOptions(points_per_side=2, pred_iou_thresh=-1e9))  # given: kept
    from sca.infer.predictor import AnythingPredictor

    settings = AnythingPredictor(captioner.model, AnythingOptions()).settings()  # a dataset run records what it used
    assert (settings["pred_iou_thresh"], settings["stability_score_thresh"], settings["mask_nms_thresh"]) == (1e9, 0.0,
                                                                                                              None)

    from sca.assets import SAMPLE_IMAGE

    assert main(["anything", str(SAMPLE_IMAGE), "--model", str(folder), "--points-per-side", "2"]) == 0
    assert "0 regions" in capsys.readouterr().err

    config["anything_filters"] = {"pred_iou_thresh": float("nan")}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="config.json of .* holds NaN"):
        RegionCaptioner.from_pretrained(folder)
