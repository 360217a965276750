"""Files shipped with the package: the sample image, the sample clip and the default model."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError

ASSETS = Path(__file__).parent
SAMPLE_IMAGE = ASSETS / "sample.png"
SAMPLE_CLIP = ASSETS / "sample.mp4"
"""Moving shapes (the moving-shapes world's first test video): `sca video` examples start from it."""
DEFAULT_MODEL = ASSETS / "default-model"
DEFAULT_MODEL_ENV = "SCA_MODEL"


def default_model_path() -> Path:
    """`$SCA_MODEL` if set, else the model shipped in the package."""
    if os.environ.get(DEFAULT_MODEL_ENV):
        return Path(os.environ[DEFAULT_MODEL_ENV])
    if not (DEFAULT_MODEL / "config.json").is_file():
        raise InputError(f"no default model in {DEFAULT_MODEL}: pass --model PATH or set {DEFAULT_MODEL_ENV}")
    return DEFAULT_MODEL
