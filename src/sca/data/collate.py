"""Batching images with different numbers of regions, without dropping any."""

from __future__ import annotations

import torch

from .captions import IGNORE_INDEX, pad_captions

PADDING_BOX = (0.0, 0.0, 1.0, 1.0)


class RegionCollator:
    """Stack images; pad every image's regions to the batch's largest count.

    Padded regions get a dummy box, ignored labels (-100) and `region_mask` 0, so the loss never sees
    them and results are never read from them. (The original cut every image to the smallest count.)

    With segmentation targets in the samples, a batch is prompted by points instead of boxes with
    probability `point_prompt_probability` (SAM's recipe mixes both; one kind per batch, as the model
    takes one set of prompts for all regions).
    """

    def __init__(self, pad_token_id: int | None = None, with_metadata: bool = False,
                 point_prompt_probability: float = 0.0):
        self.pad_token_id = pad_token_id
        self.with_metadata = with_metadata
        self.point_prompt_probability = point_prompt_probability

    def __call__(self, samples: list[dict | None]) -> dict | None:
        samples = [s for s in samples if s is not None]
        if not samples:
            return None
        counts = [len(s["input_boxes"]) for s in samples]
        batch, regions = len(samples), max(counts)
        boxes = torch.tensor(PADDING_BOX).repeat(batch, regions, 1)
        region_mask = torch.zeros(batch, regions, dtype=torch.long)
        for b, sample in enumerate(samples):
            boxes[b, : counts[b]] = sample["input_boxes"]
            region_mask[b, : counts[b]] = 1
        out = {
            "pixel_values": torch.stack([s["pixel_values"] for s in samples]),
            "input_boxes": boxes,
            "task_type_ids": torch.tensor([s["task_type_id"] for s in samples]),
            "region_mask": region_mask,
        }
        if "caption_ids" in samples[0] and self.pad_token_id is not None:
            flat = [ids for s in samples for ids in s["caption_ids"]]
            padded = pad_captions(flat, self.pad_token_id)
            length = padded["input_ids"].shape[1]
            input_ids = torch.full((batch, regions, length), self.pad_token_id, dtype=torch.long)
            attention_mask = torch.zeros((batch, regions, length), dtype=torch.long)
            labels = torch.full((batch, regions, length), IGNORE_INDEX, dtype=torch.long)
            start = 0
            for b, count in enumerate(counts):
                input_ids[b, :count] = padded["input_ids"][start : start + count]
                attention_mask[b, :count] = padded["attention_mask"][start : start + count]
                labels[b, :count] = padded["labels"][start : start + count]
                start += count
            out.update(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        if "mask_labels" in samples[0]:
            targets = self._segmentation_targets(samples, counts, regions)
            points, labels, noisy = targets.pop("input_points"), targets.pop("input_labels"), targets.pop("noisy_boxes")
            out.update(targets)
            if self.point_prompt_probability and torch.rand(()) < self.point_prompt_probability:
                del out["input_boxes"]
                out.update(input_points=points, input_labels=labels)
            else:
                out["input_boxes"] = noisy
        if self.with_metadata:
            keys = ("image_id", "region_ids", "boxes", "references", "original_size", "input_size", "image")
            out["metadata"] = [{k: s[k] for k in keys if k in s} for s in samples]
        return out

    def _segmentation_targets(self, samples: list[dict], counts: list[int], regions: int) -> dict:
        """Targets and SAM-recipe prompts (`RegionTransform._mask_targets`) padded to the batch: padding regions get
        dummy prompts, points beyond a region's own get SAM's "no point" label -10."""
        size = samples[0]["mask_labels"].shape[-1]
        most = max(s["input_points"].shape[1] for s in samples)
        mask_labels = torch.zeros(len(samples), regions, size, size)
        mask_valid = torch.zeros(len(samples), regions, dtype=torch.bool)
        points = torch.zeros(len(samples), regions, most, 2)
        labels = torch.full((len(samples), regions, most), -10, dtype=torch.long)
        labels[:, :, 0] = 1  # a padding region still needs one point for the prompt encoder
        noisy = torch.tensor(PADDING_BOX).repeat(len(samples), regions, 1)
        for b, sample in enumerate(samples):
            k = sample["input_points"].shape[1]
            mask_labels[b, : counts[b]] = sample["mask_labels"]
            mask_valid[b, : counts[b]] = sample["mask_valid"]
            points[b, : counts[b], :k] = sample["input_points"]
            labels[b, : counts[b], :k] = sample["input_labels"]
            noisy[b, : counts[b]] = sample["noisy_boxes"]
        return {"mask_labels": mask_labels, "mask_valid": mask_valid, "input_points": points, "input_labels": labels,
                "noisy_boxes": noisy}
