"""`RegionCaptioner`: set an image once, then segment and caption as many regions as you like."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import PreTrainedTokenizerBase

from .automatic import AnythingOptions, masks_to_boxes, nms, point_grid, stability_score
from .data.sam_frame import FramedImage, SamFrame, load_image
from .errors import InputError
from .masks import decode_rle, encode_rle, mask_box
from .models import ScaModel
from .models.sam_captioner import SamCaptioner
from .models.loading import load_sca_model, load_tokenizer


BOX_CHUNK = 32
"""Candidate masks upsampled to the image's size at a time, in anything mode."""


@dataclass
class RegionCaption:
    """One region's result, in original image pixels.

    caption: the generated caption (SAM-Captioner: the caption of the highest-IoU mask).
    mask_rles: COCO RLE of each candidate mask (3 with multimask output); `masks` decodes them. Kept as RLE
        so that hundreds of regions of a large image cost kilobytes, not gigabytes.
    iou_scores: SAM's predicted IoU per candidate mask.
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
        return mask_box(self.best_mask) or [0.0, 0.0, 0.0, 0.0]

    def to_dict(self) -> dict:
        return {
            "caption": self.caption,
            "candidates": self.candidates or [self.caption],
            "iou_scores": [round(s, 6) for s in self.iou_scores],
            "best_iou": round(self.best_iou, 6),
            "box": [round(v, 2) for v in self.box],
            "mask_box": mask_box(self.best_mask),
            "mask": self.mask_rles[self.best_index],
            "prompt": self.prompt,
        }


class RegionCaptioner:
    """Promptable region captioning in the style of SAM's predictor.

    >>> captioner = RegionCaptioner.from_pretrained("path/to/model")
    >>> captioner.set_image("photo.jpg")            # the image encoder runs here, once
    >>> regions = captioner.caption(boxes=[[10, 20, 200, 180]])
    >>> regions[0].caption, regions[0].best_iou
    """

    def __init__(
        self,
        model: ScaModel | SamCaptioner,
        tokenizer: PreTrainedTokenizerBase | None = None,
        *,
        chunk_size: int = 32,
        max_new_tokens: int = 20,
        num_beams: int = 1,
        generate_options: dict | None = None,
    ):
        self.model = model if isinstance(model, SamCaptioner) else model.eval()
        self.tokenizer = tokenizer
        self.frame = SamFrame.from_config(model.sam.config if isinstance(model, SamCaptioner) else model.config)
        self.chunk_size = chunk_size
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams
        self.generate_options = dict(generate_options or {})  # more LM `generate` arguments
        self._image: FramedImage | None = None
        self._picture: Image.Image | None = None
        self._image_embeddings: torch.Tensor | None = None

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        tokenizer: str | Path | None = None,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        **options,
    ) -> "RegionCaptioner":
        model = load_sca_model(path, dtype=dtype, device=device)
        tokenizer = load_tokenizer(tokenizer or path, model.config)
        return cls(model, tokenizer, **options)

    # ------------------------------------------------------------------ image

    @torch.no_grad()
    def set_image(self, image) -> None:
        """Encode an image (path, PIL image or `(H, W, 3)` uint8 array); later calls reuse the embedding."""
        picture = load_image(image)
        framed = self.frame.frame(picture)
        pixel_values = framed.pixel_values[None].to(self.model.device, self.model.dtype)
        self._image_embeddings = self.model.get_image_embeddings(pixel_values)
        self._image, self._picture = framed, picture

    @property
    def image_size(self) -> tuple[int, int]:
        """`(H, W)` of the current image."""
        return self._require_image().original_size

    def _require_image(self) -> FramedImage:
        if self._image is None:
            raise InputError("no image set: call set_image(image) before caption()")
        return self._image

    # ------------------------------------------------------------------ regions

    @torch.no_grad()
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
        framed = self._require_image()
        prompts = self._prompts(framed, boxes, points, point_labels, masks)
        count = len(prompts["records"])
        results = []
        # Chunk by chunk, masks leave as RLE: memory follows the chunk size, not the number of regions.
        for start in range(0, count, self.chunk_size):
            chunk = {k: v[:, start : start + self.chunk_size] if isinstance(v, torch.Tensor) else v[start : start + self.chunk_size]
                     for k, v in prompts.items()}
            if isinstance(self.model, SamCaptioner):
                results += self._caption_crops(framed, chunk, multimask_output)
            else:
                results += self._caption_chunk(framed, chunk, task, multimask_output)
        return results

    @torch.no_grad()
    def anything(self, options: AnythingOptions | None = None, *, task: str = "caption") -> list[RegionCaption]:
        """Segment and caption everything in the current image (SAM's automatic mask generator, then captions).

        A grid of point prompts goes through SAM's decoder in batches (the image encoder does not run again);
        masks are kept by predicted IoU and stability score, de-duplicated by box NMS, and only the survivors
        are captioned. Returns one `RegionCaption` per kept mask (one mask each), best predicted IoU first.
        Stability scores are computed on SAM's low-resolution logits, boxes on the masks at the image's size.
        """
        options = options or AnythingOptions()
        options.check()
        framed = self._require_image()
        height, width = framed.original_size
        points = point_grid(options.points_per_side, width, height)
        frame_points = framed.scale(points).float()
        scale = self.frame.mask_size / self.frame.image_size
        valid_h, valid_w = (max(1, round(side * scale)) for side in framed.input_size)
        device, dtype = self.model.device, self.model.dtype

        kept_logits, kept_scores, kept_points, kept_stability = [], [], [], []
        for start in range(0, len(points), options.points_per_batch):
            batch = frame_points[start : start + options.points_per_batch][None, :, None].to(device, dtype)
            labels = torch.ones(batch.shape[:-1], dtype=torch.long, device=device)
            scores, logits = self.model.predict_masks(self._image_embeddings, input_points=batch, input_labels=labels)
            scores, logits = scores[0].float(), logits[0].float()  # (P, M), (P, M, h, w)
            stability = stability_score(logits[..., :valid_h, :valid_w], 0.0, options.stability_score_offset)
            keep = (scores > options.pred_iou_thresh) & (stability >= options.stability_score_thresh)
            point_index, _ = torch.nonzero(keep, as_tuple=True)
            kept_logits.append(logits[keep].cpu())
            kept_scores.append(scores[keep].cpu())
            kept_stability.append(stability[keep].cpu())
            kept_points.append(point_index.cpu() + start)
        logits, scores = torch.cat(kept_logits), torch.cat(kept_scores)
        stability, point_index = torch.cat(kept_stability), torch.cat(kept_points)
        if len(scores) == 0:
            return []
        # Boxes of the masks as they are returned (at the image's size): low-res logits can hold specks that
        # vanish when upsampled, and would stretch a low-res box.
        boxes = torch.cat([
            masks_to_boxes(self.frame.masks_to_original(logits[i : i + BOX_CHUNK, None], framed)[:, 0])
            for i in range(0, len(logits), BOX_CHUNK)
        ])
        survivors = nms(boxes, scores, options.box_nms_thresh)[: options.max_masks]
        logits, scores, stability, point_index = (t[survivors] for t in (logits, scores, stability, point_index))

        masks = self.frame.masks_to_original(logits[:, None], framed).cpu().numpy()  # (N, 1, H, W)
        rles = [encode_rle(mask[0]) for mask in masks]
        survivor_points = points[point_index].tolist()
        if isinstance(self.model, SamCaptioner):
            captions = [texts[0] for texts in self.model.caption_masks(self._picture, masks)]
        else:
            captions = [r.caption for r in self.caption(points=survivor_points, task=task)]
        return [
            RegionCaption(caption, [rle], [float(score)],
                          {"points": [point], "point_labels": [1], "stability_score": round(float(stab), 6)}, [caption])
            for caption, rle, score, point, stab in zip(captions, rles, scores, survivor_points, stability)
        ]

    def _caption_chunk(self, framed: FramedImage, prompts: dict, task: str, multimask_output: bool) -> list[RegionCaption]:
        device, dtype = self.model.device, self.model.dtype
        output = self.model.generate(
            image_embeddings=self._image_embeddings,
            input_points=_to(prompts.get("input_points"), device, dtype),
            input_labels=_to(prompts.get("input_labels"), device),
            input_boxes=_to(prompts.get("input_boxes"), device, dtype),
            input_masks=_to(prompts.get("input_masks"), device, dtype),
            task_type_ids=self.model.task_type_ids(task, 1),
            multimask_output=multimask_output,
            chunk_size=None,
            max_new_tokens=self.max_new_tokens,
            num_beams=self.num_beams,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            **self.generate_options,
        )
        captions = [c.strip() for c in self.tokenizer.batch_decode(output.sequences[0], skip_special_tokens=True)]
        rles = self._mask_rles(output.pred_masks[0], framed)
        scores = output.iou_scores[0].float().cpu().tolist()
        return [RegionCaption(c, rles[i], scores[i], prompts["records"][i], [c]) for i, c in enumerate(captions)]

    def _mask_rles(self, low_res: torch.Tensor, framed: FramedImage) -> list[list[dict]]:
        """`(R, M, h, w)` low-res logits → R lists of M RLEs at the original size."""
        return _encode_all(self.frame.masks_to_original(low_res, framed).cpu().numpy())

    def _caption_crops(self, framed: FramedImage, prompts: dict, multimask_output: bool) -> list[RegionCaption]:
        if "input_masks" in prompts:
            raise InputError("SAM-Captioner takes box and point prompts, not mask prompts")
        device, dtype = self.model.device, self.model.dtype
        scores, low_res = self.model.predict_masks(
            self._image_embeddings,
            input_points=_to(prompts.get("input_points"), device, dtype),
            input_labels=_to(prompts.get("input_labels"), device),
            input_boxes=_to(prompts.get("input_boxes"), device, dtype),
            multimask_output=multimask_output,
        )
        full_masks = self.frame.masks_to_original(low_res[0], framed).cpu().numpy()
        candidates = self.model.caption_masks(self._picture, full_masks)
        scores = scores[0].float().cpu().tolist()
        rles = _encode_all(full_masks)
        return [
            RegionCaption(texts[int(np.argmax(scores[i]))], rles[i], scores[i], prompts["records"][i], list(texts))
            for i, texts in enumerate(candidates)
        ]

    def _prompts(self, framed, boxes, points, point_labels, masks) -> dict:
        height, width = framed.original_size
        prompts: dict = {}
        counts = {}
        records: list[dict] | None = None
        if boxes is not None:
            boxes = _as_array(boxes, "boxes", last_dim=4).reshape(-1, 4)
            for box in boxes:
                check_box(box, width, height)
            counts["boxes"] = len(boxes)
            prompts["input_boxes"] = framed.scale(torch.from_numpy(boxes))[None]
            records = [{"box": [float(v) for v in box]} for box in boxes]
        if points is not None:
            points = _as_array(points, "points", last_dim=2)
            if points.ndim == 2:
                points = points[:, None]
            if points.ndim != 3:
                raise InputError(f"points must be (R, 2) or (R, K, 2), got shape {points.shape}")
            labels = np.ones(points.shape[:2]) if point_labels is None else np.asarray(point_labels, dtype=float)
            if labels.shape != points.shape[:2]:
                raise InputError(f"point_labels must have shape {points.shape[:2]}, got {labels.shape}")
            for x, y in points.reshape(-1, 2):
                if not (0 <= x <= width and 0 <= y <= height):
                    raise InputError(f"point ({x:g}, {y:g}) lies outside the {width}x{height} image")
            counts["points"] = len(points)
            prompts["input_points"] = framed.scale(torch.from_numpy(points))[None]
            prompts["input_labels"] = torch.from_numpy(labels).long()[None]
            point_records = [
                {"points": pts.tolist(), "point_labels": lbl.astype(int).tolist()} for pts, lbl in zip(points, labels)
            ]
            records = point_records if records is None else [r | p for r, p in zip(records, point_records)]
        if masks is not None:
            masks = np.asarray(masks)
            if masks.ndim == 2:
                masks = masks[None]
            if masks.ndim != 3 or masks.shape[1:] != (height, width):
                raise InputError(f"masks must be (R, {height}, {width}) for this image, got shape {masks.shape}")
            counts["masks"] = len(masks)
            prompts["input_masks"] = self.frame.mask_prompts(masks.astype(bool), framed)[None]
            records = [{"mask": True} for _ in masks] if records is None else [r | {"mask": True} for r in records]
        if not counts:
            raise InputError("no prompt given: pass boxes, points or masks")
        if len(set(counts.values())) > 1:
            raise InputError(f"prompt kinds given together must describe the same regions, got counts {counts}")
        if next(iter(counts.values())) == 0:
            raise InputError("no prompt given: the prompt lists are empty")
        prompts["records"] = records
        return prompts


def _encode_all(masks: np.ndarray) -> list[list[dict]]:
    """`(R, M, H, W)` boolean masks → R lists of M COCO RLEs."""
    return [[encode_rle(mask) for mask in region] for region in masks]


def check_box(box: Sequence[float], width: int, height: int) -> None:
    """Reject boxes that are inverted or leave the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    text = f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g})"
    if x2 < x1 or y2 < y1:
        raise InputError(f"{text} is inverted: boxes are x1,y1,x2,y2 with x2 >= x1 and y2 >= y1")
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise InputError(f"{text} lies outside the {width}x{height} image")


def _as_array(values, name: str, last_dim: int) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name} must be numbers: {error}") from error
    if array.size and array.shape[-1] != last_dim:
        raise InputError(f"{name} must end in {last_dim} coordinates, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise InputError(f"{name} contain NaN or infinite values")
    return array


def _to(tensor: torch.Tensor | None, device, dtype=None) -> torch.Tensor | None:
    if tensor is None:
        return None
    return tensor.to(device=device, dtype=dtype) if dtype is not None else tensor.to(device)
