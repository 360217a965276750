"""Quality on held-out shapes images: caption exact match, CIDEr-D and METEOR, and mask mIoU, for box and
point prompts. The goals are those of the shipped model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..api import RegionCaptioner
from ..data.records import ImageRecord
from ..data.sources.shapes import ShapesWorld
from ..geometry import mask_iou
from ..masks import decode_mask
from ..tables import markdown_table

GOALS = {
    ("box", "exact_match"): 0.90,
    ("box", "mIoU"): 0.80,
    ("point", "mIoU"): 0.70,
}


def held_out_records(num_images: int = 200, image_size: int = 128) -> list[ImageRecord]:
    """The shapes world's test split, never seen in training (train and val use other seeds)."""
    return ShapesWorld.split("test", image_size=image_size).records(num_images)


def interior_point(mask: np.ndarray) -> list[float]:
    """The mask pixel nearest the mask's centroid (inside the shape even where the centroid is not), as xy."""
    ys, xs = np.nonzero(mask)
    nearest = np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2)
    return [xs[nearest] + 0.5, ys[nearest] + 0.5]


def evaluate_quality(
    captioner: RegionCaptioner,
    records: Sequence[ImageRecord],
    prompts: Sequence[str] = ("box", "point"),
    caption_metrics: bool = True,
    show_progress: bool = True,
) -> dict[str, dict[str, float]]:
    """`{prompt kind: {"regions", "exact_match", "mIoU", ["CIDEr-D", "METEOR"]}}` on the 0-1 scale."""
    references: list[list[str]] = []
    results = {kind: {"captions": [], "ious": []} for kind in prompts}
    for record in tqdm(records, desc="quality", unit="img", disable=not show_progress):
        if not record.regions:
            continue
        image = record.load()
        captioner.set_image(image)
        masks = [decode_mask(r.mask, record.height, record.width) for r in record.regions]
        references += [list(r.captions) for r in record.regions]
        for kind in prompts:
            if kind == "box":
                regions = captioner.caption(boxes=[r.box for r in record.regions])
            else:
                regions = captioner.caption(points=[interior_point(m) for m in masks])
            results[kind]["captions"] += [r.caption for r in regions]
            results[kind]["ious"] += [float(mask_iou(r.best_mask, m)) for r, m in zip(regions, masks)]

    report = {}
    for kind, result in results.items():
        captions = result["captions"]
        exact = [c.strip().lower() in {r.strip().lower() for r in refs} for c, refs in zip(captions, references)]
        report[kind] = {
            "regions": len(captions),
            "exact_match": float(np.mean(exact)) if exact else 0.0,
            "mIoU": float(np.mean(result["ious"])) if captions else 0.0,
        }
        if caption_metrics and captions:
            from ..eval.captions import score_captions

            keys = [str(i) for i in range(len(captions))]
            corpus, _ = score_captions(dict(zip(keys, references)), dict(zip(keys, captions)))
            report[kind].update({"CIDEr-D": corpus["CIDEr-D"], "METEOR": corpus["METEOR"]})
    return report


def quality_table(report: dict[str, dict[str, float]], images: int) -> str:
    """Markdown: one row per prompt kind, the goals beside the figures."""
    names = ["exact_match", "mIoU", "CIDEr-D", "METEOR"]
    rows = []
    for kind, figures in report.items():
        cells = []
        for name in names:
            if name not in figures:
                cells.append("")
                continue
            goal = GOALS.get((kind, name))
            mark = "" if goal is None else f" ({'≥' if figures[name] >= goal else 'below '}{100 * goal:.0f})"
            cells.append(f"{100 * figures[name]:.1f}{mark}")
        rows.append([kind, figures["regions"], *cells])
    return markdown_table(["prompt", "regions", *names], rows,
                          title=f"Quality on {images} held-out shapes images (scores x100; goal in brackets)")


def goals_met(report: dict[str, dict[str, float]]) -> bool:
    return all(report[kind][name] >= goal for (kind, name), goal in GOALS.items() if kind in report)
