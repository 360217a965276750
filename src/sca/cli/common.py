"""What every command shares: the one-line argument parser, prompt and path types, the model options, loading a
region model, and showing region results."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..assets import DEFAULT_MODEL_ENV
from ..errors import InputError, require_whole
from ..options import PRECISIONS, GenerationOptions


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the problem and where to look), not a usage dump."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def coordinates(count: int, what: str):
    def parse(text: str) -> list[float]:
        try:
            values = [float(v) for v in text.replace(" ", "").split(",")]
        except ValueError:
            values = []
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"{what} must be {count} comma-separated numbers, got {text!r}")
        return values

    return parse


PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")


def picture_path(text: str) -> Path:
    """`--out`: a .png or .jpg file in a folder that exists and can be written."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder: name the picture file, e.g. {path / 'annotated.png'}")
    if path.suffix.lower() not in PICTURE_SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text!r} must end in .png or .jpg (the picture's format)")
    folder = path.parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"the folder of {text!r} does not exist: create {folder} first")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: no permission")
    return path


def attach_negative_values(argv: list[str]) -> list[str]:
    """`--box -10,-10,50,50` → `--box=-10,-10,50,50`: argparse takes a value that starts with '-' for an option."""
    joined, tokens = [], iter(argv)
    for token in tokens:
        if token in ("--box", "--point", "--negative"):
            value = next(tokens, None)
            if value is not None and value.startswith("-") and value[1:2] in set("0123456789."):
                joined.append(f"{token}={value}")
                continue
            joined.append(token)
            if value is not None:
                joined.append(value)
            continue
        joined.append(token)
    return joined


class AppendPrompt(argparse.Action):
    """Collects --box, --point, --negative, --mask and --region into one list, in command-line order, tagged with
    their kind."""

    def __call__(self, parser, namespace, values, option_string=None):
        prompts = getattr(namespace, self.dest) or []
        prompts.append((option_string.lstrip("-"), values))
        setattr(namespace, self.dest, prompts)


MODEL_OPTIONS = {"model": "path", "tokenizer": "tokenizer", "sam": "sam", "captioner": "captioner", "prompt": "prompt",
                 "candidates": "candidates", "detail": "detail"}
"""Shorthands: command-line options → the model builder's options of the same meaning (`models.registry`). Any other
builder option is `--model-option KEY=VALUE`; the builder's own signature validates every one."""


def model_option(text: str) -> tuple[str, str]:
    """`--model-option KEY=VALUE`."""
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"--model-option takes KEY=VALUE (a builder option of the model kind), got "
                                         f"{text!r}")
    return key.strip(), value


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", help="model kind: sca (default), sam-captioner (default with --captioner), or any "
                        "other registered kind (sca.models.registry)")
    parser.add_argument("--model-option", action="append", type=model_option, default=[], metavar="KEY=VALUE",
                        help="any option of the kind's builder (repeatable), e.g. --model-option batch_size=8; an "
                        "option the kind does not take is refused with the list of those it takes")
    parser.add_argument("--model", help=f"SCA model: a folder or a Hugging Face hub id, ORG/NAME[@REVISION] (default: "
                        f"${DEFAULT_MODEL_ENV} or the shipped model)")
    parser.add_argument("--tokenizer", help="tokenizer folder or hub id, if the model has none (default: the model's, "
                        "else its LM's)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N, mps or auto")
    parser.add_argument("--dtype", default="float32", choices=PRECISIONS, help="model precision")
    parser.add_argument("--chunk-size", type=int, default=GenerationOptions.chunk_size,
                        help="regions decoded together (bounds memory)")
    parser.add_argument("--max-new-tokens", type=int, default=GenerationOptions.max_new_tokens,
                        help="longest caption in tokens")
    parser.add_argument("--beams", type=int, default=GenerationOptions.num_beams,
                        help="beam width (1 = greedy; the paper used 3)")
    parser.add_argument("--captioner", help="run SAM-Captioner with this captioner instead of SCA (folder or hub id): a "
                        "crop captioner (BLIP, BLIP-2, GIT, InstructBLIP), Florence-2, or a chat VLM (focal prompt)")
    parser.add_argument("--sam", help="the segmenter for --captioner (folder or hub id): SAM, SAM-HQ, SAM 2, EdgeTAM, "
                        "SAM 3's tracker (default facebook/sam-vit-huge)")
    parser.add_argument("--prompt", help="text prompt for --captioner (InstructBLIP needs one; replaces a chat VLM's)")
    parser.add_argument("--candidates", help="--captioner: a caption per mask (all, the default) or for the best mask "
                        "only (best)")
    parser.add_argument("--detail", help="a chat VLM's focal prompt: brief (the default) or detailed")


