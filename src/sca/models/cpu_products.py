"""Float32 matrix products on a CPU through oneDNN rather than MKL.

PyTorch's x86 wheels hand float32 products to MKL, and MKL runs its AVX2 kernels on AMD processors (on an AMD
EPYC, Zen 4: the same speed with `MKL_ENABLE_INSTRUCTIONS=AVX2` as without), while oneDNN, which the same wheels
carry for bf16 products, generates AVX-512 kernels for any x86 processor. There oneDNN's float32 products run
1.1-1.4× faster for the image encoder's linear layers and 1.5-2.5× for the LM's decoding steps (64 rows through
GPT-2's 768 × 50,257 head: 67 → 32 ms), and ~1.25× for the per-region products of SAM's decoder and the mixer.
bf16 products already go to oneDNN.

The op is `torch.ops.mkldnn._linear_pointwise`, the one inductor emits for frozen linear layers on a CPU: dense
tensors in and out, no layout conversion, the weight read as stored (a transposed view included). Its results
equal MKL's to float rounding; neither library's rows are bitwise independent of the batch (oneDNN's differ
from the batch at one row, MKL's up to seven).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")
"""The flags that decide which kernels a CPU runs in each precision (`lscpu`'s flags)."""


@functools.cache
def _cpu_info(field: str) -> str | None:
    """The first `field` of /proc/cpuinfo (read once a field; None where it cannot be read)."""
    info = Path("/proc/cpuinfo")
    if not info.is_file():
        return None
    return next((line.split(":", 1)[1].strip() for line in info.read_text().splitlines()
                 if line.split(":", 1)[0].strip() == field), None)


def cpu_name() -> str | None:
    """The processor's model name (`lscpu`'s), where /proc/cpuinfo gives it."""
    return _cpu_info("model name")


def cpu_features() -> tuple[str, ...]:
    """Of `CPU_FEATURES`, those this CPU has (from /proc/cpuinfo; empty where it cannot be read)."""
    flags = (_cpu_info("flags") or "").split()
    return tuple(name for name in CPU_FEATURES if name in flags)


BF16_UNITS = ("avx512_bf16", "amx_bf16")


def slow_bfloat16(dtype: torch.dtype, device: torch.device | str) -> bool:
    """Whether bfloat16 products would run without bf16 units here: a CPU whose flags are known and have neither
    AVX-512 BF16 nor AMX (measured on an AVX2-only AMD EPYC: ~0.8 GFLOP/s against ~100 in float32)."""
    features = cpu_features()
    return (dtype == torch.bfloat16 and torch.device(device).type == "cpu" and bool(features)
            and not any(unit in features for unit in BF16_UNITS))


def available() -> bool:
    """Whether this PyTorch build carries oneDNN's linear op."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def applies(*tensors: torch.Tensor) -> bool:
    """Whether products of these tensors go to oneDNN: float32 on a CPU, at inference, with rows to multiply."""
    return (not torch.is_grad_enabled() and all(t.device.type == "cpu" and t.dtype == torch.float32
                                                 and t.numel() > 0 for t in tensors))


def linear(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear`: `(..., K)` inputs, `(N, K)` weight, `(N,)` bias → `(..., N)`.

    The weight must be dense, stored as it is or transposed: oneDNN takes any other strides to a reference
    kernel ~1,000× slower (a view of one head in a fused projection's output), so such a weight is copied first.
    """
    if not (weight.is_contiguous() or weight.t().is_contiguous()):
        weight = weight.contiguous()
    if inputs.stride(-1) != 1:
        inputs = inputs.contiguous()
    return torch.ops.mkldnn._linear_pointwise(inputs, weight, bias, "none", [], "")


def region_matmul(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """`left @ right` for `(..., M, K)` and `(..., K, N)` per-region operands: one oneDNN product per matrix
    (MKL's batched product runs these thin shapes, M or N = heads × tokens, at 40-60% of its own peak)."""
    if not (available() and applies(left, right)):
        return left @ right
    batch = torch.broadcast_shapes(left.shape[:-2], right.shape[:-2])
    lefts = left.expand(*batch, *left.shape[-2:]).reshape(-1, *left.shape[-2:])
    rights = right.expand(*batch, *right.shape[-2:]).reshape(-1, *right.shape[-2:])
    products = [linear(a, b.transpose(0, 1)) for a, b in zip(lefts, rights)]
    return torch.stack(products).view(*batch, left.shape[-2], right.shape[-1])


def region_addmm(addend: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """`addend + left @ right` for `(..., M, K)` and `(..., K, N)` per-region operands and an addend broadcast to
    `(..., M, N)`: the sum made in the product's epilogue (`baddbmm`), not a second pass over the result. In bf16 the
    pass costs more than the product (a `(4096, 120) @ (120, 256)` region: 2.6 ms, adding a region's image side to
    it another 4 ms, the sum in the epilogue 0.5 ms; an Intel Xeon with AMX). oneDNN's float32 products keep the pass."""
    if available() and applies(left, right):
        return region_matmul(left, right).add_(addend)
    batch = torch.broadcast_shapes(left.shape[:-2], right.shape[:-2], addend.shape[:-2])

    def flat(operand: torch.Tensor) -> torch.Tensor:  # the batch dimensions as one (a view where they allow it)
        return operand.expand(*batch, *operand.shape[-2:]).reshape(-1, *operand.shape[-2:])

    return torch.baddbmm(flat(addend), flat(left), flat(right)).view(*batch, left.shape[-2], right.shape[-1])


class OneDnnLinearLayers(TorchFunctionMode):
    """Within it, float32 linear layers on a CPU run through oneDNN: `F.linear` (`nn.Linear`) and
    `torch.addmm` with a vector bias (transformers' `Conv1D`, GPT-2's layers); everything else as usual."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and not kwargs:
            inputs, weight, bias = (*args, None)[:3]
            if inputs.dim() >= 2 and weight.dim() == 2 and applies(inputs, weight):
                return linear(inputs, weight, bias)
        elif func is torch.addmm and not kwargs and len(args) == 3:
            bias, inputs, weight = args
            if bias.dim() == 1 and applies(bias, inputs, weight):
                return linear(inputs, weight.transpose(0, 1), bias)
        return func(*args, **kwargs)


def onednn_linear_layers(device: torch.device) -> contextlib.AbstractContextManager:
    """`OneDnnLinearLayers` at inference on a CPU whose PyTorch carries oneDNN; elsewhere, and in training,
    nothing changes."""
    if device.type != "cpu" or torch.is_grad_enabled() or not available():
        return contextlib.nullcontext()
    return OneDnnLinearLayers()


def with_onednn_linear_layers(method):
    """A region model's method run within `onednn_linear_layers(self.device)` (put it inside `torch.no_grad()`)."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with onednn_linear_layers(self.device):
            return method(self, *args, **kwargs)

    return run
