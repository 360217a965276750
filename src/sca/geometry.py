"""Boxes and masks in plain torch (no torchvision): IoU, boxes of masks, non-maximum suppression, stability.

Boxes are `[x1, y1, x2, y2]` in continuous pixel coordinates: a lone pixel at x spans x..x+1, and a box's area is
`(x2 - x1) * (y2 - y1)`. DenseCap's Lua code counted inclusive integer pixels (`inclusive_pixels=True`).
"""

from __future__ import annotations

import numpy as np
import torch


def box_iou(boxes, others, inclusive_pixels: bool = False) -> torch.Tensor:
    """`(N, 4)` × `(M, 4)` xyxy boxes (tensors or arrays) → `(N, M)` IoU (float64 for arrays)."""
    boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float64) if not torch.is_tensor(boxes) else boxes).reshape(-1, 4)
    others = torch.as_tensor(np.asarray(others, dtype=np.float64) if not torch.is_tensor(others) else others).reshape(-1, 4)
    one = 1.0 if inclusive_pixels else 0.0
    area = ((boxes[:, 2] - boxes[:, 0] + one).clamp(min=0) * (boxes[:, 3] - boxes[:, 1] + one).clamp(min=0))
    other_area = ((others[:, 2] - others[:, 0] + one).clamp(min=0) * (others[:, 3] - others[:, 1] + one).clamp(min=0))
    top_left = torch.maximum(boxes[:, None, :2], others[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], others[None, :, 2:])
    inter = (bottom_right - top_left + one).clamp(min=0).prod(-1)
    union = area[:, None] + other_area[None, :] - inter
    return inter / union.clamp(min=1e-9)


def mask_iou(masks: torch.Tensor | np.ndarray, others: torch.Tensor | np.ndarray) -> torch.Tensor:
    """`(..., H, W)` boolean masks → `(...)` IoU; two empty masks agree (IoU 1)."""
    masks, others = torch.as_tensor(masks).bool(), torch.as_tensor(others).bool()
    intersection = (masks & others).flatten(-2).sum(-1)
    union = (masks | others).flatten(-2).sum(-1)
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union, dtype=torch.float))


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """`(N, H, W)` boolean → `(N, 4)` xyxy boxes in pixel edges (zeros for empty masks)."""
    if masks.numel() == 0:
        return masks.new_zeros(0, 4, dtype=torch.float32)
    return _boxes_of(masks.any(-1), masks.any(-2))


def positive_boxes(logits: torch.Tensor, may_hold_nan: bool = True) -> torch.Tensor:
    """`(N, H, W)` logits → `(N, 4)`: `masks_to_boxes(logits > 0)`, from each row's and column's maximum (a
    maximum along rows reads memory in order: ~4x faster than the boolean masks' `any`). `may_hold_nan=False`: the
    caller knows there is no NaN (logits interpolated from finite ones), and the check is skipped."""
    if logits.numel() == 0:
        return logits.new_zeros(0, 4, dtype=torch.float32)
    if may_hold_nan and torch.isnan(logits).any():  # a maximum with a NaN in its row is NaN: the masks decide
        return masks_to_boxes(logits > 0)
    return _boxes_of(logits.amax(-1) > 0, logits.amax(-2) > 0)


