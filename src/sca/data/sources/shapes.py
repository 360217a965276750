"""The shapes world: a deterministic procedural dataset of coloured shapes with exact masks and captions.

Image `i` of a world with seed `s` is always the same picture, so a split is just a seed and a count.
It needs no files, so it is the embedded default for training, inference, evaluation and tests.

Two worlds share the captions ("a small red circle"):
- `rich` (the default): images of varied sizes and aspect ratios on light, mid-grey or dark backgrounds (flat,
  gradients or mild noise); 1 to `max_shapes` shapes of any size from 12% to 40% of the image's shorter side, close
  together (touching allowed, overlapping not), squares, triangles and stars at any rotation, colours jittered; a shape is "large"
  when its extent reaches `LARGE_FROM` (25%) of the shorter side, else "small". Shapes cut by the border are drawn
  but not captioned.
- `classic`: square images on a plain background, at most 3 shapes well apart, sizes in two bands (14–20% and
  30–38% of the side): the world the first shipped model was trained on.
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
SIZES = {"small": (0.14, 0.2), "large": (0.3, 0.38)}  # classic: side of the shape's square, share of the image side
SPLIT_SEEDS = {"train": 0, "val": 1_000_003, "test": 2_000_029}
EXTENT = (0.12, 0.40)
"""Rich world: a shape's extent (the side of the square it is drawn in), as a share of the image's shorter side."""
LARGE_FROM = 0.25
"""Rich world: the one threshold of the size word: "large" from this extent on, "small" below."""
WORLDS = ("rich", "classic")


def caption_of(size: str, colour: str, kind: str) -> str:
    return f"a {size} {colour} {kind}"


def all_captions() -> list[str]:
    return [caption_of(s, c, k) for s in SIZES for c in COLOURS for k in KINDS]


def size_word(extent: float) -> str:
    """The rich world's size word of a shape whose extent is this share of the image's shorter side."""
    return "large" if extent >= LARGE_FROM else "small"


@dataclass
class ShapesWorld:
    """`record(i)` draws image i of the world (`rich` or `classic`, see the module's docstring).

    image_size: the classic world's side; the rich world's images have their longer side in
        [image_size, 1.5 × image_size] and an aspect ratio up to 5:3.
    """

    seed: int = 0
    image_size: int = 128
    min_shapes: int = 1
    max_shapes: int = 3
    world: str = "classic"

    @classmethod
    def split(cls, split: str, seed: int = 0, **options) -> ShapesWorld:
        if split not in SPLIT_SEEDS:
            raise InputError(f"shapes split must be one of {', '.join(SPLIT_SEEDS)}, got {split!r}")
        if options.get("world", "classic") not in WORLDS:
            raise InputError(f"shapes world must be one of {', '.join(WORLDS)}, got {options['world']!r}")
        return cls(seed=seed + SPLIT_SEEDS[split], **options)

    def records(self, count: int, start: int = 0) -> list[ImageRecord]:
        return [self.record(index) for index in range(start, start + count)]

    def record(self, index: int) -> ImageRecord:
        if self.world == "rich":
            return self._rich(index)
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

    def _rich(self, index: int) -> ImageRecord:
        rng = random.Random(self.seed * 1_000_003 + index + 7_777_777)
        long_side = round(self.image_size * rng.uniform(1.0, 1.5))
        short_side = round(long_side / math.exp(rng.uniform(0.0, math.log(5 / 3))))
        width, height = (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)
        image = _background(rng, width, height)
        occupied = np.zeros((height, width), dtype=bool)
        regions = []
        wanted = rng.randint(self.min_shapes, self.max_shapes)
        cut = rng.random() < 0.2  # one more shape, placed across the border: drawn, not captioned
        for region_id in range(wanted + cut):
            at_border = region_id == wanted
            kind, colour = rng.choice(KINDS), rng.choice(list(COLOURS))
            extent = rng.uniform(*EXTENT)
            size_px = extent * min(width, height)
            angle = 0.0 if kind == "circle" else rng.uniform(0, 2 * math.pi)
            for _ in range(60):
                if at_border:
                    x1 = rng.uniform(-size_px / 2, width - size_px / 2)
                    above = rng.uniform(-size_px / 2, -size_px / 4)
                    below = rng.uniform(height - size_px * 0.75, height - size_px / 2)
                    y1 = rng.choice([above, below])
                else:
                    x1, y1 = rng.uniform(1, width - size_px - 1), rng.uniform(1, height - size_px - 1)
                mask_image = Image.new("L", (width, height), 0)
                _draw(ImageDraw.Draw(mask_image), kind, (x1, y1, x1 + size_px, y1 + size_px), angle)
                mask = np.asarray(mask_image) > 0
                if mask.any() and not (mask & occupied).any():
                    break
            else:
                continue
            jittered = tuple(min(255, max(0, c + rng.randint(-18, 18))) for c in COLOURS[colour])
            image.paste(jittered, mask=mask_image)
            occupied |= mask
            if not at_border:
                regions.append(Region(region_id, tuple(mask_box(mask)), [caption_of(size_word(extent), colour, kind)],
                                      encode_rle(mask)))
        return ImageRecord(self.seed * 1_000_000 + index, None, width, height, regions, TASK_CAPTION, image=image)

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


BACKGROUND_TONES = {"light": ((195, 245), 0.6), "mid": ((95, 165), 0.15), "dark": ((10, 70), 0.25)}
"""Rich world: each image's background tone, its channel range and its share of images."""


def _background(rng: random.Random, width: int, height: int) -> Image.Image:
    """A light, mid-grey or dark background: flat, a gradient between two colours of its tone, or flat with mild
    noise. Every shape colour stands out from every tone (they are saturated; the tones are near-grey)."""
    tones = list(BACKGROUND_TONES.values())
    low, high = rng.choices([band for band, _ in tones], weights=[share for _, share in tones])[0]
    first = np.array([rng.randint(low, high) for _ in range(3)], dtype=np.float32)
    style = rng.choice(["flat", "gradient", "noise"])
    pixels = np.broadcast_to(first, (height, width, 3)).copy()
    if style == "gradient":
        second = np.array([rng.randint(low, high) for _ in range(3)], dtype=np.float32)
        angle = rng.uniform(0, 2 * math.pi)
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        t = x * math.cos(angle) + y * math.sin(angle)
        t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
        pixels = first + t[..., None] * (second - first)
    elif style == "noise":
        noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 6, (height, width, 1))
        pixels = pixels + noise
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def _apart(a, b, margin: float) -> bool:
    return a[2] + margin <= b[0] or b[2] + margin <= a[0] or a[3] + margin <= b[1] or b[3] + margin <= a[1]


def _draw(draw: ImageDraw.ImageDraw, kind: str, box, angle: float = 0.0) -> None:
    x1, y1, x2, y2 = box
    cx, cy, radius = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2
    start = -math.pi / 2 + angle
    if kind == "circle":
        draw.ellipse(box, fill=255)
    elif kind == "square":
        # corners at 0.85 r along the axes (the classic square's half side), turned by the angle
        draw.polygon(_polygon(cx, cy, [radius * 0.85 * math.sqrt(2)] * 4, angle - math.pi / 4), fill=255)
    elif kind == "triangle":
        draw.polygon(_polygon(cx, cy, [radius] * 3, start), fill=255)
    elif kind == "star":
        draw.polygon(_polygon(cx, cy, [radius, radius * 0.45] * 5, start), fill=255)
    else:
        raise ValueError(f"unknown shape {kind!r}")


def _polygon(cx: float, cy: float, radii: list[float], start: float) -> list[tuple[float, float]]:
    step = 2 * math.pi / len(radii)
    return [(cx + r * math.cos(start + i * step), cy + r * math.sin(start + i * step)) for i, r in enumerate(radii)]
