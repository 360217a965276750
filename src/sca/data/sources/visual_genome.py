"""Visual Genome dense captioning, split by DenseCap's `densecap_splits.json`.

Layout under `root` (the published files, unchanged):
    region_descriptions.json   [{"id": image_id, "regions": [{region_id, image_id, phrase, x, y, width, height}]}]
    image_data.json            [{"image_id", "url", "width", "height", ...}]
    densecap_splits.json       {"train": [image ids], "val": [...], "test": [...]}
    VG_100K/ and VG_100K_2/    the images, `{image_id}.jpg`, the folder named by the image URL
"""

from __future__ import annotations

from pathlib import Path

from ..records import TASK_CAPTION, ImageRecord, Region, xywh_to_xyxy
from ...errors import InputError
from .common import expect, keep_images_on_disk, read_json

SPLITS = ("train", "val", "test")


def load_visual_genome(
    root: str | Path,
    split: str,
    annotations_dir: str | Path | None = None,
    skip_missing_images: bool = False,
) -> list[ImageRecord]:
    root = Path(root)
    annotations = Path(annotations_dir) if annotations_dir else root
    if split not in SPLITS:
        raise InputError(f"Visual Genome split must be one of {SPLITS}, got {split!r}")
    splits_file = annotations / "densecap_splits.json"
    splits = read_json(splits_file, "DenseCap splits")
    expect(isinstance(splits, dict) and split in splits, splits_file, f"a dict with a {split!r} list of image ids")
    wanted = set(splits[split])

    images_file = annotations / "image_data.json"
    image_data = read_json(images_file, "VG image metadata")
    expect(isinstance(image_data, list), images_file, "a list of images")
    images = {}
    for entry in image_data:
        expect({"image_id", "width", "height"} <= entry.keys(), images_file, "images need image_id, width, height")
        if entry["image_id"] in wanted:
            images[entry["image_id"]] = entry

    regions_file = annotations / "region_descriptions.json"
    descriptions = read_json(regions_file, "VG region descriptions")
    expect(isinstance(descriptions, list), regions_file, "a list of {id, regions}")
    records = []
    for entry in descriptions:
        expect("regions" in entry, regions_file, "each entry needs 'regions'")
        image_id = entry.get("id", entry.get("image_id"))
        if image_id not in wanted:
            continue
        meta = images.get(image_id)
        expect(meta is not None, images_file, f"no metadata for image {image_id}")
        regions = []
        for region in entry["regions"]:
            expect({"region_id", "phrase", "x", "y", "width", "height"} <= region.keys(), regions_file,
                   "regions need region_id, phrase, x, y, width, height")
            box = xywh_to_xyxy(region["x"], region["y"], region["width"], region["height"])
            regions.append(Region(region["region_id"], box, [region["phrase"]]))
        records.append(
            ImageRecord(image_id, _image_path(root, meta), meta["width"], meta["height"], regions, TASK_CAPTION)
        )
    return keep_images_on_disk(records, skip_missing_images, f"Visual Genome {split}")


def _image_path(root: Path, meta: dict) -> Path:
    """`.../VG_100K_2/123.jpg` in the URL → `root/VG_100K_2/123.jpg`."""
    url = meta.get("url") or ""
    parts = url.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2].startswith("VG_100K"):
        return root / parts[-2] / parts[-1]
    for folder in ("VG_100K", "VG_100K_2"):
        candidate = root / folder / f"{meta['image_id']}.jpg"
        if candidate.is_file():
            return candidate
    return root / "VG_100K" / f"{meta['image_id']}.jpg"
