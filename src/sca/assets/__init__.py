"""Files shipped with the package: the sample image and the default model."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

ASSETS = Path(__file__).parent
SAMPLE_IMAGE = ASSETS / "sample.png"
DEFAULT_MODEL = ASSETS / "default-model"


def default_model_path() -> Path:
    if not (DEFAULT_MODEL / "config.json").is_file():
        raise InputError(f"no default model in {DEFAULT_MODEL}: pass --model PATH or set SCA_MODEL")
    return DEFAULT_MODEL
