"""`sca video`: segment, track and caption objects through a video."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import InputError
from ..options import MAX_VIDEO_PIXELS, AnythingOptions, VideoOptions
from .common import (
    add_anything_filters,
    add_model_options,
    add_prompt_options,
    add_tracker_option,
    anything_filters,
    cell,
    json_path,
    load_captioner,
    region_prompts,
    video_path,
)


def add(commands) -> None:
    video = commands.add_parser(
        "video", help="segment, track and caption objects through a video",
        description="Objects start from --box/--point/--mask/--region prompts on --frame N (one object each) or from "
        "--anything; "
        "each is tracked frame to frame and captioned on keyframes; its track's caption is the one its keyframes gave most.")
    video.add_argument("video", type=Path, help="video file (anything FFmpeg reads: .mp4, .mkv, .webm, .mov, .avi)")
    add_prompt_options(video, "object on the prompt frame")
    video.add_argument("--frame", type=int, default=0, help="the frame the prompts are on (default 0)")
    video.add_argument("--anything", action="store_true", help="find the objects instead (anything mode)")
    video.add_argument("--anything-every", type=int, help="--anything: look for new objects every K frames "
                       "(default: the first frame only)")
    video.add_argument("--points-per-side", type=int, default=AnythingOptions.points_per_side,
                       help="--anything: an n x n grid of point prompts")
    video.add_argument("--max-masks", type=int, help="--anything: at most this many new objects at a time")
    add_anything_filters(video, when="--anything: ")
    video.add_argument("--min-region-area", type=int, default=AnythingOptions.min_region_area,
                       help="--anything: islands and holes of fewer pixels are removed (as sca anything)")
    video.add_argument("--keyframe-every", type=int, default=VideoOptions.keyframe_every,
                       help="caption each object every K frames")
    video.add_argument("--change-threshold", type=float, default=VideoOptions.change_threshold,
                       help="and when its mask's IoU with its last keyframe's falls below this")
    add_tracker_option(video)
    video.add_argument("--max-frames", type=int, help="stop after this many frames")
    video.add_argument("--max-megapixels", type=float, default=MAX_VIDEO_PIXELS / 1e6,
                       help="the largest frame taken, in megapixels (every frame is decoded whole)")
    video.add_argument("--out", type=video_path, help="write the video with masks, ids and captions drawn (.mp4 ...)")
    video.add_argument("--json", type=json_path, metavar="FILE.json",
                       help="write every object's frames (RLE masks, boxes, scores), keyframe captions and caption")
    video.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(video)
    video.set_defaults(run=run)


def run(args) -> int:
    """`sca video`: segment, track and caption objects through a video; a line per object, JSON, an annotated video."""
    from tqdm import tqdm

    from ..files import to_json, write_text_atomically
    from ..models.prompts import check_regions
    from ..video.captioner import VideoCaptioner
    from ..video.io import VideoWriter, read_frames, video_info
    from ..visualize import draw_regions

    if bool(args.prompts) == bool(args.anything):
        raise InputError("give --box/--point prompts (on --frame N) or --anything, one of the two")
    options = VideoOptions(keyframe_every=args.keyframe_every, change_threshold=args.change_threshold,
                           anything_every=args.anything_every).check()
    info = video_info(args.video)
    if not args.max_megapixels > 0:
        raise InputError(f"--max-megapixels must be positive, got {args.max_megapixels:g}")
    if info.width * info.height > args.max_megapixels * 1e6:
        raise InputError(f"the video's frames are {info.width}x{info.height}, {info.width * info.height / 1e6:.1f} "
                         f"megapixels; sca video takes up to {args.max_megapixels:g} (--max-megapixels): scale it down "
                         "first, or raise the limit if the memory is there")
    if args.frame < 0 or (info.frames is not None and args.frame >= info.frames):
        raise InputError(f"--frame {args.frame} is past the video's end: it has {info.frames} frames (0 to "
                         f"{(info.frames or 1) - 1})")
    regions = region_prompts(args.prompts, (info.height, info.width)) if args.prompts else None
    if regions:
        check_regions((info.height, info.width), regions)  # before the model loads
    anything = AnythingOptions(points_per_side=args.points_per_side, max_masks=args.max_masks,
                               **anything_filters(args), min_region_area=args.min_region_area).check()
    loaded = load_captioner(args)
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
        print(f"{track.object_id}\t{cell(track.caption)}\tframes={first}-{last}\tkeyframes={len(track.keyframes)}")
    written = [str(p) for p in (args.out, args.json) if p]
    if written:
        print(f"wrote {' and '.join(written)}", file=sys.stderr)
    return 0

