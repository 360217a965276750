"""SAM's interactive training: a correction point sampled from where the last prediction is wrong.

SAM was trained by simulating a user: after a first prediction from a box or points, each round adds a point
drawn uniformly from the error region of the prediction, positive where the target was missed and negative
where the mask spilled over, and the model predicts again from all its prompts. That is what teaches it what a
negative point means anywhere in the image, not only beside the object.
"""

from __future__ import annotations

import torch

from ..data.transforms import PADDING_LABEL


def error_points(
    pred_masks: torch.Tensor, iou_scores: torch.Tensor, mask_labels: torch.Tensor, mask_valid: torch.Tensor,
    input_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One correction point per region, from the error of the mask with the highest predicted IoU.

    Args:
        pred_masks: `(B, R, M, h, w)` low-res mask logits; iou_scores `(B, R, M)`.
        mask_labels: `(B, R, h, w)` 0/1 targets in the same frame; mask_valid `(B, R)`.
        input_size: the side of the model's input frame, in which prompts are given (`h` spans it).
    Returns:
        points `(B, R, 1, 2)` (x, y in the input frame, at the pixel's centre) and labels `(B, R, 1)`: 1 on a
        missed pixel, 0 on a spilled one, the "no point" label where the mask is right or there is no target.
    """
    batch, regions, _, height, width = pred_masks.shape
    best = iou_scores.argmax(dim=-1)[..., None, None, None].expand(-1, -1, 1, height, width)
    predicted = pred_masks.gather(2, best)[:, :, 0] > 0
    wanted = mask_labels > 0.5
    wrong = (predicted != wanted).flatten(2).float()  # (B, R, h·w)
    has_error = (wrong.sum(-1) > 0) & mask_valid.bool()
    weights = torch.where(has_error[..., None], wrong, torch.ones_like(wrong))  # any pixel where nothing is wrong
    index = torch.multinomial(weights.flatten(0, 1), 1).view(batch, regions)
    rows, columns = index // width, index % width
    scale = input_size / width
    points = torch.stack([(columns + 0.5) * scale, (rows + 0.5) * scale], dim=-1)[:, :, None].to(pred_masks.dtype)
    missed = wanted.flatten(2).gather(2, index[..., None])[..., 0]
    labels = torch.where(has_error, missed.long(), torch.full_like(index, PADDING_LABEL))
    return points, labels[..., None]
