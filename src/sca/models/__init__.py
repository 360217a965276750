"""SCA models: `ScaModel` (the paper's method) and its configuration."""

from transformers import AutoConfig, AutoModel

from .configuration import TASK_TYPES, ScaConfig, ScaMaskCaptionDecoderConfig
from .sca import DEFAULT_TRAINABLE_MODULES, ScaGenerationOutput, ScaModel, ScaOutput

AutoConfig.register(ScaConfig.model_type, ScaConfig, exist_ok=True)
AutoModel.register(ScaConfig, ScaModel, exist_ok=True)

__all__ = [
    "DEFAULT_TRAINABLE_MODULES",
    "TASK_TYPES",
    "ScaConfig",
    "ScaGenerationOutput",
    "ScaMaskCaptionDecoderConfig",
    "ScaModel",
    "ScaOutput",
]
