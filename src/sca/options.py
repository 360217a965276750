"""Options shared by the Python API, the command line and the Hydra configs, each default defined once here.

This module imports no torch, so that `sca --help` and argument checks are instant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace

from .errors import InputError, require_whole

PRECISIONS = ("float32", "bfloat16", "float16")
"""The precisions a model runs in, by the names configs and command lines use (`models.loading.DTYPES`)."""

DECODER_CHUNK = 16
"""Regions through a SAM-family decoder at a time, and crops through a captioner at a time (SAM-Captioner)."""

MAX_VIDEO_PIXELS = 8_300_000
"""The largest video frame taken by default (4K UHD), in pixels: every frame is decoded whole."""

MAX_POINTS_PER_SIDE = 256
"""The densest grid anything mode takes: 65,536 prompts, far past SAM's own 32 × 32 (and every point costs time)."""


@dataclass
class GenerationOptions:
    """How captions are decoded.

    max_new_tokens: the longest caption, in tokens.
    num_beams: beam width (1: greedy; the paper evaluated with 3).
    chunk_size: regions decoded together; bounds memory (larger chunks decode faster on a GPU).
    extra: more arguments for the LM's `generate` (e.g. `{"do_sample": True, "top_p": 0.9}`;
        `{"cache_implementation": "static"}` decodes with a static KV cache, which transformers compiles on a GPU).
    """

    max_new_tokens: int = 20
    num_beams: int = 1
    chunk_size: int = 32
    extra: dict = field(default_factory=dict)

    def check(self, prefix: str = "") -> GenerationOptions:
        for name in ("max_new_tokens", "num_beams", "chunk_size"):
            require_whole(getattr(self, name), f"{prefix}{name}")
        return self


MIN_REGION_AREA = 25
"""Anything mode's smallest island or hole kept, in pixels at the image's size, when scaled to the image."""
SPECK_LOW_RES_PIXELS = 2
"""Islands and holes up to this many of the segmenter's low-res mask pixels are specks, by default."""


SAM_ANYTHING_FILTERS = {"pred_iou_thresh": 0.88, "stability_score_thresh": 0.95, "mask_nms_thresh": None}
"""SAM's automatic mask generator's filters: anything mode's for a model that declares none of its own
(`RegionModel.anything_filters`)."""


