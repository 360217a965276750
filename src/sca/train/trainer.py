"""`ScaTrainer`: Hugging Face's Trainer with SCA's loss and optimizer groups, through public hooks only."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from transformers import Trainer

from ..data.records import TASK_TYPES
from ..data.sam_frame import FramedImage
from ..engine import RegionEngine
from ..eval.captions import meteor
from ..models.prompts import Prompts
from ..models.sca_region import ScaRegionModel
from ..options import GenerationOptions
from .error_points import error_points
from .losses import segmentation_loss
from .optim import param_groups


class ScaTrainer(Trainer):
    """`loss_weights`: `{"caption": 1.0, "mask": 0.0}`. The caption loss is SCA's; the mask loss is SAM's
    (focal + dice + IoU MSE, `losses.py`) on batches that carry `mask_labels`. Caption weight 0 trains
    segmentation alone (the LM is not run).

    `correction_rounds`: SAM's interactive recipe (`error_points.py`): after the first prediction, each round adds
    a point from the error of the last prediction to the prompts and trains the masks predicted again (the
    round's mask loss is averaged over rounds and weighted as the first's). Needs a mask loss.

    `caption_eval`: optional `{"dataset", "max_images", "max_new_tokens", "num_beams"}`; when given, every
    evaluation also generates captions for that many images (inference transform: every region, first
    reference kept) and logs `eval_meteor` next to `eval_loss`.
    """

    def __init__(
        self,
        *args,
        custom_param_lrs: Mapping[str, float] | None = None,
        caption_eval: Mapping | None = None,
        loss_weights: Mapping[str, float] | None = None,
        correction_rounds: int = 0,
        **kwargs,
    ):
        self.custom_param_lrs = dict(custom_param_lrs or {})
        self.caption_eval = dict(caption_eval) if caption_eval else None
        self.loss_weights = {"caption": 1.0, "mask": 0.0, **(loss_weights or {})}
        self.correction_rounds = correction_rounds
        self._loss_parts: dict[str, list[float]] = {}
        super().__init__(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        metrics = super().evaluate(*args, **kwargs)
        if self.caption_eval and self.is_world_process_zero():
            metrics["eval_meteor"] = self._caption_meteor()
            self.log({"eval_meteor": metrics["eval_meteor"]})
        return metrics

    @torch.no_grad()
    def _caption_meteor(self) -> float:
        model, spec = self.model, self.caption_eval
        was_training = model.training
        defaults = GenerationOptions()
        generation = GenerationOptions(max_new_tokens=spec.get("max_new_tokens", defaults.max_new_tokens),
                                       num_beams=spec.get("num_beams", defaults.num_beams))
        region_model = ScaRegionModel(model, self.processing_class, generation)
        references, candidates = {}, {}
        dataset = spec["dataset"]
        for index in range(min(spec.get("max_images", 50), len(dataset))):
            sample = dataset[index]
            framed = FramedImage(sample["pixel_values"], sample["original_size"], sample["input_size"])
            (predictions,) = RegionEngine(region_model).predict(
                region_model.encode_framed([framed]), Prompts(boxes=sample["input_boxes"][None]),
                [TASK_TYPES[sample["task_type_id"]]])
            for region, (prediction, refs) in enumerate(zip(predictions, sample["references"])):
                references[f"{index}-{region}"] = refs
                candidates[f"{index}-{region}"] = prediction.candidates[0]
        model.train(was_training)
        return meteor(references, candidates)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = {k: v for k, v in inputs.items() if k != "metadata"}
        mask_labels, mask_valid = inputs.pop("mask_labels", None), inputs.pop("mask_valid", None)
        caption_weight, mask_weight = self.loss_weights["caption"], self.loss_weights["mask"]
        if not caption_weight:
            for key in ("input_ids", "attention_mask", "labels"):
                inputs.pop(key, None)
        outputs = model(**inputs)
        loss = outputs.pred_masks.new_zeros(())
        if caption_weight and outputs.loss is not None:
            loss = loss + caption_weight * outputs.loss
            self._record("caption_loss", outputs.loss)
        if mask_weight and mask_labels is not None:
            segmentation = segmentation_loss(outputs.pred_masks, outputs.iou_scores, mask_labels, mask_valid)
            loss = loss + mask_weight * segmentation.total
            self._record("mask_loss", segmentation.mask)
            self._record("iou_loss", segmentation.iou)
            if self.correction_rounds:
                corrected = self._corrected_mask_loss(model, inputs, outputs, mask_labels, mask_valid)
                loss = loss + mask_weight * corrected
                self._record("correction_mask_loss", corrected)
        outputs.loss = loss
        return (loss, outputs) if return_outputs else loss

    def _corrected_mask_loss(self, model, inputs: dict, outputs, mask_labels: torch.Tensor, mask_valid: torch.Tensor
                             ) -> torch.Tensor:
        """The mean segmentation loss of `correction_rounds` rounds, each prompted by the batch's prompts and one
        more error point per round (the image embeddings of the first prediction are reused)."""
        sca = self.accelerator.unwrap_model(model)
        points, labels, boxes = inputs.get("input_points"), inputs.get("input_labels"), inputs.get("input_boxes")
        masks, scores = outputs.pred_masks, outputs.iou_scores
        total = masks.new_zeros((), dtype=torch.float32)
        for _ in range(self.correction_rounds):
            new_points, new_labels = error_points(masks.detach(), scores.detach(), mask_labels, mask_valid,
                                                  sca.config.prompt_encoder_config.image_size)
            points = new_points if points is None else torch.cat([points, new_points.to(points.dtype)], dim=2)
            labels = new_labels if labels is None else torch.cat([labels, new_labels], dim=2)
            segmentation = sca.segment(outputs.image_embeddings, Prompts(points=points, labels=labels, boxes=boxes))
            masks, scores = segmentation.pred_masks, segmentation.iou_scores
            total = total + segmentation_loss(masks, scores, mask_labels, mask_valid).total
        return total / self.correction_rounds

    def _record(self, name: str, value: torch.Tensor) -> None:
        if self.model.training:
            self._loss_parts.setdefault(name, []).append(float(value.detach()))

    def log(self, logs: dict, *args, **kwargs) -> None:
        """Adds the mean of each loss part since the last log (this process's batches) to training logs."""
        if "loss" in logs:
            logs.update({name: sum(v) / len(v) for name, v in self._loss_parts.items() if v})
            self._loss_parts.clear()
        super().log(logs, *args, **kwargs)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            model = self.model if model is None else model
            groups = param_groups(
                model,
                self.args.learning_rate,
                self.args.weight_decay,
                set(self.get_decay_parameter_names(model)),
                self.custom_param_lrs,
            )
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            optimizer_kwargs.pop("lr", None)
            self.optimizer = optimizer_cls(groups, lr=self.args.learning_rate, **optimizer_kwargs)
        return self.optimizer
