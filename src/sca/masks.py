"""Binary masks as COCO run-length encoding (pycocotools); their geometry is in `geometry.py`."""

from __future__ import annotations

import numpy as np
import torch
from pycocotools import mask as mask_utils


def encode_rle(mask: np.ndarray) -> dict:
    """`(H, W)` boolean mask → COCO RLE `{"size": [H, W], "counts": str}` (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def encode_rles(masks: torch.Tensor) -> list[dict]:
    """`(N, H, W)` boolean masks, on any device → N COCO RLEs (JSON-ready), equal to `encode_rle`'s.

    On a CPU pycocotools encodes them all in one call. On a GPU the run lengths and COCO's counts strings are
    computed there (`rle_counts`), so only the strings cross to the host, not the masks: a noisy mask has runs in
    the hundreds of thousands, which pycocotools takes tens of milliseconds to walk.
    """
    if masks.shape[0] == 0:
        return []
    height, width = masks.shape[-2:]
    if masks.device.type != "cpu" and masks[0].numel() > 0:
        return [{"size": [height, width], "counts": counts} for counts in rle_counts(masks)]
    columns_first = _columns_first(masks.cpu().bool().view(torch.uint8)).numpy()  # (H, W, N) in Fortran order
    rles = mask_utils.encode(columns_first.transpose(2, 1, 0))
    return [{"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in rles]


TRANSPOSE_ROWS = 64
"""Rows of a mask transposed at a time: a band whose columns stay in cache (a whole 25-megapixel mask transposed in
one copy runs ~3x slower)."""


def _columns_first(masks: torch.Tensor) -> torch.Tensor:
    """`(N, H, W)` → `(N, W, H)`, contiguous (COCO's RLE runs down the columns)."""
    count, height, width = masks.shape
    columns = masks.new_empty(count, width, height)
    for top in range(0, height, TRANSPOSE_ROWS):
        columns[:, :, top : top + TRANSPOSE_ROWS] = masks[:, top : top + TRANSPOSE_ROWS].mT
    return columns


def rle_counts(masks: torch.Tensor) -> list[str]:
    """`(N, H, W)` boolean masks (H, W ≥ 1) → their COCO counts strings, computed with tensor ops where the masks
    are (pycocotools' `rleToString`, vectorised: the runs in column order, each count after the first two minus
    the one two before, written in 5-bit groups, low first, `0x20` marking "more follows", offset by 48)."""
    count, height, width = masks.shape
    length = height * width
    flat = masks.bool().mT.reshape(count, length)
    # A run starts at each change, and at pixel 0 if it is set (the runs begin with zeros, maybe none); the
    # column `length` closes the last run.
    starts = torch.ones(count, length + 1, dtype=torch.bool, device=masks.device)
    starts[:, 0] = flat[:, 0]
    starts[:, 1:length] = flat[:, 1:] != flat[:, :-1]
    rows, positions = starts.nonzero(as_tuple=True)
    first_of_row = torch.ones_like(rows, dtype=torch.bool)
    first_of_row[1:] = rows[1:] != rows[:-1]
    previous = torch.zeros_like(positions)
    previous[1:] = positions[:-1]
    runs = positions - previous.masked_fill(first_of_row, 0)
    runs_per_row = torch.bincount(rows, minlength=count)
    rank = torch.arange(len(runs), device=masks.device) - (runs_per_row.cumsum(0) - runs_per_row)[rows]
    two_before = torch.zeros_like(runs)
    two_before[2:] = runs[:-2]
    values = torch.where(rank > 2, runs - two_before, runs)
    groups = -(-(length.bit_length() + 1) // 5)  # enough 5-bit groups for any value in [-length, length]
    shifts = 5 * torch.arange(groups + 1, device=masks.device)
    shifted = values[:, None] >> shifts  # (runs, groups + 1), arithmetic: negative values stay negative
    chunks = shifted[:, :-1] & 0x1F
    rest = shifted[:, 1:]
    more = torch.where(chunks & 0x10 != 0, rest != -1, rest != 0)
    lengths = (~more).int().argmax(dim=1) + 1  # groups written: up to and including the first without "more"
    written = torch.arange(groups, device=masks.device) < lengths[:, None]
    characters = (chunks | (more & written).long() << 5) + 48
    text = characters[written].to(torch.uint8).cpu().numpy().tobytes()
    per_row = torch.zeros(count, dtype=torch.long, device=masks.device).index_add_(0, rows, lengths).cpu().tolist()
    ends = np.cumsum(per_row).tolist()
    return [text[end - size:end].decode("ascii") for end, size in zip(ends, per_row)]


def decode_rle(rle: dict) -> np.ndarray:
    """COCO RLE (compressed or uncompressed counts) → `(H, W)` boolean mask."""
    return mask_utils.decode(_for_pycocotools(rle)).astype(bool)


def rle_box(rle: dict) -> list[float] | None:
    """The tight xyxy box (pixel edges) of a COCO RLE mask, read from its runs, as `geometry.mask_box` gives for the
    decoded mask; None if the mask is empty. A 25-megapixel mask need not be decoded to be boxed."""
    rle = _for_pycocotools(rle)
    if not mask_utils.area(rle):
        return None
    x, y, box_width, box_height = mask_utils.toBbox(rle).tolist()
    return [x, y, x + box_width, y + box_height]


def _for_pycocotools(rle: dict) -> dict:
    """COCO RLE as JSON carries it (counts a string or a list of runs) → pycocotools' compressed form."""
    height, width = rle["size"]
    if isinstance(rle["counts"], list):
        return mask_utils.frPyObjects(rle, height, width)
    if isinstance(rle["counts"], str):
        return {"size": [height, width], "counts": rle["counts"].encode("ascii")}
    return rle


def decode_mask(mask: dict | list, height: int, width: int) -> np.ndarray:
    """A dataset's region mask, COCO RLE or COCO polygons `[[x1, y1, x2, y2, ...], ...]`, → `(H, W)` boolean."""
    if isinstance(mask, dict):
        return decode_rle(mask)
    rles = mask_utils.frPyObjects([list(map(float, polygon)) for polygon in mask], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
