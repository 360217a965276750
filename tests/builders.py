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


def save_tiny_lm(out_dir: str | Path, seed: int = 0) -> Path:
    """Save a 2-layer random GPT-2 and its tokenizer (trained on the shapes phrases), as a hub LM folder is laid out."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    tokenizer = build_bpe_tokenizer(SHAPE_PHRASES, vocab_size=300)
    out_dir = Path(out_dir)
    AutoModelForCausalLM.from_config(tiny_text_config(tokenizer)).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def save_random_tiny_sca_sam2(out_dir: str | Path, seed: int = 0, image_size: int = 64) -> Path:
    """Save an untrained tiny SCA on SAM 2 with a tokenizer."""
    from sca.models.sca_region import build_sca_sam2

    torch.manual_seed(seed)
    built = build_sca_sam2(captions=SHAPE_PHRASES, image_size=image_size, hidden_size=32)
    out_dir = Path(out_dir)
    built.model.save_pretrained(out_dir)
    built.tokenizer.save_pretrained(out_dir)
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


# ---------------------------------------------------------------------- segmenters of the SAM family


def tiny_sam_hq(image_size: int = 64, hidden_size: int = 32):
    """A small random SAM-HQ (SAM's ViT and decoder, plus the HQ token and its intermediate features)."""
    from transformers import SamHQConfig, SamHQModel

    sam = tiny_sam(image_size, hidden_size).config
    decoder = {**sam.mask_decoder_config.to_dict(), "vit_dim": sam.vision_config.hidden_size}
    return SamHQModel(SamHQConfig(vision_config=sam.vision_config.to_dict(),
                                  prompt_encoder_config=sam.prompt_encoder_config.to_dict(),
                                  mask_decoder_config=decoder)).eval()


def tiny_sam3_tracker(image_size: int = 112, hidden_size: int = 32):
    """A small random SAM 3 tracker (SAM 3's ViT, 14-px patches, features at 4x, 2x and 1x its grid)."""
    from transformers import Sam3TrackerConfig, Sam3TrackerModel

    grid = image_size // 14
    backbone = dict(model_type="sam3_vit_model", hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                    num_hidden_layers=2, num_attention_heads=2, image_size=image_size, patch_size=14, window_size=4,
                    global_attn_indexes=[1], pretrain_image_size=image_size)
    vision = dict(backbone_config=backbone, fpn_hidden_size=hidden_size, scale_factors=[4.0, 2.0, 1.0, 0.5],
                  backbone_feature_sizes=[[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]])
    config = Sam3TrackerConfig(
        vision_config=vision, prompt_encoder_config=dict(hidden_size=hidden_size, image_size=image_size, patch_size=14),
        mask_decoder_config=dict(hidden_size=hidden_size, num_attention_heads=2, mlp_dim=2 * hidden_size,
                                 iou_head_hidden_dim=hidden_size))
    return Sam3TrackerModel(config).eval()


def tiny_sam2(family: str = "sam2", image_size: int = 128, hidden_size: int = 32):
    """A small random SAM 2 (a 4-stage Hiera backbone, feature levels of 1/4, 1/8 and 1/16)."""
    from transformers import Sam2Model

    from sca.models.tiny import tiny_sam2_config

    assert family == "sam2"
    return Sam2Model(tiny_sam2_config(image_size, hidden_size)).eval()


def tiny_sam2_video(image_size: int = 128):
    """A small random SAM 2 video model (memory attention and encoder over the tiny SAM 2). Its memory width is
    fixed at 64 by transformers, and the mask decoder's must be wider than that."""
    from transformers import Sam2VideoConfig, Sam2VideoModel

    image = tiny_sam2(image_size=image_size, hidden_size=128).config.to_dict()
    side = image_size // 16
    config = Sam2VideoConfig(
        vision_config=image["vision_config"], prompt_encoder_config=image["prompt_encoder_config"],
        mask_decoder_config=image["mask_decoder_config"], image_size=image_size, num_maskmem=3,
        max_object_pointers_in_encoder=4, memory_attention_hidden_size=128, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64, memory_attention_rope_feat_sizes=[side, side],
        memory_encoder_hidden_size=128, memory_encoder_output_channels=64, mask_downsampler_embed_dim=128,
        memory_fuser_embed_dim=128, memory_fuser_intermediate_dim=64)
    return Sam2VideoModel(config).eval()


# ---------------------------------------------------------------------- Florence-2 and a chat VLM


def _bpe(texts: Iterable[str], specials: list[str]) -> Tokenizer:
    from tokenizers import decoders

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(list(texts), trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return tokenizer


def build_tiny_florence2():
    """Florence-2 (DaViT + BART) with its real processor: a BART tokenizer with `<image>`, the 1,000 location tokens
    and Florence-2's task tokens."""
    from transformers import BartTokenizerFast, Florence2Config, Florence2ForConditionalGeneration, Florence2Processor

    tokenizer = BartTokenizerFast(tokenizer_object=_bpe(SHAPE_PHRASES + PROMPTS + ["What does the region describe?"],
                                                        ["<s>", "<pad>", "</s>", "<unk>"]),
                                  bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                                  extra_special_tokens={"image_token": "<image>"})
    tokenizer.add_tokens([f"<loc_{i}>" for i in range(1000)] + ["<od>", "</od>", "<ocr>", "</ocr>", "<cap>", "</cap>",
                                                                "<poly>", "</poly>", "<sep>", "<and>"])
    images = CLIPImageProcessorPil(size={"height": 64, "width": 64}, do_center_crop=False, image_seq_length=5)
    processor = Florence2Processor(image_processor=images, tokenizer=tokenizer, post_processor_config={"pure_text": {}})
    text = dict(vocab_size=len(tokenizer), d_model=HIDDEN, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                decoder_attention_heads=2, encoder_ffn_dim=2 * HIDDEN, decoder_ffn_dim=2 * HIDDEN,
                max_position_embeddings=64, bos_token_id=0, eos_token_id=2, pad_token_id=1, decoder_start_token_id=2)
    vision = dict(depths=[1, 1, 1, 1], embed_dim=[8, 16, 16, 32], num_heads=[1, 1, 1, 2], num_groups=[1, 1, 1, 2],
                  window_size=2, projection_dim=HIDDEN)
    config = Florence2Config(text_config=text, vision_config=vision, image_token_id=tokenizer.image_token_id)
    return Florence2ForConditionalGeneration(config).eval(), processor


CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() }}: {% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_tiny_llava():
    """A chat VLM: LLaVA (a CLIP vision tower, a LLaMA LM) with its processor and a chat template."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast

    from sca.models.captioners import FOCAL_PROMPTS

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=_bpe(SHAPE_PHRASES + list(FOCAL_PROMPTS.values()) + ["USER ASSISTANT"],
                                                              ["<pad>", "<s>", "</s>", "<image>"]),
                                        bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        extra_special_tokens={"image_token": "<image>"})
    images = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = LlavaProcessor(image_processor=images, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE, patch_size=14,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)
    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                           num_hidden_layers=2, num_attention_heads=2, image_size=28, patch_size=14, projection_dim=HIDDEN),
        text_config=dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
        vision_feature_layer=-1)
    return LlavaForConditionalGeneration(config).eval(), processor


SEGMENTERS = {"sam": tiny_sam, "sam_hq": tiny_sam_hq, "sam2": tiny_sam2, "sam3_tracker": tiny_sam3_tracker}
CAPTIONERS = {"blip": lambda: build_tiny_captioner("blip"), "florence2": build_tiny_florence2, "llava": build_tiny_llava}
