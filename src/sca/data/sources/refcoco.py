"""RefCOCO, RefCOCO+ and RefCOCOg (and RefCLEF) in the `refer` layout.

Under `root`: `{dataset}/refs({split_by}).p` (a pickled list of refs: ref_id, ann_id, image_id, split,
sentences [{sent, ...}]) and `{dataset}/instances.json` (COCO images, annotations, categories); images
under `images_dir` (COCO `train2014/`). Every sentence of a referring expression is a reference.
"""

from __future__ import annotations

import pickle
from collections import defaultdict
from pathlib import Path

from ..records import TASK_CAPTION, ImageRecord, Region, xywh_to_xyxy
from ...errors import InputError
from .common import expect, keep_images_on_disk, read_json, require_file

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
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as error:
        raise InputError(f"{refs_file} is not a refs pickle: {error}") from error
    expect(isinstance(refs, list), refs_file, "a list of refs")
    instances_file = folder / "instances.json"
    instances = read_json(instances_file, f"{dataset} instances")
    expect(isinstance(instances, dict) and {"images", "annotations"} <= instances.keys(), instances_file,
           "COCO instances with images and annotations")
    annotations = {ann["id"]: ann for ann in instances["annotations"]}
    images = {image["id"]: image for image in instances["images"]}

    by_image: dict[int, list[Region]] = defaultdict(list)
    found_splits = set()
    for ref in refs:
        expect({"ref_id", "ann_id", "image_id", "split", "sentences"} <= ref.keys(), refs_file,
               "refs need ref_id, ann_id, image_id, split, sentences")
        found_splits.add(ref["split"])
        if ref["split"] != split:
            continue
        annotation = annotations.get(ref["ann_id"])
        expect(annotation is not None, instances_file, f"no annotation {ref['ann_id']} for ref {ref['ref_id']}")
        captions = [sentence["sent"] for sentence in ref["sentences"]]
        by_image[ref["image_id"]].append(
            Region(ref["ref_id"], xywh_to_xyxy(*annotation["bbox"]), captions, annotation.get("segmentation"))
        )
    if not by_image:
        raise InputError(f"{refs_file} has no refs in split {split!r}; its splits are {sorted(found_splits)}")
    records = []
    for image_id in sorted(by_image):
        image = images.get(image_id)
        expect(image is not None, instances_file, f"no image {image_id}")
        records.append(
            ImageRecord(image_id, Path(images_dir) / image["file_name"], image["width"], image["height"],
                        by_image[image_id], TASK_CAPTION)
        )
    return keep_images_on_disk(records, skip_missing_images, f"{dataset}({split_by}) {split}")
