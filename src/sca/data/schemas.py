"""The schemas of every file format the project reads, as strict pydantic models.

Each reader validates what it parsed against one of these; a document that does not fit raises `InputError`
naming the file, the line or entry, the field and what was expected. Types are strict (a box given as the string
"1234" is refused, not read as four digits), numbers finite, ids whole numbers that fit in 64 bits, and every
caption has text. The models double as the documentation of the formats (README, "Data formats").

What depends on more than one field (a box inside its image, a mask of its image's size) is checked by the
readers with `RegionChecker` (`regions.py`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from ..errors import InputError
from .records import TASK_TYPES

Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A finite JSON number (an integer is a number; a string, a bool, NaN or infinity is not)."""
Count = Annotated[int, Field(strict=True, ge=0, lt=2**63)]
Id = Annotated[int, Field(strict=True, ge=-(2**63), lt=2**63)]
Side = Annotated[int, Field(strict=True, ge=1, lt=2**31)]
Text = Annotated[str, Field(strict=True)]
Caption = Annotated[str, Field(strict=True, pattern=r"\S")]
"""A caption: a string with at least one character that is not white space."""
XYXY = Annotated[list[Number], Field(min_length=4, max_length=4)]
"""A box `[x1, y1, x2, y2]` in pixels."""
XYWH = Annotated[list[Number], Field(min_length=4, max_length=4)]
"""A COCO box `[x, y, width, height]` in pixels."""


class Schema(BaseModel):
    """Strict types; fields a format has beyond ours are ignored (the published files carry many)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class Rle(Schema):
    """A COCO run-length encoded mask: `size` is `[height, width]`; `counts` compressed (str) or not (list)."""

    size: Annotated[list[Side], Field(min_length=2, max_length=2)]
    counts: Text | list[Count]


Polygon = Annotated[list[Number], Field(min_length=6)]
"""COCO polygon `[x1, y1, x2, y2, ...]`: at least three points."""
Mask = Rle | Annotated[list[Polygon], Field(min_length=1)]


class JsonlRegion(Schema):
    region_id: Id | None = None
    box: XYXY
    captions: Annotated[list[Caption], Field(min_length=1)] | Caption
    mask: Mask | None = None

    @field_validator("captions")
    @classmethod
    def _as_list(cls, value):
        return [value] if isinstance(value, str) else value


class JsonlImage(Schema):
    """One line of the project's JSONL format (README, "Your own data")."""

    image: Annotated[str, Field(strict=True, min_length=1)]
    image_id: Id | None = None
    task_type: Literal[TASK_TYPES] = "caption"  # type: ignore[valid-type]
    width: Side | None = None
    height: Side | None = None
    regions: list[JsonlRegion]


class CocoImage(Schema):
    id: Id
    width: Side
    height: Side
    file_name: Text | None = None
    coco_url: Text | None = None


class CocoCategory(Schema):
    id: Id
    name: Caption


class CocoAnnotation(Schema):
    id: Id
    image_id: Id
    bbox: XYWH
    category_id: Id | None = None
    caption: Caption | None = None  # GRiT's Visual Genome files: one caption per annotation
    iscrowd: Count = 0
    segmentation: Mask | Rle | None = None


class CocoFile(Schema):
    """COCO-style annotations (COCO instances, LVIS, Objects365, V3Det, GRiT's Visual Genome)."""

    images: list[CocoImage]
    annotations: list[CocoAnnotation]
    categories: list[CocoCategory] = []


class VgRegion(Schema):
    region_id: Id
    phrase: Text
    x: Number
    y: Number
    width: Number
    height: Number


class VgImageRegions(Schema):
    """An entry of Visual Genome's `region_descriptions.json` (the image id is `id`, or `image_id` in v1.0)."""

    id: Id | None = None
    image_id: Id | None = None
    regions: list[VgRegion]


class VgImage(Schema):
    """An entry of Visual Genome's `image_data.json`."""

    image_id: Id
    width: Side
    height: Side
    url: Text | None = None


class ReferringSentence(Schema):
    sent: Text


class ReferringExpression(Schema):
    """A ref of the `refer` pickles (`refs(unc).p`, ...)."""

    ref_id: Id
    ann_id: Id
    image_id: Id
    split: Text
    sentences: list[ReferringSentence]


