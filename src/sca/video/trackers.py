"""Trackers: follow objects from frame to frame, given their masks on the frame where each starts.

A tracker takes one frame at a time (`step`), so a video streams through it. Two kinds, chosen by `load_tracker`:

- `ReprompterTracker`, for a segmenter without memory (SAM, the shipped shapes model, any region model): each
  frame, each object is expected where its step takes its last mask (its mean step over its last few sightings),
  and prompted with that mask's box, grown by a margin, and a point on its core; where that box reaches another
  object, that object's core is a negative point. Of the candidate masks, cleaned of specks, the one most like the
  expected mask is kept if it passes the track's rules (`TrackRules`), judged against where the other objects are
  expected. An object no candidate continues is lost, and looked for where its step takes it for a few frames; one
  prompted where the segmenter found nothing (a sliver at the frame's edge) is looked for around its prompt. An
  object crossing the frame's edge may grow or shrink faster than the area rule allows elsewhere.
- `MemoryTracker`: SAM 2's (SAM 2.1's, EdgeTAM's, SAM 3 tracker's) video model and its memory of past frames,
  streaming: only the last few frames' memories are kept, so memory does not grow with the video's length. An
  object that is hidden for a while is found again.
"""

from __future__ import annotations

import contextlib
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from ..geometry import mask_box, mask_iou, remove_small_regions, touches_edge
from ..models.mask_caption_decoder import DecoderState
from ..models.prompts import Prompts, RegionPrompt, group_prompts
from ..models.region_model import EncodedImages, RegionModel
from ..models.sca_sam2 import kept_decoder_states
from ..options import VideoOptions

logger = logging.getLogger(__name__)

REPROMPT = "reprompt"
COLOUR_MEMORY = 0.9
"""An object's colours are a slow average of its sights (this much the old, the rest the new): a mask that creeps onto
a neighbour a little each frame changes colours a little each frame, and must not carry the object's along."""
COLOUR_LEVELS = 8
"""Levels per channel of the colour histogram (8: 512 bins of 32 levels of 256)."""
MOTION_WINDOW = 5
"""An object's step is its mean step over its last this many sightings: one frame's mask eaten by a neighbour moves
its centre, not the object."""
SPECK_SHARE = 0.1
"""Islands of a tracked mask smaller than this share of its largest are specks."""


@dataclass
class VideoFrame:
    """One frame: its index, its picture, and its encoding by the region model (computed when first asked for)."""

    index: int
    picture: Image.Image
    model: RegionModel

    @cached_property
    def encoded(self) -> EncodedImages:
        return self.model.encode([self.picture])

    @cached_property
    def pixels(self) -> np.ndarray:
        """`(H, W, 3)` uint8 RGB: what the track rules read colours from."""
        return np.asarray(self.picture.convert("RGB"))


@dataclass(frozen=True)
class Neighbour:
    """Another object, as a candidate is judged against it: where it is expected in this frame (`(H, W)` bool) and its
    colours (`colours`; None where not known)."""

    mask: np.ndarray
    colours: np.ndarray | None = None