def _boxes_of(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """`(N, H)` rows and `(N, W)` columns that hold a pixel of each mask → `(N, 4)` boxes (zeros where none)."""
    height, width = rows.shape[-1], cols.shape[-1]
    y = torch.arange(height, device=rows.device)
    x = torch.arange(width, device=rows.device)
    y1 = torch.where(rows, y, height).min(-1).values
    y2 = torch.where(rows, y + 1, 0).max(-1).values
    x1 = torch.where(cols, x, width).min(-1).values
    x2 = torch.where(cols, x + 1, 0).max(-1).values
    boxes = torch.stack([x1, y1, x2, y2], -1).float()
    return torch.where(rows.any(-1, keepdim=True), boxes, torch.zeros_like(boxes))


def mask_box(mask: np.ndarray | torch.Tensor) -> list[float] | None:
    """The tight box of one `(H, W)` boolean mask, as a list; None if the mask is empty."""
    mask = torch.as_tensor(np.asarray(mask, dtype=bool) if not torch.is_tensor(mask) else mask)
    if not mask.any():
        return None
    return masks_to_boxes(mask[None])[0].tolist()


def touches_edge(mask: np.ndarray) -> bool:
    """Whether an `(H, W)` mask reaches the image's border: an object cut by the frame's edge."""
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def remove_small_regions(mask: np.ndarray, min_area: int) -> np.ndarray:
    """SAM's post-processing of a `(H, W)` boolean mask: islands, then holes, of fewer than `min_area` pixels
    removed (4-connected components, as SAM's `remove_small_regions` with OpenCV).

    The work is done within the mask's box: every island lies there, and the background outside the box joins the
    box's own through a ring of padding on each side where the image goes on, each piece of the ring carrying the
    area it stands for (a 25-megapixel photo's mask: ~1.3 s over the whole image, milliseconds within an object's
    box)."""
    from scipy import ndimage

    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows) == 0:  # all background: one region, the image
        return np.full(mask.shape, 0 < mask.size < min_area)
    height, width = mask.shape
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    cleaned = mask.copy()
    window = cleaned[top:bottom, left:right]  # a view: cleaned in place
    background = ~window  # holes are the mask's own, not what removing islands leaves

    labels, count = ndimage.label(window)
    small = np.bincount(labels.ravel(), minlength=count + 1) < min_area
    small[0] = False  # label 0 is the background
    if small.any():  # in place, by a gather: a boolean-indexed assignment costs three times as much
        np.logical_and(window, np.take(~small, labels), out=window)

    pads = (int(top > 0), int(bottom < height), int(left > 0), int(right < width))
    labels, count = ndimage.label(np.pad(background, ((pads[0], pads[1]), (pads[2], pads[3])), constant_values=True))
    inner = labels[pads[0] : pads[0] + window.shape[0], pads[2] : pads[2] + window.shape[1]]
    sizes = np.bincount(inner.ravel(), minlength=count + 1)
    # the background outside the box, piece by piece: a padding pixel of the piece, and the image's slices it is
    above, below = (slice(0, top), slice(None)), (slice(bottom, None), slice(None))
    beside = [(slice(top, bottom), slice(0, left)), (slice(top, bottom), slice(right, None))]
    if pads == (1, 1, 0, 0):  # the mask spans the image's width: above and below it are apart
        pieces = [((0, 0), [above]), ((-1, 0), [below])]
    elif pads == (0, 0, 1, 1):  # it spans the height: left and right of it are apart
        pieces = [((0, 0), [beside[0]]), ((0, -1), [beside[1]])]
    elif any(pads):  # one piece all around
        pieces = [((0, 0) if pads[0] or pads[2] else (-1, -1), [above, below, *beside])]
    else:
        pieces = []
    for pixel, parts in pieces:
        sizes[labels[pixel]] += sum(cleaned[part].size for part in parts)
    small = sizes < min_area
    small[0] = False  # label 0 is the mask
    if small.any():
        np.logical_or(window, np.take(small, inner), out=window)
    for pixel, parts in pieces:
        if small[labels[pixel]]:  # a thin strip of background outside the box is a hole too
            for part in parts:
                cleaned[part] = True
    return cleaned


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indexes of the boxes kept by greedy non-maximum suppression, best score first (torchvision's `nms`)."""
    order = scores.argsort(descending=True, stable=True)
    return _greedy_keep(order, box_iou(boxes[order], boxes[order]), iou_threshold)


def mask_nms(masks: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indexes of the `(K, H, W)` boolean masks kept by greedy non-maximum suppression on mask IoU, best score first:
    two masks of one object whose boxes differ (one has a tail) overlap as masks."""
    order = scores.argsort(descending=True, stable=True)
    flat = masks[order].flatten(1).float()
    intersections = flat @ flat.T
    areas = intersections.diagonal()
    overlaps = intersections / (areas[:, None] + areas[None, :] - intersections).clamp(min=1)
    return _greedy_keep(order, overlaps, iou_threshold)


def _greedy_keep(order: torch.Tensor, overlaps: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy suppression: walking `order` (best first), keep each item not yet suppressed and suppress those whose
    overlap with it (`overlaps`, in `order`'s order) is above the threshold."""
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(order[i])
        suppressed |= overlaps[i] > iou_threshold
    return torch.stack(keep) if keep else order.new_zeros(0)


def stability_score(logits: torch.Tensor, threshold: float = 0.0, offset: float = 1.0) -> torch.Tensor:
    """`(..., H, W)` mask logits → `(...)`: IoU of the masks thresholded at threshold + offset and − offset.

    Counted in int32 (exact below 2³¹ pixels a mask): twice as fast as int64 on a CPU, and anything mode counts 3 masks
    of 256² for every grid point."""
    intersections = (logits > threshold + offset).flatten(-2).sum(-1, dtype=torch.int32)
    unions = (logits > threshold - offset).flatten(-2).sum(-1, dtype=torch.int32)
    return intersections / unions.clamp(min=1)


def point_grid(points_per_side: int, width: int, height: int) -> torch.Tensor:
    """`(n*n, 2)` xy points at the centres of an n x n grid of cells over a width x height image."""
    offsets = (torch.arange(points_per_side, dtype=torch.float64) + 0.5) / points_per_side
    ys, xs = torch.meshgrid(offsets * height, offsets * width, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=-1)
