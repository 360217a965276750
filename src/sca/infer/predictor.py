"""Models as region predictors: a collated batch in, each region's candidate captions and IoU scores out."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from ..data.sam_frame import FramedImage, SamFrame
from ..models import ScaModel
from ..models.sam_captioner import SamCaptioner


SPLIT_FIELD = "inference"
"""The value of every entry's `split`, as in the original files (its evaluation tooling selects on it)."""


@dataclass
class RegionPrediction:
    """candidates: one caption per text head (SCA: 1). iou_scores: SAM's score for each of its masks."""

    candidates: list[str]
    iou_scores: list[float]


class ScaPredictor:
    """SCA's `generate` over a batch from `RegionCollator`: one caption per region, SAM's 3 IoU scores."""

    needs_images = False

    def __init__(
        self,
        model: ScaModel,
        tokenizer: PreTrainedTokenizerBase,
        chunk_size: int = 32,
        max_new_tokens: int = 20,
        num_beams: int = 1,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.frame = SamFrame.from_config(model.config)
        self.chunk_size = chunk_size
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams

    def settings(self) -> dict:
        """What decides the output; a resumed run must use the same."""
        return {
            "model": type(self.model).__name__,
            "dtype": str(self.model.dtype),
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
        }

    @torch.no_grad()
    def __call__(self, batch: dict) -> list[list[RegionPrediction]]:
        """batch: `pixel_values (B, 3, S, S)`, `input_boxes (B, R, 4)`, `task_type_ids (B,)`, `region_mask (B, R)`.
        Returns, per image, one prediction per real (unpadded) region."""
        device, dtype = self.model.device, self.model.dtype
        output = self.model.generate(
            pixel_values=batch["pixel_values"].to(device, dtype),
            input_boxes=batch["input_boxes"].to(device, dtype),
            task_type_ids=batch["task_type_ids"].to(device),
            multimask_output=True,
            chunk_size=self.chunk_size,
            max_new_tokens=self.max_new_tokens,
            num_beams=self.num_beams,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        iou_scores = output.iou_scores.float().cpu().tolist()
        results = []
        for b, count in enumerate(batch["region_mask"].sum(1).tolist()):
            captions = self.tokenizer.batch_decode(output.sequences[b, :count], skip_special_tokens=True)
            results.append([RegionPrediction([c.strip()], iou_scores[b][r]) for r, c in enumerate(captions)])
        return results


class SamCaptionerPredictor:
    """SAM-Captioner over a batch: per region, one caption per SAM mask (crop of its box) and the masks' IoU."""

    needs_images = True

    def __init__(self, model: SamCaptioner):
        self.model = model
        self.frame = SamFrame.from_config(model.sam.config)

    def settings(self) -> dict:
        captioner = self.model.captioner
        return {"model": "SamCaptioner", "captioner": captioner.model.config.model_type, "prompt": captioner.prompt,
                "chain_of_thought": captioner.chain_of_thought, "dtype": str(self.model.dtype),
                "max_new_tokens": captioner.max_new_tokens, "num_beams": captioner.num_beams}

    @torch.no_grad()
    def __call__(self, batch: dict) -> list[list[RegionPrediction]]:
        embeddings = self.model.get_image_embeddings(batch["pixel_values"])
        results = []
        for b, (metadata, count) in enumerate(zip(batch["metadata"], batch["region_mask"].sum(1).tolist())):
            boxes = batch["input_boxes"][b : b + 1, :count].to(self.model.device, self.model.dtype)
            scores, low_res = self.model.predict_masks(embeddings[b : b + 1], input_boxes=boxes)
            framed = FramedImage(batch["pixel_values"][b], tuple(metadata["original_size"]), tuple(metadata["input_size"]))
            masks = self.frame.masks_to_original(low_res[0], framed).cpu().numpy()
            captions = self.model.caption_masks(metadata["image"], masks)
            scores = scores[0].float().cpu().tolist()
            results.append([RegionPrediction(c, s) for c, s in zip(captions, scores)])
        return results


class AnythingPredictor:
    """Anything mode over a dataset: per image, every mask that survives filtering, with its caption and score;
    infer.json holds one dense-captioning entry per image (scored by `sca eval` with DenseCap's mAP)."""

    needs_images = True

    def __init__(self, captioner, options):
        self.captioner, self.options = captioner, options
        self.frame = captioner.frame

    def settings(self) -> dict:
        return {"mode": "anything", **vars(self.options)}

    @torch.no_grad()
    def __call__(self, batch: dict) -> list[list[dict]]:
        results = []
        for metadata in batch["metadata"]:
            self.captioner.set_image(metadata["image"])
            regions = self.captioner.anything(self.options)
            results.append([{"box": [round(v, 2) for v in r.box], "caption": r.caption, "score": r.best_iou,
                             "mask": r.mask_rles[0]} for r in regions])
        return results

    @staticmethod
    def entries(metadata: dict, predictions: list[dict]) -> list[dict]:
        return [{
            "split": SPLIT_FIELD,
            "image_id": metadata["image_id"],
            "predictions": predictions,
            "references": [{"box": [float(v) for v in box], "captions": list(refs), "region_id": region_id}
                           for box, refs, region_id in zip(metadata["boxes"], metadata["references"], metadata["region_ids"])],
        }]
