"""The `sca` command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .assets import DEFAULT_MODEL_ENV
from .errors import InputError, one_line, require_whole
from .options import PRECISIONS, AnythingOptions, GenerationOptions, VideoOptions


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the problem and where to look), not a usage dump."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _coordinates(count: int, what: str):
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


def _picture_path(text: str) -> Path:
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


def _attach_negative_values(argv: list[str]) -> list[str]:
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


class _AppendPrompt(argparse.Action):
    """Collects --box and --point into one list, in command-line order, tagged with their kind."""

    def __call__(self, parser, namespace, values, option_string=None):
        prompts = getattr(namespace, self.dest) or []
        prompts.append((option_string.lstrip("-"), values))
        setattr(namespace, self.dest, prompts)


MODEL_OPTIONS = {"model": "path", "tokenizer": "tokenizer", "sam": "sam", "captioner": "captioner", "prompt": "prompt",
                 "candidates": "candidates", "detail": "detail"}
"""Command-line options → the model builder's options of the same meaning (`models.registry`)."""


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", help="model kind: sca (default), sam-captioner (default with --captioner), or any "
                        "other registered kind (sca.models.registry)")
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
    parser.add_argument("--candidates", choices=("all", "best"), help="--captioner: a caption per mask (all, the "
                        "default) or for the best mask only")
    parser.add_argument("--detail", choices=("brief", "detailed"), help="a chat VLM's focal prompt (default brief)")


def _load_captioner(args):
    from .api import RegionCaptioner
    from .models.loading import DTYPES, resolve_device
    from .models.registry import build_region_model

    generation = GenerationOptions(args.max_new_tokens, args.beams, args.chunk_size)
    for name, option in (("max_new_tokens", "--max-new-tokens"), ("num_beams", "--beams"), ("chunk_size", "--chunk-size")):
        require_whole(getattr(generation, name), option)
    kind = args.kind or ("sam-captioner" if args.captioner else "sca")
    options = {builder: getattr(args, option) for option, builder in MODEL_OPTIONS.items()}
    model = build_region_model(kind, options, dtype=DTYPES[args.dtype], device=resolve_device(args.device),
                               generation=generation)
    return RegionCaptioner(model, chunk_size=args.chunk_size)


def cmd_caption(args) -> int:
    from .data.sam_frame import load_image

    if not args.prompts:
        raise InputError("no prompt given: add --box x1,y1,x2,y2 or --point x,y (one per region)")
    from .models.prompts import check_regions

    image = load_image(args.image)
    prompts = _region_prompts(args.prompts)
    check_regions((image.height, image.width), prompts)  # before the model loads
    captioner = _load_captioner(args)
    captioner.set_image(image)
    regions = captioner.caption_regions(prompts)
    _show_regions(args, image, regions)
    if args.out and not args.json:
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _region_prompts(prompts: list[tuple[str, list[float]]]):
    """`--box`/`--point` in command-line order → one region each."""
    from .models.prompts import RegionPrompt

    return [RegionPrompt(box=value) if kind == "box" else RegionPrompt(points=[value]) for kind, value in prompts]


