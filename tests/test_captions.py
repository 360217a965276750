import json

import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from sca.data.captions import IGNORE_INDEX, pad_captions, tokenize_captions


def test_reference_captions_tokenize_as_the_original(reference_dir):
    tokenizer = AutoTokenizer.from_pretrained(reference_dir / "tokenizer")
    meta = json.loads((reference_dir / "expected_meta.json").read_text())
    inputs = load_file(reference_dir / "inputs.safetensors")
    batch, regions, _ = inputs["input_ids"].shape
    flat = [caption for image in meta["captions"] for caption in image]
    max_length = tokenizer.model_max_length
    padded = pad_captions(tokenize_captions(tokenizer, flat, max_length), tokenizer.pad_token_id)
    assert torch.equal(padded["input_ids"], inputs["input_ids"].flatten(0, 1))
    assert torch.equal(padded["attention_mask"], inputs["attention_mask"].flatten(0, 1))
    assert torch.equal(padded["labels"], inputs["labels"][..., 1:].flatten(0, 1))
    assert padded["input_ids"].shape[0] == batch * regions


def test_eos_appended_and_bos_kept_for_bos_tokenizers(sentencepiece_tokenizer, bpe_tokenizer):
    sp = tokenize_captions(sentencepiece_tokenizer, ["a red circle"], max_length=20)[0]
    assert sp[0] == sentencepiece_tokenizer.bos_token_id and sp[-1] == sentencepiece_tokenizer.eos_token_id
    bpe = tokenize_captions(bpe_tokenizer, ["a red circle"], max_length=20)[0]
    assert bpe[-1] == bpe_tokenizer.eos_token_id
    assert bpe_tokenizer.decode(bpe[:-1]) == "a red circle"


def test_truncation_keeps_room_for_eos(bpe_tokenizer):
    ids = tokenize_captions(bpe_tokenizer, ["a small red circle " * 20], max_length=7)[0]
    assert len(ids) == 6 and ids[-1] == bpe_tokenizer.eos_token_id


def test_padding_is_ignored_in_labels():
    padded = pad_captions([[5, 6, 9], [7, 9]], pad_token_id=9)
    assert padded["labels"].tolist() == [[5, 6, 9], [7, 9, IGNORE_INDEX]]
    assert padded["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
