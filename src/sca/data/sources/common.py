"""What every reader needs: files that exist, JSON that parses, images that are on disk."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from ...errors import InputError
from ..records import ImageRecord

log = logging.getLogger(__name__)


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    return path


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise InputError(f"{what} not found: {path}")
    return path


def read_json(path: Path, what: str):
    require_file(path, what)
    try:
        with path.open() as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise InputError(f"{path} is not valid JSON ({what}): {error}") from error


def expect(condition: bool, path: Path, message: str) -> None:
    """Raise a format error naming the file, e.g. when a field the format requires is absent."""
    if not condition:
        raise InputError(f"{path} is not in the expected format: {message}")


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
