"""Segment, track and caption objects through a video, one frame at a time.

`VideoCaptioner` joins a region model (any `RegionModel`: it finds the objects and captions them) and a tracker
(`trackers.py`: it follows them). Objects start from prompts on a chosen frame, or from anything mode on the first
frame (and every K frames, for objects that enter later). Each object is captioned on keyframes: its first frame,
every `keyframe_every` frames, and whenever its mask has changed (IoU with its mask at its last keyframe below
`change_threshold`). Its track's caption is the one its keyframes in view gave most (by area when none is); with a
captioner that takes several images at once (a chat VLM), it is that captioner's one answer for a few of the
object's keyframe views.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..anything import AnythingGenerator, Cancelled, full_size_mask
from ..engine import RegionEngine
from ..errors import InputError
from ..geometry import mask_box, mask_iou, touches_edge
from ..masks import encode_rle
from ..models.prompts import Prompts, RegionPrompt
from ..models.region_model import RegionModel
from ..options import AnythingOptions, GenerationOptions, VideoOptions
from .trackers import REPROMPT, Tracker, VideoFrame, describe_masks, load_tracker, prompt_place


@dataclass
class Track:
    """One object through the video: per frame its box, score and mask (COCO RLE); its keyframe captions, each with
    the frames it covers; the track's caption."""

    object_id: int
    frames: dict[int, dict] = field(default_factory=dict)
    keyframes: list[dict] = field(default_factory=list)
    last_mask: np.ndarray | None = field(default=None, repr=False)
    keyframe_mask: np.ndarray | None = field(default=None, repr=False)
    ended: bool = False
    views: list[tuple[Image.Image, np.ndarray]] = field(default_factory=list, repr=False)
    summary: str | None = None

    @property
    def caption(self) -> str:
        """The captioner's summary of its views if it gave one, else the caption its keyframes gave most (of equal
        votes, the first given): one vote each of those where the object is wholly in view, when there are any; else
        each by the area its mask shows. A shape cut by the frame's edge is described by what shows of it, and the
        larger its part in view the more it shows; wholly in view, every keyframe shows all of it, and a larger mask
        there is one that took in a neighbour."""
        if self.summary is not None:
            return self.summary
        whole = [keyframe for keyframe in self.keyframes if keyframe["in_view"]]
        votes = Counter()
        for keyframe in whole or self.keyframes:
            votes[keyframe["caption"]] += 1 if whole else keyframe["area"]
        return max(votes, key=votes.get) if votes else ""

    @property
    def current_caption(self) -> str:
        return self.keyframes[-1]["caption"] if self.keyframes else ""

    def record(self, index: int, mask: np.ndarray, score: float) -> None:
        self.frames[index] = {"box": mask_box(mask), "score": round(float(score), 6), "mask": encode_rle(mask)}
        self.last_mask = mask

    def add_keyframe(self, index: int, caption: str, picture: Image.Image | None = None, max_views: int = 0) -> None:
        if self.keyframes:
            self.keyframes[-1]["frames"][1] = max(i for i in self.frames if i < index)
        self.keyframes.append({"frame": index, "caption": caption, "frames": [index, index],
                               "in_view": not touches_edge(self.last_mask), "area": int(self.last_mask.sum())})
        self.keyframe_mask = self.last_mask
        if picture is not None and max_views:
            self.views.append(_view(picture, self.last_mask))
            if len(self.views) >= 2 * max_views:  # bounded: keep every other view, spread over the whole track
                self.views = self.views[::2]

    def close(self) -> None:
        if self.keyframes:
            self.keyframes[-1]["frames"][1] = max(self.frames)

    def chosen_views(self, count: int) -> list[tuple[Image.Image, np.ndarray]]:
        """`count` of its views, spread evenly from its first keyframe to its last."""
        if len(self.views) <= count:
            return list(self.views)
        picks = np.linspace(0, len(self.views) - 1, count).round().astype(int)
        return [self.views[i] for i in picks]

    def to_dict(self) -> dict:
        return {"object_id": self.object_id, "caption": self.caption,
                "caption_from": "views" if self.summary is not None else "keyframes", "keyframes": self.keyframes,
                "first_frame": min(self.frames, default=None), "last_frame": max(self.frames, default=None),
                "frames": {str(index): record for index, record in sorted(self.frames.items())}}


