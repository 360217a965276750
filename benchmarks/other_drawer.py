"""The shipped model on shapes drawn by another program: colour and kind right, with box and with point prompts.

    python benchmarks/other_drawer.py                          # the shipped model, 12 scenes
    python benchmarks/other_drawer.py --model FOLDER --scenes 24 --out /tmp/other-drawer

The scenes are drawn here with PIL alone, not by the shapes world (`sca.data.sources.shapes`): other colour
values, other proportions (squares drawn by their corners, stars with a deeper notch), other image sizes, and
backgrounds the world may not have: light, mid-grey and dark, flat or as gradients. 3 to 5 shapes a scene, from 15%
to 38% of the shorter side, close together but not overlapping. Each shape is prompted by its tight box and by its
innermost point (the pixel farthest from its edge); a caption counts when its last two words are the shape's
colour and kind (the size word is the world's own convention). Writes a table (`other_drawer.md`) and the scenes
captioned from box prompts (`other_drawer.png`).
"""

from __future__ import annotations

import argparse
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from sca.api import RegionCaptioner
from sca.assets import DEFAULT_MODEL
from sca.geometry import mask_box
from sca.tables import markdown_table
from sca.visualize import draw_regions

COLOURS = {"red": (228, 32, 28), "green": (34, 178, 72), "blue": (28, 72, 228), "yellow": (246, 212, 24),
           "purple": (152, 42, 182), "orange": (250, 142, 22)}
KINDS = ("circle", "square", "triangle", "star")
TONES = {"light": (200, 250), "mid-grey": (105, 160), "dark": (15, 65)}


@dataclass
class Shape:
    colour: str
    kind: str
    mask: np.ndarray

    @property
    def box(self) -> list[float]:
        return mask_box(self.mask)

    @property
    def inner_point(self) -> list[float]:
        depth = ndimage.distance_transform_edt(self.mask)
        y, x = np.unravel_index(int(depth.argmax()), depth.shape)
        return [x + 0.5, y + 0.5]


def outline(kind: str, cx: float, cy: float, radius: float, turn: float) -> list[tuple[float, float]]:
    corners = {"square": 4, "triangle": 3, "star": 10}[kind]
    radii = [radius if k % 2 == 0 or kind != "star" else radius * 0.4 for k in range(corners)]
    return [(cx + r * math.cos(turn + 2 * math.pi * k / corners), cy + r * math.sin(turn + 2 * math.pi * k / corners))
            for k, r in enumerate(radii)]


def background(rng: random.Random, tone: str, width: int, height: int) -> Image.Image:
    low, high = TONES[tone]
    first, second = (rng.randint(low, high) + np.array([rng.uniform(-8, 8) for _ in range(3)], dtype=np.float32)
                     for _ in range(2))  # near-grey, slightly tinted
    ramp = np.linspace(0, 1, width if rng.random() < 0.5 else height, dtype=np.float32)
    ramp = ramp[None, :, None] if len(ramp) == width else ramp[:, None, None]
    pixels = np.broadcast_to(first + ramp * (second - first), (height, width, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def scene(index: int) -> tuple[Image.Image, list[Shape], str]:
    rng = random.Random(1_234 + index)
    tone = list(TONES)[index % len(TONES)]
    width, height = rng.randint(180, 420), rng.randint(180, 420)
    image = background(rng, tone, width, height)
    shapes, taken = [], []
    wanted = rng.randint(3, 5)
    for _ in range(400):
        if len(shapes) == wanted:
            break
        radius = rng.uniform(0.15, 0.38) * min(width, height) / 2
        cx, cy = rng.uniform(radius + 2, width - radius - 2), rng.uniform(radius + 2, height - radius - 2)
        if any(math.hypot(cx - x, cy - y) < radius + r + 4 for x, y, r in taken):
            continue
        kind, colour = rng.choice(KINDS), rng.choice(list(COLOURS))
        stencil = Image.new("L", (width, height), 0)
        if kind == "circle":
            ImageDraw.Draw(stencil).ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
        else:
            ImageDraw.Draw(stencil).polygon(outline(kind, cx, cy, radius, rng.uniform(0, 2 * math.pi)), fill=255)
        image.paste(COLOURS[colour], mask=stencil)
        taken.append((cx, cy, radius))
        shapes.append(Shape(colour, kind, np.asarray(stencil) > 0))
    return image, shapes, tone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="a folder or hub id (default: the shipped model)")
    parser.add_argument("--scenes", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path("build/other-drawer"))
    args = parser.parse_args()
    if args.scenes < 1:
        parser.error(f"--scenes must be at least 1, got {args.scenes}")
    captioner = RegionCaptioner.from_pretrained(args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    right: dict[tuple[str, str], list[bool]] = {}
    misses, pictures = [], []
    for index in range(args.scenes):
        image, shapes, tone = scene(index)
        captioner.set_image(image)
        by_box = captioner.caption(boxes=[shape.box for shape in shapes])
        by_point = captioner.caption(points=[shape.inner_point for shape in shapes])
        for prompt, regions in (("box", by_box), ("point", by_point)):
            for shape, region in zip(shapes, regions):
                ok = region.caption.split()[-2:] == [shape.colour, shape.kind]
                right.setdefault((tone, prompt), []).append(ok)
                if not ok:
                    misses.append(f"scene {index} ({tone}), {prompt}: the {shape.colour} {shape.kind} "
                                  f"captioned {region.caption!r}")
        pictures.append(draw_regions(image, [r.best_mask for r in by_box], [r.caption for r in by_box]))
        print(f"scene {index + 1}/{args.scenes} ({tone}): {len(shapes)} shapes", flush=True)
    rows = []
    for tone in TONES:
        if (tone, "box") in right:
            box, point = right[tone, "box"], right[tone, "point"]
            rows.append([tone, len(box), f"{sum(box)}/{len(box)}", f"{sum(point)}/{len(point)}"])
    table = markdown_table(["background", "shapes", "colour + kind right, box", "colour + kind right, point"], rows,
                           title=f"Shapes drawn by another program ({args.scenes} scenes, {args.model})")
    (args.out / "other_drawer.md").write_text(table + "\n" + "".join(f"- {miss}\n" for miss in misses))
    rows_of_pictures = [pictures[i:i + 6] for i in range(0, len(pictures), 6)]
    sheet = Image.new("RGB", (max(sum(p.width for p in row) for row in rows_of_pictures),
                              sum(max(p.height for p in row) for row in rows_of_pictures)), (255, 255, 255))
    top = 0
    for row in rows_of_pictures:
        left = 0
        for picture in row:
            sheet.paste(picture, (left, top))
            left += picture.width
        top += max(p.height for p in row)
    sheet.save(args.out / "other_drawer.png")
    print(table)
    print("\n".join(misses))


if __name__ == "__main__":
    main()
