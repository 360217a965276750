import json
import logging
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from sca.api import RegionCaptioner
from sca.errors import InputError


@pytest.fixture()
def captioner(tiny_model_dir):
    return RegionCaptioner.from_pretrained(tiny_model_dir, max_new_tokens=6)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (90, 160, 3), dtype=np.uint8))


def _count_encoder_calls(captioner):
    calls = []
    captioner.model.model.vision_encoder.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_image_is_encoded_once_for_many_calls(captioner, image):
    calls = _count_encoder_calls(captioner)
    captioner.set_image(image)
    captioner.caption(boxes=[[0, 0, 50, 40]])
    captioner.caption(points=[[80, 45]])
    captioner.chunk_size = 1
    captioner.caption(boxes=[[0, 0, 50, 40], [60, 10, 150, 80], [5, 5, 20, 20]])
    assert len(calls) == 1


def test_results_are_in_original_pixels(captioner, image):
    captioner.set_image(image)
    regions = captioner.caption(boxes=[[0, 0, 50, 40], [60, 10, 150, 80]])
    assert len(regions) == 2
    for region in regions:
        assert region.masks.shape == (3, image.height, image.width) and region.masks.dtype == bool
        assert len(region.iou_scores) == 3
        assert isinstance(region.caption, str)
    assert regions[1].box == [60.0, 10.0, 150.0, 80.0]
    record = regions[0].to_dict()
    assert record["mask"]["size"] == [image.height, image.width]


def test_masks_are_the_frames_post_processing_one_at_a_time(captioner, image):
    """Each candidate is upsampled and encoded on its own (bounded memory on large photos): the masks are still SAM's
    post-processing of the low-res logits, every candidate, bit for bit."""
    from sca.masks import decode_rle

    captioner.set_image(image)
    encoded = captioner._encoded
    logits = torch.randn(3, captioner.frame.mask_size, captioner.frame.mask_size)
    expected = captioner.frame.masks_to_original(logits[None], encoded.framed[0])[0].numpy()
    rles = captioner.engine.full_size_rles(logits, encoded.framed[0])
    assert np.array_equal(np.stack([decode_rle(rle) for rle in rles]), expected)


def test_many_regions_at_once_equal_one_at_a_time(captioner, image):
    boxes = [[0, 0, 50, 40], [60, 10, 150, 80], [20, 30, 100, 89]]
    captioner.set_image(image)
    captioner.chunk_size = 2
    together = captioner.caption(boxes=boxes)
    for box, region in zip(boxes, together):
        alone = captioner.caption(boxes=[box])[0]
        assert alone.caption == region.caption
        np.testing.assert_allclose(alone.iou_scores, region.iou_scores, atol=1e-5)
        assert (alone.masks != region.masks).mean() < 1e-3


def test_the_engine_segments_without_captioning(captioner, image, monkeypatch):
    """`RegionEngine.segment` gives `caption`'s masks and scores, for any mix of prompt kinds, and makes no caption."""
    from sca.models.prompts import RegionPrompt

    captioner.set_image(image)
    regions = [RegionPrompt(box=[0, 0, 50, 40]), RegionPrompt(points=[[80, 45]], point_labels=[1]),
               RegionPrompt(box=[60, 10, 150, 80])]
    captioned = captioner.engine.caption(captioner._encoded, regions)
    monkeypatch.setattr(captioner.model, "caption", lambda *args, **kwargs: pytest.fail("a caption was made"))
    segmented = captioner.engine.segment(captioner._encoded, regions)
    assert [r.prompt for r in segmented] == [r.prompt for r in captioned]
    for alone, region in zip(segmented, captioned):
        assert alone.caption == "" and np.array_equal(alone.masks, region.masks)
        np.testing.assert_allclose(alone.iou_scores, region.iou_scores, atol=1e-6)