@dataclass(frozen=True)
class TrackRules:
    """When a candidate mask continues a track (`VideoOptions`' min_track_score, min_track_overlap, max_area_change,
    max_neighbour_share, max_colour_change): a track that cannot be continued by these rules is not continued at all,
    rather than moved onto a neighbour."""

    min_score: float = VideoOptions.min_track_score
    min_overlap: float = VideoOptions.min_track_overlap
    max_area_change: float = VideoOptions.max_area_change
    max_neighbour_share: float = VideoOptions.max_neighbour_share
    max_colour_change: float = VideoOptions.max_colour_change

    @classmethod
    def of(cls, options: VideoOptions) -> TrackRules:
        return cls(options.min_track_score, options.min_track_overlap, options.max_area_change,
                   options.max_neighbour_share, options.max_colour_change)

    def accepts(self, candidate: np.ndarray, score: float, last: np.ndarray, others: Iterable[Neighbour] = (),
                colour_change: float = 0.0, pixels: np.ndarray | None = None) -> bool:
        """Whether `candidate` continues the object expected at `last` (its last mask, moved by its step); `others`:
        the other objects (a lost one where its last step takes it). What the candidate gains over `last` must not
        take over a neighbour: an occluder that stands still gains nothing, a mask that swallows its neighbour does.
        Nor may it hold much of a neighbour's place where it looks like that neighbour there (`pixels`, the frame's
        `(H, W, 3)`): a track that crept onto a neighbour of its own colour a little each frame has gained little
        in any one, and an object in front of a hidden one does not look like it. `colour_change`: how much of the
        candidate's colours the object lacks (`colour_change`)."""
        area, last_area = int(candidate.sum()), int(last.sum())
        if area == 0 or score < self.min_score or colour_change > self.max_colour_change:
            return False
        # an object coming in or going out across the frame's edge grows or shrinks faster than it can turn
        crossing = touches_edge(candidate) and touches_edge(last)
        if not crossing and not 1 / self.max_area_change <= area / max(last_area, 1) <= self.max_area_change:
            return False
        if float(mask_iou(candidate, last)) < self.min_overlap:
            return False
        gained = candidate & ~last
        return not any(self._takes(candidate, gained, other, pixels) for other in others)

    def starts(self, candidate: np.ndarray, score: float, place: np.ndarray, others: Iterable[Neighbour] = (),
               pixels: np.ndarray | None = None) -> bool:
        """Whether `candidate` is the first sight of an awaited object: one prompted where the segmenter found nothing
        (a sliver at the frame's edge, say), looked for since at `place` (`(H, W)` bool, around its prompt). There is
        no last mask to judge it by: it must reach that place with enough score and take over no neighbour."""
        if not candidate.any() or score < self.min_score or not (candidate & place).any():
            return False
        return not any(self._takes(candidate, candidate, other, pixels) for other in others)

    def _takes(self, candidate: np.ndarray, gained: np.ndarray, other: Neighbour, pixels: np.ndarray | None) -> bool:
        """Whether the candidate takes over the neighbour: gains much of its place, or holds much of it looking like
        it there."""
        most = self.max_neighbour_share * max(1, int(other.mask.sum()))
        if (gained & other.mask).sum() > most:
            return True
        held = candidate & other.mask
        if pixels is None or other.colours is None or held.sum() <= most:
            return False
        return colour_change(colours(pixels, held), other.colours) <= self.max_colour_change


