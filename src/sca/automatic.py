"""Segment-everything helpers, in plain torch: a grid of point prompts, SAM's stability score, box NMS."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import InputError

MAX_POINTS_PER_SIDE = 256
"""The densest grid anything mode takes: 65,536 prompts, far past SAM's own 32 × 32 (and every point costs time)."""


@dataclass
class AnythingOptions:
    """SAM's automatic mask generator settings (the original demo's values).

    points_per_side: an n x n grid of point prompts over the image.
    points_per_batch: prompts through SAM's decoder at a time (bounds memory).
    pred_iou_thresh: keep masks whose predicted IoU is above this.
    stability_score_thresh: keep masks whose stability score is at least this.
    stability_score_offset: the logit offset of the stability score.
    box_nms_thresh: drop a mask whose box overlaps a better one's at IoU above this.
    max_masks: keep at most this many masks, the best predicted IoU first (None: all that pass).
    """

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    max_masks: int | None = None

    def check(self) -> None:
        """Raise `InputError` naming the first option out of range."""
        for name in ("points_per_side", "points_per_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a whole number of at least 1, got {value!r}")
        if self.points_per_side > MAX_POINTS_PER_SIDE:
            raise InputError(f"points_per_side must be at most {MAX_POINTS_PER_SIDE} ({MAX_POINTS_PER_SIDE}² = "
                             f"{MAX_POINTS_PER_SIDE**2} prompts), got {self.points_per_side}")
        for name in ("pred_iou_thresh", "stability_score_thresh", "stability_score_offset", "box_nms_thresh"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"{name} must be a finite number, got {value!r}")
        if not 0 <= self.box_nms_thresh <= 1:
            raise InputError(f"box_nms_thresh is an IoU, from 0 to 1, got {self.box_nms_thresh!r}")
        if self.max_masks is not None and (isinstance(self.max_masks, bool) or not isinstance(self.max_masks, int)
                                           or self.max_masks < 1):
            raise InputError(f"max_masks must be at least 1 (or None for every mask that passes the filters), "
                             f"got {self.max_masks!r}")


def point_grid(points_per_side: int, width: int, height: int) -> torch.Tensor:
    """`(n*n, 2)` xy points at the centres of an n x n grid of cells over a width x height image."""
    offsets = (torch.arange(points_per_side, dtype=torch.float64) + 0.5) / points_per_side
    ys, xs = torch.meshgrid(offsets * height, offsets * width, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=-1)


def stability_score(logits: torch.Tensor, threshold: float = 0.0, offset: float = 1.0) -> torch.Tensor:
    """`(..., H, W)` mask logits → `(...)`: IoU of the masks thresholded at threshold + offset and − offset."""
    intersections = (logits > threshold + offset).flatten(-2).sum(-1, dtype=torch.int64)
    unions = (logits > threshold - offset).flatten(-2).sum(-1, dtype=torch.int64)
    return intersections / unions.clamp(min=1)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """`(N, H, W)` boolean → `(N, 4)` xyxy boxes in pixel edges (zeros for empty masks)."""
    if masks.numel() == 0:
        return masks.new_zeros(0, 4, dtype=torch.float32)
    rows, cols = masks.any(-1), masks.any(-2)
    height, width = masks.shape[-2:]
    y = torch.arange(height, device=masks.device)
    x = torch.arange(width, device=masks.device)
    y1 = torch.where(rows, y, height).min(-1).values
    y2 = torch.where(rows, y + 1, 0).max(-1).values
    x1 = torch.where(cols, x, width).min(-1).values
    x2 = torch.where(cols, x + 1, 0).max(-1).values
    boxes = torch.stack([x1, y1, x2, y2], -1).float()
    return torch.where(masks.flatten(1).any(-1, keepdim=True), boxes, torch.zeros_like(boxes))


def box_iou(boxes: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """`(N, 4)` × `(M, 4)` xyxy → `(N, M)` IoU."""
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    other_area = (others[:, 2] - others[:, 0]).clamp(min=0) * (others[:, 3] - others[:, 1]).clamp(min=0)
    top_left = torch.maximum(boxes[:, None, :2], others[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], others[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    union = area[:, None] + other_area[None, :] - inter
    return inter / union.clamp(min=1e-9)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indexes of the boxes kept by greedy non-maximum suppression, best score first (torchvision's `nms`)."""
    order = scores.argsort(descending=True, stable=True)
    overlaps = box_iou(boxes[order], boxes[order])
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(order[i])
        suppressed |= overlaps[i] > iou_threshold
    return torch.stack(keep) if keep else order.new_zeros(0)
