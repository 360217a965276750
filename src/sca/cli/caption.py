"""`sca caption`: segment and caption prompted regions of an image."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import InputError
from .common import add_model_options, add_prompt_options, load_captioner, picture_path, region_prompts, show_regions


def add(commands) -> None:
    caption = commands.add_parser("caption", help="segment and caption prompted regions of an image")
    caption.add_argument("image", type=Path, help="image file")
    add_prompt_options(caption)
    caption.add_argument("--json", action="store_true", help="print JSON (captions, IoU, boxes, RLE masks)")
    caption.add_argument("--out", type=picture_path, help="write a .png or .jpg with the masks and captions drawn")
    add_model_options(caption)
    caption.set_defaults(run=run)


def run(args) -> int:
    from ..data.sam_frame import load_image

    if not args.prompts:
        raise InputError("no prompt given: add --box x1,y1,x2,y2, --point x,y, --mask FILE or --region SPEC (one per "
                         "region)")
    from ..models.prompts import check_regions

    image = load_image(args.image)
    prompts = region_prompts(args.prompts, (image.height, image.width))
    check_regions((image.height, image.width), prompts)  # before the model loads
    captioner = load_captioner(args)
    captioner.set_image(image)
    regions = captioner.caption_regions(prompts)
    show_regions(args, image, regions)
    if args.out and not args.json:
        print(f"wrote {args.out}", file=sys.stderr)
    return 0

