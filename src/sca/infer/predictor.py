"""Region models as dataset predictors: a collated batch in, each image's infer.json entries out."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data.records import TASK_TYPES
from ..data.sam_frame import FramedImage
from ..engine import RegionEngine, RegionPrediction
from ..models.region_model import EncodedImages, RegionModel
from ..options import AnythingOptions, GenerationOptions

SPLIT_FIELD = "inference"
"""The value of every entry's `split`, as in the original files (its evaluation tooling selects on it)."""


class Predictor:
    """What the inference runner needs of a predictor: the model (its frame, whether it reads the original
    pixels, its settings), a batch → one prediction per image, and how a prediction becomes entries."""

    def __init__(self, model: RegionModel, chunk_size: int = GenerationOptions.chunk_size):
        self.model = model
        self.engine = RegionEngine(model, chunk_size)
        self.frame = model.frame
        self.needs_pictures = model.needs_pictures

    def settings(self) -> dict:
        """What decides the output; a resumed run must use the same."""
        return self.model.settings()

    def encode(self, batch: dict) -> EncodedImages:
        framed = [FramedImage(pixels, tuple(meta["original_size"]), tuple(meta["input_size"]))
                  for pixels, meta in zip(batch["pixel_values"], batch["metadata"])]
        pictures = [meta["image"] for meta in batch["metadata"]] if self.needs_pictures else None
        return self.model.encode_framed(framed, pictures)

    def __call__(self, batch: dict) -> list:
        raise NotImplementedError

    def entries(self, metadata: dict, prediction) -> list[dict]:
        """One image's infer.json entries (without `_id`, which is given at the merge)."""
        return [
            {
                "split": SPLIT_FIELD,
                "references": list(references),
                "candidates": list(region.candidates),
                "metadata": {
                    "metadata_input_boxes": [float(v) for v in box],
                    "metadata_image_id": metadata["image_id"],
                    "metadata_region_id": region_id,
                },
                "logits": {"iou_scores": [float(s) for s in region.iou_scores]},
            }
            for box, region_id, references, region in zip(
                metadata["boxes"], metadata["region_ids"], metadata["references"], prediction, strict=True
            )
        ]


class RegionPredictor(Predictor):
    """Every region of each image, prompted by its ground-truth box: its candidates and the masks' IoU."""

    @torch.no_grad()
    def __call__(self, batch: dict) -> list[list[RegionPrediction]]:
        """batch: `pixel_values (B, 3, S, S)`, `input_boxes (B, R, 4)`, `task_type_ids (B,)`, `region_mask (B, R)`.
        Returns, per image, one prediction per real (unpadded) region."""
        return self.engine.predict_batch(self.encode(batch), batch)


class AnythingPredictor(Predictor):
    """Anything mode over a dataset: per image, every mask that survives filtering, with its caption and score;
    infer.json holds one dense-captioning entry per image (scored by `sca eval` with DenseCap's mAP)."""

    def __init__(self, model: RegionModel, options: AnythingOptions, chunk_size: int = GenerationOptions.chunk_size):
        super().__init__(model, chunk_size)
        self.options = options.for_model(model.anything_filters).check()  # the settings name the filters used

    def settings(self) -> dict:
        return {**self.model.settings(), "mode": "anything", **vars(self.options)}

    @torch.no_grad()
    def __call__(self, batch: dict) -> list[list[dict]]:
        encoded = self.encode(batch)
        return [[{"box": [round(v, 2) for v in region.box], "caption": region.caption,
                  "score": region.best_iou, "mask": region.mask_rles[0]}
                 for region in self.engine.anything(encoded.image(b), self.options,
                                                    TASK_TYPES[int(batch["task_type_ids"][b])])]
                for b in range(len(encoded.framed))]

    def entries(self, metadata: dict, prediction: Sequence[dict]) -> list[dict]:
        return [{
            "split": SPLIT_FIELD,
            "image_id": metadata["image_id"],
            "predictions": list(prediction),
            "references": [{"box": [float(v) for v in box], "captions": list(refs), "region_id": region_id}
                           for box, refs, region_id in zip(metadata["boxes"], metadata["references"], metadata["region_ids"])],
        }]
