"""Files shipped with the package: the sample image, the sample clip and the shipped shapes models."""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType

from ..errors import InputError

ASSETS = Path(__file__).parent
SAMPLE_IMAGE = ASSETS / "sample.png"
SAMPLE_CLIP = ASSETS / "sample.mp4"
"""Moving shapes (the moving-shapes world's first test video): `sca video` examples start from it."""
DEFAULT_MODEL = ASSETS / "default-model"
DEFAULT_MODEL_ENV = "SCA_MODEL"
SHIPPED_MODELS = MappingProxyType({
    "sca-shapes": DEFAULT_MODEL,
    "sca-sam2-shapes": ASSETS / "sca-sam2-shapes",
})
"""The shapes models the package carries, by the name of the model config they were trained from (SCA on a tiny SAM,
the default; SCA on a tiny SAM 2; `python -m sca.assets.build model RUN/final --name NAME` installs one). Every place
that takes a model folder or hub id takes these names."""


def default_model_path() -> Path:
    """`$SCA_MODEL` if set, else the model shipped in the package."""
    if os.environ.get(DEFAULT_MODEL_ENV):
        return Path(os.environ[DEFAULT_MODEL_ENV])
    if not (DEFAULT_MODEL / "config.json").is_file():
        raise InputError(f"no default model in {DEFAULT_MODEL}: pass --model PATH or set {DEFAULT_MODEL_ENV}")
    return DEFAULT_MODEL


def shipped_model(name: str) -> Path | None:
    """The folder of the shipped model called `name`, or None when no shipped model has that name."""
    folder = SHIPPED_MODELS.get(name)
    if folder is not None and not (folder / "config.json").is_file():
        raise InputError(f"the shipped model {name} is missing from this install ({folder}): reinstall sca")
    return folder
