"""`sca anything`: segment and caption everything in an image."""

from __future__ import annotations

import sys
from pathlib import Path

from ..options import AnythingOptions
from .common import add_anything_filters, add_model_options, anything_filters, load_captioner, picture_path, show_regions


def add(commands) -> None:
    anything = commands.add_parser("anything", help="segment and caption everything in an image (SAM's grid of points)")
    anything.add_argument("image", type=Path, help="image file")
    defaults = AnythingOptions()
    anything.add_argument("--points-per-side", type=int, default=defaults.points_per_side,
                          help="an n x n grid of point prompts")
    anything.add_argument("--points-per-batch", type=int, default=defaults.points_per_batch,
                          help="prompts through SAM's decoder at a time")
    anything.add_argument("--nms-thresh", type=float, default=defaults.box_nms_thresh, help="box NMS IoU threshold")
    add_anything_filters(anything)
    anything.add_argument("--min-region-area", type=int, default=defaults.min_region_area,
                          help="islands and holes of fewer pixels are removed from each mask (0: off; default: two "
                          "of the model's low-res mask pixels at the image's size, at least 25)")
    anything.add_argument("--max-masks", type=int, help="keep at most this many masks, best predicted IoU first")
    anything.add_argument("--json", action="store_true", help="print JSON (captions, scores, boxes, RLE masks)")
    anything.add_argument("--out", type=picture_path, help="write a .png or .jpg with the masks and captions drawn")
    add_model_options(anything)
    anything.set_defaults(run=run)


def run(args) -> int:
    from ..data.sam_frame import load_image

    options = AnythingOptions(points_per_side=args.points_per_side, points_per_batch=args.points_per_batch,
                              box_nms_thresh=args.nms_thresh, max_masks=args.max_masks, **anything_filters(args),
                              min_region_area=args.min_region_area).check()  # before the model loads
    image = load_image(args.image)
    captioner = load_captioner(args)
    captioner.set_image(image)
    regions = captioner.anything(options)
    show_regions(args, image, regions)
    if not args.json:
        print(f"{len(regions)} regions", file=sys.stderr)
    return 0

