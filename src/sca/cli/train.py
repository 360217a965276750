"""`sca train`: train SCA from a Hydra config."""

from __future__ import annotations

from .config import compose_config, config_groups


def add(commands) -> None:
    train = commands.add_parser(
        "train", help="train SCA (Hydra config: model=..., data=..., train=..., key=value)",
        description=f"Train SCA. Config groups: {config_groups()}.",
    )
    train.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=vg-densecap train.args.max_steps=1000")
    train.set_defaults(run=run)



def run(args) -> int:
    import logging

    from ..train.run import run_training

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = compose_config("train", args.overrides)
    run_training(cfg)
    return 0

