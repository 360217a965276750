"""SCA on SAM 2: its SAM 2 parts are transformers' own modules and give what `Sam2Model` gives; the mixer reads each
region's own features; it saves, loads, trains and generates as SCA on SAM does."""

import pytest
import torch
from transformers import Sam2Model

from sca.data.sources.shapes import all_captions
from sca.models.prompts import Prompts
from sca.models.sca_region import build_sca_sam2
from sca.models.sca_sam2 import ScaSam2Model


@pytest.fixture(scope="module")
def built():
    torch.manual_seed(0)
    return build_sca_sam2(captions=all_captions(), image_size=64, hidden_size=32)


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _sam2(model: ScaSam2Model) -> Sam2Model:
    """A plain transformers SAM 2 holding the same weights."""
    sam = Sam2Model(model.config.sam2_config).eval()
    sam.load_state_dict(model.sam.state_dict())
    return sam


def test_the_sam2_parts_give_what_transformers_sam2_gives(built, pixels):
    model = built.model.eval()
    sam = _sam2(model)
    with torch.no_grad():
        levels = model.get_image_embeddings(pixels)
        expected = sam.get_image_embeddings(pixels)
        for ours, theirs in zip(levels, expected, strict=True):
            torch.testing.assert_close(ours, theirs)
        boxes = torch.tensor([[[4.0, 4.0, 40.0, 30.0], [20.0, 10.0, 60.0, 60.0]]] * 2)
        points = torch.tensor([[[[30.0, 30.0], [5.0, 5.0]], [[50.0, 40.0], [10.0, 50.0]]]] * 2)
        labels = torch.tensor([[[1, 0], [1, 1]]] * 2)
        for prompts in (Prompts(boxes=boxes), Prompts(points=points, labels=labels),
                        Prompts(points=points, labels=labels, boxes=boxes)):
            ours = model.segment(levels, prompts)
            theirs = sam(pixel_values=pixels, **{k: v for k, v in prompts.as_sam_inputs().items() if k != "valid"})
            torch.testing.assert_close(ours.iou_scores, theirs.iou_scores)
            torch.testing.assert_close(ours.pred_masks, theirs.pred_masks)
        masks = torch.zeros(2, 2, 64, 64)
        masks[:, 0, 10:30, 10:30] = 1
        masks[:, 1, 30:60, 20:50] = 1
        ours = model.segment(levels, Prompts(masks=masks))
        for r in range(2):
            theirs = sam(pixel_values=pixels, input_masks=masks[:, r, None])
            torch.testing.assert_close(ours.iou_scores[:, r], theirs.iou_scores[:, 0])


def test_each_region_is_mixed_from_its_own_features(built, pixels):
    model = built.model.eval()
    with torch.no_grad():
        levels = model.get_image_embeddings(pixels)
        boxes = torch.tensor([[[4.0, 4.0, 40.0, 30.0], [20.0, 10.0, 60.0, 60.0]],
                              [[0.0, 0.0, 64.0, 64.0], [8.0, 8.0, 16.0, 16.0]]])
        together = model.mix(model.segment(levels, Prompts(boxes=boxes)))
        for b in range(2):
            for r in range(2):
                one = [level[b : b + 1] for level in levels]
                alone = model.mix(model.segment(one, Prompts(boxes=boxes[b : b + 1, r : r + 1])))
                torch.testing.assert_close(together[b, r], alone[0, 0], atol=1e-5, rtol=1e-5)


