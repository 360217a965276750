"""Visual Genome dense captioning, split by DenseCap's `densecap_splits.json`.

Under `root` (the published files, unchanged), the annotations beside the image folders or in `annotations/`
(the original project's layout):
    region_descriptions.json   [{"id": image_id, "regions": [{region_id, image_id, phrase, x, y, width, height}]}]
    image_data.json            [{"image_id", "url", "width", "height", ...}]
    densecap_splits.json       {"train": [image ids], "val": [...], "test": [...]}
    VG_100K/ and VG_100K_2/    the images, `{image_id}.jpg`, the folder named by the image URL
Schemas: `schemas.VgImageRegions`, `schemas.VgImage`.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import InputError
from ..records import TASK_CAPTION, ImageRecord, Region, xywh_to_xyxy
from ..schemas import Id, VgImage, VgImageRegions, read_json_file, validate
from .common import RegionChecker, find_file, keep_images_on_disk

SPLITS = ("train", "val", "test")
ANNOTATION_FILES = ("densecap_splits.json", "image_data.json", "region_descriptions.json")


def load_visual_genome(
    root: str | Path,
    split: str,
    annotations_dir: str | Path | None = None,
    skip_missing_images: bool = False,
    repair_regions: bool = True,
) -> list[ImageRecord]:
    root = Path(root)
    if split not in SPLITS:
        raise InputError(f"Visual Genome split must be one of {', '.join(SPLITS)}, got {split!r}")
    folder = _annotations_folder(root, annotations_dir)

    splits_file = folder / "densecap_splits.json"
    splits = validate(dict[str, list[Id]], read_json_file(splits_file, "DenseCap splits"), str(splits_file))
    if split not in splits:
        raise InputError(f"{splits_file} has no {split!r} split; it has {', '.join(sorted(splits))}")
    wanted = set(splits[split])

    images_file = folder / "image_data.json"
    image_data = read_json_file(images_file, "VG image metadata")
    if not isinstance(image_data, list):
        raise InputError(f"{images_file}: expected a list of images, got a JSON {type(image_data).__name__}")
    images = {}
    for position, entry in enumerate(image_data):
        if _image_id(entry, ("image_id",), f"{images_file}: entry {position}") in wanted:
            image = validate(VgImage, entry, f"{images_file}: entry {position}")
            images[image.image_id] = image

    regions_file = folder / "region_descriptions.json"
    descriptions = read_json_file(regions_file, "VG region descriptions")
    if not isinstance(descriptions, list):
        raise InputError(f"{regions_file}: expected a list of {{id, regions}}, got a JSON {type(descriptions).__name__}")
    checker = RegionChecker(f"Visual Genome {split}", repair=repair_regions)
    records = []
    for position, raw in enumerate(descriptions):
        where = f"{regions_file}: entry {position}"
        if _image_id(raw, ("id", "image_id"), where) not in wanted:
            continue
        entry = validate(VgImageRegions, raw, where)
        image_id = entry.id if entry.id is not None else entry.image_id
        meta = images.get(image_id)
        if meta is None:
            raise InputError(f"{where}: image {image_id} has no entry in {images_file}")
        regions = []
        for index, region in enumerate(entry.regions):
            box = xywh_to_xyxy(region.x, region.y, region.width, region.height)
            checked = checker.check(Region(region.region_id, box, [region.phrase]), meta.width, meta.height,
                                    f"{where} regions.{index} (region {region.region_id})")
            if checked is not None:
                regions.append(checked)
        records.append(ImageRecord(image_id, _image_path(root, meta), meta.width, meta.height, regions, TASK_CAPTION))
    checker.report()
    return keep_images_on_disk(records, skip_missing_images, f"Visual Genome {split}")


def _image_id(entry, keys: tuple[str, ...], where: str) -> int:
    """The image id of an entry (the first of `keys` it has), checked before the entry is selected by split."""
    if not isinstance(entry, dict):
        raise InputError(f"{where}: expected an object, got {type(entry).__name__}")
    value = next((entry[key] for key in keys if key in entry), None)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{where}: {' or '.join(keys)} must be a whole number, got {value!r}")
    return value


def _annotations_folder(root: Path, annotations_dir: str | Path | None) -> Path:
    """`annotations_dir` if given, else `root` or `root/annotations`, whichever holds the files."""
    if annotations_dir:
        return Path(annotations_dir)
    for folder in (root, root / "annotations"):
        if (folder / ANNOTATION_FILES[0]).is_file():
            return folder
    find_file([root / ANNOTATION_FILES[0], root / "annotations" / ANNOTATION_FILES[0]], "DenseCap splits")
    raise AssertionError("unreachable")


def _image_path(root: Path, meta: VgImage) -> Path:
    """`.../VG_100K_2/123.jpg` in the URL → `root/VG_100K_2/123.jpg`."""
    parts = (meta.url or "").rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2].startswith("VG_100K"):
        return root / parts[-2] / parts[-1]
    for folder in ("VG_100K", "VG_100K_2"):
        candidate = root / folder / f"{meta.image_id}.jpg"
        if candidate.is_file():
            return candidate
    return root / "VG_100K" / f"{meta.image_id}.jpg"
