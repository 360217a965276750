"""Trackers: follow objects from frame to frame, given their masks on the frame where each starts.

A tracker takes one frame at a time (`step`), so a video streams through it. Two kinds, chosen by `load_tracker`:

- `ReprompterTracker`, for a segmenter without memory (SAM, the shipped shapes model, any region model): each
  frame, each object is prompted with the box of its mask in the frame before, grown by a margin for motion, and
  the candidate mask most like its previous mask is kept. The simpler tracker: an object that moves further than
  the margin in one frame, or is hidden for a frame, is lost (its track ends).
- `MemoryTracker`: SAM 2's (SAM 2.1's, EdgeTAM's, SAM 3 tracker's) video model and its memory of past frames,
  streaming: only the last few frames' memories are kept, so memory does not grow with the video's length. An
  object that is hidden for a while is found again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from ..geometry import mask_box, mask_iou
from ..models.prompts import Prompts
from ..models.region_model import EncodedImages, RegionModel

REPROMPT = "reprompt"


@dataclass
class VideoFrame:
    """One frame: its index, its picture, and its encoding by the region model (computed when first asked for)."""

    index: int
    picture: Image.Image
    model: RegionModel

    @cached_property
    def encoded(self) -> EncodedImages:
        return self.model.encode([self.picture])


class Tracker(ABC):
    remembers: bool = False  # whether an object unseen in a frame can be found again later

    @abstractmethod
    def step(self, frame: VideoFrame, new: dict[int, np.ndarray]) -> dict[int, tuple[np.ndarray, float]]:
        """Each followed object's `(H, W)` mask and score in this frame, by object id; objects not in the answer are
        not seen in it. `new`: objects that start on this frame, by id, with their masks here."""

    @abstractmethod
    def forget(self, object_id: int) -> None:
        """Stop following an object."""


class ReprompterTracker(Tracker):
    """Follows each object by prompting the region model's segmenter, each frame, with its previous mask's box grown
    by `grow` (a share of the box's sides)."""

    def __init__(self, model: RegionModel, grow: float = 0.25):
        self.model, self.grow = model, grow
        self.previous: dict[int, np.ndarray] = {}

    @torch.no_grad()
    def step(self, frame: VideoFrame, new: dict[int, np.ndarray]) -> dict[int, tuple[np.ndarray, float]]:
        found = {object_id: (mask, 1.0) for object_id, mask in new.items() if mask.any()}
        followed = [object_id for object_id in self.previous if object_id not in new]
        if followed:
            encoded = frame.encoded
            framed = encoded.framed[0]
            height, width = framed.original_size
            boxes = []
            for object_id in followed:
                x1, y1, x2, y2 = mask_box(self.previous[object_id])
                grow_x, grow_y = (x2 - x1) * self.grow, (y2 - y1) * self.grow
                boxes.append([max(0.0, x1 - grow_x), max(0.0, y1 - grow_y),
                              min(float(width), x2 + grow_x), min(float(height), y2 + grow_y)])
            prompts, _ = Prompts.from_pixels(framed, self.model.frame, boxes=boxes)
            scores, low_res = self.model.segment(encoded, prompts)
            for r, object_id in enumerate(followed):
                candidates = self.model.frame.masks_to_original(low_res[0, r][None], framed)[0].cpu().numpy()
                likeness = mask_iou(torch.from_numpy(candidates), torch.from_numpy(self.previous[object_id])[None])
                best = int(likeness.argmax())
                if candidates[best].any() and float(likeness[best]) > 0:
                    found[object_id] = (candidates[best], float(scores[0, r, best]))
        self.previous = {object_id: mask for object_id, (mask, _) in found.items()}
        return found

    def forget(self, object_id: int) -> None:
        self.previous.pop(object_id, None)


VIDEO_MODELS = {
    # config model_type -> the transformers class of its video model
    "sam2": "Sam2VideoModel", "sam2_video": "Sam2VideoModel",
    "edgetam": "EdgeTamVideoModel", "edgetam_video": "EdgeTamVideoModel",
    "sam3_tracker": "Sam3TrackerVideoModel", "sam3_tracker_video": "Sam3TrackerVideoModel",
}


class MemoryTracker(Tracker):
    """SAM 2's video propagation, one frame at a time. Objects start from mask prompts (their masks on their first
    frame); each later frame is conditioned on the memories of the object's first frame and its last
    `num_maskmem` frames. Older frames are dropped as the video goes, so memory stays flat."""

    remembers = True

    def __init__(self, model):
        from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

        from ..models.segmenters import FAMILIES, frame_of

        self.model = model.eval()
        self.frame = frame_of(model.config, FAMILIES["sam2"])
        self.session_class = Sam2VideoInferenceSession
        self.session = None
        config = model.config
        self.window = max(config.num_maskmem, config.max_object_pointers_in_encoder)  # frames it looks back
        self.forgotten: set[int] = set()

    @classmethod
    def from_pretrained(cls, name_or_path: str, dtype: torch.dtype = torch.float32, device="cpu") -> MemoryTracker:
        """A SAM 2 / 2.1, EdgeTAM or SAM 3 tracker video model from a folder or a hub id."""
        import json

        import transformers

        from ..models.hub import ModelSource

        source = ModelSource.parse(name_or_path)
        config_file = source.file("config.json")
        if config_file is None:
            raise InputError(f"{source} is not a model folder (no config.json)")
        model_type = json.loads(config_file.read_text()).get("model_type")
        if model_type not in VIDEO_MODELS:
            raise InputError(f"{source} is a {model_type!r} model, not one with a video tracker: use SAM 2 / 2.1, "
                             f"EdgeTAM or SAM 3's tracker, or --tracker {REPROMPT}")
        try:
            model_class = getattr(transformers, VIDEO_MODELS[model_type])
            model = model_class.from_pretrained(source.location, dtype=dtype, **source.pretrained_kwargs)
        except (OSError, ValueError, ImportError, AttributeError) as error:
            raise source.failure("load the video tracker", error) from error
        return cls(model.to(device))

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
        session.obj_with_new_inputs = started
        if session.get_obj_num() == 0:
            return {}
        output = self.model(inference_session=session, frame_idx=frame.index, frame=framed.pixel_values)
        self._drop_old(frame.index)
        masks = self.frame.masks_to_original(output.pred_masks.float(), framed)[:, 0].cpu().numpy()
        present = output.object_score_logits.float().reshape(-1).cpu().numpy() > 0
        scores = torch.sigmoid(output.object_score_logits.float().reshape(-1)).cpu().numpy()
        return {object_id: (masks[i], float(scores[i])) for i, object_id in enumerate(output.object_ids)
                if present[i] and masks[i].any() and object_id not in self.forgotten}

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


def load_tracker(tracker: str, model: RegionModel, grow: float = 0.25) -> Tracker:
    """`reprompt` (the region model's own segmenter) or a SAM 2-family video model's folder or hub id."""
    if tracker == REPROMPT:
        return ReprompterTracker(model, grow)
    return MemoryTracker.from_pretrained(tracker, dtype=model.dtype, device=model.device)
