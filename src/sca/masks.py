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

    The masks are put in the column order COCO's runs follow where they are (on a GPU, a copy that costs
    microseconds), so pycocotools encodes them all in one call without copying them again.
    """
    if masks.shape[0] == 0:
        return []
    columns_first = masks.to(torch.uint8).mT.contiguous().cpu().numpy()  # (N, W, H): (H, W, N) in Fortran order
    rles = mask_utils.encode(columns_first.transpose(2, 1, 0))
    return [{"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in rles]


def decode_rle(rle: dict) -> np.ndarray:
    """COCO RLE (compressed or uncompressed counts) → `(H, W)` boolean mask."""
    height, width = rle["size"]
    if isinstance(rle["counts"], list):
        rle = mask_utils.frPyObjects(rle, height, width)
    elif isinstance(rle["counts"], str):
        rle = {"size": [height, width], "counts": rle["counts"].encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


def decode_mask(mask: dict | list, height: int, width: int) -> np.ndarray:
    """A dataset's region mask, COCO RLE or COCO polygons `[[x1, y1, x2, y2, ...], ...]`, → `(H, W)` boolean."""
    if isinstance(mask, dict):
        return decode_rle(mask)
    rles = mask_utils.frPyObjects([list(map(float, polygon)) for polygon in mask], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
