"""What every reader needs: files that exist, regions that fit their image, images that are on disk."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import InputError
from ..records import ImageRecord, Region
from ..schemas import Rle, not_a_file

log = logging.getLogger("sca.data")

EDGE_TOLERANCE = 2.0
"""Pixels a box may pass the image's edge (annotation rounding) before it counts as outside: clipped silently."""


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise not_a_file(path, what)
    return path


def find_file(candidates: Sequence[Path], what: str) -> Path:
    """The first of the candidate paths that exists, or an error that lists where it was looked for."""
    for path in candidates:
        if path.is_file():
            return path
    if not any(Path(path).parent.is_dir() for path in candidates):
        raise not_a_file(candidates[0], what)  # the folder itself is missing (data.root?): say so, not which files
    raise InputError(f"{what} not found: looked for {' and '.join(str(p) for p in candidates)}")


@dataclass
class RegionChecker:
    """Checks each region against its image: the box inside it (within `EDGE_TOLERANCE`), x2 > x1 and y2 > y1,
    a mask of the image's size, at least one caption with words.

    repair: real datasets have a few bad regions (Visual Genome: boxes past the image edge). With `repair`, boxes
        are clipped to the image and regions left with an empty box or no caption are dropped, and `report()` logs
        how many of each; without it, the first such region raises `InputError`.
    """

    source: str
    repair: bool = False
    clipped: int = 0
    dropped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def check(self, region: Region, width: int, height: int, where: str) -> Region | None:
        """The region with its box clipped to the image; None when `repair` drops it."""
        x1, y1, x2, y2 = region.box
        text = f"{where}: box [{x1:g}, {y1:g}, {x2:g}, {y2:g}]"
        outside = x1 < -EDGE_TOLERANCE or y1 < -EDGE_TOLERANCE or x2 > width + EDGE_TOLERANCE or y2 > height + EDGE_TOLERANCE
        if outside and not self.repair:
            raise InputError(f"{text} lies outside the {width}x{height} image (x1,y1,x2,y2 in pixels; set "
                             "data.repair_regions=true to clip such boxes)")
        box = (min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height))
        if not (box[2] > box[0] and box[3] > box[1]):
            return self._drop(f"{text} is empty: boxes need x2 > x1 and y2 > y1", "empty box")
        if not any(caption.strip() for caption in region.captions):
            return self._drop(f"{where}: the region has no caption with words", "no caption")
        if isinstance(region.mask, Rle) and tuple(region.mask.size) != (height, width):
            raise InputError(f"{where}: mask size {list(region.mask.size)} is not the image's [{height}, {width}] "
                             "(COCO RLE sizes are [height, width])")
        if isinstance(region.mask, list) and not all(_inside(polygon, width, height) for polygon in region.mask):
            raise InputError(f"{where}: a mask polygon lies outside the {width}x{height} image")
        if outside and self.repair:
            self.clipped += 1
        if isinstance(region.mask, Rle):
            region.mask = region.mask.model_dump()
        region.box = box
        return region

    def _drop(self, message: str, reason: str) -> None:
        if not self.repair:
            raise InputError(f"{message} (set data.repair_regions=true to drop such regions)")
        self.dropped += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        return None

    def report(self) -> None:
        if self.clipped:
            log.warning("%s: clipped %d boxes that passed the image's edge", self.source, self.clipped)
        if self.dropped:
            why = ", ".join(f"{count} {reason}" for reason, count in sorted(self.reasons.items()))
            log.warning("%s: dropped %d regions (%s)", self.source, self.dropped, why)


def _inside(polygon: Sequence[float], width: int, height: int) -> bool:
    xs, ys = polygon[0::2], polygon[1::2]
    return (min(xs) >= -EDGE_TOLERANCE and min(ys) >= -EDGE_TOLERANCE and max(xs) <= width + EDGE_TOLERANCE
            and max(ys) <= height + EDGE_TOLERANCE and all(math.isfinite(v) for v in polygon))


def keep_images_on_disk(records: Iterable[ImageRecord], skip_missing: bool, source: str) -> list[ImageRecord]:
    """Check that every image file exists: raise on the first missing one, or skip them all and say how many."""
    kept, missing = [], []
    for record in records:
        if record.path is not None and not record.path.is_file():
            if not skip_missing:
                raise InputError(
                    f"image {record.path} (image_id {record.image_id}) named in {source} is missing; "
                    "set data.skip_missing_images=true to skip such images"
                )
            missing.append(record)
            continue
        kept.append(record)
    if missing:
        log.warning("skipped %d of %d images of %s whose files are missing", len(missing), len(missing) + len(kept), source)
    return kept
