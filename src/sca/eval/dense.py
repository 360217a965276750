"""Dense-captioning mAP (detect and describe), the DenseCap protocol (Johnson et al., CVPR 2016).

Per image, ground-truth boxes that overlap at IoU >= 0.7 are merged into one box (their mean) carrying all
their captions. Predictions, by decreasing score, are matched to the merged box they overlap most; a box
already taken makes the later prediction a false positive. Over all images, by decreasing score, a
prediction is a true positive at (IoU threshold t, METEOR threshold m) when its overlap is >= t, its box
was not taken, and the METEOR of its caption against the box's captions is > m. AP is the max-interpolated
precision averaged over DenseCap's recall thresholds; mAP averages AP over t in {0.3, ..., 0.7} and
m in {0, 0.05, ..., 0.25}. With m = -1 (any caption) the same gives the detection-only mAP.

Pixel convention: boxes are `[x1, y1, x2, y2]` in continuous pixel coordinates (COCO's convention, what
infer.json and our masks use): a box's area is `(x2 - x1) * (y2 - y1)`. DenseCap's Lua code added 1 to
widths and heights (inclusive integer pixels); `inclusive_pixels=True` reproduces that.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .. import geometry

IOU_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
METEOR_THRESHOLDS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25)
MERGE_IOU = 0.7


def _recall_thresholds() -> list[float]:
    # DenseCap's `for t=0,1,0.01`: accumulated in floating point, it stops at 0.99 (100 thresholds).
    thresholds, t = [], 0.0
    while t <= 1:
        thresholds.append(t)
        t += 0.01
    return thresholds


RECALL_THRESHOLDS = _recall_thresholds()


@dataclass
class DensePrediction:
    box: Sequence[float]
    caption: str
    score: float


@dataclass
class DenseReference:
    box: Sequence[float]
    captions: Sequence[str]


def box_iou(boxes, others, inclusive_pixels: bool = False) -> np.ndarray:
    """`geometry.box_iou` on arrays: `(N, 4)` × `(M, 4)` → `(N, M)`."""
    return geometry.box_iou(np.asarray(boxes, float), np.asarray(others, float), inclusive_pixels).numpy()


def merge_boxes(boxes: np.ndarray, threshold: float = MERGE_IOU, inclusive_pixels: bool = False) -> list[list[int]]:
    """Groups of box indices: repeatedly take the box overlapping (IoU >= threshold) the most remaining boxes,
    itself included, and group it with those boxes."""
    overlaps = box_iou(boxes, boxes, inclusive_pixels) >= threshold
    groups = []
    while True:
        counts = overlaps.sum(0)
        top = int(np.argmax(counts)) if len(counts) else 0
        if not len(counts) or counts[top] == 0:
            return groups
        members = np.flatnonzero(overlaps[top])
        groups.append(members.tolist())
        overlaps[members, :] = False
        overlaps[:, members] = False


@dataclass
class _Match:
    score: float
    overlap: float
    first_use: bool
    candidate: str
    references: list[str] | None


def _match_image(predictions: Sequence[DensePrediction], references: Sequence[DenseReference],
                 inclusive_pixels: bool) -> tuple[list[_Match], int]:
    boxes = np.array([r.box for r in references], float).reshape(-1, 4)
    groups = merge_boxes(boxes, MERGE_IOU, inclusive_pixels)
    merged_boxes = np.array([boxes[g].mean(0) for g in groups]).reshape(-1, 4)
    merged_captions = [[c for i in g for c in references[i].captions] for g in groups]
    order = sorted(range(len(predictions)), key=lambda i: -predictions[i].score)
    overlaps = box_iou(np.array([predictions[i].box for i in order], float), merged_boxes, inclusive_pixels)
    used = [False] * len(groups)
    matches = []
    for row, i in enumerate(order):
        best = -1
        if len(groups):
            j = int(np.argmax(overlaps[row]))
            best = j if overlaps[row, j] > 0 else -1
        first_use = best >= 0 and not used[best]
        if best >= 0:
            used[best] = True
        matches.append(_Match(predictions[i].score, float(overlaps[row, best]) if best >= 0 else 0.0, first_use,
                              predictions[i].caption, merged_captions[best] if best >= 0 else None))
    return matches, len(groups)


def average_precision(true_positive: np.ndarray, num_positives: int) -> float:
    """Max-interpolated AP of a score-sorted list of hits, as DenseCap computed it."""
    tp = np.cumsum(true_positive)
    fp = np.cumsum(~true_positive)
    recall = tp / num_positives
    precision = tp / np.maximum(tp + fp, 1)
    values = [float(np.max(precision * (recall >= t), initial=0.0)) for t in RECALL_THRESHOLDS]
    return float(np.mean(values))


def dense_captioning_map(
    images: Sequence[tuple[Sequence[DensePrediction], Sequence[DenseReference]]],
    meteor: Callable[[Mapping[str, Sequence[str]], Mapping[str, str]], Mapping[str, float]] | None = None,
    inclusive_pixels: bool = False,
) -> dict:
    """mAP over images given as `(predictions, references)`.

    meteor: per-pair METEOR, `{key: references}, {key: candidate}` → `{key: score}`; default pycocoevalcap's.
    Returns `{"mAP", "detection_mAP", "ap": {"iou0.3_meteor0.05": ...}, "detection_ap": {"iou0.3": ...},
    "predictions", "ground_truth_regions"}` on the 0-1 scale.
    """
    if meteor is None:
        from .captions import meteor_per_entry as meteor
    matches, num_positives = [], 0
    for predictions, references in images:
        image_matches, positives = _match_image(predictions, references, inclusive_pixels)
        matches += image_matches
        num_positives += positives
    if num_positives == 0:
        raise ValueError("dense-captioning mAP needs ground-truth regions; none were given")
    matches.sort(key=lambda m: -m.score)  # stable: ties keep image order
    keyed = {str(i): m for i, m in enumerate(matches) if m.references is not None}
    scores = meteor({k: m.references for k, m in keyed.items()}, {k: m.candidate for k, m in keyed.items()})
    meteor_scores = np.array([scores[str(i)] if str(i) in keyed else -np.inf for i in range(len(matches))])
    overlap = np.array([m.overlap for m in matches])
    first_use = np.array([m.first_use for m in matches], dtype=bool)

    ap, detection_ap = {}, {}
    for t in IOU_THRESHOLDS:
        located = (overlap >= t) & first_use
        detection_ap[f"iou{t:g}"] = average_precision(located, num_positives)
        for m in METEOR_THRESHOLDS:
            ap[f"iou{t:g}_meteor{m:g}"] = average_precision(located & (meteor_scores > m), num_positives)
    return {
        "mAP": float(np.mean(list(ap.values()))),
        "detection_mAP": float(np.mean(list(detection_ap.values()))),
        "ap": ap,
        "detection_ap": detection_ap,
        "predictions": len(matches),
        "ground_truth_regions": num_positives,
    }