@dataclass
class AnythingOptions:
    """SAM's automatic mask generator settings (the original demo's values).

    points_per_side: an n x n grid of point prompts over the image.
    points_per_batch: prompts through SAM's decoder at a time (bounds memory).
    pred_iou_thresh: keep masks whose predicted IoU is above this.
    stability_score_thresh: keep masks whose stability score is at least this.
        These two filters (and mask_nms_thresh), when None (the default), are the model's
        (`RegionModel.anything_filters`, what it was measured with: a model's scores are calibrated its own way), else
        SAM's (`SAM_ANYTHING_FILTERS`).
    stability_score_offset: the logit offset of the stability score.
    box_nms_thresh: drop a mask whose box overlaps a better one's at IoU above this.
    mask_nms_thresh: then drop a mask whose mask (at the segmenter's resolution) overlaps a better one's at IoU above
        this: two masks of one object whose boxes differ, one with a tail onto the background, pass box NMS. None
        (the default): the model's (`RegionModel.anything_filters`), else off (SAM's automatic mask generator has
        no such step).
    max_masks: keep at most this many masks, the best predicted IoU first (None: all that pass).
    max_candidates: before boxing and NMS, keep at most this many of the masks that pass the filters, the best
        predicted IoU first (None: all): bounds the work on images where thousands pass.
    min_region_area: SAM's `min_mask_region_area`: islands and holes of fewer pixels (at the image's size) are
        removed from every kept mask, then boxes and NMS are computed again, so that a stray speck cannot stretch
        a copy's box past NMS (0: off; SAM's own default). None (the default): scaled to the image, the area of
        `SPECK_LOW_RES_PIXELS` of the segmenter's low-res mask pixels at the image's size, and at least
        `MIN_REGION_AREA`: a speck of one low-res pixel is a few pixels in a small image but hundreds in a
        12-megapixel photo, while 25 keeps the smallest shapes of a small image (~40 pixels in the shapes world).
    """

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float | None = None
    stability_score_thresh: float | None = None
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    mask_nms_thresh: float | None = None
    max_masks: int | None = None
    max_candidates: int | None = None
    min_region_area: int | None = None

    @classmethod
    def from_mapping(cls, values: dict, where: str = "anything") -> AnythingOptions:
        """From a config's mapping (unknown keys named in the error), checked."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InputError(f"{where} has no option {unknown[0]!r}; it has {', '.join(known)}")
        return cls(**values).check()

    def for_model(self, declared: Mapping[str, float]) -> AnythingOptions:
        """These options with each filter left None set to the model's `declared` value, else SAM's."""
        unknown = sorted(set(declared) - set(SAM_ANYTHING_FILTERS))
        if unknown:
            raise InputError(f"a model's anything filters are {', '.join(SAM_ANYTHING_FILTERS)}; "
                             f"{unknown[0]!r} is none of them (see the model's config.json, anything_filters)")
        unset = {name: declared.get(name, default) for name, default in SAM_ANYTHING_FILTERS.items()
                 if getattr(self, name) is None}
        return replace(self, **unset)

    def check(self) -> AnythingOptions:
        """Raise `InputError` naming the first option out of range."""
        require_whole(self.points_per_side, "points_per_side")
        require_whole(self.points_per_batch, "points_per_batch")
        if self.points_per_side > MAX_POINTS_PER_SIDE:
            raise InputError(f"points_per_side must be at most {MAX_POINTS_PER_SIDE} ({MAX_POINTS_PER_SIDE}² = "
                             f"{MAX_POINTS_PER_SIDE**2} prompts), got {self.points_per_side}")
        for name in ("pred_iou_thresh", "stability_score_thresh", "stability_score_offset", "box_nms_thresh",
                     "mask_nms_thresh"):
            value = getattr(self, name)
            if value is None and name in SAM_ANYTHING_FILTERS:
                continue  # the model's, once known (`for_model`)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"{name} must be a finite number, got {value!r}")
        for name in ("box_nms_thresh", "mask_nms_thresh"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise InputError(f"{name} is an IoU, from 0 to 1, got {value!r}")
        if self.max_masks is not None:
            require_whole(self.max_masks, "max_masks (or None for every mask that passes the filters)")
        if self.max_candidates is not None:
            require_whole(self.max_candidates, "max_candidates (or None for every mask that passes the filters)")
        if self.min_region_area is not None:
            require_whole(self.min_region_area, "min_region_area (pixels; 0: off; None: scaled to the image)",
                          minimum=0)
        return self


@dataclass
class VideoOptions:
    """keyframe_every: caption each object every this many frames. change_threshold: and when the IoU of its mask
    with its mask at its last keyframe falls below this. anything_every: anything mode looks for new objects every
    this many frames (None: on the first frame only). new_object_overlap: a mask anything mode finds is a new object
    when its IoU with every followed object's mask is below this. grow: the re-prompting tracker's margin, a share of
    the box's sides. track_views: for a captioner that takes several images (a chat VLM), how many keyframe views of
    an object it is shown at the end for the track's one caption.

    A track keeps its object or ends; it never moves onto another. A candidate mask for a followed object, once its
    specks are removed (islands under a tenth of its largest), is kept only with a predicted IoU (or object score) of
    at least min_track_score, an IoU with the object's last mask of at least min_track_overlap, and an area within
    max_area_change times the last one's either way (unless both reach the frame's edge: an object coming in or going
    out), gaining over its last mask no more than max_neighbour_share of
    another object's (two objects that touch can be segmented as one), and with no more than max_colour_change of its
    colours (its pixels' histogram) missing from the object's (a slow average of its sights: the one cue of identity
    every family gives); else the object is not seen in that frame. A lost object is looked for where its last step takes it
    for lost_memory frames (it may be behind another), then its track ends; anything mode may find it again as a new
    object."""

    keyframe_every: int = 8
    change_threshold: float = 0.5
    anything_every: int | None = None
    new_object_overlap: float = 0.3
    grow: float = 0.25
    track_views: int = 4
    min_track_score: float = 0.5
    min_track_overlap: float = 0.2
    max_area_change: float = 2.5
    max_neighbour_share: float = 0.25
    max_colour_change: float = 0.3
    lost_memory: int = 30

    def check(self) -> VideoOptions:
        for name in ("keyframe_every", "anything_every", "track_views", "lost_memory"):
            value = getattr(self, name)
            if value is None and name == "anything_every":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a whole number of at least 1, got {value!r}")
        for name in ("change_threshold", "new_object_overlap", "grow", "min_track_score", "min_track_overlap",
                     "max_neighbour_share", "max_colour_change"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise InputError(f"{name} must be a number from 0 to 1, got {value!r}")
        value = self.max_area_change
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 1:
            raise InputError(f"max_area_change must be a number of at least 1, got {value!r}")
        return self


@dataclass
class ServerLimits:
    """What one request may ask of the server, and what the server holds (every one is a `sca serve` option).

    max_json_bytes: a JSON body, counted while it streams, before anything parses it. max_video_pixels: a video's
    frame size (a frame is decoded whole, then every frame is). header_timeout: seconds a connection may take to send a
    request's headers (slow clients are closed). max_idle_connections: connections waiting for headers at once; past
    it the longest-waiting is closed, so that slow-client floods cannot crowd out real requests. max_connections:
    connections and requests in flight at once (then 503).
    """

    max_upload_bytes: int = 20_000_000
    max_pixels: int = 25_000_000
    max_aspect_ratio: float = 20.0
    max_regions: int = 64
    max_points_per_side: int = 64
    max_video_frames: int = 300
    queue_size: int = 32
    request_timeout: float = 120.0
    cache_bytes: int = 512 * 2**20
    upload_stall_seconds: float = 30.0
    max_json_bytes: int = 8_000_000
    max_video_pixels: int = MAX_VIDEO_PIXELS
    header_timeout: float = 10.0
    max_idle_connections: int = 64
    max_connections: int = 512
