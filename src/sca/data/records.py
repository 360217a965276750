"""The one record type every dataset reader yields."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .sam_frame import load_image

TASK_CAPTION = "caption"
TASK_RECOGNITION = "recognition"
TASK_TYPES = (TASK_RECOGNITION, TASK_CAPTION)
"""Task names in the order of their rows in SCA's `task_tokens` (the original's `TASK_TYPE_MAPPING`)."""


@dataclass
class Region:
    """One annotated region.

    box: xyxy in original image pixels (floats kept as floats).
    captions: every reference phrase of the region (RefCOCO has several; VG one; COCO the category name).
    mask: COCO RLE `{"size": [H, W], "counts": ...}` or polygons, when the dataset has masks.
    """

    region_id: int
    box: tuple[float, float, float, float]
    captions: list[str]
    mask: dict | list | None = None


@dataclass
class ImageRecord:
    """One image and its regions. `image` holds in-memory pixels (generated data); else `path` is read."""

    image_id: int
    path: Path | None
    width: int
    height: int
    regions: list[Region]
    task_type: str = TASK_CAPTION
    image: Image.Image | None = field(default=None, repr=False)

    def load(self) -> Image.Image:
        return self.image.convert("RGB") if self.image is not None else load_image(self.path)


def xywh_to_xyxy(x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
    return (x, y, x + w, y + h)
