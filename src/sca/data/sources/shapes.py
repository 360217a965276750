"""The shapes world: a deterministic procedural dataset of coloured shapes with exact masks and captions.

Image `i` of a world with seed `s` is always the same picture, so a split is just a seed and a count.
It needs no files, so it is the embedded default for training, inference, evaluation and tests.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ...errors import InputError
from ...geometry import mask_box
from ...masks import encode_rle
from ..records import TASK_CAPTION, ImageRecord, Region

KINDS = ("circle", "square", "triangle", "star")
COLOURS = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 80, 215),
    "yellow": (235, 200, 30),
    "purple": (140, 50, 170),
    "orange": (240, 130, 30),
}
SIZES = {"small": (0.14, 0.2), "large": (0.3, 0.38)}  # side of the shape's square, as a share of the image side
SPLIT_SEEDS = {"train": 0, "val": 1_000_003, "test": 2_000_029}


def caption_of(size: str, colour: str, kind: str) -> str:
    return f"a {size} {colour} {kind}"


def all_captions() -> list[str]:
    return [caption_of(s, c, k) for s in SIZES for c in COLOURS for k in KINDS]


@dataclass
class ShapesWorld:
    """`record(i)` draws image i: 1 to `max_shapes` non-overlapping shapes on a plain background."""

    seed: int = 0
    image_size: int = 128
    min_shapes: int = 1
    max_shapes: int = 3

    @classmethod
    def split(cls, split: str, seed: int = 0, **options) -> ShapesWorld:
        if split not in SPLIT_SEEDS:
            raise InputError(f"shapes split must be one of {', '.join(SPLIT_SEEDS)}, got {split!r}")
        return cls(seed=seed + SPLIT_SEEDS[split], **options)

    def records(self, count: int, start: int = 0) -> list[ImageRecord]:
        return [self.record(index) for index in range(start, start + count)]

    def record(self, index: int) -> ImageRecord:
        rng = random.Random(self.seed * 1_000_003 + index)
        side = self.image_size
        background = tuple(rng.randint(200, 245) for _ in range(3))
        image = Image.new("RGB", (side, side), background)
        taken: list[tuple[float, float, float, float]] = []
        regions = []
        for region_id in range(rng.randint(self.min_shapes, self.max_shapes)):
            kind, colour, size = rng.choice(KINDS), rng.choice(list(COLOURS)), rng.choice(list(SIZES))
            extent = rng.uniform(*SIZES[size]) * side
            placed = self._place(rng, extent, taken)
            if placed is None:
                continue
            mask_image = Image.new("L", (side, side), 0)
            _draw(ImageDraw.Draw(mask_image), kind, placed)
            mask = np.asarray(mask_image) > 0
            box = mask_box(mask)
            if box is None:
                continue
            image.paste(COLOURS[colour], mask=mask_image)
            taken.append(placed)
            regions.append(Region(region_id, tuple(box), [caption_of(size, colour, kind)], encode_rle(mask)))
        return ImageRecord(self.seed * 1_000_000 + index, None, side, side, regions, TASK_CAPTION, image=image)

    def _place(self, rng: random.Random, extent: float, taken) -> tuple[float, float, float, float] | None:
        side = self.image_size
        margin = max(2.0, side * 0.02)
        for _ in range(50):
            x1 = rng.uniform(margin, side - extent - margin)
            y1 = rng.uniform(margin, side - extent - margin)
            box = (x1, y1, x1 + extent, y1 + extent)
            if all(_apart(box, other, margin) for other in taken):
                return box
        return None


def _apart(a, b, margin: float) -> bool:
    return a[2] + margin <= b[0] or b[2] + margin <= a[0] or a[3] + margin <= b[1] or b[3] + margin <= a[1]


def _draw(draw: ImageDraw.ImageDraw, kind: str, box) -> None:
    x1, y1, x2, y2 = box
    cx, cy, radius = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2
    if kind == "circle":
        draw.ellipse(box, fill=255)
    elif kind == "square":
        draw.rectangle((cx - radius * 0.85, cy - radius * 0.85, cx + radius * 0.85, cy + radius * 0.85), fill=255)
    elif kind == "triangle":
        draw.polygon(_polygon(cx, cy, [radius] * 3, -math.pi / 2), fill=255)
    elif kind == "star":
        draw.polygon(_polygon(cx, cy, [radius, radius * 0.45] * 5, -math.pi / 2), fill=255)
    else:
        raise ValueError(f"unknown shape {kind!r}")


def _polygon(cx: float, cy: float, radii: list[float], start: float) -> list[tuple[float, float]]:
    step = 2 * math.pi / len(radii)
    return [(cx + r * math.cos(start + i * step), cy + r * math.sin(start + i * step)) for i, r in enumerate(radii)]
