"""`RegionCaptioner`: set an image once, then segment and caption as many regions as you like."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .anything import AnythingGenerator, full_size_rle
from .data.sam_frame import FramedImage, SamFrame
from .errors import InputError
from .masks import decode_rle, encode_rles, rle_box
from .models.loading import DTYPES
from .models.prompts import Prompts
from .models.region_model import EncodedImages, RegionModel
from .models.registry import build_region_model
from .options import AnythingOptions, GenerationOptions


@dataclass
class RegionCaption:
    """One region's result, in original image pixels.

    caption: the generated caption (with one candidate per mask: the caption of the highest-IoU mask).
    mask_rles: COCO RLE of each candidate mask (3 with multimask output); `masks` decodes them. Kept as RLE
        so that hundreds of regions of a large image cost kilobytes, not gigabytes.
    iou_scores: the segmenter's predicted IoU per candidate mask.
    prompt: the prompt that made the region (`box`, `points`/`point_labels`, `mask`: True).
    candidates: every caption made for the region (SCA: 1; SAM-Captioner: one per mask).
    """

    caption: str
    mask_rles: list[dict]
    iou_scores: list[float]
    prompt: dict = field(default_factory=dict)
    candidates: list[str] = field(default_factory=list)

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
    def box(self) -> list[float]:
        """The region's box, xyxy: the prompt box if there was one, else the best mask's tight box."""
        if "box" in self.prompt:
            return list(self.prompt["box"])
        return rle_box(self.mask_rles[self.best_index]) or [0.0, 0.0, 0.0, 0.0]

    def to_dict(self) -> dict:
        return {
            "caption": self.caption,
            "candidates": self.candidates or [self.caption],
            "iou_scores": [round(s, 6) for s in self.iou_scores],
            "best_iou": round(self.best_iou, 6),
            "box": [round(v, 2) for v in self.box],
            "mask_box": rle_box(self.mask_rles[self.best_index]),
            "mask": self.mask_rles[self.best_index],
            "prompt": self.prompt,
        }


class RegionCaptioner:
    """Promptable region captioning in the style of SAM's predictor, over any `RegionModel`.

    >>> captioner = RegionCaptioner.from_pretrained("path/to/model")
    >>> captioner.set_image("photo.jpg")            # the image encoder runs here, once
    >>> regions = captioner.caption(boxes=[[10, 20, 200, 180]])
    >>> regions[0].caption, regions[0].best_iou

    chunk_size: regions segmented and captioned at a time; masks leave each chunk as RLE, so memory follows the
        chunk, not the number of regions.
    """

    def __init__(self, model: RegionModel, chunk_size: int = 32):
        self.model = model
        self.chunk_size = chunk_size
        self._encoded: EncodedImages | None = None

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None = None,
        *,
        kind: str = "sca",
        tokenizer: str | Path | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        chunk_size: int = 32,
        max_new_tokens: int = 20,
        num_beams: int = 1,
        generate_options: dict | None = None,
        **options,
    ) -> RegionCaptioner:
        """A model of any kind (`models.registry`) from its folder or hub id; more builder options as keywords
        (e.g. `kind="sam-captioner", sam=..., captioner=...`)."""
        dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
        generation = GenerationOptions(max_new_tokens, num_beams, chunk_size, dict(generate_options or {})).check()
        model = build_region_model(kind, {"path": path, "tokenizer": tokenizer, **options}, dtype=dtype,
                                   device=torch.device(device), generation=generation)
        return cls(model, chunk_size=chunk_size)

    @property
    def frame(self):
        return self.model.frame

    # ------------------------------------------------------------------ image

    def set_image(self, image) -> None:
        """Encode an image (path, PIL image or `(H, W, 3)` uint8 array); later calls reuse the embedding."""
        self._encoded = self.model.encode([image])

    def _require_image(self) -> EncodedImages:
        if self._encoded is None:
            raise InputError("no image set: call set_image(image) before caption()")
        return self._encoded

    @property
    def image_size(self) -> tuple[int, int]:
        """`(H, W)` of the current image."""
        return self._require_image().framed[0].original_size

    # ------------------------------------------------------------------ regions

    def caption(
        self,
        boxes: Sequence[Sequence[float]] | np.ndarray | None = None,
        points: Sequence | np.ndarray | None = None,
        point_labels: Sequence | np.ndarray | None = None,
        masks: np.ndarray | None = None,
        *,
        task: str = "caption",
        multimask_output: bool = True,
    ) -> list[RegionCaption]:
        """Segment and caption R regions of the current image. Coordinates are original pixels.

        boxes: `(R, 4)` xyxy.
        points: `(R, 2)` one foreground point per region, or `(R, K, 2)` with point_labels `(R, K)`
            (1 foreground, 0 background).
        masks: `(R, H, W)` binary masks.
        Prompt kinds given together describe the same regions (a box plus points refine one region).
        """
        encoded = self._require_image()
        prompts, records = Prompts.from_pixels(encoded.framed[0], self.frame, boxes, points, point_labels, masks)
        results = []
        for start in range(0, prompts.num_regions, self.chunk_size):
            chunk = slice(start, start + self.chunk_size)
            output = self.model.caption(encoded, prompts.take(chunk), [task], multimask_output)
            scores = output.iou_scores[0].float().cpu().tolist()
            for i, (candidates, record) in enumerate(zip(output.candidates[0], records[chunk])):
                rles = full_size_rles(self.frame, output.low_res_masks[0, i], encoded.framed[0])
                best = candidates[int(np.argmax(scores[i]))] if len(candidates) == len(scores[i]) else candidates[0]
                results.append(RegionCaption(best, rles, scores[i], record, list(candidates)))
        return results

    def anything(self, options: AnythingOptions | None = None, *, task: str = "caption") -> list[RegionCaption]:
        """Segment and caption everything in the current image (`anything.AnythingGenerator`). Returns one
        `RegionCaption` per kept mask (one mask each), best predicted IoU first."""
        encoded = self._require_image()
        found = AnythingGenerator(self.model, options).generate(encoded, [task])
        return [
            RegionCaption(region.caption, [full_size_rle(self.model, region, encoded)], [region.score],
                          {"points": [region.point], "point_labels": [1], "stability_score": round(region.stability, 6)},
                          [region.caption])
            for region in found
        ]


def full_size_rles(frame: SamFrame, low_res: torch.Tensor, framed: FramedImage) -> list[dict]:
    """One region's `(M, h, w)` low-res logits → M COCO RLEs at the original size (a 25-megapixel mask is 100 MB
    of float logits on its way: such masks go one at a time)."""
    return [rle for masks in frame.masks_to_original_in_pieces(low_res, framed) for rle in encode_rles(masks)]
