"""Small SCA configurations and tokenizers built locally: the `sca-tiny` kind and the shipped shapes model.

Nothing here downloads: tokenizers are trained in milliseconds on the phrases given.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterable
from pathlib import Path

import sentencepiece
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    LlamaConfig,
    LlamaTokenizer,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Sam2Config,
)

from .configuration import ScaConfig

END_OF_TEXT = "<|endoftext|>"


def build_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE tokenizer; `<|endoftext|>` is BOS, EOS, UNK and PAD; no BOS is added."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
    )


def build_sentencepiece_tokenizer(texts: Iterable[str], vocab_size: int = 128) -> LlamaTokenizer:
    """A LLaMA-style SentencePiece tokenizer that prepends `<s>` (BOS) to every encoded text."""
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(list(texts)),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "tokenizer.model").write_bytes(model.getvalue())
        tokenizer = LlamaTokenizer.from_pretrained(folder, add_bos_token=True, add_eos_token=False)
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tiny_text_config(tokenizer: PreTrainedTokenizerBase, kind: str = "gpt2", hidden_size: int = 32):
    """A 2-layer causal LM config whose vocabulary and special ids match the tokenizer."""
    common = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if kind == "gpt2":
        return GPT2Config(n_embd=hidden_size, n_layer=2, n_head=2, n_positions=128, **common)
    if kind == "llama":
        return LlamaConfig(
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=128,
            tie_word_embeddings=False,
            **common,
        )
    raise ValueError(f"unknown tiny LM kind {kind!r}: use gpt2 or llama")


def tiny_sam2_config(image_size: int = 128, hidden_size: int = 32, stage_widths: tuple[int, ...] = (16, 32, 64, 128),
                     blocks_per_stage: tuple[int, ...] = (1, 2, 2, 1)) -> Sam2Config:
    """A small SAM 2: a 4-stage Hiera backbone (stride-4 patches, pooled to 1/8, 1/16, 1/32), an FPN of width
    `hidden_size` giving feature levels of 1/4, 1/8 and 1/16, SAM 2's two-way decoder. Masks come out at 1/4 of the
    image, upsampled with the 1/8 and 1/4 levels."""
    side = image_size // 4
    heads = [max(1, width // 32) for width in stage_widths]
    backbone = dict(model_type="sam2_hiera_det_model", hidden_size=stage_widths[0], num_attention_heads=heads[0],
                    image_size=[image_size, image_size], patch_kernel_size=[7, 7], patch_stride=[4, 4],
                    patch_padding=[3, 3], query_stride=[2, 2], window_positional_embedding_background_size=[4, 4],
                    num_query_pool_stages=3, blocks_per_stage=list(blocks_per_stage),
                    embed_dim_per_stage=list(stage_widths), num_attention_heads_per_stage=heads,
                    window_size_per_stage=[8, 4, 4, 2], global_attention_blocks=[sum(blocks_per_stage) - 2],
                    initializer_range=0.02)
    vision = dict(backbone_config=backbone, backbone_channel_list=list(reversed(stage_widths)),
                  backbone_feature_sizes=[[side, side], [side // 2, side // 2], [side // 4, side // 4]],
                  fpn_hidden_size=hidden_size, initializer_range=0.02)
    return Sam2Config(vision_config=vision,
                      prompt_encoder_config=dict(hidden_size=hidden_size, image_size=image_size, patch_size=16),
                      mask_decoder_config=dict(hidden_size=hidden_size, num_attention_heads=2, mlp_dim=2 * hidden_size,
                                               iou_head_hidden_dim=hidden_size),
                      initializer_range=0.02)


def tiny_sca_config(
    text_config,
    image_size: int = 128,
    hidden_size: int = 32,
    vision_layers: int = 2,
    mixer_layers: int = 2,
    caption_tokens: int = 4,
    task_tokens: int = 2,
    patch_size: int = 16,
) -> ScaConfig:
    """A small SCA configuration with SAM's structure (windowed + global ViT layers, two-way decoder).

    SAM's masks come out at 4x the embedding grid (`image_size / patch_size`): a smaller patch gives finer masks.
    """
    return ScaConfig(
        vision_config=dict(
            hidden_size=hidden_size,
            output_channels=hidden_size,
            num_hidden_layers=vision_layers,
            num_attention_heads=2,
            mlp_dim=2 * hidden_size,
            image_size=image_size,
            patch_size=patch_size,
            window_size=4,
            global_attn_indexes=[vision_layers - 1],
            num_pos_feats=hidden_size // 2,
            # Training from scratch needs SAM's own inits, not transformers' defaults (made for loading weights):
            initializer_range=0.02,  # the default, 1e-10, leaves the image encoder's output constant
            scale=1.0,  # random Fourier positional features of std 1, as in SAM; the default, hidden/2, is noise
        ),
        prompt_encoder_config=dict(
            hidden_size=hidden_size, image_size=image_size, patch_size=patch_size, mask_input_channels=8
        ),
        mask_caption_decoder_config=dict(
            hidden_size=hidden_size,
            num_hidden_layers=2,
            num_attention_heads=2,
            mlp_dim=2 * hidden_size,
            iou_head_hidden_dim=hidden_size,
            additional_num_hidden_layers=mixer_layers,
            num_caption_tokens=caption_tokens,
        ),
        text_config=text_config.to_dict(),
        num_task_tokens=task_tokens,
    )
