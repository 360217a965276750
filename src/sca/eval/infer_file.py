"""Reading infer.json files, checking them, and choosing one candidate caption per region."""

from __future__ import annotations

import warnings
from pathlib import Path

from ..candidates import best_candidate
from ..data.schemas import DenseEntry, RegionEntry, read_json_file, validate
from ..errors import InputError


def read_infer_file(path: str | Path) -> list[dict]:
    """The entries of an infer.json, checked against `schemas.RegionEntry` (one entry per region: non-empty lists
    of `references` and `candidates`, finite `logits.iou_scores`) or `schemas.DenseEntry` (dense-captioning files:
    one entry per image with `predictions` and `references`)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    entries = read_json_file(path, "infer.json")
    if not isinstance(entries, list):
        raise InputError(f"{path} holds a JSON {type(entries).__name__}, not a list of entries (one per region)")
    if not entries:
        raise InputError(f"{path} holds no entries")
    dense = is_dense(entries)
    schema = DenseEntry if dense else RegionEntry
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InputError(f"{path}: entry {position} is a {type(entry).__name__}, not an object")
        where = f"{path}: entry {position} (_id {entry.get('_id', '?')})"
        if dense != ("predictions" in entry):
            raise InputError(f"{where}: the file mixes region entries and dense-captioning entries")
        validate(schema, entry, where)
    return entries


def is_dense(entries: list) -> bool:
    """Dense-captioning files (detect and describe) have one entry per image with `predictions`."""
    return isinstance(entries[0], dict) and "predictions" in entries[0]


def select_candidate(entry: dict) -> str | None:
    """The caption to score: with one candidate per SAM mask (SAM-Captioner), the one of the highest predicted
    IoU; with a single candidate (SCA), that one. None when several candidates have no matching IoU scores."""
    return best_candidate(entry["candidates"], (entry.get("logits") or {}).get("iou_scores"))


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