def test_prompts_map_into_the_model_frame(captioner, image):
    """A box given in original pixels equals the same box scaled by hand into SAM's frame."""
    captioner.set_image(image)
    region = captioner.caption(boxes=[[60, 10, 150, 80]])[0]
    size = captioner.model.model.config.vision_config.image_size
    scale = size / max(image.size)
    pixel_values = captioner.frame.frame(image).pixel_values[None]
    boxes = torch.tensor([[[60, 10, 150, 80]]], dtype=torch.float) * scale
    direct = captioner.model.model.generate(pixel_values=pixel_values, input_boxes=boxes, max_new_tokens=6)
    np.testing.assert_allclose(direct.iou_scores[0, 0].numpy(), region.iou_scores, atol=1e-5)


def test_point_and_mask_prompts(captioner, image):
    captioner.set_image(image)
    assert len(captioner.caption(points=[[10, 10], [100, 50]])) == 2
    several = captioner.caption(points=[[[10, 10], [100, 50]]], point_labels=[[1, 0]])
    assert len(several) == 1 and several[0].prompt["point_labels"] == [1, 0]
    mask = np.zeros((image.height, image.width), dtype=bool)
    mask[10:50, 20:90] = True
    assert len(captioner.caption(masks=mask[None])) == 1
    refined = captioner.caption(boxes=[[20, 10, 90, 50]], masks=mask[None])
    assert refined[0].prompt == {"box": [20.0, 10.0, 90.0, 50.0], "mask": True}


@pytest.mark.parametrize(
    "prompts, message",
    [
        ({}, "no prompt"),
        ({"boxes": []}, "no prompt"),
        ({"boxes": [[50, 10, 20, 40]]}, "inverted"),
        ({"boxes": [[0, 0, 500, 40]]}, "outside"),
        ({"boxes": [[0, 0, 5]]}, "4 coordinates"),
        ({"points": [[-3, 4]]}, "outside"),
        ({"boxes": [[0, 0, 5, 5]], "points": [[1, 1], [2, 2]]}, "same regions"),
        ({"masks": np.zeros((1, 5, 5), dtype=bool)}, "masks must be"),
    ],
)
def test_bad_prompts_are_input_errors(captioner, image, prompts, message):
    captioner.set_image(image)
    with pytest.raises(InputError, match=message):
        captioner.caption(**prompts)


def test_caption_before_set_image(captioner):
    with pytest.raises(InputError, match="set_image"):
        captioner.caption(boxes=[[0, 0, 1, 1]])


def test_bad_model_folders(tmp_path):
    with pytest.raises(InputError, match="not found"):
        RegionCaptioner.from_pretrained(tmp_path / "missing")
    with pytest.raises(InputError, match="not a model folder"):
        RegionCaptioner.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(InputError, match="not an SCA model"):
        RegionCaptioner.from_pretrained(tmp_path)
    for broken, message in (('{"model_type": ', "not a readable JSON config"), ("[1, 2]", "not a JSON config"),
                            (b"\xff\xfe", "not a readable JSON config"),
                            ('{"model_type": "sca", "mask_decoder_config": {"dropout": NaN}}', "holds NaN"),
                            ('{"model_type": "sca", "initializer_range": -Infinity}', "holds -Infinity")):
        path = tmp_path / "config.json"
        path.write_bytes(broken) if isinstance(broken, bytes) else path.write_text(broken)
        with pytest.raises(InputError, match=message):
            RegionCaptioner.from_pretrained(tmp_path)


