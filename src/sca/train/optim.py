"""Optimizer parameter groups: per-module learning rates, and no weight decay on biases and norms."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn


def param_groups(
    model: nn.Module,
    learning_rate: float,
    weight_decay: float,
    decay_names: set[str],
    custom_param_lrs: Mapping[str, float] | None = None,
) -> list[dict]:
    """Trainable parameters in groups of (learning rate, decay or not).

    `custom_param_lrs` maps module paths (e.g. `language_model`) to their own learning rate; every
    other trainable parameter uses `learning_rate`. Each parameter lands in exactly one group.
    """
    custom_param_lrs = dict(custom_param_lrs or {})
    for path in custom_param_lrs:
        try:
            model.get_submodule(path)
        except AttributeError as error:
            raise ValueError(f"custom_param_lrs names {path!r}, which is not a module of the model") from error

    def lr_of(name: str) -> float:
        matches = [path for path in custom_param_lrs if name == path or name.startswith(path + ".")]
        return custom_param_lrs[max(matches, key=len)] if matches else learning_rate

    groups: dict[tuple[float, bool], list] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            groups.setdefault((lr_of(name), name in decay_names), []).append(parameter)
    return [
        {"params": params, "lr": lr, "weight_decay": weight_decay if decay else 0.0}
        for (lr, decay), params in sorted(groups.items(), key=lambda item: (-item[0][0], not item[0][1]))
    ]
