"""Readers for region datasets in their published formats, chosen by a dataset spec's `source`."""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from ...errors import InputError
from ..records import ImageRecord
from .coco import load_coco_instances
from .jsonl import load_jsonl
from .refcoco import load_refcoco
from .shapes import ShapesWorld
from .visual_genome import load_visual_genome


def load_shapes(split: str, num_images: int, seed: int = 0, image_size: int = 128,
                min_shapes: int = 1, max_shapes: int = 3) -> list[ImageRecord]:
    world = ShapesWorld.split(split, seed=seed, image_size=image_size, min_shapes=min_shapes, max_shapes=max_shapes)
    return world.records(num_images)


SOURCES = {
    "visual_genome": load_visual_genome,
    "refcoco": load_refcoco,
    "coco": load_coco_instances,
    "jsonl": load_jsonl,
    "shapes": load_shapes,
}
SPEC_KEYS = {"source", "name", "probability", "max_images"}
"""Keys of a dataset spec that are not reader arguments."""


def load_records(spec: Mapping) -> list[ImageRecord]:
    """`{"source": "refcoco", "root": ..., ...}` → records; unknown sources and options are named in the error."""
    source = spec.get("source")
    if source not in SOURCES:
        raise InputError(f"unknown dataset source {source!r}: use one of {', '.join(SOURCES)}")
    reader = SOURCES[source]
    options = {k: v for k, v in spec.items() if k not in SPEC_KEYS}
    accepted = inspect.signature(reader).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(f"{source} datasets take no option {unknown[0]!r}; they take {', '.join(accepted)}")
    missing = [name for name, p in accepted.items() if p.default is inspect.Parameter.empty and name not in options]
    if missing:
        raise InputError(f"{source} dataset spec lacks {missing[0]!r}")
    records = reader(**options)
    if spec.get("max_images"):
        records = records[: spec["max_images"]]
    return records
