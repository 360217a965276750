"""Configuration of the SCA model, compatible with the original release's `config.json`."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.models.sam.configuration_sam import (
    SamMaskDecoderConfig,
    SamPromptEncoderConfig,
    SamVisionConfig,
)

from ..data.records import TASK_TYPES  # noqa: F401 - the task tokens' rows follow it


@strict
class ScaMaskCaptionDecoderConfig(SamMaskDecoderConfig):
    r"""
    SAM's mask decoder plus the feature mixer and its caption queries.

    additional_num_hidden_layers (`int`, defaults to 12):
        Depth of the feature mixer (a two-way transformer of SAM's block type).
    num_caption_tokens (`int`, defaults to 8):
        Learned caption queries per region; they become the LM prefix after projection.
    num_caption_heads (`int`, defaults to 1):
        Caption groups per region. Only 1 is supported, as in every published checkpoint.
    """

    base_config_key = "mask_caption_decoder_config"
    model_type = "sca_mask_caption_decoder"

    additional_num_hidden_layers: int = 12
    num_caption_tokens: int = 8
    num_caption_heads: int = 1


@strict
class ScaConfig(PreTrainedConfig):
    r"""
    Configuration of [`ScaModel`]: SAM (vision encoder, prompt encoder, mask decoder), the feature mixer,
    the projection into the language model, task tokens, and any causal language model.

    The field names are those of the original release, so its checkpoints load unchanged.

    vision_config (`SamVisionConfig` or `dict`): SAM's ViT image encoder.
    prompt_encoder_config (`SamPromptEncoderConfig` or `dict`): SAM's prompt encoder.
    mask_caption_decoder_config (`ScaMaskCaptionDecoderConfig` or `dict`): SAM's decoder and the mixer.
    text_config (`PreTrainedConfig` or `dict`): the causal LM's configuration (any `AutoModelForCausalLM`).
    num_task_tokens (`int`, defaults to 6): learned prefix tokens per task (caption / recognition).
    prompt_kinds (`list[str]`, *optional*): the prompt kinds the model was trained to caption (`points`, `boxes`,
        `masks`); every door refuses the others. None: all three (SAM's pretrained prompt encoder takes masks). A model
        whose SAM was trained from scratch without mask prompts (the shipped shapes model) lists only the others.
    anything_filters (`dict`, *optional*): anything mode's default `pred_iou_thresh` and `stability_score_thresh`
        for this model, where its scores are calibrated otherwise than SAM's (measured with `sca bench quality`). None:
        SAM's (0.88, 0.95).
    initializer_range (`float`, defaults to 0.02): std of the normal init of the new modules.
    """

    model_type = "sca"
    sub_configs_defaults = {
        "vision_config": SamVisionConfig,
        "prompt_encoder_config": SamPromptEncoderConfig,
        "mask_caption_decoder_config": ScaMaskCaptionDecoderConfig,
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="gpt2"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    prompt_encoder_config: dict | PreTrainedConfig | None = None
    mask_caption_decoder_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    num_task_tokens: int = 6
    prompt_kinds: list[str] | None = None
    anything_filters: dict | None = None
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True

    def validate_embedding_grid(self):
        """The prompt encoder's grid is the image encoder's (transformers derives neither from the other)."""
        grid = self.vision_config.image_size // self.vision_config.patch_size
        if self.prompt_encoder_config.image_embedding_size != grid:
            raise ValueError(f"prompt_encoder_config.image_embedding_size is "
                             f"{self.prompt_encoder_config.image_embedding_size!r}, but the image encoder makes a "
                             f"{grid}x{grid} grid (vision_config.image_size / patch_size)")

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.mask_caption_decoder_config.num_caption_heads != 1:
            raise ValueError(
                "num_caption_heads must be 1: the multi-head variant was never released; "
                "use a base_sca_multitask_v2 checkpoint"
            )