def colours(picture: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`(COLOUR_LEVELS³,)` the histogram of the picture's `(H, W, 3)` colours under the mask, summing to 1."""
    levels = picture[mask].astype(np.int64) * COLOUR_LEVELS // 256
    bins = (levels[:, 0] * COLOUR_LEVELS + levels[:, 1]) * COLOUR_LEVELS + levels[:, 2]
    counts = np.bincount(bins, minlength=COLOUR_LEVELS**3).astype(np.float64)
    return counts / max(1.0, counts.sum())


def remembered_colours(old: np.ndarray | None, seen: np.ndarray) -> np.ndarray:
    return seen if old is None else COLOUR_MEMORY * old + (1 - COLOUR_MEMORY) * seen


def colour_change(first: np.ndarray, second: np.ndarray) -> float:
    """The share of one colour histogram not found in the other (1 - their intersection): 0, the same colours; 0.4, two
    fifths of a mask on something of another colour."""
    return float(1.0 - np.minimum(first, second).sum())


def without_specks(mask: np.ndarray, share: float = SPECK_SHARE) -> np.ndarray:
    """The mask less its islands (and holes) under `share` of its largest island: a speck on a neighbour would
    stretch the next prompt's box over it."""
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    largest = int(np.bincount(labels.ravel())[1:].max())
    return remove_small_regions(mask, max(2, int(share * largest)))


def exclusive(found: dict[int, tuple[np.ndarray, float]], keep: set[int] = frozenset(),
              share: float = VideoOptions.max_neighbour_share) -> dict[int, tuple[np.ndarray, float]]:
    """No two objects hold the same pixels: where two masks share more than `share` of the smaller, the segmenter
    saw them as one, and neither is taken as seen in this frame (but those in `keep`, which start here)."""
    ids = list(found)
    dropped = set()
    for i, first in enumerate(ids):
        for second in ids[i + 1 :]:
            a, b = found[first][0], found[second][0]
            if (a & b).sum() > share * max(1, min(a.sum(), b.sum())):
                dropped |= {first, second} - set(keep)
    return {object_id: seen for object_id, seen in found.items() if object_id not in dropped}


def kind_of(caption: str) -> str:
    """What a caption says its object is, to tell objects of one colour apart: its last word, the head of a short noun
    phrase ("a large green circle": circle); "" for a caption without words."""
    words = re.findall(r"[^\W\d_]+", caption.lower())
    return words[-1] if words else ""


@torch.no_grad()
def describe_masks(model: RegionModel, encoded: EncodedImages, masks: list[np.ndarray]) -> list[str]:
    """The region model's caption of each `(H, W)` mask of the encoded frame (prompted by its box and the mask)."""
    framed = encoded.framed[0]
    prompts, _ = Prompts.from_pixels(framed, model.frame, boxes=[mask_box(mask) for mask in masks])
    logits = model.frame.mask_prompts(np.stack(masks), framed)[None]
    return model.describe(encoded, prompts, logits.to(model.device))[0]


def prompt_place(box: Sequence[float], size: tuple[int, int], grow: float, at_least: float = 0.0) -> np.ndarray:
    """`(H, W)` bool: where an object prompted within `box` (xyxy pixels; a point's box is the point) lies, the box
    grown by `grow` of its longer side each way, and by `at_least` pixels (the segmenter's mask pixel: it places a
    mask no finer): a sliver's box is as thin as the sliver, and the object comes in across it. A first mask that does
    not reach it is not the prompted object."""
    height, width = size
    x1, y1, x2, y2 = (float(v) for v in box)
    margin = max(max(x2 - x1, y2 - y1) * grow, at_least)
    left, top = min(width - 1, max(0, int(np.floor(x1 - margin)))), min(height - 1, max(0, int(np.floor(y1 - margin))))
    right = min(width, max(left + 1, int(np.ceil(x2 + margin))))
    bottom = min(height, max(top + 1, int(np.ceil(y2 + margin))))
    place = np.zeros((height, width), bool)
    place[top:bottom, left:right] = True
    return place


def core_point(mask: np.ndarray) -> list[float]:
    """The mask's pixel farthest from its border (x, y): a point surely on the object, wherever its box reaches."""
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(distance.argmax()), distance.shape)
    return [float(x) + 0.5, float(y) + 0.5]


class Tracker(ABC):
    remembers: bool = False  # whether an object unseen in a frame can be found again later
    keeps_states: bool = False  # whether `states_now` gives the states the region model captions tracks from

    @abstractmethod
    def step(self, frame: VideoFrame, new: dict[int, np.ndarray]) -> dict[int, tuple[np.ndarray, float]]:
        """Each followed object's `(H, W)` mask and score in this frame, by object id; objects not in the answer are
        not seen in it. `new`: objects that start on this frame, by id, with their masks here."""

    @abstractmethod
    def forget(self, object_id: int) -> None:
        """Stop following an object."""

    def recognise(self, frame: VideoFrame, mask: np.ndarray, caption: str | None = None) -> int | None:
        """The object lost lately that a mask found anew in this frame (and captioned `caption`) is, by where it went,
        how it looks and what it is, if any: anything mode then resumes its track rather than starting another."""
        return None

    def described(self, object_id: int, caption: str) -> None:
        """What the object's track is captioned as, so far: a lost object resumes only on a mask of its kind."""
        return None  # a tracker that does not look for lost objects itself has no use for it

    def expect(self, object_id: int, place: np.ndarray) -> None:
        """An object prompted on this frame of which the segmenter found nothing at its prompt (a sliver coming in at
        the frame's edge, say: no mask, or one that does not reach `place`): look for it at `place` (`(H, W)` bool,
        `prompt_place`) on the next frames. A tracker that cannot leaves it unseen (its track then stays empty)."""
        return None

    def states_now(self) -> dict[int, DecoderState]:
        """The decoder state each object seen in the last frame was segmented from, by object id, where the region
        model captions such states (`RegionModel.describe_states`): its keyframes are captioned from them."""
        return {}

    @abstractmethod
    def for_video(self, options: VideoOptions) -> Tracker:
        """A tracker of this kind for another video, following it by these options, on this one's models (loaded
        once: a server or a benchmark follows many videos)."""


