"""COCO-style instance sets (COCO 2017, Objects365, V3Det, LVIS): the category name is the caption.

Crowd annotations are skipped; float boxes stay floats; images without annotations are left out.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ..records import TASK_RECOGNITION, ImageRecord, Region, xywh_to_xyxy
from .common import expect, keep_images_on_disk, read_json


def load_coco_instances(
    annotations: str | Path,
    images_dir: str | Path,
    task_type: str = TASK_RECOGNITION,
    skip_missing_images: bool = False,
) -> list[ImageRecord]:
    annotations = Path(annotations)
    data = read_json(annotations, "COCO instances")
    expect(isinstance(data, dict) and {"images", "annotations", "categories"} <= data.keys(), annotations,
           "COCO instances with images, annotations and categories")
    names = {category["id"]: category["name"] for category in data["categories"]}
    by_image: dict[int, list[Region]] = defaultdict(list)
    for ann in data["annotations"]:
        expect({"id", "image_id", "bbox", "category_id"} <= ann.keys(), annotations,
               "annotations need id, image_id, bbox, category_id")
        if ann.get("iscrowd", 0):
            continue
        by_image[ann["image_id"]].append(
            Region(ann["id"], xywh_to_xyxy(*ann["bbox"]), [names[ann["category_id"]]], ann.get("segmentation"))
        )
    records = []
    for image in data["images"]:
        regions = by_image.get(image["id"])
        if not regions:
            continue
        # LVIS names images only by URL.
        file_name = image.get("file_name") or image["coco_url"].rsplit("/", 1)[-1]
        records.append(
            ImageRecord(image["id"], Path(images_dir) / file_name, image["width"], image["height"], regions, task_type)
        )
    return keep_images_on_disk(records, skip_missing_images, str(annotations))
