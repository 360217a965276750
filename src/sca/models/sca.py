"""The SCA model: SAM, a feature mixer with learned caption queries, and a frozen causal language model."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel, SamModel
from transformers import initialization as init
from transformers.modeling_outputs import ModelOutput
from transformers.models.sam.modeling_sam import (
    SamPositionalEmbedding,
    SamPromptEncoder,
    SamVisionAttention,
    SamVisionEncoder,
)

from ..options import GenerationOptions
from .configuration import TASK_TYPES, ScaConfig, ScaMaskCaptionDecoderConfig
from .cpu_products import onednn_linear_layers
from .mask_caption_decoder import DecoderState, ScaMaskCaptionDecoder, Segmentation
from .prompts import Prompts
from .quiet import NEEDLESS_PADDING, dropped
from .vision_attention import encoder_for

DEFAULT_TRAINABLE_MODULES = (
    "mask_decoder.additional_transformer",
    "mask_decoder.caption_tokens",
    "task_tokens",
    "language_project",
)
"""What trains by default: the mixer, its queries, the task tokens and the projection (SAM and LM frozen)."""

LABEL_SMOOTHING = 0.1

CPU_REGION_GROUP_BYTES = 16 * 2**20
"""Image-feature copies SAM and the mixer rework at once on a CPU: about what stays in its cache."""


@dataclass
class ScaOutput(ModelOutput):
    """Output of [`ScaModel.forward`].

    loss: `()` token cross-entropy with label smoothing, when `labels` are given.
    logits: `(B, R, L, V)` caption-aligned LM logits: `logits[b, r, j]` predicts `input_ids[b, r, j]`
        (the last prefix position predicts the first caption token).
    iou_scores: `(B, R, M)` SAM's predicted IoU per candidate mask.
    pred_masks: `(B, R, M, h, w)` SAM's low-resolution mask logits.
    caption_queries: `(B, R, N, C)` the mixer's caption queries (N = num_caption_tokens).
    prefix_embeds: `(B, R, P, H)` the LM prefix: task tokens then projected caption queries.
    image_embeddings: `(B, C, H, W)` the image encoder's output (or the embeddings passed in), so that more
        prompts can be answered on the same images (`segment`) without encoding them again.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    iou_scores: torch.Tensor | None = None
    pred_masks: torch.Tensor | None = None
    caption_queries: torch.Tensor | None = None
    prefix_embeds: torch.Tensor | None = None
    image_embeddings: torch.Tensor | None = None


@dataclass
class ScaGenerationOutput(ModelOutput):
    """Output of [`ScaModel.generate`].

    sequences: `(B, R, T)` generated token ids (no prompt, no seeded BOS), right-padded with the pad id.
    iou_scores: `(B, R, M)` SAM's predicted IoU per candidate mask.
    pred_masks: `(B, R, M, h, w)` SAM's low-resolution mask logits.
    """

    sequences: torch.Tensor | None = None
    iou_scores: torch.Tensor | None = None
    pred_masks: torch.Tensor | None = None


class ScaPreTrainedModel(PreTrainedModel):
    config_class = ScaConfig
    config: ScaConfig
    base_model_prefix = "sca"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["SamVisionLayer"]

    def _init_weights(self, module: nn.Module):
        super()._init_weights(module)
        if isinstance(module, SamPositionalEmbedding):
            init.normal_(module.positional_embedding, std=module.scale)
        elif isinstance(module, SamVisionAttention) and module.use_rel_pos:
            init.zeros_(module.rel_pos_h)
            init.zeros_(module.rel_pos_w)


