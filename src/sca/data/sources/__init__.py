"""Readers for region datasets in their published formats, chosen by a dataset spec's `source`."""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from pydantic import ValidationError, validate_call

from ...errors import InputError
from ..records import ImageRecord
from ..schemas import describe
from .coco import load_coco_instances, load_grit_visual_genome
from .jsonl import load_jsonl
from .refcoco import load_refcoco
from .shapes import ShapesWorld
from .visual_genome import load_visual_genome


def load_shapes(split: str, num_images: int, seed: int = 0, image_size: int = 128,
                min_shapes: int = 1, max_shapes: int = 3, world: str = "rich") -> list[ImageRecord]:
    if num_images < 0 or image_size < 16 or not 0 <= min_shapes <= max_shapes:
        raise InputError("shapes datasets need num_images >= 0, image_size >= 16 and 0 <= min_shapes <= max_shapes")
    shapes = ShapesWorld.split(split, seed=seed, image_size=image_size, min_shapes=min_shapes, max_shapes=max_shapes,
                               world=world)
    return shapes.records(num_images)


SOURCES = {
    "visual_genome": load_visual_genome,
    "grit_visual_genome": load_grit_visual_genome,
    "refcoco": load_refcoco,
    "coco": load_coco_instances,
    "jsonl": load_jsonl,
    "shapes": load_shapes,
}
SPEC_KEYS = {"source", "name", "probability", "max_images", "split"}
"""Keys of a dataset spec that are not reader arguments (`split` names the output files; readers that select a
split by it take it too)."""


def load_records(spec: Mapping) -> list[ImageRecord]:
    """`{"source": "refcoco", "root": ..., ...}` → records; unknown sources and options are named in the error."""
    source = spec.get("source")
    if source not in SOURCES:
        raise InputError(f"unknown dataset source {source!r}: use one of {', '.join(SOURCES)}")
    reader = SOURCES[source]
    accepted = inspect.signature(reader).parameters
    options = {k: v for k, v in spec.items() if k not in SPEC_KEYS or (k == "split" and k in accepted)}
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(f"{source} datasets take no option {unknown[0]!r}; they take {', '.join(accepted)}")
    missing = [name for name, p in accepted.items() if p.default is inspect.Parameter.empty and name not in options]
    if missing:
        raise InputError(f"{source} dataset spec lacks {missing[0]!r}")
    try:
        records = validate_call(reader)(**options)
    except ValidationError as error:
        raise InputError(f"{source} dataset option {describe(error)}") from None
    max_images = spec.get("max_images")
    if max_images is not None:
        if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 0:
            raise InputError(f"max_images must be a whole number of at least 0, got {max_images!r}")
        records = records[:max_images]
    return records
