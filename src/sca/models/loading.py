"""Loading a model (a local folder or a hub id) and its tokenizer, with errors that say what is wrong."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from ..errors import InputError
from ..options import PRECISIONS
from .configuration import ScaConfig
from .hub import ModelSource
from .sca import ScaModel
from .sca_sam2 import ScaSam2Config, ScaSam2Model

SCA_MODELS = {ScaConfig.model_type: ScaModel, ScaSam2Config.model_type: ScaSam2Model}
"""An SCA checkpoint's class by its config's model_type: SCA on SAM (this project's and the original release's) and
SCA on SAM 2."""
SUPPORTED_ARCHITECTURES = {"ScaModel", "ScaMultitaskV2Model", "ScaSam2Model"}
DTYPES = {name: getattr(torch, name) for name in PRECISIONS}
"""The precisions a model can run in (`options.PRECISIONS`), by the names configs and command lines use."""
HARMLESS_EXTRA_WEIGHT = re.compile(r"\.attn\.(masked_)?bias$|position_ids$")
"""Buffers that older transformers saved with a GPT-2 (its causal mask) or an encoder (its positions) and newer ones
rebuild: in a checkpoint, they are no part of the model and no loss."""
TOKENIZER_FILE = "tokenizer_config.json"


def resolve_device(name: str) -> torch.device:
    """A torch device by name, checked against this machine; `auto` is this process's GPU if there is one."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise InputError(f"unknown device {name!r}: use cpu, cuda, cuda:N, mps or auto") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU: use cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"device {name!r} asked for, but there are {torch.cuda.device_count()} CUDA GPUs")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {name!r} asked for, but this machine has no MPS: use cpu")
    return device


def load_sca_model(
    name_or_path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> ScaModel | ScaSam2Model:
    """Load an SCA checkpoint (on SAM: this project's or the original release's; on SAM 2) from a folder or the hub
    (`org/name[@revision]`)."""
    source = ModelSource.parse(name_or_path)
    config = source.required_config()
    if config.get("model_type") not in SCA_MODELS:
        raise InputError(f"{source} holds a {config.get('model_type')!r} model, not an SCA model")
    architectures = config.get("architectures") or ["ScaModel"]
    if not isinstance(architectures, list) or not all(isinstance(name, str) for name in architectures):
        raise InputError(f"{source}'s config.json names architectures {architectures!r}: a list of class names "
                         "(ScaModel, ScaSam2Model) or none")
    architecture = architectures[0]
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise InputError(
            f"{source} is an SCA {architecture} checkpoint; only ScaMultitaskV2Model (the published models) is supported"
        )
    if source.folder is not None:
        patterns = ("*.safetensors", "*.bin", "*.safetensors.index.json")
        if not any(any(source.folder.glob(pattern)) for pattern in patterns):
            raise InputError(f"{source} has a config.json but no weights (*.safetensors or *.bin)")
    with source.loading("load the SCA model"):
        model, report = SCA_MODELS[config["model_type"]].from_pretrained(
            source.location, dtype=dtype, output_loading_info=True, **source.pretrained_kwargs)
    missing = sorted(report["missing_keys"])
    extra = sorted(key for key in report["unexpected_keys"] if not HARMLESS_EXTRA_WEIGHT.search(key))
    if missing or extra:
        found = [f"{len(missing)} of its weights missing ({missing[0]}, ...)"] if missing else []
        found += [f"{len(extra)} weights of no part of it ({extra[0]}, ...)"] if extra else []
        raise InputError(f"{source}'s weights are not the model its config.json describes: {'; '.join(found)}: the "
                         "config was edited, or the weights are another model's")
    return model.to(device).eval()


def load_tokenizer(name_or_path: str | Path, config: ScaConfig | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer saved with a model (in its folder or a `tokenizer/` subfolder), else the one of the LM it
    was built from (`text_config._name_or_path`, e.g. `gpt2-large`), from a folder, the cache or the hub.

    The published checkpoints carry no tokenizer; their LM's name finds it.
    """
    source = ModelSource.parse(name_or_path)
    candidates: list[tuple[ModelSource, str | None]] = [(source, None), (source, "tokenizer")]
    lm_name = getattr(config.text_config, "_name_or_path", "") if config is not None else ""
    if lm_name:
        with contextlib.suppress(InputError):  # a folder on the machine that trained it is not here
            candidates.append((ModelSource.parse(lm_name), None))
    for candidate, subfolder in candidates:
        try:
            if candidate.file(TOKENIZER_FILE, subfolder) is None:
                continue
            tokenizer = AutoTokenizer.from_pretrained(
                candidate.location, subfolder=subfolder or "", **candidate.pretrained_kwargs
            )
        except InputError:
            continue
        except (OSError, ValueError) as error:
            raise candidate.failure("load the tokenizer of", error) from error
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer
    hint = f" nor for its LM {lm_name!r} (in the Hugging Face cache or on the hub)" if lm_name else ""
    raise InputError(f"no tokenizer found in {source}{hint}: pass --tokenizer PATH (the LM's tokenizer folder or "
                     "hub id)")
