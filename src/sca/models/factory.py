"""A model and its tokenizer from a spec (what `conf/model/*.yaml` holds)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from transformers import AutoTokenizer

from ..errors import InputError
from .loading import load_sca_model, load_tokenizer
from .sca import ScaModel
from .tiny import build_bpe_tokenizer, build_sentencepiece_tokenizer, tiny_sca_config, tiny_text_config


def build_model(spec: Mapping, captions: Iterable[str] = ()):
    """`init` chooses how:

    - `pretrained`: an SCA checkpoint folder (`path`), e.g. to fine-tune a published model;
    - `sam_and_lm`: a SAM checkpoint and a causal LM (`sam`, `lm`, `mixer_layers`, `caption_tokens`, `task_tokens`);
    - `tiny`: a small model from scratch, its tokenizer trained on the training captions (offline).
    """
    init = spec.get("init")
    if init == "pretrained":
        model = load_sca_model(spec["path"])
        return model, load_tokenizer(spec.get("tokenizer") or spec["path"], model.config)
    if init == "sam_and_lm":
        model = ScaModel.from_sam_and_lm(
            sam=spec["sam"],
            lm=spec["lm"],
            mixer_layers=spec.get("mixer_layers", 12),
            caption_tokens=spec.get("caption_tokens", 8),
            task_tokens=spec.get("task_tokens", 6),
        )
        tokenizer = AutoTokenizer.from_pretrained(spec.get("tokenizer") or spec["lm"])
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer
    if init == "tiny":
        texts = sorted(set(captions))
        if not texts:
            raise InputError("a tiny model trains its tokenizer on the training captions, and there are none")
        kind = spec.get("lm_kind", "gpt2")
        if kind == "llama":
            tokenizer = build_sentencepiece_tokenizer(texts, spec.get("vocab_size", 128))
        else:
            tokenizer = build_bpe_tokenizer(texts, spec.get("vocab_size", 300))
        config = tiny_sca_config(
            tiny_text_config(tokenizer, kind, spec.get("lm_hidden_size", 64)),
            image_size=spec.get("image_size", 128),
            hidden_size=spec.get("hidden_size", 32),
            vision_layers=spec.get("vision_layers", 2),
            mixer_layers=spec.get("mixer_layers", 2),
            caption_tokens=spec.get("caption_tokens", 4),
            task_tokens=spec.get("task_tokens", 2),
            patch_size=spec.get("patch_size", 16),
        )
        return ScaModel(config), tokenizer
    raise InputError(f"unknown model init {init!r}: use pretrained, sam_and_lm or tiny")
