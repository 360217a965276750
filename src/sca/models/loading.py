"""Loading a model folder and its tokenizer, with errors that say what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from ..errors import InputError
from .configuration import ScaConfig
from .sca import ScaModel

SUPPORTED_ARCHITECTURES = {"ScaModel", "ScaMultitaskV2Model"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""The precisions a model can run in, by the names configs and command lines use."""


def read_model_config(path: str | Path) -> dict:
    """The folder's `config.json`, after checking it is an SCA model folder."""
    folder = Path(path)
    if not folder.exists():
        raise InputError(f"model folder not found: {folder}")
    config_file = folder / "config.json"
    if not folder.is_dir() or not config_file.is_file():
        raise InputError(f"{folder} is not a model folder (no config.json): pass a folder saved by save_pretrained")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{config_file} is not valid JSON: {error}") from error
    return config


def load_sca_model(path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> ScaModel:
    """Load an SCA checkpoint: one saved by this project or by the original release."""
    config = read_model_config(path)
    if config.get("model_type") != ScaConfig.model_type:
        raise InputError(f"{path} holds a {config.get('model_type')!r} model, not an SCA model")
    architecture = (config.get("architectures") or ["ScaModel"])[0]
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise InputError(
            f"{path} is an SCA {architecture} checkpoint; only ScaMultitaskV2Model (the published models) is supported"
        )
    has_weights = any(Path(path).glob(pattern) for pattern in ("*.safetensors", "*.bin", "*.safetensors.index.json"))
    if not has_weights:
        raise InputError(f"{path} has a config.json but no weights (*.safetensors or *.bin)")
    model = ScaModel.from_pretrained(path, dtype=dtype)
    return model.to(device).eval()


def load_tokenizer(path: str | Path, config: ScaConfig | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer saved with a model, else the one its LM was built from (`text_config._name_or_path`).

    Original checkpoints carry no tokenizer; their LM's name (e.g. `gpt2-large`) finds it in the local
    Hugging Face cache or on the hub.
    """
    folder = Path(path)
    candidates = [folder, folder / "tokenizer"]
    lm_name = getattr(config.text_config, "_name_or_path", "") if config is not None else ""
    if lm_name:
        candidates.append(lm_name)
    for candidate in candidates:
        if isinstance(candidate, Path) and not (candidate / "tokenizer_config.json").is_file():
            continue
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(candidate))
        except (OSError, ValueError):
            continue
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer
    hint = f" or the LM's {lm_name!r}" if lm_name else ""
    raise InputError(f"no tokenizer found in {folder}{hint}: pass --tokenizer PATH (the LM's tokenizer folder)")