def test_it_trains_the_mixer_by_default_and_everything_when_asked(built, pixels):
    model = built.model
    model.train()
    tokens = torch.randint(0, len(built.tokenizer), (2, 2, 5))
    output = model(pixel_values=pixels, input_boxes=torch.tensor([[[0.0, 0.0, 30.0, 30.0], [10, 10, 60, 60]]] * 2),
                   input_ids=tokens, labels=tokens)
    assert torch.isfinite(output.loss) and output.pred_masks.shape == (2, 2, 3, 16, 16)
    output.loss.backward()
    with_grad = {name.split(".")[0] for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {"mixer", "caption_tokens", "task_tokens", "language_project"}
    model.zero_grad()
    model.set_trainable(["sam", "mixer", "caption_tokens", "task_tokens", "language_project"])
    output = model(pixel_values=pixels, input_boxes=torch.tensor([[[0.0, 0.0, 30.0, 30.0]]] * 2),
                   input_ids=tokens[:, :1], labels=tokens[:, :1])
    output.loss.backward()
    assert model.sam.vision_encoder.backbone.patch_embed.projection.weight.grad is not None
    model.set_trainable(["vision_encoder", "prompt_encoder", "mask_decoder", "task_tokens"])  # the shapes recipe's
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert {name.split(".")[0] for name in trained} == {"sam", "mixer", "caption_tokens", "task_tokens"}
    assert any(name.startswith("sam.mask_decoder.") for name in trained)
    model.set_trainable(model.default_trainable_modules)
    model.zero_grad()
    model.eval()


def test_it_saves_and_loads_as_any_sca_checkpoint(built, tmp_path, caplog):
    import logging

    from sca.api import RegionCaptioner
    from sca.models.loading import load_sca_model

    built.model.save_pretrained(tmp_path)
    built.tokenizer.save_pretrained(tmp_path)
    loaded = load_sca_model(tmp_path)
    assert isinstance(loaded, ScaSam2Model)
    for name, weight in built.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], weight), name
    with caplog.at_level(logging.WARNING):
        captioner = RegionCaptioner.from_pretrained(tmp_path, max_new_tokens=4)  # kind sca: any SCA checkpoint
    # its tokenizer loads without transformers' warning of an unknown model type (the folder's config is read first)
    assert not [record for record in caplog.records if "model of type" in record.getMessage()]
    captioner.set_image(torch.zeros(40, 70, 3, dtype=torch.uint8).numpy())
    regions = captioner.caption(boxes=[[2, 2, 30, 30]])
    assert regions[0].to_dict()["mask"]["size"] == [40, 70]


@pytest.mark.parametrize(("option", "value", "message"), [
    ("image_size", 100, "image_size must be a multiple of 32"), ("image_size", 32, "image_size must be a multiple"),
    ("hidden_size", 20, "hidden_size must be a multiple of 8"),
    ("stage_widths", (16, 48, 64, 128), "stage_widths must each be 16 or a multiple of 32"),
    ("task_tokens", 0, "task_tokens must be at least 1"), ("lm_hidden_size", 30, "lm_hidden_size must be a multiple of 4"),
])
def test_a_small_one_refuses_sizes_sam2_cannot_take(option, value, message):
    from sca.errors import InputError

    with pytest.raises(InputError, match=message):
        build_sca_sam2(captions=all_captions(), **{option: value})


def test_a_small_one_of_another_size_runs():
    built = build_sca_sam2(captions=all_captions(), image_size=96, hidden_size=24)
    with torch.no_grad():
        levels = built.model.get_image_embeddings(torch.zeros(1, 3, 96, 96))
        masks = built.model.segment(levels, Prompts(boxes=torch.tensor([[[4.0, 4.0, 50.0, 50.0]]]))).pred_masks
    assert masks.shape[-2:] == (24, 24)


def test_one_from_scratch_places_prompts_and_image_positions_with_one_basis(built, tmp_path):
    """transformers' Sam2Model draws the prompt encoder's Fourier basis and the image positions' apart: trained from
    scratch so, its masks were the same for every box of an image (the prompt could not be placed on the image)."""
    sam = built.model.sam
    assert torch.equal(sam.prompt_encoder.shared_embedding.positional_embedding,
                       sam.shared_image_embedding.positional_embedding)
    built.model.save_pretrained(tmp_path)
    loaded = ScaSam2Model.from_pretrained(tmp_path).sam
    assert torch.equal(loaded.prompt_encoder.shared_embedding.positional_embedding,
                       sam.shared_image_embedding.positional_embedding)


def test_one_from_scratch_starts_from_sam2s_own_init(built, pixels):
    """SAM 2's own code leaves its layers at PyTorch's init; transformers' normal(0, 0.02) (for checkpoints) made a
    SAM 2 from scratch start with masks of ~1e-4 logits, whose gradients are as small."""
    for name, module in built.model.sam.named_modules():
        if isinstance(module, torch.nn.Linear | torch.nn.Conv2d | torch.nn.ConvTranspose2d) and module.weight.numel() >= 512:
            fan_in = module.weight[0].numel() if not isinstance(module, torch.nn.ConvTranspose2d) else \
                module.weight.shape[1] * module.weight[0, 0].numel()
            expected = 1 / (3 * fan_in) ** 0.5  # uniform in ±1/sqrt(fan_in)
            assert abs(float(module.weight.std()) / expected - 1) < 0.25, name
    model = built.model.train()
    with torch.no_grad():
        levels = model.get_image_embeddings(pixels)
        masks = model.segment(levels, Prompts(boxes=torch.tensor([[[4.0, 4.0, 40.0, 40.0]]] * 2)), False).pred_masks
    model.eval()
    assert float(masks.std()) > 1e-2