class VideoCaptioner:
    """Segment, track and caption objects through a video with any region model.

    >>> video = VideoCaptioner.from_pretrained()          # the shipped model; any kind and path as RegionCaptioner
    >>> for index, picture, tracks in video.run(read_frames("clip.mp4"), boxes=[[10, 20, 90, 80]]):
    ...     pass
    >>> [track.caption for track in video.tracks]

    tracker: `"reprompt"` (the region model's own segmenter, re-prompted each frame) or a SAM 2-family video
        model's folder or hub id (loaded here, once), or a `Tracker`. Each run follows its video with a fresh
        tracker of that kind (`Tracker.for_video`), so one captioner runs any number of videos.
    """

    def __init__(self, model: RegionModel, options: VideoOptions | None = None, tracker: str | Tracker = REPROMPT,
                 anything: AnythingOptions | None = None, chunk_size: int = GenerationOptions.chunk_size):
        self.model = model
        self.engine = RegionEngine(model, chunk_size)
        self.options = (options or VideoOptions()).check()
        self.tracker = load_tracker(tracker, model, self.options) if isinstance(tracker, str) else tracker
        self.anything_options = (anything or AnythingOptions()).check()
        self.tracks: list[Track] = []

    @classmethod
    def from_pretrained(cls, path=None, *, options: VideoOptions | None = None, tracker: str | Tracker = REPROMPT,
                        anything: AnythingOptions | None = None, **model_options) -> VideoCaptioner:
        """A region model of any kind from its folder or hub id (`RegionCaptioner.from_pretrained`'s arguments)."""
        from ..api import RegionCaptioner

        captioner = RegionCaptioner.from_pretrained(path, **model_options)
        return cls(captioner.model, options, tracker, anything, captioner.chunk_size)

    def run(self, frames: Iterable[tuple[int, Image.Image]], boxes: Sequence | None = None,
            points: Sequence | None = None, point_labels: Sequence | None = None, frame: int = 0,
            anything: bool = False, masks: Sequence | None = None,
            regions: Sequence[RegionPrompt] | None = None,
            cancelled: Callable[[], bool] | None = None) -> Iterator[tuple[int, Image.Image, list[Track]]]:
        """Yields `(index, picture, the tracks seen in it)` frame by frame; `self.tracks` holds every track.

        In the pixels of frame `frame`, one object each, as `RegionCaptioner.caption` takes them: boxes `(R, 4)`
        xyxy and/or points `(R, 2)` or `(R, K, 2)` with point_labels `(R, K)` and/or masks `(R, H, W)`; or
        `regions`, whose prompts may differ in kind (as `caption_regions`). anything: find the objects instead (on
        the first frame, and every `anything_every` frames). cancelled: asked between frames and within anything mode's
        steps; when it turns true, `Cancelled` is raised."""
        arrays = (boxes, points, masks)
        if regions is not None and any(a is not None for a in arrays):
            raise InputError("give the objects as regions or as boxes/points/masks, not both")
        prompted = regions is not None or any(a is not None for a in arrays)
        if anything == prompted:
            raise InputError("give either prompts (boxes, points or masks on a frame) or anything mode, not both "
                             "or neither")
        if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
            raise InputError(f"the prompt frame must be a frame index (0 or more), got {frame!r}")
        tracker = self.tracker.for_video(self.options)
        generator = AnythingGenerator(self.model, self.anything_options) if anything else None
        self.tracks = []
        start = None
        for index, picture in frames:
            if cancelled is not None and cancelled():
                raise Cancelled("the video was cancelled")
            if index < frame:
                yield index, picture, []
                continue
            current = VideoFrame(index, picture, self.model)
            if start is None:
                start = index
                new = (self._found(current, generator, [], cancelled) if anything
                       else self._prompted(current, tracker, regions, boxes, points, point_labels, masks))
            elif anything and self.options.anything_every and (index - start) % self.options.anything_every == 0:
                new = self._found(current, generator, [t.last_mask for t in self.tracks if not t.ended], cancelled)
            else:
                new = []
            by_id, resumed = {}, {}
            for mask, caption, prompt_box in new:
                known = tracker.recognise(current, mask, caption) if self.tracks else None
                if known is not None and known not in resumed:
                    resumed[known] = mask  # a lost object come back: its track goes on
                    continue
                track = Track(len(self.tracks))
                self.tracks.append(track)
                if prompt_box is not None:
                    place = prompt_place(prompt_box, mask.shape, self.options.grow,
                                         at_least=max(mask.shape) / self.model.frame.mask_size)
                    if not (mask & place).any():  # nothing found where it was prompted: expected there from now on
                        mask = np.zeros_like(mask)
                        tracker.expect(track.object_id, place)
                by_id[track.object_id] = (track, mask, caption)
            seen = tracker.step(current, {**resumed, **{object_id: mask for object_id, (_, mask, _) in by_id.items()}})
            for track in self.tracks:
                if track.ended:
                    continue
                if track.object_id in seen:
                    track.record(index, *seen[track.object_id])
                elif not tracker.remembers:
                    track.ended = True  # a tracker without memory cannot find it again
                    tracker.forget(track.object_id)
            started = {object_id: caption for object_id, (_, _, caption) in by_id.items()
                       if caption is not None and object_id in seen}
            for object_id, caption in {**started, **self._state_captions(tracker, list(started))}.items():
                by_id[object_id][0].add_keyframe(index, caption, *self._view_args(picture))
            self._caption_keyframes(current, tracker, [t for t in self.tracks if index in t.frames])
            for track in self.tracks:
                if track.keyframes and track.keyframes[-1]["frame"] == index:
                    tracker.described(track.object_id, track.caption)
            yield index, picture, [t for t in self.tracks if index in t.frames]
        if start is None:
            raise InputError(f"the prompt frame {frame} is past the video's end")
        for track in self.tracks:
            track.close()
            if track.views:
                track.summary = self.model.describe_views(track.chosen_views(self.options.track_views))
            track.views = []

    def _prompted(self, frame: VideoFrame, tracker: Tracker, regions, boxes, points, point_labels, masks
                  ) -> list[tuple[np.ndarray, str | None, list[float] | None]]:
        """The prompted objects' best masks, their captions, on their first frame (None where the tracker's state
        will caption them: then the region model only segments), and their prompts' boxes (`prompt_box`)."""
        encoded = frame.encoded
        if regions is None:
            regions, records = Prompts.from_pixels(encoded.framed[0], self.model.frame, boxes, points, point_labels,
                                                   masks)
        else:
            regions, records = list(regions), None
        if tracker.keeps_states:
            results = self.engine.segment(encoded, regions, records)
            return [(region.best_mask, None, prompt_box(region.prompt)) for region in results]
        results = self.engine.caption(encoded, regions, records)
        return [(region.best_mask, region.caption, prompt_box(region.prompt)) for region in results]

    def _found(self, frame: VideoFrame, generator: AnythingGenerator, followed: list[np.ndarray],
               cancelled: Callable[[], bool] | None = None) -> list[tuple[np.ndarray, str, None]]:
        """Anything mode's masks that are not an object already followed, with their captions (as `_prompted`'s)."""
        found = []
        for region in generator.generate(frame.encoded, cancelled=cancelled):
            mask = full_size_mask(generator.model, region, frame.encoded).cpu().numpy()
            others = followed + [m for m, _, _ in found]
            if mask.any() and all(float(mask_iou(mask, other)) < self.options.new_object_overlap for other in others):
                found.append((mask, region.caption, None))
        return found

    @torch.no_grad()
    def _caption_keyframes(self, frame: VideoFrame, tracker: Tracker, tracks: list[Track]) -> None:
        """Caption the tracks whose keyframe this frame is: from the tracker's state where it keeps one, else the region
        model describes their current masks."""
        due = []
        for track in tracks:
            if track.keyframes and track.keyframes[-1]["frame"] == frame.index:
                continue  # captioned as it started
            elapsed = frame.index - track.keyframes[-1]["frame"] if track.keyframes else None
            if (elapsed is None or elapsed >= self.options.keyframe_every
                    or float(mask_iou(track.last_mask, track.keyframe_mask)) < self.options.change_threshold):
                due.append(track)
        if not due:
            return
        from_state = self._state_captions(tracker, [track.object_id for track in due])
        rest = [track for track in due if track.object_id not in from_state]
        described = describe_masks(self.model, frame.encoded, [track.last_mask for track in rest]) if rest else []
        captions = {**from_state, **{track.object_id: caption for track, caption in zip(rest, described)}}
        for track in due:
            track.add_keyframe(frame.index, captions[track.object_id], *self._view_args(frame.picture))

    def _state_captions(self, tracker: Tracker, object_ids: list[int]) -> dict[int, str]:
        """The objects' captions from the tracker's decoder state in this frame, where it keeps one: the track is
        captioned from the tracker's own segmentation, conditioned on its memory."""
        states = tracker.states_now()
        ids = [object_id for object_id in object_ids if object_id in states]
        return dict(zip(ids, self.model.describe_states([states[i] for i in ids]))) if ids else {}

    def _view_args(self, picture: Image.Image) -> tuple:
        """What `Track.add_keyframe` keeps of a keyframe for the track's summary: nothing for a model that gives none."""
        return (picture, self.options.track_views) if self._summarises else ()

    @property
    def _summarises(self) -> bool:
        return type(self.model).describe_views is not RegionModel.describe_views


