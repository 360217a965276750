"""SAM's two-way transformer run for many regions of one image, with its attention reassociated.

transformers' `SamTwoWayTransformer` computes each cross-attention as the module reads: project the 4,096
image positions of every region into queries, keys and values, split heads, attend, merge, project out. A
region has only T tokens (T = 7 for SAM with a box, 15 in SCA's mixer), so the same sums can be grouped
around the tokens instead (h a head, t a token, i an image position, x_i = image_i + pe_i, scale folded in):

    token → image:  logit[h,t,i] = (q_ht W_k,h) · x_i + q_ht · b_k,h
                    out[h,t]     = (Σ_i a[h,t,i] image_i) W_v,hᵀ + b_v,h    softmax rows sum to 1
    image → token:  logit[i,h,t] = x_i · (W_q,hᵀ k_ht) + b_q,h · k_ht
                    image_i     += Σ_ht a[i,h,t] (v_ht W_o,hᵀ + b_o / heads)

Every product that touches the image is then one matrix product with a per-region matrix of width
heads × T, with no per-region query, key or value tensors and no head shuffling; where all regions share
the image side (SAM's first layer without mask prompts) those products run once for all regions. The
arithmetic is the module's, summed in another order: outputs agree to float rounding.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from transformers.models.sam.modeling_sam import SamAttention, SamTwoWayAttentionBlock, SamTwoWayTransformer

from .cpu_products import region_addmm, region_matmul


def run_two_way_transformer(
    transformer: SamTwoWayTransformer, tokens: torch.Tensor, image: torch.Tensor, image_pe: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """What `transformer(tokens, image, image_pe)` computes, for R regions of each image.

    Args:
        tokens: `(B, R, T, C)` each region's tokens, which are also their own positional embedding.
        image: `(B, HW, C)` an image side shared by the image's R regions, or `(B, R, HW, C)` one per region.
        image_pe: `(HW, C)` positional embedding of the image positions.
    Returns:
        tokens `(B, R, T, C)` and the image side `(B, R, HW, C)` after the transformer.
    """
    queries = tokens
    for layer in transformer.layers:
        queries, image = _attention_block(layer, queries, image, tokens, image_pe)
    attended = _token_to_image(transformer.final_attn_token_to_image, queries + tokens, image + image_pe, image)
    queries = transformer.layer_norm_final_attn(queries + attended)
    if image.dim() == 3:  # no layers: the image side is still the shared one
        image = image[:, None].expand(-1, tokens.shape[1], -1, -1)
    return queries, image


def _attention_block(
    layer: SamTwoWayAttentionBlock, queries: torch.Tensor, image: torch.Tensor, tokens: torch.Tensor,
    image_pe: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    if layer.skip_first_layer_pe:
        queries = layer.self_attn(query=queries, key=queries, value=queries)[0]
    else:
        with_pe = queries + tokens
        queries = queries + layer.self_attn(query=with_pe, key=with_pe, value=queries)[0]
    queries = layer.layer_norm1(queries)

    image_with_pe = image + image_pe
    attended = _token_to_image(layer.cross_attn_token_to_image, queries + tokens, image_with_pe, image)
    queries = layer.layer_norm2(queries + attended)
    queries = layer.layer_norm3(queries + layer.mlp(queries))

    image = _image_to_token(layer.cross_attn_image_to_token, image_with_pe, image, queries + tokens, queries)
    return queries, layer.layer_norm4(image)


def _token_to_image(
    attention: SamAttention, queries: torch.Tensor, image_with_pe: torch.Tensor, image: torch.Tensor
) -> torch.Tensor:
    """`(B, R, T, C)` queries over the image → `(B, R, T, C)`, i.e. `attention(queries, image_with_pe, image)`."""
    heads, num_tokens = attention.num_attention_heads, queries.shape[2]
    if _projecting_pays(attention.k_proj, heads, image, queries):
        return _token_to_shared_image(attention, queries, image_with_pe, image)
    q = attention.q_proj(queries).unflatten(-1, (heads, -1)) * attention.scaling
    # The key bias only shifts each softmax row, but it is a parameter: it stays in the graph for its gradient.
    weights = _token_image_logits(q, attention.k_proj, image_with_pe).softmax(dim=-1).flatten(2, 3)
    pooled = _regions_matmul(weights, image).unflatten(2, (heads, num_tokens))  # (B, R, heads, T, C)
    values = torch.einsum("brhtc,hdc->brthd", pooled, attention.v_proj.weight.unflatten(0, (heads, -1)))
    return attention.out_proj(values.flatten(-2) + attention.v_proj.bias)


def _token_to_shared_image(
    attention: SamAttention, queries: torch.Tensor, image_with_pe: torch.Tensor, image: torch.Tensor
) -> torch.Tensor:
    """`_token_to_image` over a `(B, HW, C)` image side shared by the regions: the module's own order, with the
    image's keys and values projected once for all regions and the regions' tokens attending together."""
    heads, (regions, num_tokens) = attention.num_attention_heads, queries.shape[1:3]
    q = attention.q_proj(queries).unflatten(-1, (heads, -1)).permute(0, 3, 1, 2, 4).flatten(2, 3)
    k = attention.k_proj(image_with_pe).unflatten(-1, (heads, -1)).transpose(1, 2)  # (B, heads, HW, d)
    v = attention.v_proj(image).unflatten(-1, (heads, -1)).transpose(1, 2)
    attended = F.scaled_dot_product_attention(q, k, v, scale=attention.scaling)  # (B, heads, R·T, d)
    return attention.out_proj(attended.unflatten(2, (regions, num_tokens)).permute(0, 2, 3, 1, 4).flatten(-2))


def _image_to_token(
    attention: SamAttention, image_with_pe: torch.Tensor, image: torch.Tensor, keys: torch.Tensor,
    values: torch.Tensor,
) -> torch.Tensor:
    """`image + attention(image_with_pe, keys, values)`: `(B, R, HW, C)`, the residual included."""
    heads = attention.num_attention_heads
    k = attention.k_proj(keys).unflatten(-1, (heads, -1)) * attention.scaling  # (B, R, T, heads, d)
    v = attention.v_proj(values).unflatten(-1, (heads, -1))
    # Logits as (heads, T, HW): the softmax over T then runs along contiguous image positions.
    weights = _token_image_logits(k, attention.q_proj, image_with_pe).softmax(dim=3).flatten(2, 3)
    writes = torch.einsum("brthd,chd->brhtc", v, attention.out_proj.weight.unflatten(1, (heads, -1)))
    # Each head's weights sum to 1 over the tokens, so spreading b_o over the heads adds it once.
    writes = writes.flatten(2, 3) + attention.out_proj.bias / heads
    if image.dim() == 4:  # the residual summed in the product's epilogue
        return region_addmm(image, weights.transpose(-1, -2), writes)
    return (weights.transpose(-1, -2) @ writes).add_(image[:, None])


def _token_image_logits(
    token_side: torch.Tensor, image_projection: torch.nn.Linear, image_with_pe: torch.Tensor
) -> torch.Tensor:
    """`(B, R, T, heads, d)` projected (and scaled) tokens · the image's projection → `(B, R, heads, T, HW)`.

    Each token's dot product with `image_projection(x_i)` is taken through the projection's weights and bias, so
    the image positions are never projected; except a `(B, HW, C)` side shared by enough regions, projected once
    (`_projecting_pays`).
    """
    heads, num_tokens = token_side.shape[3], token_side.shape[2]
    if _projecting_pays(image_projection, heads, image_with_pe, token_side):
        projected = image_projection(image_with_pe).unflatten(-1, (heads, -1))  # (B, HW, heads, d), once
        return torch.einsum("brthd,bihd->brhti", token_side, projected)
    reads = torch.einsum("brthd,hdc->brhtc", token_side, image_projection.weight.unflatten(0, (heads, -1)))
    read_bias = torch.einsum("brthd,hd->brht", token_side, image_projection.bias.unflatten(0, (heads, -1)))
    if image_with_pe.dim() == 4:
        logits = region_addmm(read_bias.flatten(2, 3)[..., None], reads.flatten(2, 3), image_with_pe.transpose(-1, -2))
        return logits.unflatten(2, (heads, num_tokens))
    logits = _regions_matmul(reads.flatten(2, 3), image_with_pe.transpose(-1, -2)).unflatten(2, (heads, num_tokens))
    return logits.add_(read_bias[..., None])


def _projecting_pays(projection: torch.nn.Linear, heads: int, image: torch.Tensor, token_side: torch.Tensor) -> bool:
    """Whether to project a shared `(B, HW, C)` image side once rather than read it through each region's tokens.

    Projecting costs C · inner per image position once, then inner per token; reading through the tokens costs
    C per token and head. For SAM's decoder (C = 256, inner = 128, 8 heads, 7 tokens) projecting pays from 3
    regions up, and the first layer's attention then does 1/16 of the per-region products.
    """
    if image.dim() != 3:
        return False
    regions_tokens = token_side.shape[1] * token_side.shape[2]
    inner, channels = projection.weight.shape
    return channels * inner + regions_tokens * inner < regions_tokens * heads * channels


def _regions_matmul(per_region: torch.Tensor, image_side: torch.Tensor) -> torch.Tensor:
    """`(B, R, M, K) @ (B, K, N)` (shared by the R regions: one product) or `@ (B, R, K, N)` → `(B, R, M, N)`."""
    if image_side.dim() == 4:
        return region_matmul(per_region, image_side)
    batch, regions, rows, _ = per_region.shape
    return region_matmul(per_region.reshape(batch, regions * rows, -1), image_side).unflatten(1, (regions, rows))