def test_a_stage_can_hold_the_high_resolution_skip_shut(pixels):
    """`zero_and_freeze` (train.zeroed_modules): SAM 2's skip modules are zero and stay so inside a trained decoder;
    the stride-4 and stride-8 levels they project add nothing to the masks, and learn nothing."""
    torch.manual_seed(0)
    built = build_sca_sam2(captions=all_captions(), image_size=64, hidden_size=32)
    model = built.model.train()
    model.set_trainable(["vision_encoder", "mask_decoder"])
    skip = ["sam.mask_decoder.conv_s0", "sam.mask_decoder.conv_s1"]
    model.zero_and_freeze(skip)
    levels = model.get_image_embeddings(pixels)
    assert not levels[0].any() and not levels[1].any() and levels[2].any()
    tokens = torch.randint(0, len(built.tokenizer), (2, 1, 5))
    output = model(pixel_values=pixels, input_boxes=torch.tensor([[[4.0, 4.0, 40.0, 40.0]]] * 2),
                   input_ids=tokens, labels=tokens)
    (output.loss + output.pred_masks.square().mean()).backward()
    shut = [p for path in skip for p in model.get_submodule(path).parameters()]
    assert all(not p.requires_grad and p.grad is None and not p.any() for p in shut)
    assert model.sam.mask_decoder.upscale_conv1.weight.grad is not None
    with pytest.raises(ValueError, match="no module 'sam.mask_decoder.conv_s9'"):
        model.zero_and_freeze(["sam.mask_decoder.conv_s9"])


def test_the_mixer_can_read_the_high_resolution_levels(tmp_path, pixels):
    """`mixer_high_resolution`: each region's stride-4 and stride-8 features, averaged inside its mask and projected,
    are one more caption query (the LM reads it beside the mixer's); what lies outside the region's mask does not
    reach it; the projection trains and is shut with the mixer, and is saved with the model."""
    from sca.models.loading import load_sca_model

    torch.manual_seed(0)
    on = build_sca_sam2(captions=all_captions(), image_size=64, hidden_size=32, mixer_high_resolution=True).model.eval()
    off = build_sca_sam2(captions=all_captions(), image_size=64, hidden_size=32).model.eval()
    off.load_state_dict({name: value for name, value in on.state_dict().items()
                         if not name.startswith("high_resolution_project.")})
    prompts = Prompts(boxes=torch.tensor([[[4.0, 4.0, 40.0, 40.0], [20.0, 10.0, 60.0, 50.0]]] * 2))
    with torch.no_grad():
        on.high_resolution_project.weight.normal_()
        levels = on.get_image_embeddings(pixels)
        segmentation = on.segment(levels, prompts)
        assert off.segment(levels, prompts).region_features is None
        assert segmentation.region_features.shape == (2, 2, on.config.sam2_config.mask_decoder_config.hidden_size)
        queries = on.mix(segmentation)
        assert queries.shape[2] == on.config.num_caption_tokens + 1
        assert torch.equal(queries[:, :, :-1], off.mix(off.segment(levels, prompts)))
        assert torch.equal(queries[:, :, -1], segmentation.region_features)
        fine = levels[:2]  # what SAM 2's decoder gets as its high-resolution features
        made = on.high_resolution_region(fine, segmentation.pred_masks, segmentation.iou_scores)
        assert torch.allclose(segmentation.region_features, made, atol=1e-6)
        # the first region's mask, made a hard one: fine features where it is zero do not reach its query
        hard = segmentation.pred_masks.clone()
        hard[:, 0] = torch.where(hard[:, 0] > 0, 30.0, -1e4)
        inside = on.high_resolution_region(fine, hard, segmentation.iou_scores)
        best = segmentation.iou_scores[0, 0].argmax()
        outside = hard[0, 0, best] < 0
        assert outside.any() and not outside.all()
        finer = [level.clone() for level in fine]
        finer[0][0, :, outside] += 5.0  # the stride-4 level is on the masks' grid
        moved = on.high_resolution_region(finer, hard, segmentation.iou_scores)
        assert torch.allclose(moved[0, 0], inside[0, 0], atol=1e-4)
        assert not torch.allclose(moved[0, 1], inside[0, 1], atol=1e-4)
        assert torch.equal(moved[1], inside[1])

    on.set_trainable(on.default_trainable_modules)
    assert on.high_resolution_project.weight.requires_grad
    on.zero_and_freeze(["mixer"])
    assert not on.high_resolution_project.weight.any() and not on.high_resolution_project.weight.requires_grad
    on.high_resolution_project.weight.data.normal_()
    on.save_pretrained(tmp_path)
    loaded = load_sca_model(tmp_path)
    assert loaded.config.mixer_high_resolution
    assert torch.equal(loaded.high_resolution_project.weight, on.high_resolution_project.weight)
