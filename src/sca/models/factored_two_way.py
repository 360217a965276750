"""SAM's two-way transformer for many regions of one image side, each region's image side kept factored.

Without mask prompts every region of an image enters SAM's decoder with the same image side X `(HW, C)`.
An image → token attention adds to it a write of rank heads × T (each position's update mixes the heads × T
token writes), and a LayerNorm rescales each position and adds shared vectors. So after any number of layers
a region's image side is, position by position,

    image_i = s_i · (X_i ∘ g) + Σ_m U_mi V_m      s `(HW,)`, U `(m, HW)`, V `(m, C)` per region; g `(C,)` shared,

with m growing by heads × T + 2 a layer (SAM's decoder, 7 tokens, 8 heads: 58, then 116). Attention reads the
image side only through its key, query and value projections: X is projected once for all regions, and each
region adds its small `Uᵀ (V Wᵀ)`. The LayerNorm statistics come from the same factors: the mean from V's row
means; the mean square from V Vᵀ and from V's products with X, taken through what V's rows are made of (a
write is `v Wₒᵀ + bₒ / heads`: `X Wₒ` is shared, `· v` per region). No region's `(HW, C)` side is made until
it is asked for (`FactoredImageSides.dense`), and then only for the regions that need it: anything mode upscales
the masks of only the grid points whose predicted IoU passes its filter.

Per region, SAM's decoder then does ~0.2 G multiply-adds against ~0.4 G in `two_way`'s form, on `(m, HW)`
rather than `(HW, C)` tensors, one region at a time so that they stay in cache. The arithmetic is the module's
in another order, except that each LayerNorm's variance is taken as E[x²] − E[x]² (the tests bound the
difference from the module's on SAM's published weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F
from transformers.models.sam.modeling_sam import SamAttention, SamTwoWayTransformer

from .cpu_products import matrix_products, region_matmul


@dataclass
class _Writes:
    """Rows `(v_ht Wₒ,hᵀ + bₒ / heads) ∘ post` of V: one image → token attention's heads × T writes."""

    start: int
    values: torch.Tensor  # (B, R, heads, T, d)
    out_weight: torch.Tensor  # (C, heads·d)
    bias_share: torch.Tensor  # (C,)
    post: torch.Tensor  # (C,) the LayerNorm gains applied since


@dataclass
class _Vector:
    """A row of V shared by every region: a LayerNorm's gain or bias, times the gains applied since."""

    start: int
    vector: torch.Tensor  # (C,)


REGION_GROUP = 16
"""Regions whose products with the shared image side run as one product."""

FACTORED_MIN_REGIONS = 16
"""Regions sharing an image side from which the factored form runs faster than `two_way`'s (measured on SAM's
decoder, `sca bench speed`)."""


