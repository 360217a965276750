"""Rebuilding the shipped files: `python -m sca.assets.build sample` draws the sample image from the shapes world;
`python -m sca.assets.build model RUN/final [--name NAME]` installs a trained model as a shipped model (weights,
config, tokenizer): the default, or another of `SHIPPED_MODELS`."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from types import MappingProxyType

from ..data.sources.shapes import ShapesWorld
from . import SAMPLE_CLIP, SAMPLE_IMAGE, SHIPPED_MODELS

SAMPLE_SPLIT, SAMPLE_INDEX, SAMPLE_SIZE = "test", 12, 256
ANYTHING_FILTERS = MappingProxyType({
    "sca-shapes": {"pred_iou_thresh": 0.80, "stability_score_thresh": 0.85, "mask_nms_thresh": 0.5},
    "sca-sam2-shapes": {"pred_iou_thresh": 0.90, "stability_score_thresh": 0.95, "mask_nms_thresh": 0.3},
})
"""Each shipped model's anything filters, chosen on held-out rich images (a model's scores are calibrated its own way).
`sca-shapes` (`sca bench quality`, 100 test images): 96% of the shapes found on light, mid-grey and dark backgrounds
alike (at least 95% each) with 90% one-to-one precision, against SAM's 0.88 / 0.95 without mask NMS: 67% found (54% on
dark and mid-grey) at 93%. `sca-sam2-shapes` (50 images of the val split): 98.8% found at 92.4% precision, against
99.4% at 50.3% with the filters of `sca-shapes` and 99.4% at 82.7% with SAM's and mask NMS at 0.5."""
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


def install_model(trained: Path, name: str = "sca-shapes") -> None:
    destination = SHIPPED_MODELS[name]
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    for file_name in MODEL_FILES:
        if (trained / file_name).is_file():
            shutil.copyfile(trained / file_name, destination / file_name)  # not the trainer's private file modes
    # the shapes recipe trains SAM from scratch and never with mask prompts: the model refuses them (one line)
    config = json.loads((destination / "config.json").read_text())
    config["prompt_kinds"] = ["boxes", "points"]
    config["anything_filters"] = ANYTHING_FILTERS[name]
    (destination / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    print(f"installed {trained} as {destination} ({sum(f.stat().st_size for f in destination.iterdir()) / 1e6:.1f} MB)")


CLIP_VIDEO = 3
"""The world's video the sample clip is: three shapes in view on frame 0."""


def clip_world():
    """The world the sample clip comes from: a few shapes moving, turning, entering and leaving."""
    from ..data.sources.moving_shapes import MovingShapesWorld

    return MovingShapesWorld.split("test", frames=32, image_size=160, max_objects=3, speed=(1.5, 3.0))


def write_clip(path: Path = SAMPLE_CLIP) -> None:
    """The sample clip, and its objects' boxes on frame 0 (what `sca video` examples prompt)."""
    from ..geometry import mask_box
    from ..video.io import write_video

    frames = clip_world().video(CLIP_VIDEO)
    write_video(path, [frame.image for frame in frames], fps=8)
    first = frames[0]
    for object_id, mask in sorted(first.masks.items()):
        box = ",".join(f"{v:g}" for v in mask_box(mask))
        print(f"--box {box}   {first.captions[object_id]}")
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB, {len(frames)} frames)")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sca.assets.build", description=__doc__)
    commands = parser.add_subparsers(dest="what", required=True)
    commands.add_parser("sample", help="draw src/sca/assets/sample.png and print its regions")
    commands.add_parser("clip", help="draw src/sca/assets/sample.mp4 and print its objects' boxes on frame 0")
    model = commands.add_parser("model", help="install a trained model folder as a shipped model")
    model.add_argument("trained", type=Path)
    model.add_argument("--name", choices=list(SHIPPED_MODELS), default="sca-shapes",
                       help="which shipped model it becomes (default: sca-shapes, the default model)")
    args = parser.parse_args()
    if args.what == "sample":
        write_sample()
    elif args.what == "clip":
        write_clip()
    else:
        install_model(args.trained, args.name)


if __name__ == "__main__":
    main()
