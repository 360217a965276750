"""The reassociated two-way transformer, the blocked image-encoder attention and region grouping compute what
transformers' SAM modules compute."""

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.sam.configuration_sam import SamMaskDecoderConfig, SamVisionConfig
from transformers.models.sam.modeling_sam import SamMaskDecoder, SamTwoWayTransformer, SamVisionEncoder

from sca.errors import InputError
from sca.models import sca as sca_module
from sca.models import two_way, vision_attention
from sca.models.two_way import run_two_way_transformer
from sca.models.upscaling import upscaled_masks
from sca.models.vision_attention import BlockedSamVisionAttention, blocked_view, encoder_for


def _randomize(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


@pytest.mark.parametrize("layers", [0, 1, 3])
@pytest.mark.parametrize("shared_image, regions, tokens", [(True, 1, 2), (True, 3, 5), (False, 3, 5)])
def test_two_way_transformer_matches_transformers(layers, shared_image, regions, tokens):
    """A shared image side is read through one region's two tokens, and projected once for three regions' five."""
    config = SamMaskDecoderConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, mlp_dim=48)
    transformer = SamTwoWayTransformer(config).eval()
    _randomize(transformer, seed=layers)
    generator = torch.Generator().manual_seed(1)
    batch, height, width = 2, 6, 7
    projects = two_way._projecting_pays(transformer.final_attn_token_to_image.k_proj, 4, torch.zeros(batch, 42, 32),
                                        torch.zeros(batch, regions, tokens, 32))
    assert projects == (regions > 1)
    points = torch.randn(batch, regions, tokens, 32, generator=generator)
    image = torch.randn(batch, 32, height, width, generator=generator)
    if not shared_image:
        image = image.repeat_interleave(regions, dim=0) + torch.randn(batch * regions, 32, 1, 1, generator=generator)
    pe = torch.randn(1, 32, height, width, generator=generator)
    per_region = image if not shared_image else image.repeat_interleave(regions, dim=0)
    want_tokens, want_image = transformer(points, per_region, pe, attention_similarity=None)
    want_grads = _gradients(transformer, want_tokens, want_image)
    sequence = image.flatten(2).transpose(1, 2)
    if not shared_image:
        sequence = sequence.unflatten(0, (batch, regions))
    got_tokens, got_image = run_two_way_transformer(
        transformer, points, sequence.contiguous(), pe[0].flatten(1).T.contiguous()
    )
    got_grads = _gradients(transformer, got_tokens, got_image)
    torch.testing.assert_close(got_tokens, want_tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_image, want_image.reshape(batch, regions, height * width, 32), atol=1e-5, rtol=1e-5)
    assert got_grads.keys() == want_grads.keys()  # every parameter gets a gradient (DDP insists)
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_two_way_transformer_at_inference_is_as_close_as_the_module_in_its_precision(dtype):
    """At inference (where float32 products go to oneDNN and bf16 residuals are summed in the products' epilogues),
    per-region image sides: as far from the float32 module as the module itself run in that precision, or nearer."""
    config = SamMaskDecoderConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, mlp_dim=96)
    transformer = SamTwoWayTransformer(config).eval()
    _randomize(transformer, seed=7)
    generator = torch.Generator().manual_seed(2)
    regions, height, width = 3, 16, 16
    points = torch.randn(1, regions, 6, 64, generator=generator)
    image = torch.randn(regions, 64, height, width, generator=generator)
    pe = torch.randn(1, 64, height, width, generator=generator)
    with torch.no_grad():
        exact_tokens, exact_image = transformer(points, image, pe, attention_similarity=None)
        low = transformer.to(dtype)
        module_tokens, module_image = low(points.to(dtype), image.to(dtype), pe.to(dtype), attention_similarity=None)
        got_tokens, got_image = run_two_way_transformer(
            low, points.to(dtype), image.flatten(2).transpose(1, 2)[None].contiguous().to(dtype),
            pe[0].flatten(1).T.contiguous().to(dtype))
    exact_image = exact_image.reshape(1, regions, height * width, 64)
    for got, module, exact in ((got_tokens, module_tokens, exact_tokens),
                               (got_image, module_image.reshape(exact_image.shape), exact_image)):
        error, module_error = (got.float() - exact).abs().mean(), (module.float() - exact).abs().mean()
        assert error <= 1.5 * module_error + 1e-6, (error, module_error)


