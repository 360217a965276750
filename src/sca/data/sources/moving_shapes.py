"""The moving-shapes world: deterministic short videos of the rich shapes world, with ground truth per frame.

Each object keeps its kind, colour and size (so its caption) through the video; it moves along its own lane (lanes
keep objects from overlapping), turns (squares, triangles and stars), and may enter from a side or leave by one.
Video `i` of a world with seed `s` is always the same.

A `crowded` world is the hard case for identity: neighbours a few pixels apart in adjacent lanes, moving side by side
and turning faster, and one larger object that crosses the frame in front of them, so that the others pass behind it
(hidden in part, then wholly, then seen again). The truth is what shows: an object's mask is its visible part, and a
wholly hidden object is absent from that frame.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from ...errors import InputError
from .shapes import COLOURS, EXTENT, KINDS, SPLIT_SEEDS, _background, _draw, caption_of, size_word


@dataclass
class MovingObject:
    object_id: int
    kind: str
    colour: tuple[int, int, int]
    caption: str
    extent: float  # the side of the square it is drawn in, in pixels
    x: float  # the square's left edge at frame 0
    y: float
    speed: float  # pixels per frame, along x
    angle: float
    spin: float  # radians per frame

    def square(self, frame: int) -> tuple[float, float, float, float]:
        x = self.x + self.speed * frame
        return (x, self.y, x + self.extent, self.y + self.extent)


@dataclass
class TruthFrame:
    """One frame: the picture, and per object present its mask, caption and whether it is wholly in view."""

    index: int
    image: Image.Image
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    captions: dict[int, str] = field(default_factory=dict)
    whole: dict[int, bool] = field(default_factory=dict)


@dataclass
class MovingShapesWorld:
    seed: int = 0
    frames: int = 24
    image_size: int = 128
    max_objects: int = 3
    speed: tuple[float, float] = (1.0, 3.0)
    crowded: bool = False

    @classmethod
    def split(cls, split: str, seed: int = 0, **options) -> MovingShapesWorld:
        if split not in SPLIT_SEEDS:
            raise InputError(f"moving shapes split must be one of {', '.join(SPLIT_SEEDS)}, got {split!r}")
        return cls(seed=seed + SPLIT_SEEDS[split] + 3_333_333, **options)

    def objects(self, index: int) -> tuple[int, int, random.Random, list[MovingObject]]:
        """Video `index`'s frame size, its random source (for the background) and its objects, in drawing order."""
        rng = random.Random(self.seed * 1_000_003 + index)
        width = 2 * round(self.image_size * rng.uniform(0.6, 0.75))  # even, as 4:2:0 video needs
        height = self.image_size
        if self.crowded:
            return width, height, rng, self._crowded(rng, width, height)
        count = rng.randint(1, self.max_objects)
        lane = height / count
        objects = []
        for object_id in range(count):
            kind, colour = rng.choice(KINDS), rng.choice(list(COLOURS))
            share = min(rng.uniform(*EXTENT), 0.9 * lane / height)
            extent = share * min(width, height)
            speed = rng.uniform(*self.speed) * rng.choice((-1, 1))
            start = rng.choice(["inside", "inside", "enters", "leaves"])
            if start == "enters":  # from outside, towards the middle
                x = -extent - rng.uniform(0, 8) if speed > 0 else width + rng.uniform(0, 8)
            elif start == "leaves":  # near the edge it moves to
                x = width - extent - rng.uniform(0, 10) if speed > 0 else rng.uniform(0, 10)
            else:
                x = rng.uniform(0, width - extent)
            y = object_id * lane + rng.uniform(0, max(0.0, lane - extent))
            angle = 0.0 if kind == "circle" else rng.uniform(0, 2 * math.pi)
            spin = 0.0 if kind == "circle" else rng.uniform(-0.08, 0.08)
            objects.append(MovingObject(object_id, kind, COLOURS[colour], caption_of(size_word(share), colour, kind),
                                        extent, x, y, speed, angle, spin))
        return width, height, rng, objects

    def _crowded(self, rng: random.Random, width: int, height: int) -> list[MovingObject]:
        """Neighbours stacked a few pixels apart, moving side by side, turning; then the occluder, drawn last."""
        count = rng.randint(2, max(2, self.max_objects))
        gaps = [rng.uniform(2, 6) for _ in range(count)]
        shorter = min(width, height)
        room = (height - sum(gaps)) / count
        objects, y = [], rng.uniform(0, gaps[0])
        column = rng.uniform(0.2, 0.6) * width  # the neighbours stand in one column, one above the other
        drift = rng.uniform(*self.speed) * rng.choice((-1, 1)) / 2  # the group moves together, each a little apart
        for object_id in range(count):
            kind, colour = rng.choice(KINDS), rng.choice(list(COLOURS))
            share = min(rng.uniform(*EXTENT), 0.95 * room / shorter)
            extent = share * shorter
            x = column + rng.uniform(-0.3, 0.3) * extent
            spin = 0.0 if kind == "circle" else rng.uniform(0.06, 0.15) * rng.choice((-1, 1))
            objects.append(MovingObject(object_id, kind, COLOURS[colour], caption_of(size_word(share), colour, kind),
                                        extent, x, y, drift * rng.uniform(0.8, 1.2), rng.uniform(0, 2 * math.pi), spin))
            y += extent + gaps[object_id]
        behind = rng.choice(objects)
        kind, colour = rng.choice(KINDS), rng.choice(list(COLOURS))
        share = rng.uniform(0.3, 0.4)
        extent = share * shorter
        # it comes from the side with more room, reaches the object it hides within a few frames, and passes it
        relative = rng.uniform(*self.speed) * 1.5 * (1 if behind.x + behind.extent / 2 > width / 2 else -1)
        speed = behind.speed + relative
        lead = rng.uniform(2, 6) * abs(relative)
        x = behind.x - extent - lead if relative > 0 else behind.x + behind.extent + lead
        y = min(max(0.0, behind.y + behind.extent / 2 - extent / 2), height - extent)
        objects.append(MovingObject(count, kind, COLOURS[colour], caption_of(size_word(share), colour, kind), extent,
                                    x, y, speed, 0.0, 0.0))
        return objects

    def video(self, index: int) -> list[TruthFrame]:
        """Video `index`, every frame."""
        return list(self.frames_of(index))

    def frames_of(self, index: int) -> Iterator[TruthFrame]:
        """Video `index`, one frame at a time (a long video need not be held whole)."""
        width, height, rng, objects = self.objects(index)
        background = _background(rng, width, height)
        for t in range(self.frames):
            picture = background.copy()
            truth = TruthFrame(t, picture)
            drawn = {}
            for moving in objects:
                mask_image = Image.new("L", (width, height), 0)
                _draw(ImageDraw.Draw(mask_image), moving.kind, moving.square(t), moving.angle + moving.spin * t)
                picture.paste(moving.colour, mask=mask_image)
                drawn[moving.object_id] = np.asarray(mask_image) > 0
            in_front = np.zeros((height, width), dtype=bool)
            for moving in reversed(objects):  # what is drawn later hides what is drawn before
                whole = drawn[moving.object_id]
                mask = whole & ~in_front
                in_front |= whole
                if not mask.any():
                    continue
                truth.masks[moving.object_id] = mask
                truth.captions[moving.object_id] = moving.caption
                x1, y1, x2, y2 = moving.square(t)
                truth.whole[moving.object_id] = (x1 >= 0 and y1 >= 0 and x2 <= width and y2 <= height
                                                 and bool((mask == whole).all()))
            truth.masks = dict(sorted(truth.masks.items()))
            yield truth