class ReprompterTracker(Tracker):
    """Follows each object by prompting the region model's segmenter, each frame, with the box of its expected mask
    (its last, moved by its step) grown by `options.grow` (a share of the box's sides), a point on that mask's core,
    and negative points on the cores of other objects that the grown box reaches; a candidate continues the track
    only by `TrackRules`."""

    remembers = True  # a lost object is looked for where its last step takes it, for options.lost_memory frames

    def __init__(self, model: RegionModel, options: VideoOptions | None = None):
        self.model = model
        self.options = options or VideoOptions()
        self.rules = TrackRules.of(self.options)
        self.previous: dict[int, np.ndarray] = {}
        self.colour: dict[int, np.ndarray] = {}  # each object's colours (`remembered_colours`)
        self.path: dict[int, list[tuple[int, float, float]]] = {}  # its last sightings: frame, centre x, y
        self.kind: dict[int, str] = {}  # what each object is (`kind_of` its track's caption; "": not known)
        self.lost: dict[int, tuple[np.ndarray, int]] = {}  # last mask, frames since seen
        self.awaited: dict[int, tuple[np.ndarray, int]] = {}  # prompted, never seen: where looked for, frames waited

    def for_video(self, options: VideoOptions) -> ReprompterTracker:
        return ReprompterTracker(self.model, options)

    def expect(self, object_id: int, place: np.ndarray) -> None:
        """Prompted at its place each frame, for `options.lost_memory` frames."""
        self.awaited[object_id] = (place, 0)

    def prompts(self, object_id: int, masks: dict[int, np.ndarray], size: tuple[int, int]) -> list[RegionPrompt]:
        """The object's prompts for the next frame: its grown box, its core, and the cores of neighbours in reach; and
        where the grown box reaches a neighbour, the same points with the last box as it was (the segmenter tends to
        take in all of a box, neighbour included)."""
        height, width = size
        x1, y1, x2, y2 = mask_box(masks[object_id])
        grow_x, grow_y = (x2 - x1) * self.options.grow, (y2 - y1) * self.options.grow
        box = [max(0.0, x1 - grow_x), max(0.0, y1 - grow_y), min(float(width), x2 + grow_x),
               min(float(height), y2 + grow_y)]
        left, top, right, bottom = int(box[0]), int(box[1]), int(np.ceil(box[2])), int(np.ceil(box[3]))
        points, labels = [core_point(masks[object_id])], [1]
        for other, mask in masks.items():
            if other != object_id and mask[top:bottom, left:right].any():
                points.append(core_point(mask))
                labels.append(0)
        grown = RegionPrompt(box=box, points=points, point_labels=labels)
        if len(points) == 1 or (x2 - x1) * (y2 - y1) == 0:
            return [grown]
        return [grown, RegionPrompt(box=[x1, y1, x2, y2], points=points, point_labels=labels)]

    @torch.no_grad()
    def step(self, frame: VideoFrame, new: dict[int, np.ndarray]) -> dict[int, tuple[np.ndarray, float]]:
        found = {object_id: (mask, 1.0) for object_id, mask in new.items() if mask.any()}
        pixels = frame.pixels
        # followed objects, and objects lost lately (hidden, or merged with a neighbour in the segmenter's eyes) for a
        # few frames, from where their step takes them: found there again, they go on
        expected = {**{object_id: mask for object_id, mask in self._lost_now().items() if mask.any()},
                    **self._followed_now()}
        expected = {object_id: mask for object_id, mask in expected.items() if object_id not in new}
        awaited = {object_id: place for object_id, (place, _) in self.awaited.items() if object_id not in new}
        if expected or awaited:
            encoded = frame.encoded
            framed = encoded.framed[0]
            everyone = {**expected, **{object_id: mask for object_id, (mask, _) in found.items()}}
            searched = [*expected, *awaited]
            ids, regions = [], []
            for object_id in searched:
                around = {**everyone, object_id: awaited[object_id]} if object_id in awaited else everyone
                prompts = self.prompts(object_id, around, framed.original_size)
                ids += [object_id] * len(prompts)
                regions += prompts
            candidates: dict[int, list] = {object_id: [] for object_id in searched}
            for group in group_prompts(framed, self.model.frame, regions):
                scores, low_res = self.model.segment(encoded, group.prompts)
                masks = self.model.frame.masks_to_original(low_res[0], framed).cpu().numpy()
                for r, index in enumerate(group.indices):
                    candidates[ids[index]] += zip(masks[r], scores[0, r].float().tolist())
            neighbours = {object_id: Neighbour(mask, self.colour[object_id] if object_id in self.colour
                                               else colours(pixels, mask))  # a new object's, here
                          for object_id, mask in everyone.items()}
            resumed = {}
            for object_id, found_here in candidates.items():
                others = [neighbour for other, neighbour in neighbours.items() if other != object_id]
                if object_id in awaited:
                    kept = self._first_sight(found_here, awaited[object_id], others, pixels)
                else:
                    kept = self._continue(found_here, expected[object_id], others, pixels, self.colour[object_id])
                if kept is not None and object_id in self.lost and self.kind.get(object_id):
                    resumed[object_id] = kept
                elif kept is not None:
                    found[object_id] = kept
            found.update(self._of_their_kind(encoded, resumed))
        found = exclusive(found, keep=set(new), share=self.rules.max_neighbour_share)
        self._remember(frame.index, found, pixels)
        return found

    def _of_their_kind(self, encoded: EncodedImages, resumed: dict[int, tuple[np.ndarray, float]]
                       ) -> dict[int, tuple[np.ndarray, float]]:
        """The lost objects' candidates that the region model describes as the object's kind: colours cannot tell
        a lost circle from a square of its colour where the circle was expected."""
        if not resumed:
            return {}
        captions = describe_masks(self.model, encoded, [mask for mask, _ in resumed.values()])
        return {object_id: kept for (object_id, kept), caption in zip(resumed.items(), captions)
                if self._of_its_kind(object_id, caption)}

    def _of_its_kind(self, object_id: int, caption: str | None) -> bool:
        """Whether a caption names the object's kind (yes where either is not known)."""
        return caption is None or not self.kind.get(object_id) or kind_of(caption) == self.kind[object_id]

    def described(self, object_id: int, caption: str) -> None:
        self.kind[object_id] = kind_of(caption)

    def _remember(self, index: int, found: dict[int, tuple[np.ndarray, float]], pixels: np.ndarray) -> None:
        for object_id, mask in self.previous.items():
            if object_id not in found:
                self.lost[object_id] = (mask, 0)
        self.lost = {object_id: (mask, age + 1) for object_id, (mask, age) in self.lost.items()
                     if age + 1 <= self.options.lost_memory and object_id not in found}
        self.awaited = {object_id: (place, age + 1) for object_id, (place, age) in self.awaited.items()
                        if age + 1 <= self.options.lost_memory and object_id not in found}
        for object_id, (mask, _) in found.items():
            self.colour[object_id] = remembered_colours(self.colour.get(object_id), colours(pixels, mask))
            y, x = np.argwhere(mask).mean(0)
            path = self.path.setdefault(object_id, [])
            path[:] = [*path, (index, float(x), float(y))][-MOTION_WINDOW:]
        self.previous = {object_id: mask for object_id, (mask, _) in found.items()}

    def step_of(self, object_id: int) -> tuple[float, float]:
        """The object's step a frame `(dx, dy)` in pixels: its mean over its last sightings (none before its second)."""
        (first, x0, y0), (last, x1, y1) = self.path[object_id][0], self.path[object_id][-1]
        return ((x1 - x0) / (last - first), (y1 - y0) / (last - first)) if last > first else (0.0, 0.0)

    def _moved(self, object_id: int, mask: np.ndarray, frames: int) -> np.ndarray:
        """The object's mask where `frames` of its steps take it."""
        dx, dy = self.step_of(object_id)
        return _shifted(mask, round(dx * frames), round(dy * frames))

    def _followed_now(self) -> dict[int, np.ndarray]:
        """Where the followed objects would be now, had they kept their step; where last, for one that step takes out
        of the frame (a step is a guess: the segmenter and the rules say whether it is still there)."""
        moved = {object_id: self._moved(object_id, mask, 1) for object_id, mask in self.previous.items()}
        return {object_id: mask if mask.any() else self.previous[object_id] for object_id, mask in moved.items()}

    def _lost_now(self) -> dict[int, np.ndarray]:
        """Where the objects lost lately would be now, had they kept their step."""
        return {object_id: self._moved(object_id, mask, age + 1) for object_id, (mask, age) in self.lost.items()}

    def _continue(self, candidates: list[tuple[np.ndarray, float]], expected: np.ndarray, others: list[Neighbour],
                  pixels: np.ndarray, colour: np.ndarray):
        """The candidate `(mask, score)` most like the object's expected mask among those the rules accept, or None."""
        best, best_likeness = None, -1.0
        for candidate, score in candidates:
            candidate = without_specks(candidate)
            change = colour_change(colours(pixels, candidate), colour)
            if not self.rules.accepts(candidate, score, expected, others, change, pixels):
                continue
            likeness = float(mask_iou(candidate, expected))
            if likeness > best_likeness:
                best, best_likeness = (candidate, score), likeness
        return best

    def _first_sight(self, candidates: list[tuple[np.ndarray, float]], place: np.ndarray, others: list[Neighbour],
                     pixels: np.ndarray):
        """The awaited object's candidate `(mask, score)` of highest score among those that start it, or None."""
        best = None
        for candidate, score in candidates:
            candidate = without_specks(candidate)
            if self.rules.starts(candidate, score, place, others, pixels) and (best is None or score > best[1]):
                best = (candidate, score)
        return best

    def forget(self, object_id: int) -> None:
        for memory in (self.previous, self.lost, self.awaited, self.colour, self.path, self.kind):
            memory.pop(object_id, None)

    def recognise(self, frame: VideoFrame, mask: np.ndarray, caption: str | None = None) -> int | None:
        """A lost object whose colours the mask has (`TrackRules`' max_colour_change) and whose kind its caption
        names (where both are known), of a like area, found within its own size of where its last step takes it; the
        nearest of them."""
        if not mask.any():
            return None
        seen, centre = colours(frame.pixels, mask), np.argwhere(mask).mean(0)
        best, best_distance = None, np.inf
        for object_id, expected in self._lost_now().items():
            if not expected.any() or colour_change(seen, self.colour[object_id]) > self.rules.max_colour_change:
                continue
            if not self._of_its_kind(object_id, caption):
                continue
            area_ratio = mask.sum() / expected.sum()
            if not 1 / self.rules.max_area_change <= area_ratio <= self.rules.max_area_change:
                continue
            distance = float(np.linalg.norm(np.argwhere(expected).mean(0) - centre))
            x1, y1, x2, y2 = mask_box(expected)
            if distance <= np.hypot(x2 - x1, y2 - y1) and distance < best_distance:
                best, best_distance = object_id, distance
        return best