def _gradients(module: torch.nn.Module, tokens: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
    module.zero_grad(set_to_none=True)
    (tokens.square().mean() + image.sin().mean()).backward()
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("regions", [1, 3])
def test_upscaled_masks_match_the_decoders_convolutions(regions):
    """The per-position products compute SAM's transposed convolutions, LayerNorm and GELU."""
    decoder = SamMaskDecoder(SamMaskDecoderConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                                  mlp_dim=48, num_multimask_outputs=2)).eval()
    _randomize(decoder, seed=regions)
    generator = torch.Generator().manual_seed(2)
    image = torch.randn(regions, 5, 7, 32, generator=generator)  # (N, H, W, C), a non-square grid
    hyper_in = torch.randn(regions, 3, 32 // 8, generator=generator)

    def reference(image, hyper_in):
        upscaled = decoder.upscale_conv1(image.permute(0, 3, 1, 2))
        upscaled = decoder.activation(decoder.upscale_layer_norm(upscaled))
        upscaled = decoder.activation(decoder.upscale_conv2(upscaled))
        return torch.einsum("nmc,nchw->nmhw", hyper_in, upscaled)

    with torch.no_grad():  # the per-position path is inference's; training runs the convolutions
        want = reference(image, hyper_in)
        calls = []
        hook = decoder.upscale_conv1.register_forward_hook(lambda *_: calls.append(1))
        got = upscaled_masks(decoder, image, hyper_in)
        hook.remove()
    assert not calls  # the products ran, not the convolution
    assert got.shape == (regions, 3, 20, 28)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def _vision_encoder(hidden_size: int, image_size: int, window_size: int, seed: int) -> SamVisionEncoder:
    """transformers' eager SAM encoder, 8-px patches, two layers (a windowed one, then a global one), random weights."""
    config = SamVisionConfig(
        hidden_size=hidden_size, output_channels=16, num_hidden_layers=2, num_attention_heads=2, image_size=image_size,
        patch_size=8, mlp_dim=hidden_size * 3 // 2, window_size=window_size, global_attn_indexes=[1], use_rel_pos=True,
    )
    config._attn_implementation = "eager"
    encoder = SamVisionEncoder(config).eval()
    _randomize(encoder, seed)
    return encoder


@pytest.mark.parametrize("block_bytes", [None, 3 * 36 * 4, 5 * 9 * 4 * 2])
def test_blocked_vision_attention_matches_transformers(monkeypatch, block_bytes):
    if block_bytes is not None:  # several query blocks (a partial last one) and several heads per step
        monkeypatch.setattr(vision_attention, "LOGITS_BLOCK_BYTES", block_bytes)
    reference = _vision_encoder(hidden_size=32, image_size=48, window_size=4, seed=2)  # 6×6: windows of 4 pad
    blocked = blocked_view(reference)
    assert all(isinstance(layer.attn, BlockedSamVisionAttention) for layer in blocked.layers)
    assert not any(isinstance(layer.attn, BlockedSamVisionAttention) for layer in reference.layers)  # left as it was
    assert {id(p) for p in blocked.parameters()} == {id(p) for p in reference.parameters()}  # shared, not copied
    assert encoder_for(reference, torch.device("cpu")) is encoder_for(reference, torch.device("cpu"))
    assert encoder_for(reference, torch.device("meta")) is reference
    pixels = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(
            blocked(pixels).last_hidden_state, reference(pixels).last_hidden_state, atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("block_bytes", [None, 2048])
def test_blocked_vision_attention_in_bf16_is_as_close_as_the_module_in_bf16(monkeypatch, block_bytes):
    """In bf16 the relative positions ride in the logits' product (`FOLDED_REL_POS_DTYPES`): as far from the float32
    encoder as transformers' own encoder run in bf16, or nearer."""
    if block_bytes is not None:
        monkeypatch.setattr(vision_attention, "LOGITS_BLOCK_BYTES", block_bytes)
    assert torch.bfloat16 in vision_attention.FOLDED_REL_POS_DTYPES
    reference = _vision_encoder(hidden_size=64, image_size=96, window_size=5, seed=4)  # 12×12: windows of 5 pad
    pixels = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        exact = reference(pixels).last_hidden_state
        low = copy.deepcopy(reference).to(torch.bfloat16)
        module = low(pixels.bfloat16()).last_hidden_state.float()
        got = blocked_view(low)(pixels.bfloat16()).last_hidden_state.float()
    assert (got - exact).abs().mean() <= 1.5 * (module - exact).abs().mean()


@pytest.mark.parametrize("original_size", [(1024, 1024), (700, 1024), (1024, 333), (97, 50)])
def test_mask_post_processing_equals_transformers(original_size):
    from sca.data.sam_frame import FramedImage, SamFrame

    frame = SamFrame(image_size=1024, embedding_size=64)
    scale = 1024 / max(original_size)
    input_size = tuple(int(side * scale + 0.5) for side in original_size)
    framed = FramedImage(torch.zeros(3, 1024, 1024), original_size, input_size)
    logits = torch.randn(3, 3, 256, 256, generator=torch.Generator().manual_seed(5)) * 4
    expected = frame.processor.post_process_masks([logits], [original_size], [input_size],
                                                  pad_size={"height": 1024, "width": 1024})[0]
    assert torch.equal(frame.masks_to_original(logits, framed), expected.bool())


@pytest.mark.parametrize("max_bytes", [1, 4 * 97 * 50 * 2, None])
def test_masks_at_original_size_in_pieces_are_the_masks(max_bytes):
    from sca.data.sam_frame import FramedImage, SamFrame

    frame = SamFrame(image_size=64, embedding_size=8)
    framed = FramedImage(torch.zeros(3, 64, 64), (97, 50), (64, 33))
    logits = torch.randn(5, 32, 32, generator=torch.Generator().manual_seed(2))
    pieces = list(frame.masks_to_original_in_pieces(logits, framed, max_bytes))
    assert len(pieces) == {1: 5, 4 * 97 * 50 * 2: 3, None: 1}[max_bytes]
    assert torch.equal(torch.cat(pieces), frame.masks_to_original(logits[:, None], framed)[:, 0])


@settings(max_examples=60, deadline=None)
@given(count=st.integers(0, 4), height=st.integers(1, 40), width=st.integers(1, 40), seed=st.integers(0, 2**31 - 1),
       shift=st.floats(-4, 4), nan=st.booleans())
def test_boxes_from_row_and_column_maxima_are_the_masks_boxes(count, height, width, seed, shift, nan):
    from sca.geometry import masks_to_boxes, positive_boxes

    logits = torch.randn(count, height, width, generator=torch.Generator().manual_seed(seed)) + shift
    if nan and logits.numel():
        logits.view(-1)[seed % logits.numel()] = float("nan")
    assert torch.equal(positive_boxes(logits), masks_to_boxes(logits > 0))


@pytest.mark.parametrize("frame_kind", ["sam", "stretch"])
def test_boxes_at_the_original_size_are_those_of_the_masks(frame_kind):
    from sca.data.sam_frame import FramedImage, SamFrame, StretchFrame
    from sca.geometry import masks_to_boxes

    frame = (SamFrame if frame_kind == "sam" else StretchFrame)(image_size=64, embedding_size=8)
    framed = FramedImage(torch.zeros(3, 64, 64), (97, 50), (64, 33))
    logits = torch.randn(6, 32, 32, generator=torch.Generator().manual_seed(4)) - 1.5
    logits[0] = -5  # an empty mask: a zero box
    masks = frame.masks_to_original(logits[:, None], framed)[:, 0]
    assert torch.equal(frame.boxes_at_original(logits, framed), masks_to_boxes(masks))
    assert frame.boxes_at_original(logits, framed)[0].tolist() == [0, 0, 0, 0]
    logits[1, 3, 4] = float("nan")  # NaN logits (a broken model): the masks' boxes still
    masks = frame.masks_to_original(logits[:, None], framed)[:, 0]
    assert torch.equal(frame.boxes_at_original(logits, framed), masks_to_boxes(masks))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 400), st.integers(1, 400), st.integers(0, 2**31 - 1))
