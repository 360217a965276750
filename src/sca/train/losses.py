"""SAM's segmentation loss: focal + dice on the masks, mean squared error on the predicted IoU.

With several masks per prompt (multimask output), only the mask with the lowest loss is trained on the
target (SAM's way of letting ambiguous prompts keep several answers); the IoU head learns every mask's
actual IoU, so that the highest predicted IoU picks the best mask at inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..geometry import mask_iou

FOCAL_WEIGHT = 20.0  # SAM: focal and dice in a 20:1 ratio
FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0


@dataclass
class SegmentationLoss:
    total: torch.Tensor
    mask: torch.Tensor
    iou: torch.Tensor


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`(..., H, W)` logits and 0/1 targets → `(...)` focal loss averaged over pixels."""
    probabilities = logits.sigmoid()
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = probabilities * targets + (1 - probabilities) * (1 - targets)
    alpha_t = FOCAL_ALPHA * targets + (1 - FOCAL_ALPHA) * (1 - targets)
    return (alpha_t * cross_entropy * (1 - p_t) ** FOCAL_GAMMA).flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`(..., H, W)` → `(...)`: 1 − soft Dice coefficient."""
    probabilities = logits.sigmoid().flatten(-2)
    targets = targets.flatten(-2)
    numerator = 2 * (probabilities * targets).sum(-1)
    denominator = probabilities.sum(-1) + targets.sum(-1)
    return 1 - (numerator + 1) / (denominator + 1)


def segmentation_loss(
    pred_masks: torch.Tensor, iou_scores: torch.Tensor, mask_labels: torch.Tensor, mask_valid: torch.Tensor
) -> SegmentationLoss:
    """pred_masks `(B, R, M, h, w)` logits; iou_scores `(B, R, M)`; mask_labels `(B, R, h, w)` 0/1;
    mask_valid `(B, R)` (False: padding or no mask, left out)."""
    valid = mask_valid.bool()
    logits = pred_masks[valid].float()  # (N, M, h, w)
    if logits.shape[0] == 0:
        zero = pred_masks.sum() * 0 + iou_scores.sum() * 0  # keeps the graph whole for DDP
        return SegmentationLoss(zero, zero, zero)
    targets = mask_labels[valid].float()[:, None].expand_as(logits)
    per_mask = FOCAL_WEIGHT * sigmoid_focal_loss(logits, targets) + dice_loss(logits, targets)
    mask_loss = per_mask.min(dim=1).values.mean()
    iou_loss = F.mse_loss(iou_scores[valid].float(), mask_iou(logits > 0, targets > 0.5).float().detach())
    return SegmentationLoss(mask_loss + iou_loss, mask_loss, iou_loss)