def prompt_box(prompt: dict) -> list[float] | None:
    """Where a prompt points, xyxy: its box, else the box of its foreground points (None for a mask alone: a mask
    prompt is where the object is)."""
    if prompt.get("box") is not None:
        return list(prompt["box"])
    points = prompt.get("points") or []
    labels = prompt.get("point_labels") or [1] * len(points)
    foreground = [point for point, label in zip(points, labels) if label == 1]
    if not foreground:
        return None
    xs, ys = zip(*foreground)
    return [min(xs), min(ys), max(xs), max(ys)]


VIEW_CONTEXT = 0.5
"""A kept view is the object's box grown by this share of its sides on each side (for the outline and some context)."""


def _view(picture: Image.Image, mask: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    """The object's surroundings cut from the frame, with its mask cut the same way (memory: a crop, not a frame)."""
    x1, y1, x2, y2 = mask_box(mask)
    grow_x, grow_y = (x2 - x1) * VIEW_CONTEXT, (y2 - y1) * VIEW_CONTEXT
    left, top = int(max(0, x1 - grow_x)), int(max(0, y1 - grow_y))
    right, bottom = int(min(picture.width, x2 + grow_x + 1)), int(min(picture.height, y2 + grow_y + 1))
    return picture.crop((left, top, right, bottom)), mask[top:bottom, left:right].copy()
