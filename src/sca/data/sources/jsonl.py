"""The project's own format, one image per line (the documented way in for your own data):

    {"image": "relative/path.jpg", "image_id": 1, "task_type": "caption",
     "regions": [{"region_id": 7, "box": [x1, y1, x2, y2], "captions": ["..."],
                  "mask": {"size": [h, w], "counts": "..."}}]}

Boxes are pixels, xyxy; masks are COCO RLE and optional; paths are relative to the file's folder
unless `images_dir` is given. `width`/`height` are read from the image when absent.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from ...errors import InputError
from ..records import TASK_CAPTION, ImageRecord, Region
from .common import keep_images_on_disk, require_file


def load_jsonl(path: str | Path, images_dir: str | Path | None = None, skip_missing_images: bool = False) -> list[ImageRecord]:
    path = require_file(Path(path), "JSONL annotations")
    base = Path(images_dir) if images_dir else path.parent
    records = []
    with path.open() as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                entry = json.loads(line)
                regions = [
                    Region(
                        int(region.get("region_id", index)),
                        _box(region["box"], where),
                        _captions(region.get("captions", []), where),
                        region.get("mask"),
                    )
                    for index, region in enumerate(entry["regions"])
                ]
                image_path = base / entry["image"]
                image_id = int(entry.get("image_id", line_number - 1))
            except json.JSONDecodeError as error:
                raise InputError(f"{where} is not JSON: {error.msg}") from error
            except (KeyError, TypeError, AttributeError) as error:
                raise InputError(f"{where} lacks a required field ({error}); see the JSONL format in the README") from error
            width, height = entry.get("width"), entry.get("height")
            if (width is None or height is None) and image_path.is_file():
                with Image.open(image_path) as image:
                    width, height = image.size
            records.append(ImageRecord(image_id, image_path, width or 0, height or 0, regions,
                                       entry.get("task_type", TASK_CAPTION)))
    return keep_images_on_disk(records, skip_missing_images, str(path))


def _box(values, where: str) -> tuple[float, float, float, float]:
    box = tuple(float(v) for v in values)
    if len(box) != 4 or box[2] < box[0] or box[3] < box[1]:
        raise InputError(f"{where}: box {list(values)} is not x1,y1,x2,y2 with x2 >= x1 and y2 >= y1")
    return box


def _captions(values, where: str) -> list[str]:
    if isinstance(values, str):
        values = [values]
    if not all(isinstance(v, str) for v in values):
        raise InputError(f"{where}: captions must be a list of strings")
    return list(values)
