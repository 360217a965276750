"""The project's own format, one image per line (the documented way in for your own data):

    {"image": "relative/path.jpg", "image_id": 1, "task_type": "caption",
     "regions": [{"region_id": 7, "box": [x1, y1, x2, y2], "captions": ["..."],
                  "mask": {"size": [h, w], "counts": "..."}}]}

Boxes are pixels, xyxy; masks are COCO RLE (or polygons) and optional; paths are relative to the file's folder
unless `images_dir` is given. `width`/`height` are read from the image when absent. The schema is
`schemas.JsonlImage`; every box must lie inside its image and every mask have its size.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ...errors import InputError
from ..records import ImageRecord, Region
from ..schemas import JsonlImage, read_json_lines, validate
from .common import RegionChecker, keep_images_on_disk


def load_jsonl(
    path: str | Path | None,
    images_dir: str | Path | None = None,
    skip_missing_images: bool = False,
    repair_regions: bool = False,
) -> list[ImageRecord]:
    if not path:
        raise InputError("no JSONL file given: set data.train_file=PATH (training) or data.eval_file=PATH (inference)")
    path = Path(path)
    base = Path(images_dir) if images_dir else path.parent
    checker = RegionChecker(str(path), repair=repair_regions)
    records, seen_ids = [], {}
    for line_number, value in read_json_lines(path, "JSONL annotations"):
        where = f"{path}:{line_number}"
        entry = validate(JsonlImage, value, where)
        image_id = line_number - 1 if entry.image_id is None else entry.image_id
        if image_id in seen_ids:
            raise InputError(f"{where}: image_id {image_id} was already used on line {seen_ids[image_id]}")
        seen_ids[image_id] = line_number
        image_path = base / entry.image
        if not image_path.is_file():
            records.append(ImageRecord(image_id, image_path, entry.width or 0, entry.height or 0, [], entry.task_type))
            continue  # missing: keep_images_on_disk raises or skips
        width, height = _size(entry, image_path, where)
        regions = []
        for index, region in enumerate(entry.regions):
            region_id = index if region.region_id is None else region.region_id
            checked = checker.check(Region(region_id, tuple(region.box), list(region.captions), region.mask),
                                    width, height, f"{where}: regions.{index}")
            if checked is not None:
                regions.append(checked)
        records.append(ImageRecord(image_id, image_path, width, height, regions, entry.task_type))
    checker.report()
    return keep_images_on_disk(records, skip_missing_images, str(path))


def _size(entry: JsonlImage, image_path: Path, where: str) -> tuple[int, int]:
    """The image's (width, height): from the line if it gives them (checked against the file), else the file."""
    try:
        with Image.open(image_path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise InputError(f"{where}: cannot read {image_path} as an image ({type(error).__name__})") from None
    if (entry.width, entry.height) not in ((None, None), (width, height)):
        raise InputError(f"{where}: width and height say {entry.width}x{entry.height}, but {image_path} is "
                         f"{width}x{height}")
    return width, height
