"""Video quality on held-out moving-shapes videos: track mIoU, ID switches and caption exact match, with each object
prompted by its box on the first frame it is seen in; anything mode's recall and precision at its search frames. And
memory: the peak resident memory of a video and of one ten times longer, which should be the same (frames stream)."""

from __future__ import annotations

import os
import resource
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from ..data.sources.moving_shapes import MovingShapesWorld, TruthFrame
from ..engine import RegionEngine
from ..geometry import mask_box, mask_iou
from ..masks import decode_rle
from ..models.prompts import RegionPrompt
from ..models.region_model import RegionModel
from ..options import AnythingOptions, VideoOptions
from ..tables import markdown_table
from ..video.captioner import VideoCaptioner
from ..video.trackers import REPROMPT, Tracker

GOALS = {"track_mIoU": 0.90, "caption_exact_match": 0.95}
ANYTHING_GOALS = {"recall": 0.95}
MATCH_IOU = 0.5
"""A predicted mask is matched to a true object in a frame (for ID switches) when their IoU is at least this."""


@dataclass
class VideoReport:
    videos: int
    objects: int
    frames: int
    track_mIoU: float
    id_switches: int
    caption_exact_match: float
    keyframe_exact_match: float
    keyframe_in_view_exact_match: float
    seconds_per_frame: float
    frames_on_another_object: int = 0
    fragmentations: int = 0

    def goals_met(self) -> bool:
        return (all(getattr(self, name) >= goal for name, goal in GOALS.items()) and self.id_switches == 0
                and self.frames_on_another_object == 0)


def held_out_world(frames: int = 24, image_size: int = 128, seed: int = 0, **options) -> MovingShapesWorld:
    """The moving-shapes world's test split (train and val use other seeds); `crowded=True`: near neighbours, faster
    turns and an occluder in every video."""
    return MovingShapesWorld.split("test", seed=seed, frames=frames, image_size=image_size, **options)


def evaluate_video(model: RegionModel, world: MovingShapesWorld, videos: int, options: VideoOptions | None = None,
                   tracker: str | Tracker = REPROMPT, show_progress: bool = True) -> VideoReport:
    """Each video: every object seen on the first frame is prompted there by its box; the tracks are scored against
    the truth from that frame to the end (a frame where both track and truth are empty counts as IoU 1)."""
    ious, id_switches, exact, frame_count, seconds = [], 0, [], 0, 0.0
    wrong_object, fragmentations = 0, 0
    keyframe_hits, in_view_hits = [], []
    captioner = VideoCaptioner(model, options, tracker=tracker)
    for index in tqdm(range(videos), desc="video quality", unit="video", disable=not show_progress):
        truth = world.video(index)
        prompted = sorted(truth[0].masks)
        if not prompted:
            continue
        boxes = [mask_box(truth[0].masks[object_id]) for object_id in prompted]
        started = time.perf_counter()
        deque(captioner.run(_pictures(truth), boxes=boxes), maxlen=0)
        seconds += time.perf_counter() - started
        frame_count += len(truth)
        for track, object_id in zip(captioner.tracks, prompted):
            exact.append(track.caption == truth[0].captions[object_id])
            for keyframe in track.keyframes:
                hit = keyframe["caption"] == truth[0].captions[object_id]
                keyframe_hits.append(hit)
                if keyframe["in_view"]:
                    in_view_hits.append(hit)
            seen = [frame.index in track.frames for frame in truth]
            for frame in truth:
                predicted = _mask_at(track.frames.get(frame.index), frame)
                ious.append(float(mask_iou(predicted, frame.masks.get(object_id, np.zeros_like(predicted)))))
                wrong_object += int(_on_another_object(predicted, object_id, frame))
            fragmentations += _fragmentations(seen)
        id_switches += _id_switches(truth, captioner.tracks, prompted)
    return VideoReport(videos, len(exact), frame_count, _mean(ious), id_switches, _mean(exact), _mean(keyframe_hits),
                       _mean(in_view_hits), seconds / max(1, frame_count), wrong_object, fragmentations)


@dataclass
class CeilingReport:
    """What the region model gives when told where each object is: every frame, each prompted object present is
    prompted by its true box (a tracker that never errs). Track mIoU and captions can only fall short of it."""

    frames: int
    mIoU: float
    caption_in_view: float


