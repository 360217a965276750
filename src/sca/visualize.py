"""Pictures of results: masks, boxes and captions drawn on the image."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
    masks: Iterable[np.ndarray],
    labels: Sequence[str],
    boxes: Sequence[Sequence[float]] | None = None,
    colour_ids: Sequence[int] | None = None,
) -> Image.Image:
    """Overlay each `(H, W)` boolean mask in its own colour with light stripes and a white outline (visible
    even on an object of the mask's own colour), outline its box, and write its label. `colour_ids`: which
    palette colour each mask takes (an object keeps its colour through a video); default, one each in order.

    The masks are read once, in order, and each is drawn within its own box: give a generator to hold one
    full-size mask at a time (a large photo's masks are 25 MB each at 25 megapixels)."""
    canvas = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    colour_ids = range(len(labels)) if colour_ids is None else colour_ids
    colours = [PALETTE[i % len(PALETTE)] for i in colour_ids]
    stripe = max(2, min(canvas.shape[:2]) // 64)
    mask_boxes = []
    for mask, colour in zip(masks, colours):
        box = mask_box(mask)
        mask_boxes.append(box)
        if box is None:
            continue
        window = (slice(int(box[1]), int(box[3])), slice(int(box[0]), int(box[2])))  # beyond it the mask is False
        region, inside = canvas[window], mask[window]
        region[inside] = (1 - MASK_ALPHA) * region[inside] + MASK_ALPHA * np.asarray(colour, dtype=np.float32)
        rows = np.arange(window[0].start, window[0].start + inside.shape[0])[:, None]
        cols = np.arange(window[1].start, window[1].start + inside.shape[1])[None, :]
        light = inside & (((rows + cols) // stripe) % 2 == 0)
        region[light] = 0.6 * region[light] + 0.4 * 255
        region[_outline(inside)] = 255
    picture = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=max(12, min(picture.size) // 40))
    for i, (label, colour) in enumerate(zip(labels, colours)):
        box = boxes[i] if boxes is not None else mask_boxes[i]
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

