"""Promptable segmenters of transformers' SAM family, behind one small interface: SAM, SAM-HQ, SAM 2 / 2.1, EdgeTAM
and SAM 3's tracker. They share `get_image_embeddings(pixel_values)` and `forward(image_embeddings=..., input_points,
input_labels, input_boxes, multimask_output)`; they differ in their input frame (SAM and SAM-HQ resize the longer
side and pad; the SAM 2 family stretches the image to a square) and in what their embeddings are (SAM-HQ adds the
encoder's intermediate features; the SAM 2 family gives a list of feature levels). The table `FAMILIES` holds the
differences, keyed by the config's `model_type`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import transformers
from transformers import AutoModel, PreTrainedModel
from transformers.models.sam.modeling_sam import SamVisionAttention

from ..data.sam_frame import SamFrame, StretchFrame
from ..errors import InputError
from ..options import DECODER_CHUNK
from .hub import ModelSource
from .prompts import Prompts
from .quiet import IMAGE_MODEL_OF_A_VIDEO_CHECKPOINT, dropped
from .vision_attention import encoder_for


@dataclass(frozen=True)
class Family:
    frame: str  # "pad" (longer side resized, then padded: SAM) or "stretch" (resized to a square: SAM 2)
    embeddings: str  # "tensor", "with_intermediate" (SAM-HQ) or "levels" (SAM 2)


FAMILIES = {
    "sam": Family("pad", "tensor"),
    "sam_hq": Family("pad", "with_intermediate"),
    "sam2": Family("stretch", "levels"),
    "edgetam": Family("stretch", "levels"),
    "sam3_tracker": Family("stretch", "levels"),
}
FAMILIES |= {"sam2_video": FAMILIES["sam2"], "edgetam_video": FAMILIES["edgetam"],
             "sam3_tracker_video": FAMILIES["sam3_tracker"]}

IMAGE_MODEL_OF_VIDEO_MODEL = {
    # a video checkpoint (SAM 2.1's hub checkpoints are) holds the image model's weights: load it as that
    "sam2_video": "Sam2Model", "edgetam_video": "EdgeTamModel", "sam3_tracker_video": "Sam3TrackerModel",
}


class Segmenter:
    """One SAM-family image model: its frame, its image embeddings, and masks with predicted IoU for prompts."""

    def __init__(self, model: PreTrainedModel, chunk_size: int = DECODER_CHUNK):
        model_type = model.config.model_type
        if model_type not in FAMILIES:
            raise InputError(f"a {model_type!r} model is not a segmenter this project knows: use one of "
                             f"{', '.join(FAMILIES)}")
        self.model, self.family, self.chunk_size = model.eval(), FAMILIES[model_type], chunk_size
        self.frame = frame_of(model.config, self.family)

    @classmethod
    def from_pretrained(cls, name_or_path: str, dtype: torch.dtype = torch.float32, device="cpu",
                        chunk_size: int = DECODER_CHUNK) -> Segmenter:
        """A segmenter from a folder or a hub id (`org/name[@revision]`), its class chosen by its config."""
        source = ModelSource.parse(name_or_path)
        model_type = source.required_config().get("model_type")
        if model_type not in FAMILIES:
            raise InputError(f"{source} is a {model_type!r} model, not a segmenter this project knows ("
                             f"{', '.join(FAMILIES)}): pass a captioner as --captioner (model.captioner), a SAM-family "
                             "model as --sam (model.sam)")
        image_model = IMAGE_MODEL_OF_VIDEO_MODEL.get(model_type)
        with source.loading("load the segmenter"), dropped(IMAGE_MODEL_OF_A_VIDEO_CHECKPOINT):
            model_class = getattr(transformers, image_model) if image_model else AutoModel
            model = model_class.from_pretrained(source.location, dtype=dtype, **source.pretrained_kwargs)
        return cls(model.to(device), chunk_size)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @torch.no_grad()
    def image_embeddings(self, pixel_values: torch.Tensor):
        """`(B, 3, S, S)` → the family's embeddings (a tensor, or a tuple/list of them)."""
        pixel_values = pixel_values.to(self.device, self.dtype)
        encoder = getattr(self.model, "vision_encoder", None)
        if self.family.embeddings == "tensor" and isinstance(getattr(encoder.layers[0], "attn", None), SamVisionAttention):
            return encoder_for(encoder, pixel_values.device)(pixel_values).last_hidden_state
        return self.model.get_image_embeddings(pixel_values)

    @torch.no_grad()
    def segment(self, embeddings, prompts: Prompts, multimask_output: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """`(B, R, M)` predicted IoU and `(B, R, M, h, w)` low-res mask logits, R regions in chunks (one region at a
        time with mask prompts: transformers' SAM models take one dense prompt per image)."""
        prompts = prompts.to(self.device, self.dtype)
        inputs = self._embedding_inputs(embeddings)
        scores, masks = [], []
        step = 1 if prompts.masks is not None else self.chunk_size
        for start in range(0, prompts.num_regions, step):
            chunk = prompts.take(slice(start, start + step)).as_sam_inputs()
            if chunk["input_masks"] is not None:
                chunk["input_masks"] = chunk["input_masks"][:, 0, None]  # (B, 1, 4h, 4w)
            chunk = {k: v for k, v in chunk.items() if v is not None and k != "valid"}
            output = self.model(**inputs, multimask_output=multimask_output, **chunk)
            scores.append(output.iou_scores)
            masks.append(output.pred_masks)
        return torch.cat(scores, 1), torch.cat(masks, 1)

    def _embedding_inputs(self, embeddings) -> dict:
        if self.family.embeddings == "with_intermediate":
            image, intermediate = embeddings
            return {"image_embeddings": image, "intermediate_embeddings": intermediate}
        return {"image_embeddings": embeddings}


def frame_of(config, family: Family) -> SamFrame:
    """The input frame of a SAM-family config: image size and low-res mask size from the prompt encoder."""
    prompt = config.prompt_encoder_config
    size = prompt.image_size
    embedding = getattr(prompt, "image_embedding_size", None) or size // prompt.patch_size
    return (SamFrame if family.frame == "pad" else StretchFrame)(size, embedding)
