"""Rebuilding the shipped files: `python -m sca.assets.build sample` draws the sample image from the shapes world;
`python -m sca.assets.build model RUN/final` installs a trained model as the default (weights, config, tokenizer)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from ..data.sources.shapes import ShapesWorld
from . import DEFAULT_MODEL, SAMPLE_IMAGE

SAMPLE_SPLIT, SAMPLE_INDEX, SAMPLE_SIZE = "test", 12, 256
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "vocab.json", "merges.txt")


def sample_record():
    """The sample image's record: a held-out shapes image (the test split), drawn at 256 x 256."""
    return ShapesWorld.split(SAMPLE_SPLIT, image_size=SAMPLE_SIZE, min_shapes=3, max_shapes=3).record(SAMPLE_INDEX)


def write_sample(path: Path = SAMPLE_IMAGE) -> None:
    record = sample_record()
    record.image.save(path)
    for region in record.regions:
        print(f"--box {','.join(f'{v:g}' for v in region.box)}\t{region.captions[0]}")


def install_model(trained: Path, destination: Path = DEFAULT_MODEL) -> None:
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    for name in MODEL_FILES:
        if (trained / name).is_file():
            shutil.copyfile(trained / name, destination / name)  # not the trainer's private file modes
    # the shapes recipe trains SAM from scratch and never with mask prompts: the model refuses them (one line)
    config = json.loads((destination / "config.json").read_text())
    config["prompt_kinds"] = ["boxes", "points"]
    (destination / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    print(f"installed {trained} as {destination} ({sum(f.stat().st_size for f in destination.iterdir()) / 1e6:.1f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sca.assets.build", description=__doc__)
    commands = parser.add_subparsers(dest="what", required=True)
    commands.add_parser("sample", help="draw src/sca/assets/sample.png and print its regions")
    model = commands.add_parser("model", help="install a trained model folder as the shipped default")
    model.add_argument("trained", type=Path)
    args = parser.parse_args()
    if args.what == "sample":
        write_sample()
    else:
        install_model(args.trained)


if __name__ == "__main__":
    main()
