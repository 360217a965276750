"""The one interface every model family implements: encode an image once, then segment and caption regions.

A family (SCA; SAM + an image captioner; ...) is one subclass of `RegionModel` plus a row in `registry.py`. The
Python API (`RegionCaptioner`), anything mode, dataset inference, the training metric, the benchmarks and the
server call only this interface.

Why a base class and not a `typing.Protocol`: encoding is the same for every SAM-like segmenter (frame the
pictures, run the image encoder once), so it is written once here; a family implements three methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import torch
from PIL import Image

from ..data.sam_frame import FramedImage, SamFrame, load_image
from .mask_caption_decoder import DecoderState
from .prompts import Prompts


@dataclass
class EncodedImages:
    """B images, encoded once and answered many times.

    embeddings: the segmenter's image embeddings: `(B, C, h, w)`, or a tuple/list of such tensors (SAM-HQ's
        intermediate features, SAM 2's feature levels).
    framed: each image in the segmenter's frame (sizes, to map masks back to the original pixels).
    pictures: the original images, for families that look at pixels (crop captioners, VLMs); None otherwise.
    """

    embeddings: torch.Tensor | tuple | list
    framed: list[FramedImage]
    pictures: list[Image.Image] | None = None

    @property
    def nbytes(self) -> int:
        """What holding this encoding costs: its embeddings, framed pixels and kept pictures, in bytes."""
        pixels = sum(f.pixel_values.numel() * f.pixel_values.element_size() for f in self.framed)
        pictures = sum(p.width * p.height * len(p.getbands()) for p in self.pictures or [])
        return _nbytes(self.embeddings) + pixels + pictures

    def image(self, index: int) -> EncodedImages:
        """One of the images, as a batch of one."""
        return self.select([index])

    def select(self, indices: list[int]) -> EncodedImages:
        """Some of the images, as a batch."""
        pictures = None if self.pictures is None else [self.pictures[i] for i in indices]
        return EncodedImages(_select(self.embeddings, indices), [self.framed[i] for i in indices], pictures)

    @staticmethod
    def concat(parts: list[EncodedImages]) -> EncodedImages:
        """Several encodings as one batch."""
        pictures = None if parts[0].pictures is None else [p for part in parts for p in part.pictures]
        return EncodedImages(_concat([p.embeddings for p in parts]), [f for part in parts for f in part.framed], pictures)


def _nbytes(embeddings) -> int:
    if isinstance(embeddings, torch.Tensor):
        return embeddings.numel() * embeddings.element_size()
    return sum(_nbytes(part) for part in embeddings)


def _select(embeddings, indices: list[int]):
    if isinstance(embeddings, torch.Tensor):
        return embeddings[indices]
    return type(embeddings)(_select(part, indices) for part in embeddings)


def _concat(parts: list):
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)
    return type(parts[0])(_concat([p[i] for p in parts]) for i in range(len(parts[0])))


@dataclass
class RegionOutputs:
    """What a family says about R regions of B images.

    iou_scores: `(B, R, M)` the segmenter's predicted IoU of each candidate mask.
    low_res_masks: `(B, R, M, h, w)` mask logits in the segmenter's low-resolution frame.
    candidates: `[image][region]` the region's candidate captions: one (SCA) or one per mask (crop captioners);
        empty for padding regions (`Prompts.valid` False).
    """

    iou_scores: torch.Tensor
    low_res_masks: torch.Tensor
    candidates: list[list[list[str]]]

    def first_candidates(self) -> list[list[str]]:
        """`[image][region]` each region's first candidate caption ("" for a padding region)."""
        return [[texts[0] if texts else "" for texts in image] for image in self.candidates]