class FactoredImageSides:
    """B images × R regions' image sides: `scale_i · (shared_i ∘ gain) + Σ_m low_mi high_m` at each position i.

    shared: `(B, HW, C)`; gain: `(C,)`; scale: `(B, R, HW)`; low: `(B, R, m, HW)`; high: `(B, R, m, C)`.
    """

    def __init__(self, shared: torch.Tensor, gain: torch.Tensor, scale: torch.Tensor, low: torch.Tensor,
                 high: torch.Tensor, width: int = 0, rows: list[_Writes | _Vector] | None = None):
        self.shared, self.gain, self.scale, self._low, self._high = shared, gain, scale, low, high
        self.width = width
        self.rows = rows or []

    @classmethod
    def unwritten(cls, shared: torch.Tensor, num_regions: int, capacity: int) -> FactoredImageSides:
        """R regions whose side is still `shared` `(B, HW, C)`, with room for `capacity` rows."""
        batch, positions, channels = shared.shape
        return cls(shared, shared.new_ones(channels), shared.new_ones(batch, num_regions, positions),
                   shared.new_empty(batch, num_regions, capacity, positions),
                   shared.new_empty(batch, num_regions, capacity, channels))

    def take(self, regions: slice) -> FactoredImageSides:
        """These regions of each image (views, nothing copied)."""
        rows = [_Writes(r.start, r.values[:, regions], r.out_weight, r.bias_share, r.post) if isinstance(r, _Writes)
                else r for r in self.rows]
        return FactoredImageSides(self.shared, self.gain, self.scale[:, regions], self._low[:, regions],
                                  self._high[:, regions], self.width, rows)

    @property
    def low(self) -> torch.Tensor:
        return self._low[:, :, : self.width]

    @property
    def high(self) -> torch.Tensor:
        return self._high[:, :, : self.width]

    def dense(self, regions: torch.Tensor | None = None) -> torch.Tensor:
        """The image sides `(B, R, HW, C)`; or, given indices into the B·R regions, those regions' `(n, HW, C)`."""
        shared = self.shared * self.gain
        if regions is None:
            return torch.addcmul(self.low.transpose(-1, -2) @ self.high, self.scale[..., None], shared[:, None])
        scale, low, high = (t.flatten(0, 1)[regions] for t in (self.scale, self.low, self.high))
        return torch.addcmul(low.transpose(-1, -2) @ high, scale[..., None], shared[regions // self.scale.shape[1]])

    def linear_rows(self, weight: torch.Tensor, bias: torch.Tensor, regions: torch.Tensor | None = None):
        """`image_r @ weight + bias`, `(HW, N)`, for each region r of the B·R (or of `regions`, indices into them),
        for a `(C, N)` weight: `shared ∘ gain` goes through the weight once for all regions."""
        shared_part = (self.shared * self.gain) @ weight  # (B, HW, N)
        num_regions = self.scale.shape[1]
        indices = range(self.scale.shape[0] * num_regions) if regions is None else regions.tolist()
        for index in indices:
            b, r = divmod(index, num_regions)
            rows = torch.addmm(bias, self.low[b, r].T, self.high[b, r] @ weight)
            yield rows.addcmul_(shared_part[b], self.scale[b, r, :, None])

    def projected(self, linear: torch.nn.Linear, heads: int, image_pe: torch.Tensor | None = None):
        """`linear(image + image_pe)` per head, as `scale_i · shared_part_i + lowᵀ low_part + constant_i`.

        Returns `(B, heads, d, HW)`, `(B, R, heads, m, d)` and `(heads, d, HW)` (the positional embedding's and the
        bias's part; without `image_pe`, the bias `(heads, d, 1)`).
        """
        weight, bias = linear.weight, linear.bias
        shared_part = F.linear(self.shared, weight * self.gain).unflatten(-1, (heads, -1)).permute(0, 2, 3, 1)
        low_part = (self.high @ weight.T).unflatten(-1, (heads, -1)).transpose(2, 3)
        constant = bias if image_pe is None else F.linear(image_pe, weight, bias)
        constant = constant.reshape(-1, heads, weight.shape[0] // heads).permute(1, 2, 0)
        return shared_part, low_part, constant

    def add_rows(self, count: int) -> slice:
        rows = slice(self.width, self.width + count)
        self.width += count
        return rows

    def layer_norm(self, norm: torch.nn.LayerNorm) -> None:
        """Apply `norm` at every position, its statistics taken from the factors."""
        channels = self.shared.shape[-1]
        shared = self.shared * self.gain
        shared_mean, shared_mean_square = shared.mean(-1), shared.square().mean(-1)  # (B, HW)
        crossed = self._crossed(shared)
        high_means = self.high.mean(-1)  # (B, R, m)
        width = self.width
        new = self.add_rows(2)
        for b in range(self.scale.shape[0]):
            for r in range(self.scale.shape[1]):
                low, high, scale = self._low[b, r, :width], self._high[b, r, :width], self.scale[b, r]
                mean = torch.addmv(scale * shared_mean[b], low.T, high_means[b, r])
                quadratic = ((high @ high.T) @ low).mul_(low).sum(0)
                mean_square = (scale.square() * shared_mean_square[b]).add_((2 * scale * crossed[b, r] + quadratic)
                                                                             / channels)
                inverse_std = (mean_square - mean.square()).clamp_min_(0).add_(norm.eps).rsqrt_()
                low.mul_(inverse_std)
                scale.mul_(inverse_std)
                self._low[b, r, new.start] = -mean * inverse_std
        self._low[:, :, new.start + 1] = 1
        self._high[:, :, :width] *= norm.weight
        self._high[:, :, new.start] = norm.weight
        self._high[:, :, new.start + 1] = norm.bias
        self.gain = self.gain * norm.weight
        for row in self.rows:
            if isinstance(row, _Writes):
                row.post = row.post * norm.weight
            else:
                row.vector = row.vector * norm.weight
        self.rows += [_Vector(new.start, norm.weight), _Vector(new.start + 1, norm.bias)]

    def _crossed(self, shared: torch.Tensor) -> torch.Tensor:
        """`(B, R, HW)`: `Σ_m U_mi (V_m · shared_i)` for `shared` `(B, HW, C)`, V's rows taken through what they are
        made of (a write through its output weight: one product of `shared` for all regions, then `· v`)."""
        crossed = self.scale.new_zeros(self.scale.shape)
        for row in self.rows:
            if isinstance(row, _Vector):
                crossed.addcmul_(self._low[:, :, row.start], (shared @ row.vector)[:, None])
                continue
            heads, num_tokens = row.values.shape[2:4]
            posted = shared * row.post
            through = (posted @ row.out_weight).unflatten(-1, (heads, -1)).permute(0, 2, 3, 1)  # (B, heads, d, HW)
            bias = posted @ row.bias_share  # (B, HW)
            rows = slice(row.start, row.start + heads * num_tokens)
            for b in range(self.scale.shape[0]):
                for r, per_head in _grouped_products(row.values[b], through[b]):
                    for head, products in enumerate(per_head):
                        low = self._low[b, r, rows.start + head * num_tokens : rows.start + (head + 1) * num_tokens]
                        crossed[b, r] += (low * (products + bias[b])).sum(0)
        return crossed


def _grouped_products(tokens: torch.Tensor, right: torch.Tensor):
    """`(r, [tokens[r, h] @ right[h] for each head h])` for each region r: `(T, N)` each, for `(R, heads, T, d)`
    tokens and a `(heads, d, N)` right side shared by the regions. The products run for `REGION_GROUP` regions at
    once (one per head, group × T rows: d is 16 in SAM's decoder, too short to run well a region at a time)."""
    regions, _, num_tokens = tokens.shape[:3]
    for start in range(0, regions, REGION_GROUP):
        group = tokens[start : start + REGION_GROUP]
        per_head = [p.unflatten(0, (len(group), num_tokens))
                    for p in matrix_products(group.transpose(0, 1).flatten(1, 2), right)]
        for offset in range(len(group)):
            yield start + offset, [p[offset] for p in per_head]


def _scaled_reads(tokens: torch.Tensor, shared: torch.Tensor, constant: torch.Tensor, scale: torch.Tensor):
    """`(r, scale_r ∘ (tokens_r @ shared) + tokens_r @ constant)` for each region r of one image: `(heads, T, HW)`."""
    heads, _, positions = shared.shape
    for r, per_head in _grouped_products(tokens, torch.cat([shared, constant], dim=-1)):
        reads = shared.new_empty(heads, tokens.shape[2], positions)
        for head, products in enumerate(per_head):
            torch.addcmul(products[:, positions:], products[:, :positions], scale[r], out=reads[head])
        yield r, reads


def factoring_pays(shared_image: bool, dtype: torch.dtype, num_regions: int) -> bool:
    """Whether to run the transformer factored: at inference in float32, for `FACTORED_MIN_REGIONS` or more regions
    sharing an image side (fewer do not pay for the shared products; bfloat16 keeps the module's form, whose
    LayerNorm statistics are not taken from a difference of squares)."""
    return shared_image and dtype == torch.float32 and not torch.is_grad_enabled() and num_regions >= FACTORED_MIN_REGIONS


def run_factored_two_way_transformer(
    transformer: SamTwoWayTransformer, tokens: torch.Tensor, image: torch.Tensor, image_pe: torch.Tensor
) -> tuple[torch.Tensor, FactoredImageSides]:
    """What `transformer(tokens, image, image_pe)` computes for R regions sharing one image side per image.

    Args:
        tokens: `(B, R, T, C)` each region's tokens, which are also their own positional embedding.
        image: `(B, HW, C)` the image side every region starts from.
        image_pe: `(HW, C)` positional embedding of the image positions.
    Returns:
        tokens `(B, R, T, C)` and the regions' image sides after the transformer, factored.
    """
    writes = sum(layer.cross_attn_image_to_token.num_attention_heads for layer in transformer.layers)
    sides = FactoredImageSides.unwritten(image, tokens.shape[1], capacity=writes * tokens.shape[2] + 2 * len(transformer.layers))
    queries = tokens
    for layer in transformer.layers:
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(query=queries, key=queries, value=queries)[0]
        else:
            with_pe = queries + tokens
            queries = queries + layer.self_attn(query=with_pe, key=with_pe, value=queries)[0]
        queries = layer.layer_norm1(queries)
        attended = _token_to_image(layer.cross_attn_token_to_image, queries + tokens, sides, image_pe)
        queries = layer.layer_norm2(queries + attended)
        queries = layer.layer_norm3(queries + layer.mlp(queries))
        _image_to_token(layer.cross_attn_image_to_token, sides, image_pe, queries + tokens, queries)
        sides.layer_norm(layer.layer_norm4)
    attended = _token_to_image(transformer.final_attn_token_to_image, queries + tokens, sides, image_pe)
    return transformer.layer_norm_final_attn(queries + attended), sides


def _token_to_image(attention: SamAttention, queries: torch.Tensor, sides: FactoredImageSides,
                    image_pe: torch.Tensor) -> torch.Tensor:
    """`attention(queries, image + image_pe, image)` for each region: `(B, R, T, C)`."""
    heads = attention.num_attention_heads
    q = (attention.q_proj(queries) * attention.scaling).unflatten(-1, (heads, -1)).transpose(2, 3)  # (B, R, h, T, d)
    keys_shared, keys_low, keys_constant = sides.projected(attention.k_proj, heads, image_pe)
    values_shared, values_low, values_bias = sides.projected(attention.v_proj, heads)
    values_shared = values_shared.transpose(-1, -2).contiguous()  # (B, heads, HW, d)
    attended = torch.empty_like(q)
    for b in range(q.shape[0]):
        for r, logits in _scaled_reads(q[b], keys_shared[b], keys_constant, sides.scale[b]):
            low, scale = sides.low[b, r], sides.scale[b, r]
            logits = logits.flatten(0, 1)
            if len(low):
                logits.addmm_((q[b, r] @ keys_low[b, r].transpose(-1, -2)).flatten(0, 1), low)
            weights = logits.softmax(dim=-1)
            out = region_matmul((weights * scale).view(heads, -1, weights.shape[-1]), values_shared[b])  # (heads, T, d)
            if len(low):
                out += (weights @ low.T).view(heads, -1, len(low)) @ values_low[b, r]
            attended[b, r] = out
    # Each softmax row sums to 1: the value bias once.
    return attention.out_proj(attended.transpose(2, 3).flatten(-2) + attention.v_proj.bias)


def _image_to_token(attention: SamAttention, sides: FactoredImageSides, image_pe: torch.Tensor, keys: torch.Tensor,
                    values: torch.Tensor) -> None:
    """Add `attention(image + image_pe, keys, values)` to each region's image side, as heads × T new rows."""
    heads = attention.num_attention_heads
    k = (attention.k_proj(keys) * attention.scaling).unflatten(-1, (heads, -1)).transpose(2, 3)  # (B, R, h, T, d)
    v = attention.v_proj(values).unflatten(-1, (heads, -1)).transpose(2, 3)
    queries_shared, queries_low, queries_constant = sides.projected(attention.q_proj, heads, image_pe)
    out_weight = attention.out_proj.weight
    # Each head's weights sum to 1 over the tokens, so spreading b_o over the heads adds it once.
    bias_share = attention.out_proj.bias / heads
    writes = torch.einsum("brhtd,chd->brhtc", v, out_weight.unflatten(1, (heads, -1))).flatten(2, 3) + bias_share
    width = sides.width
    rows = sides.add_rows(writes.shape[2])
    for b in range(k.shape[0]):
        for r, logits in _scaled_reads(k[b], queries_shared[b], queries_constant, sides.scale[b]):  # (heads, T, HW)
            low = sides._low[b, r, :width]
            if width:
                logits.view(-1, logits.shape[-1]).addmm_((k[b, r] @ queries_low[b, r].transpose(-1, -2)).flatten(0, 1),
                                                         low)
            sides._low[b, r, rows] = logits.softmax(dim=1).flatten(0, 1)
    sides._high[:, :, rows] = writes
    sides.rows.append(_Writes(rows.start, v, out_weight, bias_share, torch.ones_like(bias_share)))
