"""`sca infer`: caption every region of a dataset split into infer.json."""

from __future__ import annotations

import sys
from pathlib import Path

from .config import compose_config, config_groups, sweep_jobs


def add(commands) -> None:
    infer = commands.add_parser(
        "infer", help="caption every region of a dataset split into infer.json (Hydra config, like train)",
        description="Run a model over a dataset split and write {output_dir}/infer/infer-{dataset}-{split}.json. "
        "Keys: model.path (default: the shipped model), data=..., infer.split, infer.max_images, infer.batch_size, "
        "infer.chunk_size, infer.max_new_tokens, infer.num_beams, infer.dtype, infer.device, infer.overwrite. "
        f"Config groups: {config_groups()}. An interrupted run resumes; under torchrun each process takes a share.",
    )
    infer.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model.path=runs/vg/final data=vg-densecap")
    infer.add_argument("-m", "--multirun", action="store_true",
                       help="sweep comma-separated values (Hydra multirun), e.g. -m model.captioner=A,B: "
                       "each combination writes into output_dir/<its values>/")
    infer.set_defaults(run=run)



def run(args) -> int:
    import logging

    from ..infer.run import run_dataset_inference

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    jobs = sweep_jobs(args.overrides) if args.multirun else [("", args.overrides)]
    configs = [(name, compose_config("infer", job)) for name, job in jobs]  # every job's errors before any runs
    paths = []
    for name, cfg in configs:
        if name:
            cfg.output_dir = str(Path(cfg.output_dir) / name)
        paths.append(run_dataset_inference(cfg))
        print(paths[-1])
    if len(paths) > 1:
        print(f"compare them: sca eval {' '.join(str(p) for p in paths)} --out {Path(configs[0][1].output_dir).parent}",
              file=sys.stderr)
    return 0

