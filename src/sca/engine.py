"""The one path from an encoded image and prompts to region results, behind every front door.

`RegionEngine` runs a `RegionModel` over regions in chunks (so memory follows the chunk, not the request), checks
between chunks whether anyone still waits for the answer, picks each region's best candidate and shapes its
result (`RegionCaption`, whose `to_dict()` is the JSON every door writes). The Python API, the server's worker,
anything mode's results, video's first frame, the dataset predictors, the trainer's metric and `sca bench speed`
call it; none keeps a chunk loop, a candidate rule or a result shape of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .anything import AnythingGenerator, Cancelled, FoundRegion, full_size_rle
from .candidates import best_candidate
from .data.records import TASK_TYPES
from .errors import InputError
from .masks import decode_rle, encode_rles, rle_box
from .models.prompts import PromptGroup, Prompts, RegionPrompt, check_regions, group_prompts
from .models.region_model import EncodedImages, RegionModel, RegionOutputs
from .options import AnythingOptions, GenerationOptions

IsCancelled = Callable[[], bool]
__all__ = ["Cancelled", "ImageRegions", "RegionCaption", "RegionEngine", "RegionPrediction", "best_candidate"]


@dataclass
class RegionCaption:
    """One region's result, in original image pixels.

    caption: the generated caption (with one candidate per mask: the caption of the highest-IoU mask).
    mask_rles: COCO RLE of each candidate mask (3 with multimask output); `masks` decodes them. Kept as RLE
        so that hundreds of regions of a large image cost kilobytes, not gigabytes.
    iou_scores: the segmenter's predicted IoU per candidate mask.
    prompt: the prompt that made the region (`box`, `points`/`point_labels`, `mask`: True).
    candidates: every caption made for the region (SCA: 1; SAM-Captioner: one per mask).
    stability_score: the best mask's stability score, where it was computed (anything mode).
    """

    caption: str
    mask_rles: list[dict]
    iou_scores: list[float]
    prompt: dict = field(default_factory=dict)
    candidates: list[str] = field(default_factory=list)
    stability_score: float | None = None

    @property
    def masks(self) -> np.ndarray:
        """`(M, H, W)` boolean candidate masks."""
        return np.stack([decode_rle(rle) for rle in self.mask_rles])

    @property
    def best_index(self) -> int:
        return int(np.argmax(self.iou_scores))

    @property
    def best_mask(self) -> np.ndarray:
        return decode_rle(self.mask_rles[self.best_index])

    @property
    def best_iou(self) -> float:
        return float(self.iou_scores[self.best_index])

    @property
    def mask_box(self) -> list[float] | None:
        """The best mask's tight box, xyxy; None when the mask is empty."""
        return rle_box(self.mask_rles[self.best_index])

    @property
    def empty(self) -> bool:
        """The best mask holds no pixel: the segmenter found nothing at the prompt, and the caption describes
        nothing it segmented (a point on the background, say)."""
        return self.mask_box is None

    @property
    def box(self) -> list[float]:
        """The region's box, xyxy: the prompt box if there was one, else the best mask's tight box."""
        if "box" in self.prompt:
            return list(self.prompt["box"])
        return self.mask_box or [0.0, 0.0, 0.0, 0.0]

    def to_dict(self) -> dict:
        """The JSON form every door writes (the API's callers, the CLI, the server)."""
        mask_box = self.mask_box
        return {
            "caption": self.caption,
            "candidates": self.candidates or [self.caption],
            "iou_scores": [round(s, 6) for s in self.iou_scores],
            "best_iou": round(self.best_iou, 6),
            "stability_score": None if self.stability_score is None else round(self.stability_score, 6),
            "box": [round(v, 2) for v in self.box],
            "mask_box": mask_box,
            "empty": mask_box is None,
            "mask": self.mask_rles[self.best_index],
            "prompt": self.prompt,
        }


@dataclass
class RegionPrediction:
    """A region's captions without masks (dataset inference, the training metric). candidates: one caption per
    text head (SCA: 1) or per mask; iou_scores: the segmenter's score for each of its masks."""

    candidates: list[str]
    iou_scores: list[float]


@dataclass
class ImageRegions:
    """One image's share of a batched caption call: its encoding (a batch of one), its regions grouped by prompt
    kinds, its task, and how to tell that nobody waits for it any more."""

    encoded: EncodedImages
    groups: list[PromptGroup]
    task: str = "caption"
    cancelled: IsCancelled | None = None

    @property
    def num_regions(self) -> int:
        return sum(len(group.indices) for group in self.groups)

    def is_cancelled(self) -> bool:
        return self.cancelled is not None and self.cancelled()


