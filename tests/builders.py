"""Tiny models of every family the tests use, built locally from configs with their real classes, processors and
tokenizers (trained here in milliseconds): SCA, transformers' SAM, and the captioners SAM-Captioner takes
(BLIP, BLIP-2, GIT, InstructBLIP). Weights are random; nothing is downloaded."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertTokenizerFast,
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessorPil,
    BlipProcessor,
    CLIPImageProcessorPil,
    GitConfig,
    GitForCausalLM,
    GitProcessor,
    GPT2Config,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipProcessor,
    SamConfig,
    SamModel,
)

from sca.data.sources.shapes import all_captions
from sca.models import ScaModel
from sca.models.tiny import build_bpe_tokenizer, tiny_sca_config, tiny_text_config

SHAPE_PHRASES = all_captions()


def save_random_tiny_sca(out_dir: str | Path, seed: int = 0) -> Path:
    """Save an untrained tiny SCA with a tokenizer, so the whole pipeline runs with nothing downloaded."""
    torch.manual_seed(seed)
    tokenizer = build_bpe_tokenizer(SHAPE_PHRASES, vocab_size=300)
    model = ScaModel(tiny_sca_config(tiny_text_config(tokenizer)))
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def tiny_sam(image_size: int = 64, hidden_size: int = 32, patch_size: int = 16) -> SamModel:
    """A small random transformers `SamModel` with the same structure as `tiny_sca_config`'s SAM."""
    sca = tiny_sca_config(GPT2Config(n_embd=8, n_layer=1, n_head=1, vocab_size=8), image_size=image_size,
                          hidden_size=hidden_size, patch_size=patch_size)
    decoder = {k: v for k, v in sca.mask_caption_decoder_config.to_dict().items()
               if k not in ("additional_num_hidden_layers", "num_caption_tokens", "num_caption_heads")}
    config = SamConfig(vision_config=sca.vision_config.to_dict(), prompt_encoder_config=sca.prompt_encoder_config.to_dict(),
                       mask_decoder_config=decoder)
    return SamModel(config).eval()

FAMILIES = ("blip", "blip-2", "git", "instructblip")
IMAGE_SIZE, PATCH, HIDDEN, QUERY_TOKENS = 32, 8, 32, 4
PROMPTS = ["a picture of", "Question: What is this? Answer:", "Question: Describe the {answer} in detail. Answer:",
           "describe the region"]


def build_wordpiece_tokenizer(texts: Iterable[str], vocab_size: int = 200) -> BertTokenizerFast:
    """A BERT-style WordPiece tokenizer ([CLS] text [SEP]), trained on the texts given."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False)
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return BertTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]", bos_token="[DEC]", eos_token="[SEP]")


def _vision(**extra) -> dict:
    return dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                image_size=IMAGE_SIZE, patch_size=PATCH, **extra)


def _text(vocab_size: int, **extra) -> dict:
    return dict(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=64, **extra)


def build_tiny_captioner(family: str, texts: Iterable[str] = SHAPE_PHRASES):
    """(model, processor) of a tiny random captioner of this family."""
    texts = list(texts) + PROMPTS
    image_processor = BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    if family == "blip":
        tokenizer = build_wordpiece_tokenizer(texts)
        config = BlipConfig(
            vision_config=_vision(),
            text_config=_text(len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                              sep_token_id=tokenizer.sep_token_id, eos_token_id=tokenizer.sep_token_id,
                              encoder_hidden_size=HIDDEN),
            projection_dim=HIDDEN,
        )
        return BlipForConditionalGeneration(config).eval(), BlipProcessor(image_processor, tokenizer)
    if family == "git":
        tokenizer = build_wordpiece_tokenizer(texts)
        config = GitConfig(vision_config=_vision(), **_text(len(tokenizer)), bos_token_id=tokenizer.cls_token_id,
                           eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id)
        image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                                crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
        return GitForCausalLM(config).eval(), GitProcessor(image_processor, tokenizer)
    if family in ("blip-2", "instructblip"):
        tokenizer = build_bpe_tokenizer(texts, vocab_size=300)
        tokenizer.add_tokens([AddedToken("<image>", normalized=False, special=True)], special_tokens=True)
        image_token = tokenizer.convert_tokens_to_ids("<image>")
        lm = dict(model_type="opt", vocab_size=len(tokenizer), hidden_size=HIDDEN, ffn_dim=2 * HIDDEN,
                  num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64, word_embed_proj_dim=HIDDEN,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id)
        qformer = dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                       encoder_hidden_size=HIDDEN, max_position_embeddings=64)
        common = dict(vision_config=_vision(), text_config=lm, num_query_tokens=QUERY_TOKENS,
                      image_token_index=image_token)
        if family == "blip-2":
            model = Blip2ForConditionalGeneration(Blip2Config(qformer_config=qformer, **common)).eval()
            return model, Blip2Processor(image_processor, tokenizer, num_query_tokens=QUERY_TOKENS)
        qformer_tokenizer = build_wordpiece_tokenizer(texts)
        qformer["vocab_size"] = len(qformer_tokenizer)
        model = InstructBlipForConditionalGeneration(InstructBlipConfig(qformer_config=qformer, **common)).eval()
        return model, InstructBlipProcessor(image_processor, tokenizer, qformer_tokenizer, num_query_tokens=QUERY_TOKENS)
    raise ValueError(f"unknown captioner family {family!r}: use one of {', '.join(FAMILIES)}")
