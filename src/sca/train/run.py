"""`sca train`: datasets, model and Trainer from a resolved Hydra config."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import TrainingArguments

from ..data.collate import RegionCollator
from ..data.dataset import MixedDataset, RegionDataset
from ..data.sam_frame import SamFrame
from ..data.sources import load_records
from ..data.transforms import LargeScaleJitter, RegionTransform
from ..errors import InputError
from ..models.registry import build_region_model, model_kinds
from .trainer import ScaTrainer

log = logging.getLogger("sca.train")

def training_arguments(cfg: DictConfig) -> TrainingArguments:
    options = OmegaConf.to_container(cfg.train.args, resolve=True)
    options.update(output_dir=str(cfg.output_dir), remove_unused_columns=False, label_names=["labels"],
                   prediction_loss_only=True)
    if not torch.cuda.is_available():
        options.setdefault("use_cpu", True)
    _check_argument_types(options)
    try:
        return TrainingArguments(**options)
    except (TypeError, ValueError) as error:
        raise InputError(f"train.args: {' '.join(str(error).split())}") from error


def _check_argument_types(options: dict) -> None:
    """TrainingArguments takes `max_steps="abc"` and fails later, deep in the Trainer: check the fields whose type
    is a plain bool, int or float here."""
    fields = {f.name: f.type for f in dataclasses.fields(TrainingArguments)}
    for name, value in options.items():
        if name not in fields:
            raise InputError(f"train.args has no option {name!r} (the options are TrainingArguments' fields)")
        kind = fields[name]
        if kind is bool and not isinstance(value, bool):
            raise InputError(f"train.args.{name} must be true or false, got {value!r}")
        if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))
                                     or not math.isfinite(value)):
            raise InputError(f"train.args.{name} must be a number, got {value!r}")
        if kind is int and not isinstance(value, int):
            raise InputError(f"train.args.{name} must be a whole number, got {value!r}")


def build_datasets(cfg: DictConfig, model, tokenizer, train_records):
    frame = SamFrame.from_config(model.config)
    jitter = None
    if cfg.train.lsj.enabled:
        jitter = LargeScaleJitter(frame.image_size, cfg.train.lsj.min_scale, cfg.train.lsj.max_scale)
    common = dict(frame=frame, tokenizer=tokenizer, max_caption_length=cfg.train.max_caption_length)
    with_masks = bool(cfg.train.loss_weights.mask)
    background_negatives = cfg.train.get("background_negatives", 0.0)
    train_transform = RegionTransform(train=True, num_masks_per_sample=cfg.train.num_masks_per_sample,
                                      jitter=jitter, with_masks=with_masks,
                                      background_negatives=float(background_negatives), **common)
    parts = [RegionDataset(records, train_transform) for records in train_records]
    probabilities = [spec.get("probability", 1.0) for spec in cfg.data.train]
    train = parts[0] if len(parts) == 1 else MixedDataset(parts, probabilities, seed=cfg.train.args.seed)
    evaluation = caption_eval = None
    if cfg.data.get("eval") and cfg.train.max_eval_samples:
        records = load_records(OmegaConf.to_container(cfg.data.eval, resolve=True))[: cfg.train.max_eval_samples]
        # Evaluation loss uses the training recipe for regions and captions, without jitter.
        evaluation = RegionDataset(records, RegionTransform(train=True, num_masks_per_sample=cfg.train.num_masks_per_sample,
                                                            jitter=None, with_masks=with_masks, **common))
        if cfg.train.eval_generation.enabled:
            caption_eval = OmegaConf.to_container(cfg.train.eval_generation, resolve=True)
            caption_eval["dataset"] = RegionDataset(records, RegionTransform(train=False, **common))
    return train, evaluation, caption_eval


MODULE_LISTS = ("trainable_modules", "zeroed_modules")
"""The recipe's lists of module paths (`ScaCaptioning.modules_at`)."""