class ScaCaptioning:
    """What every SCA model does once it has a segmenter: the mixer's prefix, the LM's loss and generation, freezing.

    A model using it (`ScaModel` on SAM, `ScaSam2Model` on SAM 2) provides `get_image_embeddings(pixel_values)`,
    `segment(image_embeddings, prompts, multimask_output, min_iou)` → `Segmentation`, `mix(segmentation)` → the caption
    queries `(B, R, N, C)`, `default_trainable_modules`, and the modules `language_model`, `language_project` and
    `task_tokens`. Image embeddings may be one tensor `(B, C, H, W)` or a list of feature levels (SAM 2's), the last the
    coarsest. `module_aliases`: SCA-on-SAM module paths (those of every recipe: `mask_decoder.additional_transformer`,
    `vision_encoder`, ...) → this model's, so that one recipe trains either.
    """

    module_aliases: dict[str, str | tuple[str, ...]] = {}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' `from_pretrained`; a hub id may carry its revision (`org/name@revision`)."""
        name = str(pretrained_model_name_or_path)
        if "@" in name and not Path(name).exists() and "revision" not in kwargs:
            pretrained_model_name_or_path, kwargs["revision"] = name.split("@", 1)
        # Loading replaces parameters (and their requires_grad); restore the default freezing.
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        model.set_trainable(model.default_trainable_modules)
        return loaded

    def _add_language_half(self, mixer_hidden: int, language_model: PreTrainedModel | None) -> None:
        """The causal LM (`config.text_config`'s, new, unless given), the projection from the mixer's width into its
        embeddings, and the task tokens."""
        if language_model is None:
            language_model = AutoModelForCausalLM.from_config(self.config.text_config)
        self.language_model = language_model
        lm_head = language_model.get_output_embeddings()
        if lm_head is not None:
            # The LM head gets the last position of each sequence as a strided `(N, 1, H)` slice. With frozen
            # weights, PyTorch then multiplies it by one expanded copy of the vocabulary matrix per sequence
            # (1.5 s for 16 regions of GPT-2 in bf16 on a CPU); a contiguous input takes one matrix product.
            lm_head.register_forward_pre_hook(_contiguous_inputs)
        lm_hidden = language_model.get_input_embeddings().embedding_dim
        self.language_project = nn.Linear(mixer_hidden, lm_hidden)
        self.task_tokens = nn.Embedding(len(TASK_TYPES) * self.config.num_task_tokens, lm_hidden)

    def modules_at(self, path: str) -> list[nn.Module]:
        """The modules a dotted path names (e.g. `language_model`), read through `module_aliases`."""
        alias = self.module_aliases.get(path, path)
        try:
            return [self.get_submodule(found) for found in ((alias,) if isinstance(alias, str) else alias)]
        except AttributeError as error:
            raise ValueError(f"no module {path!r} in {type(self).__name__}") from error

    def set_trainable(self, module_paths: Sequence[str]) -> None:
        """Freeze everything, then unfreeze the modules at these dotted paths (e.g. `language_model`)."""
        self.requires_grad_(False)
        for path in module_paths:
            for module in self.modules_at(path):
                module.requires_grad_(True)

    @torch.no_grad()
    def zero_and_freeze(self, module_paths: Sequence[str]) -> None:
        """Set the weights of the modules at these paths to zero and freeze them: a path a stage of training holds
        shut (a module that adds its output, such as SAM 2's high-resolution skip, then adds nothing)."""
        for path in module_paths:
            for module in self.modules_at(path):
                for parameter in module.parameters():
                    parameter.zero_()
                module.requires_grad_(False)

    @torch.no_grad()
    def predict_masks(self, image_embeddings: torch.Tensor, prompts: Prompts, multimask_output: bool = True,
                      min_iou: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM alone (no captions): `(B, R, M)` IoU scores and `(B, R, M, h, w)` low-res mask logits (-inf for the
        regions none of whose candidates scores above `min_iou`, when given).

        On a CPU the regions go through in cache-sized groups (see `generate`).
        """
        with onednn_linear_layers(_coarsest(image_embeddings).device):
            parts = [(s.iou_scores, s.pred_masks)
                     for s in self._segment_in_groups(image_embeddings, prompts, multimask_output, min_iou)]
        scores, masks = (torch.cat(part, dim=1) for part in zip(*parts))
        return scores, masks

    def caption_prefix(self, segmentation: DecoderState, task_type_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixer, projection and task tokens → the LM prefix.

        Args:
            task_type_ids: `(B,)` row of `TASK_TYPES` per image.
        Returns:
            caption_queries `(B, R, N, C)` and prefix_embeds `(B, R, P, H)` with P = num_task_tokens + N.
        """
        caption_queries = self.mix(segmentation)
        batch_size, num_regions = caption_queries.shape[:2]
        projected = self.language_project(caption_queries)
        task = self.task_tokens.weight.view(len(TASK_TYPES), self.config.num_task_tokens, -1)[task_type_ids]
        task = task[:, None].expand(batch_size, num_regions, -1, -1)
        return caption_queries, torch.cat([task, projected], dim=2)

    def task_type_ids(self, task_types: Sequence[str] | str | None, batch_size: int) -> torch.Tensor:
        """Names (`caption`, `recognition`) → `(B,)` ids; None means captioning for every image."""
        if task_types is None:
            task_types = "caption"
        if isinstance(task_types, str):
            task_types = [task_types] * batch_size
        unknown = sorted(set(task_types) - set(TASK_TYPES))
        if unknown:
            raise ValueError(f"unknown task type {unknown[0]!r}: use one of {', '.join(TASK_TYPES)}")
        return torch.tensor([TASK_TYPES.index(t) for t in task_types], device=self.device)

    # ------------------------------------------------------------------ training forward

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_points: torch.Tensor | None = None,
        input_labels: torch.Tensor | None = None,
        input_boxes: torch.Tensor | None = None,
        input_masks: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        task_type_ids: torch.Tensor | None = None,
        image_embeddings: torch.Tensor | None = None,
        multimask_output: bool = True,
        region_mask: torch.Tensor | None = None,
    ) -> ScaOutput:
        """Segment the regions and score their captions.

        Args:
            pixel_values: `(B, 3, S, S)` preprocessed images (or pass `image_embeddings` `(B, C, H, W)`).
            input_points / input_labels / input_boxes / input_masks: the prompts, see `segment`.
            input_ids: `(B, R, L)` caption tokens (EOS appended, right-padded); attention_mask `(B, R, L)`.
            labels: `(B, R, L)` = input_ids with padding set to -100.
            task_type_ids: `(B,)` rows of `TASK_TYPES`; captioning when omitted.
            region_mask: `(B, R)` 1 for real regions, 0 for batch padding; padding is already out of the
                loss through its -100 labels, so this only documents which outputs mean nothing.
        """
        if image_embeddings is None:
            image_embeddings = self.get_image_embeddings(pixel_values)
        batch_size = _coarsest(image_embeddings).shape[0]
        if task_type_ids is None:
            task_type_ids = self.task_type_ids(None, batch_size)
        prompts = Prompts(points=input_points, labels=input_labels, boxes=input_boxes, masks=input_masks)
        segmentation = self.segment(image_embeddings, prompts, multimask_output)
        caption_queries, prefix = self.caption_prefix(segmentation, task_type_ids)
        output = ScaOutput(
            iou_scores=segmentation.iou_scores,
            pred_masks=segmentation.pred_masks,
            caption_queries=caption_queries,
            prefix_embeds=prefix,
            image_embeddings=image_embeddings,
        )
        if input_ids is None:
            return output

        num_regions, prefix_len = prefix.shape[1], prefix.shape[2]
        caption_len = input_ids.shape[-1]
        prefix = prefix.flatten(0, 1)
        token_embeds = self.language_model.get_input_embeddings()(input_ids.flatten(0, 1))
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        lm_attention = torch.cat(
            [attention_mask.new_ones(prefix.shape[:2]), attention_mask.flatten(0, 1)], dim=1
        )
        lm_output = self.language_model(
            inputs_embeds=torch.cat([prefix, token_embeds.to(prefix.dtype)], dim=1),
            attention_mask=lm_attention,
            use_cache=False,
        )
        # The last prefix position predicts the first caption token.
        logits = lm_output.logits[:, prefix_len - 1 : prefix_len - 1 + caption_len]
        output.logits = logits.reshape(batch_size, num_regions, caption_len, -1)
        if labels is not None:
            output.loss = F.cross_entropy(
                logits.float().flatten(0, 1),
                labels.flatten().to(logits.device),
                ignore_index=-100,
                label_smoothing=LABEL_SMOOTHING,
            )
        return output

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.Tensor | None = None,
        input_points: torch.Tensor | None = None,
        input_labels: torch.Tensor | None = None,
        input_boxes: torch.Tensor | None = None,
        input_masks: torch.Tensor | None = None,
        task_type_ids: torch.Tensor | None = None,
        image_embeddings: torch.Tensor | None = None,
        multimask_output: bool = True,
        chunk_size: int | None = None,
        min_iou: float | None = None,
        max_new_tokens: int = GenerationOptions.max_new_tokens,
        num_beams: int = GenerationOptions.num_beams,
        pad_token_id: int | None = None,
        eos_token_id: int | None = None,
        **generate_kwargs,
    ) -> ScaGenerationOutput:
        """Segment and caption B images × R regions.

        The image encoder runs once (or not at all, given `image_embeddings`); regions go through SAM, the
        mixer and the LM in chunks of `chunk_size` regions per image (all at once when None), and the LM
        decodes each chunk's regions of all images as one batch with its KV cache. Memory follows the chunk;
        the LM's weights are read once per step for the whole chunk, so larger chunks decode faster. Within a
        chunk, SAM and the mixer run on a CPU in cache-sized groups of regions. `min_iou`: see
        `ScaMaskCaptionDecoder.segment` (`math.inf`: captions alone, no masks made).
        """
        if image_embeddings is None:
            image_embeddings = self.get_image_embeddings(pixel_values)
        batch_size = _coarsest(image_embeddings).shape[0]
        if task_type_ids is None:
            task_type_ids = self.task_type_ids(None, batch_size)
        prompts = Prompts(points=input_points, labels=input_labels, boxes=input_boxes, masks=input_masks)
        num_regions = prompts.num_regions
        chunk_size = chunk_size if chunk_size else num_regions
        pad_token_id, eos_token_id = self._special_ids(pad_token_id, eos_token_id)

        sequences, iou_scores, pred_masks = [], [], []
        with onednn_linear_layers(_coarsest(image_embeddings).device):
            for start in range(0, num_regions, chunk_size):
                chunk = slice(start, start + chunk_size)
                parts = [
                    (segmentation.iou_scores, segmentation.pred_masks, self.caption_prefix(segmentation, task_type_ids)[1])
                    for segmentation in self._segment_in_groups(image_embeddings, prompts.take(chunk), multimask_output,
                                                                min_iou)
                ]
                scores, masks, prefix = (torch.cat(part, dim=1) for part in zip(*parts))
                sequences.append(self.generate_from_prefix(
                    prefix, max_new_tokens=max_new_tokens, num_beams=num_beams, pad_token_id=pad_token_id,
                    eos_token_id=eos_token_id, rows=batch_size * chunk_size, **generate_kwargs))
                iou_scores.append(scores)
                pred_masks.append(masks)

        length = max(s.shape[-1] for s in sequences)
        sequences = [F.pad(s, (0, length - s.shape[-1]), value=pad_token_id) for s in sequences]
        return ScaGenerationOutput(
            sequences=torch.cat(sequences, dim=1),
            iou_scores=torch.cat(iou_scores, dim=1),
            pred_masks=torch.cat(pred_masks, dim=1),
        )

    @torch.no_grad()
    def generate_from_prefix(self, prefix: torch.Tensor, max_new_tokens: int = GenerationOptions.max_new_tokens,
                             num_beams: int = GenerationOptions.num_beams, pad_token_id: int | None = None,
                             eos_token_id: int | None = None, rows: int | None = None,
                             **generate_kwargs) -> torch.Tensor:
        """The LM decodes `(B, R, P, H)` prefixes (`caption_prefix`'s) as one batch with its KV cache → `(B, R, L)`
        token ids. `rows`: with a static cache, the batch is padded to this many rows (see below). On a CPU, run it
        within `onednn_linear_layers` (as `generate` does)."""
        batch_size, regions = prefix.shape[:2]
        pad_token_id, eos_token_id = self._special_ids(pad_token_id, eos_token_id)
        generate_kwargs.setdefault("do_sample", False)  # the LM's own generation config may say otherwise
        prefix = prefix.flatten(0, 1)
        count = prefix.shape[0]
        if generate_kwargs.get("cache_implementation") == "static" and rows is not None and count < rows:
            # The static cache's decoding step is compiled for the first batch shape it meets (~30 s on a GPU);
            # a second shape compiles it again for any batch size (~40-50 s). The last, shorter chunk is padded
            # to the others' shape by repeating its last row, so one image at a time never meets a second shape.
            prefix = torch.cat([prefix, prefix[-1:].expand(rows - count, -1, -1)])
        with dropped(NEEDLESS_PADDING):
            tokens = self.language_model.generate(
                inputs_embeds=prefix,
                attention_mask=prefix.new_ones(prefix.shape[:2], dtype=torch.long),
                max_new_tokens=max_new_tokens,
                num_beams=num_beams,
                pad_token_id=pad_token_id,
                eos_token_id=eos_token_id,
                **generate_kwargs,
            )[:count]
        return tokens.reshape(batch_size, regions, -1)

    def _special_ids(self, pad_token_id: int | None, eos_token_id: int | None) -> tuple[int, int]:
        """The pad and end ids, given or the LM's (pad falls back on end)."""
        eos_token_id = self.language_model.generation_config.eos_token_id if eos_token_id is None else eos_token_id
        if isinstance(eos_token_id, list):
            eos_token_id = eos_token_id[0]
        if pad_token_id is None:
            pad_token_id = self.language_model.generation_config.pad_token_id
        return (eos_token_id if pad_token_id is None else pad_token_id), eos_token_id

    def _segment_in_groups(self, image_embeddings: torch.Tensor, prompts: Prompts, multimask_output: bool,
                           min_iou: float | None = None) -> Iterator[Segmentation]:
        """`segment`, a group of regions at a time.

        On a CPU the groups are cache-sized: every region reworks its own copy of the image features through
        each layer of SAM and the mixer, and copies that stay in cache run ~1.5× faster than one large batch.
        On an accelerator all regions go at once.
        """
        num_regions = prompts.num_regions
        group = num_regions
        if _coarsest(image_embeddings).device.type == "cpu":
            levels = image_embeddings if isinstance(image_embeddings, list | tuple) else [image_embeddings]
            group = max(1, CPU_REGION_GROUP_BYTES // sum(level.numel() * level.element_size() for level in levels))
        for start in range(0, num_regions, group):
            yield self.segment(image_embeddings, prompts.take(slice(start, start + group)), multimask_output, min_iou)


class ScaModel(ScaCaptioning, ScaPreTrainedModel):
    """Segment and Caption Anything (the original's `ScaMultitaskV2Model`).

    SAM segments each prompted region; the feature mixer's caption queries read SAM's output tokens and
    its updated image features; a linear projection maps them into the LM's embedding space behind the
    task tokens; the causal LM decodes the caption from that prefix.
    """

    _tied_weights_keys = {
        "prompt_encoder.shared_embedding.positional_embedding": "shared_image_embedding.positional_embedding"
    }
    default_trainable_modules = DEFAULT_TRAINABLE_MODULES

    def __init__(self, config: ScaConfig, language_model: PreTrainedModel | None = None):
        super().__init__(config)
        # SAM's modules read `_attn_implementation` from their own (non-PreTrainedModel) config.
        config.mask_caption_decoder_config._attn_implementation = config._attn_implementation
        self.shared_image_embedding = SamPositionalEmbedding(config.vision_config)
        self.vision_encoder = SamVisionEncoder(config.vision_config)
        self.prompt_encoder = SamPromptEncoder(config)
        self.mask_decoder = ScaMaskCaptionDecoder(config.mask_caption_decoder_config)

        self._add_language_half(config.mask_caption_decoder_config.hidden_size, language_model)
        self.post_init()
        self.set_trainable(self.default_trainable_modules)

    # ------------------------------------------------------------------ building

    @classmethod
    def from_sam_and_lm(
        cls,
        sam: str,
        lm: str,
        mixer_layers: int | None = None,
        caption_tokens: int | None = None,
        task_tokens: int | None = None,
        **from_pretrained_kwargs,
    ) -> ScaModel:
        """Build a fresh SCA model from a SAM checkpoint and a causal LM (hub names or local folders).

        SAM's and the LM's weights are loaded; the mixer, caption queries, task tokens and projection are
        newly initialised. Sizes left None take the configuration classes' defaults (the paper's).
        """
        sam_model = SamModel.from_pretrained(sam, **from_pretrained_kwargs)
        language_model = AutoModelForCausalLM.from_pretrained(lm, **from_pretrained_kwargs)
        sam_config = sam_model.config
        sizes = {"additional_num_hidden_layers": mixer_layers, "num_caption_tokens": caption_tokens}
        decoder_config = ScaMaskCaptionDecoderConfig(
            **sam_config.mask_decoder_config.to_dict(), **{k: v for k, v in sizes.items() if v is not None})
        config = ScaConfig(
            vision_config=sam_config.vision_config.to_dict(),
            prompt_encoder_config=sam_config.prompt_encoder_config.to_dict(),
            mask_caption_decoder_config=decoder_config.to_dict(),
            text_config=language_model.config.to_dict(),
            **({} if task_tokens is None else {"num_task_tokens": task_tokens}),
        )
        model = cls(config, language_model=language_model)
        missing, unexpected = model.load_state_dict(sam_model.state_dict(), strict=False)
        if unexpected:
            raise ValueError(f"SAM checkpoint {sam} has weights SCA does not know: {unexpected[:5]}")
        new_modules = ("mask_decoder.additional_transformer.", "mask_decoder.caption_tokens.",
                       "language_project.", "task_tokens.", "language_model.")
        not_loaded = [k for k in missing if not k.startswith(new_modules)]
        if not_loaded:
            raise ValueError(f"SAM checkpoint {sam} lacks weights SCA needs: {not_loaded[:5]}")
        return model

    # ------------------------------------------------------------------ the parts of the pass

    def get_image_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, 3, S, S)` preprocessed images → `(B, C, H, W)` image embeddings.

        On a CPU the encoder attends block by block (`vision_attention.py`: same weights, same results, half the
        time there); elsewhere it uses its own attention (SDPA).
        """
        with onednn_linear_layers(pixel_values.device):
            return encoder_for(self.vision_encoder, pixel_values.device)(pixel_values.to(self.dtype)).last_hidden_state

    def get_image_wide_positional_embeddings(self) -> torch.Tensor:
        """`(1, C, H, W)` positional encoding of the cell centres of the image-embedding grid."""
        size = self.config.prompt_encoder_config.image_embedding_size
        weight = self.shared_image_embedding.positional_embedding
        cells = (torch.arange(size, device=weight.device, dtype=weight.dtype) + 0.5) / size
        y, x = torch.meshgrid(cells, cells, indexing="ij")
        embedding = self.shared_image_embedding(torch.stack([x, y], dim=-1))
        return embedding.permute(2, 0, 1).unsqueeze(0)

    def segment(self, image_embeddings: torch.Tensor, prompts: Prompts, multimask_output: bool = True,
                min_iou: float | None = None) -> Segmentation:
        """Encode the prompts (`(B, R, ...)` in the model's input frame, see `Prompts`) and run SAM's decoder
        (`min_iou`: see `ScaMaskCaptionDecoder.segment`)."""
        batch_size, num_regions = image_embeddings.shape[0], prompts.num_regions
        sparse, _ = self.prompt_encoder(
            input_points=prompts.points, input_labels=prompts.labels, input_boxes=prompts.boxes, input_masks=None
        )
        if sparse is None:
            hidden = self.config.prompt_encoder_config.hidden_size
            sparse = image_embeddings.new_zeros(batch_size, num_regions, 0, hidden)
        if prompts.masks is not None:
            masks = prompts.masks.to(image_embeddings.dtype).flatten(0, 1).unsqueeze(1)
            dense = self.prompt_encoder.mask_embed(masks)
        else:
            dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return self.mask_decoder.segment(
            image_embeddings, self.get_image_wide_positional_embeddings(), sparse, dense, multimask_output, min_iou
        )

    def mix(self, segmentation: DecoderState) -> torch.Tensor:
        """The feature mixer: `(B, R, num_caption_tokens, C)` caption queries."""
        return self.mask_decoder.mix(segmentation, self.get_image_wide_positional_embeddings())

def _coarsest(image_embeddings: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """The image embedding itself, or the coarsest of a list of feature levels (SAM 2's)."""
    return image_embeddings[-1] if isinstance(image_embeddings, list | tuple) else image_embeddings


def _contiguous_inputs(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.contiguous() if isinstance(a, torch.Tensor) else a for a in args)
