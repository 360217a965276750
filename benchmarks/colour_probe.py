"""Which of a model's image feature levels hold a shape's colour: a linear probe on held-out shapes images.

    python benchmarks/colour_probe.py                          # the shipped model, 150 classic images
    python benchmarks/colour_probe.py --model FOLDER --images 300 --world rich

Each shape's features are averaged inside its mask, level by level (SAM's one level; SAM 2's stride-4, stride-8 and
stride-16 levels), and beside them the mean RGB of its pixels. A ridge classifier per level (one-vs-rest, least
squares) is fitted on the first 70% of the shapes and scored on the rest: the share of shapes whose colour the level
gives linearly. What a mixer reads must hold colour for captions to name it; chance is one in the number of colours.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch.nn import functional as F

from sca.api import RegionCaptioner
from sca.assets import DEFAULT_MODEL
from sca.data.sources.shapes import COLOURS, ShapesWorld
from sca.masks import decode_mask
from sca.tables import markdown_table

TRAIN_SHARE = 0.7
RIDGE = 1.0


def pooled_features(captioner: RegionCaptioner, images: int, world: str) -> tuple[list[np.ndarray], np.ndarray, list]:
    """Per level (then RGB), `(shapes, channels)` features averaged inside each shape; the colour index of each."""
    model, names = captioner.model, list(COLOURS)
    shapes_world = ShapesWorld.split("val", world=world, max_shapes=3 if world == "classic" else 6)
    rows: list[list[np.ndarray]] = []
    labels, shapes = [], None
    for record in shapes_world.records(images):
        encoded = model.encode([record.image])
        levels = [encoded.embeddings] if torch.is_tensor(encoded.embeddings) else list(encoded.embeddings)
        shapes = [tuple(level.shape[-3:]) for level in levels]
        side = model.frame.image_size
        height, width = encoded.framed[0].input_size
        pixels = torch.from_numpy(np.asarray(record.image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
        for region in record.regions:
            mask = torch.from_numpy(decode_mask(region.mask, record.height, record.width).astype(np.float32))
            framed = F.pad(F.interpolate(mask[None, None], (height, width), mode="bilinear"),
                           (0, side - width, 0, side - height))
            row = []
            for level in levels:
                weight = F.interpolate(framed, level.shape[-2:], mode="area")[0, 0]
                row.append(((level[0] * weight).sum((-1, -2)) / weight.sum().clamp_min(1e-6)).float().numpy())
            row.append(((pixels * mask).sum((-1, -2)) / mask.sum()).numpy())
            rows.append(row)
            labels.append(names.index(region.captions[0].split()[-2]))
    return [np.stack(column) for column in zip(*rows)], np.array(labels), shapes


def probe_accuracy(features: np.ndarray, labels: np.ndarray, classes: int) -> float:
    """Held-out accuracy of a ridge one-vs-rest classifier fitted on the first `TRAIN_SHARE` of the shapes."""
    cut = int(TRAIN_SHARE * len(labels))
    mean, std = features[:cut].mean(0), features[:cut].std(0) + 1e-6
    inputs = np.hstack([(features - mean) / std, np.ones((len(features), 1))])
    targets = np.eye(classes)[labels]
    weights = np.linalg.solve(inputs[:cut].T @ inputs[:cut] + RIDGE * np.eye(inputs.shape[1]),
                              inputs[:cut].T @ targets[:cut])
    return float((np.argmax(inputs[cut:] @ weights, 1) == labels[cut:]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="a model folder, shipped name or hub id")
    parser.add_argument("--images", type=int, default=150, help="held-out images (the world's val split)")
    parser.add_argument("--world", default="classic", choices=("classic", "rich"))
    args = parser.parse_args()
    if args.images < 10:
        parser.error(f"--images must be at least 10 (the probe fits on 70% of the shapes), got {args.images}")
    captioner = RegionCaptioner.from_pretrained(args.model)
    with torch.no_grad():
        columns, labels, shapes = pooled_features(captioner, args.images, args.world)
    names = [f"level {i} ({c} × {h}×{w})" for i, (c, h, w) in enumerate(shapes)] + ["mean RGB inside the mask"]
    rows = [[name, f"{100 * probe_accuracy(column, labels, len(COLOURS)):.0f}%"] for name, column in zip(names, columns)]
    print(f"Colour read linearly from each feature level: {args.model}, {len(labels)} shapes of {args.images} "
          f"{args.world} images (chance {100 / len(COLOURS):.0f}%)\n")
    print(markdown_table(["features", "colour right (held out)"], rows))


if __name__ == "__main__":
    main()
