"""COCO-style annotation files: instance sets (COCO 2017, Objects365, V3Det, LVIS), where the category name is the
caption, and GRiT's Visual Genome files (`train.json`, `test.json`), where each annotation carries its caption.

Crowd annotations are skipped; float boxes stay floats; images without annotations are left out. The schema is
`schemas.CocoFile`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from ...errors import InputError
from ..records import TASK_CAPTION, TASK_RECOGNITION, ImageRecord, Region, xywh_to_xyxy
from ..schemas import CocoAnnotation, CocoFile, CocoImage, read_json_file, validate
from .common import RegionChecker, find_file, keep_images_on_disk

log = logging.getLogger("sca.data")

VG_IMAGE_FOLDERS = ("VG_100K", "VG_100K_2")


def load_coco_instances(
    annotations: str | Path,
    images_dir: str | Path,
    task_type: str = TASK_RECOGNITION,
    skip_missing_images: bool = False,
    repair_regions: bool = True,
) -> list[ImageRecord]:
    annotations, images_dir = Path(annotations), Path(images_dir)
    data = validate(CocoFile, read_json_file(annotations, "COCO instances"), str(annotations))
    names = {category.id: category.name for category in data.categories}

    def captions(annotation: CocoAnnotation, where: str) -> list[str]:
        if annotation.category_id not in names:
            raise InputError(f"{where}: category_id {annotation.category_id} is not among the file's categories")
        return [names[annotation.category_id]]

    def image_path(image: CocoImage) -> Path:
        if image.file_name:
            return images_dir / image.file_name
        if image.coco_url:  # LVIS names images only by URL (`.../train2017/000000391895.jpg`)
            return images_dir / "/".join(image.coco_url.rstrip("/").split("/")[-2:])
        raise InputError(f"{annotations}: image {image.id} has neither file_name nor coco_url")

    return _records(data, annotations, captions, image_path, task_type, skip_missing_images, repair_regions)


def load_grit_visual_genome(
    root: str | Path,
    split: str,
    annotations_dir: str | Path | None = None,
    images_dir: str | Path | None = None,
    skip_missing_images: bool = False,
    repair_regions: bool = True,
) -> list[ImageRecord]:
    """GRiT's Visual Genome split (`{split}.json`, COCO format with a `caption` per annotation): the test split
    (5,000 images) is what GRiT, TAP and the SCA paper report VG numbers on.

    Annotations: `annotations_dir/{split}.json`, else `root/annotations/{split}.json` or `root/{split}.json`.
    Images: `images_dir/`, else `root/images/` (GRiT's layout) or Visual Genome's `root/VG_100K/`, `root/VG_100K_2/`.
    """
    root = Path(root)
    folders = [Path(annotations_dir)] if annotations_dir else [root / "annotations", root]
    annotations = find_file([folder / f"{split}.json" for folder in folders], f"GRiT Visual Genome {split} split")
    data = validate(CocoFile, read_json_file(annotations, "GRiT Visual Genome annotations"), str(annotations))
    if images_dir:
        folders = [Path(images_dir)]
    elif (root / "images").is_dir():
        folders = [root / "images"]
    else:
        folders = [root / name for name in VG_IMAGE_FOLDERS]

    def captions(annotation: CocoAnnotation, where: str) -> list[str]:
        if annotation.caption is None:
            raise InputError(f"{where}: no caption (GRiT's files give one per annotation)")
        return [annotation.caption]

    def image_path(image: CocoImage) -> Path:
        name = image.file_name or f"{image.id}.jpg"
        return next((folder / name for folder in folders if (folder / name).is_file()), folders[0] / name)

    return _records(data, annotations, captions, image_path, TASK_CAPTION, skip_missing_images, repair_regions)


def _records(
    data: CocoFile,
    annotations: Path,
    captions: Callable[[CocoAnnotation, str], list[str]],
    image_path: Callable[[CocoImage], Path],
    task_type: str,
    skip_missing_images: bool,
    repair_regions: bool,
) -> list[ImageRecord]:
    images = {}
    for position, image in enumerate(data.images):
        if image.id in images:
            raise InputError(f"{annotations}: images.{position}: image id {image.id} appears twice")
        images[image.id] = image
    checker = RegionChecker(str(annotations), repair=repair_regions)
    by_image: dict[int, list[Region]] = defaultdict(list)
    crowds = 0
    for position, annotation in enumerate(data.annotations):
        where = f"{annotations}: annotations.{position} (id {annotation.id})"
        if annotation.iscrowd:  # a group of objects under one mask (COCO's iscrowd=1): no one region to caption
            crowds += 1
            continue
        image = images.get(annotation.image_id)
        if image is None:
            raise InputError(f"{where}: image_id {annotation.image_id} is not among the file's images")
        region = Region(annotation.id, xywh_to_xyxy(*annotation.bbox), captions(annotation, where), annotation.segmentation)
        checked = checker.check(region, image.width, image.height, where)
        if checked is not None:
            by_image[annotation.image_id].append(checked)
    checker.report()
    if crowds:
        log.warning("%s: %d crowd annotation(s) (iscrowd=1) skipped: each marks a group, not one object", annotations,
                    crowds)
    records = [
        ImageRecord(image.id, image_path(image), image.width, image.height, by_image[image.id], task_type)
        for image in data.images
        if by_image.get(image.id)
    ]
    return keep_images_on_disk(records, skip_missing_images, str(annotations))