class RegionEngine:
    """Segments and captions regions with any `RegionModel`, chunk by chunk.

    chunk_size: regions through the model at a time; their masks leave each chunk as RLE, so memory follows the
        chunk, not the number of regions.
    """

    def __init__(self, model: RegionModel, chunk_size: int = GenerationOptions.chunk_size):
        self.model = model
        self.chunk_size = chunk_size

    # ------------------------------------------------------------------ prompts

    def group(self, encoded: EncodedImages, regions: Sequence[RegionPrompt]) -> list[PromptGroup]:
        """Regions of one image, any mix of kinds, checked and grouped; refused when the family cannot take a kind."""
        groups = group_prompts(encoded.framed[0], self.model.frame, regions)
        for group in groups:
            self.check_kinds(group.prompts)
        return groups

    def check(self, size: tuple[int, int], regions: Sequence[RegionPrompt]) -> None:
        """`group`'s checks for an image of `(H, W)`, before any work (`prompts.check_regions`), and the kinds
        against the family."""
        check_regions(size, regions)
        kinds = {name for region in regions for name, given in
                 (("boxes", region.box), ("points", region.points), ("masks", region.mask)) if given is not None}
        self._refuse(kinds)

    def check_kinds(self, prompts: Prompts) -> None:
        """Refuse prompt kinds the family does not declare (`RegionModel.prompt_kinds`)."""
        self._refuse({name for name in ("points", "boxes", "masks") if getattr(prompts, name) is not None})

    def _refuse(self, given: set[str]) -> None:
        refused = sorted(given - set(self.model.prompt_kinds))
        if refused:
            taken = " and ".join(sorted(self.model.prompt_kinds))
            raise InputError(f"this model ({type(self.model).__name__}) takes {taken} as prompts, not {refused[0]} (it "
                             f"was not trained with them): give {taken} instead")

    def _groups(self, encoded: EncodedImages, prompts: Prompts | Sequence[RegionPrompt],
                records: list[dict] | None) -> list[PromptGroup]:
        """`Prompts` (a batch of one, each region's prompt as given in `records`) as one group, or `RegionPrompt`s
        of any mix of kinds grouped by kind; checked against the family."""
        if not isinstance(prompts, Prompts):
            return self.group(encoded, prompts)
        self.check_kinds(prompts)
        records = records if records is not None else [{} for _ in range(prompts.num_regions)]
        return [PromptGroup(list(range(prompts.num_regions)), prompts, records)]

    # ------------------------------------------------------------------ prompted regions

    @torch.no_grad()
    def caption(self, encoded: EncodedImages, prompts: Prompts | Sequence[RegionPrompt], records: list[dict] | None = None,
                task: str = "caption", multimask_output: bool = True,
                cancelled: IsCancelled | None = None) -> list[RegionCaption]:
        """The regions of one encoded image: `Prompts` (a batch of one, with each region's prompt as given in
        `records`) or `RegionPrompt`s of any mix of kinds. Raises `Cancelled` when `cancelled()` turns true."""
        groups = self._groups(encoded, prompts, records)
        (result,) = self.caption_images([ImageRegions(encoded, groups, task, cancelled)], multimask_output)
        if result is None:
            raise Cancelled("the request was cancelled")
        return result

    @torch.no_grad()
    def segment(self, encoded: EncodedImages, prompts: Prompts | Sequence[RegionPrompt],
                records: list[dict] | None = None, multimask_output: bool = True) -> list[RegionCaption]:
        """`caption`'s regions with their masks and scores only (no caption made: `caption` is ""), for a caller that
        captions them otherwise (a video tracker's state)."""
        groups = self._groups(encoded, prompts, records)
        (result,) = self.caption_images([ImageRegions(encoded, groups)], multimask_output, captioned=False)
        return result

    @torch.no_grad()
    def caption_images(self, images: Sequence[ImageRegions], multimask_output: bool = True, captioned: bool = True
                       ) -> list[list[RegionCaption] | None]:
        """The regions of several images, those of the same prompt kinds in one model step per chunk (dynamic
        batching: the LM decodes them together). An image cancelled meanwhile leaves at the next chunk (None).
        captioned: False makes masks and scores only (the segmenter's step; every caption "")."""
        results: list[list[RegionCaption | None]] = [[None] * image.num_regions for image in images]
        by_kinds: dict[tuple, list[tuple[int, PromptGroup]]] = {}
        for i, image in enumerate(images):
            for group in image.groups:
                by_kinds.setdefault(_kinds(group.prompts), []).append((i, group))
        for members in by_kinds.values():
            count = max(group.prompts.num_regions for _, group in members)
            padded = [_pad(group.prompts, count) for _, group in members]
            for start in range(0, count, self.chunk_size):
                active = [m for m, (i, group) in enumerate(members)
                          if start < group.prompts.num_regions and not images[i].is_cancelled()]
                if not active:
                    break
                chunk = slice(start, start + self.chunk_size)
                encoded = EncodedImages.concat([images[members[m][0]].encoded for m in active])
                prompts = _stack([padded[m].take(chunk) for m in active])
                tasks = [images[members[m][0]].task for m in active]
                if captioned:
                    output = self.model.caption(encoded, prompts, tasks, multimask_output)
                else:
                    scores, low_res = self.model.segment(encoded, prompts, multimask_output)
                    output = RegionOutputs(scores, low_res, [[[""]] * prompts.num_regions] * len(active))
                scores = output.iou_scores.float().cpu().tolist()
                for row, m in enumerate(active):
                    i, group = members[m]
                    framed = encoded.framed[row]
                    for r, (index, record) in enumerate(zip(group.indices[chunk], group.records[chunk])):
                        if images[i].is_cancelled():  # a region's masks at a large photo's size take a while
                            break
                        candidates = list(output.candidates[row][r])
                        rles = self.full_size_rles(output.low_res_masks[row, r], framed)
                        results[i][index] = RegionCaption(_chosen(candidates, scores[row][r]), rles,
                                                          scores[row][r], record, candidates)
        return [None if image.is_cancelled() else result for image, result in zip(images, results)]

    def full_size_rles(self, low_res: torch.Tensor, framed) -> list[dict]:
        """One region's `(M, h, w)` low-res logits → M COCO RLEs at the original size (a 25-megapixel mask is 100 MB
        of float logits on its way: such masks go one at a time)."""
        frame = self.model.frame
        return [rle for masks in frame.masks_to_original_in_pieces(low_res, framed) for rle in encode_rles(masks)]

    @torch.no_grad()
    def predict(self, encoded: EncodedImages, prompts: Prompts, tasks: Sequence[str] | None = None
                ) -> list[list[RegionPrediction]]:
        """Captions and IoU of B images' regions without their masks at image size (dataset inference, the
        training metric), chunk by chunk; `prompts.valid` marks padding, which gets no prediction."""
        self.check_kinds(prompts)
        counts = ([prompts.num_regions] * prompts.batch_size if prompts.valid is None
                  else prompts.valid.sum(1).tolist())
        predictions: list[list[RegionPrediction]] = [[] for _ in range(prompts.batch_size)]
        for start in range(0, prompts.num_regions, self.chunk_size):
            output = self.model.caption(encoded, prompts.take(slice(start, start + self.chunk_size)), tasks)
            scores = output.iou_scores.float().cpu().tolist()
            for b, count in enumerate(counts):
                for r in range(min(count - start, len(scores[b]))):
                    predictions[b].append(RegionPrediction(list(output.candidates[b][r]), scores[b][r]))
        return predictions

    def predict_batch(self, encoded: EncodedImages, batch: dict) -> list[list[RegionPrediction]]:
        """A collated dataset batch (`input_boxes (B, R, 4)`, `region_mask (B, R)`, `task_type_ids (B,)`)."""
        prompts = Prompts(boxes=batch["input_boxes"], valid=batch["region_mask"].bool())
        return self.predict(encoded, prompts, [TASK_TYPES[int(i)] for i in batch["task_type_ids"]])

    # ------------------------------------------------------------------ anything mode

    @torch.no_grad()
    def anything(self, encoded: EncodedImages, options: AnythingOptions | None = None, task: str = "caption",
                 cancelled: IsCancelled | None = None) -> list[RegionCaption]:
        """Everything in one encoded image (`AnythingGenerator`): one `RegionCaption` per kept mask, best predicted
        IoU first. Raises `Cancelled` when `cancelled()` turns true between steps."""
        found = AnythingGenerator(self.model, options).generate(encoded, [task], cancelled=cancelled)
        return [self.found_region(region, encoded) for region in found]

    def found_region(self, region: FoundRegion, encoded: EncodedImages) -> RegionCaption:
        return RegionCaption(region.caption, [full_size_rle(self.model, region, encoded)], [region.score],
                             {"points": [region.point], "point_labels": [1]}, [region.caption], region.stability)


