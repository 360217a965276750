"""Writing output files so that a reader never sees a half-written one, and JSON that is JSON (no NaN)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import InputError


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> None:
    """`write(temporary)` next to the destination, then rename it onto `path`."""
    temporary = temporary_beside(path)
    try:
        write(temporary)
        publish(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def temporary_beside(path: str | Path) -> Path:
    """A new hidden file in the destination's folder (the same file system, so `publish` is one rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    os.close(handle)
    return Path(temporary)


def publish(temporary: Path, path: str | Path) -> None:
    """Give a finished temporary file the usual permissions (mkstemp makes it private) and rename it onto `path`."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    os.replace(temporary, path)


def write_text_atomically(path: str | Path, text: str) -> None:
    write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def to_json(value, *, what: str = "the output", indent: int | None = None, ensure_ascii: bool = True) -> str:
    """Strict JSON text: a NaN or an infinity (which `json.dumps` would write as the non-JSON `NaN`) is an error
    that names where it is, raised before anything is written."""
    try:
        return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, allow_nan=False)
    except ValueError:
        where = _first_non_finite(value) or "somewhere"
        raise InputError(f"{what} would hold a NaN or infinite number at {where}, which JSON cannot hold "
                         "(a model run in too low a precision?); nothing was written") from None


def write_json_atomically(path: str | Path, value, *, indent: int | None = None, ensure_ascii: bool = True) -> None:
    write_text_atomically(path, to_json(value, what=str(path), indent=indent, ensure_ascii=ensure_ascii))


def _first_non_finite(value, where: str = "") -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return where or "the top"
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _first_non_finite(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None
