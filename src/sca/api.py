"""`RegionCaptioner`: set an image once, then segment and caption as many regions as you like."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .engine import RegionCaption, RegionEngine
from .errors import InputError
from .models.loading import DTYPES
from .models.prompts import Prompts, RegionPrompt
from .models.region_model import EncodedImages, RegionModel
from .models.registry import build_region_model
from .options import AnythingOptions, GenerationOptions

__all__ = ["InputError", "RegionCaption", "RegionCaptioner", "RegionPrompt"]


class RegionCaptioner:
    """Promptable region captioning in the style of SAM's predictor, over any `RegionModel`.

    >>> captioner = RegionCaptioner.from_pretrained("path/to/model")
    >>> captioner.set_image("photo.jpg")            # the image encoder runs here, once
    >>> regions = captioner.caption(boxes=[[10, 20, 200, 180]])
    >>> regions[0].caption, regions[0].best_iou

    chunk_size: regions segmented and captioned at a time; masks leave each chunk as RLE, so memory follows the
        chunk, not the number of regions.
    """

    def __init__(self, model: RegionModel, chunk_size: int = GenerationOptions.chunk_size):
        self.model = model
        self.engine = RegionEngine(model, chunk_size)
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
        chunk_size: int = GenerationOptions.chunk_size,
        max_new_tokens: int = GenerationOptions.max_new_tokens,
        num_beams: int = GenerationOptions.num_beams,
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
    def chunk_size(self) -> int:
        return self.engine.chunk_size

    @chunk_size.setter
    def chunk_size(self, value: int) -> None:
        self.engine.chunk_size = value

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
        return self.engine.caption(encoded, prompts, records, task, multimask_output)

    def caption_regions(self, regions: Sequence[RegionPrompt], *, task: str = "caption",
                        multimask_output: bool = True) -> list[RegionCaption]:
        """Segment and caption regions whose prompts differ in kind (one a box, one points with a negative, one a
        mask), in the order given: what the CLI and the server take."""
        return self.engine.caption(self._require_image(), regions, None, task, multimask_output)

    def anything(self, options: AnythingOptions | None = None, *, task: str = "caption") -> list[RegionCaption]:
        """Segment and caption everything in the current image (`anything.AnythingGenerator`). Returns one
        `RegionCaption` per kept mask (one mask each), best predicted IoU first."""
        return self.engine.anything(self._require_image(), options, task)