def _shifted(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """The mask moved by whole pixels, what leaves the frame dropped."""
    moved = np.zeros_like(mask)
    height, width = mask.shape
    if abs(dx) >= width or abs(dy) >= height:
        return moved
    moved[max(0, dy) : height + min(0, dy), max(0, dx) : width + min(0, dx)] = \
        mask[max(0, -dy) : height - max(0, dy), max(0, -dx) : width - max(0, dx)]
    return moved


VIDEO_MODELS = {
    # config model_type -> the transformers class of its video model
    "sam2": "Sam2VideoModel", "sam2_video": "Sam2VideoModel",
    "edgetam": "EdgeTamVideoModel", "edgetam_video": "EdgeTamVideoModel",
    "sam3_tracker": "Sam3TrackerVideoModel", "sam3_tracker_video": "Sam3TrackerVideoModel",
}


class MemoryTracker(Tracker):
    """SAM 2's video propagation, one frame at a time. Objects start from mask prompts (their masks on their first
    frame); each later frame is conditioned on the memories of the object's first frame and its last
    `num_maskmem` frames. Older frames are dropped as the video goes, so memory stays flat.

    With a region model that captions SAM 2's decoder state (SCA on SAM 2: `RegionModel.state_segmenter`) whose
    SAM 2 has the video model's shapes, the video model segments with that SAM 2's weights (image encoder, prompt
    encoder, mask decoder; its memory modules stay the checkpoint's), and keeps each object's decoder state of the
    frame, conditioned on its memory: the region model captions the track from it (`states_now`). A state also carries
    what the region model reads beside it (`RegionModel.state_region_features`: SCA on SAM 2's fine levels pooled
    inside the object's mask of the frame), made from the same decoder call."""

    remembers = True

    def __init__(self, model, options: VideoOptions | None = None, region_model: RegionModel | None = None, *,
                 keeps_states: bool | None = None, region_features: Callable | None = None):
        from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

        from ..models.segmenters import FAMILIES, frame_of

        self.model = model.eval()
        self.frame = frame_of(model.config, FAMILIES["sam2"])
        self.session_class = Sam2VideoInferenceSession
        self.session = None
        config = model.config
        self.window = max(config.num_maskmem, config.max_object_pointers_in_encoder)  # frames it looks back
        self.forgotten: set[int] = set()
        self.rules = TrackRules.of(options or VideoOptions())
        self.last: dict[int, np.ndarray] = {}
        self.colour: dict[int, np.ndarray] = {}
        self.states: dict[int, DecoderState] = {}
        self.keeps_states = (keeps_states if keeps_states is not None
                             else region_model is not None and self._segments_with(region_model.state_segmenter))
        # what the region model's states also carry (SCA on SAM 2 reading the fine levels), made as the tracker segments
        self.region_features = (region_model.state_region_features if region_model is not None and self.keeps_states
                                else region_features)

    def _segments_with(self, segmenter: torch.nn.Module | None) -> bool:
        """Take the region model's SAM 2 weights, if it has a SAM 2 of this video model's shapes."""
        if segmenter is None:
            return False
        mine, theirs = self.model.state_dict(), segmenter.state_dict()
        differing = [name for name, value in theirs.items() if name not in mine or mine[name].shape != value.shape]
        if differing:
            logger.warning("the tracker's SAM 2 is not the region model's (%s differs): tracks are captioned by "
                           "re-prompting the region model on keyframes, not from the tracker's state; track with the "
                           "SAM 2 the model was built on for that", differing[0])
            return False
        self.model.load_state_dict(theirs, strict=False)
        return True

    def states_now(self) -> dict[int, DecoderState]:
        return self.states

    def for_video(self, options: VideoOptions) -> MemoryTracker:
        # the region model's weights are in the video model already: no second copy, no second warning
        return MemoryTracker(self.model, options, keeps_states=self.keeps_states, region_features=self.region_features)

    @classmethod
    def from_pretrained(cls, name_or_path: str, dtype: torch.dtype = torch.float32, device="cpu",
                        options: VideoOptions | None = None, region_model: RegionModel | None = None
                        ) -> MemoryTracker:
        """A SAM 2 / 2.1, EdgeTAM or SAM 3 tracker video model from a folder or a hub id."""
        import transformers

        from ..models.hub import ModelSource

        source = ModelSource.parse(name_or_path)
        model_type = source.required_config().get("model_type")
        if model_type not in VIDEO_MODELS:
            raise InputError(f"{source} is a {model_type!r} model, not one with a video tracker: use SAM 2 / 2.1, "
                             f"EdgeTAM or SAM 3's tracker, or --tracker {REPROMPT}")
        with source.loading("load the video tracker"):
            model_class = getattr(transformers, VIDEO_MODELS[model_type])
            model = model_class.from_pretrained(source.location, dtype=dtype, **source.pretrained_kwargs)
        return cls(model.to(device), options, region_model)

    @torch.no_grad()
    def step(self, frame: VideoFrame, new: dict[int, np.ndarray]) -> dict[int, tuple[np.ndarray, float]]:
        framed = self.frame.frame(frame.picture)
        height, width = framed.original_size
        if self.session is None:
            self.session = self.session_class(video_height=height, video_width=width, dtype=self.model.dtype,
                                              inference_device=self.model.device,
                                              inference_state_device=self.model.device)
        session = self.session
        started = [object_id for object_id, mask in new.items() if mask.any()]
        for object_id in started:
            masks = torch.from_numpy(new[object_id])[None, None].float()
            square = torch.nn.functional.interpolate(masks, (self.frame.image_size, self.frame.image_size),
                                                     mode="bilinear", antialias=True, align_corners=False)
            session.add_mask_inputs(session.obj_id_to_idx(object_id), frame.index, (square >= 0.5).float())
        session.obj_with_new_inputs = list(started)  # the video model empties it as it takes them
        if session.get_obj_num() == 0:
            return {}
        with (kept_decoder_states(self.model.mask_decoder, self.region_features) if self.keeps_states
              else contextlib.nullcontext([])) as kept:
            output = self.model(inference_session=session, frame_idx=frame.index, frame=framed.pixel_values)
        # the video model runs its decoder once per object, in its order (SAM 2's streaming forward)
        states = dict(zip(output.object_ids, kept)) if len(kept) == len(output.object_ids) else {}
        self._drop_old(frame.index)
        masks = self.frame.masks_to_original(output.pred_masks.float(), framed)[:, 0].cpu().numpy()
        present = output.object_score_logits.float().reshape(-1).cpu().numpy() > 0
        scores = torch.sigmoid(output.object_score_logits.float().reshape(-1)).cpu().numpy()
        pixels = frame.pixels
        seen = {}
        for i, object_id in enumerate(output.object_ids):
            if not present[i] or object_id in self.forgotten:
                continue
            mask = without_specks(masks[i])
            last = self.last.get(object_id)
            others = [Neighbour(seen_last, self.colour.get(other)) for other, seen_last in self.last.items()
                      if other != object_id]
            colour = colours(pixels, mask)
            if (object_id in started or last is None
                    or self.rules.accepts(mask, float(scores[i]), last, others,
                                          colour_change(colour, self.colour[object_id]), pixels)):
                seen[object_id] = (mask, float(scores[i]))
                self.last[object_id] = mask  # the memory remembers its object: the rules judge against its last sight
                self.colour[object_id] = remembered_colours(self.colour.get(object_id), colour)
        seen = exclusive({object_id: found for object_id, found in seen.items() if found[0].any()}, keep=set(started),
                         share=self.rules.max_neighbour_share)
        self.states = {object_id: states[object_id] for object_id in seen if object_id in states}
        return seen

    def _drop_old(self, index: int) -> None:
        """Frames and memories older than the model ever looks back (its first frames, the prompts, are kept)."""
        session, oldest = self.session, index - self.window + 1  # the next frame looks back to oldest + 1
        for old in [i for i in session.processed_frames if i <= index - 1]:
            del session.processed_frames[old]
        for outputs in session.output_dict_per_obj.values():
            for old in [i for i in outputs["non_cond_frame_outputs"] if i < oldest]:
                del outputs["non_cond_frame_outputs"][old]
        for tracked in session.frames_tracked_per_obj.values():
            for old in [i for i in tracked if i < oldest]:
                del tracked[old]

    def forget(self, object_id: int) -> None:
        self.forgotten.add(object_id)


def load_tracker(tracker: str, model: RegionModel, options: VideoOptions | None = None) -> Tracker:
    """`reprompt` (the region model's own segmenter) or a SAM 2-family video model's folder or hub id (which hands
    its decoder state to a region model that captions it)."""
    if tracker == REPROMPT:
        return ReprompterTracker(model, options)
    return MemoryTracker.from_pretrained(tracker, dtype=model.dtype, device=model.device, options=options,
                                         region_model=model)