@pytest.mark.parametrize("verbosity", ["warning", "error"])  # error: as the CLI sets it
def test_a_model_whose_weights_are_not_its_configs_says_which(tmp_path, capfd, verbosity):
    """transformers logs a table of the weights that did not fit and raises an error pointing at it; a missing weight
    it would leave at its random start."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity(getattr(hf_logging, verbosity.upper()))
    try:
        _refuses_weights_that_are_not_the_configs(tmp_path, capfd)
    finally:
        hf_logging.set_verbosity(before)


def _refuses_weights_that_are_not_the_configs(tmp_path, capfd):
    from safetensors.torch import load_file, save_file

    from sca.assets import DEFAULT_MODEL

    folder = tmp_path / "edited"
    shutil.copytree(DEFAULT_MODEL, folder)
    config = json.loads((folder / "config.json").read_text())
    config["mask_caption_decoder_config"]["mlp_dim"] += 8
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"weights do not fit its config.json \(.*mlp.*: checkpoint \[[\d, ]+\], "
                                         r"config \[[\d, ]+\]\)") as error:
        RegionCaptioner.from_pretrained(folder)
    assert "\n" not in str(error.value) and "LOAD REPORT" not in capfd.readouterr().err
    shutil.copy(DEFAULT_MODEL / "config.json", folder / "config.json")
    weights = load_file(folder / "model.safetensors")
    dropped = next(name for name in sorted(weights) if name.startswith("vision_encoder."))
    save_file({name: value for name, value in weights.items() if name != dropped}, folder / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(InputError, match=rf"1 of its weights missing \({re.escape(dropped)}"):
        RegionCaptioner.from_pretrained(folder)
    assert not logging.getLogger("transformers.modeling_utils").filters  # the guard leaves transformers as it was


def test_shipped_models_load_by_name(tmp_path, monkeypatch):
    import sca.assets
    from sca.assets import DEFAULT_MODEL, SAMPLE_IMAGE, SHIPPED_MODELS
    from sca.models.hub import ModelSource

    assert ModelSource.parse("sca-shapes").folder == DEFAULT_MODEL
    by_name, by_default = RegionCaptioner.from_pretrained("sca-shapes"), RegionCaptioner.from_pretrained()
    for captioner in (by_name, by_default):
        captioner.set_image(SAMPLE_IMAGE)
    box = [[35, 97, 73, 135]]
    assert by_name.caption(boxes=box)[0].caption == by_default.caption(boxes=box)[0].caption
    for name, folder in SHIPPED_MODELS.items():  # every name the package declares is in it
        assert ModelSource.parse(name).folder == folder and (folder / "model.safetensors").is_file()

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sca-shapes").mkdir()  # a folder of that name where the user stands wins over the shipped model
    assert ModelSource.parse("sca-shapes").folder.resolve() == (tmp_path / "sca-shapes").resolve()
    monkeypatch.setattr(sca.assets, "SHIPPED_MODELS", {"gone": tmp_path / "gone"})
    with pytest.raises(InputError, match=r"the shipped model gone is missing from this install .*: reinstall sca"):
        ModelSource.parse("gone")


def test_a_shipped_model_is_installed_with_its_own_anything_filters(tiny_model_dir, tmp_path, monkeypatch):
    """`python -m sca.assets.build model RUN/final --name NAME`: the weights and tokenizer copied, and the config given
    the prompt kinds the shapes recipes train and the anything filters chosen for that model (each model's scores are
    calibrated its own way); the shipped models carry theirs."""
    import sca.assets.build as build
    from sca.assets import SHIPPED_MODELS

    for name, folder in SHIPPED_MODELS.items():
        config = json.loads((folder / "config.json").read_text())
        assert config["anything_filters"] == build.ANYTHING_FILTERS[name] and config["prompt_kinds"] == ["boxes", "points"]
    monkeypatch.setattr(build, "SHIPPED_MODELS", {name: tmp_path / name for name in build.ANYTHING_FILTERS})
    for name in build.ANYTHING_FILTERS:
        build.install_model(tiny_model_dir, name)
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert config["anything_filters"] == build.ANYTHING_FILTERS[name]
        assert (tmp_path / name / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()
        assert RegionCaptioner.from_pretrained(tmp_path / name).model.anything_filters == build.ANYTHING_FILTERS[name]


def test_loading_a_model_logs_no_tensor_parallel_plan(caplog):
    """transformers checks a tensor-parallel plan when the loading logger's level is set, as loading sets it to read
    the table of weights that did not load: it listed every weight of SAM and the mixer as "not sharded"."""
    with caplog.at_level(logging.WARNING):
        RegionCaptioner.from_pretrained()
    assert not [record for record in caplog.records if "not sharded" in record.getMessage()]
