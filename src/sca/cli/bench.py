"""`sca bench`: quality on the shapes world, video tracking, speed and memory."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import InputError, require_whole
from ..options import PRECISIONS, AnythingOptions, VideoOptions
from .common import (
    Parser,
    add_anything_filters,
    add_model_options,
    add_tracker_option,
    anything_filters,
    coordinates,
    load_captioner,
)


def add(commands) -> None:
    bench = commands.add_parser("bench", help="benchmarks: quality on the shapes world; speed and memory")
    benches = bench.add_subparsers(dest="bench", required=True, parser_class=Parser)
    quality = benches.add_parser(
        "quality", help="caption exact match, CIDEr-D, METEOR and mask mIoU on held-out shapes images",
        description="Box prompts, one point, and a positive + negative point pair (the negative beside the shape, "
        "then far off in the background) on held-out shapes images (each world's test split): caption exact match "
        "(and its breakdown by kind, colour, size and background tone), CIDEr-D and METEOR (pycocoevalcap), and the "
        "mIoU of the highest-IoU mask; and anything mode (no prompt): the shapes it finds (a mask of IoU >= 0.5), by "
        "background tone, and their captions.",
    )
    quality.add_argument("--images", type=int, default=200, help="held-out images per world (default 200)")
    quality.add_argument("--worlds", default="rich,classic", help="the shapes worlds: rich and/or classic")
    add_anything_filters(quality, when="anything mode: ")
    quality.add_argument("--out", type=Path, help="folder for quality.md and quality.json")
    add_model_options(quality)
    quality.set_defaults(run=cmd_bench_quality)

    video_bench = benches.add_parser(
        "video", help="track mIoU, ID switches and caption exact match on held-out moving-shapes videos",
        description="Held-out moving-shapes videos (shapes move, turn, enter and leave): each object seen on the first "
        "frame is prompted by its box there, tracked and captioned; track mIoU over every frame from there on, "
        "CLEAR-MOT ID switches, frames a track spends on another object, fragmentations, and exact match of each "
        "track's caption; then the same videos in anything mode (the model's filters): recall of the objects wholly in view "
        "at each search frame, precision, and objects held by two tracks. --memory-frames also compares the peak "
        "memory of a video with one that long.")
    video_bench.add_argument("--videos", type=int, default=50, help="held-out videos (default 50)")
    video_bench.add_argument("--frames", type=int, default=24, help="frames per video")
    video_bench.add_argument("--image-size", type=int, default=128, help="frame height (widths vary)")
    video_bench.add_argument("--speed", default="1,3", help="MIN,MAX pixels per frame the shapes move")
    video_bench.add_argument("--max-objects", type=int, default=3, help="objects per video, at most")
    video_bench.add_argument("--keyframe-every", type=int, default=VideoOptions.keyframe_every)
    add_tracker_option(video_bench)
    video_bench.add_argument("--crowded", action="store_true",
                             help="the crowded world: neighbours a few pixels apart, faster turns, and an object "
                             "crossing in front of the others (occlusion)")
    video_bench.add_argument("--anything-every", type=int, default=8,
                             help="also anything mode (recall, precision, duplicates), searching every K frames; "
                             "0: skip it")
    video_bench.add_argument("--memory-frames", type=int, help="also the peak memory of a video this long")
    video_bench.add_argument("--out", type=Path, help="folder for video.md and video.json")
    add_model_options(video_bench)
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
                       "sam2-hiera-b+ (sca rows take SAM's, sca-sam2 rows SAM 2's)")
    speed.add_argument("--captioner", default="blip", choices=("blip", "git", "llava"),
                       help="SAM-Captioner's captioner: blip or git (base, on crops) or llava (a chat VLM, focal prompts)")
    speed.add_argument("--candidates", default="all", choices=("all", "best"), help="SAM-Captioner: captions per mask")
    speed.add_argument("--mixer-layers", type=int, help="SCA's mixer depth (default: the paper's, ScaConfig's)")
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
    speed.add_argument("--roofline", action="store_true",
                       help="also per stage (image encoder, SAM decoder, mixer, LM): operations, seconds and the share "
                       "of this machine's matrix-product rate, measured on the spot")
    speed.add_argument("--out", type=Path, help="folder for speed.md and speed.json")
    speed.set_defaults(run=cmd_bench_speed)


def cmd_bench_quality(args) -> int:
    from ..bench.quality import evaluate_quality, goals_met, held_out_records, quality_table
    from ..files import write_json_atomically, write_text_atomically

    require_whole(args.images, "--images")
    worlds = [w for w in args.worlds.split(",") if w]
    if not worlds or any(w not in ("rich", "classic") for w in worlds):
        raise InputError("--worlds takes rich and/or classic")
    anything = AnythingOptions(**anything_filters(args)).check()
    captioner = load_captioner(args)
    tables, reports, met = [], {}, True
    for world in worlds:
        records = held_out_records(args.images, image_size=captioner.frame.image_size, world=world)
        report = evaluate_quality(captioner, records, anything=anything)
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
    from ..bench.video import (
        evaluate_anything,
        evaluate_ceiling,
        evaluate_video,
        held_out_world,
        peak_memory,
        video_table,
    )
    from ..files import write_json_atomically, write_text_atomically
    from ..video.trackers import load_tracker

    for name in ("videos", "frames", "image_size"):
        require_whole(getattr(args, name), f"--{name.replace('_', '-')}")
    if args.memory_frames is not None:
        require_whole(args.memory_frames, "--memory-frames")
    speed = coordinates(2, "--speed")(args.speed)
    if not 0 < speed[0] <= speed[1]:
        raise InputError(f"--speed must be MIN,MAX pixels per frame with 0 < MIN <= MAX, got {args.speed!r}")
    require_whole(args.anything_every, "--anything-every", minimum=0)
    options = VideoOptions(keyframe_every=args.keyframe_every).check()
    model = load_captioner(args).model
    tracker = load_tracker(args.tracker, model)  # loaded once; each video gets a fresh one of its kind
    world = held_out_world(args.frames, args.image_size, speed=tuple(speed), max_objects=args.max_objects,
                           crowded=args.crowded)
    report = evaluate_video(model, world, args.videos, options, tracker=tracker)
    ceiling = evaluate_ceiling(model, world, args.videos)
    anything = None
    if args.anything_every:
        searching = VideoOptions(keyframe_every=args.keyframe_every, anything_every=args.anything_every).check()
        anything = evaluate_anything(model, world, args.videos, searching, tracker=tracker)
    memory = None
    if args.memory_frames:
        short_mb = peak_memory(model, world, tracker=tracker)
        long_world = held_out_world(args.memory_frames, args.image_size, speed=tuple(speed), max_objects=args.max_objects)
        memory = (world.frames, short_mb, args.memory_frames, peak_memory(model, long_world, tracker=tracker))
    table = video_table(report, args.tracker, memory, anything, "crowded moving-shapes" if args.crowded
                        else "moving-shapes", ceiling)
    print(table)
    if args.out:
        found = None if anything is None else {**anything.__dict__, "recall": anything.recall,
                                               "precision": anything.precision}
        write_text_atomically(args.out / "video.md", table)
        write_json_atomically(args.out / "video.json", {**report.__dict__, "memory": memory, "anything": found,
                                                        "ceiling": ceiling.__dict__}, indent=2)
        print(f"wrote {args.out / 'video.md'} and video.json", file=sys.stderr)
    if not report.goals_met() or (anything is not None and not anything.goals_met()):
        print("sca bench video: below the goals", file=sys.stderr)
    return 0


def cmd_bench_speed(args) -> int:
    import itertools
    from dataclasses import asdict

    from ..bench.speed import (
        SAM2_SIZES,
        SAM_SIZES,
        SCOPES,
        Case,
        markdown,
        roofline_markdown,
        run_in_subprocess,
        takes,
    )
    from ..files import write_json_atomically, write_text_atomically

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
    from ..models.loading import resolve_device

    resolve_device(args.device)
    for name in sams:
        if name not in SAM_SIZES and name not in SAM2_SIZES:
            raise InputError(f"--sam {name!r}: use one of {', '.join([*SAM_SIZES, *SAM2_SIZES])}")
    from ..models.registry import model_kinds

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
             candidates=args.candidates, photo_size=args.photo_size, roofline=args.roofline)
        for m, sam, lm, d, q, c, r, scope in itertools.product(models, sams, lms, dtypes, quantize, chunks, regions, scopes)
        if takes(m, sam)
    ]
    if not cases:
        raise InputError("no row to run: SCA rows take SAM's sizes (--sam vit-b ...), sca-sam2 rows SAM 2's "
                         "(--sam sam2-hiera-b+ ...)")
    results = []
    for i, case in enumerate(cases, 1):
        print(f"[{i}/{len(cases)}] {case.model} {case.sam} {case.lm} {case.dtype} chunk {case.chunk_size}, "
              f"{case.regions} regions ...", file=sys.stderr, flush=True)
        results.append(run_in_subprocess(case))
    table = markdown(results)
    if args.roofline:
        table += "\n" + roofline_markdown(results)
    print(table)
    if args.out:
        write_text_atomically(args.out / "speed.md", table)
        write_json_atomically(args.out / "speed.json", [asdict(r) for r in results], indent=2)
        print(f"wrote {args.out / 'speed.md'} and speed.json", file=sys.stderr)
    return 0

