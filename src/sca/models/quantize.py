"""Opt-in int8 for a CPU: the linear layers of the LM and of SAM's image encoder run with int8 weights and
activations quantized on the fly (PyTorch's dynamic quantization; AVX-512 VNNI does int8 products)."""

from __future__ import annotations

import warnings

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .sca import ScaModel


def _as_linear(layer: Conv1D) -> nn.Linear:
    """GPT-2's `Conv1D` (a linear layer with its weight transposed) as an `nn.Linear`, which quantization knows."""
    linear = nn.Linear(layer.weight.shape[0], layer.weight.shape[1])
    linear.weight = nn.Parameter(layer.weight.detach().t().contiguous(), requires_grad=False)
    linear.bias = nn.Parameter(layer.bias.detach(), requires_grad=False)
    return linear


def quantize_int8(model: ScaModel) -> ScaModel:
    """Quantize, in place, the LM's and the image encoder's linear layers of a float32 CPU model (inference only)."""
    if model.device.type != "cpu" or model.dtype != torch.float32:
        raise ValueError("int8 dynamic quantization runs float32 models on a CPU")
    for parent in list(model.language_model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                setattr(parent, name, _as_linear(child))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice: the API still ships with torch
        quantize = torch.ao.quantization.quantize_dynamic
        model.language_model = quantize(model.language_model, {nn.Linear}, dtype=torch.qint8)
        model.vision_encoder = quantize(model.vision_encoder, {nn.Linear}, dtype=torch.qint8)
    return model
