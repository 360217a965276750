"""SAM-Captioner, any segmenter × any captioner: a SAM-family model segments each prompt into up to 3 masks; a
captioner describes each mask (or the best one): the crop of its box (BLIP, BLIP-2, GIT, InstructBLIP), its box as
Florence-2 location tokens, or a focal prompt to a chat VLM (`captioners.py`).

Unlike SCA, the captioner looks at pixels again for every mask: the cost grows with regions × masks, which is what
the benchmark compares.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from transformers import PreTrainedModel

from ..data.sam_frame import FullSizeMasks
from ..errors import InputError
from ..options import DECODER_CHUNK, GenerationOptions
from .captioners import CHAIN_OF_THOUGHT, Captioner, CropCaptioner, crop_box, load_captioner
from .cpu_products import with_onednn_linear_layers
from .prompts import Prompts
from .region_model import EncodedImages, RegionModel, RegionOutputs
from .segmenters import Segmenter

CANDIDATES = ("all", "best")
__all__ = ["CHAIN_OF_THOUGHT", "CropCaptioner", "SamCaptioner", "build_sam_captioner", "crop_box"]


class SamCaptioner(RegionModel):
    """A segmenter and a captioner: per region, one caption per mask (`candidates="all"`: 3 with multimask output)
    or one for the mask of the highest predicted IoU (`"best"`).

    sam: a `Segmenter`, or a transformers SAM-family model (left as it is: on a CPU, SAM's encoder runs through a
    blocked view that shares its weights, as SCA's does). The image encoder runs once per image; prompts go through
    the segmenter's decoder in chunks of `chunk_size` regions, and their masks through the captioner in its batches.
    """

    needs_pictures = True

    def __init__(self, sam: Segmenter | PreTrainedModel, captioner: Captioner, chunk_size: int = DECODER_CHUNK,
                 candidates: str = "all"):
        if candidates not in CANDIDATES:
            raise InputError(f"candidates must be all or best, got {candidates!r}")
        self.segmenter = sam if isinstance(sam, Segmenter) else Segmenter(sam, chunk_size)
        self.captioner, self.candidates = captioner, candidates
        self.frame = self.segmenter.frame

    @property
    def device(self) -> torch.device:
        return self.segmenter.device

    @property
    def dtype(self) -> torch.dtype:
        return self.segmenter.dtype

    @torch.no_grad()
    @with_onednn_linear_layers
    def image_embeddings(self, pixel_values: torch.Tensor):
        return self.segmenter.image_embeddings(pixel_values)

    @torch.no_grad()
    @with_onednn_linear_layers
    def segment(self, encoded: EncodedImages, prompts: Prompts, multimask_output: bool = True,
                min_iou: float | None = None):  # transformers' decoders make every mask: min_iou is not used
        return self.segmenter.segment(encoded.embeddings, prompts, multimask_output)

    @torch.no_grad()
    @with_onednn_linear_layers
    def caption(self, encoded: EncodedImages, prompts: Prompts, tasks: Sequence[str] | None = None,
                multimask_output: bool = True) -> RegionOutputs:
        scores, low_res = self.segment(encoded, prompts, multimask_output)
        valid = prompts.valid.tolist() if prompts.valid is not None else None
        candidates = []
        for b, picture in enumerate(encoded.pictures):
            regions = [r for r in range(prompts.num_regions) if valid is None or valid[b][r]]
            chosen = {r: range(low_res.shape[2]) if self.candidates == "all" else [int(scores[b, r].argmax())]
                      for r in regions}
            rows, columns = [r for r in regions for _ in chosen[r]], [m for r in regions for m in chosen[r]]
            masks = FullSizeMasks(self.frame, low_res[b, rows, columns], encoded.framed[b])
            captions = iter(self.captioner.describe(picture, masks))
            per_region = {r: [next(captions) for _ in chosen[r]] for r in regions}
            candidates.append([per_region.get(r, []) for r in range(prompts.num_regions)])
        return RegionOutputs(scores, low_res, candidates)

    @torch.no_grad()
    @with_onednn_linear_layers
    def describe(self, encoded: EncodedImages, prompts: Prompts, masks: torch.Tensor,
                 tasks: Sequence[str] | None = None) -> list[list[str]]:
        """The given masks described (the segmenter does not run again)."""
        return [self.captioner.describe(picture, FullSizeMasks(self.frame, masks[b], encoded.framed[b]))
                for b, picture in enumerate(encoded.pictures)]

    @torch.no_grad()
    @with_onednn_linear_layers
    def describe_views(self, views: Sequence[tuple[Image.Image, np.ndarray]]) -> str | None:
        return self.captioner.describe_views(views)

    def settings(self) -> dict:
        return {"model": "SamCaptioner", "segmenter": self.segmenter.model.config.model_type,
                "candidates": self.candidates, "dtype": str(self.dtype), **self.captioner.settings()}


def build_sam_captioner(
    sam: str = "facebook/sam-vit-huge",
    captioner: str = "Salesforce/blip2-opt-2.7b",
    prompt: str | None = None,
    chain_of_thought: bool | None = None,
    detail: str | None = None,
    candidates: str = "all",
    chunk_size: int = DECODER_CHUNK,
    batch_size: int = DECODER_CHUNK,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    generation: GenerationOptions | None = None,
) -> SamCaptioner:
    """A segmenter and a captioner, each a folder or a hub id (`org/name[@revision]`), each chosen by its class:
    SAM, SAM-HQ, SAM 2, EdgeTAM or SAM 3's tracker; a crop captioner, Florence-2 or a chat VLM. `detail` (brief or
    detailed) is a chat VLM's, `chain_of_thought` a crop captioner's."""
    generation = (generation or GenerationOptions()).check()
    if detail is not None and detail not in ("brief", "detailed"):
        raise InputError(f"detail must be brief or detailed, got {detail!r}")
    segmenter = Segmenter.from_pretrained(sam, dtype=dtype, device=device, chunk_size=chunk_size)
    describer = load_captioner(captioner, dtype=dtype, device=device, prompt=prompt, chain_of_thought=chain_of_thought,
                               detail=detail, max_new_tokens=generation.max_new_tokens, num_beams=generation.num_beams,
                               batch_size=batch_size, generate_options=dict(generation.extra))
    return SamCaptioner(segmenter, describer, chunk_size, candidates)
