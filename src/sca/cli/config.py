"""Hydra configs for the commands that take them (train, infer): composition, one-line errors, sweeps."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

CONFIG_DIR = Path(__file__).parent.parent / "conf"


def config_groups() -> str:
    """The Hydra config groups and their options, as `conf/` holds them (for --help)."""
    groups = sorted(folder for folder in CONFIG_DIR.iterdir() if folder.is_dir() and any(folder.glob("*.yaml")))
    return "; ".join(f"{group.name} ({', '.join(sorted(f.stem for f in group.glob('*.yaml')))})" for group in groups)


def compose_config(config_name: str, overrides: list[str]):
    """Hydra's composition (config groups, `key=value` overrides) with errors turned into one line."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
        with open_dict(cfg):
            choices = cfg.hydra.runtime.choices
            del cfg["hydra"]
            if "data" in cfg and not cfg.data.get("name"):
                cfg.data.name = choices.data  # names output files, e.g. infer-vg-densecap-test.json
            if cfg.get("infer") and cfg.infer.get("split"):
                cfg.data.eval_split = cfg.infer.split  # before resolving: the split names the annotation files
        OmegaConf.resolve(cfg)
        missing = sorted(OmegaConf.missing_keys(cfg))
    except (HydraException, OmegaConfBaseException) as error:
        raise InputError(hydra_message(error)) from error
    if missing:
        raise InputError(f"{missing[0]} must be set, e.g. sca {config_name} {missing[0]}=...")
    return cfg


def hydra_message(error: BaseException) -> str:
    """Hydra's error as one line, with its hint ("use +key=value") and the available options of a group."""
    lines = str(error).strip().splitlines()
    if "Config search path:" in lines:
        lines = lines[: lines.index("Config search path:")]
    parts: list[str] = []
    for line in lines:
        if line.startswith("\t") and parts:
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line.strip()
        elif line.strip():
            parts.append(line.strip())
    return "; ".join(parts)



def sweep_jobs(overrides: list[str]) -> list[tuple[str, list[str]]]:
    """Hydra's multirun expansion: `a=1,2 b=x,y` → every combination, each named by its swept values."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        swept = {o.key_or_group for o in parsed if o.is_sweep_override()}
        jobs = BasicSweeper.split_arguments(parsed, None)[0]
    except HydraException as error:
        raise InputError(hydra_message(error)) from error

    def value_name(value: str) -> str:
        """A folder by its own name, a hub id with its `/` made `_`."""
        return Path(value).name if Path(value).exists() else value.replace("/", "_")

    def name(job: list[str]) -> str:
        """`infer.num_beams=3,model.captioner=org/name` → `num_beams=3,captioner=org_name`."""
        pairs = [o.split("=", 1) for o in job]
        return ",".join(f"{key.lstrip('+~').rsplit('.', 1)[-1]}={value_name(value)}"
                        for key, value in pairs if key.lstrip("+~") in swept)

    return [(name(job), job) for job in jobs]

