"""Pictures of results: masks, boxes and captions drawn on the image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .files import write_atomically
from .geometry import mask_box

PALETTE = [
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40),
]
MASK_ALPHA = 0.45


def draw_regions(
    image: Image.Image,
    masks: Sequence[np.ndarray],
    labels: Sequence[str],
    boxes: Sequence[Sequence[float]] | None = None,
    colour_ids: Sequence[int] | None = None,
) -> Image.Image:
    """Overlay each `(H, W)` boolean mask in its own colour with light stripes and a white outline (visible
    even on an object of the mask's own colour), outline its box, and write its label. `colour_ids`: which
    palette colour each mask takes (an object keeps its colour through a video); default, one each in order."""
    canvas = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    colour_ids = range(len(masks)) if colour_ids is None else colour_ids
    colours = [PALETTE[i % len(PALETTE)] for i in colour_ids]
    height, width = canvas.shape[:2]
    rows, cols = np.mgrid[0:height, 0:width]
    stripes = ((rows + cols) // max(2, min(height, width) // 64)) % 2 == 0
    for mask, colour in zip(masks, colours):
        canvas[mask] = (1 - MASK_ALPHA) * canvas[mask] + MASK_ALPHA * np.asarray(colour, dtype=np.float32)
        light = mask & stripes
        canvas[light] = 0.6 * canvas[light] + 0.4 * 255
        canvas[_outline(mask)] = 255
    picture = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=max(12, min(picture.size) // 40))
    for i, (label, colour) in enumerate(zip(labels, colours)):
        box = boxes[i] if boxes is not None else mask_box(masks[i])
        if box is None:
            continue
        x1, y1, x2, y2 = box
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=2)
        text_box = draw.textbbox((0, 0), label, font=font)
        text_w, text_h = text_box[2] - text_box[0], text_box[3] - text_box[1]
        tx = min(max(0, x1), max(0, picture.width - text_w - 4))
        ty = y1 - text_h - 6 if y1 - text_h - 6 >= 0 else min(y2 + 2, picture.height - text_h - 6)
        draw.rectangle([tx, ty, tx + text_w + 4, ty + text_h + 6], fill=colour)
        draw.text((tx + 2, ty + 1 - text_box[1]), label, fill=(255, 255, 255), font=font)
    return picture


def _outline(mask: np.ndarray) -> np.ndarray:
    """The mask's pixels that touch a pixel outside it."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def save_atomically(picture: Image.Image, path: str | Path) -> None:
    """Save the picture (format from the suffix, PNG if none) so that no half-written file is ever seen."""
    suffix = Path(path).suffix or ".png"
    image_format = Image.registered_extensions().get(suffix.lower(), "PNG")
    write_atomically(path, lambda temporary: picture.save(temporary, format=image_format))