def check_model_options(args) -> GenerationOptions:
    """The model options that can be checked before anything loads."""
    generation = GenerationOptions(args.max_new_tokens, args.beams, args.chunk_size)
    for name, option in (("max_new_tokens", "--max-new-tokens"), ("num_beams", "--beams"), ("chunk_size", "--chunk-size")):
        require_whole(getattr(generation, name), option)
    return generation


def model_spec(args) -> tuple[str, dict]:
    """The model kind (given, or the one the options imply) and its builder options."""
    from ..models.registry import kind_for

    options = {builder: getattr(args, option) for option, builder in MODEL_OPTIONS.items()}
    for key, value in args.model_option:
        if options.get(key) is not None:
            raise InputError(f"--model-option {key}=... repeats an option already given")
        options[key] = value
    return args.kind or kind_for(options), options


def load_captioner(args):
    """The region model the command line names, as a `RegionCaptioner`."""
    from ..api import RegionCaptioner
    from ..models.cpu_products import slow_bfloat16
    from ..models.loading import DTYPES, resolve_device
    from ..models.registry import build_region_model

    generation = check_model_options(args)
    kind, options = model_spec(args)
    device = resolve_device(args.device)
    if slow_bfloat16(DTYPES[args.dtype], device):
        print("sca: warning: this CPU has no bf16 units (neither AVX-512 BF16 nor AMX), so bfloat16 runs far slower "
              "than float32 here (~100x for matrix products): use --dtype float32", file=sys.stderr)
    model = build_region_model(kind, options, dtype=DTYPES[args.dtype], device=device, generation=generation)
    return RegionCaptioner(model, chunk_size=args.chunk_size)



def add_anything_filters(parser: argparse.ArgumentParser, when: str = "") -> None:
    """Anything mode's filters, each defaulting to the model's own (`AnythingOptions.for_model`); `when`: a prefix of
    their help ("--anything: ")."""
    parser.add_argument("--pred-iou-thresh", type=float, help=f"{when}keep masks with predicted IoU above (default: "
                        "the model's; SAM's 0.88 for a model that declares none)")
    parser.add_argument("--stability-thresh", type=float, help=f"{when}keep masks this stable or more (default: the "
                        "model's; SAM's 0.95)")
    parser.add_argument("--mask-nms-thresh", type=float, help=f"{when}then mask NMS at this IoU (default: the model's; "
                        "off for a model that declares none)")


def anything_filters(args: argparse.Namespace) -> dict:
    """The `AnythingOptions` fields of `add_anything_filters`' flags."""
    return {"pred_iou_thresh": args.pred_iou_thresh, "stability_score_thresh": args.stability_thresh,
            "mask_nms_thresh": args.mask_nms_thresh}


def add_tracker_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracker", default="reprompt", help="how objects are followed through a video: reprompt "
                        "(re-prompt the model's segmenter, the default) or a SAM 2 / 2.1, EdgeTAM or SAM 3 tracker video "
                        "model (folder or hub id); with SCA on SAM 2 and the SAM 2 it was built on, keyframes are "
                        "captioned from the tracker's state")


def add_prompt_options(parser: argparse.ArgumentParser, what: str = "region") -> None:
    """The prompts a command takes, as the API takes them: each --box, --point, --mask and --region is one {what}."""
    parser.add_argument("--box", dest="prompts", action=AppendPrompt, type=coordinates(4, "--box"),
                        metavar="X1,Y1,X2,Y2", help=f"a box in pixels: one {what} (repeatable)")
    parser.add_argument("--point", dest="prompts", action=AppendPrompt, type=coordinates(2, "--point"),
                        metavar="X,Y", help=f"a foreground point in pixels: one {what} (repeatable)")
    parser.add_argument("--negative", dest="prompts", action=AppendPrompt, type=coordinates(2, "--negative"),
                        metavar="X,Y", help=f"a background point (\"not this\") added to the {what} before it")
    parser.add_argument("--mask", dest="prompts", action=AppendPrompt, metavar="FILE",
                        help=f"a mask prompt: a PNG (non-zero pixels) or COCO RLE JSON of the image's size: one {what}")
    parser.add_argument("--region", dest="prompts", action=AppendPrompt, type=region_spec,
                        metavar="SPEC", help=f"one {what} from several prompts, e.g. "
                        "\"box=10,20,200,180;point=120,90;negative=30,30;mask=m.png\"")


