"""The picture of results: each mask drawn within its own box is the picture drawn over the whole image."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from sca.visualize import MASK_ALPHA, PALETTE, draw_regions


def _overlay_over_the_whole_image(image: Image.Image, masks: list[np.ndarray]) -> np.ndarray:
    """The overlay as first written: every step on full-size arrays."""
    canvas = np.asarray(image, dtype=np.float32).copy()
    height, width = canvas.shape[:2]
    rows, cols = np.mgrid[0:height, 0:width]
    stripes = ((rows + cols) // max(2, min(height, width) // 64)) % 2 == 0
    for i, mask in enumerate(masks):
        canvas[mask] = (1 - MASK_ALPHA) * canvas[mask] + MASK_ALPHA * np.asarray(PALETTE[i], dtype=np.float32)
        light = mask & stripes
        canvas[light] = 0.6 * canvas[light] + 0.4 * 255
        padded = np.pad(mask, 1)
        inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        canvas[mask & ~inner] = 255
    return canvas.clip(0, 255).astype(np.uint8)


@settings(max_examples=30, deadline=None)
@given(height=st.integers(1, 90), width=st.integers(1, 90), count=st.integers(0, 4), seed=st.integers(0, 2**31 - 1))
def test_masks_drawn_within_their_boxes_are_the_whole_image_overlay(height, width, count, seed):
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    masks = []
    for _ in range(count):
        mask = np.zeros((height, width), bool)
        y1, x1 = rng.integers(0, height), rng.integers(0, width)
        mask[y1 : rng.integers(y1, height + 1), x1 : rng.integers(x1, width + 1)] = True  # may touch the border
        mask &= rng.random((height, width)) < 0.8  # holes and islands
        masks.append(mask)
    # no boxes and no labels drawn: the overlay alone
    picture = draw_regions(image, iter(masks), [""] * count, boxes=[[-10, -10, -10, -10]] * count)
    assert np.array_equal(np.asarray(picture), _overlay_over_the_whole_image(image, masks))
