"""Model kinds: a name (what `model.kind`, `--kind` and `sca bench speed --models` take) → the builder of a
`RegionModel`.

A builder's parameters are its options, with their defaults, in one place: configs and command lines pass the
options they set (None means "not set"), and the registry refuses options a builder does not take. `dtype`,
`device`, `generation` (`GenerationOptions`) and `captions` (the training captions) are passed to the builders
that take them.

A family outside this project registers itself with an entry point in the group `sca.model_kinds`
(`x = "my_package.x:build_x"`); one in it adds a row here. A row is a `ModelKind` (the builder and what the front
doors need to know of the family) or a bare builder (a row with the defaults).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points

from pydantic import ValidationError, validate_call

from ..data.schemas import describe
from ..errors import InputError
from .region_model import RegionModel
from .sam_captioner import build_sam_captioner
from .sca_region import build_sca, build_sca_from_sam_and_lm, build_sca_sam2, build_tiny_sca


@dataclass(frozen=True)
class ModelKind:
    """A family's row: its builder, and what the doors need to know of it.

    trainable: `sca train` can train it (its builder makes a `ScaRegionModel`).
    implied_by: a builder option whose presence alone names this kind (`--captioner X` means SAM-Captioner).
    """

    build: Callable[..., RegionModel]
    trainable: bool = False
    implied_by: str | None = None


MODEL_KINDS: dict[str, ModelKind | Callable[..., RegionModel]] = {
    "sca": ModelKind(build_sca, trainable=True),
    "sca-from-sam-and-lm": ModelKind(build_sca_from_sam_and_lm, trainable=True),
    "sca-tiny": ModelKind(build_tiny_sca, trainable=True),
    "sca-sam2": ModelKind(build_sca_sam2, trainable=True),
    "sam-captioner": ModelKind(build_sam_captioner, implied_by="captioner"),
}
DEFAULT_KIND = "sca"
ENTRY_POINTS = "sca.model_kinds"
CONTEXT = ("dtype", "device", "generation", "captions")
"""What the caller knows rather than the config: passed to the builders that take it."""


def model_kinds() -> dict[str, ModelKind]:
    """This project's kinds and those other packages register (entry points of group `sca.model_kinds`), as rows."""
    kinds = {name: row if isinstance(row, ModelKind) else ModelKind(row) for name, row in MODEL_KINDS.items()}
    for entry in entry_points(group=ENTRY_POINTS):
        kinds.setdefault(entry.name, ModelKind(entry))
    return kinds


def kind_for(options: Mapping) -> str:
    """The kind a set of builder options names when no kind is given: the row an option implies, else the default."""
    for name, row in model_kinds().items():
        if row.implied_by is not None and options.get(row.implied_by) is not None:
            return name
    return DEFAULT_KIND


def build_region_model(kind: str, options: Mapping | None = None, **context) -> RegionModel:
    """The region model of a kind, from its options (None values are left to the builder's defaults)."""
    kinds = model_kinds()
    if kind not in kinds:
        raise InputError(f"unknown model kind {kind!r}: use one of {', '.join(sorted(kinds))}")
    builder = kinds[kind].build
    if not callable(builder) or hasattr(builder, "load"):
        builder = builder.load()
    accepted = inspect.signature(builder).parameters
    given = {key: value for key, value in (options or {}).items() if value is not None and key != "kind"}
    missing = [name for name, parameter in accepted.items()
               if parameter.default is inspect.Parameter.empty and name not in given and name not in context]
    if "captions" in missing:
        raise InputError(f"{kind} models are made from scratch for training (they need the training captions): "
                         "sca infer needs a trained model (model=pretrained model.path=...)")
    unknown = sorted(set(given) - set(accepted) - set(CONTEXT))
    if unknown:
        settable = [name for name in accepted if name not in CONTEXT]
        raise InputError(f"{kind} models take no option {unknown[0]!r}; they take {', '.join(settable) or 'none'}")
    if missing:
        raise InputError(f"{kind} models need {missing[0]!r} (e.g. model.{missing[0]}=...)")
    arguments = {**given, **{key: value for key, value in context.items() if key in accepted}}
    try:
        return validate_call(builder, config={"arbitrary_types_allowed": True})(**arguments)
    except ValidationError as error:
        raise InputError(f"{kind} model option {describe(error)}") from None
