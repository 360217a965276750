"""`ScaTrainer`: Hugging Face's Trainer with SCA's loss and optimizer groups, through public hooks only."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from transformers import Trainer

from ..eval.captions import meteor
from .optim import param_groups


class ScaTrainer(Trainer):
    """`caption_eval`: optional `{"dataset", "max_images", "max_new_tokens", "num_beams"}`; when given, every
    evaluation also generates captions for that many images (inference transform: every region, first
    reference kept) and logs `eval_meteor` next to `eval_loss`.
    """

    def __init__(
        self,
        *args,
        custom_param_lrs: Mapping[str, float] | None = None,
        caption_eval: Mapping | None = None,
        **kwargs,
    ):
        self.custom_param_lrs = dict(custom_param_lrs or {})
        self.caption_eval = dict(caption_eval) if caption_eval else None
        super().__init__(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        metrics = super().evaluate(*args, **kwargs)
        if self.caption_eval and self.is_world_process_zero():
            metrics["eval_meteor"] = self._caption_meteor()
            self.log({"eval_meteor": metrics["eval_meteor"]})
        return metrics

    @torch.no_grad()
    def _caption_meteor(self) -> float:
        model, tokenizer, spec = self.model, self.processing_class, self.caption_eval
        was_training = model.training
        model.eval()
        references, candidates = {}, {}
        dataset = spec["dataset"]
        for index in range(min(spec.get("max_images", 50), len(dataset))):
            sample = dataset[index]
            output = model.generate(
                pixel_values=sample["pixel_values"][None].to(model.device, model.dtype),
                input_boxes=sample["input_boxes"][None].to(model.device, model.dtype),
                task_type_ids=torch.tensor([sample["task_type_id"]], device=model.device),
                max_new_tokens=spec.get("max_new_tokens", 20),
                num_beams=spec.get("num_beams", 1),
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            captions = tokenizer.batch_decode(output.sequences[0], skip_special_tokens=True)
            for region, (caption, refs) in enumerate(zip(captions, sample["references"])):
                references[f"{index}-{region}"] = refs
                candidates[f"{index}-{region}"] = caption
        model.train(was_training)
        return meteor(references, candidates)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = {k: v for k, v in inputs.items() if k != "metadata"}
        outputs = model(**inputs)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

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