def _chosen(candidates: list[str], scores: list[float]) -> str:
    """The region's caption; a family with several candidates but not one per mask gives its first."""
    chosen = best_candidate(candidates, scores)
    return candidates[0] if chosen is None else chosen


def _kinds(prompts: Prompts) -> tuple:
    """What prompts must share to be stacked into one batch."""
    return tuple((name, tuple(value.shape[2:])) for name, value in prompts.tensors().items() if name != "valid")


def _pad(prompts: Prompts, count: int) -> Prompts:
    """Prompts padded to `count` regions by repeating the last one, marked not `valid`."""
    missing = count - prompts.num_regions
    valid = torch.ones(1, count, dtype=torch.bool) if prompts.valid is None else prompts.valid
    if missing == 0:
        return Prompts(**{**prompts.tensors(), "valid": valid})
    valid = torch.cat([valid, torch.zeros(1, missing, dtype=torch.bool)], dim=1)
    padded = {name: torch.cat([value, value[:, -1:].expand(-1, missing, *value.shape[2:])], dim=1)
              for name, value in prompts.tensors().items() if name != "valid"}
    return Prompts(**padded, valid=valid)


def _stack(prompts: list[Prompts]) -> Prompts:
    names = prompts[0].tensors().keys()
    return Prompts(**{name: torch.cat([p.tensors()[name] for p in prompts]) for name in names})
