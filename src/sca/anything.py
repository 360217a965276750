"""Anything mode: segment everything in an image with a grid of point prompts, then caption what survives.

As SAM's automatic mask generator sits on its predictor, `AnythingGenerator` sits on a `RegionModel`: the image is
encoded once; the grid goes through the segmenter in batches; masks are kept by predicted IoU and stability
score, de-duplicated by box NMS, and only the survivors are captioned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .data.sam_frame import FramedImage
from .geometry import mask_nms, nms, point_grid, remove_small_regions, stability_score
from .masks import decode_rle, encode_rles, rle_box
from .models.prompts import Prompts
from .models.region_model import EncodedImages, RegionModel
from .options import MIN_REGION_AREA, SPECK_LOW_RES_PIXELS, AnythingOptions


class Cancelled(Exception):
    """Nobody waits for the work any more: it stopped between two steps."""


@dataclass
class FoundRegion:
    """A mask anything mode kept: its grid point (original pixels), SAM's predicted IoU and stability score,
    its low-resolution logits `(h, w)`, its caption, and its mask at the image's size as COCO RLE when small regions
    were removed from it (else None: the mask is the logits upsampled)."""

    point: list[float]
    score: float
    stability: float
    low_res_mask: torch.Tensor
    caption: str
    mask_rle: dict | None = None


class AnythingGenerator:
    """Segment and caption everything in an encoded image (SAM's automatic mask generator, then captions)."""

    def __init__(self, model: RegionModel, options: AnythingOptions | None = None):
        self.model = model
        self.options = (options or AnythingOptions()).for_model(model.anything_filters).check()

    @torch.no_grad()
    def generate(self, encoded: EncodedImages, tasks: Sequence[str] | None = None,
                 cancelled: Callable[[], bool] | None = None) -> list[FoundRegion]:
        """The kept masks of one encoded image, best predicted IoU first. Stability scores come from the
        segmenter's low-resolution logits, boxes (for NMS) from the masks at the image's size. `cancelled()` is
        asked between batches of the grid and before captioning: when it turns true, `Cancelled` is raised."""

        def check() -> None:
            if cancelled is not None and cancelled():
                raise Cancelled("anything mode was cancelled")

        options, frame = self.options, self.model.frame
        framed = encoded.framed[0]
        height, width = framed.original_size
        points = point_grid(options.points_per_side, width, height)
        frame_points = framed.scale(points).float()
        scale = frame.mask_size / frame.image_size
        valid_h, valid_w = (max(1, round(side * scale)) for side in framed.input_size)

        kept_logits, kept_scores, kept_points, kept_stability = [], [], [], []
        for start in range(0, len(points), options.points_per_batch):
            check()
            batch = frame_points[start : start + options.points_per_batch][None, :, None]
            # The IoU filter first: the segmenter need not upscale the masks of points that cannot pass it.
            scores, logits = self.model.segment(encoded, Prompts(points=batch), min_iou=options.pred_iou_thresh)
            scores = scores[0].float()  # (P, M)
            confident = scores > options.pred_iou_thresh
            # (K, h, w); boolean selection copies, so it is skipped where everything passes (filters opened)
            candidates = (logits[0].flatten(0, 1) if confident.all() else logits[0][confident]).float()
            stability = stability_score(candidates[..., :valid_h, :valid_w], 0.0, options.stability_score_offset)
            stable = stability >= options.stability_score_thresh
            point_index = torch.nonzero(confident, as_tuple=True)[0][stable]
            kept_logits.append((candidates if stable.all() else candidates[stable]).cpu())
            kept_scores.append(scores[confident][stable].cpu())
            kept_stability.append(stability[stable].cpu())
            kept_points.append(point_index.cpu() + start)
        logits, scores = torch.cat(kept_logits), torch.cat(kept_scores)
        stability, point_index = torch.cat(kept_stability), torch.cat(kept_points)
        if len(scores) == 0:
            return []
        if options.max_candidates is not None and len(scores) > options.max_candidates:
            best = scores.argsort(descending=True, stable=True)[: options.max_candidates]
            logits, scores, stability, point_index = (t[best] for t in (logits, scores, stability, point_index))
        # Boxes of the masks as they are returned (at the image's size): low-res logits can hold specks that
        # vanish when upsampled, and would stretch a low-res box.
        boxes = self.model.frame.boxes_at_original(logits, framed)
        ranked = self._box_nms(boxes, scores)
        if len(ranked) == 0:
            return []
        logits, scores, stability, point_index = (t[ranked] for t in (logits, scores, stability, point_index))
        kept, rles = self._post_processed(framed, logits, scores, valid_h, valid_w)
        if len(kept) == 0:
            return []
        logits, scores, stability, point_index = (t[kept] for t in (logits, scores, stability, point_index))
        survivor_points = points[point_index]
        check()
        captions = self.model.describe(
            encoded, Prompts(points=framed.scale(survivor_points).float()[None, :, None]), logits[None], tasks
        )[0]
        return [FoundRegion(point, float(score), float(stable), low_res, caption, rle)
                for point, score, stable, low_res, caption, rle in zip(survivor_points.tolist(), scores, stability,
                                                                       logits, captions, rles)]

    def _post_processed(self, framed: FramedImage, logits: torch.Tensor, scores: torch.Tensor, valid_h: int,
                        valid_w: int) -> tuple[torch.Tensor, list[dict | None]]:
        """Of the candidates (best first, past box NMS), the indexes that survive SAM's post-processing (small regions
        removed, then box NMS again; mask NMS), at most `max_masks`, best first, with their cleaned masks as RLE (None
        where none were cleaned). Greedy suppression over the best `n` keeps exactly those of the best `n` it keeps
        over all, so the best are post-processed first, twice as many each time until `max_masks` survive: no more
        full-size masks cleaned than the count needs, and `max_masks` counts what survives."""
        options = self.options
        total = len(scores)
        min_region_area = self._min_region_area(framed)
        cleaned: list[dict] = []
        count = total if options.max_masks is None else min(total, options.max_masks)
        while True:
            if min_region_area:
                cleaned += self._cleaned(framed, logits[len(cleaned) : count], min_region_area)
                boxes = torch.tensor([rle_box(rle) or [0.0] * 4 for rle in cleaned])  # from the runs: no mask pass
                kept = self._box_nms(boxes, scores[:count])
            else:
                kept = torch.arange(count)
            if options.mask_nms_thresh is not None and len(kept):
                chosen = logits[kept][..., :valid_h, :valid_w] > 0
                kept = kept[mask_nms(chosen, scores[kept], options.mask_nms_thresh)]
            if options.max_masks is None or len(kept) >= options.max_masks or count == total:
                break
            count = min(total, 2 * count)
        kept = kept[: options.max_masks]
        return kept, [cleaned[i] for i in kept.tolist()] if min_region_area else [None] * len(kept)

    def _box_nms(self, boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Indexes kept by box NMS, best first; a mask empty at the image's size (its box all zeros) is no region."""
        nonempty = torch.nonzero(boxes[:, 2] > boxes[:, 0]).flatten()
        return nonempty[nms(boxes[nonempty], scores[nonempty], self.options.box_nms_thresh)]

    def _min_region_area(self, framed: FramedImage) -> int:
        """The option's pixels, or by default `SPECK_LOW_RES_PIXELS` low-res mask pixels at the image's size (at least
        `MIN_REGION_AREA`)."""
        if self.options.min_region_area is not None:
            return self.options.min_region_area
        frame = self.model.frame
        (height, width), (input_height, input_width) = framed.original_size, framed.input_size
        low_res_pixel = height * width / (input_height * input_width) * (frame.image_size / frame.mask_size) ** 2
        return max(MIN_REGION_AREA, round(SPECK_LOW_RES_PIXELS * low_res_pixel))

    def _cleaned(self, framed: FramedImage, logits: torch.Tensor, min_region_area: int) -> list[dict]:
        """SAM's post-processing of each mask: small islands and holes removed at the image's size; as RLE (a
        full-size mask per region would be an image's worth of memory each)."""
        return [encode_rles(torch.from_numpy(remove_small_regions(mask, min_region_area))[None])[0]
                for masks in self.model.frame.masks_to_original_in_pieces(logits, framed) for mask in masks.cpu().numpy()]


def full_size_mask(model: RegionModel, region: FoundRegion, encoded: EncodedImages) -> torch.Tensor:
    """A kept region's mask at the image's size, `(H, W)` bool (where the model is, unless small regions were
    removed from it)."""
    if region.mask_rle is not None:
        return torch.from_numpy(decode_rle(region.mask_rle))
    return model.frame.masks_to_original(region.low_res_mask[None, None], encoded.framed[0])[0, 0]


def full_size_rle(model: RegionModel, region: FoundRegion, encoded: EncodedImages) -> dict:
    """A kept region's mask at the image's size as COCO RLE (JSON-ready)."""
    if region.mask_rle is not None:
        return region.mask_rle
    return encode_rles(full_size_mask(model, region, encoded)[None])[0]
