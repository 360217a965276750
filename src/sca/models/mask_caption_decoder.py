"""SAM's mask decoder, opened up so the feature mixer can read what SAM's transformer computed.

`SamMaskDecoder.forward` returns only masks and IoU scores. SCA also needs SAM's output tokens after its
two-way transformer and the image features that transformer updated, so `segment` runs the decoder's own
submodules step by step, and `mix` runs the feature mixer on what `segment` returned.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.models.sam.modeling_sam import SamMaskDecoder, SamTwoWayTransformer

from .configuration import ScaMaskCaptionDecoderConfig
from .two_way import run_two_way_transformer
from .upscaling import upscaled_masks


@dataclass
class DecoderState:
    """What the segmenter's two-way transformer made for B images × R regions: what the feature mixer reads.

    output_tokens: `(B, R, T, C)` the decoder's tokens (IoU, mask tokens, prompt tokens) after its transformer.
    image_features: `(B, R, H·W, C)` the image embeddings after its transformer, one copy per region.
    region_features: `(B, R, C)`, *optional*: added to each region's caption queries after the mixer (SCA on SAM 2's
        fine levels pooled inside the region's mask, `mixer_high_resolution`); None for the other segmenters.
    """

    output_tokens: torch.Tensor
    image_features: torch.Tensor
    region_features: torch.Tensor | None = field(default=None, kw_only=True)

    @staticmethod
    def concat(states: list[DecoderState]) -> DecoderState:
        """Regions of one image with as many tokens each, side by side: `(1, sum R, ...)`."""
        regions = [s.region_features for s in states]
        return DecoderState(torch.cat([s.output_tokens for s in states], dim=1),
                            torch.cat([s.image_features for s in states], dim=1),
                            region_features=None if None in regions else torch.cat(regions, dim=1))

    def to(self, device: torch.device | str, dtype: torch.dtype) -> DecoderState:
        """The same state on `device`, in `dtype`."""
        region = None if self.region_features is None else self.region_features.to(device, dtype)
        return DecoderState(self.output_tokens.to(device, dtype), self.image_features.to(device, dtype),
                            region_features=region)


@dataclass
class Segmentation(DecoderState):
    """What SAM's decoder produced for B images × R regions: its state (`DecoderState`) and its masks.

    iou_scores: `(B, R, M)` SAM's predicted IoU per candidate mask (M = 3 with multimask output, else 1).
    pred_masks: `(B, R, M, h, w)` low-resolution mask logits (h, w = 4 × the image-embedding grid).
    """

    iou_scores: torch.Tensor
    pred_masks: torch.Tensor

    @staticmethod
    def concat(parts: list[Segmentation]) -> Segmentation:
        """Regions segmented apart, side by side: `(B, sum R, ...)`."""
        state = DecoderState.concat(parts)
        return Segmentation(state.output_tokens, state.image_features,
                            torch.cat([p.iou_scores for p in parts], dim=1),
                            torch.cat([p.pred_masks for p in parts], dim=1), region_features=state.region_features)


class ScaMaskCaptionDecoder(SamMaskDecoder):
    """SAM's mask decoder plus the feature mixer (`additional_transformer`) and its learned caption queries.

    The submodule names are those of the original release (`mask_decoder.additional_transformer.*`,
    `mask_decoder.caption_tokens`), so SAM checkpoints and SCA checkpoints both load by name.
    """

    def __init__(self, config: ScaMaskCaptionDecoderConfig):
        super().__init__(config)
        mixer_config = copy.deepcopy(config)
        mixer_config.num_hidden_layers = config.additional_num_hidden_layers
        self.additional_transformer = SamTwoWayTransformer(mixer_config)
        self.num_caption_tokens = config.num_caption_tokens
        self.caption_tokens = nn.Embedding(config.num_caption_heads * config.num_caption_tokens, config.hidden_size)

    def segment(
        self,
        image_embeddings: torch.Tensor,
        image_positional_embeddings: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool = True,
        min_iou: float | None = None,
    ) -> Segmentation:
        """Run SAM's decoder.

        Args:
            image_embeddings: `(B, C, H, W)` from the image encoder.
            image_positional_embeddings: `(1, C, H, W)` dense positional encoding of the embedding grid.
            sparse_prompt_embeddings: `(B, R, n, C)` point and box tokens (n may be 0).
            dense_prompt_embeddings: `(B·R, C, H, W)` mask-prompt embeddings, or `(1, C, 1, 1)` (no mask).
            min_iou: if given, only regions with a candidate whose predicted IoU is above it get their masks
                upscaled; the others' mask logits are -inf. The IoU head reads SAM's tokens, not the masks, so a
                filter on it (anything mode's) can run before the upscaling, the largest part of the decoder.
        """
        batch_size, channels, height, width = image_embeddings.shape
        num_regions = sparse_prompt_embeddings.shape[1]

        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.expand(batch_size, num_regions, -1, -1)
        tokens = torch.cat([output_tokens, sparse_prompt_embeddings.to(output_tokens.dtype)], dim=2)

        image = image_embeddings.flatten(2).transpose(1, 2)
        dense = dense_prompt_embeddings.flatten(2).transpose(1, 2)
        if dense.shape[0] == 1:  # no mask prompts: the regions share one image side until SAM's first update
            image = image + dense
        else:
            image = image[:, None] + dense.unflatten(0, (batch_size, num_regions))
        tokens, image = run_two_way_transformer(
            self.transformer, tokens, image.contiguous(), _as_sequence(image_positional_embeddings)
        )
        mask_slice = slice(1, None) if multimask_output else slice(0, 1)
        iou_scores = self.iou_prediction_head(tokens[:, :, 0])[:, :, mask_slice]
        hyper_in = torch.stack(
            [mlp(tokens[:, :, 1 + i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=2
        )
        # At inference only the masks returned are made (3 of the 4 with multimask output, else the first); training
        # makes all four, so that every hypernetwork gets a gradient (distributed training expects one for each).
        made = slice(None) if torch.is_grad_enabled() else mask_slice
        hyper_in = hyper_in[:, :, made].flatten(0, 1)

        image_sides = image.reshape(batch_size * num_regions, height, width, channels)
        wanted = None if min_iou is None else torch.nonzero((iou_scores > min_iou).any(-1).flatten()).flatten()
        if wanted is None or len(wanted) == len(image_sides):
            masks = upscaled_masks(self, image_sides, hyper_in)
        else:
            masks = image_sides.new_full((len(image_sides), hyper_in.shape[1], 4 * height, 4 * width), -torch.inf)
            if len(wanted):
                masks[wanted] = upscaled_masks(self, image_sides[wanted], hyper_in[wanted])
        if made is not mask_slice:
            masks = masks[:, mask_slice]
        return Segmentation(
            iou_scores=iou_scores,
            pred_masks=masks.unflatten(0, (batch_size, num_regions)),
            output_tokens=tokens,
            image_features=image,
        )

    def mix(self, segmentation: DecoderState, image_positional_embeddings: torch.Tensor) -> torch.Tensor:
        """Run the feature mixer: caption queries read SAM's output tokens and its updated image features.

        Returns:
            `(B, R, num_caption_tokens, C)`: the caption queries after the mixer.
        """
        batch_size, num_regions = segmentation.output_tokens.shape[:2]
        queries = self.caption_tokens.weight.expand(batch_size, num_regions, -1, -1)
        queries = torch.cat([queries, segmentation.output_tokens], dim=2)
        queries, _ = run_two_way_transformer(
            self.additional_transformer,
            queries,
            segmentation.image_features,
            _as_sequence(image_positional_embeddings),
        )
        return queries[:, :, : self.num_caption_tokens]


def _as_sequence(image_positional_embeddings: torch.Tensor) -> torch.Tensor:
    """`(1, C, H, W)` → `(H·W, C)`, contiguous (it is added to every region's image side in every layer)."""
    return image_positional_embeddings[0].flatten(1).transpose(0, 1).contiguous()