def _cell(text: str) -> str:
    """A caption as one tab-separated field: tabs, line breaks and other unprintable characters escaped (an
    untrained model emits anything)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _show_regions(args, image, regions) -> None:
    """`--out`: the picture with masks and captions; `--json`: every field; else one line per region."""
    from .files import to_json
    from .visualize import draw_regions, save_atomically

    if args.out:
        labels = [f"{r.caption} ({r.best_iou:.2f})" for r in regions]
        picture = draw_regions(image, (r.best_mask for r in regions), labels, [r.box for r in regions])
        save_atomically(picture, args.out)
    if args.json:
        print(to_json({"image": str(args.image), "regions": [r.to_dict() for r in regions]}, indent=2))
    else:
        for i, region in enumerate(regions, 1):
            print(f"{i}\t{_cell(region.caption)}\tiou={region.best_iou:.3f}\tbox={','.join(f'{v:g}' for v in region.box)}")


def cmd_anything(args) -> int:
    from .data.sam_frame import load_image

    image = load_image(args.image)
    captioner = _load_captioner(args)
    captioner.set_image(image)
    options = AnythingOptions(points_per_side=args.points_per_side, points_per_batch=args.points_per_batch,
                              pred_iou_thresh=args.pred_iou_thresh, stability_score_thresh=args.stability_thresh,
                              box_nms_thresh=args.nms_thresh, max_masks=args.max_masks,
                              min_region_area=args.min_region_area).check()
    regions = captioner.anything(options)
    _show_regions(args, image, regions)
    if not args.json:
        print(f"{len(regions)} regions", file=sys.stderr)
    return 0


def _video_path(text: str) -> Path:
    """`sca video --out`: a video file in a folder that exists and can be written."""
    from .video.io import VIDEO_SUFFIXES

    path = Path(text)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text!r} must end in one of {', '.join(VIDEO_SUFFIXES)} (the video's format)")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"the folder of {text!r} does not exist: create {path.parent} first")
    if not os.access(path.parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: no permission")
    return path


def _json_path(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() != ".json":
        raise argparse.ArgumentTypeError(f"{text!r} must end in .json")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"the folder of {text!r} does not exist: create {path.parent} first")
    return path


def cmd_video(args) -> int:
    """`sca video`: segment, track and caption objects through a video; a line per object, JSON, an annotated video."""
    from tqdm import tqdm

    from .files import to_json, write_text_atomically
    from .models.prompts import check_regions
    from .video.captioner import VideoCaptioner
    from .video.io import VideoWriter, read_frames, video_info
    from .visualize import draw_regions

    if bool(args.prompts) == bool(args.anything):
        raise InputError("give --box/--point prompts (on --frame N) or --anything, one of the two")
    options = VideoOptions(keyframe_every=args.keyframe_every, change_threshold=args.change_threshold,
                           anything_every=args.anything_every).check()
    info = video_info(args.video)
    if args.frame < 0 or (info.frames is not None and args.frame >= info.frames):
        raise InputError(f"--frame {args.frame} is past the video's end: it has {info.frames} frames (0 to "
                         f"{(info.frames or 1) - 1})")
    regions = _region_prompts(args.prompts) if args.prompts else None
    if regions:
        check_regions((info.height, info.width), regions)  # before the model loads
    anything = AnythingOptions(points_per_side=args.points_per_side, max_masks=args.max_masks).check()
    loaded = _load_captioner(args)
    captioner = VideoCaptioner(loaded.model, options, tracker=args.tracker, anything=anything,
                               chunk_size=loaded.chunk_size)
    total = info.frames if args.max_frames is None else min(info.frames or args.max_frames, args.max_frames)
    frames = read_frames(args.video, args.max_frames)
    writer = VideoWriter(args.out, info.fps, info.width, info.height) if args.out else None
    try:
        progress = tqdm(captioner.run(frames, regions=regions, frame=args.frame, anything=args.anything),
                        total=total, unit="frame", desc="sca video", disable=args.quiet)
        for _, picture, tracks in progress:
            if writer is not None:
                labels = [f"{t.object_id}: {t.current_caption}" for t in tracks]
                masks = [t.last_mask for t in tracks]
                writer.write(draw_regions(picture, masks, labels, colour_ids=[t.object_id for t in tracks]))
    except BaseException:
        if writer is not None:
            writer.close(keep=False)
        raise
    if writer is not None:
        writer.close()
    result = {"video": str(args.video), "width": info.width, "height": info.height, "fps": info.fps,
              "objects": [t.to_dict() for t in captioner.tracks]}
    if args.json:
        write_text_atomically(args.json, to_json(result))
    for track in captioner.tracks:
        first, last = min(track.frames, default=None), max(track.frames, default=None)
        print(f"{track.object_id}\t{_cell(track.caption)}\tframes={first}-{last}\tkeyframes={len(track.keyframes)}")
    written = [str(p) for p in (args.out, args.json) if p]
    if written:
        print(f"wrote {' and '.join(written)}", file=sys.stderr)
    return 0


def cmd_serve(args) -> int:
    """`sca serve` (and `sca demo`, which also opens the page): the JSON API and the page."""
    import logging
    import threading
    import webbrowser

    from .app.server import Limits, Security, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 1e6), max_pixels=int(args.max_megapixels * 1e6),
                    max_aspect_ratio=args.max_aspect_ratio, max_regions=args.max_regions,
                    max_points_per_side=args.max_points_per_side, max_video_frames=args.max_video_frames,
                    queue_size=args.queue_size, request_timeout=args.timeout)
    for name in ("max_upload_bytes", "max_pixels", "max_regions", "max_points_per_side", "max_video_frames",
                 "queue_size"):
        require_whole(getattr(limits, name), f"--{name.replace('_', '-')}")
    if not (limits.request_timeout > 0 and limits.max_aspect_ratio >= 1):
        raise InputError("--timeout must be positive and --max-aspect-ratio at least 1")
    api_key = args.api_key or os.environ.get("SCA_API_KEY") or None
    security = Security(api_key=api_key, allowed_origins=tuple(args.allow_origin or ()))
    captioner = _load_captioner(args)
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    print(f"SCA on {url} (API docs: {url}/docs; Ctrl-C to stop)", file=sys.stderr, flush=True)
    if args.open and (os.environ.get("DISPLAY") or sys.platform in ("darwin", "win32")):
        threading.Timer(1.5, webbrowser.open, [url]).start()
    serve(captioner.model, args.kind or ("sam-captioner" if args.captioner else "sca"), args.host, args.port,
          limits, security, chunk_size=captioner.chunk_size)
    return 0


CONFIG_DIR = Path(__file__).parent / "conf"


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


def cmd_train(args) -> int:
    import logging

    from .train.run import run_training

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = compose_config("train", args.overrides)
    run_training(cfg)
    return 0


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


def cmd_infer(args) -> int:
    import logging

    from .infer.run import run_dataset_inference

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


def cmd_eval(args) -> int:
    import warnings

    from rich.console import Console
    from rich.table import Table

    from .eval.run import comparison_dir, comparison_rows, evaluate_files

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = lambda message, *_: print(f"sca eval: warning: {message}", file=sys.stderr)
        names = [n.strip() for n in args.names.split(",")] if args.names else None
        results = evaluate_files(args.files, args.out, spice=args.spice, content_recall=args.content_recall,
                                 strip_logits=args.strip_logits, names=names)
    header, rows = comparison_rows(results)
    table = Table(title="caption metrics (x100)")
    for name in header:
        table.add_column(name, justify="left" if name in ("run", "dataset", "split") else "right")
    for row in rows:
        table.add_row(*row)
    console = Console()
    console.width = max(console.width, 40 + 12 * len(header))  # a full table beats one squeezed into 80 columns
    console.print(table)
    out = comparison_dir(args.files, args.out)
    print(f"wrote {out / 'metrics.md'}, {out / 'metrics.csv'} and metrics/<file>/metrics.json", file=sys.stderr)
    return 0


def cmd_bench_quality(args) -> int:
    from .bench.quality import evaluate_quality, goals_met, held_out_records, quality_table
    from .files import write_json_atomically, write_text_atomically

    require_whole(args.images, "--images")
    worlds = [w for w in args.worlds.split(",") if w]
    if not worlds or any(w not in ("rich", "classic") for w in worlds):
        raise InputError("--worlds takes rich and/or classic")
    captioner = _load_captioner(args)
    tables, reports, met = [], {}, True
    for world in worlds:
        records = held_out_records(args.images, image_size=captioner.frame.image_size, world=world)
        report = evaluate_quality(captioner, records)
        reports[world] = {"images": len(records), **report}
        tables.append(quality_table(report, len(records), world))
        met &= goals_met(report, world)
    table = "\n".join(tables)
    print(table)
    if args.out:
        write_text_atomically(args.out / "quality.md", table)
        write_json_atomically(args.out / "quality.json", reports, indent=2)
        print(f"wrote {args.out / 'quality.md'} and quality.json", file=sys.stderr)
    if not met:
        print("sca bench quality: below the goals", file=sys.stderr)
    return 0


def cmd_bench_video(args) -> int:
    from .bench.video import evaluate_video, held_out_world, peak_memory, video_table
    from .files import write_json_atomically, write_text_atomically

    for name in ("videos", "frames", "image_size"):
        require_whole(getattr(args, name), f"--{name.replace('_', '-')}")
    if args.memory_frames is not None:
        require_whole(args.memory_frames, "--memory-frames")
    speed = _coordinates(2, "--speed")(args.speed)
    if not 0 < speed[0] <= speed[1]:
        raise InputError(f"--speed must be MIN,MAX pixels per frame with 0 < MIN <= MAX, got {args.speed!r}")
    options = VideoOptions(keyframe_every=args.keyframe_every).check()
    model = _load_captioner(args).model
    world = held_out_world(args.frames, args.image_size, speed=tuple(speed), max_objects=args.max_objects)
    report = evaluate_video(model, world, args.videos, options, tracker=args.tracker)
    memory = None
    if args.memory_frames:
        short_mb = peak_memory(model, world, tracker=args.tracker)
        long_world = held_out_world(args.memory_frames, args.image_size, speed=tuple(speed), max_objects=args.max_objects)
        memory = (world.frames, short_mb, args.memory_frames, peak_memory(model, long_world, tracker=args.tracker))
    table = video_table(report, args.tracker, memory)
    print(table)
    if args.out:
        write_text_atomically(args.out / "video.md", table)
        write_json_atomically(args.out / "video.json", {**report.__dict__, "memory": memory}, indent=2)
        print(f"wrote {args.out / 'video.md'} and video.json", file=sys.stderr)
    if not report.goals_met():
        print("sca bench video: below the goals", file=sys.stderr)
    return 0


def cmd_bench_speed(args) -> int:
    import itertools
    from dataclasses import asdict

    from .bench.speed import SAM2_SIZES, SAM_SIZES, SCOPES, Case, markdown, run_in_subprocess
    from .files import write_json_atomically, write_text_atomically

    def split(text: str, cast=str) -> list:
        try:
            return [cast(v) for v in text.split(",") if v]
        except ValueError as error:
            raise InputError(f"cannot read {text!r}: {error}") from error

    models, sams, dtypes, lms = split(args.models), split(args.sam), split(args.dtypes), split(args.lm)
    chunks, regions = split(args.chunks, int), split(args.regions, int)
    scopes, quantize = split(args.scope), split(args.quantize)
    if any(s not in SCOPES for s in scopes) or any(q not in ("none", "int8") for q in quantize):
        raise InputError(f"--scope takes {', '.join(SCOPES)}; --quantize takes none, int8")
    if "int8" in quantize and (args.device != "cpu" or set(dtypes) != {"float32"}):
        raise InputError("--quantize int8 runs float32 models on the CPU: use --dtypes float32 --device cpu")
    for name in ("runs", "forced_masks", "image_size", "new_tokens", "points_per_side"):
        require_whole(getattr(args, name), f"--{name.replace('_', '-')}", minimum=0 if name == "forced_masks" else 1)
    if args.photo_size is not None:
        require_whole(args.photo_size, "--photo-size", minimum=1)
    from .models.loading import resolve_device

    resolve_device(args.device)
    for name in sams:
        if name not in SAM_SIZES and name not in SAM2_SIZES:
            raise InputError(f"--sam {name!r}: use one of {', '.join([*SAM_SIZES, *SAM2_SIZES])}")
    from .models.registry import model_kinds

    kinds = model_kinds()
    unknown = [m for m in models if m.removesuffix("-anything") not in kinds]
    if unknown:
        raise InputError(f"--models: unknown kind {unknown[0]!r}: use {', '.join(sorted(kinds))}, each optionally "
                         "with -anything (segment and caption everything)")
    if any(d not in PRECISIONS for d in dtypes):
        raise InputError(f"--dtypes takes {', '.join(PRECISIONS)}")
    if min(chunks + regions) < 1:
        raise InputError("--chunks and --regions must be at least 1")
    cases = [
        Case(model=m, sam=sam, lm=args.captioner if m.startswith("sam-captioner") else lm, mixer_layers=args.mixer_layers,
             dtype=d, chunk_size=c, regions=r, image_size=args.image_size, new_tokens=args.new_tokens,
             device=args.device, points_per_side=args.points_per_side, forced_masks=args.forced_masks, runs=args.runs,
             scope=scope, quantize=None if q == "none" else q, static_cache=args.static_cache,
             candidates=args.candidates, photo_size=args.photo_size)
        for m, sam, lm, d, q, c, r, scope in itertools.product(models, sams, lms, dtypes, quantize, chunks, regions, scopes)
    ]
    results = []
    for i, case in enumerate(cases, 1):
        print(f"[{i}/{len(cases)}] {case.model} {case.sam} {case.lm} {case.dtype} chunk {case.chunk_size}, "
              f"{case.regions} regions ...", file=sys.stderr, flush=True)
        results.append(run_in_subprocess(case))
    table = markdown(results)
    print(table)
    if args.out:
        write_text_atomically(args.out / "speed.md", table)
        write_json_atomically(args.out / "speed.json", [asdict(r) for r in results], indent=2)
        print(f"wrote {args.out / 'speed.md'} and speed.json", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sca", description="Segment and Caption Anything")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    caption = commands.add_parser("caption", help="segment and caption prompted regions of an image")
    caption.add_argument("image", type=Path, help="image file")
    caption.add_argument("--box", dest="prompts", action=_AppendPrompt, type=_coordinates(4, "--box"),
                         metavar="X1,Y1,X2,Y2", help="a box prompt in pixels (repeat for more regions)")
    caption.add_argument("--point", dest="prompts", action=_AppendPrompt, type=_coordinates(2, "--point"),
                         metavar="X,Y", help="a foreground point prompt in pixels (repeat for more regions)")
    caption.add_argument("--json", action="store_true", help="print JSON (captions, IoU, boxes, RLE masks)")
    caption.add_argument("--out", type=_picture_path, help="write a .png or .jpg with the masks and captions drawn")
    _add_model_options(caption)
    caption.set_defaults(run=cmd_caption)

    anything = commands.add_parser("anything", help="segment and caption everything in an image (SAM's grid of points)")
    anything.add_argument("image", type=Path, help="image file")
    defaults = AnythingOptions()
    anything.add_argument("--points-per-side", type=int, default=defaults.points_per_side,
                          help="an n x n grid of point prompts")
    anything.add_argument("--points-per-batch", type=int, default=defaults.points_per_batch,
                          help="prompts through SAM's decoder at a time")
    anything.add_argument("--pred-iou-thresh", type=float, default=defaults.pred_iou_thresh,
                          help="keep masks with predicted IoU above")
    anything.add_argument("--stability-thresh", type=float, default=defaults.stability_score_thresh,
                          help="keep masks this stable or more")
    anything.add_argument("--nms-thresh", type=float, default=defaults.box_nms_thresh, help="box NMS IoU threshold")
    anything.add_argument("--min-region-area", type=int, default=defaults.min_region_area,
                          help="islands and holes of fewer pixels are removed from each mask (0: off; default: two "
                          "of the model's low-res mask pixels at the image's size, at least 25)")
    anything.add_argument("--max-masks", type=int, help="keep at most this many masks, best predicted IoU first")
    anything.add_argument("--json", action="store_true", help="print JSON (captions, scores, boxes, RLE masks)")
    anything.add_argument("--out", type=_picture_path, help="write a .png or .jpg with the masks and captions drawn")
    _add_model_options(anything)
    anything.set_defaults(run=cmd_anything)

    video = commands.add_parser(
        "video", help="segment, track and caption objects through a video",
        description="Objects start from --box/--point prompts on --frame N (one object per prompt) or from --anything; "
        "each is tracked frame to frame and captioned on keyframes; its track's caption is the most frequent one.")
    video.add_argument("video", type=Path, help="video file (anything FFmpeg reads: .mp4, .mkv, .webm, .mov, .avi)")
    video.add_argument("--box", dest="prompts", action=_AppendPrompt, type=_coordinates(4, "--box"),
                       metavar="X1,Y1,X2,Y2", help="an object's box on the prompt frame, in pixels (repeatable)")
    video.add_argument("--point", dest="prompts", action=_AppendPrompt, type=_coordinates(2, "--point"),
                       metavar="X,Y", help="a point on an object on the prompt frame, in pixels (repeatable)")
    video.add_argument("--frame", type=int, default=0, help="the frame the prompts are on (default 0)")
    video.add_argument("--anything", action="store_true", help="find the objects instead (anything mode)")
    video.add_argument("--anything-every", type=int, help="--anything: look for new objects every K frames "
                       "(default: the first frame only)")
    video.add_argument("--points-per-side", type=int, default=AnythingOptions.points_per_side,
                       help="--anything: an n x n grid of point prompts")
    video.add_argument("--max-masks", type=int, help="--anything: at most this many new objects at a time")
    video.add_argument("--keyframe-every", type=int, default=VideoOptions.keyframe_every,
                       help="caption each object every K frames")
    video.add_argument("--change-threshold", type=float, default=VideoOptions.change_threshold,
                       help="and when its mask's IoU with its last keyframe's falls below this")
    video.add_argument("--tracker", default="reprompt", help="reprompt (re-prompt the segmenter with the last box; "
                       "the default) or a SAM 2 / 2.1, EdgeTAM or SAM 3 tracker video model (folder or hub id)")
    video.add_argument("--max-frames", type=int, help="stop after this many frames")
    video.add_argument("--out", type=_video_path, help="write the video with masks, ids and captions drawn (.mp4 ...)")
    video.add_argument("--json", type=_json_path, metavar="FILE.json",
                       help="write every object's frames (RLE masks, boxes, scores), keyframe captions and caption")
    video.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_model_options(video)
    video.set_defaults(run=cmd_video)

    for name, summary in (("serve", "serve the JSON API (OpenAPI at /docs) and the web page"),
                          ("demo", "serve the web page and open it in a browser (the same server as serve)")):
        server = commands.add_parser(name, help=summary, description=summary + ". Every limit below answers a request "
                                     "that goes past it with a 4xx that names it.")
        server.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only; "
                            "0.0.0.0 listens on every interface: set --api-key then)")
        server.add_argument("--port", type=int, default=7860)
        server.add_argument("--api-key", help="require this key on /api/* (X-API-Key or Authorization: Bearer); "
                            "default: $SCA_API_KEY, else none")
        server.add_argument("--allow-origin", action="append", metavar="ORIGIN",
                            help="a web origin (https://example.org) whose pages may POST here; repeatable")
        server.add_argument("--max-upload-mb", type=float, default=20, help="largest upload, in MB")
        server.add_argument("--max-megapixels", type=float, default=25, help="largest image, in megapixels")
        server.add_argument("--max-aspect-ratio", type=float, default=20, help="widest (or tallest) image shape")
        server.add_argument("--max-regions", type=int, default=64, help="regions per caption request")
        server.add_argument("--max-points-per-side", type=int, default=64, help="anything mode's densest grid")
        server.add_argument("--max-video-frames", type=int, default=300, help="the longest video, in frames")
        server.add_argument("--queue-size", type=int, default=32, help="requests waiting for the model (then 503)")
        server.add_argument("--timeout", type=float, default=120, help="seconds a request may take")
        server.set_defaults(open=name == "demo")
        _add_model_options(server)
        server.set_defaults(run=cmd_serve)

    train = commands.add_parser(
        "train", help="train SCA (Hydra config: model=..., data=..., train=..., key=value)",
        description=f"Train SCA. Config groups: {config_groups()}.",
    )
    train.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=vg-densecap train.args.max_steps=1000")
    train.set_defaults(run=cmd_train)

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
    infer.set_defaults(run=cmd_infer)

    evaluate = commands.add_parser(
        "eval", help="score infer.json files: BLEU, METEOR, ROUGE-L, CIDEr-D (pycocoevalcap), or dense mAP",
        description="Score one or more infer.json files with pycocoevalcap (PTB tokenizer, BLEU-1..4, METEOR, "
        "ROUGE-L, CIDEr-D). Where an entry has one candidate per SAM mask, the highest-IoU one is scored. "
        "Dense-captioning files (one entry per image with 'predictions') get the DenseCap mAP. Writes "
        "metrics/<file>/metrics.json next to each file and one comparison table (metrics.md, metrics.csv).",
    )
    evaluate.add_argument("files", nargs="+", type=Path, help="infer.json files")
    evaluate.add_argument("--out", type=Path, help="folder for the comparison table (default: the first file's metrics/)")
    evaluate.add_argument("--spice", action="store_true", help="also SPICE (needs Stanford CoreNLP 3.6.0 jars)")
    evaluate.add_argument("--content-recall", action="store_true",
                          help="also noun/verb recall, exact and fuzzy (needs spaCy and en_core_web_lg)")
    evaluate.add_argument("--names", help="comma-separated row names, one per file (default: each file's run "
                          "folder, e.g. runs/vg for runs/vg/infer/infer-vg-densecap-test.json)")
    evaluate.add_argument("--strip-logits", action="store_true",
                          help="also write <file>.no-logits.json, a copy without the IoU scores")
    evaluate.set_defaults(run=cmd_eval)

    bench = commands.add_parser("bench", help="benchmarks: quality on the shapes world; speed and memory")
    benches = bench.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    quality = benches.add_parser(
        "quality", help="caption exact match, CIDEr-D, METEOR and mask mIoU on held-out shapes images",
        description="Box prompts, one point, and a positive + negative point pair (the negative beside the shape, "
        "then far off in the background) on held-out shapes images (each world's test split): caption exact match "
        "(and its breakdown by kind, colour, size and background tone), CIDEr-D and METEOR (pycocoevalcap), and the "
        "mIoU of the highest-IoU mask.",
    )
    quality.add_argument("--images", type=int, default=200, help="held-out images per world (default 200)")
    quality.add_argument("--worlds", default="rich,classic", help="the shapes worlds: rich and/or classic")
    quality.add_argument("--out", type=Path, help="folder for quality.md and quality.json")
    _add_model_options(quality)
    quality.set_defaults(run=cmd_bench_quality)

    video_bench = benches.add_parser(
        "video", help="track mIoU, ID switches and caption exact match on held-out moving-shapes videos",
        description="Held-out moving-shapes videos (shapes move, turn, enter and leave): each object seen on the first "
        "frame is prompted by its box there, tracked and captioned; track mIoU over every frame from there on, "
        "CLEAR-MOT ID switches, and exact match of each track's caption. --memory-frames also compares the peak "
        "memory of a video with one that long.")
    video_bench.add_argument("--videos", type=int, default=50, help="held-out videos (default 50)")
    video_bench.add_argument("--frames", type=int, default=24, help="frames per video")
    video_bench.add_argument("--image-size", type=int, default=128, help="frame height (widths vary)")
    video_bench.add_argument("--speed", default="1,3", help="MIN,MAX pixels per frame the shapes move")
    video_bench.add_argument("--max-objects", type=int, default=3, help="objects per video, at most")
    video_bench.add_argument("--keyframe-every", type=int, default=VideoOptions.keyframe_every)
    video_bench.add_argument("--tracker", default="reprompt", help="reprompt or a SAM 2-family video model")
    video_bench.add_argument("--memory-frames", type=int, help="also the peak memory of a video this long")
    video_bench.add_argument("--out", type=Path, help="folder for video.md and video.json")
    _add_model_options(video_bench)
    video_bench.set_defaults(run=cmd_bench_video)

    speed = benches.add_parser(
        "speed", help="seconds per image, regions per second and peak memory: SCA vs SAM-Captioner",
        description="Each combination of the comma-separated options is one row, run in its own process. Real-size "
        "architectures with random weights (compute does not depend on weight values); captions forced to "
        "--new-tokens. E.g. --regions 16,256 --chunks 16 shows memory bounded by the chunk, not the regions.",
    )
    speed.add_argument("--models", default="sca,sam-captioner",
                       help="model kinds: sca and sam-captioner at real size with random weights, any other registered "
                       "kind with its defaults; KIND-anything segments and captions everything")
    speed.add_argument("--sam", default="vit-b", help="segmenters: SAM's vit-b, vit-l, vit-h; SAM 2's sam2-hiera-t, "
                       "sam2-hiera-b+ (SCA rows take SAM's)")
    speed.add_argument("--captioner", default="blip", choices=("blip", "git", "llava"),
                       help="SAM-Captioner's captioner: blip or git (base, on crops) or llava (a chat VLM, focal prompts)")
    speed.add_argument("--candidates", default="all", choices=("all", "best"), help="SAM-Captioner: captions per mask")
    speed.add_argument("--mixer-layers", type=int, default=12)
    speed.add_argument("--dtypes", default="float32", help="float32, bfloat16, float16")
    speed.add_argument("--chunks", default="16", help="region chunk sizes")
    speed.add_argument("--regions", default="64", help="regions (box prompts) per image")
    speed.add_argument("--image-size", type=int, default=1024, help="the model's input size (SAM's image_size)")
    speed.add_argument("--photo-size", type=int,
                       help="the side of the square picture given to the API (default: --image-size); e.g. 5000 for "
                       "the memory of a 25-megapixel photo, whose masks come back at its size")
    speed.add_argument("--new-tokens", type=int, default=20)
    speed.add_argument("--device", default="cpu")
    speed.add_argument("--points-per-side", type=int, default=32, help="the anything rows' grid")
    speed.add_argument("--forced-masks", type=int, default=0,
                       help="anything rows: open SAM's filters and caption this many masks (random weights pass none)")
    speed.add_argument("--lm", default="gpt2", help="SCA's LMs: gpt2, gpt2-medium, gpt2-large, gpt2-xl, or any causal LM "
                       "config (folder or hub id)")
    speed.add_argument("--runs", type=int, default=3, help="timed runs per row, after a warm-up (the median is shown)")
    speed.add_argument("--scope", default="api", help="api (masks + RLE, as users see it) and/or model (bare generate)")
    speed.add_argument("--quantize", default="none", help="none and/or int8 (the LM's and encoder's linear layers)")
    speed.add_argument("--static-cache", action="store_true",
                       help="decode with a static KV cache (transformers compiles the decoding step on a GPU)")
    speed.add_argument("--out", type=Path, help="folder for speed.md and speed.json")
    speed.set_defaults(run=cmd_bench_speed)
    return parser


def _quiet_libraries() -> None:
    """Our own progress bars and errors are what a user should see, not per-weight loading bars."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    command = "sca"
    try:
        args = build_parser().parse_args(_attach_negative_values(sys.argv[1:] if argv is None else list(argv)))
        command = f"sca {args.command}"
        _quiet_libraries()
        return args.run(args)
    except InputError as error:
        print(f"{command}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
