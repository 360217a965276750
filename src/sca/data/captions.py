"""Caption tokens as the original trained on them.

Each caption is tokenized with the tokenizer's own special tokens (GPT-2 adds none; LLaMA-style
tokenizers prepend BOS, which then is the first target, as in the published OpenLLaMA model),
truncated to `max_length - 2` tokens, and EOS is appended so the model learns to stop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100


def tokenize_captions(tokenizer: PreTrainedTokenizerBase, captions: Sequence[str], max_length: int = 20) -> list[list[int]]:
    """Token ids of each caption: at most `max_length - 2` tokens, then EOS."""
    if max_length < 3:
        raise ValueError(f"max_length must be at least 3, got {max_length}")
    encoded = tokenizer(list(captions), truncation=True, max_length=max_length - 2).input_ids
    return [ids + [tokenizer.eos_token_id] for ids in encoded]


def pad_captions(token_ids: Sequence[Sequence[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad caption ids to one length.

    Returns `input_ids` and `attention_mask` `(N, L)`, and `labels` `(N, L)`: the ids with padding set
    to -100 (the appended EOS stays a target).
    """
    length = max((len(ids) for ids in token_ids), default=0)
    input_ids = torch.full((len(token_ids), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(token_ids), length), dtype=torch.long)
    for row, ids in enumerate(token_ids):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
