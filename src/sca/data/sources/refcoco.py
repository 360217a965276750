"""RefCOCO, RefCOCO+ and RefCOCOg (and RefCLEF) in the `refer` layout.

Under `root`: `{dataset}/refs({split_by}).p` (a pickled list of refs: ref_id, ann_id, image_id, split,
sentences [{sent, ...}]) and `{dataset}/instances.json` (COCO images, annotations, categories); images
under `images_dir` (COCO `train2014/`). Every sentence of a referring expression is a reference.
"""

from __future__ import annotations

import pickle
from collections import defaultdict
from pathlib import Path

from ...errors import InputError
from ..records import TASK_CAPTION, ImageRecord, Region, xywh_to_xyxy
from ..schemas import CocoFile, ReferringExpression, read_json_file, validate
from .common import RegionChecker, keep_images_on_disk, require_file

DATASETS = {
    "refcoco": ("unc",),
    "refcoco+": ("unc",),
    "refcocog": ("umd", "google"),
    "refclef": ("unc", "berkeley"),
}


def load_refcoco(
    root: str | Path,
    dataset: str,
    split_by: str,
    split: str,
    images_dir: str | Path,
    skip_missing_images: bool = False,
    repair_regions: bool = True,
) -> list[ImageRecord]:
    if dataset not in DATASETS:
        raise InputError(f"unknown referring dataset {dataset!r}: use one of {', '.join(DATASETS)}")
    if split_by not in DATASETS[dataset]:
        raise InputError(f"{dataset} is split by {' or '.join(DATASETS[dataset])}, not {split_by!r}")
    folder = Path(root) / dataset
    refs_file = require_file(folder / f"refs({split_by}).p", f"{dataset} refs")
    try:
        with refs_file.open("rb") as handle:
            refs = pickle.load(handle)
    except Exception as error:  # a broken pickle can raise almost anything
        raise InputError(f"{refs_file} is not a refs pickle: {type(error).__name__}: {error}") from None
    if not isinstance(refs, list):
        raise InputError(f"{refs_file}: expected a list of refs, got {type(refs).__name__}")
    instances_file = folder / "instances.json"
    instances = validate(CocoFile, read_json_file(instances_file, f"{dataset} instances"), str(instances_file))
    annotations = {ann.id: ann for ann in instances.annotations}
    images = {image.id: image for image in instances.images}

    checker = RegionChecker(f"{dataset}({split_by}) {split}", repair=repair_regions)
    by_image: dict[int, list[Region]] = defaultdict(list)
    found_splits = set()
    for position, raw in enumerate(refs):
        where = f"{refs_file}: ref {position}"
        ref = validate(ReferringExpression, raw, where)
        found_splits.add(ref.split)
        if ref.split != split:
            continue
        annotation = annotations.get(ref.ann_id)
        if annotation is None:
            raise InputError(f"{where}: annotation {ref.ann_id} is not in {instances_file}")
        image = images.get(ref.image_id)
        if image is None:
            raise InputError(f"{where}: image {ref.image_id} is not in {instances_file}")
        captions = [sentence.sent for sentence in ref.sentences]
        region = Region(ref.ref_id, xywh_to_xyxy(*annotation.bbox), captions, annotation.segmentation)
        checked = checker.check(region, image.width, image.height, where)
        if checked is not None:
            by_image[ref.image_id].append(checked)
    checker.report()
    if split not in found_splits:
        raise InputError(f"{refs_file} has no refs in split {split!r}; its splits are {sorted(found_splits)}")
    records = [
        ImageRecord(image_id, Path(images_dir) / (images[image_id].file_name or f"{image_id}.jpg"),
                    images[image_id].width, images[image_id].height, by_image[image_id], TASK_CAPTION)
        for image_id in sorted(by_image)
    ]
    return keep_images_on_disk(records, skip_missing_images, f"{dataset}({split_by}) {split}")