class RegionEntry(Schema):
    """A region's entry of infer.json (README, "Dataset inference")."""

    id: Id | None = Field(default=None, alias="_id")
    references: Annotated[list[Text], Field(min_length=1)]
    candidates: Annotated[list[Text], Field(min_length=1)]
    logits: dict[str, list[Number]] | None = None

    @field_validator("references")
    @classmethod
    def _some_text(cls, value: list[str]) -> list[str]:
        if not any(text.strip() for text in value):
            raise ValueError("every reference is empty: a region needs at least one reference caption with words")
        return value


class DensePrediction(Schema):
    box: XYXY
    caption: Text
    score: Number


class DenseReference(Schema):
    box: XYXY
    captions: Annotated[list[Caption], Field(min_length=1)]


class DenseEntry(Schema):
    """An image's entry of a dense-captioning infer.json (what anything mode writes)."""

    image_id: Id | None = None
    predictions: list[DensePrediction]
    references: list[DenseReference]


M = TypeVar("M", bound=BaseModel)
_ADAPTERS: dict[Any, TypeAdapter] = {}


def validate(schema: type[M] | Any, value: Any, where: str) -> M:
    """`value` as `schema`, or `InputError("{where}: {field}: {what was expected} (got ...)")`."""
    adapter = _ADAPTERS.get(schema)
    if adapter is None:
        adapter = _ADAPTERS.setdefault(schema, TypeAdapter(schema))
    try:
        return adapter.validate_python(value, by_alias=True)
    except ValidationError as error:
        raise InputError(f"{where}: {describe(error)}") from None
    except RecursionError:
        raise InputError(f"{where}: nested too deeply") from None


def describe(error: ValidationError) -> str:
    """The first problem of a validation error, in one line: the field's path, what was wrong, the value."""
    first = error.errors(include_url=False)[0]
    path = ".".join(str(part) for part in first["loc"] if not _is_union_tag(part))
    if first["type"] == "missing":
        return f"{path}: a required field is missing"
    value = repr(first.get("input"))
    value = value if len(value) <= 60 else value[:57] + "..."
    field = f"{path}: " if path else ""
    return f"{field}{first['msg'][:1].lower()}{first['msg'][1:]} (got {value})"


def _is_union_tag(part) -> bool:
    # pydantic names the member of a union it tried (`list[...]`, `function-after[...]`) in the path
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "float"})


def not_a_file(path: Path, what: str) -> InputError:
    """Why `path` is not a readable file, said as it is: a folder where a file was expected, a missing folder on the
    way to it, or a missing file."""
    path = Path(path)
    if path.is_dir():
        return InputError(f"{path} is a folder, not a file ({what}): name the file itself")
    missing = next((parent for parent in reversed(path.parents) if not parent.exists()), None)
    if missing is not None:
        return InputError(f"no such folder: {missing} (looking for {what} at {path})")
    return InputError(f"{what} not found: {path}")


def read_json_file(path: Path, what: str) -> Any:
    """A JSON document, with every way it can fail (missing, not UTF-8, not JSON, too deep) as `InputError`."""
    if not path.is_file():
        raise not_a_file(path, what)
    try:
        return parse_json(path.read_bytes())
    except ValueError as error:
        raise InputError(f"{path} is not valid JSON ({what}): {error}") from None


def parse_json(data: bytes | str) -> Any:
    """`json.loads`, with NaN and infinities refused and every failure a `ValueError` (not UTF-8, too deep,
    an integer of thousands of digits)."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, parse_constant=_refuse_constant)
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 text (byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{error.msg} at line {error.lineno} column {error.colno}") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def read_json_lines(path: Path, what: str) -> Iterator[tuple[int, Any]]:
    """`(line number, parsed value)` for each non-blank line of a JSON-lines file."""
    if not path.is_file():
        raise not_a_file(path, what)
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield number, parse_json(line)
            except ValueError as error:
                raise InputError(f"{path}:{number} is not valid JSON: {error}") from None


def each_valid(schema: type[M], values: list, where: Callable[[int, Any], str]) -> Iterator[tuple[int, M]]:
    """Validate the items of a list one by one, naming the item (`where(position, value)`) in errors."""
    for position, value in enumerate(values):
        yield position, validate(schema, value, where(position, value))
