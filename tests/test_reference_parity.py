"""The original release's tiny checkpoint loads by its original names and reproduces what the original computed.

Every shape and count comes from the fixture's config and metadata, so the same test holds for other
configurations saved the same way.
"""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from sca.models import ScaModel


@pytest.fixture(scope="module")
def reference(reference_dir):
    model, info = ScaModel.from_pretrained(reference_dir / "model", output_loading_info=True)
    return {
        "model": model.eval(),
        "info": info,
        "inputs": load_file(reference_dir / "inputs.safetensors"),
        "expected": load_file(reference_dir / "expected.safetensors"),
        "meta": json.loads((reference_dir / "expected_meta.json").read_text()),
        "keys": [
            line.split("\t") for line in (reference_dir / "keys.txt").read_text().splitlines() if not line.startswith("#")
        ],
    }


@pytest.fixture(scope="module")
def train_output(reference):
    inputs, model = reference["inputs"], reference["model"]
    labels = inputs["labels"]
    assert (labels[..., 0] == -100).all(), "the original's labels carry one leading -100"
    with torch.no_grad():
        return model(
            pixel_values=inputs["pixel_values"],
            input_boxes=inputs["input_boxes"],
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            labels=labels[..., 1:],
            task_type_ids=inputs["task_type_ids"],
        )


def test_every_original_key_loads_with_its_shape(reference):
    info, model = reference["info"], reference["model"]
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    state = model.state_dict()
    for key, shape, _, _, _trainable, _ in reference["keys"]:
        assert key in state, key
        assert list(state[key].shape) == json.loads(shape), key
    trainable_keys = {key for key, *_, trainable, _ in reference["keys"] if trainable == "True"}
    assert {name for name, p in model.named_parameters() if p.requires_grad} == trainable_keys


def test_entries_dropped_by_save_pretrained_are_tied(reference):
    model = reference["model"]
    assert model.language_model.get_output_embeddings().weight is model.language_model.get_input_embeddings().weight
    assert (
        model.prompt_encoder.shared_embedding.positional_embedding
        is model.shared_image_embedding.positional_embedding
    )


def test_image_encoder_and_positional_embeddings(reference):
    model, expected = reference["model"], reference["expected"]
    with torch.no_grad():
        embeddings = model.get_image_embeddings(reference["inputs"]["pixel_values"])
        positional = model.get_image_wide_positional_embeddings()
    torch.testing.assert_close(embeddings, expected["vision.image_embeddings"], atol=1e-5, rtol=0)
    torch.testing.assert_close(positional, expected["vision.image_positional_embeddings"], atol=1e-6, rtol=0)


def test_training_forward(reference, train_output):
    expected, config = reference["expected"], reference["model"].config
    batch, regions = reference["inputs"]["input_boxes"].shape[:2]
    prefix_len = config.num_task_tokens + config.mask_caption_decoder_config.num_caption_tokens
    assert train_output.prefix_embeds.shape[2] == prefix_len

    torch.testing.assert_close(train_output.loss, expected["train.loss"], atol=1e-5, rtol=0)
    # The original returns the L+1 logits from the last prefix position on; the last one predicts nothing.
    torch.testing.assert_close(
        train_output.logits.flatten(0, 1), expected["train.logits"][:, :-1], atol=1e-3, rtol=0
    )
    torch.testing.assert_close(
        train_output.logits.flatten(0, 1),
        expected["train.language_model_logits"][:, prefix_len - 1 : -1],
        atol=1e-3,
        rtol=0,
    )
    torch.testing.assert_close(train_output.iou_scores, expected["train.iou_scores"], atol=1e-5, rtol=0)
    torch.testing.assert_close(train_output.pred_masks, expected["train.pred_masks"], atol=1e-5, rtol=0)
    torch.testing.assert_close(
        train_output.caption_queries.flatten(0, 1), expected["train.query_logits"], atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        train_output.prefix_embeds.flatten(0, 1), expected["train.projected_query_logits"], atol=1e-4, rtol=0
    )
    assert train_output.logits.shape[:2] == (batch, regions)


def test_sam_path_is_unchanged(reference, train_output):
    torch.testing.assert_close(train_output.iou_scores, reference["expected"]["sam.iou_scores"], atol=1e-5, rtol=0)
    torch.testing.assert_close(train_output.pred_masks, reference["expected"]["sam.pred_masks"], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "variant, options",
    [("generate", {}), ("generate_chunk2", {"chunk_size": 2}), ("generate_beam3", {"num_beams": 3})],
)
def test_generation_matches_token_for_token(reference, variant, options):
    inputs, expected, meta = reference["inputs"], reference["expected"], reference["meta"]
    kwargs = dict(meta["generate_kwargs_beam" if "beam" in variant else "generate_kwargs"])
    kwargs.update(options)
    output = reference["model"].generate(
        pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"], **kwargs
    )
    # The original's sequences (B, R, heads, T) begin with one BOS id that transformers 4.36 seeded and never fed.
    want = expected[f"{variant}.sequences"][:, :, 0]
    assert (want[..., 0] == reference["model"].config.text_config.bos_token_id).all()
    assert torch.equal(output.sequences, want[..., 1:])
    if variant == "generate":
        torch.testing.assert_close(output.iou_scores, expected["generate.iou_scores"], atol=1e-5, rtol=0)
        torch.testing.assert_close(output.pred_masks, expected["generate.pred_masks"], atol=1e-5, rtol=0)


def test_decoded_captions(reference, reference_dir):
    tokenizer = AutoTokenizer.from_pretrained(reference_dir / "tokenizer")
    inputs, meta = reference["inputs"], reference["meta"]
    output = reference["model"].generate(
        pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"], **meta["generate_kwargs"]
    )
    decoded = [tokenizer.batch_decode(image, skip_special_tokens=True) for image in output.sequences]
    assert decoded == meta["decoded_greedy"]


def test_saved_model_reloads_with_identical_outputs(reference, train_output, tmp_path):
    reference["model"].save_pretrained(tmp_path)
    reloaded, info = ScaModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    inputs = reference["inputs"]
    with torch.no_grad():
        again = reloaded.eval()(
            pixel_values=inputs["pixel_values"],
            input_boxes=inputs["input_boxes"],
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            labels=inputs["labels"][..., 1:],
            task_type_ids=inputs["task_type_ids"],
        )
    assert torch.equal(again.loss, train_output.loss)
    assert torch.equal(again.logits, train_output.logits)
    assert torch.equal(again.pred_masks, train_output.pred_masks)
