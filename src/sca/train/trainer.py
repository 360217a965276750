"""`ScaTrainer`: Hugging Face's Trainer with SCA's loss and optimizer groups, through public hooks only."""

from __future__ import annotations

from collections.abc import Mapping

from transformers import Trainer

from .optim import param_groups


class ScaTrainer(Trainer):
    def __init__(self, *args, custom_param_lrs: Mapping[str, float] | None = None, **kwargs):
        self.custom_param_lrs = dict(custom_param_lrs or {})
        super().__init__(*args, **kwargs)

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
