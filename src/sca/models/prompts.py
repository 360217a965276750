"""`Prompts`: the points, labels, boxes and masks of R regions of B images, in SAM's input frame."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch

from ..data.sam_frame import FramedImage, SamFrame
from ..errors import InputError
from ..masks import decode_rle


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
            low_res = [frame.mask_prompts(mask[None], framed)[0] for mask in _masks(masks, height, width)]
            if low_res:
                counts["masks"] = len(low_res)
                tensors["masks"] = torch.stack(low_res)[None]
                records = ([{"mask": True} for _ in low_res] if records is None
                           else [r | {"mask": True} for r in records])
            else:
                counts["masks"] = 0
        if not counts:
            raise InputError("no prompt given: pass boxes, points or masks")
        if len(set(counts.values())) > 1:
            raise InputError(f"prompt kinds given together must describe the same regions, got counts {counts}")
        if next(iter(counts.values())) == 0:
            raise InputError("no prompt given: the prompt lists are empty")
        return cls(**tensors), records


@dataclass(frozen=True)
class RegionPrompt:
    """One region's prompt in original image pixels, as a client gives it: a box, points (labels: 1 foreground,
    0 background; all 1 when omitted), a mask (`(H, W)` bool array, or COCO RLE), or several of them together
    (they then describe the same region, as in SAM). Regions of one request may differ in kinds."""

    box: Sequence[float] | None = None
    points: Sequence[Sequence[float]] | None = None
    point_labels: Sequence[int] | None = None
    mask: np.ndarray | dict | None = field(default=None, repr=False)

    @property
    def kinds(self) -> tuple[bool, int, bool]:
        """What regions must share to go through a model in one batch: a box or not, the number of points, a mask
        or not."""
        return (self.box is not None, 0 if self.points is None else len(self.points), self.mask is not None)


@dataclass
class PromptGroup:
    """Regions of one image that share their prompt kinds: their places in the request, their prompts in the
    model's frame (a batch of one image) and each region's prompt as given (for its result)."""

    indices: list[int]
    prompts: Prompts
    records: list[dict]


def group_prompts(framed: FramedImage, frame: SamFrame, regions: Sequence[RegionPrompt]) -> list[PromptGroup]:
    """Regions of any mix of prompt kinds → groups of the same kinds, each checked and mapped into the model's
    frame by `Prompts.from_pixels` (the one validation of prompts)."""
    if not regions:
        raise InputError("no prompt given: the region list is empty")
    by_kinds: dict[tuple, list[int]] = {}
    for index, region in enumerate(regions):
        if region.box is None and region.points is None and region.mask is None:
            raise InputError(f"region {index} has no prompt: give a box, points or a mask")
        by_kinds.setdefault(region.kinds, []).append(index)
    groups = []
    for (has_box, point_count, has_mask), indices in by_kinds.items():
        chosen = [regions[i] for i in indices]
        labels = [r.point_labels if r.point_labels is not None else [1] * point_count for r in chosen]
        prompts, records = Prompts.from_pixels(
            framed, frame, boxes=[r.box for r in chosen] if has_box else None,
            points=[r.points for r in chosen] if point_count else None, point_labels=labels if point_count else None,
            masks=[r.mask for r in chosen] if has_mask else None)
        groups.append(PromptGroup(indices, prompts, records))
    return groups


def check_regions(size: tuple[int, int], regions: Sequence[RegionPrompt]) -> None:
    """The checks `group_prompts` makes, for an image of `(H, W)`, before any model is loaded or image encoded:
    every region has a prompt, boxes and points lie in the image, labels are 0 or 1; of a mask, only its size
    (masks are decoded where the work is done)."""
    height, width = size
    for index, region in enumerate(regions):
        if region.box is None and region.points is None and region.mask is None:
            raise InputError(f"region {index} has no prompt: give a box, points or a mask")
        if region.mask is not None:
            given = (list(region.mask.get("size", ())) if isinstance(region.mask, dict)
                     else list(np.shape(region.mask)))
            if given != [height, width]:
                raise InputError(f"region {index}'s mask is of size {given}; masks must be of the image's size, "
                                 f"[{height}, {width}]")
    placed = [replace(region, mask=None) for region in regions if region.box is not None or region.points is not None]
    if placed:
        group_prompts(FramedImage(torch.empty(0), (height, width), (height, width)), None, placed)


def check_box(box: Sequence[float], width: int, height: int) -> None:
    """Refuse a box that is inverted or leaves the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    text = f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g})"
    if x2 < x1 or y2 < y1:
        raise InputError(f"{text} is inverted: boxes are x1,y1,x2,y2 with x2 >= x1 and y2 >= y1")
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise InputError(f"{text} lies outside the {width}x{height} image")


def _masks(masks, height: int, width: int) -> Iterator[np.ndarray]:
    """Each mask of `(R, H, W)` (an array, or a sequence of `(H, W)` arrays or COCO RLEs) as an `(H, W)` bool array,
    one at a time: a large image never holds a full-size float copy per region."""
    if isinstance(masks, (np.ndarray, torch.Tensor)):
        masks = np.asarray(masks)
        if masks.ndim == 2:
            masks = masks[None]
        if masks.ndim != 3:
            raise InputError(f"masks must be (R, {height}, {width}) for this image, got shape {masks.shape}")
    for mask in masks:
        if isinstance(mask, dict):
            try:
                mask = decode_rle(mask)
            except Exception as error:  # pycocotools' errors name no type of their own
                raise InputError(f"a mask is not valid COCO RLE ({type(error).__name__}: {error})") from None
        mask = np.asarray(mask)
        if mask.shape != (height, width):
            raise InputError(f"masks must be of the image's size, ({height}, {width}), got {mask.shape}")
        yield mask.astype(bool, copy=False)


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