def region_spec(text: str) -> dict:
    """`--region "box=X1,Y1,X2,Y2;point=X,Y;negative=X,Y;mask=FILE"`: several prompt kinds for one region."""
    spec: dict = {}
    for part in (p.strip() for p in text.split(";") if p.strip()):
        key, equals, value = part.partition("=")
        key = key.strip()
        if not equals or key not in ("box", "point", "negative", "mask"):
            raise argparse.ArgumentTypeError(f"--region takes box=X1,Y1,X2,Y2, point=X,Y, negative=X,Y and mask=FILE "
                                             f"joined by ';', got {part!r}")
        if key == "mask":
            spec["mask"] = value.strip()
        elif key == "box":
            if "box" in spec:
                raise argparse.ArgumentTypeError("--region takes one box")
            spec["box"] = coordinates(4, "box")(value)
        else:
            spec.setdefault("points", []).append((coordinates(2, key)(value), int(key == "point")))
    if not spec:
        raise argparse.ArgumentTypeError("--region is empty: give box=..., point=... or mask=...")
    return spec


def read_mask_file(path: str | Path, size: tuple[int, int]):
    """A mask prompt from a file: a PNG (any non-zero pixel is the mask) or COCO RLE JSON ({"size", "counts"})."""
    import json

    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from ..data.schemas import Rle, validate
    from ..masks import decode_rle

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} is a folder, not a mask file" if path.is_dir() else f"mask file not found: {path}")
    if path.suffix.lower() == ".json":
        try:
            rle = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise InputError(f"{path} is not JSON ({error}): a mask file is a PNG or COCO RLE JSON") from None
        validate(Rle, rle, str(path))
        if list(rle["size"]) != list(size):
            raise InputError(f"the mask in {path} is of size {rle['size']}; the image is {list(size)}")
        return decode_rle(rle)
    try:
        with Image.open(path) as opened:
            mask = np.asarray(opened.convert("L")) > 0
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise InputError(f"cannot read {path} as a mask ({type(error).__name__}): a mask file is a PNG or COCO RLE "
                         "JSON") from None
    if mask.shape != tuple(size):
        raise InputError(f"the mask in {path} is {mask.shape[1]}x{mask.shape[0]}; the image is {size[1]}x{size[0]}")
    return mask


def region_prompts(prompts: list[tuple[str, object]], size: tuple[int, int]):
    """The command line's prompts, in order → one region each: `--box`, `--point`, `--mask FILE`, `--region SPEC`;
    `--negative X,Y` adds a background point to the region before it."""
    from ..models.prompts import RegionPrompt

    regions: list[dict] = []
    for kind, value in prompts:
        if kind == "negative":
            if not regions:
                raise InputError("--negative X,Y adds a background point to the region before it: give that region "
                                 "(--point, --box or --region) first")
            regions[-1].setdefault("points", []).append((value, 0))
        elif kind == "region":
            regions.append(dict(value))
        else:
            regions.append({"box": value} if kind == "box" else {"mask": value} if kind == "mask"
                           else {"points": [(value, 1)]})
    made = []
    for region in regions:
        points = region.get("points")
        made.append(RegionPrompt(
            box=region.get("box"), points=[p for p, _ in points] if points else None,
            point_labels=[label for _, label in points] if points else None,
            mask=read_mask_file(region["mask"], size) if "mask" in region else None))
    return made


def cell(text: str) -> str:
    """A caption as one tab-separated field: tabs, line breaks and other unprintable characters escaped (an
    untrained model emits anything)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def show_regions(args, image, regions) -> None:
    """`--out`: the picture with masks and captions; `--json`: every field; else one line per region."""
    from ..files import to_json
    from ..visualize import draw_regions, save_atomically

    if args.out:
        labels = [f"{r.caption} ({r.best_iou:.2f})" for r in regions]
        picture = draw_regions(image, (r.best_mask for r in regions), labels, [r.box for r in regions])
        save_atomically(picture, args.out)
    if args.json:
        print(to_json({"image": str(args.image), "regions": [r.to_dict() for r in regions]}, indent=2))
    else:
        for i, region in enumerate(regions, 1):
            flag = "\tempty mask" if region.empty else ""
            print(f"{i}\t{cell(region.caption)}\tiou={region.best_iou:.3f}\tbox={','.join(f'{v:g}' for v in region.box)}"
                  f"{flag}")
    empty = [str(i) for i, region in enumerate(regions, 1) if region.empty]
    if empty:
        print(f"sca {args.command}: warning: region {', '.join(empty)}: the segmenter found nothing at the prompt (an "
              "empty mask), so the caption describes no segmented region", file=sys.stderr)



def video_path(text: str) -> Path:
    """`sca video --out`: a video file in a folder that exists and can be written."""
    from ..video.io import codec_for

    path = Path(text)
    try:
        codec_for(path)  # a suffix this FFmpeg build cannot write is refused before any work
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"the folder of {text!r} does not exist: create {path.parent} first")
    if not os.access(path.parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: no permission")
    return path


def json_path(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() != ".json":
        raise argparse.ArgumentTypeError(f"{text!r} must end in .json")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"the folder of {text!r} does not exist: create {path.parent} first")
    return path

