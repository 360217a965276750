"""SAM's image-encoder attention computed a cache-sized block of queries at a time.

transformers' SAM attention adds the decomposed relative-position term as a dense `(heads, HW, HW)` bias:
in a global layer of ViT-B at 1024² that is 200 M floats (800 MB in fp32), written, copied into shape and
read back, four times per image: half of the encoder's time on a CPU. Here each block of queries gets its
logits, adds the two small row and column terms in place and attends while the block is still in cache (in bf16
the terms ride in the logits' product itself: `FOLDED_REL_POS_DTYPES`).
The parameters and the arithmetic are those of `SamVisionAttention`, so checkpoints load unchanged. It is a CPU
fast path: models run their encoder through `encoder_for(encoder, device)`, which gives a blocked view of the
encoder on a CPU and the encoder itself (SDPA) elsewhere.
"""

from __future__ import annotations

import copy
import weakref

import torch
from torch import nn
from transformers.models.sam.modeling_sam import SamVisionAttention, SamVisionEncoder

LOGITS_BLOCK_BYTES = 8 * 2**20
"""Logits computed per step: small enough to stay in a CPU's cache, large enough for efficient products."""
FOLDED_REL_POS_DTYPES = (torch.bfloat16, torch.float16)
"""Precisions whose logits take the relative positions inside their product (queries and keys widened by the row and
column terms), not in two passes over each block after it: where products are cheap beside passes over memory. A
global layer's head of ViT-B at 1024², on 2 cores of an Intel Xeon with AMX: 14.3 → 9.0 ms in bf16; in float32 the
three-times-deeper product costs more than the passes (14.6 → 27.4 ms), so float32 keeps them."""


class BlockedSamVisionAttention(SamVisionAttention):
    """`SamVisionAttention`, with the same weights and results, attending block by block."""

    @classmethod
    def sharing(cls, attention: SamVisionAttention) -> BlockedSamVisionAttention:
        """A blocked attention that uses `attention`'s own parameters (shared, not copied)."""
        blocked = cls.__new__(cls)
        blocked.__dict__.update(attention.__dict__)
        return blocked

    def forward(self, hidden_states: torch.Tensor, output_attentions=None) -> tuple[torch.Tensor, None]:
        """`(B, H, W, C)` → `(B, H, W, C)` (and no attention weights)."""
        batch_size, height, width, _ = hidden_states.shape
        positions, heads = height * width, self.num_attention_heads
        qkv = self.qkv(hidden_states).reshape(batch_size, positions, 3, heads, -1).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.reshape(3, batch_size * heads, positions, -1).unbind(0)
        if self.use_rel_pos:
            # (B·heads, HW, H) and (B·heads, HW, W): each query's term per key row and per key column.
            rel_h, rel_w = self._decomposed_rel_pos_terms(query, height, width)
        # The scale on the queries, not on the logits: a pass over (HW, d), not over every (HW, HW) block (and the
        # same numbers where it is a power of two, as SAM's 1/8 and 1/4 are).
        query = query * self.scale
        folded = self.use_rel_pos and query.dtype in FOLDED_REL_POS_DTYPES
        if folded:
            query, key = self._with_rel_pos_columns(query, key, rel_h, rel_w, height, width)

        output = torch.empty_like(value)
        rows = max(1, LOGITS_BLOCK_BYTES // (positions * query.element_size()))
        query_block = min(positions, rows)
        group = max(1, rows // positions)  # (image, head) pairs per step, when a whole one fits
        for first in range(0, batch_size * heads, group):
            pairs = slice(first, first + group)
            # laid out once for the group's blocks (a product copies a transposed operand at every call)
            keys_t, values = key[pairs].transpose(1, 2).contiguous(), value[pairs]
            for start in range(0, positions, query_block):
                block = slice(start, start + query_block)
                logits = torch.bmm(query[pairs, block], keys_t)
                if self.use_rel_pos and not folded:
                    grid = logits.view(logits.shape[0], logits.shape[1], height, width)
                    grid.add_(rel_h[pairs, block, :, None]).add_(rel_w[pairs, block, None, :])
                output[pairs, block] = torch.bmm(logits.softmax(dim=-1), values)

        output = output.view(batch_size, heads, height, width, -1).permute(0, 2, 3, 1, 4)
        return self.proj(output.reshape(batch_size, height, width, -1)), None

    @staticmethod
    def _with_rel_pos_columns(query: torch.Tensor, key: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor,
                              height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries `(N, HW, d + H + W)` with their row and column terms beside them, keys with the one-hot of their
        row and column: the logits' product then adds the relative positions itself."""
        rows = torch.eye(height, dtype=key.dtype, device=key.device).repeat_interleave(width, dim=0)
        columns = torch.eye(width, dtype=key.dtype, device=key.device).repeat(height, 1)
        where = torch.cat([rows, columns], dim=1).expand(key.shape[0], -1, -1)  # (N, HW, H + W)
        return torch.cat([query, rel_h, rel_w], dim=-1), torch.cat([key, where], dim=-1)

    def _decomposed_rel_pos_terms(
        self, query: torch.Tensor, height: int, width: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        relative_h = self.get_rel_pos(height, height, self.rel_pos_h)  # (H, H, d)
        relative_w = self.get_rel_pos(width, width, self.rel_pos_w)  # (W, W, d)
        grid = query.reshape(query.shape[0], height, width, -1)
        rel_h = torch.einsum("bhwc,hkc->bhwk", grid, relative_h).reshape(query.shape[0], height * width, height)
        rel_w = torch.einsum("bhwc,wkc->bhwk", grid, relative_w).reshape(query.shape[0], height * width, width)
        return rel_h, rel_w


def blocked_view(encoder: SamVisionEncoder) -> SamVisionEncoder:
    """The encoder with every layer attending block by block: a shallow copy that shares every weight with
    `encoder` (nothing is copied, and `encoder` itself is left as it was)."""
    view = copy.copy(encoder)
    view._modules = dict(encoder._modules)
    layers = []
    for layer in encoder.layers:
        shared = copy.copy(layer)
        shared._modules = dict(layer._modules)
        shared._modules["attn"] = BlockedSamVisionAttention.sharing(layer.attn)
        layers.append(shared)
    view._modules["layers"] = nn.ModuleList(layers)
    return view


_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def encoder_for(encoder: SamVisionEncoder, device: torch.device) -> SamVisionEncoder:
    """The encoder to run on `device`: on a CPU its blocked view (made once), elsewhere the encoder itself
    (transformers' SDPA attention, which uses the GPU's fused kernels)."""
    if device.type != "cpu":
        return encoder
    view = _VIEWS.get(encoder)
    if view is None:
        view = _VIEWS[encoder] = blocked_view(encoder)
    return view
