"""`sca infer`: predictor, dataset and output file from a resolved Hydra config."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..data.sources import load_records
from ..errors import InputError, require_whole
from ..models.loading import DTYPES, resolve_device
from ..models.registry import build_region_model
from ..options import AnythingOptions, GenerationOptions
from .predictor import AnythingPredictor, Predictor, RegionPredictor
from .runner import infer_file_name, run_inference

log = logging.getLogger("sca.infer")


def build_predictor(model_cfg: DictConfig, options: DictConfig) -> tuple[Predictor, dict]:
    """The predictor the config asks for, and the settings a resumed run must match."""
    if options.dtype not in DTYPES:
        raise InputError(f"infer.dtype must be one of {', '.join(DTYPES)}, got {options.dtype!r}")
    require_whole(options.batch_size, "infer.batch_size")
    require_whole(options.num_workers, "infer.num_workers", minimum=0)
    if options.mode not in ("regions", "anything"):
        raise InputError(f"infer.mode must be regions or anything, got {options.mode!r}")
    generation = GenerationOptions(**_set(options, ("max_new_tokens", "num_beams", "chunk_size"))).check("infer.")
    spec = OmegaConf.to_container(model_cfg, resolve=True)
    kind = spec.pop("kind", None) or "sca"
    model = build_region_model(kind, spec, dtype=DTYPES[options.dtype], device=resolve_device(options.device),
                               generation=generation)
    if options.mode == "anything":
        anything = AnythingOptions.from_mapping(_set(options.anything), "infer.anything")
        predictor = AnythingPredictor(model, anything, generation.chunk_size)
    else:
        predictor = RegionPredictor(model, generation.chunk_size)
    named = {key: _model_name(value) for key, value in spec.items() if value is not None}
    return predictor, {"kind": kind, **named, **predictor.settings()}


def _set(node: DictConfig, keys: tuple[str, ...] | None = None) -> dict:
    """The options a config sets (null leaves an option to its one default, in `sca.options`)."""
    values = OmegaConf.to_container(node, resolve=True)
    return {key: value for key, value in values.items() if value is not None and (keys is None or key in keys)}


def _model_name(value):
    """How settings name a model: a folder by its absolute path, anything else as given."""
    return str(Path(value).resolve()) if isinstance(value, str) and Path(value).exists() else value


def run_dataset_inference(cfg: DictConfig) -> Path:
    """Caption every region of the configured split; returns the infer.json path."""
    options = cfg.infer
    if not cfg.data.get("eval"):
        raise InputError(f"data={cfg.data.name} has no eval split to run on")
    spec = OmegaConf.to_container(cfg.data.eval, resolve=True)
    records = load_records(spec)
    if options.max_images:
        records = records[: options.max_images]
    if not records:
        raise InputError(f"the {cfg.data.name} {spec.get('split') or 'eval'} split has no images")
    predictor, settings = build_predictor(cfg.model, options)
    name = infer_file_name(cfg.data.name + ("-anything" if options.mode == "anything" else ""), spec.get("split") or "eval")
    output_file = Path(cfg.output_dir) / "infer" / name
    log.info("%d images, %d regions -> %s", len(records), sum(len(r.regions) for r in records), output_file)
    return run_inference(predictor, records, output_file, settings=settings, batch_size=options.batch_size,
                         num_workers=options.num_workers, overwrite=options.overwrite)
