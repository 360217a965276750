"""The JSON API's requests and responses: pydantic models, validated strictly (they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..data.schemas import XYXY, Number, Rle
from ..models import prompts
from ..options import AnythingOptions, VideoOptions

Point = Annotated[list[Number], Field(min_length=2, max_length=2, description="x, y in image pixels")]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


ImageId = Annotated[str, Field(min_length=1, max_length=64, description="an image id from POST /api/images")]
VideoId = Annotated[str, Field(min_length=1, max_length=64, description="a video id from POST /api/videos")]


class RegionPrompt(Request):
    """One region: a box, points (with labels: 1 foreground, 0 background), a mask, or several of them."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "anyOf": [{"required": ["box"]}, {"required": ["points"]}, {"required": ["mask"]}]})

    box: XYXY | None = Field(None, description="x1, y1, x2, y2 in image pixels")
    points: Annotated[list[Point], Field(min_length=1, max_length=16)] | None = None
    point_labels: Annotated[list[Annotated[int, Field(ge=0, le=1)]], Field(max_length=16)] | None = None
    mask: Rle | None = Field(None, description="COCO RLE of the image's size")

    @model_validator(mode="after")
    def _some_prompt(self) -> RegionPrompt:
        if self.box is None and self.points is None and self.mask is None:
            raise ValueError("a region needs a box, points or a mask")
        if self.point_labels is not None and (self.points is None or len(self.point_labels) != len(self.points)):
            raise ValueError("point_labels needs one label per point")
        return self

    def prompt(self) -> prompts.RegionPrompt:
        """The region as the engine takes it."""
        return prompts.RegionPrompt(self.box, self.points, self.point_labels,
                                    None if self.mask is None else self.mask.model_dump())


class CaptionRequest(Request):
    image: ImageId
    regions: Annotated[list[RegionPrompt], Field(min_length=1)]
    multimask_output: bool = True


class AnythingRequest(Request):
    image: ImageId
    points_per_side: Annotated[int, Field(ge=1)] = AnythingOptions.points_per_side
    pred_iou_thresh: Number | None = None
    stability_score_thresh: Number | None = None
    box_nms_thresh: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    mask_nms_thresh: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    max_masks: Annotated[int, Field(ge=1)] | None = None
    min_region_area: Annotated[int, Field(ge=0)] | None = None


class VideoAnything(Request):
    """Anything mode in a video: objects found on the first frame and every `every` frames (None: the first only),
    with `sca anything`'s filters."""

    every: Annotated[int, Field(ge=1)] | None = None
    points_per_side: Annotated[int, Field(ge=1)] = AnythingOptions.points_per_side
    pred_iou_thresh: Number | None = None
    stability_score_thresh: Number | None = None
    mask_nms_thresh: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    max_masks: Annotated[int, Field(ge=1)] | None = None
    min_region_area: Annotated[int, Field(ge=0)] | None = None


class VideoRequest(Request):
    """Objects to follow through an uploaded video: each region (a box, points, a mask, or several) is one object on
    `frame`; or `anything` finds them."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "oneOf": [{"required": ["regions"]}, {"required": ["anything"]}]})

    video: VideoId
    frame: Annotated[int, Field(ge=0)] = Field(0, description="the frame the regions are drawn on")
    regions: Annotated[list[RegionPrompt], Field(min_length=1)] | None = None
    anything: VideoAnything | None = None
    keyframe_every: Annotated[int, Field(ge=1)] = VideoOptions.keyframe_every

    @model_validator(mode="after")
    def _one_way(self) -> VideoRequest:
        if (self.regions is None) == (self.anything is None):
            raise ValueError("give the objects as regions or ask for anything mode, one of the two")
        return self


class VideoInfo(BaseModel):
    video: str = Field(description="the video's id (a hash of its bytes)")
    width: int
    height: int
    frames: int
    fps: float


class VideoTracks(BaseModel):
    request_id: str
    video: str
    objects: list[dict] = Field(description="per object: its caption, keyframe captions with their frame ranges, and "
                                "per frame index its box, score and COCO RLE mask")
    seconds: float


class ImageInfo(BaseModel):
    image: str = Field(description="the image's id (a hash of its bytes)")
    width: int
    height: int


class Region(BaseModel):
    caption: str
    candidates: list[str]
    iou_scores: list[float]
    best_iou: float
    stability_score: float | None = Field(description="the mask's stability score (anything mode), else null")
    box: list[float]
    mask_box: list[float] | None
    empty: bool = Field(description="the best mask holds no pixel: the caption describes nothing segmented")
    mask: dict = Field(description="COCO RLE of the best mask, at the image's size")
    prompt: dict


class Regions(BaseModel):
    request_id: str
    image: str
    regions: list[Region]
    seconds: float = Field(description="time in the model worker")


class ModelInfo(BaseModel):
    kind: str
    settings: dict
    image_size: int
    tracker: str
    limits: dict


class Error(BaseModel):
    error: str
    request_id: str
