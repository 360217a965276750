"""`Prompts`: the points, labels, boxes and masks of R regions of B images, in SAM's input frame."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from ..data.sam_frame import FramedImage, SamFrame
from ..errors import InputError


@dataclass(frozen=True)
class Prompts:
    """Prompts for R regions of each of B images. The kinds given together describe the same regions (a box
    and points refine one region), as in SAM.

    points: `(B, R, K, 2)` xy in the model's input frame (the resized, padded `S × S` image).
    labels: `(B, R, K)` 1 foreground, 0 background, -10 padding (all 1 when points come without labels).
    boxes: `(B, R, 4)` xyxy in the input frame.
    masks: `(B, R, 4h, 4w)` mask logits in the low-resolution frame (`SamFrame.mask_prompts`).
    valid: `(B, R)` bool, False for regions that only pad a batch (they cost a family no work where it can
        skip them); None: all are real.
    """

    points: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    valid: torch.Tensor | None = None

    def __post_init__(self):
        if self.points is not None and self.labels is None:
            object.__setattr__(self, "labels", torch.ones(self.points.shape[:-1], dtype=torch.long,
                                                          device=self.points.device))
        shapes = {name: tuple(value.shape[:2]) for name, value in self.tensors().items()}
        given = {name: shape for name, shape in shapes.items() if name != "valid"}
        if not given:
            raise InputError("no prompt given: pass points, boxes or masks")
        if len(set(shapes.values())) > 1:
            raise InputError(f"prompts disagree on (images, regions): {shapes}")

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @property
    def batch_size(self) -> int:
        return next(iter(self.tensors().values())).shape[0]

    @property
    def num_regions(self) -> int:
        return next(iter(self.tensors().values())).shape[1]

    def take(self, regions: slice) -> Prompts:
        """The prompts of some regions (all images)."""
        return replace(self, **{name: value[:, regions] for name, value in self.tensors().items()})

    def image(self, index: int) -> Prompts:
        """The prompts of one image, as a batch of one."""
        return replace(self, **{name: value[index : index + 1] for name, value in self.tensors().items()})

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Prompts:
        """Moved to a device; coordinates and mask logits in `dtype` (labels stay integers, `valid` bool)."""
        moved = {}
        for name, value in self.tensors().items():
            floating = name in ("points", "boxes", "masks") and dtype is not None
            moved[name] = value.to(device=device, dtype=dtype) if floating else value.to(device)
        return replace(self, **moved)

    def as_sam_inputs(self) -> dict[str, torch.Tensor | None]:
        """transformers' SAM keyword arguments (`input_points`, `input_labels`, `input_boxes`, `input_masks`)."""
        return {"input_points": self.points, "input_labels": self.labels, "input_boxes": self.boxes,
                "input_masks": self.masks}

    @classmethod
    def from_pixels(
        cls,
        framed: FramedImage,
        frame: SamFrame,
        boxes: Sequence | np.ndarray | None = None,
        points: Sequence | np.ndarray | None = None,
        point_labels: Sequence | np.ndarray | None = None,
        masks: np.ndarray | None = None,
    ) -> tuple[Prompts, list[dict]]:
        """Prompts of one image given in its original pixels, checked, mapped into the model's frame.

        boxes: `(R, 4)` xyxy. points: `(R, 2)` one foreground point per region, or `(R, K, 2)` with point_labels
        `(R, K)` (1 foreground, 0 background). masks: `(R, H, W)` binary.
        Returns the prompts (a batch of one image) and each region's prompt as given (for its result).
        """
        height, width = framed.original_size
        tensors: dict[str, torch.Tensor] = {}
        records: list[dict] | None = None
        counts = {}
        if boxes is not None:
            boxes = _as_array(boxes, "boxes", last_dim=4).reshape(-1, 4)
            for box in boxes:
                check_box(box, width, height)
            counts["boxes"] = len(boxes)
            tensors["boxes"] = framed.scale(torch.from_numpy(boxes))[None]
            records = [{"box": [float(v) for v in box]} for box in boxes]
        if points is not None:
            points = _as_array(points, "points", last_dim=2)
            if points.ndim == 2:
                points = points[:, None]
            if points.ndim != 3:
                raise InputError(f"points must be (R, 2) or (R, K, 2), got shape {points.shape}")
            labels = np.ones(points.shape[:2]) if point_labels is None else _as_array(point_labels, "point_labels")
            if labels.shape != points.shape[:2]:
                raise InputError(f"point_labels must have shape {points.shape[:2]}, got {labels.shape}")
            if not np.isin(labels, (0, 1)).all():
                raise InputError("point_labels must be 1 (foreground) or 0 (background)")
            for x, y in points.reshape(-1, 2):
                if not (0 <= x <= width and 0 <= y <= height):
                    raise InputError(f"point ({x:g}, {y:g}) lies outside the {width}x{height} image")
            counts["points"] = len(points)
            tensors["points"] = framed.scale(torch.from_numpy(points))[None]
            tensors["labels"] = torch.from_numpy(labels).long()[None]
            given = [{"points": p.tolist(), "point_labels": lbl.astype(int).tolist()} for p, lbl in zip(points, labels)]
            records = given if records is None else [r | p for r, p in zip(records, given)]
        if masks is not None:
            masks = np.asarray(masks)
            if masks.ndim == 2:
                masks = masks[None]
            if masks.ndim != 3 or masks.shape[1:] != (height, width):
                raise InputError(f"masks must be (R, {height}, {width}) for this image, got shape {masks.shape}")
            counts["masks"] = len(masks)
            tensors["masks"] = frame.mask_prompts(masks.astype(bool), framed)[None]
            records = [{"mask": True} for _ in masks] if records is None else [r | {"mask": True} for r in records]
        if not counts:
            raise InputError("no prompt given: pass boxes, points or masks")
        if len(set(counts.values())) > 1:
            raise InputError(f"prompt kinds given together must describe the same regions, got counts {counts}")
        if next(iter(counts.values())) == 0:
            raise InputError("no prompt given: the prompt lists are empty")
        return cls(**tensors), records


def check_box(box: Sequence[float], width: int, height: int) -> None:
    """Refuse a box that is inverted or leaves the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    text = f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g})"
    if x2 < x1 or y2 < y1:
        raise InputError(f"{text} is inverted: boxes are x1,y1,x2,y2 with x2 >= x1 and y2 >= y1")
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise InputError(f"{text} lies outside the {width}x{height} image")


def _as_array(values, name: str, last_dim: int | None = None) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name} must be numbers: {error}") from error
    if last_dim is not None and array.size and (array.ndim == 0 or array.shape[-1] != last_dim):
        raise InputError(f"{name} must end in {last_dim} coordinates, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise InputError(f"{name} contain NaN or infinite values")
    return array
