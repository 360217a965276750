"""Per-image transforms: large-scale jitter, SAM's frame, region sampling and caption tokens."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from transformers import PreTrainedTokenizerBase

from ..masks import decode_mask
from .captions import tokenize_captions
from .records import TASK_TYPES, ImageRecord, Region
from .sam_frame import SamFrame

IMAGENET_MEAN_RGB = (124, 116, 104)  # LSJ pads with the mean colour: zero after SAM's normalisation
MIN_BOX_SIDE = 1e-5
PADDING_LABEL = -10  # SAM's label of a point that is not one (pads regions with fewer points)
BOX_NOISE = 0.1  # SAM's box prompts in training: each coordinate moved by this share of the box's side (std)
MAX_BOX_NOISE = 20.0  # ... and by at most this many pixels


@dataclass
class LargeScaleJitter:
    """Horizontal flip, random rescale by [min_scale, max_scale] of an S × S canvas, random crop or pad to S × S."""

    output_size: int
    min_scale: float = 0.1
    max_scale: float = 2.0

    def __call__(self, image: Image.Image, boxes: np.ndarray, masks: list[np.ndarray | None], rng: random.Random):
        width, height = image.size
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            boxes = boxes.copy()
            boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
            masks = [None if m is None else m[:, ::-1] for m in masks]
        scale = rng.uniform(self.min_scale, self.max_scale) * self.output_size / max(width, height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
        boxes = boxes * np.array([new_w / width, new_h / height] * 2)
        masks = [None if m is None else _resize_mask(m, new_w, new_h) for m in masks]

        left = rng.randint(0, max(0, new_w - self.output_size))
        top = rng.randint(0, max(0, new_h - self.output_size))
        canvas = Image.new("RGB", (self.output_size, self.output_size), IMAGENET_MEAN_RGB)
        canvas.paste(image.crop((left, top, left + self.output_size, top + self.output_size)), (0, 0))
        boxes = boxes - np.array([left, top, left, top])
        masks = [None if m is None else _crop_pad(m, left, top, self.output_size) for m in masks]
        return canvas, boxes, masks


class RegionTransform:
    """An `ImageRecord` → the tensors the model trains or infers on.

    In training, regions are shuffled, one of each region's captions is drawn, boxes that jitter or
    clamping made empty are dropped, and at most `num_masks_per_sample` regions are kept. In inference,
    every region is kept in dataset order with its first caption, so no region is ever dropped.

    With `with_masks`, each sample also carries segmentation targets in SAM's low-res frame
    (`mask_labels (R, m, m)`, `mask_valid (R,)`: regions without a mask are out of the mask loss) and the prompts
    of SAM's recipe: `input_points (R, K, 2)` with `input_labels (R, K)` (positives in the mask, negatives around
    it or, with probability `background_negatives`, anywhere off it; -10 padding) and `noisy_boxes (R, 4)` (see
    `_mask_targets`).
    """

    def __init__(
        self,
        frame: SamFrame,
        tokenizer: PreTrainedTokenizerBase | None,
        train: bool,
        num_masks_per_sample: int | None = 16,
        max_caption_length: int = 20,
        jitter: LargeScaleJitter | None = None,
        with_masks: bool = False,
        keep_image: bool = False,
        background_negatives: float = 0.0,
    ):
        self.frame = frame
        self.tokenizer = tokenizer
        self.train = train
        self.num_masks_per_sample = num_masks_per_sample
        self.max_caption_length = max_caption_length
        self.jitter = jitter if train else None
        self.with_masks = with_masks
        self.background_negatives = background_negatives
        self.keep_image = keep_image  # the PIL image itself, for models that crop it (SAM-Captioner)

    def __call__(self, record: ImageRecord, epoch_seed: int | None = None) -> dict | None:
        rng = random.Random(epoch_seed) if epoch_seed is not None else random.Random()
        image = record.load()
        regions = list(record.regions)
        boxes = np.array([r.box for r in regions], dtype=np.float64).reshape(-1, 4)
        masks = [None] * len(regions)
        if self.with_masks:
            masks = [None if r.mask is None else decode_mask(r.mask, image.height, image.width) for r in regions]
        if self.jitter is not None:
            image, boxes, masks = self.jitter(image, boxes, masks, rng)
        width, height = image.size
        boxes = np.clip(boxes, 0, [width, height, width, height])

        order = list(range(len(regions)))
        if self.train:
            rng.shuffle(order)
            order = [i for i in order if boxes[i, 2] - boxes[i, 0] > MIN_BOX_SIDE and boxes[i, 3] - boxes[i, 1] > MIN_BOX_SIDE]
            order = [i for i in order if regions[i].captions]
            if self.num_masks_per_sample:
                order = order[: self.num_masks_per_sample]
        if not order:
            return None

        framed = self.frame.frame(image)
        captions = [rng.choice(regions[i].captions) if self.train else _first(regions[i]) for i in order]
        sample = {
            "pixel_values": framed.pixel_values,
            "input_boxes": framed.scale(torch.from_numpy(boxes[order])),
            "task_type_id": TASK_TYPES.index(record.task_type),
            "original_size": framed.original_size,
            "input_size": framed.input_size,
            "image_id": record.image_id,
            "region_ids": [regions[i].region_id for i in order],
            "boxes": [list(map(float, regions[i].box)) for i in order],
            "references": [list(regions[i].captions) for i in order],
        }
        if self.keep_image:
            sample["image"] = image
        if self.with_masks:
            sample.update(self._mask_targets([masks[i] for i in order], boxes[order], framed, rng))
        if self.tokenizer is not None:
            sample["caption_ids"] = tokenize_captions(self.tokenizer, captions, self.max_caption_length)
        return sample


    def _mask_targets(self, masks: list[np.ndarray | None], boxes: np.ndarray, framed, rng: random.Random) -> dict:
        """Targets in SAM's low-res frame, and the prompts of SAM's training recipe: boxes with noise (a tenth of
        the box's side, at most 20 px, per coordinate), and 1 to 3 positive points in the mask with up to 2
        negative points from around it (the box grown by a third, outside the mask: where a prediction errs by
        spilling over) or, each with probability `background_negatives`, from anywhere off the mask (a user's
        click on the background or on a neighbour), padded with SAM's "no point" label -10."""
        height, width = framed.original_size
        valid = [m is not None and bool(m.any()) for m in masks]
        stacked = np.stack([m if ok else np.zeros((height, width), bool) for m, ok in zip(masks, valid)])
        points, labels = [], []
        for mask, ok, box in zip(masks, valid, boxes):
            if not ok:
                points.append([[rng.uniform(box[0], box[2]), rng.uniform(box[1], box[3])]])
                labels.append([1])
                continue
            positives = rng.choices((1, 2, 3), weights=(0.5, 0.25, 0.25))[0]
            negatives = rng.choices((0, 1, 2), weights=(0.5, 0.3, 0.2))[0]
            ys, xs = np.nonzero(mask)
            chosen = [[xs[i] + 0.5, ys[i] + 0.5] for i in (rng.randrange(len(xs)) for _ in range(positives))]
            around = np.nonzero(_around(mask, box, width, height))
            anywhere = np.nonzero(~mask) if self.background_negatives else around
            for _ in range(negatives):
                # (no draw at all when it is 0: the stream of earlier recipes stays as it was)
                ys, xs = anywhere if self.background_negatives and rng.random() < self.background_negatives else around
                if len(xs):
                    i = rng.randrange(len(xs))
                    chosen.append([xs[i] + 0.5, ys[i] + 0.5])
            points.append(chosen)
            labels.append([1] * positives + [0] * (len(chosen) - positives))
        most = max(len(p) for p in points)
        points = [p + [[0.0, 0.0]] * (most - len(p)) for p in points]
        labels = [lbl + [PADDING_LABEL] * (most - len(lbl)) for lbl in labels]
        noisy = boxes.copy()
        sides = np.repeat(np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], -1), 2, axis=0).reshape(-1, 4)
        noise = np.array([[rng.gauss(0, 1) for _ in range(4)] for _ in boxes]).reshape(-1, 4)
        noisy += np.clip(noise * BOX_NOISE * sides[:, [0, 2, 1, 3]].reshape(-1, 4), -MAX_BOX_NOISE, MAX_BOX_NOISE)
        noisy = np.clip(noisy, 0, [width, height, width, height])
        noisy[:, 2:] = np.maximum(noisy[:, 2:], noisy[:, :2] + 1)
        return {
            "mask_labels": self.frame.low_res_masks(stacked, framed),
            "mask_valid": torch.tensor(valid),
            "input_points": framed.scale(torch.tensor(points, dtype=torch.float64)),
            "input_labels": torch.tensor(labels, dtype=torch.long),
            "noisy_boxes": framed.scale(torch.from_numpy(noisy)),
        }


def _around(mask: np.ndarray, box: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixels outside the mask within its box grown by a third on each side."""
    x1, y1, x2, y2 = box
    grow_x, grow_y = (x2 - x1) / 3, (y2 - y1) / 3
    window = np.zeros_like(mask)
    window[max(0, int(y1 - grow_y)) : min(height, int(y2 + grow_y) + 1),
           max(0, int(x1 - grow_x)) : min(width, int(x2 + grow_x) + 1)] = True
    return window & ~mask


def _first(region: Region) -> str:
    return region.captions[0] if region.captions else ""


def _resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)) > 0


def _crop_pad(mask: np.ndarray, left: int, top: int, size: int) -> np.ndarray:
    out = np.zeros((size, size), dtype=bool)
    crop = mask[top : top + size, left : left + size]
    out[: crop.shape[0], : crop.shape[1]] = crop
    return out