def evaluate_ceiling(model: RegionModel, world: MovingShapesWorld, videos: int,
                     show_progress: bool = True) -> CeilingReport:
    """`evaluate_video`'s objects, each frame prompted by their true boxes (IoU 1 where an object is absent, as for
    a track that rightly shows nothing); captions scored where the object is wholly in view."""
    engine = RegionEngine(model)
    ious, captions, frame_count = [], [], 0
    for index in tqdm(range(videos), desc="video ceiling", unit="video", disable=not show_progress):
        truth = world.video(index)
        prompted = sorted(truth[0].masks)
        for frame in (truth if prompted else []):
            present = [object_id for object_id in prompted if frame.masks.get(object_id, np.zeros(1, bool)).any()]
            ious += [1.0] * (len(prompted) - len(present))
            frame_count += 1
            if not present:
                continue
            encoded = model.encode([frame.image])
            boxes = [RegionPrompt(box=mask_box(frame.masks[object_id])) for object_id in present]
            for object_id, region in zip(present, engine.caption(encoded, boxes)):
                ious.append(float(mask_iou(region.best_mask, frame.masks[object_id])))
                if frame.whole.get(object_id):
                    captions.append(region.caption == frame.captions[object_id])
    return CeilingReport(frame_count, _mean(ious), _mean(captions))


@dataclass
class AnythingVideoReport:
    """Anything mode in video, at its search frames (the first and every `anything_every`): recall of the objects
    wholly in view there, precision of the tracks seen there (a track counts as right when it matches an object), and
    how often two tracks hold one object."""

    videos: int
    searches: int
    objects_in_view: int
    found: int
    tracks_seen: int
    tracks_on_an_object: int
    duplicates: int
    id_switches: int
    track_mIoU: float

    @property
    def recall(self) -> float:
        return self.found / max(1, self.objects_in_view)

    @property
    def precision(self) -> float:
        return self.tracks_on_an_object / max(1, self.tracks_seen)

    def goals_met(self) -> bool:
        return self.recall >= ANYTHING_GOALS["recall"] and self.duplicates == 0 and self.id_switches == 0


def evaluate_anything(model: RegionModel, world: MovingShapesWorld, videos: int, options: VideoOptions,
                      anything: AnythingOptions | None = None, tracker: str | Tracker = REPROMPT,
                      show_progress: bool = True) -> AnythingVideoReport:
    """`sca video --anything` on each video, searching every `options.anything_every` frames. A track matches an
    object in a frame when their masks' IoU is at least MATCH_IOU; an object's match is its best-overlapping matching
    track (a change of it is an ID switch), and its IoU in a frame the best of any track's there."""
    searches = in_view = found = tracks_seen = on_object = duplicates = switches = 0
    ious = []
    every = options.anything_every
    captioner = VideoCaptioner(model, options, tracker=tracker, anything=anything)
    for index in tqdm(range(videos), desc="video anything mode", unit="video", disable=not show_progress):
        truth = world.video(index)
        deque(captioner.run(_pictures(truth), anything=True), maxlen=0)
        matched_by: dict[int, int] = {}
        for frame in truth:
            masks = {t.object_id: _mask_at(t.frames.get(frame.index), frame) for t in captioner.tracks
                     if frame.index in t.frames}
            overlaps = {(object_id, track_id): float(mask_iou(mask, truth_mask))
                        for object_id, truth_mask in frame.masks.items() for track_id, mask in masks.items()}
            holders = {object_id: [track_id for track_id in masks if overlaps[object_id, track_id] >= MATCH_IOU]
                       for object_id in frame.masks}
            for object_id, held_by in holders.items():
                if held_by:
                    best = max(held_by, key=lambda track_id: overlaps[object_id, track_id])
                    if object_id in matched_by and matched_by[object_id] != best:
                        switches += 1
                    matched_by[object_id] = best
                ious.append(max((overlaps[object_id, t] for t in masks), default=0.0))
            if frame.index % every:
                continue
            searches += 1
            for object_id, held_by in holders.items():
                duplicates += max(0, len(held_by) - 1)
                if frame.whole.get(object_id):
                    in_view += 1
                    found += bool(held_by)
            tracks_seen += len(masks)
            on_object += sum(any(overlaps[o, t] >= MATCH_IOU for o in frame.masks) for t in masks)
    return AnythingVideoReport(videos, searches, in_view, found, tracks_seen, on_object, duplicates, switches,
                               _mean(ious))


def _on_another_object(predicted: np.ndarray, object_id: int, frame: TruthFrame) -> bool:
    """The track's mask lies mostly on another object than its own (the swap that matters most)."""
    if not predicted.any():
        return False
    shares = {other: (predicted & mask).sum() / predicted.sum() for other, mask in frame.masks.items()}
    best = max(shares, key=shares.get, default=None)
    return bool(best is not None and best != object_id and shares[best] > 0.5)