def test_framing_a_large_photo_resized_first_equals_the_processor(height, width, seed):
    """A photo larger than the frame is resized (PIL, bilinear) before the processor sees it: its pixels, sizes and
    the frame's mapping are the processor's own, for any size and aspect ratio."""
    import numpy as np
    from PIL import Image

    from sca.data.sam_frame import SamFrame, longest_side_shape

    frame = SamFrame(image_size=96, embedding_size=12)
    image = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))
    if min(longest_side_shape((height, width), 96)) < 1:  # thinner than a pixel in the frame: refused
        with pytest.raises(InputError, match="under one pixel"):
            frame.frame(image)
        return
    framed = frame.frame(image)
    expected = frame.processor(images=image, return_tensors="pt")
    assert torch.equal(framed.pixel_values, expected["pixel_values"][0])
    assert framed.original_size == (height, width)
    assert framed.input_size == tuple(int(v) for v in expected["reshaped_input_sizes"][0])


def test_a_static_kv_cache_decodes_the_same_captions(tiny_model, monkeypatch):
    """The GPU path's capturable decoding (`GenerationOptions(extra={"cache_implementation": "static"})`): the
    same captions, and every chunk decoded at one batch shape (the last one padded), so it compiles once."""
    size = tiny_model.config.vision_config.image_size
    pixel_values = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(6))
    boxes = torch.tensor([[[0.0, 0.0, size / 2, size / 2], [size / 4, size / 8, size, size],
                           [size / 3, 0.0, size, size / 2]]])
    dynamic = tiny_model.generate(pixel_values=pixel_values, input_boxes=boxes, max_new_tokens=6)
    decode, batch_rows = tiny_model.language_model.generate, []
    monkeypatch.setattr(tiny_model.language_model, "generate",
                        lambda **kwargs: batch_rows.append(len(kwargs["inputs_embeds"])) or decode(**kwargs))
    static = tiny_model.generate(pixel_values=pixel_values, input_boxes=boxes, max_new_tokens=6, chunk_size=2,
                                 cache_implementation="static")
    assert torch.equal(dynamic.sequences, static.sequences)
    assert batch_rows == [2, 2]
    # Three images: 2 and 1 regions each, both chunks decoded as 3 x 2 rows, the same captions.
    pixel_values = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(7))
    dynamic = tiny_model.generate(pixel_values=pixel_values, input_boxes=boxes.expand(3, -1, -1), max_new_tokens=6)
    batch_rows.clear()
    static = tiny_model.generate(pixel_values=pixel_values, input_boxes=boxes.expand(3, -1, -1), max_new_tokens=6,
                                 chunk_size=2, cache_implementation="static")
    assert torch.equal(dynamic.sequences, static.sequences)
    assert batch_rows == [6, 6]


