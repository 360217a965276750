"""Reading infer.json files, checking them, and choosing one candidate caption per region."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from ..errors import InputError

REGION_FIELDS = ("references", "candidates")


def read_infer_file(path: str | Path) -> list[dict]:
    """The entries of an infer.json, checked: a list of objects with non-empty `references` and `candidates`
    lists of strings (region files) or `predictions` and `references` (dense-captioning files)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(entries, list):
        raise InputError(f"{path} holds a JSON {type(entries).__name__}, not a list of entries (one per region)")
    if not entries:
        raise InputError(f"{path} holds no entries")
    dense = is_dense(entries)
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InputError(f"{path}: entry {position} is a {type(entry).__name__}, not an object")
        where = f"{path}: entry {position} (_id {entry.get('_id', '?')})"
        if dense:
            _check_dense_entry(entry, where)
            continue
        for field in REGION_FIELDS:
            values = entry.get(field)
            if values is None:
                raise InputError(f"{where} has no {field!r}")
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise InputError(f"{where}: {field!r} must be a list of strings")
            if not values:
                raise InputError(f"{where} has empty {field!r}: every region needs at least one")
        scores = entry.get("logits", {}).get("iou_scores") if isinstance(entry.get("logits"), dict) else None
        if scores is not None and (not isinstance(scores, list) or not all(isinstance(s, (int, float)) for s in scores)):
            raise InputError(f"{where}: logits.iou_scores must be a list of numbers")
    return entries


def is_dense(entries: list) -> bool:
    """Dense-captioning files (detect and describe) have one entry per image with `predictions`."""
    return isinstance(entries[0], dict) and "predictions" in entries[0]


def _check_dense_entry(entry: dict, where: str) -> None:
    predictions, references = entry.get("predictions"), entry.get("references")
    if not isinstance(predictions, list) or not isinstance(references, list):
        raise InputError(f"{where} needs 'predictions' and 'references' lists (a dense-captioning file)")
    for kind, items, fields in (("prediction", predictions, ("box", "caption", "score")),
                                ("reference", references, ("box", "captions"))):
        for i, item in enumerate(items):
            missing = [f for f in fields if not isinstance(item, dict) or f not in item]
            if missing:
                raise InputError(f"{where}: {kind} {i} has no {missing[0]!r}")
            if len(item["box"]) != 4:
                raise InputError(f"{where}: {kind} {i} box must be [x1, y1, x2, y2]")


def select_candidate(entry: dict) -> str | None:
    """The caption to score: with one candidate per SAM mask (SAM-Captioner), the one of the highest predicted
    IoU; with a single candidate (SCA), that one. None when several candidates have no matching IoU scores."""
    candidates = entry["candidates"]
    if len(candidates) == 1:
        return candidates[0]
    scores = (entry.get("logits") or {}).get("iou_scores")
    if scores is None or len(scores) != len(candidates):
        return None
    return candidates[max(range(len(scores)), key=scores.__getitem__)]


def select_candidates(entries: list[dict]) -> list[str]:
    """`select_candidate` for every entry; entries it cannot decide score their first candidate, with a warning."""
    chosen = [select_candidate(entry) for entry in entries]
    undecided = [i for i, c in enumerate(chosen) if c is None]
    if undecided:
        warnings.warn(
            f"{len(undecided)} entries (first: {undecided[0]}) have several candidates but no IoU score for each; "
            "their first candidate is scored",
            stacklevel=2,
        )
    return [entries[i]["candidates"][0] if c is None else c for i, c in enumerate(chosen)]


def without_logits(entries: list[dict]) -> list[dict]:
    """A copy of the entries without `logits` (what the seed notes stripped with a regex)."""
    return [{k: v for k, v in entry.items() if k != "logits"} for entry in entries]