def _fragmentations(seen: list[bool]) -> int:
    """How often a track is interrupted and later resumes (CLEAR-MOT's fragmentations, per track)."""
    runs = [value for i, value in enumerate(seen) if i == 0 or value != seen[i - 1]]
    return max(0, runs.count(True) - 1)


def _mean(values: list) -> float:
    return float(np.mean(values)) if values else 0.0


def _pictures(truth) -> Iterator:
    return ((frame.index, frame.image) for frame in truth)


def _mask_at(record: dict | None, frame: TruthFrame) -> np.ndarray:
    if record is None:
        return np.zeros((frame.image.height, frame.image.width), dtype=bool)
    return decode_rle(record["mask"])


def _id_switches(truth: Sequence[TruthFrame], tracks, prompted: list[int]) -> int:
    """How often a true object's matched track (the best-overlapping one, IoU ≥ MATCH_IOU) changes from the last
    track it was matched to (CLEAR-MOT's identity switches)."""
    switches, last = 0, {}
    for frame in truth:
        for object_id in prompted:
            if object_id not in frame.masks:
                continue
            overlaps = [(float(mask_iou(_mask_at(t.frames.get(frame.index), frame), frame.masks[object_id])), t.object_id)
                        for t in tracks if frame.index in t.frames]
            best = max(overlaps, default=(0.0, None))
            if best[0] < MATCH_IOU:
                continue
            if object_id in last and last[object_id] != best[1]:
                switches += 1
            last[object_id] = best[1]
    return switches


def peak_memory(model: RegionModel, world: MovingShapesWorld, index: int = 0,
                tracker: str | Tracker = REPROMPT) -> float:
    """The resident memory's peak while video `index` of the world streams through (generated frame by frame), in
    MB: compare a video with one ten times longer."""
    first = next(world.frames_of(index))
    boxes = [mask_box(first.masks[i]) for i in sorted(first.masks)]
    peak = 0.0
    for _ in VideoCaptioner(model, tracker=tracker).run(_pictures(world.frames_of(index)), boxes=boxes):
        peak = max(peak, _resident_mb())
    return peak


def _resident_mb() -> float:
    """The process's resident memory now (Linux), else its peak so far."""
    try:
        with open(f"/proc/{os.getpid()}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def video_table(report: VideoReport, tracker: str = REPROMPT, memory: tuple[int, float, int, float] | None = None,
                anything: AnythingVideoReport | None = None, world: str = "moving-shapes",
                ceiling: CeilingReport | None = None) -> str:
    rows = [
        ["track mIoU", f"{report.track_mIoU:.3f}", f"≥ {GOALS['track_mIoU']:.2f}"],
        ["caption exact match (track)", f"{report.caption_exact_match:.1%}", f"≥ {GOALS['caption_exact_match']:.0%}"],
        ["caption exact match (every keyframe)", f"{report.keyframe_exact_match:.1%}", ""],
        ["caption exact match (keyframes in view)", f"{report.keyframe_in_view_exact_match:.1%}", ""],
    ]
    if ceiling is not None:
        rows += [
            ["ceiling: mIoU with each frame prompted by the true boxes", f"{ceiling.mIoU:.3f}", ""],
            ["ceiling: caption exact match, each frame in view", f"{ceiling.caption_in_view:.1%}", ""],
        ]
    rows += [
        ["ID switches", str(report.id_switches), "0"],
        ["frames where a track lies on another object", str(report.frames_on_another_object), "0"],
        ["fragmentations (a track interrupted, then resumed)", str(report.fragmentations), ""],
        ["seconds per frame", f"{report.seconds_per_frame:.3f}", ""],
    ]
    if memory is not None:
        short, short_mb, long, long_mb = memory
        rows.append([f"peak memory, {short} → {long} frames", f"{short_mb:.0f} → {long_mb:.0f} MB", "flat"])
    if anything is not None:
        rows += [
            [f"anything mode: recall of objects wholly in view ({anything.searches} searches)",
             f"{anything.recall:.1%} ({anything.found}/{anything.objects_in_view})", f"≥ {ANYTHING_GOALS['recall']:.0%}"],
            ["anything mode: precision (tracks on an object)",
             f"{anything.precision:.1%} ({anything.tracks_on_an_object}/{anything.tracks_seen})", ""],
            ["anything mode: one object held by two tracks", str(anything.duplicates), "0"],
            ["anything mode: ID switches", str(anything.id_switches), "0"],
            ["anything mode: mIoU of the objects present", f"{anything.track_mIoU:.3f}", ""],
        ]
    title = (f"Video: {report.videos} held-out {world} videos, {report.objects} objects, {report.frames} "
             f"frames, box prompts on frame 0, tracker {tracker}\n\n")
    return title + markdown_table(["metric", "value", "goal"], rows)