def test_region_groups_do_not_change_results(tiny_model, monkeypatch):
    generator = torch.Generator().manual_seed(4)
    size = tiny_model.config.vision_config.image_size
    pixel_values = torch.randn(1, 3, size, size, generator=generator)
    corners = torch.rand(1, 5, 2, 2, generator=generator) * size
    boxes = torch.cat([corners.min(dim=2).values, corners.max(dim=2).values], dim=-1)
    whole = tiny_model.generate(pixel_values=pixel_values, input_boxes=boxes, max_new_tokens=5)
    monkeypatch.setattr(sca_module, "CPU_REGION_GROUP_BYTES", 1)  # one region per group
    grouped = tiny_model.generate(pixel_values=pixel_values, input_boxes=boxes, max_new_tokens=5)
    assert torch.equal(whole.sequences, grouped.sequences)
    torch.testing.assert_close(whole.pred_masks, grouped.pred_masks, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(whole.iou_scores, grouped.iou_scores, atol=1e-6, rtol=1e-6)


def test_the_lm_head_gets_a_contiguous_input(tiny_model):
    """With frozen weights, a strided last-position slice made PyTorch expand the vocabulary matrix per region."""
    seen = []
    head = tiny_model.language_model.get_output_embeddings()
    hook = head.register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous()))
    try:
        size = tiny_model.config.vision_config.image_size
        boxes = torch.tensor([[[0.0, 0.0, size / 2, size / 2], [size / 4, size / 4, size, size]]])
        tiny_model.generate(pixel_values=torch.zeros(1, 3, size, size), input_boxes=boxes, max_new_tokens=3)
    finally:
        hook.remove()
    assert seen and all(seen)
