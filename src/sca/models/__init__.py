"""SCA models: `ScaModel` (the paper's method, on SAM), `ScaSam2Model` (on SAM 2) and their configurations.

Both are registered with transformers' Auto classes, so that a folder of either loads through them (its tokenizer
too: `AutoTokenizer` reads the folder's config first, and warns on a type it does not know)."""

from transformers import AutoConfig, AutoModel

from .configuration import TASK_TYPES, ScaConfig, ScaMaskCaptionDecoderConfig
from .sca import DEFAULT_TRAINABLE_MODULES, ScaGenerationOutput, ScaModel, ScaOutput
from .sca_sam2 import ScaSam2Config, ScaSam2Model

for _config, _model in ((ScaConfig, ScaModel), (ScaSam2Config, ScaSam2Model)):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)

__all__ = [
    "DEFAULT_TRAINABLE_MODULES",
    "TASK_TYPES",
    "ScaConfig",
    "ScaGenerationOutput",
    "ScaMaskCaptionDecoderConfig",
    "ScaModel",
    "ScaOutput",
]
