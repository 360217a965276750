"""SAM's mask upscaling and hypernetwork product, one region at a time, as matrix products on a CPU.

SAM's decoder turns each region's updated image side into masks with two stride-2, 2×2 transposed
convolutions (LayerNorm and GELU between and after) and a product with the hypernetwork's mask weights.
A stride-2, 2×2 transposed convolution maps each input position to its own 2×2 block of outputs: it is one
matrix product per position, `(C_in) → (2, 2, C_out)`, and the second one maps each of those outputs to its
own 2×2 block again. So a region's masks are, position by position, products, a LayerNorm over channels and
two GELUs, all on contiguous channels-last rows, with the 4×4 blocks put in place once, on the M mask
channels at the end. On a CPU that runs ~1.6× faster than the convolutions on the batch (whose 32-channel,
256² intermediate does not stay in cache); it matters most in anything mode, where 1,024 grid points each
upscale their own image side. Elsewhere, and in training (autograd through the per-region loop costs more than
it saves), the decoder's own modules run.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from transformers.models.sam.modeling_sam import SamMaskDecoder


def upscaled_masks(decoder: SamMaskDecoder, image: torch.Tensor, hyper_in: torch.Tensor) -> torch.Tensor:
    """Mask logits from each region's image side.

    Args:
        image: `(N, H, W, C)` each region's image side after SAM's two-way transformer.
        hyper_in: `(N, M, C_up)` the hypernetwork's weights per region and mask token.
    Returns:
        `(N, M, 4H, 4W)`, what `decoder`'s upscaling convolutions and product compute.
    """
    if image.device.type != "cpu" or torch.is_grad_enabled():  # training: autograd through a loop costs more
        upscaled = decoder.upscale_conv1(image.permute(0, 3, 1, 2))
        upscaled = decoder.activation(decoder.upscale_layer_norm(upscaled))
        upscaled = decoder.activation(decoder.upscale_conv2(upscaled))
        count, channels, height, width = upscaled.shape
        return (hyper_in @ upscaled.reshape(count, channels, height * width)).reshape(count, -1, height, width)

    count, height, width, channels = image.shape
    first, second, norm = decoder.upscale_conv1, decoder.upscale_conv2, decoder.upscale_layer_norm
    # (C_in, C_out, 2, 2) → (C_in, 2·2·C_out): each position's outputs ordered (dy, dx, channel)
    first_weight, first_bias = first.weight.permute(0, 2, 3, 1).flatten(1), first.bias.repeat(4)
    second_weight, second_bias = second.weight.permute(0, 2, 3, 1).flatten(1), second.bias.repeat(4)
    rows = image.reshape(count, height * width, channels)
    masks = []
    for region in range(count):
        hidden = torch.addmm(first_bias, rows[region], first_weight).view(-1, first.out_channels)
        hidden = decoder.activation(F.layer_norm(hidden, norm.normalized_shape, norm.weight, norm.bias, norm.eps))
        hidden = decoder.activation(torch.addmm(second_bias, hidden, second_weight)).view(-1, second.out_channels)
        masks.append(F.linear(hidden, hyper_in[region]))  # a linear layer: oneDNN's where that is faster
    # rows ordered (y, x, dy, dx, ey, ex): output row 4y + 2dy + ey, column 4x + 2dx + ex
    masks = torch.stack(masks).view(count, height, width, 2, 2, 2, 2, -1).permute(0, 7, 1, 3, 5, 2, 4, 6)
    return masks.reshape(count, -1, 4 * height, 4 * width)
