"""`sca infer`: predictor, dataset and output file from a resolved Hydra config."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..api import RegionCaptioner
from ..assets import default_model_path
from ..automatic import AnythingOptions
from ..data.sources import load_records
from ..errors import InputError, require_whole
from ..models.loading import DTYPES, load_sca_model, load_tokenizer, resolve_device
from ..models.sam_captioner import SamCaptioner
from .predictor import AnythingPredictor, SamCaptionerPredictor, ScaPredictor
from .runner import infer_file_name, run_inference

log = logging.getLogger("sca.infer")

def build_predictor(model_cfg: DictConfig, options: DictConfig):
    if options.dtype not in DTYPES:
        raise InputError(f"infer.dtype must be one of {', '.join(DTYPES)}, got {options.dtype!r}")
    for name in ("batch_size", "chunk_size", "max_new_tokens", "num_beams"):
        require_whole(options[name], f"infer.{name}")
    require_whole(options.num_workers, "infer.num_workers", minimum=0)
    device, dtype = resolve_device(options.device), DTYPES[options.dtype]
    if model_cfg.init == "sam_captioner":
        model = SamCaptioner.from_pretrained(
                model_cfg.sam, model_cfg.captioner, dtype=dtype, device=device, chunk_size=model_cfg.chunk_size,
                prompt=model_cfg.prompt, chain_of_thought=model_cfg.chain_of_thought,
                max_new_tokens=options.max_new_tokens, num_beams=options.num_beams, batch_size=model_cfg.batch_size,
            )
        predictor = SamCaptionerPredictor(model)
        return predictor, {"sam": model_cfg.sam, "captioner_path": model_cfg.captioner, **predictor.settings()}
    if model_cfg.init != "pretrained":
        raise InputError(f"sca infer needs a trained model (model=pretrained model.path=...), not model.init={model_cfg.init}")
    path = model_cfg.get("path") or default_model_path()
    model = load_sca_model(path, dtype=dtype, device=device)
    tokenizer = load_tokenizer(model_cfg.get("tokenizer") or path, model.config)
    if options.mode == "anything":
        captioner = RegionCaptioner(model, tokenizer, chunk_size=options.chunk_size,
                                    max_new_tokens=options.max_new_tokens, num_beams=options.num_beams)
        settings = OmegaConf.to_container(options.anything, resolve=True)
        unknown = sorted(set(settings) - set(AnythingOptions.__dataclass_fields__))
        if unknown:
            raise InputError(f"infer.anything has no option {unknown[0]!r}; it has "
                             f"{', '.join(AnythingOptions.__dataclass_fields__)}")
        anything = AnythingOptions(**settings)
        anything.check()
        predictor = AnythingPredictor(captioner, anything)
        return predictor, {"model_path": _model_name(path), **predictor.settings()}
    if options.mode != "regions":
        raise InputError(f"infer.mode must be regions or anything, got {options.mode!r}")
    predictor = ScaPredictor(model, tokenizer, options.chunk_size, options.max_new_tokens, options.num_beams)
    return predictor, {"model_path": _model_name(path), **predictor.settings()}


def _model_name(path) -> str:
    """How settings name a model: a folder by its absolute path, a hub id as given."""
    return str(Path(path).resolve()) if Path(path).exists() else str(path)


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
        raise InputError(f"the {cfg.data.name} {spec.get('split')} split has no images")
    predictor, settings = build_predictor(cfg.model, options)
    name = infer_file_name(cfg.data.name + ("-anything" if options.mode == "anything" else ""), spec.get("split") or "eval")
    output_file = Path(cfg.output_dir) / "infer" / name
    log.info("%d images, %d regions -> %s", len(records), sum(len(r.regions) for r in records), output_file)
    return run_inference(predictor, records, output_file, settings=settings, batch_size=options.batch_size,
                         num_workers=options.num_workers, overwrite=options.overwrite)