class RegionModel(ABC):
    """Segments and captions prompted regions of images.

    Subclasses give `frame` (their segmenter's input frame), `device`, `dtype`, and implement
    `image_embeddings`, `segment` and `caption`; `needs_pictures` says whether `caption` reads the original pixels;
    `prompt_kinds` says which `Prompts` fields the family takes (every door refuses the others before any work);
    `anything_filters`, anything mode's default `pred_iou_thresh` and `stability_score_thresh` for this model (its
    scores are calibrated its own way; empty: SAM's, `options.SAM_ANYTHING_FILTERS`).
    """

    frame: SamFrame
    needs_pictures: bool = False
    prompt_kinds: frozenset[str] = frozenset({"points", "boxes", "masks"})
    anything_filters: Mapping[str, float] = MappingProxyType({})

    @property
    @abstractmethod
    def device(self) -> torch.device: ...

    @property
    @abstractmethod
    def dtype(self) -> torch.dtype: ...

    @abstractmethod
    def image_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, 3, S, S)` framed images → `(B, C, h, w)` image embeddings."""

    @abstractmethod
    def segment(self, encoded: EncodedImages, prompts: Prompts, multimask_output: bool = True,
                min_iou: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks alone: `(B, R, M)` predicted IoU and `(B, R, M, h, w)` low-resolution mask logits.

        `min_iou`: the caller uses only masks whose predicted IoU is above it (anything mode's filter), so a family
        may leave the masks of a region none of whose candidates does so unmade, as -inf logits; or ignore it.
        """

    @abstractmethod
    def caption(self, encoded: EncodedImages, prompts: Prompts, tasks: Sequence[str] | None = None,
                multimask_output: bool = True) -> RegionOutputs:
        """Masks and captions of the prompted regions. `tasks`: one task name per image (`data.records.TASK_TYPES`;
        families without task tokens ignore it); None: captioning."""

    def describe(self, encoded: EncodedImages, prompts: Prompts, masks: torch.Tensor,
                 tasks: Sequence[str] | None = None) -> list[list[str]]:
        """One caption per region for the given mask of each region (`(B, R, h, w)` low-res logits): what anything
        mode asks of the masks it kept. By default the region's first candidate for its prompt; families that
        look at pixels describe the mask itself."""
        return self.caption(encoded, prompts, tasks).first_candidates()

    def describe_views(self, views: Sequence[tuple[Image.Image, np.ndarray]]) -> str | None:
        """One caption for one object seen in several pictures (`(picture, (H, W) mask)` each: its keyframes in a
        video), by families whose captioner takes several images at once (chat VLMs); None for the others, whose
        video tracks take the caption their keyframes gave most."""
        return None

    @property
    def state_segmenter(self) -> torch.nn.Module | None:
        """The segmenter whose decoder state `describe_states` captions (SCA on SAM 2: its `Sam2Model`), else None. A
        video tracker on these weights hands over the state its memory conditioned, so a track is captioned from the
        tracker's own state, with no re-prompt."""
        return None

    @property
    def state_region_features(self) -> Callable | None:
        """What a state of `state_segmenter`'s decoder must also carry, made from the fine levels and masks of the
        call that made it (SCA on SAM 2 reading the fine levels: `ScaSam2Model.region_features`), else None."""
        return None

    def describe_states(self, states: Sequence[DecoderState]) -> list[str]:
        """One caption per region from its decoder state (`(1, 1, T, C)` tokens and `(1, 1, H·W, C)` image features
        each: what `state_segmenter`'s decoder made), by families with a `state_segmenter`."""
        raise NotImplementedError(f"{type(self).__name__} captions masks, not a segmenter's decoder state")

    def settings(self) -> dict:
        """What decides the output (a resumed dataset run must use the same)."""
        return {"model": type(self).__name__, "dtype": str(self.dtype)}

    @torch.no_grad()
    def encode(self, images: Sequence) -> EncodedImages:
        """Paths, PIL images or `(H, W, 3)` uint8 arrays → their encoding (the image encoder runs here, once)."""
        pictures = [load_image(image) for image in images]
        return self.encode_framed([self.frame.frame(picture) for picture in pictures], pictures)

    @torch.no_grad()
    def encode_framed(self, framed: list[FramedImage], pictures: list[Image.Image] | None = None) -> EncodedImages:
        """Images already in the frame (what dataset loaders prepare in their workers)."""
        pixel_values = torch.stack([f.pixel_values for f in framed]).to(self.device, self.dtype)
        return EncodedImages(self.image_embeddings(pixel_values), list(framed),
                             list(pictures) if pictures is not None and self.needs_pictures else None)
