"""What every command shares: the one-line argument parser, prompt and path types, the model options, loading a
region model, and showing region results."""

from __future__ import annotations

import argparse
import os
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
        if token in ("--box", "--point"):
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
    """Collects --box and --point into one list, in command-line order, tagged with their kind."""

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
    from ..models.loading import DTYPES, resolve_device
    from ..models.registry import build_region_model

    generation = check_model_options(args)
    kind, options = model_spec(args)
    model = build_region_model(kind, options, dtype=DTYPES[args.dtype], device=resolve_device(args.device),
                               generation=generation)
    return RegionCaptioner(model, chunk_size=args.chunk_size)



def region_prompts(prompts: list[tuple[str, list[float]]]):
    """`--box`/`--point` in command-line order → one region each."""
    from ..models.prompts import RegionPrompt

    return [RegionPrompt(box=value) if kind == "box" else RegionPrompt(points=[value]) for kind, value in prompts]


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
            print(f"{i}\t{cell(region.caption)}\tiou={region.best_iou:.3f}\tbox={','.join(f'{v:g}' for v in region.box)}")



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