def check_recipe(train: DictConfig) -> None:
    """The recipe's own options, before any data is read or model built: a typo costs no wait."""
    correction_rounds = train.get("correction_rounds", 0)
    if isinstance(correction_rounds, bool) or not isinstance(correction_rounds, int) or correction_rounds < 0:
        raise InputError(f"train.correction_rounds must be a whole number >= 0, got {correction_rounds!r}")
    if correction_rounds and not train.loss_weights.mask:
        raise InputError("train.correction_rounds trains masks: set train.loss_weights.mask above 0 too")
    background_negatives = train.get("background_negatives", 0.0)
    if isinstance(background_negatives, bool) or not isinstance(background_negatives, int | float) \
            or not 0 <= background_negatives <= 1:
        raise InputError(f"train.background_negatives must be a probability in [0, 1], got {background_negatives!r}")
    recipe = OmegaConf.to_container(train, resolve=True)
    for key in MODULE_LISTS:
        paths = recipe.get(key, [])
        if not isinstance(paths, list) or not all(isinstance(path, str) for path in paths):
            raise InputError(f"train.{key} must be a list of module paths, e.g. [language_model], got {paths!r}")


def run_training(cfg: DictConfig) -> Path:
    """Train as the config says; returns the folder of the final model."""
    args = training_arguments(cfg)
    check_recipe(cfg.train)
    correction_rounds = cfg.train.get("correction_rounds", 0)
    train_specs = OmegaConf.to_container(cfg.data.train, resolve=True)
    if not train_specs:
        raise InputError("data.train lists no training set")
    train_records = [load_records(spec) for spec in train_specs]
    captions = [c for records in train_records for r in records for g in r.regions for c in g.captions]
    spec = OmegaConf.to_container(cfg.model, resolve=True)
    kind = spec.pop("kind", None)
    trainable = [name for name, row in model_kinds().items() if row.trainable]
    if kind not in trainable:
        raise InputError(f"sca train trains SCA models (model.kind {', '.join(trainable)}), not {kind!r}")
    sca = build_region_model(kind, spec, captions=captions)
    model, tokenizer = sca.model, sca.tokenizer
    for key, apply in zip(MODULE_LISTS, (model.set_trainable, model.zero_and_freeze)):
        try:
            apply(list(cfg.train.get(key, [])))
        except ValueError as error:
            raise InputError(f"train.{key}: {error}") from error
    train_dataset, eval_dataset, caption_eval = build_datasets(cfg, model, tokenizer, train_records)
    if eval_dataset is None and args.eval_strategy != "no":
        args.eval_strategy = "no"

    output_dir = Path(cfg.output_dir)
    if args.process_index == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    _log_setup(args, model, train_dataset)

    trainer = ScaTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=RegionCollator(pad_token_id=tokenizer.pad_token_id,
                                     point_prompt_probability=cfg.train.point_prompt_probability),
        processing_class=tokenizer,
        custom_param_lrs=OmegaConf.to_container(cfg.train.custom_param_lrs, resolve=True),
        caption_eval=caption_eval,
        loss_weights=OmegaConf.to_container(cfg.train.loss_weights, resolve=True),
        correction_rounds=correction_rounds,
    )
    trainer.train(resume_from_checkpoint=_resume_point(cfg.train.resume, output_dir))
    final = output_dir / "final"
    trainer.save_model(str(final))
    if args.process_index == 0:
        trainer.state.save_to_json(str(output_dir / "trainer_state.json"))  # the whole run's log history
        log.info("saved the trained model to %s", final)
    return final


def _resume_point(resume, output_dir: Path):
    if resume in (None, False, "false"):
        return None
    if resume in (True, "true", "latest"):
        checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        return str(checkpoints[-1]) if checkpoints else None
    if not Path(resume).is_dir():
        raise InputError(f"train.resume: checkpoint folder not found: {resume}")
    return str(resume)


def _log_setup(args: TrainingArguments, model, train_dataset) -> None:
    if args.process_index != 0:
        return
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
    effective = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info(
        "world size %d (device %s, %s), precision %s, effective batch %d images "
        "(%d per device x %d processes x %d accumulation), %d training images, %.2fM trainable parameters",
        args.world_size, args.device, args.parallel_mode.value, precision, effective,
        args.per_device_train_batch_size, args.world_size, args.gradient_accumulation_steps,
        len(train_dataset), trainable / 1e6,
    )
