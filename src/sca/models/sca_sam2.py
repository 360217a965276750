"""SCA on SAM 2: SAM 2's image encoder, prompt encoder and mask decoder (transformers' own modules), the SCA feature
mixer reading SAM 2's decoder tokens and the stride-16 image features its two-way transformer updated, a projection,
task tokens and any causal LM.

What the mixer reads: the same two things SCA reads on SAM — SAM 2's output tokens (object score, IoU and mask
tokens, then the prompt tokens) and the stride-16 image features after the decoder's two-way transformer, one copy per
region. SAM 2's stride-4 and stride-8 levels are 16× and 4× the stride-16 grid, and a per-region copy of them
(transformers' decoder makes one for its upscaling) is what the region's memory goes on; by default they reach the
caption only through the masks they sharpen. With `mixer_high_resolution` each region's stride-4 and stride-8
features are also averaged inside its mask and projected into one more caption query, which the LM reads beside the
mixer's: a SAM 2 trained from scratch on the shapes world keeps colour there and not at stride 16 (a linear probe of a
shape's colour from its pooled features: 80% at stride 4, 68% at stride 8, 31% at stride 16; the shipped SAM's stride-8
features: 88%), and the mixer's own queries do not carry it on (pooled to the stride-16 grid and added to the image
side, the fine levels left the captions colour-blind).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedConfig, PreTrainedModel, Sam2Config, Sam2Model
from transformers import initialization as init
from transformers.configuration_utils import SubConfigSpec
from transformers.models.sam2.modeling_sam2 import (
    Sam2HieraDetModel,
    Sam2PositionalEmbedding,
    Sam2PreTrainedModel,
    Sam2TwoWayTransformer,
)

from .configuration import ScaMaskCaptionDecoderConfig
from .mask_caption_decoder import DecoderState, Segmentation
from .prompts import Prompts
from .quiet import IMAGE_MODEL_OF_A_VIDEO_CHECKPOINT, dropped
from .sca import ScaCaptioning

DEFAULT_TRAINABLE_MODULES = ("mixer", "caption_tokens", "task_tokens", "language_project")
"""What trains by default: the mixer, its queries, the task tokens and the projection (SAM 2 and the LM frozen)."""
# (fine levels `(B, C_l, H_l, W_l)` each, mask logits `(B, R, M, 4h, 4w)`, IoU scores `(B, R, M)`) → `(B, R, C)`
RegionFeatures = Callable[[Sequence[torch.Tensor], torch.Tensor, torch.Tensor], torch.Tensor]


@strict
class ScaSam2Config(PreTrainedConfig):
    r"""
    Configuration of [`ScaSam2Model`]: SAM 2 (Hiera image encoder, prompt encoder, mask decoder), the feature mixer,
    the projection into the language model, task tokens, and any causal language model.

    sam2_config (`Sam2Config` or `dict`): SAM 2's image model (a SAM 2 / 2.1 checkpoint's `config.json`).
    text_config (`PreTrainedConfig` or `dict`): the causal LM's configuration (any `AutoModelForCausalLM`).
    mixer_layers (`int`, defaults to SCA's 12): depth of the feature mixer (a two-way transformer of SAM 2's block
        type, as wide as SAM 2's decoder).
    num_caption_tokens (`int`, defaults to SCA's 8): learned caption queries per region.
    num_task_tokens (`int`, defaults to 6): learned prefix tokens per task (caption / recognition).
    prompt_kinds (`list[str]`, *optional*): the prompt kinds the model was trained to caption (see `ScaConfig`).
    anything_filters (`dict`, *optional*): anything mode's default filters for this model (see `ScaConfig`).
    initializer_range (`float`, defaults to 0.02): std of the normal init of the new modules.
    mixer_high_resolution (`bool`, defaults to False): each region's SAM 2 stride-4 and stride-8 features, averaged
        inside its mask and projected, are one more caption query (`num_caption_tokens + 1` reach the LM).
    """

    model_type = "sca_sam2"
    input_frame = "stretch"  # SAM 2's: the image resized to a square, its aspect ratio not kept (`StretchFrame`)
    sub_configs_defaults = {
        "sam2_config": Sam2Config,
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="gpt2"),
    }

    sam2_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    mixer_layers: int = ScaMaskCaptionDecoderConfig.additional_num_hidden_layers
    num_caption_tokens: int = ScaMaskCaptionDecoderConfig.num_caption_tokens
    num_task_tokens: int = 6
    prompt_kinds: list[str] | None = None
    anything_filters: dict | None = None
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True
    mixer_high_resolution: bool = False

    @property
    def prompt_encoder_config(self) -> PreTrainedConfig:
        """SAM 2's prompt encoder's (the input frame is read from it)."""
        return self.sam2_config.prompt_encoder_config


class ScaSam2PreTrainedModel(PreTrainedModel):
    config_class = ScaSam2Config
    config: ScaSam2Config
    base_model_prefix = "sca_sam2"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["Sam2MultiScaleBlock"]

    def _init_weights(self, module: nn.Module):
        super()._init_weights(module)
        # SAM 2's own inits (`Sam2PreTrainedModel._init_weights`), which a model from scratch needs
        if isinstance(module, Sam2HieraDetModel):
            for name in ("pos_embed", "pos_embed_window"):
                if getattr(module, name) is not None:
                    init.zeros_(getattr(module, name))
        elif isinstance(module, Sam2PositionalEmbedding):
            init.normal_(module.positional_embedding, std=module.scale)
        elif isinstance(module, Sam2Model):
            init.zeros_(module.no_memory_embedding)


class ScaSam2Model(ScaCaptioning, ScaSam2PreTrainedModel):
    """Segment and Caption Anything on SAM 2: SAM 2 segments each prompted region; the feature mixer's caption queries
    read SAM 2's decoder tokens and its updated stride-16 image features; a projection maps them into the LM's
    embedding space behind the task tokens; the causal LM decodes the caption.

    Image embeddings are SAM 2's list of feature levels `[(B, C/8, 4H, 4W), (B, C/4, 2H, 2W), (B, C, H, W)]`.
    """

    default_trainable_modules = DEFAULT_TRAINABLE_MODULES
    # SCA's mask decoder holds the mixer and its queries: a recipe that trains it trains all three here
    module_aliases = {"mask_decoder.additional_transformer": "mixer", "mask_decoder.caption_tokens": "caption_tokens",
                      "vision_encoder": "sam.vision_encoder", "prompt_encoder": "sam.prompt_encoder",
                      "mask_decoder": ("sam.mask_decoder", "mixer", "caption_tokens")}
    _keys_to_ignore_on_load_unexpected = Sam2PreTrainedModel._keys_to_ignore_on_load_unexpected

    def __init__(self, config: ScaSam2Config, language_model: PreTrainedModel | None = None):
        super().__init__(config)
        config.sam2_config._attn_implementation = config._attn_implementation
        self.sam = Sam2Model(config.sam2_config)
        mixer_config = copy.deepcopy(config.sam2_config.mask_decoder_config)
        mixer_config.num_hidden_layers = config.mixer_layers
        self.mixer = Sam2TwoWayTransformer(mixer_config)
        self.caption_tokens = nn.Embedding(config.num_caption_tokens, mixer_config.hidden_size)
        width = config.sam2_config.mask_decoder_config.hidden_size  # conv_s0 makes width / 8 channels, conv_s1 width / 4
        self.high_resolution_project = (nn.Linear(width // 8 + width // 4, mixer_config.hidden_size)
                                        if config.mixer_high_resolution else None)
        if self.high_resolution_project is not None:  # it feeds the mixer: what trains or shuts the mixer does so to it
            mixer = ("mixer", "high_resolution_project")
            self.module_aliases = {**self.module_aliases, "mixer": mixer, "mask_decoder.additional_transformer": mixer,
                                   "mask_decoder": ("sam.mask_decoder", *mixer, "caption_tokens")}
        self._add_language_half(mixer_config.hidden_size, language_model)
        self.post_init()
        with torch.no_grad():
            if self.high_resolution_project is not None:
                self.high_resolution_project.weight.zero_()
                self.high_resolution_project.bias.zero_()
            # SAM 2's own init (PyTorch's defaults), not transformers' normal(0, 0.02), which is for checkpoints: from
            # it, the decoder's masks (a hypernetwork's output times upscaled features) start ~1e-4 and their
            # gradients as small, and a SAM 2 from scratch never left that start in a stage of training
            for module in self.sam.modules():
                if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                    module.reset_parameters()
            # SAM 2 encodes prompt points and image positions with one random Fourier basis (a checkpoint stores it
            # twice, equal); transformers' Sam2Model draws two at random, so a SAM 2 from scratch cannot tell where a
            # prompt is
            self.sam.prompt_encoder.shared_embedding.positional_embedding.copy_(
                self.sam.shared_image_embedding.positional_embedding)
        self.set_trainable(self.default_trainable_modules)

    @classmethod
    def from_sam2_and_lm(cls, sam2: str, lm: str, mixer_layers: int | None = None, caption_tokens: int | None = None,
                         task_tokens: int | None = None, mixer_high_resolution: bool = False,
                         **from_pretrained_kwargs) -> ScaSam2Model:
        """A fresh SCA on SAM 2 from a SAM 2 / 2.1 checkpoint (an image or a video one) and a causal LM (folders or
        hub ids): their weights loaded; the mixer, queries, task tokens and projection new (None: the defaults)."""
        with dropped(IMAGE_MODEL_OF_A_VIDEO_CHECKPOINT):
            sam = Sam2Model.from_pretrained(sam2, **from_pretrained_kwargs)
        language_model = AutoModelForCausalLM.from_pretrained(lm, **from_pretrained_kwargs)
        sizes = {"mixer_layers": mixer_layers, "num_caption_tokens": caption_tokens, "num_task_tokens": task_tokens}
        config = ScaSam2Config(sam2_config=sam.config.to_dict(), text_config=language_model.config.to_dict(),
                               mixer_high_resolution=mixer_high_resolution,
                               **{name: value for name, value in sizes.items() if value is not None})
        model = cls(config, language_model=language_model)
        model.sam.load_state_dict(sam.state_dict())
        return model.to(sam.dtype)

    # ------------------------------------------------------------------ the parts of the pass

    def get_image_embeddings(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """`(B, 3, S, S)` → SAM 2's feature levels, finest first (as `Sam2Model.get_image_embeddings`, with gradients
        when the encoder trains)."""
        batch_size = pixel_values.shape[0]
        features = self.sam.get_image_features(pixel_values.to(self.dtype), return_dict=True).fpn_hidden_states
        features = list(features)
        features[-1] = features[-1] + self.sam.no_memory_embedding
        return [feature.permute(1, 2, 0).reshape(batch_size, -1, *size)
                for feature, size in zip(features, self.sam.backbone_feature_sizes)]

    def segment(self, image_embeddings: list[torch.Tensor], prompts: Prompts, multimask_output: bool = True,
                min_iou: float | None = None) -> Segmentation:
        """SAM 2's prompt encoder and mask decoder (transformers' `Sam2Model.forward` on the given embeddings), keeping
        what its two-way transformer made for the mixer. Mask prompts go one region at a time (SAM 2's decoder takes
        one dense prompt per image). `min_iou` is not used: every mask is made."""
        if prompts.masks is not None and prompts.num_regions > 1:
            parts = [self.segment(image_embeddings, prompts.take(slice(r, r + 1)), multimask_output)
                     for r in range(prompts.num_regions)]
            return Segmentation.concat(parts)
        inputs = {name: value for name, value in prompts.as_sam_inputs().items() if name != "valid"}
        if inputs["input_masks"] is not None:
            inputs["input_masks"] = inputs["input_masks"][:, 0, None]  # (B, 1, 4h, 4w)
        with kept_decoder_states(self.sam.mask_decoder, self.region_features) as kept:
            output = self.sam(image_embeddings=image_embeddings, multimask_output=multimask_output, **inputs)
        state = kept[0]
        return Segmentation(output_tokens=state.output_tokens, image_features=state.image_features,
                            iou_scores=output.iou_scores, pred_masks=output.pred_masks,
                            region_features=state.region_features)

    @property
    def region_features(self) -> RegionFeatures | None:
        """`high_resolution_region` with `mixer_high_resolution`, else None."""
        return self.high_resolution_region if self.high_resolution_project is not None else None

    def high_resolution_region(self, fine_levels: Sequence[torch.Tensor], pred_masks: torch.Tensor,
                               iou_scores: torch.Tensor) -> torch.Tensor:
        """`(B, R, C)`: each region's fine features (SAM 2's stride-4 and stride-8 levels, `(B, C_l, H_l, W_l)` each,
        as its decoder gets them) averaged inside its mask (the one of highest predicted IoU; `pred_masks`
        `(B, R, M, 4h, 4w)`, on the stride-4 grid) and projected: one more caption query (`mixer_high_resolution`). The
        mask is detached: captions do not move masks."""
        best = iou_scores.argmax(dim=-1)[..., None, None, None].expand(-1, -1, 1, *pred_masks.shape[-2:])
        weights = pred_masks.gather(2, best)[:, :, 0].detach().float().sigmoid()  # (B, R, 4h, 4w)
        pooled = []
        for level in fine_levels:
            level_weights = nn.functional.adaptive_avg_pool2d(weights, level.shape[-2:])
            total = level_weights.sum(dim=(-2, -1))[..., None].clamp_min(1e-6)
            pooled.append(torch.einsum("brhw,bchw->brc", level_weights.to(level.dtype), level) / total.to(level.dtype))
        return self.high_resolution_project(torch.cat(pooled, dim=-1))

    def mix(self, segmentation: DecoderState) -> torch.Tensor:
        """The feature mixer: `(B, R, num_caption_tokens, C)` caption queries, from SAM 2's decoder state (an image's,
        or a video model's conditioned on its memory: the same decoder); one more, the state's `region_features`,
        with `mixer_high_resolution`."""
        tokens, image = segmentation.output_tokens, segmentation.image_features
        batch_size, num_regions, _, channels = image.shape
        height, width = self.sam.prompt_encoder.image_embedding_size
        queries = self.caption_tokens.weight.expand(batch_size, num_regions, -1, -1)
        queries = torch.cat([queries, tokens.to(queries.dtype)], dim=2)
        sides = image.reshape(batch_size * num_regions, height, width, channels).permute(0, 3, 1, 2)
        queries, _ = self.mixer(point_embeddings=queries, image_embeddings=sides,
                                image_positional_embeddings=self.sam.get_image_wide_positional_embeddings(),
                                attention_similarity=None)
        queries = queries[:, :, : self.config.num_caption_tokens]
        if segmentation.region_features is not None:
            queries = torch.cat([queries, segmentation.region_features[:, :, None].to(queries.dtype)], dim=2)
        return queries


@contextlib.contextmanager
def kept_decoder_states(mask_decoder: nn.Module, region_features: RegionFeatures | None = None
                        ) -> Iterator[list[DecoderState]]:
    """The decoder states SAM 2's mask decoder makes while the block runs, one a call (it returns masks and scores,
    not the tokens and image features its two-way transformer made, which the mixer reads). With `region_features`
    (`ScaSam2Model.region_features`) each state also carries its regions' fine features, pooled inside the masks that
    call made: an image model's or a video tracker's, the same decoder."""
    kept: list[DecoderState] = []

    def keep(_module, _args, output) -> None:
        tokens, image = output
        kept.append(DecoderState(tokens, image.reshape(*tokens.shape[:2], *image.shape[-2:])))

    def pool(_module, _args, kwargs, output) -> None:
        masks, scores = output[0], output[1]
        kept[-1].region_features = region_features(kwargs["high_resolution_features"], masks, scores)

    handles = [mask_decoder.transformer.register_forward_hook(keep)]
    if region_features is not None:
        handles.append(mask_decoder.register_forward_hook(pool, with_kwargs=True))
    try:
        yield kept
    finally:
        for handle in handles:
            handle.remove()
