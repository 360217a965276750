"""SCA as a region model: a `ScaModel`, its tokenizer and how to decode; and the builders of the `sca*` kinds."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import MappingProxyType

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from ..data.records import TASK_CAPTION
from ..data.sam_frame import SamFrame
from ..errors import InputError
from ..options import AnythingOptions, GenerationOptions
from .cpu_products import onednn_linear_layers
from .hub import ModelSource
from .loading import load_sca_model, load_tokenizer
from .mask_caption_decoder import DecoderState
from .prompts import Prompts
from .region_model import EncodedImages, RegionModel, RegionOutputs
from .sca import ScaModel
from .sca_sam2 import RegionFeatures, ScaSam2Config, ScaSam2Model
from .tiny import (
    build_bpe_tokenizer,
    build_sentencepiece_tokenizer,
    tiny_sam2_config,
    tiny_sca_config,
    tiny_text_config,
)


class ScaRegionModel(RegionModel):
    """SCA (SAM or SAM 2 + the feature mixer + a causal LM): one caption per region, the segmenter's 3 masks and their
    IoU."""

    def __init__(self, model: ScaModel | ScaSam2Model, tokenizer: PreTrainedTokenizerBase,
                 generation: GenerationOptions | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.generation = (generation or GenerationOptions()).check()
        self.frame = SamFrame.from_config(model.config)
        kinds, filters = model.config.prompt_kinds, model.config.anything_filters
        if kinds is not None:
            if not isinstance(kinds, list) or not kinds or not set(kinds) <= RegionModel.prompt_kinds:
                raise InputError(f"the model's config.json lists prompt_kinds {kinds!r}: it must be a list of some of "
                                 f"{', '.join(sorted(RegionModel.prompt_kinds))} (or null: all)")
            self.prompt_kinds = frozenset(kinds)
        if filters:
            if not isinstance(filters, dict):
                raise InputError(f"the model's config.json gives anything_filters {filters!r}: it must be an object "
                                 "of anything mode's options (pred_iou_thresh, stability_score_thresh)")
            self.anything_filters = MappingProxyType(dict(filters))
            AnythingOptions().for_model(self.anything_filters).check()  # a bad declaration is named at load

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @torch.no_grad()
    def image_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_embeddings(pixel_values)

    @torch.no_grad()
    def segment(self, encoded: EncodedImages, prompts: Prompts, multimask_output: bool = True,
                min_iou: float | None = None):
        return self.model.predict_masks(encoded.embeddings, prompts.to(self.device, self.dtype), multimask_output,
                                        min_iou)

    @torch.no_grad()
    def caption(self, encoded: EncodedImages, prompts: Prompts, tasks: Sequence[str] | None = None,
                multimask_output: bool = True) -> RegionOutputs:
        return self._generate(encoded, prompts, tasks, multimask_output)

    def describe(self, encoded: EncodedImages, prompts: Prompts, masks: torch.Tensor,
                 tasks: Sequence[str] | None = None) -> list[list[str]]:
        """SCA captions a region from its prompt: the given masks are not read, and none are made."""
        return self._generate(encoded, prompts, tasks, min_iou=math.inf).first_candidates()

    @torch.no_grad()
    def _generate(self, encoded: EncodedImages, prompts: Prompts, tasks: Sequence[str] | None,
                  multimask_output: bool = True, min_iou: float | None = None) -> RegionOutputs:
        prompts = prompts.to(self.device, self.dtype)
        options = self.generation
        output = self.model.generate(
            image_embeddings=encoded.embeddings,
            **prompts.as_sam_inputs(),
            task_type_ids=self.model.task_type_ids(list(tasks) if tasks else TASK_CAPTION, prompts.batch_size),
            multimask_output=multimask_output,
            chunk_size=options.chunk_size,
            min_iou=min_iou,
            max_new_tokens=options.max_new_tokens,
            num_beams=options.num_beams,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            **options.extra,
        )
        valid = prompts.valid.tolist() if prompts.valid is not None else None
        candidates = []
        for b, sequences in enumerate(output.sequences):
            texts = [text.strip() for text in self.tokenizer.batch_decode(sequences, skip_special_tokens=True)]
            candidates.append([[text] if valid is None or valid[b][r] else [] for r, text in enumerate(texts)])
        return RegionOutputs(output.iou_scores, output.pred_masks, candidates)

    @property
    def state_segmenter(self) -> torch.nn.Module | None:
        return self.model.sam if isinstance(self.model, ScaSam2Model) else None

    @property
    def state_region_features(self) -> RegionFeatures | None:
        return self.model.region_features if isinstance(self.model, ScaSam2Model) else None

    @torch.no_grad()
    def describe_states(self, states: Sequence[DecoderState]) -> list[str]:
        if self.state_segmenter is None:
            return super().describe_states(states)
        options, model = self.generation, self.model
        if self.state_region_features is not None and any(state.region_features is None for state in states):
            raise ValueError("this model's mixer also reads each region's fine features, and a state came without "
                             "them: keep states with kept_decoder_states(decoder, model.region_features)")
        by_length: dict[int, list[int]] = {}
        for index, state in enumerate(states):  # regions with as many decoder tokens go through together
            by_length.setdefault(state.output_tokens.shape[-2], []).append(index)
        captions = [""] * len(states)
        with onednn_linear_layers(self.device):
            for indices in by_length.values():
                step = options.chunk_size or len(indices)
                for chunk in (indices[start : start + step] for start in range(0, len(indices), step)):
                    state = DecoderState.concat([states[i] for i in chunk]).to(self.device, self.dtype)
                    prefix = model.caption_prefix(state, model.task_type_ids(TASK_CAPTION, 1))[1]
                    sequences = model.generate_from_prefix(
                        prefix, max_new_tokens=options.max_new_tokens, num_beams=options.num_beams,
                        pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
                        **options.extra)
                    texts = self.tokenizer.batch_decode(sequences[0], skip_special_tokens=True)
                    for i, text in zip(chunk, texts):
                        captions[i] = text.strip()
        return captions

    def settings(self) -> dict:
        return {"model": "ScaModel", "dtype": str(self.dtype), "max_new_tokens": self.generation.max_new_tokens,
                "num_beams": self.generation.num_beams, **({"generate": self.generation.extra} if self.generation.extra
                                                           else {})}


def build_sca(
    path: str | Path | None = None,
    tokenizer: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    generation: GenerationOptions | None = None,
) -> ScaRegionModel:
    """A trained SCA checkpoint (on SAM: this project's or the original release's; on SAM 2): a folder or a hub id;
    the shipped shapes model (or `$SCA_MODEL`) when no path is given."""
    if path is None:
        from ..assets import default_model_path

        path = default_model_path()
    model = load_sca_model(path, dtype=dtype, device=device)
    return ScaRegionModel(model, load_tokenizer(tokenizer or path, model.config), generation)


def build_sca_from_sam_and_lm(
    sam: str,
    lm: str,
    mixer_layers: int | None = None,
    caption_tokens: int | None = None,
    task_tokens: int | None = None,
    tokenizer: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    generation: GenerationOptions | None = None,
) -> ScaRegionModel:
    """A fresh SCA from a SAM checkpoint and a causal LM (folders or hub ids): SAM's and the LM's weights loaded,
    the mixer, queries, task tokens and projection new."""
    return _from_checkpoints(
        lambda: ScaModel.from_sam_and_lm(sam=sam, lm=lm, mixer_layers=mixer_layers, caption_tokens=caption_tokens,
                                         task_tokens=task_tokens, dtype=dtype),
        ModelSource.parse(lm), tokenizer, "SAM", device, generation)


def _from_checkpoints(build: Callable[[], ScaModel | ScaSam2Model], lm: ModelSource, tokenizer: str | None,
                      segmenter: str, device: str | torch.device, generation: GenerationOptions | None) -> ScaRegionModel:
    """A fresh SCA built from a segmenter's and an LM's checkpoints, with the LM's tokenizer (or `tokenizer`); a
    checkpoint that cannot be read is named in one line."""
    with lm.loading(f"load {segmenter} or the LM for"):  # a checkpoint of another kind: a segmenter given as the LM
        model = build()
        text = AutoTokenizer.from_pretrained(tokenizer or lm.location, **lm.pretrained_kwargs)
    if text.pad_token is None:
        text.pad_token = text.eos_token
    return ScaRegionModel(model.to(device), text, generation)


SAM2_MODEL_TYPES = ("sam2", "sam2_video")
"""The checkpoints SCA on SAM 2 starts from: SAM 2 / 2.1 image models and video models (which hold the image model)."""


def build_sca_sam2(
    sam2: str | None = None,
    lm: str | None = None,
    captions: Iterable[str] | None = None,
    mixer_layers: int | None = None,
    caption_tokens: int | None = None,
    task_tokens: int | None = None,
    tokenizer: str | None = None,
    image_size: int = 256,
    hidden_size: int = 64,
    stage_widths: tuple[int, int, int, int] = (16, 32, 64, 128),
    lm_hidden_size: int = 64,
    vocab_size: int = 300,
    mixer_high_resolution: bool = False,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    generation: GenerationOptions | None = None,
) -> ScaRegionModel:
    """A fresh SCA on SAM 2, to train: from a SAM 2 / 2.1 checkpoint and a causal LM (`sam2` and `lm`, folders or hub
    ids; their weights loaded, the mixer, queries, task tokens and projection new), or without them a small one from
    scratch (a tiny SAM 2 of `image_size`, `hidden_size` and Hiera `stage_widths`, a 2-layer GPT-2, the tokenizer
    trained on `captions`, the training captions). `mixer_high_resolution`: the mixer also reads SAM 2's stride-4 and
    stride-8 levels (`ScaSam2Config`). A trained one loads as any SCA checkpoint (kind `sca`)."""
    sizes = {"mixer_layers": mixer_layers, "caption_tokens": caption_tokens, "task_tokens": task_tokens}
    if (sam2 is None) != (lm is None):
        raise InputError("SCA on SAM 2 is built from both a SAM 2 checkpoint and an LM (model.sam2 and model.lm), or "
                         "from neither (a small one from scratch)")
    if sam2 is not None:
        segmenter, language = ModelSource.parse(sam2), ModelSource.parse(lm)
        found = segmenter.model_type()
        if found not in SAM2_MODEL_TYPES:
            # transformers would load any config into Sam2Model, its weights left random, with a warning
            raise InputError(f"{segmenter} is a {found!r} model, not SAM 2: pass a SAM 2 / 2.1 checkpoint (model_type "
                             f"{' or '.join(SAM2_MODEL_TYPES)}) as model.sam2")
        return _from_checkpoints(
            lambda: ScaSam2Model.from_sam2_and_lm(segmenter.location, language.location, dtype=dtype, **sizes,
                                                  mixer_high_resolution=mixer_high_resolution,
                                                  **language.pretrained_kwargs),
            language, tokenizer, "SAM 2", device, generation)
    _check_caption_sizes(**sizes, lm_hidden_size=lm_hidden_size)
    if image_size < 64 or image_size % 32:
        raise InputError(f"image_size must be a multiple of 32 of at least 64 (SAM 2's Hiera pools its 1/4 grid three "
                         f"times), got {image_size}")
    if hidden_size < 16 or hidden_size % 8:
        raise InputError(f"hidden_size must be a multiple of 8 of at least 16 (SAM 2's decoder upsamples to an eighth of "
                         f"it), got {hidden_size}")
    if any(width != 16 and (width < 32 or width % 32) for width in stage_widths):
        raise InputError(f"stage_widths must each be 16 or a multiple of 32 (a head per 32 channels), got "
                         f"{list(stage_widths)}")
    texts = sorted(set(captions or []))
    if not texts:
        raise InputError("a small SCA on SAM 2 from scratch trains its tokenizer on the training captions, and there "
                         "are none: give model.sam2 and model.lm to start from checkpoints")
    text = build_bpe_tokenizer(texts, vocab_size)
    defaults = {"mixer_layers": 2, "num_caption_tokens": 4, "num_task_tokens": 2}
    chosen = {name: value for name, value in zip(defaults, sizes.values()) if value is not None}
    config = ScaSam2Config(sam2_config=tiny_sam2_config(image_size, hidden_size, tuple(stage_widths)).to_dict(),
                           text_config=tiny_text_config(text, "gpt2", lm_hidden_size).to_dict(),
                           mixer_high_resolution=mixer_high_resolution, **{**defaults, **chosen})
    return ScaRegionModel(ScaSam2Model(config).to(device, dtype), text, generation)


def _check_caption_sizes(mixer_layers: int | None, caption_tokens: int | None, task_tokens: int | None,
                         lm_hidden_size: int) -> None:
    """The caption half's sizes a from-scratch SCA shares on SAM and SAM 2 (mixer, queries, task tokens, LM width;
    None: the default), checked before anything is built."""
    for name, value, least in (("mixer_layers", mixer_layers, 0), ("caption_tokens", caption_tokens, 1),
                               ("task_tokens", task_tokens, 1)):
        if value is not None and value < least:
            raise InputError(f"{name} must be at least {least}, got {value}")
    if lm_hidden_size < 4 or lm_hidden_size % 4:
        raise InputError(f"lm_hidden_size must be a multiple of 4 of at least 4 (the LM's 2 heads, each of an even width "
                         f"for rotary positions), got {lm_hidden_size}")


def build_tiny_sca(
    captions: Iterable[str],
    image_size: int = 128,
    patch_size: int = 16,
    hidden_size: int = 32,
    vision_layers: int = 2,
    mixer_layers: int = 2,
    caption_tokens: int = 4,
    task_tokens: int = 2,
    lm_kind: str = "gpt2",
    lm_hidden_size: int = 64,
    vocab_size: int = 300,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    generation: GenerationOptions | None = None,
) -> ScaRegionModel:
    """A small SCA from scratch, its tokenizer trained on `captions` (the training captions): runs offline."""
    _check_caption_sizes(mixer_layers, caption_tokens, task_tokens, lm_hidden_size)
    if not 1 <= patch_size <= image_size:
        raise InputError(f"patch_size must be between 1 and image_size ({image_size}), got {patch_size}")
    if vision_layers < 1:
        raise InputError(f"vision_layers must be at least 1, got {vision_layers}")
    if hidden_size < 8 or hidden_size % 4:
        raise InputError(f"hidden_size must be a multiple of 4 of at least 8 (SAM's decoder halves it over 2 heads), got "
                         f"{hidden_size}")
    texts = sorted(set(captions))
    if not texts:
        raise InputError("a tiny model trains its tokenizer on the training captions, and there are none")
    if lm_kind == "llama":
        tokenizer = build_sentencepiece_tokenizer(texts, vocab_size)
    elif lm_kind == "gpt2":
        tokenizer = build_bpe_tokenizer(texts, vocab_size)
    else:
        raise InputError(f"lm_kind must be gpt2 or llama, got {lm_kind!r}")
    config = tiny_sca_config(tiny_text_config(tokenizer, lm_kind, lm_hidden_size), image_size=image_size,
                             hidden_size=hidden_size, vision_layers=vision_layers, mixer_layers=mixer_layers,
                             caption_tokens=caption_tokens, task_tokens=task_tokens, patch_size=patch_size)
    return ScaRegionModel(ScaModel(config).to(device, dtype), tokenizer, generation)
